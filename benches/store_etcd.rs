//! Embedded store vs etcd store, in one run: latency distributions (p50, p99) of sequential
//! operations from one client with 200-byte values, on `paz::store::EmbeddedStore` (redb on a
//! temp file, durable) and `paz_etcd::EtcdStore` on a single-member etcd started here (data
//! dir on the same disk), and etcd-client used directly on the same etcd for reference (the
//! cost of Paz's layer).
//!
//! Operations: `put`; `cas` (a commit conditioned on the key's mod revision, which is
//! tracked); `get`; `put → watch` (from the start of a put until a watcher opened before
//! yields its event). Subjects are interleaved in rounds (the order flips every round), so
//! machine noise hits all of them; a figure is the median over rounds of each round's p50 or
//! p99, ops/s the median of each round's count over its wall time.
//!
//! `cargo bench --bench store_etcd` (`PAZ_BENCH_N` operations per measurement, default 2000;
//! `PAZ_BENCH_ROUNDS`, default 5). Needs etcd (Debian: `apt-get install etcd-server`);
//! without it the bench fails.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, TxnOp, WatchOptions};
use futures_util::StreamExt;
use paz::core::Store;
use paz::store::{Condition, EmbeddedStore, Txn};
use paz_etcd::EtcdStore;
use paz_etcd::testing::EtcdCluster;

const VALUE_BYTES: usize = 200;
/// Keys written by `put` (and read by `get`) and by `put → watch`, cycled.
const PUT_KEYS: usize = 1000;
const WATCH_KEYS: usize = 100;

fn value() -> Vec<u8> {
    vec![b'x'; VALUE_BYTES]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Put,
    Cas,
    Get,
    Watch,
}

impl Op {
    const ALL: [Op; 4] = [Op::Put, Op::Cas, Op::Get, Op::Watch];

    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Cas => "cas",
            Op::Get => "get",
            Op::Watch => "put → watch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Embedded,
    Etcd,
    /// etcd-client directly, no Paz layer.
    Raw,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Embedded => "embedded",
            Subject::Etcd => "etcd",
            Subject::Raw => "etcd-client (raw)",
        }
    }
}

/// One measurement: each operation's latency, and the wall time of them all.
struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

/// One round's figures of one measurement.
#[derive(Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    ops_per_sec: f64,
}

impl Run {
    fn figures(mut self) -> Figures {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        Figures {
            p50: percentile(&self.latencies, 0.50),
            p99: percentile(&self.latencies, 0.99),
            ops_per_sec: n as f64 / self.wall.as_secs_f64(),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Times `n` sequential calls of `op(i)`.
async fn timed<F, Fut>(n: usize, mut op: F) -> Run
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i).await;
        latencies.push(t.elapsed());
    }
    Run {
        latencies,
        wall: started.elapsed(),
    }
}

async fn store_op(store: &dyn Store, op: Op, n: usize) -> Run {
    match op {
        Op::Put => {
            timed(n, |i| async move {
                store
                    .put(&format!("/bench/put/{}", i % PUT_KEYS), value())
                    .await
                    .unwrap();
            })
            .await
        }
        Op::Cas => {
            let key = "/bench/cas";
            let mut revision = store.put(key, value()).await.unwrap();
            let mut latencies = Vec::with_capacity(n);
            let started = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                let txn = Txn::new()
                    .when(key, Condition::ModRevision(revision))
                    .put(key, value());
                revision = store.commit(txn).await.unwrap();
                latencies.push(t.elapsed());
            }
            Run {
                latencies,
                wall: started.elapsed(),
            }
        }
        Op::Get => {
            timed(n, |i| async move {
                let got = store
                    .get(&format!("/bench/put/{}", i % PUT_KEYS))
                    .await
                    .unwrap();
                assert_eq!(got.map(|kv| kv.value.len()), Some(VALUE_BYTES));
            })
            .await
        }
        Op::Watch => {
            let mut stream = store.watch("/bench/watch/", 0).await.unwrap();
            let mut latencies = Vec::with_capacity(n);
            let started = Instant::now();
            for i in 0..n {
                let key = format!("/bench/watch/{}", i % WATCH_KEYS);
                let t = Instant::now();
                store.put(&key, value()).await.unwrap();
                let event = stream.next().await.expect("the watch ended").unwrap();
                latencies.push(t.elapsed());
                assert_eq!(event.kv.key, key);
            }
            Run {
                latencies,
                wall: started.elapsed(),
            }
        }
    }
}

