//! The fast client-side path: simple requests are proxied straight from socket to socket.
//!
//! Each client connection starts here. A request that is HTTP/1.1, origin-form, has exactly
//! one `Host`, no body (no `Transfer-Encoding`, `Content-Length` absent or 0), no `Upgrade`
//! and no `Expect` — the vast majority — is parsed with `httparse`, re-encoded for the backend
//! (hop-by-hop headers out, `X-Forwarded-*` in) on a pooled fast-path connection, and the
//! backend's answer is forwarded verbatim (head re-encoded only when it carries hop-by-hop
//! headers), usually in a single write. No `HeaderMap`, no per-request task or allocation
//! beyond the routing state's reference counts.
//!
//! Anything else (a body, an upgrade, HTTP/1.0, odd forms) hands the connection, with the
//! bytes already read, to hyper's server for the rest of its life: the general path. Its
//! stream ([`Rewind`]) still holds each request head back until it passes the same checks
//! (hyper alone would drop a `Content-Length` sent with `Transfer-Encoding`, for one).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::backend::{Conn, Failure, Mode, acquire};
use super::body::InFlight;
use super::config::Scope;
use super::conn::ConnCtx;
use super::h1::{self, ChunkScan, Framing};
use super::host::route_host;
use super::pool;
use super::shared::Shared;
use super::state::RouteEntry;
use super::upstream::{RawHead, Upstream};

/// The largest request head accepted (431 past it).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// How the fast path left a connection.
pub(crate) enum Outcome {
    /// Closed (or to be closed).
    Done,
    /// To be served by hyper, starting with these already-read bytes.
    HandOff(Vec<u8>),
}

/// The client's read buffer; `buf[start..end]` is unread.
struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    fn poll_fill(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
            } else {
                return Poll::Ready(Err(io::Error::other("request head too large")));
            }
        }
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// What the fast path needs from a parsed request head.
struct Simple {
    head_len: usize,
    head_request: bool,
    close: bool,
    /// Bytes of the upstream request head, ready to send.
    host: (usize, usize),
}

/// A small complete response (errors).
fn error_response(out: &mut Vec<u8>, status: StatusCode, message: &str, close: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(
        b"\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n",
    );
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(message.as_bytes());
}

/// What [`parse_simple`] made of the buffered bytes.
enum Parsed {
    /// An incomplete head.
    Partial,
    Simple(Simple),
    /// Not for the fast path (or malformed: hyper answers it).
    General,
    /// Refused (the connection closes after the answer).
    Refused(StatusCode, &'static str),
}

/// Who sent a request: what [`parse_simple`] needs of the connection.
#[derive(Clone, Copy)]
pub(crate) struct Peer<'a> {
    pub client_ip: &'a [u8],
    pub trusted: bool,
    pub proto: h1::Proto,
}

/// Whether the router answers this simple request itself (see `edge`): only looked at when
/// there is something to answer (one atomic load otherwise).
fn edge_wants(ctx: &ConnCtx, data: &[u8], simple: &Simple) -> bool {
    let edge = ctx.shared.edge.load();
    if edge.is_empty() {
        return false;
    }
    let target = data
        .split(|b| *b == b' ')
        .nth(1)
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("/");
    std::str::from_utf8(&data[simple.host.0..simple.host.1])
        .ok()
        .and_then(super::host::route_host)
        .is_some_and(|host| edge.wants(&host, target))
}

