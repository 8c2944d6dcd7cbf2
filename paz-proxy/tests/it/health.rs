use std::time::{Duration, Instant};

use hyper::StatusCode;
use paz_core::HumanDuration;
use paz_core::health::{HealthChecker, HealthTarget};
use paz_core::service::{HealthCheck, HealthKind};
use paz_proxy::HttpHealthChecker;

use crate::support::{TestBackend, dead_address};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checker_passes_the_health_contract() {
    let healthy = TestBackend::start("ok").await;
    let unhealthy = TestBackend::start_with_health("bad", StatusCode::INTERNAL_SERVER_ERROR).await;
    let fixture = paz_core::contract::health::Fixture {
        healthy: healthy.address(),
        unhealthy: unhealthy.address(),
        unreachable: dead_address().await,
    };
    paz_core::contract::health::run(&HttpHealthChecker::new(), &fixture).await;
    assert_eq!(healthy.hits(), 1);
}

fn target(address: String, check: HealthCheck) -> HealthTarget {
    HealthTarget {
        address,
        check,
        host: Some("web.localhost".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_sends_the_routed_host_and_path() {
    let backend = TestBackend::start("b").await;
    let checker = HttpHealthChecker::new();
    let report = checker
        .check(&target(
            backend.address(),
            HealthCheck {
                path: "/expect-host/web.localhost".into(),
                ..HealthCheck::default()
            },
        ))
        .await;
    assert!(
        report.healthy,
        "the Host header is the routed one: {}",
        report.detail
    );
    let report = checker
        .check(&target(
            backend.address(),
            HealthCheck {
                path: "/status/204".into(),
                ..HealthCheck::default()
            },
        ))
        .await;
    assert!(report.healthy, "{}", report.detail);
    assert!(report.detail.contains("204"), "{}", report.detail);
    let report = checker
        .check(&target(
            backend.address(),
            HealthCheck {
                path: "/status/302".into(),
                ..HealthCheck::default()
            },
        ))
        .await;
    assert!(!report.healthy, "a redirect is not healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_times_out() {
    let backend = TestBackend::start("slow").await;
    let started = Instant::now();
    let report = HttpHealthChecker::new()
        .check(&target(
            backend.address(),
            HealthCheck {
                path: "/slow?ms=3000".into(),
                timeout: HumanDuration::from_millis(200),
                ..HealthCheck::default()
            },
        ))
        .await;
    assert!(!report.healthy);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(report.detail.contains("within"), "{}", report.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_is_a_connect() {
    let backend = TestBackend::start("tcp").await;
    let checker = HttpHealthChecker::new();
    let tcp = HealthCheck {
        kind: HealthKind::Tcp,
        ..HealthCheck::default()
    };
    let up = checker.check(&target(backend.address(), tcp.clone())).await;
    assert!(up.healthy, "{}", up.detail);
    let down = checker.check(&target(dead_address().await, tcp)).await;
    assert!(!down.healthy);
    assert!(down.detail.contains("failed"), "{}", down.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_port_overrides_the_address_port() {
    let backend = TestBackend::start("p").await;
    let dead = dead_address().await;
    let report = HttpHealthChecker::new()
        .check(&target(
            dead,
            HealthCheck {
                path: "/health".into(),
                port: Some(u32::from(backend.addr.port())),
                ..HealthCheck::default()
            },
        ))
        .await;
    assert!(report.healthy, "{}", report.detail);
}
