use paz_core::proxy::Proxy;

use crate::support::{Client, TestBackend, TestRouter, active, table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_service_and_code() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[
            ("web.localhost", "web", vec![active(&b)]),
            ("empty.localhost", "empty", vec![]),
            ("idle.localhost", "idle", vec![active(&b)]),
        ]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    for _ in 0..3 {
        client.get("web.localhost", "/").await.unwrap();
    }
    client.get("web.localhost", "/status/500").await.unwrap();
    client.get("empty.localhost", "/").await.unwrap();
    client.get("nobody.localhost", "/").await.unwrap();
    let text = r.router.metrics_text();
    for line in [
        "# TYPE paz_router_requests_total counter",
        "paz_router_requests_total{service=\"web\",code=\"200\"} 3",
        "paz_router_requests_total{service=\"web\",code=\"500\"} 1",
        "paz_router_requests_total{service=\"empty\",code=\"503\"} 1",
        "# TYPE paz_router_request_duration_seconds histogram",
        "paz_router_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 4",
        "paz_router_request_duration_seconds_count{service=\"web\"} 4",
        "# TYPE paz_router_in_flight gauge",
        "paz_router_in_flight{service=\"web\"} 0",
        "paz_router_unmatched_requests_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("paz_router_request_duration_seconds_sum{service=\"web\"}"));
    // A service never requested has no series: the text grows with traffic, not routes.
    assert!(!text.contains("service=\"idle\""), "{text}");
}
