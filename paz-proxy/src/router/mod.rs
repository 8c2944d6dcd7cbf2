//! The built-in HTTP/1.1 reverse proxy.
//!
//! Requests are routed by `Host` header (port stripped, case-insensitive) to the Active
//! backends of the matching route. The routing state is rebuilt by [`Router::apply`] and
//! hot-swapped through [`ArcSwap`]: the request path takes no lock. Per-backend state
//! (in-flight counts, passive ejection, drain signal) lives in slots kept across swaps by
//! address; upstream keep-alive connections live in per-thread pools.
//!
//! Two paths serve a client connection:
//! - the *fast path* (`fast`): simple requests (HTTP/1.1, no body, no upgrade — nearly all
//!   traffic) are parsed with `httparse`, re-encoded for the backend and answered with the
//!   backend's bytes, straight from socket to socket within the connection's task;
//! - the *general path*: anything else hands the connection (and the bytes already read) to
//!   hyper's server for the rest of its life; bodies go through hyper's client, upgrades
//!   through hyper's upgrades and a tunnel.
//!
//! Both apply one HTTP/1 policy (`h1`): hop-by-hop headers, `X-Forwarded-*`/`Forwarded`
//! (replaced at the edge unless the peer is a trusted proxy), strict `Host` and body framing
//! (CL+TE, bad lengths → 400), and one response-head parser and chunked decoder for both raw
//! upstream readers. Connections are capped (globally and per client IP) and closed when
//! idle; a request body must arrive whole within [`RouterConfig::body_timeout`] (else 408);
//! [`raise_open_files_limit`] lets a server hold them.
//!
//! By default each listener is served by one single-threaded runtime per CPU; one of them
//! accepts and deals connections to all in turn.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use paz_core::proxy::Proxy;
//! use paz_proxy::{Router, RouterConfig, Scope};
//!
//! let router = Router::new(RouterConfig::default());
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let served = router.serve(listener, Scope::Public, shutdown);
//! router.apply(&paz_core::RouteTable::default()).await?;
//! # served.await?; Ok(()) }
//! ```

mod backend;
mod body;
mod config;
mod conn;
mod connect;
mod edge;
mod fast;
mod h1;
mod handler;
mod host;
mod metrics;
mod pool;
mod serve;
mod shared;
mod state;
mod tunnel;
mod upstream;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use paz_core::proxy::Proxy;
use paz_core::route::{BackendState, INTERNAL_SUFFIX, RouteTable};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Entry points for the fuzz targets (`paz-proxy/fuzz`); not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::mem::MaybeUninit;

    use super::h1;

    /// The fast path's request-head policy; the head it would send upstream.
    pub fn request_head(data: &[u8]) -> Option<Vec<u8>> {
        super::fast::fuzz_request_head(data)
    }

    /// The response-head parser of both raw upstream readers: (status, length, reusable).
    pub fn response_head(data: &[u8], head_request: bool) -> Option<(u16, usize, bool)> {
        let mut headers = [const { MaybeUninit::uninit() }; 128];
        match h1::parse_response(data, head_request, &mut headers) {
            Ok(h1::Head::Final(head, _, _)) => {
                assert!(head.len <= data.len());
                Some((head.status, head.len, head.reusable))
            }
            Ok(h1::Head::Informational(len)) => {
                assert!(len <= data.len());
                None
            }
            Ok(h1::Head::Partial) | Err(_) => None,
        }
    }

    /// The chunked decoder, fed `data` in pieces of `step` bytes: (payload, body length).
    pub fn chunked(data: &[u8], step: usize) -> Option<(Vec<u8>, usize)> {
        let mut scan = h1::ChunkScan::new();
        let mut payload = Vec::new();
        let mut used = 0;
        for piece in data.chunks(step.max(1)) {
            let mut at = 0;
            while at < piece.len() && !scan.is_done() {
                let (framing, n) = scan.next(&piece[at..]).ok()?;
                payload.extend_from_slice(&piece[at + framing..at + framing + n]);
                at += framing + n;
            }
            used += at;
            if scan.is_done() {
                break;
            }
        }
        // The verbatim scanner agrees on where the body ends.
        let mut verbatim = h1::ChunkScan::new();
        if scan.is_done() {
            assert_eq!(verbatim.scan(&data[..used]).ok(), Some(used));
            assert!(verbatim.is_done());
        }
        Some((payload, used))
    }

    /// Host and Content-Length syntax.
    pub fn values(data: &[u8]) -> (bool, Option<u64>) {
        (h1::valid_host(data), h1::parse_content_length(data))
    }
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit, so
/// the router can hold [`RouterConfig::max_connections`] connections (each needs a socket to
/// the client and one to a backend). Call it once at start. Returns the new soft limit.
pub fn raise_open_files_limit() -> Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).map_err(|source| Error::OpenFilesLimit { source })
}
pub use config::{RouterConfig, Scope};
use metrics::ServiceMetrics;
use shared::{Registry, Shared};
use state::{BackendSlot, RouteEntry, RoutingState};

