//! The router's settings: which hosts a listener serves ([`Scope`]), tuning ([`RouterConfig`]).

use std::net::IpAddr;
use std::time::Duration;

/// Which host names a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every host name of the table except internal ones (ending in
    /// [`INTERNAL_SUFFIX`](paz_core::route::INTERNAL_SUFFIX)): the edge listener.
    Public,
    /// Only internal host names (`<service>.paz`): the listener containers call each other on.
    Internal,
}

/// Tuning of the router. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// How long a backend may take to answer a request's head (else 504).
    pub backend_timeout: Duration,
    /// How long connecting to a backend may take (else the connect failed: ejection, retry).
    pub connect_timeout: Duration,
    /// First ejection of a backend that refused a connection; doubles on each consecutive
    /// failure up to [`RouterConfig::max_ejection`].
    pub ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// After a backend starts draining, how long upgraded connections other than WebSockets
    /// (and WebSockets that never reach a frame boundary) may stay open.
    pub upgrade_drain_timeout: Duration,
    /// After a WebSocket got its close frame (1001), how long before the connection is cut.
    pub websocket_close_grace: Duration,
    /// Idle keep-alive connections kept per backend and worker thread.
    pub pool_max_idle: usize,
    /// Idle upstream connections older than this are not reused (keep it below the backends'
    /// own keep-alive timeout, e.g. Node's 5 s).
    pub pool_idle_timeout: Duration,
    /// Slowloris guard: how long a client may take to send a whole request head, from its
    /// first byte (a total deadline, not per read); `None` = no limit.
    pub header_read_timeout: Option<Duration>,
    /// Slow-body guard: how long a client may take to send a whole request body, from the end
    /// of its head (a total deadline, not per read). Past it the router answers 408 (if the
    /// response has not started) and closes the connection; the backend connection is let go.
    /// `None` = no limit.
    pub body_timeout: Option<Duration>,
    /// At shutdown, how long connections (requests in flight, upgraded connections) may take
    /// to end before those left are dropped: a client trickling bytes or a long tunnel cannot
    /// hold a restart open.
    pub shutdown_timeout: Duration,
    /// At shutdown, how long an idle keep-alive connection is kept for one more request
    /// (answered with `Connection: close`) before it is closed. Closing an idle connection
    /// races with a request the client is sending on it, which the client sees fail; during
    /// an upgrade (`paz-server --upgrade`) the grace lets busy clients move to the new
    /// process without one failed request.
    pub drain_grace: Duration,
    /// How long a client connection may stay open without sending a byte: before its first
    /// request and between keep-alive requests. `None` = no limit.
    pub idle_timeout: Option<Duration>,
    /// The most client connections a listener holds at once; past it, new ones are closed
    /// at once. 0 = no limit.
    pub max_connections: usize,
    /// The most client connections from one IP address a listener holds at once; past it,
    /// new ones from that address are closed at once. 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Peers whose `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`/`-Host` and
    /// `X-Real-IP` are kept (and extended); from any other peer they are replaced.
    pub trusted_proxies: Vec<IpAddr>,
    /// Threads serving each listener, each with its own single-threaded runtime; one of them
    /// accepts and deals connections to all in turn. 0 runs the listener on the caller's
    /// runtime instead. Default: the number of CPUs.
    pub workers: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            backend_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(30),
            upgrade_drain_timeout: Duration::from_secs(30),
            websocket_close_grace: Duration::from_secs(2),
            pool_max_idle: 512,
            pool_idle_timeout: Duration::from_secs(4),
            header_read_timeout: Some(Duration::from_secs(30)),
            body_timeout: Some(Duration::from_secs(60)),
            shutdown_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_secs(60)),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}