/// Parses the request head at the start of `data`. For a simple request, `out` holds the
/// head to send upstream.
fn parse_simple(data: &[u8], peer: Peer<'_>, out: &mut Vec<u8>) -> Parsed {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        data,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::General,
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::General;
    };
    if method == "CONNECT" {
        return Parsed::Refused(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported");
    }
    let mut general = version != 1 || !path.starts_with('/');
    let trusted = peer.trusted;
    let mut host = None;
    let mut framing = h1::FramingScan::default();
    let mut forwarding = h1::Forwarding {
        client_ip: peer.client_ip,
        proto: peer.proto,
        ..h1::Forwarding::default()
    };
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Parsed::Refused(StatusCode::BAD_REQUEST, "more than one Host header");
            }
            host = Some(h.value);
        } else if framing.header(name, h.value) {
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            general = true;
        } else if trusted && h1::is_forwarding(name) {
            let prior = if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                &mut forwarding.prior_for
            } else if name.eq_ignore_ascii_case(b"forwarded") {
                &mut forwarding.prior_forwarded
            } else if name.eq_ignore_ascii_case(b"x-forwarded-proto") {
                &mut forwarding.prior_proto
            } else if name.eq_ignore_ascii_case(b"x-forwarded-host") {
                &mut forwarding.prior_host
            } else {
                continue;
            };
            // Several lines: the general path joins them.
            general |= prior.is_some();
            *prior = Some(h.value);
        }
    }
    // HTTP/1.0 and odd forms: hyper's, with the handler's checks.
    let Some(host) = host.filter(|_| version == 1) else {
        return Parsed::General;
    };
    if !h1::valid_host(host) {
        return Parsed::Refused(StatusCode::BAD_REQUEST, "invalid Host header");
    }
    match framing.request(version == 1) {
        Err(refusal) => return Parsed::Refused(StatusCode::BAD_REQUEST, refusal),
        Ok(Framing::Done) => {}
        Ok(_) => return Parsed::General,
    }
    let connection = framing.connection();
    // `Connection` naming other headers to drop, upgrades: the general path.
    if general || connection.names || connection.upgrade {
        return Parsed::General;
    }
    let host_range = {
        let offset = host.as_ptr() as usize - data.as_ptr() as usize;
        (offset, offset + host.len())
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if h1::is_hop_by_hop(name)
            || (h1::is_forwarding(name) && !(trusted && name.eq_ignore_ascii_case(b"x-real-ip")))
            || h1::is_underscore_alias(name)
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    forwarding.host = host;
    forwarding.write_lines(out);
    out.extend_from_slice(b"\r\n");
    Parsed::Simple(Simple {
        head_len: len,
        head_request: method == "HEAD",
        close: connection.close,
        host: host_range,
    })
}

/// When a connection told to stop while waiting for a request closes.
fn draining_until(ctx: &ConnCtx) -> tokio::time::Instant {
    tokio::time::Instant::now() + ctx.shared.config.drain_grace
}