/// The built-in HTTP reverse proxy. See the [module docs](self).
pub struct Router {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Lower case, without a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_internal(host: &str) -> bool {
    host.ends_with(INTERNAL_SUFFIX)
}

impl Router {
    /// A router with an empty route table; it serves nothing until [`Router::serve`].
    pub fn new(config: RouterConfig) -> Arc<Router> {
        Arc::new(Router {
            shared: Arc::new(Shared {
                config,
                state: ArcSwap::from_pointee(RoutingState::default()),
                edge: ArcSwap::from_pointee(edge::Edge::default()),
                certificates: Arc::default(),
                unmatched: AtomicU64::new(0),
                limits: Arc::default(),
                registry: Mutex::new(Registry::default()),
            }),
        })
    }

    /// The configuration the router runs with.
    pub fn config(&self) -> &RouterConfig {
        &self.shared.config
    }

    /// Serves `listener` until `shutdown` turns true (or its sender is dropped), then stops accepting, lets requests in
    /// flight finish (connections close after their current response) and ends. Upgraded
    /// connections are told to close (WebSocket close frame 1001) and end within
    /// [`RouterConfig::websocket_close_grace`] or [`RouterConfig::upgrade_drain_timeout`].
    /// Call it once per listener (public, internal…); all share the route table.
    pub fn serve(
        &self,
        listener: TcpListener,
        scope: Scope,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        serve::serve(self.shared.clone(), listener, scope, shutdown)
    }

    /// Serves `listener` over TLS with the [certificates](Router::set_certificates) (SNI;
    /// HTTP/2 or HTTP/1.1 by ALPN; HTTP/1.1 to the backends, with
    /// `X-Forwarded-Proto: https`). Connections are served on the caller's runtime.
    pub fn serve_tls(
        &self,
        listener: TcpListener,
        scope: Scope,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let config = self.shared.certificates.server_config();
        serve::serve_tls(self.shared.clone(), listener, scope, config, shutdown)
    }

    /// Makes `certificates` the set TLS listeners serve, and redirects plain-HTTP requests
    /// for each exact name among them to HTTPS (on `https_port`; `None` for 443), except
    /// names whose route has `https_redirect: false`. Fails, changing nothing, if one does
    /// not parse.
    pub fn set_certificates(
        &self,
        certificates: &[crate::tls::CertificatePem],
        https_port: Option<u16>,
    ) -> Result<()> {
        self.shared.certificates.replace(certificates)?;
        let mut registry = self.registry();
        registry.certificates = certificates.to_vec();
        registry.certified = certificates
            .iter()
            .flat_map(|c| &c.names)
            .filter(|n| !n.starts_with("*."))
            .map(|n| normalize_host(n))
            .collect();
        self.update_edge_locked(&registry, |edge| {
            edge.https_port = https_port.filter(|p| *p != 443);
        });
        Ok(())
    }

    /// Sends `Strict-Transport-Security: max-age=<seconds>` on every HTTPS answer (`None`:
    /// none, the default): browsers then use HTTPS only for that long.
    pub fn set_hsts(&self, max_age: Option<Duration>) {
        self.update_edge(|edge| {
            edge.hsts = max_age.map(|age| format!("max-age={}", age.as_secs()));
        });
    }

    /// The certificates TLS listeners serve, as last [set](Router::set_certificates).
    pub fn certificates(&self) -> Vec<crate::tls::CertificatePem> {
        self.registry().certificates.clone()
    }

