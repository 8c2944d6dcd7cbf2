//! Outgoing notifications against a real receiver on loopback: signed deliveries of the
//! selected events, retries after a 503, and local addresses refused unless allow-listed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use paz_core::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger};
use paz_server::notify::{NotifyConfig, run, signature};

/// What the receiver got: headers and body of each POST.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver on 127.0.0.1 that answers `fail_first` times 503, then 200.
async fn receiver(fail_first: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (received, calls) = (received.clone(), calls.clone());
                async move {
                    let mut calls = calls.lock().unwrap();
                    *calls += 1;
                    if *calls <= fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    received.lock().unwrap().push((headers, body.to_vec()));
                    StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn config(url: &str, allow: bool) -> NotifyConfig {
    NotifyConfig {
        urls: vec![url.parse().unwrap()],
        secret: Arc::from(&b"0123456789abcdef"[..]),
        events: vec!["service_*".into()],
        allow: if allow {
            vec!["127.0.0.1".parse().unwrap()]
        } else {
            vec![]
        },
    }
}

async fn until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + bound;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn selected_events_are_delivered_signed_and_retried_after_a_503() {
    let (url, received) = receiver(1).await;
    let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(config(&url, true), paz.clone(), shutdown));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // service_created is selected; deployment_changed (of its first deployment) is not.
    paz.create_service(ServiceSpec::new("web", "demo:v1"), Trigger::create())
        .await
        .unwrap();
    until("a delivery after one 503", Duration::from_secs(5), || {
        !received.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "only the selected event");
    let (headers, body) = &received[0];
    let event: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "service_created");
    assert_eq!(headers["x-paz-event"], "service_created");
    assert_eq!(headers["x-paz-delivery"], event["id"].as_str().unwrap());
    let timestamp: i64 = headers["x-paz-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((jiff::Timestamp::now().as_second() - timestamp).abs() < 30);
    assert_eq!(
        headers["x-paz-signature"],
        signature(b"0123456789abcdef", timestamp, body).as_str()
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_local_receiver_is_refused_unless_allow_listed() {
    let (url, received) = receiver(0).await;
    let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(config(&url, false), paz.clone(), shutdown));
    tokio::time::sleep(Duration::from_millis(50)).await;
    paz.create_service(ServiceSpec::new("web", "demo:v1"), Trigger::create())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        received.lock().unwrap().is_empty(),
        "nothing reaches 127.0.0.1 without --notify-allow"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}