/// Sleeps until `deadline`; never ends without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Serves a client connection on the fast path until it closes or needs the general path.
pub(crate) async fn run(
    ctx: &ConnCtx,
    io: &mut TcpStream,
    stop: &mut oneshot::Receiver<()>,
) -> Outcome {
    let mut inbuf = InBuf {
        buf: vec![0; 8 * 1024],
        start: 0,
        end: 0,
    };
    let mut out = Vec::with_capacity(1024);
    let peer = Peer {
        client_ip: ctx.client_ip.as_bytes(),
        trusted: ctx.trusted,
        proto: ctx.proto,
    };
    let header_timeout = ctx.shared.config.header_read_timeout;
    let idle = ctx.shared.config.idle_timeout;
    // One timer for the connection's idle waits (before a request's first byte), re-armed
    // only when it fires: no timer per request.
    let idle_timer = tokio::time::sleep(idle.unwrap_or_default());
    tokio::pin!(idle_timer);
    let mut idle_since = tokio::time::Instant::now();
    // Once told to stop: a request must start before this, or the connection closes.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        // Slowloris guard: a started head must be complete by then (not reset per read).
        let mut head_deadline = None;
        // A complete request head.
        let simple = loop {
            match parse_simple(inbuf.unread(), peer, &mut out) {
                // The router's own answers (ACME challenges, HTTPS redirects) are the
                // general path's.
                Parsed::Simple(simple) if edge_wants(ctx, inbuf.unread(), &simple) => {
                    return Outcome::HandOff(inbuf.unread().to_vec());
                }
                Parsed::Simple(simple) => break simple,
                Parsed::Partial => {}
                Parsed::General => return Outcome::HandOff(inbuf.unread().to_vec()),
                Parsed::Refused(status, why) => return refuse(io, status, why).await,
            }
            let partial = inbuf.start != inbuf.end;
            let read = std::future::poll_fn(|cx| inbuf.poll_fill(io, cx));
            let filled = if partial {
                let deadline = header_timeout
                    .map(|t| *head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + t));
                tokio::select! {
                    biased;
                    _ = &mut *stop, if drain_deadline.is_none() => {
                        drain_deadline = Some(draining_until(ctx));
                        continue;
                    }
                    () = sleep_until_some(deadline), if deadline.is_some() => {
                        return Outcome::Done;
                    }
                    () = sleep_until_some(drain_deadline), if drain_deadline.is_some() => {
                        return Outcome::Done;
                    }
                    r = read => r,
                }
            } else {
                let mut read = std::pin::pin!(read);
                loop {
                    tokio::select! {
                        biased;
                        // Told to stop while idle: one more request may come in the grace
                        // (closing now could cut one the client is sending).
                        _ = &mut *stop, if drain_deadline.is_none() => {
                            drain_deadline = Some(draining_until(ctx));
                        }
                        () = sleep_until_some(drain_deadline), if drain_deadline.is_some() => {
                            return Outcome::Done;
                        }
                        r = &mut read => break r,
                        () = idle_timer.as_mut(), if idle.is_some() => {
                            let deadline = idle_since + idle.unwrap_or_default();
                            if deadline <= tokio::time::Instant::now() {
                                return Outcome::Done;
                            }
                            idle_timer.as_mut().reset(deadline);
                        }
                    }
                }
            };
            match filled {
                Ok(0) => return Outcome::Done,
                Ok(_) => {}
                Err(_) if inbuf.end - inbuf.start >= MAX_HEAD => {
                    return refuse(
                        io,
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                    )
                    .await;
                }
                Err(_) => return Outcome::Done,
            }
        };
        let started = Instant::now();
        // Draining: this answer says `Connection: close` and is the connection's last.
        let close = simple.close || ctx.connections.is_draining();
        let keep = proxy(ctx, io, &inbuf, &simple, close, &mut out, started).await;
        if idle.is_some() {
            idle_since = tokio::time::Instant::now();
        }
        inbuf.start += simple.head_len;
        if !keep || close {
            let _ = io.shutdown().await;
            return Outcome::Done;
        }
    }
}

/// Answers a refused request and closes the connection.
#[cold]
async fn refuse(io: &mut TcpStream, status: StatusCode, why: &str) -> Outcome {
    let mut response = Vec::new();
    error_response(&mut response, status, &format!("paz: {why}\n"), true);
    if io.write_all(&response).await.is_ok() {
        let _ = io.shutdown().await;
    }
    Outcome::Done
}

