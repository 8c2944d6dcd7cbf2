//! Accept loops, worker threads and client connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::body::ProxyBody;
use super::config::Scope;
use super::conn::{Admitted, ConnCtx, Connections, Registration};
use super::fast;
use super::handler::handle;
use super::pool::{self, PoolLimits};
use super::shared::Shared;
use crate::error::Error;

/// An accepted connection on its way to a worker.
type Accepted = (std::net::TcpStream, SocketAddr);

/// Serves `listener` on the caller's runtime (`workers == 0`) or on worker threads.
///
/// With workers, one acceptor (on worker 0) hands accepted connections to the workers in
/// turn, so they share the load evenly (sharing the listening socket lets one worker take
/// most connections).
pub(crate) fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    scope: Scope,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let workers = shared.config.workers;
    if workers == 0 {
        return tokio::spawn(accept_loop(shared, listener, scope, shutdown));
    }
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(source) => {
            tracing::error!(error = %Error::Listener { source }, "router listener lost");
            return tokio::spawn(async {});
        }
    };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| mpsc::unbounded_channel::<Accepted>())
        .unzip();
    let mut acceptor = Some((listener, senders));
    let mut done = Vec::with_capacity(workers);
    for (index, rx) in receivers.into_iter().enumerate() {
        let acceptor = acceptor.take();
        let (tx, rx_done) = oneshot::channel::<()>();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("paz-router-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(source) => {
                        tracing::error!(error = %Error::Worker { index, source }, "router worker failed");
                        return;
                    }
                };
                runtime.block_on(async move {
                    if let Some((listener, senders)) = acceptor {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tokio::spawn(distribute(listener, senders, shutdown.clone()));
                            }
                            Err(source) => {
                                tracing::error!(error = %Error::Listener { source }, "router listener lost");
                            }
                        }
                    }
                    worker_loop(shared, rx, scope, shutdown).await;
                });
                drop(tx);
            });
        match spawned {
            Ok(_) => done.push(rx_done),
            Err(source) => {
                tracing::error!(error = %Error::Worker { index, source }, "router worker failed");
            }
        }
    }
    tokio::spawn(async move {
        for rx in done {
            let _ = rx.await;
        }
    })
}

