//! Slow clients cannot hold the router: the header and body deadlines are total, and
//! shutdown ends within its drain deadline.

use std::net::SocketAddr;
use std::time::Duration;

use paz_core::proxy::Proxy;
use paz_proxy::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::support::{TestBackend, TestRouter, active, eventually, table};

/// Writes `bytes` one at a time, `every` apart, then keeps the connection open.
fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            sleep(every).await;
        }
        std::future::pending::<()>().await;
    })
}

/// Whether the peer closes (EOF or error) within `bound`.
async fn closed_within(reader: &mut (impl AsyncReadExt + Unpin), bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Signals shutdown and waits for every listener to end; how long that took.
async fn shut_down(r: TestRouter, bound: Duration) -> Duration {
    let started = Instant::now();
    r.stop.send(true).unwrap();
    for served in r.served {
        timeout(bound, served)
            .await
            .expect("the router's listeners did not end within the bound")
            .unwrap();
    }
    started.elapsed()
}

async fn routed(config: RouterConfig) -> (TestBackend, TestRouter) {
    let b = TestBackend::start("b").await;
    let r = TestRouter::start(config).await;
    r.router
        .apply(&table(&[("b.localhost", "b", vec![active(&b)])]))
        .await
        .unwrap();
    (b, r)
}

const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_a_byte_at_a_time_is_cut_at_the_header_deadline() {
    let (_b, r) = routed(RouterConfig {
        header_read_timeout: Some(Duration::from_secs(1)),
        ..RouterConfig::default()
    })
    .await;
    let started = Instant::now();
    let (mut reader, writer) = TcpStream::connect(r.public).await.unwrap().into_split();
    // Each byte comes well within 1 s of the last: only a total deadline cuts this.
    let writing = trickle(writer, HEAD.to_vec(), Duration::from_millis(300));
    assert!(
        closed_within(&mut reader, Duration::from_secs(4)).await,
        "a trickling client was never disconnected"
    );
    writing.abort();
    let lifetime = started.elapsed();
    assert!(lifetime < Duration::from_millis(2500), "{lifetime:?}");
    shut_down(r, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_on_a_general_path_connection_is_cut_at_the_header_deadline() {
    let (_b, r) = routed(RouterConfig {
        header_read_timeout: Some(Duration::from_secs(1)),
        ..RouterConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(r.public).await.unwrap();
    // A request with a body: hyper serves the connection from now on.
    assert!(served(&mut s, POST).await);
    let started = Instant::now();
    let (mut reader, writer) = s.into_split();
    let writing = trickle(writer, HEAD.to_vec(), Duration::from_millis(300));
    assert!(
        closed_within(&mut reader, Duration::from_secs(4)).await,
        "a trickling client was never disconnected"
    );
    writing.abort();
    let lifetime = started.elapsed();
    assert!(lifetime < Duration::from_millis(2500), "{lifetime:?}");
    shut_down(r, Duration::from_secs(3)).await;
}

async fn in_flight_body_and_idle_clients(r: &TestRouter, b: &TestBackend) -> Vec<JoinHandle<()>> {
    let public: SocketAddr = r.public;
    // A request in flight whose body never completes (the backend waits for all of it).
    let (_reader, mut writer) = TcpStream::connect(public).await.unwrap().into_split();
    writer
        .write_all(b"POST /echo HTTP/1.1\r\nHost: b.localhost\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let body = trickle(writer, vec![b'x'; 1000], Duration::from_millis(100));
    eventually(Duration::from_secs(5), || {
        r.router.in_flight_now(&b.address()) == 1
    })
    .await
    .unwrap();
    // A head that never completes, and a keep-alive connection left idle.
    let (_reader, writer) = TcpStream::connect(public).await.unwrap().into_split();
    let head = trickle(writer, HEAD.to_vec(), Duration::from_millis(300));
    let mut idle = TcpStream::connect(public).await.unwrap();
    idle.write_all(HEAD).await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    let idle = tokio::spawn(async move {
        let _keep = idle;
        std::future::pending::<()>().await;
    });
    vec![body, head, idle]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_the_drain_deadline_while_a_body_trickles() {
    // On worker threads and on the caller's runtime (where nothing drops the tasks for us).
    for workers in [2, 0] {
        let (b, r) = routed(RouterConfig {
            shutdown_timeout: Duration::from_secs(1),
            workers,
            ..RouterConfig::default()
        })
        .await;
        let clients = in_flight_body_and_idle_clients(&r, &b).await;
        let public = r.public;
        let router = r.router.clone();
        let took = shut_down(r, Duration::from_secs(3)).await;
        assert!(
            took >= Duration::from_millis(900),
            "workers {workers}: the drain did not wait for the request in flight: {took:?}"
        );
        assert!(took < Duration::from_secs(3), "workers {workers}: {took:?}");
        assert!(
            TcpStream::connect(public).await.is_err(),
            "workers {workers}: the listener is closed"
        );
        // The request in flight was dropped with its connection.
        eventually(Duration::from_secs(2), || {
            router.in_flight_now(&b.address()) == 0
        })
        .await
        .unwrap_or_else(|_| panic!("workers {workers}: the request in flight was not dropped"));
        for client in clients {
            client.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_half_sent_head_only_the_drain_grace() {
    let (_b, r) = routed(RouterConfig {
        header_read_timeout: Some(Duration::from_secs(30)),
        drain_grace: Duration::from_millis(200),
        ..RouterConfig::default()
    })
    .await;
    let (mut reader, writer) = TcpStream::connect(r.public).await.unwrap().into_split();
    let writing = trickle(writer, HEAD.to_vec(), Duration::from_millis(300));
    sleep(Duration::from_millis(700)).await;
    let took = shut_down(r, Duration::from_secs(3)).await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(closed_within(&mut reader, Duration::from_secs(1)).await);
    writing.abort();
}

/// A request on `s` answered (status line read).
async fn served(s: &mut TcpStream, request: &[u8]) -> bool {
    if s.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200")
    )
}

const POST: &[u8] = b"POST /echo HTTP/1.1\r\nHost: b.localhost\r\nContent-Length: 2\r\n\r\nhi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout_on_both_paths() {
    let idle = Duration::from_millis(500);
    let (_b, r) = routed(RouterConfig {
        idle_timeout: Some(idle),
        header_read_timeout: Some(Duration::from_secs(30)),
        ..RouterConfig::default()
    })
    .await;
    // Silent from the start, idle after a fast-path request, idle after a general-path one.
    let mut silent = TcpStream::connect(r.public).await.unwrap();
    let mut fast = TcpStream::connect(r.public).await.unwrap();
    assert!(served(&mut fast, HEAD).await);
    let mut general = TcpStream::connect(r.public).await.unwrap();
    assert!(served(&mut general, POST).await);
    let started = Instant::now();
    for (name, s) in [
        ("silent", &mut silent),
        ("fast", &mut fast),
        ("general", &mut general),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "{name}: an idle connection was never closed"
        );
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // Keep-alive requests well within the timeout of each other keep the connection.
    let mut busy = TcpStream::connect(r.public).await.unwrap();
    for _ in 0..4 {
        sleep(Duration::from_millis(250)).await;
        assert!(served(&mut busy, HEAD).await, "a busy connection was cut");
    }
    shut_down(r, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_is_closed_after_the_idle_timeout() {
    let (_b, r) = routed(RouterConfig {
        idle_timeout: Some(Duration::from_millis(500)),
        ..RouterConfig::default()
    })
    .await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect(r.public).await.unwrap());
    }
    let deadline = Duration::from_secs(4);
    for (i, s) in flood.iter_mut().enumerate() {
        assert!(
            closed_within(s, deadline).await,
            "connection {i} still open"
        );
    }
    shut_down(r, Duration::from_secs(3)).await;
}

/// Reads until the peer closes (or `bound` passes): what it sent, and whether it closed.
async fn read_until_closed(
    reader: &mut (impl AsyncReadExt + Unpin),
    bound: Duration,
) -> (String, bool) {
    let deadline = Instant::now() + bound;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

const SLOW_POST: &[u8] = b"POST /echo HTTP/1.1\r\nHost: b.localhost\r\nContent-Length: 100\r\n\r\n";

/// A body trickled a byte every 300 ms (each byte well within the timeout of the last) past
/// a 1 s body deadline: 408 from the router, the connection closed, the backend connection
/// let go, counted as the client's (a 408 of the service, no ejection); on a fresh
/// connection and on one hyper already serves (a body request came before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_past_the_body_deadline_gets_408_and_the_connection_closes() {
    let (b, r) = routed(RouterConfig {
        body_timeout: Some(Duration::from_secs(1)),
        ..RouterConfig::default()
    })
    .await;
    for kept_alive in [false, true] {
        let mut s = TcpStream::connect(r.public).await.unwrap();
        if kept_alive {
            assert!(served(&mut s, POST).await);
        }
        s.write_all(SLOW_POST).await.unwrap();
        let started = Instant::now();
        let (mut reader, writer) = s.into_split();
        let writing = trickle(writer, vec![b'x'; 100], Duration::from_millis(300));
        let (answer, closed) = read_until_closed(&mut reader, Duration::from_secs(5)).await;
        let took = started.elapsed();
        writing.abort();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "kept alive {kept_alive}: {answer:?}"
        );
        assert!(answer.contains("connection: close"), "{answer:?}");
        assert!(
            answer.contains("the request body did not arrive within 1s"),
            "{answer:?}"
        );
        assert!(closed, "kept alive {kept_alive}: the connection stays open");
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }
    eventually(Duration::from_secs(2), || {
        r.router.in_flight_now(&b.address()) == 0
    })
    .await
    .expect("the request to the backend was let go");
    assert!(
        !r.router.is_ejected(&b.address()),
        "not the backend's fault"
    );
    let metrics = r.router.metrics_text();
    assert!(
        metrics.contains(r#"paz_router_requests_total{service="b",code="408"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"code="504""#), "{metrics}");
    assert!(!metrics.contains(r#"code="502""#), "{metrics}");
    shut_down(r, Duration::from_secs(3)).await;
}

/// The deadline is for the whole body, not too early: a body sent at once, or trickled but
/// complete well within the deadline, is proxied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_within_the_body_deadline_passes() {
    let (_b, r) = routed(RouterConfig {
        body_timeout: Some(Duration::from_secs(2)),
        ..RouterConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(r.public).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: b.localhost\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("hello"), "{answer:?}");

    // Ten bytes, 100 ms apart: done in about 1 s of the 2 s.
    let mut s = TcpStream::connect(r.public).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: b.localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, writer) = s.into_split();
    let writing = trickle(writer, b"0123456789".to_vec(), Duration::from_millis(100));
    let (answer, closed) = read_until_closed(&mut reader, Duration::from_secs(5)).await;
    writing.abort();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("0123456789"), "{answer:?}");
    assert!(closed);
    shut_down(r, Duration::from_secs(3)).await;
}

/// A connection from `ip` (any of 127.0.0.0/8 on Linux).
async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_ip_cap_are_closed_at_once() {
    let (_b, r) = routed(RouterConfig {
        max_connections_per_ip: 3,
        ..RouterConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(r.public).await.unwrap();
        assert!(served(&mut s, HEAD).await);
        held.push(s);
    }
    let mut over = TcpStream::connect(r.public).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(1)).await);
    // Other addresses are not held back (Linux routes all of 127/8 to loopback).
    if cfg!(target_os = "linux") {
        let mut other = connect_from("127.0.0.2", r.public).await;
        assert!(served(&mut other, HEAD).await, "another IP was refused");
    }
    // A slot frees when a connection ends.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = TcpStream::connect(r.public).await.unwrap();
        if served(&mut s, HEAD).await {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        sleep(Duration::from_millis(50)).await;
    }
    shut_down(r, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_global_cap_are_closed_at_once() {
    let (_b, r) = routed(RouterConfig {
        max_connections: 2,
        max_connections_per_ip: 0,
        ..RouterConfig::default()
    })
    .await;
    let mut a = TcpStream::connect(r.public).await.unwrap();
    assert!(served(&mut a, HEAD).await);
    let mut b = TcpStream::connect(r.public).await.unwrap();
    assert!(served(&mut b, POST).await);
    let mut over = TcpStream::connect(r.public).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(1)).await);
    if cfg!(target_os = "linux") {
        let mut other = connect_from("127.0.0.2", r.public).await;
        assert!(closed_within(&mut other, Duration::from_secs(1)).await);
    }
    shut_down(r, Duration::from_secs(3)).await;
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let soft = paz_proxy::raise_open_files_limit().unwrap();
    let (now, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!(soft, now);
    assert!(now == hard || cfg!(target_os = "macos"), "{now} < {hard}");
}

/// Reads one answer (head and `Content-Length` body) from `s`: its head, lowercase.
async fn answer(s: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while data.len() < end + 4 + length {
                let n = timeout(Duration::from_secs(3), s.read(&mut buf))
                    .await
                    .expect("the body in time")
                    .unwrap();
                assert!(n > 0, "the body was cut: {head}");
                data.extend_from_slice(&buf[..n]);
            }
            return head;
        }
        let n = timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_keep_alive_client_gets_its_next_answer_with_connection_close() {
    // A client that sends its next request just after the shutdown signal is answered (with
    // `Connection: close`), not cut: on the fast path (GET) and on hyper's path (POST).
    for request in [HEAD, POST] {
        let (b, r) = routed(RouterConfig {
            drain_grace: Duration::from_secs(2),
            ..RouterConfig::default()
        })
        .await;
        let mut client = TcpStream::connect(r.public).await.unwrap();
        client.write_all(request).await.unwrap();
        let first = answer(&mut client).await;
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(!first.contains("connection: close"), "{first}");
        let public = r.public;
        let stopping = tokio::spawn(shut_down(r, Duration::from_secs(5)));
        sleep(Duration::from_millis(200)).await;
        assert!(
            TcpStream::connect(public).await.is_err(),
            "the listener is closed at once"
        );
        client.write_all(request).await.unwrap();
        let last = answer(&mut client).await;
        assert!(last.starts_with("http/1.1 200"), "{last}");
        assert!(last.contains("connection: close"), "{last}");
        assert!(closed_within(&mut client, Duration::from_secs(1)).await);
        let took = stopping.await.unwrap();
        assert!(
            took < Duration::from_secs(2),
            "the drain ended with the connection: {took:?}"
        );
        drop(b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_an_idle_keep_alive_connection_is_closed_after_the_drain_grace() {
    for request in [HEAD, POST] {
        let (_b, r) = routed(RouterConfig {
            drain_grace: Duration::from_millis(400),
            ..RouterConfig::default()
        })
        .await;
        let mut client = TcpStream::connect(r.public).await.unwrap();
        client.write_all(request).await.unwrap();
        answer(&mut client).await;
        let started = Instant::now();
        r.stop.send(true).unwrap();
        assert!(closed_within(&mut client, Duration::from_secs(2)).await);
        let open = started.elapsed();
        assert!(
            open >= Duration::from_millis(300) && open < Duration::from_millis(1500),
            "closed after {open:?}, not after the grace"
        );
        for served in r.served {
            timeout(Duration::from_secs(2), served)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
