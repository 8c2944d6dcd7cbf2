use std::time::{Duration, Instant};

use hyper::StatusCode;
use paz_core::proxy::Proxy;

use crate::support::{Client, TestBackend, TestRouter, active, draining, eventually, get, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_backend_finishes_in_flight_and_takes_no_new_requests() {
    let old = TestBackend::start("old").await;
    let new = TestBackend::start("new").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&old)])]))
        .await
        .unwrap();
    let public = r.public;
    let slow = tokio::spawn(async move { get(public, "web.localhost", "/slow?ms=800").await });
    eventually(Duration::from_secs(5), || {
        r.router.in_flight_now(&old.address()) == 1
    })
    .await
    .unwrap();

    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![draining(&old), active(&new)],
        )]))
        .await
        .unwrap();
    assert_eq!(r.router.in_flight(&old.address()).await.unwrap(), 1);
    let before = old.hits();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..50 {
        assert_eq!(client.get("web.localhost", "/").await.unwrap().body, "new");
    }
    assert_eq!(
        old.hits(),
        before,
        "a draining backend takes no new request"
    );

    // wait_drained returns when the slow request completes, not before, not much after.
    let started = Instant::now();
    let left = r
        .router
        .wait_drained(&old.address(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(left, 0);
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(100),
        "returned too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "returned too late: {waited:?}"
    );
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "slow old");
    assert_eq!(r.router.in_flight(&old.address()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_drained_reports_what_is_left_at_the_timeout() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let public = r.public;
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(tokio::spawn(async move {
            get(public, "web.localhost", "/slow?ms=1500").await
        }));
    }
    eventually(Duration::from_secs(5), || {
        r.router.in_flight_now(&b.address()) == 2
    })
    .await
    .unwrap();
    r.router
        .apply(&table(&[("web.localhost", "web", vec![draining(&b)])]))
        .await
        .unwrap();
    // Nothing Active left: 503.
    let answer = get(r.public, "web.localhost", "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let left = r
        .router
        .wait_drained(&b.address(), Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(left, 2);
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        r.router
            .wait_drained(&b.address(), Duration::from_secs(1))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_still_counts_its_requests() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let public = r.public;
    let slow = tokio::spawn(async move { get(public, "web.localhost", "/slow?ms=500").await });
    eventually(Duration::from_secs(5), || {
        r.router.in_flight_now(&b.address()) == 1
    })
    .await
    .unwrap();
    r.router.apply(&table(&[])).await.unwrap();
    assert_eq!(r.router.in_flight(&b.address()).await.unwrap(), 1);
    assert_eq!(
        r.router
            .wait_drained(&b.address(), Duration::from_secs(5))
            .await
            .unwrap(),
        0
    );
    assert_eq!(slow.await.unwrap().unwrap().status, StatusCode::OK);
}
