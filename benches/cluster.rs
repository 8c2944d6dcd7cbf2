//! Cluster benchmarks on a real etcd (issue 10), each beside etcd's own figure in the same run:
//!
//! - **leader failover**: a leader that stops renewing (as a crashed process; its lease is
//!   not revoked) and the time until the other replica's campaign wins, with a 2 s leader
//!   TTL; the goal is under 2 × the TTL;
//! - **announcement → routed**: from the start of the leader's announcement of an instance
//!   until a router fed by a [`RouteFollower`] (the built-in router, as in a router-only
//!   process) routes to it; beside it etcd's put → watch, the floor of "write, then observe";
//! - **the API on etcd**: `paz::Client` create + get of a service against a `paz-server`
//!   (release binary, `--scheduler none`) on etcd and one on the embedded store, interleaved,
//!   beside etcd's own put latency.
//!
//! `cargo build --release -p paz-server && cargo bench --bench cluster --features router`
//! (`PAZ_BENCH_N`, default 300 per measurement). Needs etcd (Debian: `apt-get install etcd-server`).

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paz::core::Store;
use paz::core::cluster::ReplicaRole;
use paz::core::proxy::Proxy;
use paz::core::route::{Backend, Route, RouteTable};
use paz::runtime::announce::{Announcer, RouteFollower, announcements};
use paz::runtime::leader::{Election, this_process};
use paz::{Instance, InstanceState};
use paz_etcd::EtcdStore;
use paz_etcd::testing::{EtcdCluster, etcd_available};

const TOKEN: &str = "paz-bench-admin-token-0123456789";

fn n() -> usize {
    std::env::var("PAZ_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn report(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    println!(
        "{name:<44} p50 {:>10}  p99 {:>10}  (n = {})",
        ms(p50),
        ms(p99),
        samples.len()
    );
    (p50, p99)
}

async fn failover(store: Arc<dyn Store>, runs: usize) -> Vec<Duration> {
    let ttl = Duration::from_secs(2);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let mut times = Vec::new();
    for _ in 0..runs {
        let a = Election::new(
            store.clone(),
            this_process(ReplicaRole::Server, None, None),
            ttl,
        );
        let b = Election::new(
            store.clone(),
            this_process(ReplicaRole::Server, None, None),
            ttl,
        );
        let term_a = a.campaign(&mut shutdown.clone()).await.expect("a leads");
        let mut waiting = shutdown.clone();
        let follower = tokio::spawn(async move {
            let term = b.campaign(&mut waiting).await.expect("b leads");
            (Instant::now(), term)
        });
        // Somewhere between two renewals, as a crash would be.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let crashed = Instant::now();
        drop(term_a); // stops renewing; the lease is not revoked
        let (won, term_b) = follower.await.unwrap();
        times.push(won - crashed);
        term_b.resign().await;
    }
    times
}

fn instance(slot: u32, address: &str) -> Instance {
    Instance {
        id: format!("web-{slot}"),
        service: "web".into(),
        release: 1,
        slot,
        host: "bench".into(),
        address: Some(address.into()),
        state: InstanceState::Healthy,
        message: None,
        epoch: None,
        started_at: None,
    }
}

async fn announce_to_routed(store: Arc<dyn Store>, count: usize) -> Vec<Duration> {
    let router = paz::proxy::router::Router::new(Default::default());
    let follower = RouteFollower::new(store.clone(), router.clone(), "bench", "127.0.0.1:0");
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (first, mut first_applied) = tokio::sync::watch::channel(false);
    tokio::spawn(follower.run(shutdown, first));
    first_applied.wait_for(|f| *f).await.unwrap();
    let announcer = Announcer::new(store);
    let mut times = Vec::new();
    for i in 0..count {
        let address = format!("10.0.{}.{}:8080", i / 250, i % 250 + 1);
        let mut route = Route::new("web");
        route.backends.insert(address.clone(), Backend::default());
        let mut table = RouteTable::default();
        table.routes.insert("web.localhost".into(), route);
        let records = announcements(&[instance(0, &address)], &table);
        let started = Instant::now();
        announcer.publish(&records).await.expect("announce");
        let deadline = started + Duration::from_secs(2);
        loop {
            let routes = router.routes().await.unwrap();
            if routes
                .routes
                .get("web.localhost")
                .is_some_and(|r| r.backends.contains_key(&address))
            {
                times.push(started.elapsed());
                break;
            }
            assert!(Instant::now() < deadline, "never routed");
            tokio::task::yield_now().await;
        }
    }
    times
}

async fn etcd_put_and_watch(store: &EtcdStore, count: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut puts = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        store
            .put(&format!("/bench/put/{}", i % 100), vec![b'x'; 200])
            .await
            .unwrap();
        puts.push(started.elapsed());
    }
    let mut watch = store.watch("/bench/watch/", 0).await.unwrap();
    let mut watches = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        store
            .put(&format!("/bench/watch/{}", i % 100), vec![b'x'; 200])
            .await
            .unwrap();
        watch.next().await.unwrap().unwrap();
        watches.push(started.elapsed());
    }
    (puts, watches)
}

