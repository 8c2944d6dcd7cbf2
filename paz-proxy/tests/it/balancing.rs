use std::time::Duration;

use hyper::StatusCode;
use paz_core::proxy::Proxy;
use paz_core::route::BackendState;

use crate::support::{Client, TestBackend, TestRouter, active, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_over_equal_backends() {
    let backends = [
        TestBackend::start("b0").await,
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
    ];
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            backends.iter().map(active).collect(),
        )]))
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let public = r.public;
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(public).await.unwrap();
            for _ in 0..150 {
                let answer = client.get("web.localhost", "/").await.unwrap();
                assert_eq!(answer.status, StatusCode::OK);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let hits: Vec<u64> = backends.iter().map(TestBackend::hits).collect();
    assert_eq!(hits.iter().sum::<u64>(), 600);
    for h in &hits {
        assert!((120..=280).contains(h), "uneven spread: {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_avoids_the_loaded_backend() {
    // One backend holds 6 slow requests: new requests prefer the idle one.
    let busy = TestBackend::start("busy").await;
    let idle = TestBackend::start("idle").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&busy)])]))
        .await
        .unwrap();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let public = r.public;
        slow.push(tokio::spawn(async move {
            crate::support::get(public, "web.localhost", "/slow?ms=1500").await
        }));
    }
    crate::support::eventually(Duration::from_secs(5), || {
        r.router.in_flight_now(&busy.address()) == 6
    })
    .await
    .unwrap();
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![active(&busy), active(&idle)],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..100 {
        assert_eq!(
            client.get("web.localhost", "/").await.unwrap().status,
            StatusCode::OK
        );
    }
    // Each request sees `busy` with 6 in flight and `idle` with 0: `busy` wins only when
    // both choices land on it (1/4).
    assert!(idle.hits() >= 60, "idle got {}", idle.hits());
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_90_10() {
    let stable = TestBackend::start("stable").await;
    let canary = TestBackend::start("canary").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![
                (stable.address(), 90, BackendState::Active),
                (canary.address(), 10, BackendState::Active),
            ],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..2000 {
        assert_eq!(
            client.get("web.localhost", "/").await.unwrap().status,
            StatusCode::OK
        );
    }
    let share = canary.hits() as f64 / 2000.0;
    assert!(
        (0.07..=0.13).contains(&share),
        "canary share {share} (stable {}, canary {})",
        stable.hits(),
        canary.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_takes_no_traffic() {
    let a = TestBackend::start("a").await;
    let zero = TestBackend::start("zero").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![active(&a), (zero.address(), 0, BackendState::Active)],
        )]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..200 {
        assert_eq!(client.get("web.localhost", "/").await.unwrap().body, "a");
    }
    assert_eq!(zero.hits(), 0);
}
