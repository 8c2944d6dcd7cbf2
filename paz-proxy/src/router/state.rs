//! The routing state the request path reads: host maps, per-backend slots and the
//! power-of-two-choices pick. Built by `Router::apply`, read through `ArcSwap`.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use paz_core::route::RouteTable;
use tokio::sync::{Notify, watch};

use super::metrics::ServiceMetrics;

/// Milliseconds since the first call (the router's coarse clock for ejections).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // +1 so that 0 always means "never ejected".
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// One backend (`ip:port`), kept across table swaps by address: in-flight count, drain state,
/// passive ejection. Hot fields are atomics; nothing here is locked on the request path.
pub(crate) struct BackendSlot {
    /// Unique for the router's lifetime; keys the per-thread connection pools.
    pub id: u64,
    /// `ip:port` as given in the route table.
    pub address: Box<str>,
    /// The parsed address, when the table gave an IP (else it is resolved on connect).
    pub socket_addr: Option<SocketAddr>,
    /// Requests (and upgraded tunnels) in flight to this backend.
    in_flight: AtomicU64,
    /// Callers of `wait_drained` currently waiting: `release` only touches `drained` then.
    waiters: AtomicUsize,
    drained: Notify,
    /// Not Active in any route (draining or removed): takes no new requests.
    draining: AtomicBool,
    /// Tunnels (WebSocket, other upgrades) watch this to close gracefully.
    drain_tx: watch::Sender<bool>,
    /// `now_ms()` until which the backend is ejected; 0 = not ejected.
    ejected_until: AtomicU64,
    /// Consecutive connect failures (grows the ejection time).
    failures: AtomicU32,
}

impl BackendSlot {
    pub fn new(id: u64, address: &str) -> Self {
        let (drain_tx, _) = watch::channel(false);
        BackendSlot {
            id,
            address: address.into(),
            socket_addr: address.parse().ok(),
            in_flight: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            drained: Notify::new(),
            draining: AtomicBool::new(false),
            drain_tx,
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a new request. Returns false (and counts nothing) when the backend started
    /// draining meanwhile: the caller must pick again. The SeqCst pair with
    /// `set_draining` + `in_flight` makes `wait_drained` exact.
    pub fn acquire(&self) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.draining.load(Ordering::SeqCst) {
            self.release();
            return false;
        }
        true
    }

    /// Counts one request or tunnel less; wakes `wait_drained` callers at zero.
    pub fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.waiters.load(Ordering::SeqCst) > 0
        {
            self.drained.notify_waiters();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::SeqCst);
        self.drain_tx.send_if_modified(|d| {
            let changed = *d != draining;
            *d = draining;
            changed
        });
    }

    /// A receiver that turns true when the backend starts draining.
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now
    }

    /// A connect failure: ejects the backend for `base`, doubling per consecutive failure up
    /// to `max`.
    pub fn eject(&self, base: Duration, max: Duration) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let span = base.saturating_mul(1 << failures).min(max);
        let ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until.store(now_ms() + ms, Ordering::Relaxed);
    }

    /// A successful connect: forgets past failures.
    pub fn connected(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Waits until nothing is in flight or `timeout` passes; returns what is left.
    pub async fn wait_drained(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _unregister = Unregister(&self.waiters);
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = self.in_flight();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight();
            }
        }
    }
}

struct Unregister<'a>(&'a AtomicUsize);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The Active backends of one host name, with their weights.
pub(crate) struct RouteEntry {
    pub service: Arc<ServiceMetrics>,
    pub backends: Box<[Arc<BackendSlot>]>,
    /// Weights (> 0), parallel to `backends`.
    pub weights: Box<[u64]>,
    /// Running sums of `weights`.
    cumulative: Box<[u64]>,
}

impl RouteEntry {
    pub fn new(service: Arc<ServiceMetrics>, backends: Vec<(Arc<BackendSlot>, u64)>) -> Self {
        let mut sum = 0;
        let mut cumulative = Vec::with_capacity(backends.len());
        for (_, w) in &backends {
            sum += *w;
            cumulative.push(sum);
        }
        let (backends, weights): (Vec<_>, Vec<_>) = backends.into_iter().unzip();
        RouteEntry {
            service,
            backends: backends.into(),
            weights: weights.into(),
            cumulative: cumulative.into(),
        }
    }

    fn weighted_index(&self) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let r = random() % total;
        // Routes have few backends: a linear scan beats a binary search.
        self.cumulative.iter().position(|c| r < *c).unwrap_or(0)
    }

    /// Power of two choices: two weighted random candidates, the one with fewer requests in
    /// flight per unit of weight wins. Ejected backends are avoided unless every candidate is
    /// ejected (then ejection is ignored: better a try than a certain 503). `exclude` is a
    /// backend that just failed. `None` when no candidate is left.
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let n = self.backends.len();
        match n {
            0 => return None,
            1 => return (exclude != Some(0)).then_some(0),
            _ => {}
        }
        let now = now_ms();
        let usable = |i: usize| Some(i) != exclude && !self.backends[i].is_ejected(now);
        let a = self.weighted_index();
        let b = self.weighted_index();
        match (usable(a), usable(b)) {
            (true, true) => {
                if a == b {
                    return Some(a);
                }
                // load(a)/w(a) <= load(b)/w(b), without division.
                let la = u128::from(self.backends[a].in_flight()) * u128::from(self.weights[b]);
                let lb = u128::from(self.backends[b].in_flight()) * u128::from(self.weights[a]);
                Some(if la <= lb { a } else { b })
            }
            (true, false) => Some(a),
            (false, true) => Some(b),
            (false, false) => {
                let start = random() as usize % n;
                let scan = (0..n).map(|k| (start + k) % n);
                scan.clone()
                    .find(|i| usable(*i))
                    .or_else(|| scan.clone().find(|i| Some(*i) != exclude))
            }
        }
    }
}

/// What the request path reads: the host maps of both scopes and the table they came from.
#[derive(Default)]
pub(crate) struct RoutingState {
    /// Host names not ending in `.paz` (lower case, no trailing dot).
    pub public: HashMap<Box<str>, Arc<RouteEntry>>,
    /// Host names ending in `.paz`.
    pub internal: HashMap<Box<str>, Arc<RouteEntry>>,
    /// The table as applied (what `routes()` returns).
    pub table: RouteTable,
    /// Keeps every backend of the table alive (Active and Draining) so its state survives.
    pub slots: Vec<Arc<BackendSlot>>,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish() | 1
}

/// A fast thread-local xorshift64* generator (load balancing only; not cryptographic).
pub(crate) fn random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}
