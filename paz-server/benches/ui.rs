//! Server-side render time of the web UI's pages with 1,000 services: each request goes
//! through the whole router in process (session check, store reads, the runtime's
//! instances, rendering), as a browser's would minus the network. The services run on the
//! fake scheduler, 2 instances each, all healthy, with request rates in the charts.
//!
//! `cargo bench -p paz-server --bench ui` prints the median and p99 per page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use paz_core::health::{HealthChecker, HealthReport, HealthTarget};
use paz_core::proxy::FakeProxy;
use paz_core::scheduler::FakeScheduler;
use paz_core::{
    EngineConfig, HealthCheck, InstanceState, MemoryStore, Paz, PortSpec, Protocol, ServiceSpec,
    Trigger, TriggerKind,
};
use paz_runtime::Runtime;
use paz_server::{AppState, router};
use tower::ServiceExt;

const SERVICES: usize = 1_000;
const WARMUP: usize = 20;
const SAMPLES: usize = 300;

/// Every instance passes its check.
struct Healthy;

#[async_trait]
impl HealthChecker for Healthy {
    async fn check(&self, _: &HealthTarget) -> HealthReport {
        HealthReport {
            healthy: true,
            detail: "200 OK".into(),
            latency: Duration::from_millis(1),
        }
    }
}

fn spec(i: usize) -> ServiceSpec {
    let mut spec = ServiceSpec::new(format!("svc-{i:04}"), "registry.local:5000/team/app:1.4.2");
    spec.instances = 2;
    spec.public = true;
    spec.ports.push(PortSpec {
        port: 8080,
        protocol: Protocol::Http,
    });
    spec.health = Some(HealthCheck {
        path: "/health".into(),
        ..HealthCheck::default()
    });
    spec
}

/// The router's metrics for every service: `requests` answered, in two latency buckets.
fn metrics_text(requests: u64) -> String {
    let mut text = String::new();
    for i in 0..SERVICES {
        let name = format!("svc-{i:04}");
        text.push_str(&format!(
            "paz_router_requests_total{{service=\"{name}\",code=\"200\"}} {requests}\n\
             paz_router_request_duration_seconds_bucket{{service=\"{name}\",le=\"0.001\"}} {}\n\
             paz_router_request_duration_seconds_bucket{{service=\"{name}\",le=\"0.01\"}} {requests}\n\
             paz_router_request_duration_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {requests}\n",
            requests / 2
        ));
    }
    text
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[allow(clippy::print_stdout)] // A benchmark reports on stdout.
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
        for i in 0..SERVICES {
            paz.create_service(spec(i), Trigger::new(TriggerKind::Create))
                .await
                .unwrap();
        }
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let runtime = Runtime::builder(paz.clone())
            .scheduler(Arc::new(FakeScheduler::new()))
            .proxy(Arc::new(FakeProxy::new()))
            .health(Arc::new(Healthy))
            .build()
            .unwrap()
            .spawn(shutdown.clone());
        let reconciler = runtime.reconciler().clone();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let healthy: usize = (0..SERVICES)
                .map(|i| {
                    reconciler
                        .instances(&format!("svc-{i:04}"))
                        .iter()
                        .filter(|i| i.state == InstanceState::Healthy)
                        .count()
                })
                .sum();
            if healthy == 2 * SERVICES {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{healthy} of {} instances healthy after 300 s",
                2 * SERVICES
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Steady state: every first deployment has finished too.
        loop {
            let mut running = 0;
            for i in 0..SERVICES {
                let latest = paz.latest_deployment(&format!("svc-{i:04}")).await.unwrap();
                running += usize::from(latest.is_some_and(|d| !d.status.is_final()));
            }
            if running == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{running} deployments still running after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let state = AppState::new(paz, "bench-token-0123456789", shutdown).with_runtime(reconciler);
        state.ui.sample_metrics(&metrics_text(0));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        state.ui.sample_metrics(&metrics_text(1000));
        let cookie = state.ui.test_session_cookie();
        let app = router(state);
        println!(
            "UI render time, {SERVICES} services x 2 instances, {SAMPLES} requests each (in process)"
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            "page", "median", "p99", "HTML"
        );
        for page in ["/", "/services", "/services/svc-0500", "/hosts"] {
            let mut times = Vec::with_capacity(SAMPLES);
            let mut size = 0;
            for n in 0..WARMUP + SAMPLES {
                let request = Request::get(page)
                    .header(header::COOKIE, &cookie)
                    .body(Body::empty())
                    .unwrap();
                let started = Instant::now();
                let response = app.clone().oneshot(request).await.unwrap();
                assert!(response.status().is_success(), "{page}: {}", response.status());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let took = started.elapsed();
                size = body.len();
                if n >= WARMUP {
                    times.push(took);
                }
            }
            times.sort();
            println!(
                "{:<28} {:>8.2}ms {:>8.2}ms {:>8}KB",
                page,
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
                size / 1024
            );
        }
        let _ = _stop.send(true);
        runtime.join().await;
    });
}
