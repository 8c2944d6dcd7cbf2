//! Backends chosen by config, after vector's component configs: each of [`StoreConfig`],
//! [`SchedulerConfig`] and [`ProxyConfig`] is a plain value that says what it
//! [claims](Claim) (listen addresses, files) and builds itself
//! ([`StoreConfig::build`], [`SchedulerConfig::build`], [`ProxyConfig::build`]). The
//! claims of all of them are checked together ([`check_claims`]) before anything starts, so
//! two settings that want the same port are refused with a message naming both. A new
//! backend (etcd, Swarm, fleet, HAProxy) is one new variant.
//!
//! [`RuntimeConfig::start`] wires a scheduler and a proxy into a running
//! [`paz_runtime::Runtime`], including the `<service>.paz` names (a name server and the
//! router's internal listener on the Paz network's gateway, ports 53 and 80).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use paz_core::scheduler::Scheduler;
use paz_core::{Host, MemoryStore, Paz, Store};
use paz_runtime::{NameServer, Runtime, RuntimeHandle};
use tokio::sync::watch;

use crate::handover::{self, Sockets};

/// What can go wrong turning config into running backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two settings claim the same resource.
    #[error("{first} and {second} both claim {resource}; change one of them")]
    Conflict {
        /// The first setting, e.g. `--api-listen`.
        first: String,
        /// The second setting.
        second: String,
        /// What both want.
        resource: String,
    },
    /// The store cannot be opened.
    #[error("cannot open the store: {0}")]
    Store(#[source] paz_core::Error),
    /// The scheduler cannot be used.
    #[error("{0}; start it, or run with --scheduler none to use the API without containers")]
    Scheduler(#[source] paz_core::Error),
    /// A listener cannot be bound.
    #[error("cannot listen on {address} ({setting}): {source}")]
    Listen {
        /// The setting that asked for it.
        setting: String,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The proxy (HAProxy) cannot be started.
    #[error("the proxy: {0}")]
    Proxy(String),
    /// A TLS setting cannot be used (a certificate file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The runtime cannot be built.
    #[error(transparent)]
    Runtime(#[from] paz_runtime::Error),
    /// `--upgrade`, but no server answers on the upgrade socket.
    #[error(
        "no running paz-server to take over at {path} (is one running with this --data-dir?): {source}"
    )]
    NoServerToTakeOver {
        /// The upgrade socket.
        path: PathBuf,
        /// Why connecting failed.
        #[source]
        source: std::io::Error,
    },
    /// Another server already serves this data dir.
    #[error(
        "another paz-server is running with this data dir (its upgrade socket {path} answers); \
         stop it, or start this one with --upgrade to take over from it"
    )]
    AlreadyRunning {
        /// The upgrade socket.
        path: PathBuf,
    },
    /// The running server and its successor do not agree.
    #[error("upgrade refused: {0}")]
    UpgradeRefused(String),
    /// A socket handed over is not where this server is set to listen.
    #[error(
        "the running server listens on {running} for {setting}, this one is set to {wanted}: \
         upgrade with the same settings"
    )]
    SocketMismatch {
        /// The setting of the socket, e.g. `--router-listen`.
        setting: String,
        /// Where the running server listens.
        running: String,
        /// What this one was given.
        wanted: SocketAddr,
    },
    /// The upgrade exchange broke.
    #[error("upgrade exchange failed: {0}")]
    Upgrade(#[from] std::io::Error),
    /// An upgrade message did not parse.
    #[error("upgrade message unreadable: {0}")]
    UpgradeMessage(#[from] serde_json::Error),
}

/// The transport of a claimed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Where a claimed port is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindIp {
    /// A known address (`0.0.0.0` and `::` are wildcards).
    Known(IpAddr),
    /// A specific address known only at start-up (the Paz network's gateway).
    Gateway,
}

/// A resource one setting needs for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A listening port.
    Listen {
        /// Where.
        ip: BindIp,
        /// The port (0: any free port, never a conflict).
        port: u16,
        /// TCP or UDP.
        transport: Transport,
    },
    /// A file or directory used exclusively.
    Path(PathBuf),
}

impl Claim {
    /// A TCP listener on `address`.
    pub fn tcp(address: SocketAddr) -> Self {
        Claim::Listen {
            ip: BindIp::Known(address.ip()),
            port: address.port(),
            transport: Transport::Tcp,
        }
    }

