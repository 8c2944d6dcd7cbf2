//! The HTTP/1.1 server: one thread per connection, keep-alive, graceful shutdown.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client;
use crate::http::{self, Request, Response};
use crate::log;

/// How often a blocked read wakes up to check for shutdown / timeouts.
const TICK: Duration = Duration::from_millis(100);
/// A client has this long to finish sending a request it has started.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection accepted during shutdown gets this long to send its first request.
const NEW_CONN_GRACE: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 1024 * 1024;
const MAX_SLOW_MS: u64 = 10 * 60 * 1000;
const DEFAULT_CALL_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Returned by `GET /` and in `X-Demo-Version`.
    pub version: String,
    /// `GET /health` answers 503.
    pub fail_health: bool,
    /// Sent as `X-Demo-Instance` (the container hostname) to tell replicas apart.
    pub instance: String,
    /// Idle keep-alive connections are closed after this long.
    pub keepalive_timeout: Duration,
}

struct Shared {
    cfg: ServerConfig,
    shutting_down: AtomicBool,
    active: Mutex<usize>,
    drained: Condvar,
}

impl Shared {
    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Starts a graceful shutdown of a running [`Server`]; cheap to clone, idempotent.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
    wake_addr: SocketAddr,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // Unblock the accept() in Server::run with a throwaway connection to ourselves.
        if let Err(e) = TcpStream::connect_timeout(&self.wake_addr, Duration::from_secs(2)) {
            log!(
                "demo-app: could not wake the accept loop via {}: {e}",
                self.wake_addr
            );
        }
    }
}

