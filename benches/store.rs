//! Store benchmarks: embedded (redb, durable) and in-memory put/get, watch-notify latency,
//! and the physical floor of a durable write (200 bytes + fdatasync on the same disk).
//!
//! `cargo bench --bench store`

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use paz::core::Store;
use paz::store::{EmbeddedStore, MemoryStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn value() -> Vec<u8> {
    vec![b'x'; 200]
}

/// `iters` puts, each awaited in turn.
async fn puts(store: &dyn Store, iters: u64) -> Duration {
    let started = Instant::now();
    for i in 0..iters {
        store
            .put(&format!("/bench/{}", i % 1000), value())
            .await
            .unwrap();
    }
    started.elapsed()
}

/// Time from a put's start until a watcher sees it.
async fn watch_notify(store: &dyn Store, iters: u64) -> Duration {
    let mut stream = store.watch("/watch/", 0).await.unwrap();
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let started = Instant::now();
        store
            .put(&format!("/watch/{}", i % 100), value())
            .await
            .unwrap();
        stream.next().await.unwrap().unwrap();
        total += started.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let embedded =
        rt.block_on(async { EmbeddedStore::open(dir.path().join("bench.redb")).unwrap() });
    let memory = rt.block_on(async { MemoryStore::new() });

    let mut group = c.benchmark_group("store");
    group.sample_size(30);
    group.bench_function("floor_write_200b_fdatasync", |b| {
        let mut file = std::fs::File::create(dir.path().join("floor")).unwrap();
        b.iter(|| {
            file.write_all(&value()).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.bench_function("embedded_put", |b| {
        b.iter_custom(|iters| rt.block_on(puts(&embedded, iters)))
    });
    group.bench_function("memory_put", |b| {
        b.iter_custom(|iters| rt.block_on(puts(&memory, iters)))
    });
    rt.block_on(puts(&embedded, 1000));
    group.bench_function("embedded_get", |b| {
        b.iter(|| rt.block_on(async { black_box(embedded.get("/bench/500").await.unwrap()) }))
    });
    group.bench_function("embedded_put_to_watch_event", |b| {
        b.iter_custom(|iters| rt.block_on(watch_notify(&embedded, iters)))
    });
    group.bench_function("memory_put_to_watch_event", |b| {
        b.iter_custom(|iters| rt.block_on(watch_notify(&memory, iters)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
