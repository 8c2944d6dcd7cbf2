//! Per-service request metrics: atomics sharded per thread (no cache-line ping-pong between
//! workers), rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds in nanoseconds.
const BUCKETS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const SHARDS: usize = 4;
/// Status codes 100..=599.
const CODES: usize = 500;

#[repr(align(128))]
struct Shard {
    codes: [AtomicU64; CODES],
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    in_flight: AtomicI64,
}

impl Shard {
    fn new() -> Self {
        Shard {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }
}

/// The counters of one service.
pub(crate) struct ServiceMetrics {
    pub name: Box<str>,
    shards: Box<[Shard]>,
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl ServiceMetrics {
    pub fn new(name: &str) -> Self {
        ServiceMetrics {
            name: name.into(),
            shards: (0..SHARDS).map(|_| Shard::new()).collect(),
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    pub fn start(&self) {
        self.shard().in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.shard().in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let shard = self.shard();
        let code = usize::from(status.clamp(100, 599) - 100);
        shard.codes[code].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS_NS.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn code_count(&self, code: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.codes[code].load(Ordering::Relaxed))
            .sum()
    }

    fn bucket_count(&self, bucket: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.buckets[bucket].load(Ordering::Relaxed))
            .sum()
    }

    /// No request answered and none in flight.
    fn is_untouched(&self) -> bool {
        self.in_flight() <= 0 && (0..=BUCKETS.len()).all(|bucket| self.bucket_count(bucket) == 0)
    }

    fn in_flight(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    fn sum_seconds(&self) -> f64 {
        let ns: u64 = self
            .shards
            .iter()
            .map(|s| s.sum_ns.load(Ordering::Relaxed))
            .sum();
        ns as f64 / 1e9
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the metrics of every service that has had a request (or has one in flight) plus
/// the router-wide counters. A service never requested has no series at all: with thousands
/// of routed services, most idle, the text (read every few seconds for the UI's charts and
/// by Prometheus) stays as small as the traffic.
pub(crate) fn render<'a>(
    services: impl Iterator<Item = &'a ServiceMetrics>,
    unmatched: u64,
) -> String {
    let services: Vec<&ServiceMetrics> = services.filter(|s| !s.is_untouched()).collect();
    let services = services.iter().copied();
    let mut out = String::new();
    // `write!` to a String cannot fail.
    out.push_str("# HELP paz_router_requests_total Requests answered by the router, by service and status code.\n");
    out.push_str("# TYPE paz_router_requests_total counter\n");
    for s in services.clone() {
        let name = label(&s.name);
        for code in 0..CODES {
            let n = s.code_count(code);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "paz_router_requests_total{{service=\"{name}\",code=\"{}\"}} {n}",
                    code + 100
                );
            }
        }
    }
    out.push_str("# HELP paz_router_request_duration_seconds Time from request to the end of the response, by service.\n");
    out.push_str("# TYPE paz_router_request_duration_seconds histogram\n");
    for s in services.clone() {
        let name = label(&s.name);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += s.bucket_count(i);
            let _ = writeln!(
                out,
                "paz_router_request_duration_seconds_bucket{{service=\"{name}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += s.bucket_count(BUCKETS.len());
        let _ = writeln!(
            out,
            "paz_router_request_duration_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "paz_router_request_duration_seconds_sum{{service=\"{name}\"}} {}",
            s.sum_seconds()
        );
        let _ = writeln!(
            out,
            "paz_router_request_duration_seconds_count{{service=\"{name}\"}} {cumulative}"
        );
    }
    out.push_str(
        "# HELP paz_router_in_flight Requests and upgraded connections in flight, by service.\n",
    );
    out.push_str("# TYPE paz_router_in_flight gauge\n");
    for s in services {
        let _ = writeln!(
            out,
            "paz_router_in_flight{{service=\"{}\"}} {}",
            label(&s.name),
            s.in_flight().max(0)
        );
    }
    out.push_str("# HELP paz_router_unmatched_requests_total Requests for a host name no route serves (answered 404).\n");
    out.push_str("# TYPE paz_router_unmatched_requests_total counter\n");
    let _ = writeln!(out, "paz_router_unmatched_requests_total {unmatched}");
    out
}