/// Proxies one simple request; returns whether the client connection can go on.
async fn proxy(
    ctx: &ConnCtx,
    io: &mut TcpStream,
    inbuf: &InBuf,
    simple: &Simple,
    close: bool,
    out: &mut Vec<u8>,
    started: Instant,
) -> bool {
    let shared = &*ctx.shared;
    let data = inbuf.unread();
    let raw_host = std::str::from_utf8(&data[simple.host.0..simple.host.1]).unwrap_or("");
    let lookup = || {
        let host = route_host(raw_host)?;
        let state = shared.state.load();
        let map = match ctx.scope {
            Scope::Public => &state.public,
            Scope::Internal => &state.internal,
        };
        map.get(&*host).cloned()
    };
    let Some(mut entry) = lookup() else {
        shared.unmatched.fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "paz: no service is routed at host {:?}\n",
            route_host(raw_host).unwrap_or_default()
        );
        let mut response = Vec::new();
        error_response(&mut response, StatusCode::NOT_FOUND, &message, close);
        return io.write_all(&response).await.is_ok();
    };
    // GET, HEAD, OPTIONS, DELETE, PUT without a body: idempotent.
    let retryable = !data.starts_with(b"POST ") && !data.starts_with(b"PATCH ");
    let acquired = acquire(shared, &mut entry, lookup, Mode::Fast, retryable, None).await;
    let (mut in_flight, mut conn, mut pooled) = match acquired {
        Ok((in_flight, Conn::Raw(conn), pooled)) => (in_flight, conn, pooled),
        Ok((_, Conn::Hyper(_), _)) => unreachable_mode(),
        Err(failure) => {
            let (status, message) = failure_text(&entry, &failure);
            entry.service.record(status.as_u16(), started.elapsed());
            let mut response = Vec::new();
            error_response(&mut response, status, &message, close);
            return io.write_all(&response).await.is_ok();
        }
    };
    let config = &shared.config;
    let deadline = tokio::time::Instant::from_std(started) + config.backend_timeout;
    let mut slot = in_flight.slot().clone();
    let mut moved_on = false;
    let head = loop {
        match tokio::time::timeout_at(deadline, conn.exchange_raw(out, simple.head_request)).await {
            Err(_) => {
                return answer_error(
                    io,
                    &entry,
                    started,
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "paz: a backend of service {:?} did not answer within {:?}\n",
                        &*entry.service.name, config.backend_timeout
                    ),
                    close,
                )
                .await;
            }
            Ok(Ok(head)) => break head,
            Ok(Err((_, false))) if pooled => {
                // Not a byte went out on a stale pooled connection: a fresh one, once.
                pooled = false;
                match tokio::time::timeout_at(
                    deadline,
                    Upstream::connect(&slot, config.connect_timeout),
                )
                .await
                {
                    Ok(Ok(fresh)) => {
                        conn = fresh;
                        continue;
                    }
                    // The backend went away (its host was lost, it crashed): ejected, and an
                    // idempotent request moves to another backend (below).
                    _ if retryable && !moved_on && entry.backends.len() > 1 => {
                        slot.eject(config.ejection, config.max_ejection);
                        tracing::warn!(
                            service = %entry.service.name, backend = %slot.address,
                            "backend closed its pooled connection and refuses new ones: ejected"
                        );
                    }
                    _ => {
                        return answer_error(
                            io,
                            &entry,
                            started,
                            StatusCode::BAD_GATEWAY,
                            &failed_text(&entry),
                            close,
                        )
                        .await;
                    }
                }
            }
            // The connection broke before a response began (nothing reached the client):
            // an idempotent request moves to another backend (below), as nginx's
            // `proxy_next_upstream error` does. The backend stays in (one connection broke).
            Ok(Err((error, _))) if retryable && !moved_on && entry.backends.len() > 1 => {
                tracing::warn!(
                    service = %entry.service.name, backend = %slot.address, %error,
                    "backend failed before answering: the request moves to another"
                );
            }
            Ok(Err((error, _))) => {
                tracing::warn!(
                    service = %entry.service.name, backend = %slot.address, %error,
                    "backend failed"
                );
                return answer_error(
                    io,
                    &entry,
                    started,
                    StatusCode::BAD_GATEWAY,
                    &failed_text(&entry),
                    close,
                )
                .await;
            }
        }
        // Once, to another backend than the one that failed.
        moved_on = true;
        match move_on(shared, &mut entry, lookup, in_flight.index()).await {
            Ok((fresh_in_flight, fresh, fresh_pooled)) => {
                in_flight = fresh_in_flight;
                slot = in_flight.slot().clone();
                conn = fresh;
                pooled = fresh_pooled;
            }
            Err(failure) => {
                let (status, message) = failure_text(&entry, &failure);
                return answer_error(io, &entry, started, status, &message, close).await;
            }
        }
    };
    let forwarded = forward(io, &mut conn, head, close, out).await;
    entry.service.record(head.status, started.elapsed());
    drop(in_flight);
    match forwarded {
        Ok(reusable_client) => {
            if head.reusable && conn.is_clean() {
                pool::checkin_raw(&slot, conn);
            }
            reusable_client
        }
        Err(error) => {
            tracing::debug!(backend = %slot.address, %error, "response forwarding failed");
            false
        }
    }
}

