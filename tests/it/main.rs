//! End-to-end tests of the real binaries (`paz-server`, `paz`) against the real Docker
//! Engine: one test binary, with the shared harness in `support`.

mod admin;
mod cluster;
mod deploy;
mod e2e;
mod fleet;
mod hooks;
mod support;
mod swarm;
mod ui;
