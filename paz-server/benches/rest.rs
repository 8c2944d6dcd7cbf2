//! REST throughput on loopback: create + get of a service through `paz::Client` against an
//! in-process `paz-server` (embedded store), sequential and with 8 concurrent clients, sent
//! with the admin token and with a scoped token (`paz_<id>_<secret>`: one store read and a
//! SHA-256 per request). Each token kind gets a server and a store of its own, so neither
//! runs against the other's data.
//!
//! `cargo bench -p paz-server --bench rest`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paz::core::token::{Scope, TokenInfo, TokenRecord};
use paz::core::{EngineConfig, Paz, ServiceSpec, Store};
use paz::store::EmbeddedStore;
use paz_server::{AppState, router};

const ADMIN: &str = "bench-token-0123456789";

/// A server on its own store; the client carries the admin token, or a scoped admin token.
async fn serve(dir: &std::path::Path, scoped: bool) -> paz::Client {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.join("bench.redb")).unwrap());
    let paz = Paz::new(store, EngineConfig::default());
    let token = if scoped {
        let new = paz_server::auth::generate().unwrap();
        paz.create_token(TokenRecord {
            info: TokenInfo {
                id: new.id.clone(),
                name: "bench".into(),
                scope: Scope::Admin,
                services: Vec::new(),
                created_at: jiff::Timestamp::now(),
                expires_at: None,
            },
            hash: new.hash.clone(),
        })
        .await
        .unwrap();
        new.token
    } else {
        ADMIN.to_owned()
    };
    let (stop, receiver) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router(AppState::new(paz, ADMIN, receiver))).into_future());
    paz::Client::new(&format!("http://{address}"), Some(token)).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("rest");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    // Both servers first, then each benchmark for each token kind in turn, so drift on a
    // shared machine falls on both alike; `REST_BENCH_SCOPED_FIRST=1` swaps the order.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut kinds = vec![("admin_token", false), ("scoped_token", true)];
    if std::env::var("REST_BENCH_SCOPED_FIRST").is_ok_and(|v| v == "1") {
        kinds.reverse();
    }
    let workloads: Vec<_> = dirs
        .iter()
        .zip(kinds)
        .map(|(dir, (kind, scoped))| {
            let client = rt.block_on(serve(dir.path(), scoped));
            let counter = Arc::new(AtomicU64::new(0));
            let create_and_get = move || {
                let client = client.clone();
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    let name = format!("svc-{n}");
                    client
                        .create_service(&ServiceSpec::new(name.clone(), "demo:v1"))
                        .await
                        .unwrap();
                    client.service(&name).await.unwrap();
                }
            };
            (kind, create_and_get)
        })
        .collect();
    for (kind, create_and_get) in &workloads {
        group.bench_function(format!("create_get_sequential/{kind}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        create_and_get().await;
                    }
                    started.elapsed()
                })
            })
        });
    }
    for (kind, create_and_get) in &workloads {
        group.bench_function(format!("create_get_8_clients/{kind}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    let per_client = iters.div_ceil(8);
                    let tasks: Vec<_> = (0..8)
                        .map(|_| {
                            let work = create_and_get.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_client {
                                    work().await;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    started
                        .elapsed()
                        .mul_f64(iters as f64 / (per_client * 8) as f64)
                })
            })
        });
    }
    group.finish();
}

/// The cost of the token check alone: `GET /v1/services/web` answered in process (no
/// socket, memory store), with the admin token and with a scoped token.
fn token_check(c: &mut Criterion) {
    use tower::ServiceExt as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, scoped) = rt.block_on(async {
        let paz = Paz::new(
            Arc::new(paz::core::MemoryStore::new()),
            EngineConfig::default(),
        );
        paz.create_service(
            ServiceSpec::new("web", "demo:v1"),
            paz::core::Trigger::create(),
        )
        .await
        .unwrap();
        let new = paz_server::auth::generate().unwrap();
        paz.create_token(TokenRecord {
            info: TokenInfo {
                id: new.id.clone(),
                name: "ci".into(),
                scope: Scope::Deploy,
                services: vec!["web".into()],
                created_at: jiff::Timestamp::now(),
                expires_at: None,
            },
            hash: new.hash.clone(),
        })
        .await
        .unwrap();
        let (stop, receiver) = tokio::sync::watch::channel(false);
        std::mem::forget(stop);
        (router(AppState::new(paz, ADMIN, receiver)), new.token)
    });
    let mut group = c.benchmark_group("token_check");
    group.throughput(Throughput::Elements(1));
    for (kind, token) in [("admin_token", ADMIN.to_owned()), ("deploy_token", scoped)] {
        let header = format!("Bearer {token}");
        group.bench_function(format!("get_service_in_process/{kind}"), |b| {
            b.iter(|| {
                let request = axum::http::Request::get("/v1/services/web")
                    .header("authorization", &header)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let response = rt.block_on(app.clone().oneshot(request)).unwrap();
                assert!(response.status().is_success());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, token_check);
criterion_main!(benches);