/// Another backend than `avoid` (which just failed) for an idempotent request, and a
/// connection to it.
async fn move_on(
    shared: &Shared,
    entry: &mut Arc<RouteEntry>,
    lookup: impl Fn() -> Option<Arc<RouteEntry>>,
    avoid: usize,
) -> Result<(InFlight, Upstream, bool), Failure> {
    match acquire(shared, entry, lookup, Mode::Fast, true, Some(avoid)).await? {
        (in_flight, Conn::Raw(conn), pooled) => Ok((in_flight, conn, pooled)),
        (_, Conn::Hyper(_), _) => unreachable_mode(),
    }
}

#[cold]
fn unreachable_mode() -> ! {
    // `acquire` with `Mode::Fast` only makes fast-path connections.
    panic!("fast path got a hyper connection")
}

fn failed_text(entry: &RouteEntry) -> String {
    format!(
        "paz: a backend of service {:?} failed to answer\n",
        &*entry.service.name
    )
}

fn failure_text(entry: &RouteEntry, failure: &Failure) -> (StatusCode, String) {
    let name = &*entry.service.name;
    match failure {
        Failure::NoBackend { retried: true } => (
            StatusCode::BAD_GATEWAY,
            format!("paz: no backend of service {name:?} accepted a connection\n"),
        ),
        Failure::NoBackend { retried: false } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("paz: service {name:?} has no healthy backend\n"),
        ),
        Failure::Connect => (
            StatusCode::BAD_GATEWAY,
            format!("paz: cannot connect to a backend of service {name:?}\n"),
        ),
    }
}

async fn answer_error(
    io: &mut TcpStream,
    entry: &RouteEntry,
    started: Instant,
    status: StatusCode,
    message: &str,
    close: bool,
) -> bool {
    entry.service.record(status.as_u16(), started.elapsed());
    let mut response = Vec::new();
    error_response(&mut response, status, message, close);
    io.write_all(&response).await.is_ok()
}

/// Forwards the response (head at the start of `conn.unread()`) and its body to the client.
/// Returns whether the client connection can carry another request; an error means the
/// exchange broke mid-way (the client connection must close).
async fn forward(
    io: &mut TcpStream,
    conn: &mut Upstream,
    head: RawHead,
    close: bool,
    scratch: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut framing = head.framing;
    let mut chunks = ChunkScan::new();
    // Body bytes already buffered after the head, up to the body's end.
    let take_body =
        |unread: &[u8], framing: &mut Framing, chunks: &mut ChunkScan| -> io::Result<usize> {
            match *framing {
                Framing::Done => Ok(0),
                Framing::Length(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(unread.len());
                    let left = n - k as u64;
                    *framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    Ok(k)
                }
                Framing::Chunked => {
                    let k = chunks.scan(unread).map_err(io::Error::other)?;
                    if chunks.is_done() {
                        *framing = Framing::Done;
                    }
                    Ok(k)
                }
                Framing::Eof => Ok(unread.len()),
            }
        };

    // The head, and the body bytes that came with it, in one write.
    if head.strip || close {
        encode_stripped_head(&conn.unread()[..head.len], close, scratch)?;
        conn.consume(head.len);
        let k = take_body(conn.unread(), &mut framing, &mut chunks)?;
        scratch.extend_from_slice(&conn.unread()[..k]);
        conn.consume(k);
        io.write_all(scratch).await?;
    } else {
        let body = take_body(&conn.unread()[head.len..], &mut framing, &mut chunks)?;
        let n = head.len + body;
        io.write_all(&conn.unread()[..n]).await?;
        conn.consume(n);
    }
    // The rest of the body as it comes.
    while framing != Framing::Done {
        let n = conn.fill().await?;
        if n == 0 {
            if framing == Framing::Eof {
                // The body ended with the backend's connection: so must the client's.
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed mid-body",
            ));
        }
        let k = take_body(conn.unread(), &mut framing, &mut chunks)?;
        io.write_all(&conn.unread()[..k]).await?;
        conn.consume(k);
    }
    Ok(head.framing != Framing::Eof)
}