    /// Whether two claims cannot both be had.
    pub fn conflicts_with(&self, other: &Claim) -> bool {
        match (self, other) {
            (Claim::Path(a), Claim::Path(b)) => a == b,
            (
                Claim::Listen {
                    ip: a,
                    port: p,
                    transport: t,
                },
                Claim::Listen {
                    ip: b,
                    port: q,
                    transport: u,
                },
            ) => {
                if p != q || t != u || *p == 0 {
                    return false;
                }
                let wildcard = |ip: &BindIp| matches!(ip, BindIp::Known(ip) if ip.is_unspecified());
                match (a, b) {
                    (BindIp::Known(x), BindIp::Known(y)) => x == y || wildcard(a) || wildcard(b),
                    (BindIp::Gateway, BindIp::Gateway) => true,
                    // The gateway is some specific address: only a wildcard surely overlaps.
                    _ => wildcard(a) || wildcard(b),
                }
            }
            _ => false,
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Listen {
                ip,
                port,
                transport,
            } => {
                let transport = match transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp",
                };
                match ip {
                    BindIp::Known(ip) => write!(f, "{transport} {}", SocketAddr::new(*ip, *port)),
                    BindIp::Gateway => write!(f, "{transport} port {port} of the network gateway"),
                }
            }
            Claim::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Refuses claims that overlap, naming the two settings that made them.
pub fn check_claims(claims: &[(String, Claim)]) -> Result<(), ConfigError> {
    for (i, (first, a)) in claims.iter().enumerate() {
        for (second, b) in &claims[i + 1..] {
            if a.conflicts_with(b) {
                return Err(ConfigError::Conflict {
                    first: first.clone(),
                    second: second.clone(),
                    resource: a.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// The embedded redb file (the single-machine default).
    #[cfg(feature = "embedded")]
    Embedded {
        /// The store file.
        path: PathBuf,
    },
    /// Memory only: everything is lost at exit (tests and demos).
    Memory,
    /// An etcd cluster shared by several replicas (`etcd://h1:2379,h2:2379`).
    #[cfg(feature = "etcd")]
    Etcd(Box<paz_etcd::EtcdConfig>),
}

impl StoreConfig {
    /// Whether several processes share the state (then they elect a leader to run the
    /// runtime, and routers follow the announcements).
    pub fn is_shared(&self) -> bool {
        match self {
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(_) => true,
            _ => false,
        }
    }

    /// Opens the store: [`StoreConfig::build`], and connects to etcd for
    /// [`StoreConfig::Etcd`].
    pub async fn open(&self) -> Result<Arc<dyn Store>, ConfigError> {
        match self {
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(config) => paz_etcd::EtcdStore::connect((**config).clone())
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>)
                .map_err(|e| ConfigError::Store(e.into())),
            _ => self.build(),
        }
    }

    /// What it claims.
    pub fn claims(&self) -> Vec<(String, Claim)> {
        match self {
            #[cfg(feature = "embedded")]
            StoreConfig::Embedded { path } => vec![("the store".into(), Claim::Path(path.clone()))],
            StoreConfig::Memory => Vec::new(),
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(_) => Vec::new(),
        }
    }

    /// Opens the store.
    pub fn build(&self) -> Result<Arc<dyn Store>, ConfigError> {
        match self {
            #[cfg(feature = "embedded")]
            StoreConfig::Embedded { path } => match paz_store::EmbeddedStore::open(path) {
                Ok(store) => Ok(Arc::new(store)),
                Err(error) => {
                    // A file another process holds open is the usual cause of `Open`.
                    let hint = match &error {
                        paz_store::Error::Open { .. } => {
                            "; is another paz-server using this data dir? (--data-dir / PAZ_DATA_DIR)"
                        }
                        _ => "",
                    };
                    Err(ConfigError::Store(paz_core::Error::store(
                        paz_core::PortErrorKind::Unavailable,
                        format!("{error}{hint}"),
                    )))
                }
            },
            StoreConfig::Memory => Ok(Arc::new(MemoryStore::new())),
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(_) => Err(ConfigError::Store(paz_core::Error::store(
                paz_core::PortErrorKind::Invalid,
                "etcd is opened with StoreConfig::open (it connects)",
            ))),
        }
    }

    /// Opens the store, trying again for up to `timeout` while another process still holds
    /// it (the server an upgrade takes over, finishing its last requests).
    pub async fn build_when_free(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Arc<dyn Store>, ConfigError> {
        if self.is_shared() {
            // Nothing to wait for: several processes use it at once.
            return self.open().await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.build() {
                Ok(store) => return Ok(store),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "the store is still held; waiting");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// What runs the instances.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SchedulerConfig {
    /// Nothing: the engine records services, releases and deployments, but no container runs.
    None,
    /// The local Docker Engine.
    #[cfg(feature = "docker")]
    Docker(paz_docker::DockerConfig),
    /// Docker Swarm, through a manager's Engine API: Swarm places one-replica services on
    /// its nodes (host-mode ports); Paz gates, drains and routes.
    #[cfg(feature = "docker")]
    Swarm(paz_docker::SwarmConfig),
    /// CoreOS fleet, through its v1 HTTP API: one unit (`docker run`) per instance on the
    /// machine fleet's engine picks; Paz gates, drains and routes.
    #[cfg(feature = "fleet")]
    Fleet(paz_fleet::FleetConfig),
}

/// How traffic reaches the instances.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyConfig {
    /// The built-in router.
    Builtin {
        /// Where it takes public traffic.
        listen: SocketAddr,
    },
    /// HAProxy (2.6+), started and supervised by Paz and driven through its runtime API:
    /// plain HTTP on `listen`; no HTTPS and no `<service>.paz` names (the built-in router's).
    Haproxy(paz_proxy::HaproxyConfig),
}

impl SchedulerConfig {
    /// What it claims (the Docker socket is shared by design, so nothing).
    pub fn claims(&self) -> Vec<(String, Claim)> {
        Vec::new()
    }

    /// Whether it places instances on many hosts (Swarm, fleet): the runtime then keeps its
    /// hosts in the store (`paz hosts`), and `<service>.paz` is not served (instances are
    /// not on one bridge network with paz-server).
    pub fn is_multi_host(&self) -> bool {
        match self {
            SchedulerConfig::None => false,
            #[cfg(feature = "docker")]
            SchedulerConfig::Docker(_) => false,
            #[cfg(feature = "docker")]
            SchedulerConfig::Swarm(_) => true,
            #[cfg(feature = "fleet")]
            SchedulerConfig::Fleet(_) => true,
        }
    }

    /// Connects to the scheduler for `cluster` (the id kept in the store: the scheduler
    /// touches only that cluster's instances); `None` for [`SchedulerConfig::None`].
    /// Instances get `dns` as their name servers (the internal names' address, once known).
    pub async fn build(
        &self,
        dns: &[String],
        cluster: &str,
    ) -> Result<Option<BuiltScheduler>, ConfigError> {
        #[cfg(not(feature = "docker"))]
        let _ = (dns, cluster);
        match self {
            SchedulerConfig::None => Ok(None),
            #[cfg(feature = "docker")]
            SchedulerConfig::Docker(docker) => {
                let scheduler = paz_docker::DockerScheduler::connect(paz_docker::DockerConfig {
                    dns: dns.to_vec(),
                    cluster: cluster.to_owned(),
                    ..docker.clone()
                })
                .await
                .map_err(|e| ConfigError::Scheduler(e.into()))?;
                Ok(Some(BuiltScheduler {
                    gateway: scheduler.network_gateway(),
                    subnet: scheduler.network_subnet(),
                    scheduler: Arc::new(scheduler),
                }))
            }
            #[cfg(feature = "docker")]
            SchedulerConfig::Swarm(swarm) => {
                let scheduler = paz_docker::SwarmScheduler::connect(paz_docker::SwarmConfig {
                    cluster: cluster.to_owned(),
                    dns: if dns.is_empty() {
                        swarm.dns.clone()
                    } else {
                        dns.to_vec()
                    },
                    ..swarm.clone()
                })
                .await
                .map_err(|e| ConfigError::Scheduler(e.into()))?;
                Ok(Some(BuiltScheduler::across_hosts(Arc::new(scheduler))))
            }
            #[cfg(feature = "fleet")]
            SchedulerConfig::Fleet(fleet) => {
                // As with Swarm: the runtime's name servers, when given, replace the config's.
                let servers = if dns.is_empty() {
                    fleet.dns.clone()
                } else {
                    dns.iter()
                        .map(|server| {
                            server.parse().map_err(|_| {
                                ConfigError::Scheduler(paz_core::Error::scheduler(
                                    paz_core::PortErrorKind::Invalid,
                                    format!("name server {server:?} is not an IP address"),
                                ))
                            })
                        })
                        .collect::<Result<_, _>>()?
                };
                let scheduler = paz_fleet::FleetScheduler::connect(paz_fleet::FleetConfig {
                    cluster: cluster.to_owned(),
                    dns: servers,
                    ..fleet.clone()
                })
                .await
                .map_err(|e| ConfigError::Scheduler(e.into()))?;
                Ok(Some(BuiltScheduler::across_hosts(Arc::new(scheduler))))
            }
        }
    }
}

/// A connected scheduler.
pub struct BuiltScheduler {
    /// The scheduler.
    pub scheduler: Arc<dyn Scheduler>,
    /// The address of the instances' network gateway on this host, where `<service>.paz` can
    /// be served to them (Docker's network gateway).
    pub gateway: Option<IpAddr>,
    /// The IPv4 subnet of that network, as (network, prefix length): the only clients the
    /// name server answers.
    pub subnet: Option<(Ipv4Addr, u8)>,
}

impl BuiltScheduler {
    /// A scheduler of many hosts (Swarm, fleet): no one network shared with paz-server.
    #[cfg(any(feature = "docker", feature = "fleet"))]
    fn across_hosts(scheduler: Arc<dyn Scheduler>) -> Self {
        BuiltScheduler {
            scheduler,
            gateway: None,
            subnet: None,
        }
    }
}

impl ProxyConfig {
    /// What it claims.
    pub fn claims(&self) -> Vec<(String, Claim)> {
        match self {
            ProxyConfig::Builtin { listen } => {
                vec![("the router (--router-listen)".into(), Claim::tcp(*listen))]
            }
            ProxyConfig::Haproxy(haproxy) => {
                vec![(
                    "HAProxy (--router-listen)".into(),
                    Claim::tcp(haproxy.listen),
                )]
            }
        }
    }

    /// Builds the proxy on its public listener (bound, or taken from `sockets` at an
    /// upgrade); it accepts nothing until [`Edge::serve`].
    pub async fn build(&self, sockets: &Sockets) -> Result<Edge, ConfigError> {
        match self {
            ProxyConfig::Builtin { listen } => {
                let listener = sockets.tcp(handover::ROUTER, *listen).await?;
                let address = listener
                    .local_addr()
                    .map_err(|source| ConfigError::Listen {
                        setting: "--router-listen".into(),
                        address: *listen,
                        source,
                    })?;
                let router = paz_proxy::router::Router::new(Default::default());
                let mut edge = Edge {
                    health: Arc::new(paz_proxy::health::HttpHealthChecker::new()),
                    address,
                    tls_address: None,
                    https_port: None,
                    pending: vec![Pending {
                        listener,
                        scope: paz_proxy::router::Scope::Public,
                        tls: false,
                    }],
                    listeners: Vec::new(),
                    internal: false,
                    proxy: router.clone(),
                    router: Some(router),
                    haproxy: None,
                    haproxy_supervisor: None,
                };
                // `<service>.paz` traffic taken over at an upgrade is served from the start.
                if let Some(internal) = sockets.inherited_tcp(handover::INTERNAL_HTTP)? {
                    edge.add_internal(internal);
                }
                Ok(edge)
            }
            ProxyConfig::Haproxy(config) => {
                // Stopped when the edge is served and shut down, or dropped unserved.
                let (stop, stopped) = watch::channel(false);
                let (haproxy, task) = paz_proxy::Haproxy::start(config.clone(), stopped)
                    .await
                    .map_err(|e| ConfigError::Proxy(e.to_string()))?;
                Ok(Edge {
                    health: Arc::new(paz_proxy::health::HttpHealthChecker::new()),
                    address: haproxy.address(),
                    tls_address: None,
                    https_port: None,
                    pending: Vec::new(),
                    listeners: Vec::new(),
                    internal: false,
                    proxy: haproxy.clone(),
                    router: None,
                    haproxy: Some(haproxy),
                    haproxy_supervisor: Some((stop, task)),
                })
            }
        }
    }

    /// Whether this is the built-in router (HTTPS, `<service>.paz` and upgrades need it).
    pub fn is_builtin(&self) -> bool {
        matches!(self, ProxyConfig::Builtin { .. })
    }
}

/// Why HTTPS is refused with HAProxy.
const HAPROXY_NO_TLS: &str = "HTTPS (--tls-listen) is served by the built-in router only; \
     with --proxy haproxy terminate TLS in front of HAProxy, or use --proxy builtin";

/// A listener of the edge not served yet.
struct Pending {
    listener: tokio::net::TcpListener,
    scope: paz_proxy::router::Scope,
    tls: bool,
}

/// The proxy at the edge (the built-in router with its listeners, or a supervised HAProxy):
/// built first (before the store, at an upgrade), served once its route table is known
/// ([`Edge::serve`]).
pub struct Edge {
    /// The proxy the runtime drives.
    proxy: Arc<dyn paz_core::proxy::Proxy>,
    /// The built-in router, when it is the proxy.
    router: Option<Arc<paz_proxy::router::Router>>,
    /// HAProxy, when it is the proxy.
    haproxy: Option<Arc<paz_proxy::Haproxy>>,
    /// HAProxy's stop signal and supervisor, until [`Edge::serve`] ties them to shutdown.
    haproxy_supervisor: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    health: Arc<dyn paz_core::health::HealthChecker>,
    address: SocketAddr,
    tls_address: Option<SocketAddr>,
    https_port: Option<u16>,
    pending: Vec<Pending>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Whether it has a listener for `<service>.paz`.
    internal: bool,
}

impl fmt::Debug for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edge")
            .field("address", &self.address)
            .field("tls_address", &self.tls_address)
            .field("serving", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// The built-in router, unless the proxy is HAProxy.
    pub fn router(&self) -> Option<&Arc<paz_proxy::router::Router>> {
        self.router.as_ref()
    }

    /// HAProxy, when it is the proxy.
    pub fn haproxy(&self) -> Option<&Arc<paz_proxy::Haproxy>> {
        self.haproxy.as_ref()
    }

    /// The proxy's metrics in the Prometheus text format (the built-in router's; none from
    /// HAProxy yet).
    fn metrics(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        match self.router.clone() {
            Some(router) => Arc::new(move || router.metrics_text()),
            None => Arc::new(String::new),
        }
    }

    /// Where it takes public traffic.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where it serves HTTPS, when it does.
    pub fn tls_address(&self) -> Option<SocketAddr> {
        self.tls_address
    }

    /// Starts accepting on every listener not served yet; they serve until `shutdown`.
    pub fn serve(&mut self, shutdown: &watch::Receiver<bool>) {
        if let Some((stop, supervisor)) = self.haproxy_supervisor.take() {
            // HAProxy serves from its start; it stops (gracefully) at shutdown.
            let mut shutdown = shutdown.clone();
            self.listeners.push(tokio::spawn(async move {
                let _ = shutdown.wait_for(|s| *s).await;
                let _ = stop.send(true);
                if let Err(error) = supervisor.await
                    && error.is_panic()
                {
                    tracing::error!(%error, "the HAProxy supervisor panicked");
                }
            }));
        }
        let Some(router) = &self.router else {
            return;
        };
        for pending in self.pending.drain(..) {
            let task = if pending.tls {
                router.serve_tls(pending.listener, pending.scope, shutdown.clone())
            } else {
                router.serve(pending.listener, pending.scope, shutdown.clone())
            };
            self.listeners.push(task);
        }
    }

    /// Serves the certificates of an upgrade's predecessor until the store's are loaded.
    pub fn set_certificates(
        &self,
        certificates: &[paz_proxy::CertificatePem],
    ) -> Result<(), ConfigError> {
        match &self.router {
            Some(router) => router
                .set_certificates(certificates, self.https_port)
                .map_err(|e| ConfigError::Tls(e.to_string())),
            None if certificates.is_empty() => Ok(()),
            None => Err(ConfigError::Tls(HAPROXY_NO_TLS.into())),
        }
    }

    fn add_internal(&mut self, listener: tokio::net::TcpListener) {
        self.internal = true;
        self.pending.push(Pending {
            listener,
            scope: paz_proxy::router::Scope::Internal,
            tls: false,
        });
    }

    fn serves_internal(&self) -> bool {
        self.internal
    }

    /// Adds the HTTPS listener as `tls` says, with the file certificates, HSTS and the
    /// API's host name.
    async fn add_tls(&mut self, tls: &TlsConfig, sockets: &Sockets) -> Result<(), ConfigError> {
        let Some(router) = self.router.clone() else {
            return Err(ConfigError::Tls(HAPROXY_NO_TLS.into()));
        };
        let listener = sockets.tcp(handover::TLS, tls.listen).await?;
        let address = listener
            .local_addr()
            .map_err(|source| ConfigError::Listen {
                setting: "--tls-listen".into(),
                address: tls.listen,
                source,
            })?;
        self.https_port = Some(address.port());
        self.tls_address = Some(address);
        self.set_certificates(&tls.files)?;
        router.set_hsts(tls.hsts);
        if let Some((host, api)) = &tls.api {
            let mut routes = paz_core::RouteTable::default();
            let mut route = paz_core::route::Route::new("paz-api");
            route
                .backends
                .insert(api.to_string(), paz_core::route::Backend::default());
            routes.routes.insert(host.clone(), route);
            router
                .set_static_routes(&routes)
                .map_err(|e| ConfigError::Tls(e.to_string()))?;
        }
        self.pending.push(Pending {
            listener,
            scope: paz_proxy::router::Scope::Public,
            tls: true,
        });
        Ok(())
    }

    /// With ACME: a certificate manager (spawned) that keeps the certificates of every
    /// public name, served beside the file certificates.
    fn manage_certificates(
        &self,
        tls: &TlsConfig,
        paz: &Paz,
        shutdown: &watch::Receiver<bool>,
    ) -> Option<paz_acme::CertManager> {
        let acme = tls.acme.as_ref()?;
        let router = self.router.clone()?;
        let files = tls.files.clone();
        let port = self.https_port;
        let publish: paz_acme::Publish = {
            let router = router.clone();
            Arc::new(move |managed: &[paz_core::engine::Certificate]| {
                let mut all = files.clone();
                all.extend(managed.iter().map(|c| paz_proxy::CertificatePem {
                    names: vec![c.name.clone()],
                    chain_pem: c.chain_pem.clone(),
                    key_pem: c.key_pem.clone(),
                }));
                if let Err(error) = router.set_certificates(&all, port) {
                    tracing::error!(%error, "cannot serve the certificates");
                }
            })
        };
        let mut acme = acme.clone();
        acme.extra_names
            .extend(tls.api.iter().map(|(host, _)| host.clone()));
        let manager = paz_acme::CertManager::new(
            paz.clone(),
            acme,
            Arc::new(RouterChallenges(router)),
            publish,
        );
        tokio::spawn(supervise_certificates(manager.clone(), shutdown.clone()));
        Some(manager)
    }
}

/// The runtime's backends: a scheduler, a proxy and whether containers get `<service>.paz`.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// What runs the instances.
    pub scheduler: SchedulerConfig,
    /// How traffic reaches them.
    pub proxy: ProxyConfig,
    /// Serve `<service>.paz` to containers (a name server on the gateway's port 53, the
    /// router's internal listener on its port 80).
    pub internal_names: bool,
    /// Many hosts: the address of the `<service>.paz` names on every host. A router-only
    /// process serves them there (a name server on port 53, the internal listener on port
    /// 80); Swarm and fleet instances get it as their name server. Docker's default bridge
    /// gateway (`172.17.0.1`) is such an address: the same on every host, reachable from its
    /// containers. `None`: no `<service>.paz` across hosts.
    pub internal_names_ip: Option<Ipv4Addr>,
    /// HTTPS at the router, if wanted.
    pub tls: Option<TlsConfig>,
}

/// HTTPS at the built-in router: a listener, certificates from files and/or from an ACME
/// CA (kept in the store, renewed; HTTP-01 answered by the router's plain listener, or
/// TLS-ALPN-01 by its TLS listener), and HSTS. Hosts with a certificate are redirected from
/// HTTP to HTTPS unless their service opts out.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where HTTPS is served (`--tls-listen`), e.g. `0.0.0.0:443`.
    pub listen: SocketAddr,
    /// Certificates given as files, served as they are.
    pub files: Vec<paz_proxy::CertificatePem>,
    /// Certificates from an ACME CA for every public name, if set.
    pub acme: Option<paz_acme::ManagerConfig>,
    /// `Strict-Transport-Security` max-age on HTTPS answers, if any.
    pub hsts: Option<std::time::Duration>,
    /// The API served through the router under a host name of its own (`--api-domain`),
    /// with a certificate like the services': (host name, the API's address).
    pub api: Option<(String, SocketAddr)>,
}

/// The router answers the CA's challenges: HTTP-01 on its plain listener, TLS-ALPN-01 on
/// its TLS listener.
struct RouterChallenges(Arc<paz_proxy::router::Router>);

impl paz_acme::Challenges for RouterChallenges {
    fn publish(&self, token: &str, key_authorization: &str) {
        self.0.set_acme_challenge(token, key_authorization);
    }
    fn withdraw(&self, token: &str) {
        self.0.clear_acme_challenge(token);
    }
    fn publish_tls_alpn(&self, name: &str, certificate_pem: &str, key_pem: &str) {
        if let Err(error) = self
            .0
            .set_acme_tls_challenge(name, certificate_pem, key_pem)
        {
            // The CA's validation then fails, and the order with it (retried with backoff).
            tracing::error!(%name, %error, "cannot serve the tls-alpn-01 certificate");
        }
    }
    fn withdraw_tls_alpn(&self, name: &str) {
        self.0.clear_acme_tls_challenge(name);
    }
}

/// A started runtime and what the server shows of it.
pub struct Started {
    /// The running runtime.
    pub runtime: RuntimeHandle,
    /// Where the router takes public traffic.
    pub router_address: SocketAddr,
    /// The router's metrics in the Prometheus text format.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// The router's listener tasks: they end once shutdown is signalled and in-flight
    /// requests are done.
    pub listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Where the router serves HTTPS, when it does.
    pub tls_address: Option<SocketAddr>,
    /// The ACME certificate manager, when certificates come from a CA (its problems show
    /// in `paz status`).
    pub certificates: Option<paz_acme::CertManager>,
    /// The built-in router (what an upgrade hands over: its route table and certificates);
    /// `None` with HAProxy.
    pub router: Option<Arc<paz_proxy::router::Router>>,
    /// HAProxy, when it is the proxy (its health shows in `paz status`).
    pub haproxy: Option<Arc<paz_proxy::Haproxy>>,
}

/// How long a starting server waits for the first health checks of the running instances
/// before it serves the routes it has.
pub const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl RuntimeConfig {
    /// What it claims.
    pub fn claims(&self) -> Vec<(String, Claim)> {
        let mut claims = self.scheduler.claims();
        claims.extend(self.proxy.claims());
        if let Some(tls) = &self.tls {
            claims.push(("HTTPS (--tls-listen)".into(), Claim::tcp(tls.listen)));
        }
        if self.internal_names
            && self.proxy.is_builtin()
            && !matches!(self.scheduler, SchedulerConfig::None)
            && !self.scheduler.is_multi_host()
        {
            for (port, transport) in [(80, Transport::Tcp), (53, Transport::Udp)] {
                claims.push((
                    "internal names (--internal-names)".into(),
                    Claim::Listen {
                        ip: BindIp::Gateway,
                        port,
                        transport,
                    },
                ));
            }
        }
        claims
    }

    /// Many hosts: the name server of the instances, the address of the `<service>.paz`
    /// names served by the router on each host (`--internal-names-ip`); else none.
    fn hosts_dns(&self) -> Vec<String> {
        match self.internal_names_ip {
            Some(ip) if self.internal_names && self.scheduler.is_multi_host() => {
                vec![ip.to_string()]
            }
            _ => Vec::new(),
        }
    }

    /// Builds the scheduler and the proxy, serves the `<service>.paz` names on the
    /// scheduler's gateway (when asked and possible), spawns the runtime and, once the
    /// routes of the running instances are restored, serves the router; `None` with
    /// [`SchedulerConfig::None`].
    pub async fn start(
        &self,
        paz: Paz,
        host: Option<Host>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<Started>, ConfigError> {
        let sockets = Sockets::new();
        let Some(edge) = self.edge(&sockets).await? else {
            return Ok(None);
        };
        self.start_on(edge, paz, host, &sockets, shutdown)
            .await
            .map(Some)
    }

    /// The router and its listeners (bound, or taken from `sockets` at an upgrade), HTTPS
    /// included; nothing is accepted yet. `None` with [`SchedulerConfig::None`].
    pub async fn edge(&self, sockets: &Sockets) -> Result<Option<Edge>, ConfigError> {
        if matches!(self.scheduler, SchedulerConfig::None) {
            return Ok(None);
        }
        let mut edge = self.proxy.build(sockets).await?;
        if let Some(tls) = &self.tls {
            edge.add_tls(tls, sockets).await?;
        }
        Ok(Some(edge))
    }

    /// [`RuntimeConfig::start`] on an `edge` built by [`RuntimeConfig::edge`] (and perhaps
    /// serving already, at an upgrade): the runtime takes the routes over once every running
    /// instance has been checked, for at most [`RESTORE_TIMEOUT`]; then the edge serves.
    pub async fn start_on(
        &self,
        mut edge: Edge,
        paz: Paz,
        host: Option<Host>,
        sockets: &Sockets,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Started, ConfigError> {
        let cluster = paz
            .claim_cluster_id(&new_cluster_id())
            .await
            .map_err(ConfigError::Store)?;
        tracing::info!(%cluster, "this Paz cluster's id (containers are labelled paz.cluster={cluster})");
        let Some(probe) = self.scheduler.build(&self.hosts_dns(), &cluster).await? else {
            return Err(ConfigError::Scheduler(paz_core::Error::scheduler(
                paz_core::PortErrorKind::Invalid,
                "no scheduler is configured",
            )));
        };
        let mut names = None;
        let mut scheduler = probe.scheduler;
        if self.internal_names && edge.router.is_none() {
            tracing::warn!(
                "internal names (<service>.paz) are served by the built-in router only; disabled with HAProxy"
            );
        } else if self.internal_names && self.scheduler.is_multi_host() {
            match self.internal_names_ip {
                Some(ip) => tracing::info!(
                    %ip,
                    "internal names: instances resolve <service>.paz through the router-only process on their host"
                ),
                None => tracing::info!(
                    "internal names across hosts need --internal-names-ip (served by a router-only process on each host)"
                ),
            }
        } else if self.internal_names {
            match probe.gateway {
                Some(IpAddr::V4(ip)) => {
                    match internal_names(ip, probe.subnet, sockets, &edge).await {
                        Ok((server, listener)) => {
                            // Instances resolve through the gateway from now on.
                            if let Some(with_dns) =
                                self.scheduler.build(&[ip.to_string()], &cluster).await?
                            {
                                scheduler = with_dns.scheduler;
                            }
                            names = Some(server);
                            if let Some(listener) = listener {
                                edge.add_internal(listener);
                            }
                            tracing::info!(%ip, "internal names: <service>.paz resolves to the router on the Paz network");
                        }
                        Err(error) => tracing::warn!(%error, %ip, "internal names disabled"),
                    }
                }
                _ => tracing::warn!(
                    "internal names disabled: the instances' network has no IPv4 gateway"
                ),
            }
        }
        let certificates = match &self.tls {
            Some(tls) => edge.manage_certificates(tls, &paz, &shutdown),
            None => None,
        };
        let mut builder = Runtime::builder(paz)
            .scheduler(scheduler)
            .proxy(edge.proxy.clone())
            .health(edge.health.clone());
        if let Some(host) = host {
            builder = builder.host(host);
        }
        if let Some(names) = names {
            builder = builder.name_server(names);
        }
        if self.scheduler.is_multi_host() {
            builder = builder.host_inventory();
        }
        let runtime = builder.build()?.spawn(shutdown.clone());
        // Routes for what runs before the first request: no 404 for a running service.
        let started = std::time::Instant::now();
        if runtime.wait_restored(RESTORE_TIMEOUT).await {
            tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                "routes restored from the running instances"
            );
        }
        edge.serve(&shutdown);
        Ok(Started {
            runtime,
            router_address: edge.address,
            metrics: edge.metrics(),
            listeners: edge.listeners,
            tls_address: edge.tls_address,
            certificates,
            router: edge.router,
            haproxy: edge.haproxy,
        })
    }
}

/// A replica of a cluster on a shared store: how it campaigns and what it tells the others.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How long the leader's lease lives without renewal: a dead leader is replaced within
    /// it ([`paz_runtime::leader::DEFAULT_LEADER_TTL`] by default).
    pub leader_ttl: std::time::Duration,
    /// Where this replica's API listens (shown to the others in `paz status`).
    pub api: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            leader_ttl: paz_runtime::leader::DEFAULT_LEADER_TTL,
            api: None,
        }
    }
}

/// A replica started by [`RuntimeConfig::start_cluster`]: its router follows the
/// announcements, and it runs the runtime while it leads.
pub struct ClusterStarted {
    /// This replica's record.
    pub replica: paz_runtime::leader::Replica,
    /// The runtime's reconciler while this replica leads, `None` otherwise.
    pub leading: watch::Receiver<Option<paz_runtime::Reconciler>>,
    /// The instances the leader announced (what a replica that does not lead shows).
    pub announced: paz_runtime::announce::Announced,
    /// Where the router takes public traffic.
    pub router_address: SocketAddr,
    /// The router's metrics in the Prometheus text format.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// The router's listener tasks.
    pub listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Where the router serves HTTPS, when it does.
    pub tls_address: Option<SocketAddr>,
    /// The built-in router; `None` with HAProxy.
    pub router: Option<Arc<paz_proxy::router::Router>>,
    /// HAProxy, when it is the proxy.
    pub haproxy: Option<Arc<paz_proxy::Haproxy>>,
    /// The elections and terms; ends after shutdown, once a running term has stopped (and
    /// resigned, so another replica leads at once).
    pub task: tokio::task::JoinHandle<()>,
}

impl RuntimeConfig {
    /// Starts a replica on a shared store (etcd): registers it, serves the router from the
    /// announcements (once the first table is applied), and campaigns; while it leads it runs
    /// the runtime on a store and scheduler guarded by its term, announcing the instances.
    /// ACME and the `<service>.paz` names are not run in a cluster yet.
    pub async fn start_cluster(
        &self,
        mut edge: Edge,
        paz: Paz,
        host: Option<Host>,
        cluster: &ClusterConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ClusterStarted, ConfigError> {
        use paz_runtime::leader::{Election, ReplicaRole, this_process};
        if self.tls.as_ref().is_some_and(|tls| tls.acme.is_some()) {
            return Err(ConfigError::Tls(
                "ACME certificates are not issued by replicas on a shared store yet; give \
                 certificate files (--tls-cert/--tls-key)"
                    .into(),
            ));
        }
        let cluster_id = paz
            .claim_cluster_id(&new_cluster_id())
            .await
            .map_err(ConfigError::Store)?;
        tracing::info!(cluster = %cluster_id, "this Paz cluster's id (containers are labelled paz.cluster={cluster_id})");
        // Fails early when the scheduler is not reachable, as a single server does.
        if self.scheduler.build(&[], &cluster_id).await?.is_none() {
            return Err(ConfigError::Scheduler(paz_core::Error::scheduler(
                paz_core::PortErrorKind::Invalid,
                "no scheduler is configured",
            )));
        }
        let store = paz.store().clone();
        let replica = this_process(
            ReplicaRole::Server,
            cluster.api.clone(),
            Some(edge.address.to_string()),
        );
        let announced = edge.serve_announced(&store, &replica, &shutdown).await;
        let (leading_tx, leading) = watch::channel(None);
        let election = Election::new(store, replica.clone(), cluster.leader_ttl);
        let election = Arc::new(election);
        let terms = Terms {
            config: self.clone(),
            paz,
            host,
            cluster_id,
            proxy: edge.proxy.clone(),
            health: edge.health.clone(),
        };
        let stopping = shutdown.clone();
        let task = tokio::spawn(supervise("elections", stopping, move || {
            lead(
                election.clone(),
                terms.clone(),
                leading_tx.clone(),
                shutdown.clone(),
            )
        }));
        Ok(ClusterStarted {
            replica,
            leading,
            announced,
            router_address: edge.address,
            metrics: edge.metrics(),
            listeners: edge.listeners,
            tls_address: edge.tls_address,
            router: edge.router,
            haproxy: edge.haproxy,
            task,
        })
    }
}

/// What a term's runtime is made of.
#[derive(Clone)]
struct Terms {
    config: RuntimeConfig,
    paz: Paz,
    host: Option<Host>,
    cluster_id: String,
    proxy: Arc<dyn paz_core::proxy::Proxy>,
    health: Arc<dyn paz_core::health::HealthChecker>,
}

/// Campaigns, runs the runtime for each term won, and stops it the moment the term is lost.
async fn lead(
    election: Arc<paz_runtime::leader::Election>,
    terms: Terms,
    leading: watch::Sender<Option<paz_runtime::Reconciler>>,
    mut shutdown: watch::Receiver<bool>,
) {
    use paz_runtime::announce::{Announcer, ClusterProxy};
    while let Some(term) = election.campaign(&mut shutdown).await {
        let (stop, stopped) = watch::channel(false);
        let fenced = term.fenced_store();
        let dns = terms.config.hosts_dns();
        let scheduler = match terms.config.scheduler.build(&dns, &terms.cluster_id).await {
            Ok(Some(built)) => term.fenced_scheduler(built.scheduler),
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, "leading, but the scheduler is unreachable; resigning");
                term.resign().await;
                if paz_runtime::stopped_during(std::time::Duration::from_secs(2), &mut shutdown)
                    .await
                {
                    return;
                }
                continue;
            }
        };
        let announcer = Announcer::new(fenced.clone());
        let proxy = ClusterProxy::new(
            terms.paz.store().clone(),
            terms.proxy.clone(),
            announcer.clone(),
        );
        let mut builder = Runtime::builder(terms.paz.on_store(fenced))
            .scheduler(scheduler)
            .proxy(Arc::new(proxy))
            .health(terms.health.clone())
            .announce(announcer.clone());
        if let Some(host) = &terms.host {
            builder = builder.host(host.clone());
        }
        if terms.config.scheduler.is_multi_host() {
            builder = builder.host_inventory();
        }
        let runtime = match builder.build() {
            Ok(runtime) => runtime.spawn(stopped.clone()),
            Err(error) => {
                tracing::error!(%error, "cannot build the runtime");
                return;
            }
        };
        let renewing = (announcer.clone(), stopped.clone());
        tokio::spawn(supervise("announcement lease", stopped, move || {
            let (announcer, stopped) = renewing.clone();
            announcer.keep_alive(stopped)
        }));
        let _ = leading.send(Some(runtime.reconciler().clone()));
        let mut lost = term.lost();
        let stopping = tokio::select! {
            _ = lost.wait_for(|l| *l) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        // Stop acting at once; in-flight scheduler calls are refused by the fence.
        let _ = stop.send(true);
        let _ = leading.send(None);
        if stopping {
            runtime.join().await;
            term.resign().await;
            tracing::info!("resigned: another replica leads now");
            return;
        }
        tracing::warn!("leadership lost: the runtime stopped; campaigning again");
        drop(term);
        runtime.join().await;
    }
}

/// Runs the task `start` makes until it ends by itself or `shutdown`; a panic is logged and
/// the task started again a second later, never silently lost.
async fn supervise<F, Fut>(task: &'static str, mut shutdown: watch::Receiver<bool>, start: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(start()).await {
            Err(error) if error.is_panic() => {
                tracing::error!(task, %error, "a cluster task panicked; starting it again in 1 s");
                if paz_runtime::stopped_during(std::time::Duration::from_secs(1), &mut shutdown)
                    .await
                {
                    return;
                }
            }
            _ => return,
        }
    }
}

impl Edge {
    /// Registers `replica`, feeds the router from the announcements in `store` (supervised),
    /// and serves once the first table is applied (or after [`RESTORE_TIMEOUT`]).
    async fn serve_announced(
        &mut self,
        store: &Arc<dyn Store>,
        replica: &paz_core::cluster::Replica,
        shutdown: &watch::Receiver<bool>,
    ) -> paz_runtime::announce::Announced {
        use paz_runtime::announce::{Announced, RouteFollower};
        let registered = (store.clone(), replica.clone(), shutdown.clone());
        tokio::spawn(supervise(
            "replica registration",
            shutdown.clone(),
            move || {
                let (store, replica, shutdown) = registered.clone();
                paz_runtime::leader::keep_replica_registered(store, replica, shutdown)
            },
        ));
        let announced = Announced::default();
        let (first, mut first_applied) = watch::channel(false);
        let follow = (
            store.clone(),
            self.proxy.clone(),
            replica.id.clone(),
            self.address.to_string(),
            announced.clone(),
            shutdown.clone(),
        );
        tokio::spawn(supervise("route follower", shutdown.clone(), move || {
            let (store, router, id, address, announced, shutdown) = follow.clone();
            RouteFollower::new(store, router, id, address)
                .sharing(announced)
                .run(shutdown, first.clone())
        }));
        if tokio::time::timeout(RESTORE_TIMEOUT, first_applied.wait_for(|f| *f))
            .await
            .is_err()
        {
            tracing::warn!("the announcements could not be read yet; the router starts empty");
        }
        self.serve(shutdown);
        announced
    }
}

/// A router-only process (`paz-server --role router`): the router on its listeners, its
/// table built from the announcements in the shared store; it keeps its last table while
/// the store is unreachable.
pub struct RouterOnly {
    /// Where the router takes public traffic.
    pub router_address: SocketAddr,
    /// Where it serves HTTPS, when it does.
    pub tls_address: Option<SocketAddr>,
    /// The built-in router; `None` with HAProxy.
    pub router: Option<Arc<paz_proxy::router::Router>>,
    /// HAProxy, when it is the proxy.
    pub haproxy: Option<Arc<paz_proxy::Haproxy>>,
    /// The router's listener tasks.
    pub listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl RuntimeConfig {
    /// Starts a router-only process on `store` (shared by the cluster's servers).
    pub async fn start_router_only(
        &self,
        store: Arc<dyn Store>,
        sockets: &Sockets,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RouterOnly, ConfigError> {
        use paz_runtime::leader::{ReplicaRole, this_process};
        let mut edge = self.proxy.build(sockets).await?;
        if let Some(tls) = &self.tls {
            if tls.acme.is_some() {
                return Err(ConfigError::Tls(
                    "a router-only process serves certificate files only (--tls-cert/--tls-key)"
                        .into(),
                ));
            }
            edge.add_tls(tls, sockets).await?;
        }
        let mut names = None;
        if let Some(ip) = self.internal_names_ip.filter(|_| self.internal_names) {
            if edge.router.is_none() {
                return Err(ConfigError::Proxy(
                    "internal names (--internal-names-ip) are served by the built-in router only"
                        .into(),
                ));
            }
            let (server, listener) = internal_names(ip, None, sockets, &edge).await?;
            if let Some(listener) = listener {
                edge.add_internal(listener);
            }
            tracing::info!(%ip, "internal names: <service>.paz resolves to this router");
            // NameServer clones share the socket: a panic restarts it, logged.
            let stopping = shutdown.clone();
            names = Some(tokio::spawn(supervise(
                "internal names",
                shutdown.clone(),
                move || server.clone().run(stopping.clone()),
            )));
        }
        let replica = this_process(ReplicaRole::Router, None, Some(edge.address.to_string()));
        edge.serve_announced(&store, &replica, &shutdown).await;
        let mut listeners = edge.listeners;
        listeners.extend(names);
        Ok(RouterOnly {
            router_address: edge.address,
            tls_address: edge.tls_address,
            router: edge.router,
            haproxy: edge.haproxy,
            listeners,
        })
    }
}

/// Runs the certificate manager until shutdown; a panic is logged and the manager started
/// again a second later (it resumes from the store), never silently lost.
async fn supervise_certificates(manager: paz_acme::CertManager, shutdown: watch::Receiver<bool>) {
    loop {
        let run = tokio::spawn(manager.clone().run(shutdown.clone()));
        match run.await {
            Err(error) if error.is_panic() => {
                tracing::error!(%error, "the certificate manager panicked; restarting it");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            _ => return,
        }
    }
}

/// A fresh cluster id: 16 hex digits from the process's randomly seeded hasher and the time
/// (unique enough to tell clusters apart; it is no secret).
fn new_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// The sockets of the internal names on `ip`: the name server (port 53) and, unless the
/// edge serves one taken over at an upgrade, the proxy's internal listener (port 80).
async fn internal_names(
    ip: Ipv4Addr,
    subnet: Option<(Ipv4Addr, u8)>,
    sockets: &Sockets,
    edge: &Edge,
) -> Result<(NameServer, Option<tokio::net::TcpListener>), ConfigError> {
    let listener = if edge.serves_internal() {
        None
    } else {
        Some(
            sockets
                .tcp(handover::INTERNAL_HTTP, SocketAddr::from((ip, 80)))
                .await?,
        )
    };
    let socket = sockets
        .udp(handover::INTERNAL_DNS, SocketAddr::from((ip, 53)))
        .await?;
    let mut names = NameServer::new(socket, ip, NameServer::system_upstream());
    // Containers of the Paz network only (without a known subnet: the gateway's /16).
    let (network, prefix) = subnet.unwrap_or((ip, 16));
    names = names.allow_clients(network, prefix);
    Ok((names, listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn overlapping_listeners_are_refused_by_name() {
        let claims = vec![
            ("--api-listen".to_owned(), Claim::tcp(at("127.0.0.1:7700"))),
            ("--router-listen".to_owned(), Claim::tcp(at("0.0.0.0:7700"))),
        ];
        let err = check_claims(&claims).unwrap_err().to_string();
        assert_eq!(
            err,
            "--api-listen and --router-listen both claim tcp 127.0.0.1:7700; change one of them"
        );
        // Port 0 is any free port; other ports and transports do not overlap.
        assert!(
            check_claims(&[
                ("a".into(), Claim::tcp(at("127.0.0.1:0"))),
                ("b".into(), Claim::tcp(at("127.0.0.1:0"))),
                ("c".into(), Claim::tcp(at("127.0.0.1:8080"))),
                ("d".into(), Claim::tcp(at("127.0.0.2:8080"))),
            ])
            .is_ok()
        );
        // A wildcard router on port 80 takes the gateway's port 80 that internal names need.
        let gateway = Claim::Listen {
            ip: BindIp::Gateway,
            port: 80,
            transport: Transport::Tcp,
        };
        assert!(Claim::tcp(at("0.0.0.0:80")).conflicts_with(&gateway));
        assert!(!Claim::tcp(at("127.0.0.1:80")).conflicts_with(&gateway));
        let udp = Claim::Listen {
            ip: BindIp::Gateway,
            port: 53,
            transport: Transport::Udp,
        };
        assert!(!Claim::tcp(at("0.0.0.0:53")).conflicts_with(&udp));
    }
}
