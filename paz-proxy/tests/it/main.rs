//! Integration tests of paz-proxy: the router and the health checker against real hyper
//! servers on 127.0.0.1:0.

mod bad_input;
mod balancing;
mod contract;
mod draining;
mod failures;
mod haproxy;
mod headers;
mod health;
mod limits;
mod load;
mod metrics;
mod routing;
mod support;
mod tls;
mod websocket;