/// Whether a `Connection` header of `headers` names `name` (for removal).
fn connection_named(headers: &[httparse::Header<'_>], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| h1::connection_names(h.value).any(|n| n.eq_ignore_ascii_case(name)))
}

/// Re-encodes a response head without its hop-by-hop headers (and those its `Connection`
/// names), with `Connection: close` if `close`.
fn encode_stripped_head(head: &[u8], close: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 128];
    // Already parsed once by `Upstream::exchange_raw`: this cannot fail.
    let (status, reason, headers) = match h1::parse_response(head, false, &mut headers) {
        Ok(h1::Head::Final(parsed, reason, headers)) => (parsed.status, reason, headers),
        Ok(_) => return Err(io::Error::other("incomplete response head")),
        Err(refusal) => return Err(io::Error::other(refusal)),
    };
    // Rare: `Connection` naming other headers.
    let names = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection") && h1::connection_names(h.value).next().is_some()
    });
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        if h1::is_hop_by_hop_response(h.name.as_bytes())
            || (names && connection_named(headers, h.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// For fuzzing: parses a request head as the fast path does; the head sent upstream, if it
/// is a simple request.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_request_head(data: &[u8]) -> Option<Vec<u8>> {
    let peer = Peer {
        client_ip: b"192.0.2.1",
        trusted: data.first().is_some_and(|b| b & 1 == 1),
        proto: "http",
    };
    let mut out = Vec::new();
    match parse_simple(data, peer, &mut out) {
        Parsed::Simple(simple) => {
            assert!(simple.head_len <= data.len());
            assert!(simple.host.1 <= data.len());
            Some(out)
        }
        Parsed::Partial | Parsed::General | Parsed::Refused(..) => None,
    }
}

/// A request head hyper answers 400 to (and then closes): what hyper gets instead of a head
/// the fast path would refuse.
const POISON: &[u8] = b"REFUSED\x01 / HTTP/1.1\r\n\r\n";

/// What a request head on a hyper-served connection says about the bytes after it.
enum Verdict {
    /// A head the fast path would refuse (CL+TE, bad lengths, two Hosts, bad Host).
    Refuse,
    /// An upgrade or CONNECT: nothing after it is tracked.
    Through,
    Body(Framing),
}

/// Checks a request head as the fast path does: its length and verdict, `Ok(None)` if
/// incomplete, `Err` if malformed (hyper answers those itself).
fn check_head(data: &[u8]) -> Result<Option<(usize, Verdict)>, ()> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        data,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut framing = h1::FramingScan::default();
    let mut hosts = 0;
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 || !h1::valid_host(h.value) {
                return Ok(Some((len, Verdict::Refuse)));
            }
        } else if !framing.header(name, h.value) && name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    Ok(Some(match framing.request(req.version == Some(1)) {
        Err(_) => (len, Verdict::Refuse),
        Ok(_) if upgrade => (len, Verdict::Through),
        Ok(framing) => (len, Verdict::Body(framing)),
    }))
}

/// Where a hyper-served connection's byte stream is.
enum Track {
    /// At a request head: held back until complete and checked.
    Head,
    /// In a body of this many more bytes.
    Length(u64),
    Chunked(ChunkScan),
    /// No longer tracked: bytes pass as they come.
    Through,
    /// After the poison head: end of stream once it is read.
    Refused,
}

