//! The API's connection limits, over real sockets: the header and body deadlines, the
//! connection cap, the idle keep-alive timeout and the bounded drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use paz_core::MemoryStore;
use paz_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const TOKEN: &str = "test-token-0123456789";

/// A server with the API only (no scheduler), on 127.0.0.1:0, with `flags`.
struct Running {
    address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<Result<(), paz_server::ServerError>>,
}

impl Running {
    async fn start(flags: &[&str]) -> Running {
        let args = ["paz-server", "--scheduler", "none", "--store", "memory"];
        let config = Config::try_parse_from(args.iter().chain(flags)).unwrap();
        config.validate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = paz_server::start(
            &config,
            TOKEN.to_owned(),
            paz_core::Paz::new(Arc::new(MemoryStore::new()), config.engine_config()),
            listener,
            config.runtime_config(),
        )
        .await
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Running {
            address,
            stop: Some(stop),
            served,
        }
    }

    /// Signals shutdown and returns how long `serve` took to return.
    async fn shut_down(mut self, bound: Duration) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        match timeout(bound, &mut self.served).await {
            Ok(result) => result.unwrap().unwrap(),
            Err(_) => {
                self.served.abort();
                panic!("serve did not return within {bound:?} of the shutdown signal");
            }
        }
        started.elapsed()
    }
}

/// Reads until the peer closes (or errors); `None` if it stays open for `bound`.
async fn closed_within(
    stream: &mut (impl AsyncReadExt + Unpin),
    bound: Duration,
) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response (head and `Content-Length` body).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&all).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if all.len() >= end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        all.extend_from_slice(&buf[..n]);
    }
}

const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: paz\r\n\r\n";

/// Writes `bytes` one at a time, `every` apart, until done or the peer closes.
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
        // Keep the connection open: only the server may end it.
        std::future::pending::<()>().await;
    })
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_at_the_header_deadline() {
    let server = Running::start(&["--api-header-timeout", "1s"]).await;
    let started = Instant::now();
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut reader, writer) = stream.into_split();
    // Each byte comes well within 1 s of the last: only a total deadline cuts this.
    let writing = trickle(writer, HEALTH.to_vec(), Duration::from_millis(500));
    let closed = closed_within(&mut reader, Duration::from_secs(4)).await;
    writing.abort();
    let lifetime = started.elapsed();
    let answer = closed.expect("the trickling client was never disconnected");
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the head was never completed, yet it was answered"
    );
    assert!(
        lifetime < Duration::from_millis(2500),
        "disconnected after {lifetime:?}, not at the 1 s deadline"
    );
    server.shut_down(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_keep_alive_connection_idle_past_the_header_deadline_is_closed() {
    let server = Running::start(&["--api-header-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let idle = Instant::now();
    let closed = closed_within(&mut stream, Duration::from_secs(4)).await;
    assert!(
        closed.is_some(),
        "an idle keep-alive connection stayed open"
    );
    assert!(
        idle.elapsed() < Duration::from_millis(2500),
        "{:?}",
        idle.elapsed()
    );
    server.shut_down(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_deadline() {
    let server = Running::start(&["--api-header-timeout", "5s", "--api-body-timeout", "1s"]).await;
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let head = format!(
        "POST /v1/services HTTP/1.1\r\nHost: paz\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let writing = trickle(writer, vec![b' '; 1000], Duration::from_millis(100));
    let answer = closed_within(&mut reader, Duration::from_secs(4)).await;
    writing.abort();
    let answer =
        String::from_utf8_lossy(&answer.expect("the trickled body was never cut off")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BODY_TIMEOUT"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    server.shut_down(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_until_one_ends() {
    let server =
        Running::start(&["--api-max-connections", "8", "--api-header-timeout", "2s"]).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(server.address).await.unwrap());
    }
    sleep(Duration::from_millis(100)).await;
    // The ninth connection completes in the kernel, but is not served while 8 are open.
    let mut ninth = TcpStream::connect(server.address).await.unwrap();
    ninth.write_all(HEALTH).await.unwrap();
    let mut buf = [0u8; 1];
    let early = timeout(Duration::from_secs(1), ninth.peek(&mut buf)).await;
    assert!(
        early.is_err(),
        "a ninth connection was served past a cap of 8"
    );
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "the check ran too late to mean anything"
    );
    // The idle ones end at the header deadline; then the ninth is served.
    let response = timeout(Duration::from_secs(4), read_response(&mut ninth))
        .await
        .expect("the waiting connection was never served");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for mut stream in idle {
        assert!(
            closed_within(&mut stream, Duration::from_secs(1))
                .await
                .is_some(),
            "an idle connection outlived the header deadline"
        );
    }
    server.shut_down(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_thousand_idle_connections_below_the_cap_do_not_stall_a_request() {
    let server = Running::start(&[]).await;
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(TcpStream::connect(server.address).await.unwrap());
    }
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    let response = timeout(Duration::from_secs(2), read_response(&mut stream))
        .await
        .expect("no answer with 1000 idle connections open");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    server.shut_down(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn shutdown_ends_within_the_drain_deadline_despite_trickling_clients() {
    let server = Running::start(&[
        "--api-header-timeout",
        "30s",
        "--api-body-timeout",
        "30s",
        "--shutdown-timeout",
        "1s",
    ])
    .await;
    // A request in flight whose body never completes…
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (_body_reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/services HTTP/1.1\r\nHost: paz\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let body = trickle(writer, vec![b' '; 1000], Duration::from_millis(100));
    // …a head that never completes…
    let (_head_reader, writer) = TcpStream::connect(server.address)
        .await
        .unwrap()
        .into_split();
    let head = trickle(writer, HEALTH.to_vec(), Duration::from_millis(500));
    // …and a request that finishes within the drain deadline, and is answered.
    let mut finishing = TcpStream::connect(server.address).await.unwrap();
    let late = b"PUT /v1/services/web HTTP/1.1\r\nHost: paz\r\nAuthorization: Bearer test-token-0123456789\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n";
    finishing.write_all(late).await.unwrap();
    sleep(Duration::from_millis(300)).await;

    let server_task = tokio::spawn(server.shut_down(Duration::from_secs(3)));
    sleep(Duration::from_millis(300)).await;
    finishing.write_all(b"{}").await.unwrap();
    let response = timeout(Duration::from_secs(2), read_response(&mut finishing))
        .await
        .expect("a request finishing within the drain deadline was not answered");
    assert!(response.starts_with("HTTP/1.1 4"), "{response}");
    let took = server_task.await.unwrap();
    body.abort();
    head.abort();
    assert!(
        took >= Duration::from_millis(900),
        "the drain did not wait: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}