/// The same operations with etcd-client directly (the CAS as the same etcd `Txn`).
async fn raw_op(client: &etcd_client::Client, op: Op, n: usize) -> Run {
    match op {
        Op::Put => {
            timed(n, |i| {
                let mut client = client.clone();
                async move {
                    client
                        .put(format!("/raw/put/{}", i % PUT_KEYS), value(), None)
                        .await
                        .unwrap();
                }
            })
            .await
        }
        Op::Cas => {
            let mut client = client.clone();
            let key = "/raw/cas";
            let put = client.put(key, value(), None).await.unwrap();
            let mut revision = put.header().unwrap().revision();
            let mut latencies = Vec::with_capacity(n);
            let started = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                let txn = etcd_client::Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
                    .and_then([TxnOp::put(key, value(), None)])
                    .or_else([TxnOp::get(key, None)]);
                let answer = client.txn(txn).await.unwrap();
                assert!(answer.succeeded());
                revision = answer.header().unwrap().revision();
                latencies.push(t.elapsed());
            }
            Run {
                latencies,
                wall: started.elapsed(),
            }
        }
        Op::Get => {
            timed(n, |i| {
                let mut client = client.clone();
                async move {
                    let got = client
                        .get(format!("/raw/put/{}", i % PUT_KEYS), None)
                        .await
                        .unwrap();
                    assert_eq!(
                        got.kvs().first().map(|kv| kv.value().len()),
                        Some(VALUE_BYTES)
                    );
                }
            })
            .await
        }
        Op::Watch => {
            let mut client = client.clone();
            let mut stream = client
                .watch("/raw/watch/", Some(WatchOptions::new().with_prefix()))
                .await
                .unwrap();
            let mut latencies = Vec::with_capacity(n);
            let started = Instant::now();
            for i in 0..n {
                let key = format!("/raw/watch/{}", i % WATCH_KEYS);
                let t = Instant::now();
                client.put(key.as_str(), value(), None).await.unwrap();
                // Skip the creation response; one put is one event.
                loop {
                    let response = stream.message().await.unwrap().expect("the watch ended");
                    if let Some(event) = response.events().first() {
                        assert_eq!(event.kv().map(|kv| kv.key()), Some(key.as_bytes()));
                        break;
                    }
                }
                latencies.push(t.elapsed());
            }
            Run {
                latencies,
                wall: started.elapsed(),
            }
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a count")),
        Err(_) => default,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted[sorted.len() / 2]
}

/// Microseconds, with a decimal below 10 µs.
fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    match r {
        r if r >= 100.0 => format!("{r:.0}×"),
        r if r >= 10.0 => format!("{r:.1}×"),
        r if r >= 0.1 => format!("{r:.2}×"),
        r => format!("{r:.4}×"),
    }
}

