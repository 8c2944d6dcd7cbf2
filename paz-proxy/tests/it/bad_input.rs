//! Bad input, table-driven: each case goes as raw bytes over TCP, on every router path —
//! first on a fresh connection (a bodiless GET takes the fast path, a request with a body the
//! general path, whose head the fast path's parser checks first), then again on a connection
//! already handed to hyper by a keep-alive POST (the hand-off stream checks each head as the
//! fast path does, then hyper parses it and the handler checks it) —
//! and the exact answer is asserted: status, what the backend saw, and the close that follows
//! a refusal.

use std::time::Duration;

use paz_core::proxy::Proxy;
use paz_proxy::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::support::{TestBackend, TestRouter, active, table};

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This status; the body (the backend's `/headers` dump, or `/echo`) contains every
    /// `has` and none of `lacks` (case-insensitive). A 4xx must close the connection.
    Status(u16, &'static [&'static str], &'static [&'static str]),
}

use Want::Status;

struct Case {
    name: &'static str,
    request: String,
    want: Want,
}

fn case(name: &'static str, request: &str, want: Want) -> Case {
    Case {
        name,
        request: request.to_owned(),
        want,
    }
}

const H: &str = "Host: web.localhost\r\n";

fn cases() -> Vec<Case> {
    // Past the fast path's 64 KiB and hyper's buffer (which may overshoot its 64 KiB).
    let big = "x".repeat(200 * 1024);
    vec![
        // Host.
        case(
            "host with userinfo, GET",
            "GET /headers HTTP/1.1\r\nHost: web.localhost:@evil.example\r\n\r\n",
            Status(400, &[], &[]),
        ),
        case(
            "host with userinfo, POST",
            "POST /headers HTTP/1.1\r\nHost: web.localhost:@evil.example\r\nContent-Length: 2\r\n\r\nhi",
            Status(400, &[], &[]),
        ),
        case(
            "host with a path",
            "GET /headers HTTP/1.1\r\nHost: web.localhost/x\r\n\r\n",
            Status(400, &[], &[]),
        ),
        case(
            "host with a bad port",
            "GET /headers HTTP/1.1\r\nHost: web.localhost:80x\r\n\r\n",
            Status(400, &[], &[]),
        ),
        case(
            "two hosts, GET",
            &format!("GET /headers HTTP/1.1\r\n{H}Host: evil.example\r\n\r\n"),
            Status(400, &[], &[]),
        ),
        case(
            "two hosts, POST",
            &format!(
                "POST /headers HTTP/1.1\r\n{H}Host: evil.example\r\nContent-Length: 2\r\n\r\nhi"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "valid host with port",
            "GET /headers HTTP/1.1\r\nHost: web.localhost:8080\r\n\r\n",
            Status(200, &["host: web.localhost:8080"], &[]),
        ),
        // Names with `_` spelling framing headers.
        case(
            "content_length alias, GET",
            &format!(
                "GET /headers HTTP/1.1\r\n{H}Content_Length: 5\r\nTransfer_Encoding: chunked\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"
            ),
            Status(
                200,
                &[],
                &["content_length", "transfer_encoding", "6.6.6.6"],
            ),
        ),
        case(
            "content_length alias, POST",
            &format!(
                "POST /headers HTTP/1.1\r\n{H}Content-Length: 2\r\nContent_Length: 5\r\n\r\nhi"
            ),
            Status(200, &["content-length: 2"], &["content_length"]),
        ),
        // `Connection` cannot strip Host or framing headers.
        case(
            "connection naming host, GET",
            &format!(
                "GET /headers HTTP/1.1\r\n{H}Connection: host, content-length, x-secret\r\nX-Secret: 1\r\n\r\n"
            ),
            Status(200, &["host: web.localhost"], &["x-secret"]),
        ),
        case(
            "connection naming framing headers, POST",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Connection: content-length, host, transfer-encoding\r\nContent-Length: 2\r\n\r\nhi"
            ),
            Status(200, &["hi"], &[]),
        ),
        // Forged forwarding headers.
        case(
            "forged forwarding, GET",
            &format!(
                "GET /headers HTTP/1.1\r\n{H}X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n\r\n"
            ),
            Status(
                200,
                &[
                    "x-forwarded-for: 127.0.0.1",
                    "x-forwarded-host: web.localhost",
                    "forwarded: for=127.0.0.1",
                ],
                &["6.6.6.6", "evil", "x-real-ip"],
            ),
        ),
        case(
            "forged forwarding, POST",
            &format!(
                "POST /headers HTTP/1.1\r\n{H}X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nContent-Length: 2\r\n\r\nhi"
            ),
            Status(
                200,
                &["x-forwarded-for: 127.0.0.1", "x-forwarded-proto: http"],
                &["6.6.6.6", "7.7.7.7", "x-real-ip"],
            ),
        ),
        // Framing.
        case(
            "content-length with transfer-encoding",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "transfer-encoding with content-length",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "transfer-encoding not chunked",
            &format!("POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: gzip\r\n\r\nhi"),
            Status(400, &[], &[]),
        ),
        case(
            "transfer-encoding in HTTP/1.0",
            &format!(
                "POST /echo HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "conflicting content-lengths",
            &format!("POST /echo HTTP/1.1\r\n{H}Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi!"),
            Status(400, &[], &[]),
        ),
        case(
            "repeated equal content-lengths",
            &format!("POST /echo HTTP/1.1\r\n{H}Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi"),
            Status(200, &["hi"], &[]),
        ),
        case(
            "signed content-length",
            &format!("POST /echo HTTP/1.1\r\n{H}Content-Length: +2\r\n\r\nhi"),
            Status(400, &[], &[]),
        ),
        case(
            "negative content-length",
            &format!("POST /echo HTTP/1.1\r\n{H}Content-Length: -1\r\n\r\nhi"),
            Status(400, &[], &[]),
        ),
        case(
            "signed zero content-length, GET",
            &format!("GET /headers HTTP/1.1\r\n{H}Content-Length: +0\r\n\r\n"),
            Status(400, &[], &[]),
        ),
        case(
            "content-length list",
            &format!("POST /echo HTTP/1.1\r\n{H}Content-Length: 2, 3\r\n\r\nhi!"),
            Status(400, &[], &[]),
        ),
        case(
            "chunk size junk",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "chunk size with 0x",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0x2\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "chunk size overflow",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "chunk data longer than its size",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "bare LF in a chunked body",
            &format!("POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n2\nhi\n0\n\n"),
            Status(400, &[], &[]),
        ),
        case(
            "chunk extension with a bare CR",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n2;a\rb\r\nhi\r\n0\r\n\r\n"
            ),
            Status(400, &[], &[]),
        ),
        case(
            "chunked body then a pipelined request",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /headers HTTP/1.1\r\n{H}Host: evil\r\n\r\n"
            ),
            Status(200, &["hi"], &[]),
        ),
        case(
            "valid chunked body",
            &format!(
                "POST /echo HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n1\r\n!\r\n0\r\n\r\n"
            ),
            Status(200, &["hi!"], &[]),
        ),
        // Syntax.
        case(
            "obs-fold, GET",
            &format!("GET /headers HTTP/1.1\r\n{H}X-A: a\r\n b\r\n\r\n"),
            Status(400, &[], &[]),
        ),
        case(
            "obs-fold, POST",
            &format!("POST /echo HTTP/1.1\r\n{H}X-A: a\r\n\tb\r\nContent-Length: 2\r\n\r\nhi"),
            Status(400, &[], &[]),
        ),
        case(
            "space before colon",
            "GET /headers HTTP/1.1\r\nHost : web.localhost\r\n\r\n",
            Status(400, &[], &[]),
        ),
        case(
            "NUL in a value",
            &format!("GET /headers HTTP/1.1\r\n{H}X-A: a\0b\r\n\r\n"),
            Status(400, &[], &[]),
        ),
        // Bare LF line ends are read as CRLF (RFC 9112 §2.2 allows it) and re-encoded with
        // CRLF: the backend never sees them.
        case(
            "bare LF head",
            "GET /headers HTTP/1.1\nHost: web.localhost\nX-A: b\n\n",
            Status(200, &["x-a: b"], &[]),
        ),
        case(
            "oversized head, GET",
            &format!("GET /headers HTTP/1.1\r\n{H}X-Big: {big}\r\n\r\n"),
            Status(431, &[], &[]),
        ),
        case(
            "oversized head, POST",
            &format!("POST /echo HTTP/1.1\r\n{H}X-Big: {big}\r\nContent-Length: 2\r\n\r\nhi"),
            Status(431, &[], &[]),
        ),
        // Methods.
        case(
            "CONNECT",
            "CONNECT web.localhost:443 HTTP/1.1\r\nHost: web.localhost:443\r\n\r\n",
            Status(405, &[], &[]),
        ),
    ]
}

