use std::net::SocketAddr;
use std::time::{Duration, Instant};

use paz_core::proxy::Proxy;
use paz_proxy::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    TestBackend, TestRouter, WS_ACCEPT, WS_KEY, active, draining, eventually, frame, read_frame,
    table,
};

const MASK: [u8; 4] = [1, 2, 3, 4];

/// Opens a WebSocket through the router; returns the stream after the 101.
async fn open(addr: SocketAddr, host: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains(&WS_ACCEPT.to_ascii_lowercase()), "{head}");
    s
}

fn is_going_away(opcode: u8, payload: &[u8]) -> bool {
    opcode == 0x8 && payload.len() >= 2 && u16::from_be_bytes([payload[0], payload[1]]) == 1001
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_and_close_1001_on_drain() {
    let b = TestBackend::start("ws").await;
    let other = TestBackend::start("other").await;
    let r = TestRouter::start(RouterConfig {
        websocket_close_grace: Duration::from_millis(300),
        ..RouterConfig::default()
    })
    .await;
    r.router
        .apply(&table(&[("ws.localhost", "ws", vec![active(&b)])]))
        .await
        .unwrap();
    let mut ws = open(r.public, "ws.localhost", "/ws").await;
    for text in ["hello", "through", "the router"] {
        ws.write_all(&frame(0x1, text.as_bytes(), Some(MASK)))
            .await
            .unwrap();
        let (opcode, payload) = read_frame(&mut ws).await.unwrap();
        assert_eq!((opcode, payload.as_slice()), (0x1, text.as_bytes()));
    }
    assert_eq!(
        r.router.in_flight_now(&b.address()),
        1,
        "a tunnel counts in flight"
    );

    r.router
        .apply(&table(&[(
            "ws.localhost",
            "ws",
            vec![draining(&b), active(&other)],
        )]))
        .await
        .unwrap();
    let started = Instant::now();
    let (opcode, payload) = tokio::time::timeout(Duration::from_secs(2), read_frame(&mut ws))
        .await
        .expect("a close frame comes at once")
        .unwrap();
    assert!(is_going_away(opcode, &payload), "{opcode} {payload:?}");
    assert_eq!(&payload[2..], b"going away");
    // The client answers the close; the router cuts the connection after the grace.
    ws.write_all(&frame(0x8, &payload[..2], Some(MASK)))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), ws.read_to_end(&mut rest))
        .await
        .expect("the connection is closed after the grace");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(rest.is_empty(), "nothing after the close frame: {rest:?}");
    let left = r
        .router
        .wait_drained(&b.address(), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(left, 0, "the tunnel is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frame_waits_for_a_frame_boundary() {
    let b = TestBackend::start("ws").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("ws.localhost", "ws", vec![active(&b)])]))
        .await
        .unwrap();
    let mut ws = open(r.public, "ws.localhost", "/ws-big").await;
    ws.write_all(&frame(0x1, b"big", Some(MASK))).await.unwrap();
    // Read part of the 64 KiB frame (sent in 8 KiB pieces, 40 ms apart)...
    // (64 KiB needs the 8-byte extended length: a 10-byte header.)
    let mut first = [0u8; 8 * 1024];
    ws.read_exact(&mut first).await.unwrap();
    assert_eq!(first[..2], [0x82, 127]);
    // ...then drain mid-frame.
    r.router
        .apply(&table(&[("ws.localhost", "ws", vec![draining(&b)])]))
        .await
        .unwrap();
    let mut rest = vec![0u8; 10 + 64 * 1024 - first.len()];
    ws.read_exact(&mut rest).await.unwrap();
    assert!(rest.iter().all(|b| *b == b'x'), "the frame arrives whole");
    let (opcode, payload) = read_frame(&mut ws).await.unwrap();
    assert!(is_going_away(opcode, &payload), "{opcode} {payload:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_websocket_upgrade_is_cut_at_the_drain_timeout() {
    let b = TestBackend::start("raw").await;
    let r = TestRouter::start(RouterConfig {
        upgrade_drain_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    })
    .await;
    r.router
        .apply(&table(&[("raw.localhost", "raw", vec![active(&b)])]))
        .await
        .unwrap();
    // The test backend's `/ws` speaks WebSocket framing; announce another protocol so the
    // router treats it as an opaque tunnel.
    let mut s = TcpStream::connect(r.public).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: raw.localhost\r\nUpgrade: custom\r\nConnection: upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s.write_all(&frame(0x1, b"raw", Some(MASK))).await.unwrap();
    let (_, payload) = read_frame(&mut s).await.unwrap();
    assert_eq!(payload, b"raw");
    eventually(Duration::from_secs(2), || {
        r.router.in_flight_now(&b.address()) == 1
    })
    .await
    .unwrap();
    let started = Instant::now();
    r.router
        .apply(&table(&[("raw.localhost", "raw", vec![draining(&b)])]))
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("cut at the drain timeout")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        rest.is_empty(),
        "no close frame for a non-WebSocket upgrade"
    );
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_counts_against_the_connection_cap_until_it_ends() {
    let b = TestBackend::start("ws").await;
    let r = TestRouter::start(RouterConfig {
        max_connections_per_ip: 1,
        ..RouterConfig::default()
    })
    .await;
    r.router
        .apply(&table(&[("ws.localhost", "ws", vec![active(&b)])]))
        .await
        .unwrap();
    let mut ws = open(r.public, "ws.localhost", "/ws").await;
    ws.write_all(&frame(0x1, b"hi", Some(MASK))).await.unwrap();
    assert_eq!(read_frame(&mut ws).await.unwrap().0, 0x1);
    // The tunnel holds the only slot.
    let mut over = TcpStream::connect(r.public).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(1), over.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    drop(ws);
    eventually(Duration::from_secs(3), || {
        r.router.in_flight_now(&b.address()) == 0
    })
    .await
    .unwrap();
    let mut again = TcpStream::connect(r.public).await.unwrap();
    again
        .write_all(b"GET / HTTP/1.1\r\nHost: ws.localhost\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), again.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the slot was not freed"
    );
}
