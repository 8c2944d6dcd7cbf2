//! Many clients while the table changes under them: not a single non-2xx answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use paz_core::proxy::Proxy;
use paz_proxy::RouterConfig;

use crate::support::{Client, TestBackend, TestRouter, active, draining, table};

async fn zero_errors_while_deploying(config: RouterConfig) {
    let r = TestRouter::start(config).await;
    let mut current = vec![
        TestBackend::start("v0-a").await,
        TestBackend::start("v0-b").await,
    ];
    r.router
        .apply(&table(&[(
            "web.localhost",
            "web",
            current.iter().map(active).collect(),
        )]))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (stop, ok, public) = (stop.clone(), ok.clone(), r.public);
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(public).await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                // Some clients ask for slow answers, so drains have something to wait for.
                let path = if c % 4 == 0 && n.is_multiple_of(10) {
                    "/slow?ms=30"
                } else {
                    "/"
                };
                let answer = client.get("web.localhost", path).await.unwrap();
                assert!(
                    answer.status.is_success(),
                    "client {c} request {n}: {} {}",
                    answer.status,
                    answer.body
                );
                n += 1;
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Rolling deploys, start-first: new up, added; old draining, drained, stopped, removed.
    for version in 1..=6 {
        let new = vec![
            TestBackend::start(&format!("v{version}-a")).await,
            TestBackend::start(&format!("v{version}-b")).await,
        ];
        let mut both: Vec<_> = current.iter().map(draining).collect();
        both.extend(new.iter().map(active));
        r.router
            .apply(&table(&[(
                "web.localhost",
                "web",
                new.iter()
                    .map(active)
                    .chain(current.iter().map(active))
                    .collect(),
            )]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        r.router
            .apply(&table(&[("web.localhost", "web", both)]))
            .await
            .unwrap();
        for old in &current {
            let left = r
                .router
                .wait_drained(&old.address(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(left, 0);
            old.stop();
        }
        r.router
            .apply(&table(&[(
                "web.localhost",
                "web",
                new.iter().map(active).collect(),
            )]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        current = new;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 500, "too few requests: {ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_errors_while_deploying_on_worker_threads() {
    zero_errors_while_deploying(RouterConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_errors_while_deploying_on_the_callers_runtime() {
    zero_errors_while_deploying(RouterConfig {
        workers: 0,
        ..RouterConfig::default()
    })
    .await;
}