/// One response: status and body (read to its length, or to EOF), or `None` if the
/// connection closed (or stayed silent) first.
async fn read_response(s: &mut TcpStream, deadline: Instant) -> Option<(u16, String, bool)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (status, head_len, length, close) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = parsed.parse(&buf) {
            let value = |name: &str| {
                parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            };
            let length = value("content-length").and_then(|v| v.parse::<usize>().ok());
            let close = value("connection").is_some_and(|v| v.contains("close"));
            break (parsed.code.unwrap_or(0), len, length, close);
        }
        match timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    };
    loop {
        let body = &buf[head_len..];
        if length.is_some_and(|n| body.len() >= n) {
            break;
        }
        match timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ if length.is_none() => break,
            _ => return None,
        }
    }
    let body = String::from_utf8_lossy(&buf[head_len..]).to_ascii_lowercase();
    Some((status, body, close))
}

/// The start of `body`, for messages.
fn short(body: &str) -> &str {
    let mut end = body.len().min(300);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

/// Whether the peer closes within `bound` (bytes before the close are ignored).
async fn closes(s: &mut TcpStream, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `case` on `s` and checks the answer; returns what went wrong.
async fn check(s: &mut TcpStream, request: &str, want: Want) -> Result<(), String> {
    let Status(status, has, lacks) = want;
    let close = (400..500).contains(&status);
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let Some((got, body, _)) = read_response(s, deadline).await else {
        return Err(format!("no answer, want {status}"));
    };
    if got != status {
        return Err(format!("status {got}, want {status}: {:?}", short(&body)));
    }
    for h in has {
        if !body.contains(&h.to_ascii_lowercase()) {
            return Err(format!("{h:?} missing from {:?}", short(&body)));
        }
    }
    for l in lacks {
        if body.contains(&l.to_ascii_lowercase()) {
            return Err(format!("{l:?} present in {:?}", short(&body)));
        }
    }
    if close && !closes(s, Duration::from_secs(3)).await {
        return Err("the connection stayed open after the refusal".into());
    }
    Ok(())
}

const WARM_UP: &str = "POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_case_on_every_path() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::start(RouterConfig {
        header_read_timeout: Some(Duration::from_secs(5)),
        ..RouterConfig::default()
    })
    .await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        // A fresh connection: the fast path reads the head first.
        let mut s = TcpStream::connect(r.public).await.unwrap();
        if let Err(why) = check(&mut s, &case.request, case.want).await {
            failures.push(format!("{} (fresh connection): {why}", case.name));
        }
        // A connection hyper serves already.
        let mut s = TcpStream::connect(r.public).await.unwrap();
        match check(&mut s, WARM_UP, Status(200, &["ok"], &[])).await {
            Ok(()) => {
                if let Err(why) = check(&mut s, &case.request, case.want).await {
                    failures.push(format!("{} (after hand-off): {why}", case.name));
                }
            }
            Err(why) => failures.push(format!("{} (warm-up): {why}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Refusals are the client's: no 5xx was counted for the service.
    let metrics = r.router.metrics_text();
    assert!(
        !metrics.contains("code=\"502\""),
        "a bad request was counted as a backend failure:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_the_clients_fault() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let mut s = TcpStream::connect(r.public).await.unwrap();
    s.write_all(format!("POST /echo HTTP/1.1\r\n{H}Content-Length: 10\r\n\r\nhi").as_bytes())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = read_response(&mut s, deadline).await;
    // Either a 400 reaches the half-closed client, or the connection just ends.
    assert!(
        answer.as_ref().is_none_or(|(status, _, _)| *status == 400),
        "{answer:?}"
    );
    let metrics = r.router.metrics_text();
    assert!(!metrics.contains("code=\"502\""), "{metrics}");
}

/// A raw backend: answers `/clte` with both `Content-Length` and `Transfer-Encoding`, and
/// anything else with `ok`, on keep-alive connections.
async fn raw_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for _ in 0..16 {
                    // One request: its head, and its body by Content-Length.
                    let (head_len, body_len, clte) = loop {
                        let mut headers = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut headers);
                        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                            let length = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                                .unwrap_or(0usize);
                            break (n, length, req.path == Some("/clte"));
                        }
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    };
                    while buf.len() < head_len + body_len {
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    buf.drain(..head_len + body_len);
                    let answer: &[u8] = if clte {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nsm\r\n0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_both_framings_is_refused_by_both_raw_readers() {
    let (addr, backend) = raw_backend().await;
    let r = TestRouter::default().await;
    let entry = (addr.to_string(), 100, paz_core::route::BackendState::Active);
    r.router
        .apply(&table(&[("web.localhost", "web", vec![entry])]))
        .await
        .unwrap();
    let get = format!("GET /clte HTTP/1.1\r\n{H}\r\n");
    // The fast path's reader.
    let mut s = TcpStream::connect(r.public).await.unwrap();
    check(&mut s, &get, Status(502, &[], &[])).await.unwrap();
    // The general path's raw reader (a bodiless request on a connection hyper serves).
    let mut s = TcpStream::connect(r.public).await.unwrap();
    check(&mut s, WARM_UP, Status(200, &["ok"], &[]))
        .await
        .unwrap();
    check(&mut s, &get, Status(502, &[], &[])).await.unwrap();
    backend.abort();
}

/// Every response until the peer closes: (status, body).
async fn responses_until_close(s: &mut TcpStream) -> Vec<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while let Ok(Ok(n)) = timeout_at(deadline, s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = parsed.parse(&buf[at..]) else {
            break;
        };
        let length = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        let end = (at + len + length).min(buf.len());
        let body = String::from_utf8_lossy(&buf[at + len..end]).into_owned();
        out.push((parsed.code.unwrap_or(0), body));
        at = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_after_bodies_are_checked_on_a_hyper_served_connection() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    // Bodies by length and chunked, pipelined, then a head to refuse: each body is skipped
    // exactly, so the next head is found and checked.
    let mut s = TcpStream::connect(r.public).await.unwrap();
    let pipelined = format!(
        "POST /echo HTTP/1.1\r\n{H}Content-Length: 5\r\n\r\nfirstPOST /echo HTTP/1.1\r\n{H}\
         Transfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\nX-T: 1\r\n\r\n\
         GET /echo HTTP/1.1\r\n{H}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let answers = responses_until_close(&mut s).await;
    let statuses: Vec<(u16, &str)> = answers.iter().map(|(c, b)| (*c, b.as_str())).collect();
    assert_eq!(
        statuses[..2],
        [(200, "first"), (200, "second")],
        "{answers:?}"
    );
    assert_eq!(statuses.len(), 3, "{answers:?}");
    assert_eq!(statuses[2].0, 400, "{answers:?}");
    // A body sent in pieces, then a good request: both answered.
    let mut s = TcpStream::connect(r.public).await.unwrap();
    s.write_all(format!("POST /echo HTTP/1.1\r\n{H}Content-Length: 6\r\n\r\npie").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(format!("cesGET /x HTTP/1.1\r\n{H}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answers = responses_until_close(&mut s).await;
    let statuses: Vec<(u16, &str)> = answers.iter().map(|(c, b)| (*c, b.as_str())).collect();
    assert_eq!(statuses, [(200, "pieces"), (200, "b")], "{answers:?}");
}
