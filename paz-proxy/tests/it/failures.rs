use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use paz_core::proxy::Proxy;
use paz_core::route::BackendState;
use paz_proxy::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Client, TestBackend, TestRouter, active, dead_address, request, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_for_gets_and_ejects_the_backend() {
    let live = TestBackend::start("live").await;
    let dead = dead_address().await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![(dead.clone(), 100, BackendState::Active), active(&live)],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..200 {
        let answer = client.get("web.localhost", "/").await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, "live");
    }
    for method in ["HEAD", "OPTIONS", "DELETE", "PUT"] {
        let answer = client
            .send(request(method, "web.localhost", "/", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{method}");
    }
    assert_eq!(live.hits(), 204);
    assert!(r.router.is_ejected(&dead), "the dead backend is ejected");
    assert!(!r.router.is_ejected(&live.address()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried() {
    let live = TestBackend::start("live").await;
    let dead = dead_address().await;
    let r = TestRouter::default().await;
    // The dead backend gets (almost) every first pick.
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![
                (dead.clone(), 1_000_000, BackendState::Active),
                (live.address(), 1, BackendState::Active),
            ],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    let answer = client
        .send(request("POST", "web.localhost", "/echo", Bytes::from("x")))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("cannot connect"), "{}", answer.body);
    assert!(answer.body.contains("\"web\""), "{}", answer.body);
    assert_eq!(live.hits(), 0, "the POST went nowhere else");
    // Ejected now: the next POST goes to the live backend.
    let answer = client
        .send(request("POST", "web.localhost", "/echo", Bytes::from("y")))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_ends_and_the_backend_returns() {
    let live = TestBackend::start("live").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = TestRouter::start(RouterConfig {
        ejection: Duration::from_millis(700),
        ..RouterConfig::default()
    })
    .await;
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![(addr.to_string(), 100, BackendState::Active), active(&live)],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    // Until the dead backend is picked once (and ejected), everything goes to `live`.
    while !r.router.is_ejected(&addr.to_string()) {
        let answer = client.get("web.localhost", "/").await.unwrap();
        assert_eq!(answer.body, "live");
    }
    // The backend comes up on that very port, but stays ejected for a while.
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nback";
                    if s.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    for _ in 0..20 {
        assert_eq!(client.get("web.localhost", "/").await.unwrap().body, "live");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut back = 0;
    for _ in 0..60 {
        let answer = client.get("web.localhost", "/").await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        back += usize::from(answer.body == "back");
    }
    assert!(back > 10, "the returned backend got {back} of 60");
    assert!(!r.router.is_ejected(&addr.to_string()));
}

/// A backend that reads a request and closes without answering; counts requests.
async fn broken_backend() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = s.read(&mut buf).await
                    && n > 0
                {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_dropped_unanswered_moves_to_another_backend_once_a_post_never() {
    let (broken, seen) = broken_backend().await;
    let live = TestBackend::start("live").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[
            (
                "web.localhost",
                "web",
                vec![
                    (broken.clone(), 1_000_000, BackendState::Active),
                    (live.address(), 1, BackendState::Active),
                ],
            ),
            (
                "alone.localhost",
                "alone",
                vec![(broken.clone(), 100, BackendState::Active)],
            ),
        ]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    // Idempotent (RFC 9110 §9.2.2) and nothing reached the client yet: once elsewhere.
    let answer = client.get("web.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "live");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(live.hits(), 1);
    assert!(!r.router.is_ejected(&broken), "only connect failures eject");
    // A POST that reached a backend may have had effects: never sent again.
    let answer = client
        .send(request(
            "POST",
            "web.localhost",
            "/",
            Bytes::from_static(b"x"),
        ))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("failed to answer"), "{}", answer.body);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(live.hits(), 1, "the POST was not retried elsewhere");
    // With no other backend the GET fails after its one try.
    let mut client = Client::connect(r.public).await.unwrap();
    let answer = client.get("alone.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("failed to answer"), "{}", answer.body);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_name_their_cause() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::start(RouterConfig {
        backend_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    })
    .await;
    let dead = dead_address().await;
    r.router
        .apply(&table(&[
            ("slow.localhost", "slow", vec![active(&b)]),
            ("empty.localhost", "empty", vec![]),
            (
                "dead.localhost",
                "dead",
                vec![(dead, 100, BackendState::Active)],
            ),
        ]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();

    let answer = client.get("slow.localhost", "/slow?ms=3000").await.unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        answer.body.contains("did not answer within"),
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");

    let mut client = Client::connect(r.public).await.unwrap();
    let answer = client.get("empty.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body.contains("no healthy backend"),
        "{}",
        answer.body
    );

    let answer = client.get("dead.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("cannot connect"), "{}", answer.body);

    let answer = client.get("unknown.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.contains("unknown.localhost"), "{}", answer.body);

    // Status codes of the backend pass through untouched.
    let answer = client.get("slow.localhost", "/status/503").await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "status 503");
}
