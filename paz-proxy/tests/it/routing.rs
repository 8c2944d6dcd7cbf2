use hyper::StatusCode;
use paz_core::proxy::Proxy;
use paz_proxy::RouterConfig;

use crate::support::{Client, TestBackend, TestRouter, active, get, table};

async fn routes_by_host_and_scope(config: RouterConfig) {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let internal = TestBackend::start("internal").await;
    let r = TestRouter::start(config).await;
    r.router
        .apply(&table(&[
            ("a.localhost", "a", vec![active(&a)]),
            ("b.localhost", "b", vec![active(&b)]),
            ("Web.Example.COM.", "b", vec![active(&b)]),
            ("api.paz", "api", vec![active(&internal)]),
        ]))
        .await
        .unwrap();

    let mut client = Client::connect(r.public).await.unwrap();
    assert_eq!(client.get("a.localhost", "/").await.unwrap().body, "a");
    assert_eq!(client.get("b.localhost", "/").await.unwrap().body, "b");
    // Port stripped, case-insensitive, trailing dot ignored.
    let port = format!("A.LocalHost:{}", r.public.port());
    assert_eq!(client.get(&port, "/").await.unwrap().body, "a");
    assert_eq!(client.get("web.example.com", "/").await.unwrap().body, "b");
    assert_eq!(client.get("b.localhost.", "/").await.unwrap().body, "b");

    // Internal names are not served publicly.
    let answer = client.get("api.paz", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.contains("api.paz"), "{}", answer.body);
    let answer = client.get("nope.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.contains("no service"), "{}", answer.body);

    // The internal listener serves only `.paz` names.
    let mut inside = Client::connect(r.internal).await.unwrap();
    assert_eq!(inside.get("api.paz", "/").await.unwrap().body, "internal");
    assert_eq!(
        inside.get("API.paz:80", "/").await.unwrap().body,
        "internal"
    );
    let answer = inside.get("a.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    // A swap takes effect on the next request, on the same connection.
    r.router
        .apply(&table(&[("a.localhost", "a", vec![active(&b)])]))
        .await
        .unwrap();
    assert_eq!(client.get("a.localhost", "/").await.unwrap().body, "b");
    assert_eq!(
        client.get("b.localhost", "/").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_scope_on_worker_threads() {
    routes_by_host_and_scope(RouterConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_scope_on_the_callers_runtime() {
    routes_by_host_and_scope(RouterConfig {
        workers: 0,
        ..RouterConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_with_several_workers() {
    routes_by_host_and_scope(RouterConfig {
        workers: 2,
        ..RouterConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_is_a_bad_request() {
    let r = TestRouter::default().await;
    let mut stream = tokio::net::TcpStream::connect(r.public).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 400"), "{out}");
    assert!(out.contains("no Host header"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("b.localhost", "b", vec![active(&b)])]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let answer = client
        .send(crate::support::request(
            "POST",
            "b.localhost",
            "/echo",
            big.clone().into(),
        ))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), big.len());
    assert!(answer.body == big);
    let answer = client.get("b.localhost", "/stream").await.unwrap();
    assert_eq!(answer.body, "chunk0;chunk1;chunk2;");
    let answer = client
        .send(crate::support::request(
            "HEAD",
            "b.localhost",
            "/",
            bytes::Bytes::new(),
        ))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "");
    // The connection is still usable after all that.
    assert_eq!(client.get("b.localhost", "/").await.unwrap().body, "b");
    let one_shot = get(r.public, "b.localhost", "/").await.unwrap();
    assert_eq!(one_shot.body, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("b.localhost", "b", vec![active(&b)])]))
        .await
        .unwrap();
    let public = r.public;
    let slow = tokio::spawn(async move { get(public, "b.localhost", "/slow?ms=600").await });
    crate::support::eventually(std::time::Duration::from_secs(5), || {
        r.router.in_flight_now(&b.address()) == 1
    })
    .await
    .unwrap();
    r.stop.send(true).unwrap();
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "slow b");
    for served in r.served {
        tokio::time::timeout(std::time::Duration::from_secs(5), served)
            .await
            .expect("serve ends after shutdown")
            .unwrap();
    }
    assert!(
        tokio::net::TcpStream::connect(public).await.is_err(),
        "the listener is closed"
    );
}

/// Reads one HTTP/1.1 response with a content-length body from a raw stream.
async fn read_response(s: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if pending.len() >= end + 4 + length {
                let body =
                    String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).into_owned();
                pending.drain(..end + 4 + length);
                return (head, body);
            }
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        pending.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_mixed_requests_share_a_connection() {
    use tokio::io::AsyncWriteExt;
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("b.localhost", "b", vec![active(&b)])]))
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(r.public).await.unwrap();
    let mut pending = Vec::new();
    // Two pipelined GETs in one write (fast path), then a POST (hands the connection to
    // the general path), then a GET again.
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: b.localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "b");
    assert!(!head.contains("keep-alive"), "hop-by-hop stripped: {head}");
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert_eq!(body, "status 201");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: b.localhost\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "hello");
    s.write_all(b"GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut s, &mut pending).await;
    assert_eq!(body, "b");
    // `Connection: close`: the answer, then the end of the connection.
    s.write_all(b"GET / HTTP/1.1\r\nHost: b.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut s, &mut pending).await;
    assert_eq!(body, "b");
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt;
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_and_fast_path_requests_both_work() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("b.localhost", "b", vec![active(&b)])]))
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(r.public).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: b.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(out.ends_with("\r\n\r\nb"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_its_connection_is_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that answers once per connection, with `Connection: close`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nonce",
                    )
                    .await;
            });
        }
    });
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[(
            "c.localhost",
            "c",
            vec![(addr.to_string(), 100, paz_core::route::BackendState::Active)],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..5 {
        let answer = client.get("c.localhost", "/").await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "once");
        assert!(answer.headers.get("connection").is_none());
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 5);
}