/// Accepts connections and deals them to the workers in turn, until shutdown.
async fn distribute(
    listener: TcpListener,
    senders: Vec<mpsc::UnboundedSender<Accepted>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
            Ok(accepted) => {
                // A worker that stopped drops (closes) the connection.
                let _ = senders[next].send(accepted);
                next = (next + 1) % senders.len();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `listener` over TLS on the caller's runtime: a handshake (SNI, ALPN `h2` or
/// `http/1.1`), then hyper's HTTP/1 or HTTP/2 server with the general path's handler.
pub(crate) fn serve_tls(
    shared: Arc<Shared>,
    listener: TcpListener,
    scope: Scope,
    config: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut worker = Worker::new(shared, scope, shutdown.clone());
    worker.tls = Some(tokio_rustls::TlsAcceptor::from(config));
    tokio::spawn(accept_with(worker, listener, shutdown))
}

/// How long a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-worker settings shared by its connections.
struct Worker {
    shared: Arc<Shared>,
    scope: Scope,
    builder: http1::Builder,
    shutdown: watch::Receiver<bool>,
    connections: Arc<Connections>,
    /// For a TLS listener: the handshake.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Worker {
    fn new(shared: Arc<Shared>, scope: Scope, shutdown: watch::Receiver<bool>) -> Worker {
        let limits = PoolLimits {
            max_idle: shared.config.pool_max_idle,
            idle_timeout_ms: u64::try_from(shared.config.pool_idle_timeout.as_millis())
                .unwrap_or(u64::MAX),
        };
        pool::set_limits(limits);
        let mut builder = http1::Builder::new();
        builder.keep_alive(true);
        // The fast path's head limit (431 past it): hyper's default is ~400 KiB.
        builder.max_buf_size(fast::MAX_HEAD);
        // hyper's header timer also runs while a keep-alive connection waits for its next
        // request: it is the general path's idle timeout too.
        if let Some(timeout) = head_or_idle(&shared.config) {
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
        }
        Worker {
            shared,
            scope,
            builder,
            shutdown,
            connections: Arc::new(Connections::default()),
            tls: None,
        }
    }

    fn start(&self, stream: TcpStream, peer: SocketAddr) {
        let config = &self.shared.config;
        let limits = &self.shared.limits;
        let Some(admitted) = limits.admit(
            peer.ip().to_canonical(),
            config.max_connections,
            config.max_connections_per_ip,
        ) else {
            // Past a cap: closed at once.
            tracing::debug!(%peer, "connection cap reached: connection closed");
            return;
        };
        let (registration, stop) = self.connections.register();
        let id = registration.id();
        let task = Connection {
            shared: self.shared.clone(),
            scope: self.scope,
            builder: self.builder.clone(),
            shutdown: self.shutdown.clone(),
            connections: self.connections.clone(),
            registration,
            admitted: Some(admitted),
        };
        let task = match &self.tls {
            Some(acceptor) => tokio::spawn(task.run_tls(acceptor.clone(), stream, peer, stop)),
            None => tokio::spawn(task.run(stream, peer, stop)),
        };
        self.connections.track(id, task.abort_handle());
    }

    /// Stops every connection gracefully and waits for them (and tunnels) to end, for at
    /// most [`RouterConfig::shutdown_timeout`](super::RouterConfig::shutdown_timeout); then
    /// drops those left.
    async fn finish(self) {
        self.connections.stop_all();
        let deadline = self.shared.config.shutdown_timeout;
        if tokio::time::timeout(deadline, self.connections.wait_idle())
            .await
            .is_err()
        {
            let dropped = self.connections.abort_all();
            tracing::warn!(
                connections = dropped,
                timeout = ?deadline,
                "the router's drain deadline passed: dropping the remaining connections"
            );
            // Aborted tasks end at their next poll; a task that never got tracked is left to
            // the runtime.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.connections.wait_idle()).await;
            if self.connections.active() > 0 {
                tracing::warn!(
                    connections = self.connections.active(),
                    "router connections still open after the drain"
                );
            }
        }
    }
}

/// Serves the connections the acceptor deals until it stops (at shutdown): connections it
/// accepted before are served too (in drain mode), not dropped, since a connection dropped
/// unanswered is a failed request (during an upgrade, the next process would have taken it).
async fn worker_loop(
    shared: Arc<Shared>,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    scope: Scope,
    shutdown: watch::Receiver<bool>,
) {
    let worker = Worker::new(shared, scope, shutdown);
    while let Some((stream, peer)) = accepted.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => worker.start(stream, peer),
            Err(error) => tracing::warn!(%error, "cannot register a connection"),
        }
    }
    worker.finish().await;
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    scope: Scope,
    shutdown: watch::Receiver<bool>,
) {
    let worker = Worker::new(shared, scope, shutdown.clone());
    accept_with(worker, listener, shutdown).await;
}

async fn accept_with(worker: Worker, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => worker.start(stream, peer),
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    worker.finish().await;
}

/// Waits until `shutdown` turns true or its sender is dropped.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

struct Connection {
    shared: Arc<Shared>,
    scope: Scope,
    builder: http1::Builder,
    shutdown: watch::Receiver<bool>,
    connections: Arc<Connections>,
    /// Counts the connection until it ends (or is aborted).
    registration: Registration,
    /// Counts it against the connection caps (with its tunnel, if it upgrades); moves into
    /// the connection's context.
    admitted: Option<Admitted>,
}

