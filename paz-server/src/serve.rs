//! The API's accept loop: HTTP/1 over hyper with a header-read deadline (which is also the
//! idle keep-alive timeout), a request-body deadline, a cap on concurrent connections and a
//! bounded drain at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode, header};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::ServerError;

/// How the API serves connections. `Default` gives production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a client has to send a complete request head, counted from when the server
    /// starts waiting for it (a total deadline, not per read). It also closes keep-alive
    /// connections idle that long between requests.
    pub header_timeout: Duration,
    /// How long a client has to send a whole request body, counted from the request head;
    /// past it the request is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// Connections served at once; past it new connections wait in the kernel's listen
    /// backlog until one ends.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish; then the remaining
    /// connections are dropped.
    pub shutdown_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then calls `on_shutdown`, stops
/// accepting and drains for at most [`ServeLimits::shutdown_timeout`].
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) {
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // The permit first: past the cap, connections wait in the listen backlog.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "API accept failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            // Who is calling (the UI limits sign-ins per client).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            handle(app.clone(), body_timeout, request)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "API connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    on_shutdown();
    tracing::info!(
        connections = connections.len(),
        "shutting down: finishing in-flight requests"
    );
    let drained = tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            timeout = ?limits.shutdown_timeout,
            "the API drain deadline passed: dropping the remaining connections"
        );
    }
    connections.shutdown().await;
}

async fn handle(
    app: Router,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<axum::response::Response, Infallible> {
    let deadline = Instant::now() + body_timeout;
    let request = request.map(|body| axum::body::Body::new(DeadlineBody::new(body, deadline)));
    let mut response = app.oneshot(request).await?;
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may still be coming: do not read it as the next request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// A request body that fails with [`ServerError::BodyTimeout`] once its deadline passes.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        DeadlineBody {
            inner,
            deadline,
            sleep: None,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = ServerError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ServerError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(ServerError::Body)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(ServerError::BodyTimeout))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or one of its sources) is a request body that timed out.
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if matches!(
            error.downcast_ref::<ServerError>(),
            Some(ServerError::BodyTimeout)
        ) {
            return true;
        }
        current = error.source();
    }
    false
}
