//! Proxy backends of Paz.
//!
//! - [`router::Router`]: the built-in HTTP/1.1 reverse proxy (hyper). It implements
//!   [`paz_core::proxy::Proxy`]: routes by `Host` header, hot-swaps its route table without a
//!   lock on the request path, balances with power-of-two-choices over weighted backends,
//!   drains backends exactly, ejects backends that refuse connections and retries idempotent
//!   requests once, passes WebSockets through and closes them gracefully on drain, and counts
//!   requests in Prometheus text format.
//! - [`haproxy::Haproxy`]: HAProxy 2.6+ rendered, started, supervised and driven through its
//!   runtime API ([`paz_core::proxy::Proxy`]); reloads only for structure, hitless.
//! - [`health::HttpHealthChecker`]: active HTTP and TCP checks
//!   ([`paz_core::health::HealthChecker`]).

pub mod error;
pub mod haproxy;
pub mod health;
pub mod router;
pub mod tls;

pub use error::{Error, Result};
pub use haproxy::{Haproxy, HaproxyConfig, HaproxyStatus};
pub use health::HttpHealthChecker;
pub use router::{Router, RouterConfig, Scope, raise_open_files_limit};
pub use tls::{CertificatePem, Certificates};
