//! Real hyper backends and clients on 127.0.0.1:0 for the router tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use paz_core::route::{Backend as RouteBackend, BackendState, Route, RouteTable};
use paz_proxy::{Router, RouterConfig, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// The RFC 6455 sample key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A body fed through a channel (streaming responses, trickled requests).
pub struct ChanBody(mpsc::Receiver<Bytes>);

impl ChanBody {
    pub fn new(receiver: mpsc::Receiver<Bytes>) -> Self {
        ChanBody(receiver)
    }
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

pub enum TestBody {
    Full(Full<Bytes>),
    Chan(ChanBody),
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(b) => Pin::new(b).poll_frame(cx),
            TestBody::Chan(b) => Pin::new(b).poll_frame(cx),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Full(b) => b.is_end_stream(),
            TestBody::Chan(_) => false,
        }
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            TestBody::Full(b) => b.size_hint(),
            TestBody::Chan(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(TestBody::Full(Full::new(body.into())));
    *r.status_mut() = status;
    r
}

fn query_ms(req: &Request<Incoming>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// A test backend: a real hyper HTTP/1.1 server on 127.0.0.1:0.
///
/// Paths: `/` answers its name; `/slow?ms=N` answers after N ms; `/headers` echoes the
/// request headers (`name: value` lines); `/status/NNN` answers that status; `/health`
/// answers `health_status`; `/echo` echoes the body; `/stream` streams 3 chunks; `/ws` is a
/// WebSocket echo; `/ws-big` is a WebSocket that sends one 64 KiB frame, slowly, when told
/// `big`.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        Self::start_with_health(name, StatusCode::OK).await
    }

    pub async fn start_with_health(name: &str, health_status: StatusCode) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let name_owned: Arc<str> = name.into();
        let hits2 = hits.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let name = name_owned.clone();
                let hits = hits2.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let name = name.clone();
                        let hits = hits.clone();
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(answer(&name, req, health_status).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        TestBackend { addr, hits, task }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops the server and closes all its connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(name: &str, mut req: Request<Incoming>, health: StatusCode) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_ms(&req))).await;
            full(StatusCode::OK, format!("slow {name}"))
        }
        "/headers" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            full(StatusCode::OK, out)
        }
        "/health" => full(health, "health"),
        "/echo" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            full(StatusCode::OK, body.unwrap_or_default())
        }
        "/stream" => {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for i in 0..3 {
                    let _ = tx.send(Bytes::from(format!("chunk{i};"))).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            Response::new(TestBody::Chan(ChanBody(rx)))
        }
        "/ws" | "/ws-big" => {
            let big = path == "/ws-big";
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let _ = ws_server(TokioIo::new(upgraded), big).await;
                }
            });
            let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            r.headers_mut()
                .insert("upgrade", "websocket".parse().expect("value"));
            r.headers_mut()
                .insert("connection", "Upgrade".parse().expect("value"));
            r.headers_mut()
                .insert("sec-websocket-accept", WS_ACCEPT.parse().expect("value"));
            r
        }
        p if p.starts_with("/expect-host/") => {
            let want = &p["/expect-host/".len()..];
            let got = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if got == want {
                full(StatusCode::OK, "right host")
            } else {
                full(StatusCode::MISDIRECTED_REQUEST, format!("wrong host {got}"))
            }
        }
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..].parse().unwrap_or(500);
            full(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("status {code}"),
            )
        }
        _ => {
            let mut r = full(StatusCode::OK, name.to_owned());
            r.headers_mut()
                .insert("keep-alive", "timeout=5".parse().expect("value"));
            r
        }
    }
}

/// One WebSocket frame: (opcode, payload).
pub async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.context("frame header")?;
    let opcode = h[0] & 0x0F;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; usize::try_from(len)?];
    s.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// A frame header (unmasked when `mask` is None).
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

async fn ws_server<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    big: bool,
) -> Result<()> {
    loop {
        let (opcode, payload) = read_frame(&mut s).await?;
        match opcode {
            0x8 => {
                s.write_all(&frame(0x8, &payload, None)).await?;
                return Ok(());
            }
            _ if big && payload == b"big" => {
                let data = vec![b'x'; 64 * 1024];
                let whole = frame(0x2, &data, None);
                for chunk in whole.chunks(8 * 1024) {
                    s.write_all(chunk).await?;
                    s.flush().await?;
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }
            _ => {
                s.write_all(&frame(opcode, &payload, None)).await?;
            }
        }
    }
}

/// A 127.0.0.1 address where nothing listens.
pub async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

/// One backend of a test route: address, weight, state.
pub type TestBackendEntry = (String, u32, BackendState);

/// A route table from `(host, service, [(address, weight, state)])`.
pub fn table(entries: &[(&str, &str, Vec<TestBackendEntry>)]) -> RouteTable {
    let mut routes = BTreeMap::new();
    for (host, service, backends) in entries {
        routes.insert(
            (*host).to_owned(),
            Route {
                service: (*service).to_owned(),
                https_redirect: true,
                health_path: None,
                backends: backends
                    .iter()
                    .map(|(a, weight, state)| {
                        (
                            a.clone(),
                            RouteBackend {
                                weight: *weight,
                                state: *state,
                            },
                        )
                    })
                    .collect(),
            },
        );
    }
    RouteTable { routes }
}

pub fn active(b: &TestBackend) -> TestBackendEntry {
    (b.address(), 100, BackendState::Active)
}

pub fn draining(b: &TestBackend) -> TestBackendEntry {
    (b.address(), 100, BackendState::Draining)
}

/// A router serving a public and an internal listener.
pub struct TestRouter {
    pub router: Arc<Router>,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub served: Vec<JoinHandle<()>>,
}

impl TestRouter {
    pub async fn start(config: RouterConfig) -> TestRouter {
        let router = Router::new(config);
        let (stop, shutdown) = watch::channel(false);
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (public_addr, internal_addr) = (
            public.local_addr().expect("addr"),
            internal.local_addr().expect("addr"),
        );
        let served = vec![
            router.serve(public, Scope::Public, shutdown.clone()),
            router.serve(internal, Scope::Internal, shutdown),
        ];
        TestRouter {
            router,
            public: public_addr,
            internal: internal_addr,
            stop,
            served,
        }
    }

    pub async fn default() -> TestRouter {
        Self::start(RouterConfig::default()).await
    }
}

/// What a client saw.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer> {
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer> {
        self.send(request("GET", host, path, Bytes::new())).await
    }
}

pub fn request(method: &str, host: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(body))
        .expect("request")
}

/// One request on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer> {
    Client::connect(addr).await?.get(host, path).await
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
