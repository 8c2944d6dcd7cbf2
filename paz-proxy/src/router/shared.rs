//! What `Router` and the request path share: [`Shared`], with its registry of backend slots.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use super::config::RouterConfig;
use super::conn::ConnLimits;
use super::metrics::ServiceMetrics;
use super::state::{BackendSlot, RoutingState};

/// What `apply` maintains besides the routing state.
#[derive(Default)]
pub(super) struct Registry {
    /// Every backend slot still referenced (by the table or by requests in flight).
    pub(super) slots: HashMap<Box<str>, Weak<BackendSlot>>,
    /// Metrics per service; kept after a service disappears (counters never go back).
    pub(super) services: BTreeMap<String, Arc<ServiceMetrics>>,
    /// Routes served whatever table is applied (e.g. the API under its own host name).
    pub(super) static_routes: paz_core::RouteTable,
    /// The certificates last set, as given (handed to a successor at an upgrade).
    pub(super) certificates: Vec<crate::tls::CertificatePem>,
    /// The exact names with a certificate (redirected to HTTPS unless their route opts out).
    pub(super) certified: std::collections::HashSet<String>,
    next_id: u64,
}

/// What the request path shares.
pub(crate) struct Shared {
    pub config: RouterConfig,
    pub state: ArcSwap<RoutingState>,
    /// What the router answers itself (ACME challenges, HTTPS redirects).
    pub edge: ArcSwap<super::edge::Edge>,
    /// The certificates TLS listeners serve.
    pub certificates: Arc<crate::tls::Certificates>,
    /// 404s for unknown hosts.
    pub unmatched: AtomicU64,
    /// Client connections counted against the caps.
    pub limits: Arc<ConnLimits>,
    pub(super) registry: Mutex<Registry>,
}

impl Registry {
    /// The slot of `address`: the live one if any, else a new one.
    pub(super) fn slot(&mut self, address: &str) -> Arc<BackendSlot> {
        if let Some(slot) = self.slots.get(address).and_then(Weak::upgrade) {
            return slot;
        }
        self.next_id += 1;
        let slot = Arc::new(BackendSlot::new(self.next_id, address));
        self.slots.insert(address.into(), Arc::downgrade(&slot));
        slot
    }
}