impl Connection {
    async fn run(
        mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut stop: oneshot::Receiver<()>,
    ) {
        let _ = stream.set_nodelay(true);
        let ctx = self.context(peer, "http");
        // Simple requests first; the connection moves to hyper for anything else.
        if let fast::Outcome::HandOff(prefix) = fast::run(&ctx, &mut stream, &mut stop).await {
            let conn = self
                .builder
                .serve_connection(
                    TokioIo::new(fast::Rewind::new(prefix, stream)),
                    Service(ctx),
                )
                .with_upgrades();
            tokio::pin!(conn);
            let finished = tokio::select! {
                biased;
                _ = conn.as_mut() => true,
                _ = &mut stop => false,
            };
            if !finished {
                // Answers say `Connection: close` now (see `Service`): a busy connection
                // ends after its next one; an idle one is closed after the grace.
                let grace = self.shared.config.drain_grace;
                if tokio::time::timeout(grace, conn.as_mut()).await.is_err() {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
        drop(self.registration);
    }
}

impl Connection {
    /// What the connection's requests share; `proto` is the client's scheme.
    fn context(&mut self, peer: SocketAddr, proto: super::h1::Proto) -> Arc<ConnCtx> {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let trusted = self
            .shared
            .config
            .trusted_proxies
            .contains(&peer.ip().to_canonical());
        Arc::new(ConnCtx {
            shared: self.shared.clone(),
            scope: self.scope,
            client_ip,
            trusted,
            proto,
            _admitted: self
                .admitted
                .take()
                .expect("a connection's context is made once"),
            shutdown: self.shutdown.clone(),
            connections: self.connections.clone(),
            requests: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A TLS client: the handshake, then HTTP/2 or HTTP/1.1 as ALPN chose, through the
    /// general path.
    async fn run_tls(
        mut self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        mut stop: oneshot::Receiver<()>,
    ) {
        let _ = stream.set_nodelay(true);
        let handshake = tokio::select! {
            biased;
            _ = &mut stop => return,
            done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        if crate::tls::is_acme_validation(stream.get_ref().1) {
            // An ACME CA checked the TLS-ALPN-01 certificate: no HTTP on this connection.
            let mut stream = stream;
            let close = tokio::io::AsyncWriteExt::shutdown(&mut stream);
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, close).await;
            return;
        }
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let ctx = self.context(peer, "https");
        let config = &self.shared.config;
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder.http1().keep_alive(true).timer(TokioTimer::new());
        // As on plain HTTP/1, hyper's header timer is also the keep-alive idle timeout.
        if let Some(timeout) = head_or_idle(config) {
            builder.http1().header_read_timeout(timeout);
        }
        builder.http2().timer(TokioTimer::new());
        let service = Service(ctx);
        let activity = service.0.clone();
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        // HTTP/2 has no idle timer of its own: a connection without a new stream for the
        // idle timeout is shut down gracefully (streams still open finish first).
        let idle = config.idle_timeout.filter(|_| h2);
        let mut ticks = tokio::time::interval(idle.map_or(Duration::from_secs(3600), |i| i / 4));
        ticks.tick().await;
        let mut seen = activity.requests();
        let mut quiet_since = tokio::time::Instant::now();
        let finished = loop {
            tokio::select! {
                biased;
                _ = conn.as_mut() => break true,
                _ = &mut stop => break false,
                _ = ticks.tick(), if idle.is_some() => {
                    let now = activity.requests();
                    if now != seen {
                        seen = now;
                        quiet_since = tokio::time::Instant::now();
                    } else if quiet_since.elapsed() >= idle.unwrap_or_default() {
                        break false;
                    }
                }
            }
        };
        if !finished {
            // HTTP/2 ends with GOAWAY (clients retry what it did not take); HTTP/1.1 as on
            // plain connections: answers say `Connection: close`, an idle one gets the grace.
            let grace = config.drain_grace;
            let stopping = activity.connections.is_draining();
            if h2 || !stopping || tokio::time::timeout(grace, conn.as_mut()).await.is_err() {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        drop(self.registration);
    }
}

/// hyper's HTTP/1 header timer, which also runs while a keep-alive connection waits for its
/// next request: the shorter of the head deadline and the idle timeout.
fn head_or_idle(config: &super::config::RouterConfig) -> Option<Duration> {
    match (config.header_read_timeout, config.idle_timeout) {
        (Some(head), Some(idle)) => Some(head.min(idle)),
        (head, idle) => head.or(idle),
    }
}

struct Service(Arc<ConnCtx>);

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let ctx = self.0.clone();
        Box::pin(async move {
            ctx.note_request();
            let tls = ctx.proto == "https";
            let hsts = tls
                .then(|| super::handler::hsts(&ctx.shared.edge.load(), &req))
                .flatten();
            let http1 = req.version() <= hyper::Version::HTTP_11;
            let connections = ctx.connections.clone();
            let mut response = handle(ctx, req).await;
            if let Some(hsts) = hsts.and_then(|h| HeaderValue::from_str(&h).ok()) {
                response
                    .headers_mut()
                    .insert(hyper::header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            // Draining: the connection's last answer (hyper closes after it). Not on an
            // upgrade, whose `Connection: upgrade` must stay.
            if http1
                && connections.is_draining()
                && response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS
            {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}