/// The connection as hyper serves it after the hand-off: first the bytes already read, and
/// every request head held back until it passes the fast path's checks (one that fails is
/// replaced by [`POISON`], so hyper answers 400 and closes); bodies pass, tracked by their
/// framing to find the next head.
pub(crate) struct Rewind {
    inner: TcpStream,
    /// Read but not yet given to hyper: `buf[start..end]`, of which `cleared` bytes may go.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    cleared: usize,
    track: Track,
}

impl Rewind {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        let end = prefix.len();
        Rewind {
            inner,
            buf: prefix,
            start: 0,
            end,
            cleared: 0,
            track: Track::Head,
        }
    }

    /// Gives up to `n` pending bytes to hyper.
    fn give(&mut self, out: &mut ReadBuf<'_>, n: usize) -> usize {
        let n = n.min(self.end - self.start).min(out.remaining());
        out.put_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        n
    }

    /// Reads more into the pending buffer; 0 at EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).clamp(8 * 1024, 2 * MAX_HEAD);
                self.buf.resize(grown, 0);
            }
        }
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.cleared > 0 && this.start < this.end {
                let n = this.give(out, this.cleared);
                this.cleared -= n;
                return Poll::Ready(Ok(()));
            }
            let pending = this.end - this.start;
            match &mut this.track {
                Track::Refused => return Poll::Ready(Ok(())),
                Track::Through if pending > 0 => {
                    this.give(out, pending);
                    return Poll::Ready(Ok(()));
                }
                Track::Through => {
                    if !this.buf.is_empty() {
                        this.buf = Vec::new();
                    }
                    return Pin::new(&mut this.inner).poll_read(cx, out);
                }
                Track::Length(0) => this.track = Track::Head,
                Track::Length(left) if pending > 0 => {
                    let left = *left;
                    let n = this.give(out, usize::try_from(left).unwrap_or(usize::MAX));
                    this.track = Track::Length(left - n as u64);
                    return Poll::Ready(Ok(()));
                }
                Track::Length(left) => {
                    // Straight into hyper's buffer, never past the body's end.
                    let left = *left;
                    let room = out
                        .remaining()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let mut limited = ReadBuf::new(out.initialize_unfilled_to(room));
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                    let n = limited.filled().len();
                    out.advance(n);
                    this.track = Track::Length(left - n as u64);
                    return Poll::Ready(Ok(()));
                }
                Track::Chunked(scan) if pending > 0 => {
                    let window = pending.min(out.remaining());
                    match scan.scan(&this.buf[this.start..this.start + window]) {
                        Ok(n) => {
                            if scan.is_done() {
                                this.track = Track::Head;
                            }
                            this.give(out, n);
                            return Poll::Ready(Ok(()));
                        }
                        // hyper's decoder fails the body too.
                        Err(_) => this.track = Track::Through,
                    }
                }
                Track::Head if pending > 0 => match check_head(&this.buf[this.start..this.end]) {
                    Ok(Some((len, Verdict::Body(framing)))) => {
                        this.cleared = len;
                        this.track = match framing {
                            Framing::Length(n) => Track::Length(n),
                            Framing::Chunked => Track::Chunked(ChunkScan::new()),
                            Framing::Done | Framing::Eof => Track::Head,
                        };
                    }
                    Ok(Some((len, Verdict::Through))) => {
                        this.cleared = len;
                        this.track = Track::Through;
                    }
                    Ok(Some((_, Verdict::Refuse))) => {
                        this.buf = POISON.to_vec();
                        this.start = 0;
                        this.end = POISON.len();
                        this.cleared = POISON.len();
                        this.track = Track::Refused;
                    }
                    // Incomplete: read on (hyper's header timer runs meanwhile).
                    Ok(None) if pending < MAX_HEAD => match ready!(this.poll_fill(cx)) {
                        Ok(0) => this.track = Track::Through,
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    },
                    // Malformed or too large: hyper answers it (400, 431).
                    Ok(None) | Err(()) => this.track = Track::Through,
                },
                Track::Head | Track::Chunked(_) => match ready!(this.poll_fill(cx)) {
                    Ok(0) => this.track = Track::Through,
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PEER: Peer<'static> = Peer {
        client_ip: b"192.0.2.1",
        trusted: false,
        proto: "http",
    };

    fn header() -> impl Strategy<Value = (String, String)> {
        let name = prop_oneof![
            Just("Host"),
            Just("host"),
            Just("Content-Length"),
            Just("Transfer-Encoding"),
            Just("Connection"),
            Just("Keep-Alive"),
            Just("TE"),
            Just("Upgrade"),
            Just("X-Forwarded-For"),
            Just("Forwarded"),
            Just("X-Real-IP"),
            Just("Content_Length"),
            Just("Transfer_Encoding"),
            Just("X-Custom"),
            Just("Accept"),
        ];
        let value = prop_oneof![
            Just("0".to_owned()),
            Just("5".to_owned()),
            Just("+0".to_owned()),
            Just("chunked".to_owned()),
            Just("close".to_owned()),
            Just("keep-alive, x-custom".to_owned()),
            Just("web.localhost".to_owned()),
            Just("web.localhost:@evil".to_owned()),
            "[a-z0-9.:]{0,12}",
        ];
        (name.prop_map(str::to_owned), value)
    }

    proptest! {
        #[test]
        fn simple_requests_forward_one_clean_head(
            method in prop_oneof![Just("GET"), Just("HEAD"), Just("POST"), Just("CONNECT")],
            headers in proptest::collection::vec(header(), 0..8),
        ) {
            let mut head = format!("{method} /p HTTP/1.1\r\n");
            for (n, v) in &headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let named = |name: &str| headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
            let mut out = Vec::new();
            match parse_simple(head.as_bytes(), PEER, &mut out) {
                Parsed::Partial => prop_assert!(false, "a complete head is partial"),
                Parsed::Refused(status, _) => {
                    let cl_te = named("content-length") > 0 && named("transfer-encoding") > 0;
                    let bad_host = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("host") && !h1::valid_host(v.as_bytes()));
                    prop_assert!(
                        method == "CONNECT" || named("host") > 1 || cl_te || bad_host
                            || headers.iter().any(|(n, v)| n == "Content-Length" && v.trim() != "0" && v.trim() != "5")
                            || headers.iter().filter(|(n, _)| n == "Content-Length").map(|(_, v)| v).collect::<std::collections::BTreeSet<_>>().len() > 1
                            || headers.iter().rev().find(|(n, _)| n == "Transfer-Encoding").is_some_and(|(_, v)| v != "chunked"),
                        "refused {status}: {head:?}"
                    );
                }
                Parsed::General => {}
                Parsed::Simple(simple) => {
                    prop_assert_eq!(simple.head_len, head.len());
                    prop_assert_eq!(named("host"), 1);
                    prop_assert_eq!(named("transfer-encoding"), 0);
                    let mut parsed = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut parsed);
                    prop_assert_eq!(req.parse(&out).unwrap(), httparse::Status::Complete(out.len()));
                    let up = |name: &str| req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.to_vec()).collect::<Vec<_>>();
                    prop_assert_eq!(up("host").len(), 1);
                    prop_assert_eq!(up("x-forwarded-for"), vec![b"192.0.2.1".to_vec()]);
                    for gone in ["connection", "keep-alive", "te", "upgrade", "transfer-encoding", "x-real-ip", "content_length", "transfer_encoding"] {
                        prop_assert!(up(gone).is_empty(), "{} forwarded", gone);
                    }
                    prop_assert_eq!(up("x-custom").len(), named("x-custom"));
                }
            }
        }
    }

    #[test]
    fn stripped_heads_lose_hop_by_hop_and_connection_named_headers_only() {
        let head = b"HTTP/1.0 200 Fine\r\nConnection: keep-alive, x-secret, content-length\r\n\
            X-Secret: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-Kept: y\r\n\r\n";
        let mut out = Vec::new();
        encode_stripped_head(head, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nX-Kept: y\r\n\r\n"
        );
    }
}