impl Server {
    pub fn bind(addr: impl ToSocketAddrs, cfg: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let shared = Arc::new(Shared {
            cfg,
            shutting_down: AtomicBool::new(false),
            active: Mutex::new(0),
            drained: Condvar::new(),
        });
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shutdown_handle(&self) -> io::Result<ShutdownHandle> {
        let mut wake_addr = self.listener.local_addr()?;
        if wake_addr.ip().is_unspecified() {
            wake_addr.set_ip(match wake_addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(ShutdownHandle {
            shared: self.shared.clone(),
            wake_addr,
        })
    }

    /// Serves until [`ShutdownHandle::shutdown`], then stops accepting, lets in-flight requests
    /// finish, closes idle keep-alive connections and returns once every connection is gone.
    pub fn run(self) {
        let Server { listener, shared } = self;
        for conn in listener.incoming() {
            if shared.is_shutting_down() {
                // Possibly a real client that raced the wake-up connection: serve it too.
                if let Ok(stream) = conn {
                    spawn_connection(&shared, stream);
                }
                break;
            }
            match conn {
                Ok(stream) => spawn_connection(&shared, stream),
                Err(e) => {
                    log!("demo-app: accept failed: {e}");
                    // Out of file descriptors (EMFILE/ENFILE): back off instead of spinning.
                    if matches!(e.raw_os_error(), Some(23 | 24)) {
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        // Serve connections the kernel already accepted into the backlog, then close the
        // listening socket so new connections are refused.
        if listener.set_nonblocking(true).is_ok() {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        spawn_connection(&shared, stream);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        drop(listener);
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        if *active > 0 {
            log!(
                "demo-app: stopped accepting; waiting for {} open connection(s)",
                *active
            );
        }
        while *active > 0 {
            active = shared
                .drained
                .wait(active)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Decrements the connection count when a connection thread ends (even by panic).
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *active -= 1;
        if *active == 0 {
            self.0.drained.notify_all();
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream) {
    *shared.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let guard = ActiveGuard(shared.clone());
    let spawned = thread::Builder::new()
        .name("conn".into())
        .stack_size(512 * 1024)
        .spawn(move || {
            let guard = guard;
            Connection::new(stream, &guard.0).serve();
        });
    if let Err(e) = spawned {
        // The closure (with the stream and the guard) was dropped: connection closed, count fixed.
        log!("demo-app: cannot spawn connection thread: {e}");
    }
}

enum Fill {
    Data,
    /// Peer closed, read error, or we decided to close an idle connection.
    Closed,
    /// A partially received request stalled.
    TimedOut,
}

struct Connection<'a> {
    stream: TcpStream,
    shared: &'a Shared,
    buf: Vec<u8>,
    opened: Instant,
    last_activity: Instant,
    served: u64,
}

impl<'a> Connection<'a> {
    fn new(stream: TcpStream, shared: &'a Shared) -> Connection<'a> {
        let now = Instant::now();
        Connection {
            stream,
            shared,
            buf: Vec::with_capacity(4096),
            opened: now,
            last_activity: now,
            served: 0,
        }
    }

    fn serve(mut self) {
        let _ = self.stream.set_nodelay(true);
        if self.stream.set_read_timeout(Some(TICK)).is_err()
            || self.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            return;
        }
        loop {
            // Wait for a complete request head.
            let head_len = loop {
                let skip = http::leading_empty_lines(&self.buf);
                self.buf.drain(..skip);
                if let Some(n) = http::find_head_end(&self.buf) {
                    break n;
                }
                if self.buf.len() > http::MAX_HEAD {
                    return self.fail(Response::text(431, "request head too large\n"), "-");
                }
                match self.fill() {
                    Fill::Data => {}
                    Fill::Closed => return,
                    Fill::TimedOut => {
                        return self.fail(Response::text(408, "request timeout\n"), "-");
                    }
                }
            };
            let started = Instant::now();
            let req = match http::parse_request_head(&self.buf[..head_len]) {
                Ok(req) => req,
                Err(e) => {
                    return self.fail(
                        Response::text(e.status(), format!("{}\n", e.message())),
                        "-",
                    );
                }
            };
            // Read (and discard) the request body so the next request starts at the right byte.
            let body_len = match req.body_length() {
                Ok(n) if n > MAX_BODY => {
                    return self.fail(Response::text(413, "request body too large\n"), &req.target);
                }
                Ok(n) => n,
                Err(e) => {
                    return self.fail(
                        Response::text(e.status(), format!("{}\n", e.message())),
                        &req.target,
                    );
                }
            };
            while self.buf.len() < head_len + body_len {
                match self.fill() {
                    Fill::Data => {}
                    Fill::Closed => return,
                    Fill::TimedOut => {
                        return self.fail(Response::text(408, "request timeout\n"), &req.target);
                    }
                }
            }

            let resp = route(&req, &self.shared.cfg);
            // Decided after handling, so a request in flight when shutdown begins still gets
            // its full response, but tells the client not to reuse the connection.
            let keep_alive = req.keep_alive() && !self.shared.is_shutting_down();
            let written = self.write(&resp, req.method == "HEAD", keep_alive);
            log!(
                "{} {} {} {:.1}ms",
                req.method,
                req.target,
                resp.status,
                ms(started.elapsed())
            );

            self.buf.drain(..head_len + body_len);
            self.served += 1;
            self.last_activity = Instant::now();
            if !keep_alive || written.is_err() {
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
                return;
            }
        }
    }

    /// Reads more bytes into `buf`, handling idle/shutdown/request timeouts between ticks.
    fn fill(&mut self) -> Fill {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Fill::Closed,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.last_activity = Instant::now();
                    return Fill::Data;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let idle = self.last_activity.elapsed();
                    if self.buf.is_empty() {
                        // Between requests: close when shutting down (giving a brand-new
                        // connection a moment to send its first request) or when idle too long.
                        if self.shared.is_shutting_down()
                            && (self.served > 0 || self.opened.elapsed() >= NEW_CONN_GRACE)
                        {
                            return Fill::Closed;
                        }
                        if idle >= self.shared.cfg.keepalive_timeout {
                            return Fill::Closed;
                        }
                    } else if idle >= REQUEST_TIMEOUT {
                        return Fill::TimedOut;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Fill::Closed,
            }
        }
    }

    fn write(&mut self, resp: &Response, head_only: bool, keep_alive: bool) -> io::Result<()> {
        let resp = resp
            .clone()
            .with_header("Server", "paz-demo-app")
            .with_header("X-Demo-Version", self.shared.cfg.version.clone())
            .with_header("X-Demo-Instance", self.shared.cfg.instance.clone());
        self.stream
            .write_all(&resp.serialize(head_only, keep_alive))?;
        self.stream.flush()
    }

    /// Sends an error response, logs it and closes the connection.
    fn fail(mut self, resp: Response, target: &str) {
        let _ = self.write(&resp, false, false);
        log!("- {} {} 0.0ms", target, resp.status);
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The application: maps a request to a response. May block (`/slow`, `/call`).
fn route(req: &Request, cfg: &ServerConfig) -> Response {
    let path = req.path();
    let known = matches!(path, "/" | "/health" | "/slow" | "/call") || path.starts_with("/env/");
    if !known {
        return Response::text(404, "not found\n");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD");
    }
    match path {
        "/" => Response::text(200, format!("{}\n", cfg.version)),
        "/health" if cfg.fail_health => Response::text(503, "unhealthy"),
        "/health" => Response::text(200, "ok"),
        "/slow" => {
            let ms = match req.query_param("ms") {
                None => 1000,
                Some(Ok(v)) => match v.parse::<u64>() {
                    Ok(ms) if ms <= MAX_SLOW_MS => ms,
                    _ => {
                        return Response::text(
                            400,
                            format!("ms must be an integer in 0..={MAX_SLOW_MS}\n"),
                        );
                    }
                },
                Some(Err(())) => return Response::text(400, "bad percent-encoding in ms\n"),
            };
            thread::sleep(Duration::from_millis(ms));
            Response::text(200, format!("slept {ms}ms\n"))
        }
        "/call" => call(req),
        _ => {
            let raw = &path["/env/".len()..];
            let Some(name) = http::percent_decode(raw, false) else {
                return Response::text(400, "bad percent-encoding in variable name\n");
            };
            match (name.is_empty(), std::env::var_os(&name)) {
                (false, Some(v)) => Response::text(200, v.into_encoded_bytes()),
                _ => Response::text(404, format!("env var {name:?} is not set\n")),
            }
        }
    }
}

/// `GET /call?url=http://host:port/path[&timeout_ms=N]`: proxies one GET and returns the
/// upstream status and body (502 on connection errors, 504 on timeout).
fn call(req: &Request) -> Response {
    let url = match req.query_param("url") {
        Some(Ok(url)) if !url.is_empty() => url,
        Some(Err(())) => return Response::text(400, "bad percent-encoding in url\n"),
        _ => return Response::text(400, "usage: /call?url=http://host:port/path\n"),
    };
    let timeout = match req
        .query_param("timeout_ms")
        .map(|v| v.map(|s| s.parse::<u64>()))
    {
        None => DEFAULT_CALL_TIMEOUT_MS,
        Some(Ok(Ok(ms))) if ms > 0 => ms,
        _ => return Response::text(400, "timeout_ms must be a positive integer\n"),
    };
    let parsed = match client::parse_http_url(&url) {
        Ok(p) => p,
        Err(e) => return Response::text(400, format!("{e}\n")),
    };
    match client::get(&parsed, Duration::from_millis(timeout)) {
        Ok(up) => {
            let mut resp = Response::text(up.status, up.body.clone())
                .with_header("X-Upstream-Status", up.status.to_string());
            if let Some(ct) = up.header("content-type") {
                resp = resp.with_header("Content-Type", ct);
            }
            if let Some(v) = up.header("x-demo-version") {
                resp = resp.with_header("X-Upstream-Version", v);
            }
            if let Some(i) = up.header("x-demo-instance") {
                resp = resp.with_header("X-Upstream-Instance", i);
            }
            resp
        }
        Err(e) => Response::text(
            e.status(),
            format!("call to {url} failed: {}\n", e.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn start(
        version: &str,
        fail_health: bool,
    ) -> (SocketAddr, ShutdownHandle, thread::JoinHandle<()>) {
        let cfg = ServerConfig {
            version: version.into(),
            fail_health,
            instance: "test".into(),
            keepalive_timeout: Duration::from_secs(5),
        };
        let server = Server::bind("127.0.0.1:0", cfg).unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.shutdown_handle().unwrap();
        (addr, handle, thread::spawn(move || server.run()))
    }

    /// Reads exactly one response from a keep-alive connection.
    fn read_response(r: &mut io::BufReader<TcpStream>) -> http::ParsedResponse {
        let mut raw = Vec::new();
        loop {
            let n = r.read_until(b'\n', &mut raw).unwrap();
            assert!(
                n > 0,
                "connection closed early: {:?}",
                String::from_utf8_lossy(&raw)
            );
            if raw.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8(raw.clone()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length header")
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        raw.extend_from_slice(&body);
        http::parse_response(&raw, false).unwrap().unwrap()
    }

    fn get(addr: SocketAddr, target: &str) -> http::ParsedResponse {
        let url = client::parse_http_url(&format!("http://{addr}{target}")).unwrap();
        client::get(&url, Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn routes() {
        let (addr, handle, join) = start("v7", false);
        let r = get(addr, "/");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"v7\n"[..]));
        assert_eq!(r.header("x-demo-version"), Some("v7"));
        assert_eq!(get(addr, "/health").body, b"ok");
        assert_eq!(get(addr, "/nope").status, 404);
        assert_eq!(get(addr, "/slow?ms=20").status, 200);
        assert_eq!(get(addr, "/slow?ms=abc").status, 400);
        assert_eq!(get(addr, "/env/PAZ_DEMO_SURELY_UNSET").status, 404);
        let path = get(addr, "/env/PATH");
        assert_eq!(path.body, std::env::var("PATH").unwrap().as_bytes());
        // Service-to-service: the server calls itself.
        let r = get(
            addr,
            &format!("/call?url=http://{addr}/env/PAZ_DEMO_SURELY_UNSET"),
        );
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x-upstream-version"), Some("v7"));
        let r = get(addr, &format!("/call?url=http%3A%2F%2F{addr}%2F"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"v7\n"[..]));
        assert_eq!(get(addr, "/call?url=http://127.0.0.1:1/").status, 502);
        assert_eq!(get(addr, "/call").status, 400);
        handle.shutdown();
        join.join().unwrap();
    }

    #[test]
    fn failing_health() {
        let (addr, handle, join) = start("v1", true);
        assert_eq!(get(addr, "/health").status, 503);
        handle.shutdown();
        join.join().unwrap();
    }

    #[test]
    fn keep_alive_pipelining_and_head() {
        let (addr, handle, join) = start("v1", false);
        let s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = io::BufReader::new(s);
        w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r).body, b"v1\n");
        // Two pipelined requests (one with a body to skip) plus a HEAD, all on one connection.
        w.write_all(
            b"POST /nope HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /health HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_response(&mut r).status, 404);
        assert_eq!(read_response(&mut r).body, b"ok");
        w.write_all(b"HEAD / HTTP/1.1\r\n\r\n").unwrap();
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            r.read_line(&mut head).unwrap();
        }
        assert!(head.contains("Content-Length: 3\r\n"), "{head}");
        // Still alive after HEAD (no body was sent):
        w.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut r);
        assert_eq!(resp.header("connection"), Some("close"));
        let mut rest = Vec::new();
        assert_eq!(
            r.read_to_end(&mut rest).unwrap(),
            0,
            "server closes after Connection: close"
        );
        handle.shutdown();
        join.join().unwrap();
    }

    #[test]
    fn bad_request_gets_400_and_close() {
        let (addr, handle, join) = start("v1", false);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GARBAGE\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(
            out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        handle.shutdown();
        join.join().unwrap();
    }

    #[test]
    fn graceful_shutdown_finishes_in_flight_and_closes_idle() {
        let (addr, handle, join) = start("v1", false);
        // An idle keep-alive connection that has served one request.
        let idle = TcpStream::connect(addr).unwrap();
        let mut idle_w = idle.try_clone().unwrap();
        let mut idle_r = io::BufReader::new(idle);
        idle_w.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut idle_r).status, 200);
        // A slow request in flight.
        let slow = thread::spawn(move || get(addr, "/slow?ms=600"));
        thread::sleep(Duration::from_millis(150));

        let t0 = Instant::now();
        handle.shutdown();
        // The idle connection is closed promptly, without a response.
        let mut rest = Vec::new();
        assert_eq!(idle_r.read_to_end(&mut rest).unwrap(), 0);
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "idle close took {:?}",
            t0.elapsed()
        );
        // New connections are refused once the listener is gone (give run() a moment).
        thread::sleep(Duration::from_millis(100));
        assert!(
            TcpStream::connect(addr).is_err(),
            "listener should be closed"
        );

        let resp = slow.join().unwrap();
        assert_eq!(
            (resp.status, resp.header("connection")),
            (200, Some("close"))
        );
        join.join().unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "run() returned before the slow request finished"
        );
    }
}