fn main() -> ExitCode {
    let n = env_usize("PAZ_BENCH_N", 2000);
    let rounds = env_usize("PAZ_BENCH_ROUNDS", 5);
    let etcd = Command::new("etcd").arg("--version").output();
    let Some(version) = etcd.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "store_etcd: etcd is not installed (Debian: apt-get install etcd-server); this bench needs it"
        );
        return ExitCode::FAILURE;
    };
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let cluster = match EtcdCluster::single() {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("store_etcd: cannot start etcd: {error}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "store_etcd: {n} sequential operations per measurement, {rounds} rounds, {VALUE_BYTES}-byte values; {version}; load average {}",
        load_average()
    );
    let started = Instant::now();
    let results = rt.block_on(async {
        let embedded = EmbeddedStore::open(dir.path().join("bench.redb")).unwrap();
        let etcd = EtcdStore::connect(cluster.config("/paz"))
            .await
            .expect("connect to the bench's etcd");
        let raw = etcd_client::Client::connect(cluster.endpoints(), None)
            .await
            .unwrap();
        let stores: [(Subject, &dyn Store); 2] =
            [(Subject::Embedded, &embedded), (Subject::Etcd, &etcd)];
        let mut results: BTreeMap<(Op, Subject), Vec<Figures>> = BTreeMap::new();
        // Round 0 warms up (connections, files, etcd's first writes) and is not counted.
        for round in 0..=rounds {
            let count = if round == 0 { (n / 10).max(100) } else { n };
            let mut subjects = vec![Subject::Embedded, Subject::Etcd, Subject::Raw];
            if round % 2 == 0 {
                subjects.reverse();
            }
            for op in Op::ALL {
                for &subject in &subjects {
                    let run = match stores.iter().find(|(s, _)| *s == subject) {
                        Some((_, store)) => store_op(*store, op, count).await,
                        None => raw_op(&raw, op, count).await,
                    };
                    if round > 0 {
                        results
                            .entry((op, subject))
                            .or_default()
                            .push(run.figures());
                    }
                }
            }
            if round > 0 {
                eprintln!("round {round}/{rounds} done ({:.0?})", started.elapsed());
            }
        }
        results
    });
    drop(rt);
    drop(cluster);

    let summary = |op: Op, subject: Subject| {
        let figures = &results[&(op, subject)];
        let p50s: Vec<Duration> = figures.iter().map(|f| f.p50).collect();
        let (lo, hi) = (*p50s.iter().min().unwrap(), *p50s.iter().max().unwrap());
        (
            median(&p50s),
            median(&figures.iter().map(|f| f.p99).collect::<Vec<_>>()),
            median(&figures.iter().map(|f| f.ops_per_sec).collect::<Vec<_>>()),
            (lo, hi),
        )
    };
    println!(
        "\nmedians over {rounds} rounds, latencies in µs; ratios: etcd / embedded, and on the raw rows Paz's etcd store / etcd-client\n"
    );
    println!(
        "| operation | store | p50 µs | p99 µs | ops/s | p50 range over rounds | ratio p50 | ratio p99 | ratio ops/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for op in Op::ALL {
        let base = summary(op, Subject::Embedded);
        let etcd = summary(op, Subject::Etcd);
        for subject in [Subject::Embedded, Subject::Etcd, Subject::Raw] {
            let (p50, p99, ops, (lo, hi)) = summary(op, subject);
            let against = match subject {
                Subject::Embedded => None,
                Subject::Etcd => Some(base),
                Subject::Raw => Some(etcd),
            };
            let ratios = match against {
                None => "| | | |".to_owned(),
                // Raw: how much slower Paz's layer is than etcd-client alone.
                Some((bp50, bp99, bops, _)) if subject == Subject::Raw => format!(
                    "| {} | {} | {} |",
                    ratio(bp50.as_secs_f64(), p50.as_secs_f64()),
                    ratio(bp99.as_secs_f64(), p99.as_secs_f64()),
                    ratio(bops, ops),
                ),
                Some((bp50, bp99, bops, _)) => format!(
                    "| {} | {} | {} |",
                    ratio(p50.as_secs_f64(), bp50.as_secs_f64()),
                    ratio(p99.as_secs_f64(), bp99.as_secs_f64()),
                    ratio(ops, bops),
                ),
            };
            println!(
                "| {} | {} | {} | {} | {:.0} | {}–{} {ratios}",
                op.name(),
                subject.name(),
                us(p50),
                us(p99),
                ops,
                us(lo),
                us(hi),
            );
        }
    }
    println!(
        "\ntotal {:.1?}; load average {}",
        started.elapsed(),
        load_average()
    );
    ExitCode::SUCCESS
}