struct ServerProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn paz_server_binary() -> PathBuf {
    // target/release/deps/cluster-… → target/release/paz-server
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("paz-server")
}

fn start_server(store: &str) -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(paz_server_binary())
        .args(["--api-listen", "127.0.0.1:0", "--scheduler", "none"])
        .args(["--store", store, "--token", TOKEN])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paz-server (cargo build --release -p paz-server first)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("paz-server exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("paz-server listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    ServerProcess {
        child,
        url,
        _dir: dir,
    }
}

/// Creates and reads `count` services; the time of each create and of each get.
async fn create_and_get(
    client: &paz::Client,
    prefix: &str,
    from: usize,
    count: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut creates, mut gets) = (Vec::new(), Vec::new());
    for i in from..from + count {
        let name = format!("{prefix}{i}");
        let started = Instant::now();
        client
            .create_service(&paz::ServiceSpec::new(&name, "paz-demo:v1"))
            .await
            .unwrap();
        creates.push(started.elapsed());
        let started = Instant::now();
        client.service(&name).await.unwrap();
        gets.push(started.elapsed());
    }
    (creates, gets)
}

fn main() -> ExitCode {
    if !etcd_available("the cluster bench") {
        eprintln!("error: the cluster bench needs etcd (apt-get install etcd-server)");
        return ExitCode::FAILURE;
    }
    if !paz_server_binary().exists() {
        eprintln!(
            "error: {} is missing: cargo build --release -p paz-server",
            paz_server_binary().display()
        );
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let etcd = EtcdCluster::single().expect("start etcd");
        let connect = |namespace: &str| EtcdStore::connect(etcd.config(namespace));
        let count = n();
        println!("# cluster bench: etcd 3.4 single member, n = {count}\n");

        let etcd_store = connect("/raw").await.unwrap();
        let (mut puts, mut watches) = etcd_put_and_watch(&etcd_store, count).await;
        let (put50, put99) = report("etcd put (Paz's etcd store)", &mut puts);
        let (watch50, watch99) = report("etcd put → watch", &mut watches);

        let store: Arc<dyn Store> = Arc::new(connect("/announce").await.unwrap());
        let mut routed = announce_to_routed(store, count).await;
        let (routed50, routed99) = report("announcement → routed by a follower", &mut routed);
        println!(
            "{:<44} p50 {:>9.2}×  p99 {:>9.2}×",
            "  ratio to etcd put → watch",
            routed50.as_secs_f64() / watch50.as_secs_f64(),
            routed99.as_secs_f64() / watch99.as_secs_f64()
        );

        let store: Arc<dyn Store> = Arc::new(connect("/election").await.unwrap());
        let mut failovers = failover(store, 5).await;
        let (fail50, _) = report("leader failover, TTL 2 s (5 runs)", &mut failovers);
        println!(
            "{:<44} max {:>10}  median/TTL {:.2}",
            "",
            ms(*failovers.iter().max().unwrap()),
            fail50.as_secs_f64() / 2.0
        );

        let on_etcd = start_server(&format!("{}/api", etcd.url()));
        let on_embedded = start_server("embedded");
        let etcd_client = paz::Client::new(&on_etcd.url, Some(TOKEN.into())).unwrap();
        let embedded_client = paz::Client::new(&on_embedded.url, Some(TOKEN.into())).unwrap();
        let (mut etcd_creates, mut etcd_gets) = (Vec::new(), Vec::new());
        let (mut embedded_creates, mut embedded_gets) = (Vec::new(), Vec::new());
        let rounds = 3;
        let per_round = count / rounds;
        for round in 0..rounds {
            let from = round * per_round;
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for on_etcd in order {
                if on_etcd {
                    let (c, g) = create_and_get(&etcd_client, "e", from, per_round).await;
                    etcd_creates.extend(c);
                    etcd_gets.extend(g);
                } else {
                    let (c, g) = create_and_get(&embedded_client, "m", from, per_round).await;
                    embedded_creates.extend(c);
                    embedded_gets.extend(g);
                }
            }
        }
        for (what, on_etcd, embedded) in [
            ("create", &mut etcd_creates, &mut embedded_creates),
            ("get", &mut etcd_gets, &mut embedded_gets),
        ] {
            let (api50, api99) = report(&format!("API {what}, etcd store"), on_etcd);
            let (emb50, emb99) = report(&format!("API {what}, embedded store"), embedded);
            println!(
                "{:<44} p50 {:>9.2}×  p99 {:>9.2}×",
                "  etcd / embedded",
                api50.as_secs_f64() / emb50.as_secs_f64(),
                api99.as_secs_f64() / emb99.as_secs_f64()
            );
            println!(
                "{:<44} p50 {:>9.2}×  p99 {:>9.2}×   (goal: p99 <= 2×)",
                "  etcd store's API / etcd put",
                api50.as_secs_f64() / put50.as_secs_f64(),
                api99.as_secs_f64() / put99.as_secs_f64()
            );
        }
    });
    ExitCode::SUCCESS
}
