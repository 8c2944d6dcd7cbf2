//! REST throughput on loopback: create + get of a service through `paz::Client` against an
//! in-process `paz-server` (embedded store), sequential and with 8 concurrent clients.
//!
//! `cargo bench --bench rest`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paz::core::{EngineConfig, Paz, ServiceSpec, Store};
use paz::store::EmbeddedStore;
use paz_server::{AppState, router};

const TOKEN: &str = "bench-token-0123456789";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, _stop) = rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("bench.redb")).unwrap());
        let paz = Paz::new(store, EngineConfig::default());
        let (stop, receiver) = tokio::sync::watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            axum::serve(listener, router(AppState::new(paz, TOKEN, receiver))).into_future(),
        );
        let client =
            paz::Client::new(&format!("http://{address}"), Some(TOKEN.to_owned())).unwrap();
        (client, stop)
    });
    let counter = Arc::new(AtomicU64::new(0));
    let create_and_get = {
        let client = client.clone();
        let counter = Arc::clone(&counter);
        move || {
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
        }
    };
    let mut group = c.benchmark_group("rest");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    group.bench_function("create_get_sequential", |b| {
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
    group.bench_function("create_get_8_clients", |b| {
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
