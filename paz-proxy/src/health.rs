//! Active health checks over HTTP and TCP ([`HealthChecker`]).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use paz_core::health::{HealthChecker, HealthReport, HealthTarget};
use paz_core::service::HealthKind;
use tokio::net::TcpStream;

/// Checks instances the way the router reaches them: `GET <path>` on the instance's address
/// with the service's `Host` header (2xx = healthy), or a TCP connect for `tcp` checks. Each
/// check uses a fresh connection and ends within the check's timeout.
#[derive(Debug, Clone, Default)]
pub struct HttpHealthChecker {
    _private: (),
}

impl HttpHealthChecker {
    /// A checker.
    pub fn new() -> Self {
        Self::default()
    }
}

/// An empty request body.
struct NoBody;

impl Body for NoBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}

/// The address to check: `target.address`, on `check.port` when set.
fn address(target: &HealthTarget) -> String {
    match target.check.port {
        Some(port) => match target.address.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{port}"),
            None => format!("{}:{port}", target.address),
        },
        None => target.address.clone(),
    }
}

async fn http_check(address: &str, target: &HealthTarget) -> Result<(bool, String), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connection to {address} failed: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake::<_, NoBody>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {address} failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let host = target.host.as_deref().unwrap_or(address);
    let mut request = Request::new(NoBody);
    *request.method_mut() = Method::GET;
    *request.uri_mut() = target
        .check
        .path
        .parse()
        .map_err(|e| format!("bad health path {:?}: {e}", target.check.path))?;
    let headers = request.headers_mut();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(host).map_err(|e| format!("bad host {host:?}: {e}"))?,
    );
    headers.insert(header::USER_AGENT, HeaderValue::from_static("paz-health"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {} on {address} failed: {e}", target.check.path))?;
    let status = response.status();
    drop(response);
    driver.abort();
    let detail = format!("GET {} answered {status}", target.check.path);
    Ok((status.is_success(), detail))
}

#[async_trait]
impl HealthChecker for HttpHealthChecker {
    async fn check(&self, target: &HealthTarget) -> HealthReport {
        let started = Instant::now();
        let timeout: Duration = target.check.timeout.get();
        let address = address(target);
        let outcome = match target.check.kind {
            HealthKind::Tcp => tokio::time::timeout(timeout, TcpStream::connect(address.as_str()))
                .await
                .map(|connected| match connected {
                    Ok(_) => Ok((true, format!("TCP connect to {address} succeeded"))),
                    Err(e) => Err(format!("TCP connect to {address} failed: {e}")),
                }),
            HealthKind::Http => tokio::time::timeout(timeout, http_check(&address, target)).await,
        };
        let (healthy, detail) = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(detail)) => (false, detail),
            Err(_) => (
                false,
                format!("no answer from {address} within {timeout:?}"),
            ),
        };
        HealthReport {
            healthy,
            detail,
            latency: started.elapsed(),
        }
    }
}