    /// The route table applied last (without the static routes).
    pub fn route_table(&self) -> RouteTable {
        self.shared.state.load().table.clone()
    }

    /// The names TLS listeners have a certificate for.
    pub fn certificate_names(&self) -> Vec<String> {
        self.shared.certificates.names()
    }

    /// Answers the ACME HTTP-01 challenge `token` with `key_authorization` on the plain
    /// listeners (for any host), until [`Router::clear_acme_challenge`].
    pub fn set_acme_challenge(&self, token: &str, key_authorization: &str) {
        self.update_edge(|edge| {
            edge.challenges
                .insert(token.to_owned(), key_authorization.to_owned());
        });
    }

    /// Stops answering challenge `token`.
    pub fn clear_acme_challenge(&self, token: &str) {
        self.update_edge(|edge| {
            edge.challenges.remove(token);
        });
    }

    /// Serves `certificate_pem` (a TLS-ALPN-01 challenge certificate, with `key_pem`) on the
    /// TLS listeners to handshakes for `name` that offer exactly the ALPN protocol
    /// `acme-tls/1`, until [`Router::clear_acme_tls_challenge`]; such connections end after
    /// the handshake. Fails, changing nothing, if it does not parse.
    pub fn set_acme_tls_challenge(
        &self,
        name: &str,
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<()> {
        let _guard = self.registry();
        self.shared
            .certificates
            .set_challenge(&crate::tls::CertificatePem {
                names: vec![name.to_owned()],
                chain_pem: certificate_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            })
    }

    /// Stops serving the TLS-ALPN-01 challenge certificate of `name`.
    pub fn clear_acme_tls_challenge(&self, name: &str) {
        let _guard = self.registry();
        self.shared.certificates.clear_challenge(name);
    }

    fn update_edge(&self, change: impl FnOnce(&mut edge::Edge)) {
        let registry = self.registry();
        self.update_edge_locked(&registry, change);
    }

    /// Changes the edge with the registry locked (it serialises the writers), and derives
    /// the redirected names: those with a certificate, less the routes that opted out.
    fn update_edge_locked(&self, registry: &Registry, change: impl FnOnce(&mut edge::Edge)) {
        // Writers are rare (certificates, challenges, opt-outs): a copy per change is fine.
        let mut edge = (**self.shared.edge.load()).clone();
        change(&mut edge);
        edge.redirect = registry
            .certified
            .iter()
            .filter(|name| !edge.opted_out.contains(*name))
            .cloned()
            .collect();
        self.shared.edge.store(Arc::new(edge));
    }

    /// Routes served beside every applied table (a host name of the table wins), e.g. the
    /// API under its own host name (`--api-domain`). Applies at once.
    pub fn set_static_routes(&self, routes: &RouteTable) -> Result<()> {
        let current = self.shared.state.load().table.clone();
        self.registry().static_routes = routes.clone();
        if let Err(error) = self.apply_table(&current) {
            self.registry().static_routes = RouteTable::default();
            return Err(error);
        }
        Ok(())
    }

    /// Makes `table` the routing state (synchronously; [`Proxy::apply`] calls this).
    ///
    /// Backends keep their state across tables by address. A backend that is no longer
    /// Active in any route (draining or removed) takes no new request, its requests in flight
    /// finish, and its upgraded connections are told to close.
    pub fn apply_table(&self, table: &RouteTable) -> Result<()> {
        let mut registry = self.registry();
        // Validate before changing anything.
        for (host, route) in table.routes.iter().chain(&registry.static_routes.routes) {
            for address in route.backends.keys() {
                let valid = address
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !valid {
                    return Err(Error::InvalidBackend {
                        host: host.clone(),
                        address: address.clone(),
                    });
                }
            }
        }
        let mut merged = table.clone();
        for (host, route) in &registry.static_routes.routes {
            merged
                .routes
                .entry(host.clone())
                .or_insert_with(|| route.clone());
        }
        let mut slots: HashMap<&str, Arc<BackendSlot>> = HashMap::new();
        let mut active: HashMap<&str, bool> = HashMap::new();
        let mut state = RoutingState {
            table: table.clone(),
            ..RoutingState::default()
        };
        for (host, route) in &merged.routes {
            let service = registry
                .services
                .entry(route.service.clone())
                .or_insert_with(|| Arc::new(ServiceMetrics::new(&route.service)))
                .clone();
            let mut backends = Vec::new();
            for (address, backend) in &route.backends {
                let slot = match slots.get(address.as_str()) {
                    Some(slot) => slot.clone(),
                    None => {
                        let slot = registry.slot(address);
                        slots.insert(address, slot.clone());
                        slot
                    }
                };
                let is_active = backend.state == BackendState::Active;
                *active.entry(address).or_default() |= is_active;
                if is_active && backend.weight > 0 {
                    backends.push((slot, u64::from(backend.weight)));
                }
            }
            let entry = Arc::new(RouteEntry::new(service, backends));
            let host = normalize_host(host);
            let map = if is_internal(&host) {
                &mut state.internal
            } else {
                &mut state.public
            };
            map.insert(host.into_boxed_str(), entry);
        }
        // Backends (re)joining are flagged Active before the swap, so no request bounces off
        // them; backends leaving are flagged after it, so a request that sees the flag and
        // picks again finds the new state. `BackendSlot::acquire` closes the remaining race.
        for (address, slot) in &slots {
            if active.get(address).copied().unwrap_or(false) {
                slot.set_draining(false);
            }
        }
        let leaving: Vec<Arc<BackendSlot>> = slots
            .iter()
            .filter(|(address, _)| !active.get(*address).copied().unwrap_or(false))
            .map(|(_, slot)| slot.clone())
            .collect();
        state.slots = slots.into_values().collect();
        let old = self.shared.state.swap(Arc::new(state));
        for slot in &old.slots {
            if self
                .shared
                .state
                .load()
                .slots
                .iter()
                .all(|s| s.id != slot.id)
            {
                slot.set_draining(true);
            }
        }
        for slot in leaving {
            slot.set_draining(true);
        }
        registry.slots.retain(|_, weak| weak.strong_count() > 0);
        // Hosts whose service opted out of the HTTPS redirect (rare: usually none).
        let opted_out: HashSet<String> = merged
            .routes
            .iter()
            .filter(|(_, route)| !route.https_redirect)
            .map(|(host, _)| normalize_host(host))
            .collect();
        if opted_out != self.shared.edge.load().opted_out {
            self.update_edge_locked(&registry, |edge| edge.opted_out = opted_out);
        }
        Ok(())
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `address` is ejected now (it refused a connection moments ago).
    pub fn is_ejected(&self, address: &str) -> bool {
        self.find_slot(address)
            .is_some_and(|slot| slot.is_ejected(state::now_ms()))
    }

    fn find_slot(&self, address: &str) -> Option<Arc<BackendSlot>> {
        self.registry().slots.get(address).and_then(Weak::upgrade)
    }

    /// Requests (and upgraded connections) in flight to `address` right now.
    pub fn in_flight_now(&self, address: &str) -> u64 {
        self.find_slot(address).map_or(0, |slot| slot.in_flight())
    }

    /// The router's metrics in the Prometheus text format (version 0.0.4):
    /// `paz_router_requests_total{service,code}`, `paz_router_request_duration_seconds`
    /// (histogram, by service), `paz_router_in_flight{service}` and
    /// `paz_router_unmatched_requests_total`.
    pub fn metrics_text(&self) -> String {
        let services: Vec<Arc<ServiceMetrics>> =
            self.registry().services.values().cloned().collect();
        metrics::render(
            services.iter().map(|s| &**s),
            self.shared.unmatched.load(Ordering::Relaxed),
        )
    }
}
#[async_trait]
impl Proxy for Router {
    async fn apply(&self, table: &RouteTable) -> paz_core::Result<()> {
        Ok(self.apply_table(table)?)
    }

    async fn routes(&self) -> paz_core::Result<RouteTable> {
        Ok(self.shared.state.load().table.clone())
    }

    async fn in_flight(&self, address: &str) -> paz_core::Result<u64> {
        Ok(self.in_flight_now(address))
    }

    async fn wait_drained(&self, address: &str, timeout: Duration) -> paz_core::Result<u64> {
        Ok(match self.find_slot(address) {
            Some(slot) => slot.wait_drained(timeout).await,
            None => 0,
        })
    }
}
