//! The server's settings: flags with `PAZ_*` environment fallbacks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use paz_core::HumanDuration;

/// Where the state lives: `embedded`, `memory` or an etcd URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded redb file in the data dir (the default).
    Embedded,
    /// Memory only: everything is lost at exit (for tests and demos).
    Memory,
    /// An etcd cluster (`etcd://h1:2379,h2:2379[/namespace]`, `etcds://…` with TLS),
    /// shared by the replicas.
    Etcd(String),
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "embedded" => Ok(StoreKind::Embedded),
            "memory" => Ok(StoreKind::Memory),
            url if url.starts_with("etcd://") || url.starts_with("etcds://") => {
                paz::etcd::EtcdConfig::parse(url).map_err(|e| e.to_string())?;
                Ok(StoreKind::Etcd(url.to_owned()))
            }
            other => Err(format!(
                "{other:?} is not a store: use embedded, memory or etcd://host:port[,host:port…]"
            )),
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Embedded => f.write_str("embedded"),
            StoreKind::Memory => f.write_str("memory"),
            StoreKind::Etcd(url) => f.write_str(url),
        }
    }
}

/// What this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The API, the UI, the router and (on the leader, with a shared store) the runtime.
    Server,
    /// Only the router, its table built from the announcements in a shared store (edge
    /// hosts).
    Router,
}

/// What runs the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulerKind {
    /// The local Docker Engine (the default), with the built-in router.
    Docker,
    /// Docker Swarm, through a manager's engine (`--swarm-host`): instances on its nodes.
    Swarm,
    /// CoreOS fleet, through its v1 HTTP API (`--fleet-endpoint`): instances as units.
    Fleet,
    /// Nothing: the API records services, releases and deployments, but no container runs
    /// (for trying the API, and tests).
    None,
}

/// What takes public traffic (`--proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyKind {
    /// The built-in router (the default): HTTPS, ACME, `<service>.paz`, hitless upgrades.
    Builtin,
    /// HAProxy (2.6+), started and supervised by paz-server on `--router-listen`, driven
    /// through its runtime API; plain HTTP.
    Haproxy,
}

/// How the ACME CA validates the names (`--acme-challenge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcmeChallenge {
    /// The CA fetches `http://<name>/.well-known/acme-challenge/…` from the router's plain
    /// listener (port 80).
    #[value(name = "http-01")]
    Http01,
    /// The CA connects to the router's TLS listener (port 443) with ALPN `acme-tls/1`
    /// (RFC 8737): no plain-HTTP listener needs to be reachable.
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

impl From<AcmeChallenge> for paz::acme::ChallengeKind {
    fn from(value: AcmeChallenge) -> Self {
        match value {
            AcmeChallenge::Http01 => paz::acme::ChallengeKind::Http01,
            AcmeChallenge::TlsAlpn01 => paz::acme::ChallengeKind::TlsAlpn01,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `paz-server` settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "paz-server",
    version,
    about = "Paz: a self-hosted Docker PaaS. Runs the API and the engine."
)]
pub struct Config {
    /// The data directory (store file, admin token).
    #[arg(long, env = "PAZ_DATA_DIR", default_value = "./paz-data")]
    pub data_dir: PathBuf,
    /// Where the REST API listens.
    #[arg(long, env = "PAZ_API_LISTEN", default_value = "127.0.0.1:7700")]
    pub api_listen: SocketAddr,
    /// The cluster domain: public services answer at `<name>.<domain>`.
    #[arg(long, env = "PAZ_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// The store: `embedded` (a file in the data dir), `memory`, or an etcd cluster shared by
    /// several replicas: `etcd://h1:2379,h2:2379[/namespace]` (`etcds://` for TLS).
    #[arg(long, env = "PAZ_STORE", default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// What this process is: a whole server, or only a router fed from the shared store.
    #[arg(long, env = "PAZ_ROLE", value_enum, default_value_t = Role::Server)]
    pub role: Role,
    /// With a shared store: how long the leader's lease lives without renewal (a dead leader
    /// is replaced within it).
    #[arg(long, env = "PAZ_LEADER_TTL", default_value = "5s")]
    pub leader_ttl: HumanDuration,
    /// etcd user (with --etcd-password-file).
    #[arg(long, env = "PAZ_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password.
    #[arg(long, env = "PAZ_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// The CA certificate (PEM) of the etcd members (etcds://).
    #[arg(long, env = "PAZ_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd, with --etcd-key.
    #[arg(long, env = "PAZ_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "PAZ_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// How long one etcd request may take before the API answers 503.
    #[arg(long, env = "PAZ_ETCD_TIMEOUT", default_value = "3s")]
    pub etcd_timeout: HumanDuration,
    /// What runs the instances.
    #[arg(long, env = "PAZ_SCHEDULER", value_enum, default_value_t = SchedulerKind::Docker)]
    pub scheduler: SchedulerKind,
    /// The Swarm manager's engine (with --scheduler swarm): `unix:///…/docker.sock` or
    /// `tcp://host:port`; default `DOCKER_HOST`, else the local socket.
    #[arg(long, env = "PAZ_SWARM_HOST")]
    pub swarm_host: Option<String>,
    /// fleetd's v1 API (with --scheduler fleet): `http://host:port` of a TCP `ListenStream`
    /// (fleetd has no TLS or authentication: keep it on a private network or a tunnel).
    #[arg(
        long,
        env = "PAZ_FLEET_ENDPOINT",
        default_value = "http://127.0.0.1:49153"
    )]
    pub fleet_endpoint: String,
    /// Where the router takes public traffic (`<service>.<domain>` and custom domains).
    #[arg(long, env = "PAZ_ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    pub router_listen: SocketAddr,
    /// What takes public traffic: the built-in router, or HAProxy supervised by paz-server.
    #[arg(long, env = "PAZ_PROXY", value_enum, default_value_t = ProxyKind::Builtin)]
    pub proxy: ProxyKind,
    /// The HAProxy executable (with --proxy haproxy).
    #[arg(long, env = "PAZ_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Where HAProxy's rendered config, map file and sockets live (default:
    /// `<data dir>/haproxy`).
    #[arg(long, env = "PAZ_HAPROXY_DIR")]
    pub haproxy_dir: Option<PathBuf>,
    /// HAProxy's worker threads (`nbthread`; default: one per core).
    #[arg(long, env = "PAZ_HAPROXY_THREADS")]
    pub haproxy_threads: Option<usize>,
    /// The Docker network instances run on (created when missing).
    #[arg(long, env = "PAZ_DOCKER_NETWORK", default_value = "paz")]
    pub docker_network: String,
    /// Serve `<service>.paz` to containers: a name server and the router's internal
    /// listener on the Docker network's gateway (ports 53 and 80).
    #[arg(long, env = "PAZ_INTERNAL_NAMES", default_value_t = true, action = clap::ArgAction::Set)]
    pub internal_names: bool,
    /// Many hosts: where `<service>.paz` is served on every host. A router-only process
    /// serves it there (ports 53 and 80); Swarm and fleet instances get it as their name
    /// server. Docker's default bridge gateway, 172.17.0.1, suits: the same on every host
    /// and reachable from its containers.
    #[arg(long, env = "PAZ_INTERNAL_NAMES_IP")]
    pub internal_names_ip: Option<std::net::Ipv4Addr>,
    /// The admin token (default: generated into `<data dir>/admin-token`).
    #[arg(long, env = "PAZ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Labels of this host for placement, `key=value` (repeatable).
    #[arg(long = "label", env = "PAZ_HOST_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Log format.
    #[arg(long, env = "PAZ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How many of its newest releases each service keeps (2 to 10000); older ones are
    /// deleted, except the current and the previous one.
    #[arg(long, env = "PAZ_KEEP_RELEASES", default_value_t = paz_core::DEFAULT_KEEP_RELEASES,
          value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub keep_releases: u64,
    /// Let services bind-mount host paths that make them root on the host (`/`, the Docker
    /// socket, `/etc`, …). Off by default: the admin token (or a service spec) should not
    /// be a root shell on this machine.
    #[arg(long, env = "PAZ_ALLOW_HOST_MOUNTS", default_value_t = false)]
    pub allow_host_mounts: bool,
    /// The key secrets are sealed with at rest, 64 hex digits (default: generated once into
    /// `<data dir>/secret-key`, mode 0600). Back it up with the store: without it, secrets
    /// cannot be opened.
    #[arg(long, env = "PAZ_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Serve HTTPS here (e.g. `0.0.0.0:443`): SNI, HTTP/2 and HTTP/1.1, certificates from
    /// `--tls-cert` files and/or from the ACME CA of `--acme-directory`. Hosts with a
    /// certificate are redirected from HTTP to HTTPS.
    #[arg(long, env = "PAZ_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// A certificate for a host name, `NAME=CHAIN.pem:KEY.pem` (repeatable).
    #[arg(
        long = "tls-cert",
        env = "PAZ_TLS_CERTS",
        value_delimiter = ',',
        value_name = "NAME=CHAIN:KEY"
    )]
    pub tls_certs: Vec<String>,
    /// An ACME CA's directory URL (e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`): every public host name gets a
    /// certificate from it, kept in the store and renewed 30 days before expiry.
    #[arg(long, env = "PAZ_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// The ACME account's contact, e.g. `mailto:ops@example.com`.
    #[arg(long, env = "PAZ_ACME_CONTACT")]
    pub acme_contact: Option<String>,
    /// A PEM root to trust for the ACME CA's own API (a private CA); default: the system's.
    #[arg(long, env = "PAZ_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// How the ACME CA validates the names: `http-01` (the default: the router's plain
    /// listener must be reachable on port 80) or `tls-alpn-01` (its TLS listener on port 443).
    #[arg(long, env = "PAZ_ACME_CHALLENGE", value_enum, value_name = "CHALLENGE")]
    pub acme_challenge: Option<AcmeChallenge>,
    /// Serve the API (and later the UI) through the router under this host name, over
    /// HTTPS with a certificate like the services' (needs `--tls-listen`): a CLI elsewhere
    /// uses `--server https://<name>`.
    #[arg(long, env = "PAZ_API_DOMAIN")]
    pub api_domain: Option<String>,
    /// Send `Strict-Transport-Security` with this max-age on HTTPS answers (e.g. `8760h`).
    #[arg(long, env = "PAZ_HSTS")]
    pub hsts: Option<paz_core::HumanDuration>,
    /// Also serve `/metrics` here without a token (for a Prometheus on a private network).
    /// On the API, `/metrics` needs a token with the `read` scope.
    #[arg(long, env = "PAZ_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long an API client has to send a whole request head (also the idle keep-alive
    /// timeout between requests).
    #[arg(long, env = "PAZ_API_HEADER_TIMEOUT", default_value = "10s")]
    pub api_header_timeout: HumanDuration,
    /// How long an API client has to send a whole request body (else 408).
    #[arg(long, env = "PAZ_API_BODY_TIMEOUT", default_value = "30s")]
    pub api_body_timeout: HumanDuration,
    /// API connections served at once; more wait in the listen backlog.
    #[arg(long, env = "PAZ_API_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub api_max_connections: u32,
    /// At shutdown, how long API requests in flight may take to finish before their
    /// connections are dropped.
    #[arg(long, env = "PAZ_SHUTDOWN_TIMEOUT", default_value = "10s")]
    pub shutdown_timeout: HumanDuration,
    /// A host Docker Hub hook callbacks may be sent to (repeatable): a payload's
    /// `callback_url` elsewhere is not called. Over https only, except loopback hosts
    /// (`127.0.0.1`, `localhost`, `::1`), which are called over plain http (for tests).
    #[arg(
        long = "hook-callback-host",
        env = "PAZ_HOOK_CALLBACK_HOSTS",
        value_delimiter = ',',
        value_name = "HOST",
        default_value = crate::hooks::DEFAULT_CALLBACK_HOST
    )]
    pub hook_callback_hosts: Vec<String>,
    /// Take over from the paz-server running with this data dir (started with the same
    /// settings): its listening sockets and routes pass to this process, which serves at
    /// once, while the old one finishes its requests and exits. No request fails.
    #[arg(long)]
    pub upgrade: bool,
    /// POST selected events as JSON to this URL (repeatable), signed with HMAC-SHA256 of
    /// `--notify-secret` in `X-Paz-Signature`.
    #[arg(long = "notify-url", env = "PAZ_NOTIFY_URLS", value_delimiter = ',')]
    pub notify_urls: Vec<String>,
    /// The notifications' HMAC key (at least 16 bytes).
    #[arg(long, env = "PAZ_NOTIFY_SECRET", hide_env_values = true)]
    pub notify_secret: Option<String>,
    /// The event types to send (`deployment_changed`, or a prefix: `deployment_*`);
    /// default: deployment_changed and instance_unhealthy.
    #[arg(
        long = "notify-events",
        env = "PAZ_NOTIFY_EVENTS",
        value_delimiter = ',',
        default_value = "deployment_changed,instance_unhealthy"
    )]
    pub notify_events: Vec<String>,
    /// Allow notifications to this local or private address (repeatable; refused otherwise).
    #[arg(long = "notify-allow", env = "PAZ_NOTIFY_ALLOW", value_delimiter = ',')]
    pub notify_allow: Vec<std::net::IpAddr>,
}

impl Config {
    /// Checks the settings that clap cannot, including settings that claim the same port.
    pub fn validate(&self) -> Result<(), String> {
        paz_core::names::check_domain(&self.domain).map_err(|e| format!("--domain: {e}"))?;
        for (flag, value) in [
            ("--api-header-timeout", self.api_header_timeout),
            ("--api-body-timeout", self.api_body_timeout),
        ] {
            if value.get().is_zero() {
                return Err(format!("{flag} must be longer than 0s"));
            }
        }
        self.host_labels()?;
        self.tls_config()?;
        self.notify_config()?;
        if self.proxy == ProxyKind::Haproxy {
            if self.tls_listen.is_some() {
                return Err("--tls-listen is served by the built-in router only; with --proxy haproxy terminate TLS in front of HAProxy".into());
            }
            if self.upgrade {
                return Err("--upgrade hands the built-in router's sockets over; with --proxy haproxy restart paz-server instead".into());
            }
            if self.haproxy_threads == Some(0) {
                return Err("--haproxy-threads must be at least 1".into());
            }
        }
        if self.internal_names_ip.is_some() {
            if self.role == Role::Server
                && !matches!(self.scheduler, SchedulerKind::Swarm | SchedulerKind::Fleet)
            {
                return Err("--internal-names-ip is for many hosts: a router-only process (--role router) or --scheduler swarm|fleet; on one host <service>.paz is served on the Docker network's gateway".into());
            }
            if self.proxy == ProxyKind::Haproxy {
                return Err("--internal-names-ip is served by the built-in router only".into());
            }
        }
        if self.role == Role::Router && !matches!(self.store, StoreKind::Etcd(_)) {
            return Err(
                "--role router follows the announcements of a shared store: give --store etcd://…"
                    .into(),
            );
        }
        if self.leader_ttl.get() < std::time::Duration::from_secs(1) {
            return Err(
                "--leader-ttl must be at least 1s (etcd's lease TTLs are whole seconds)".into(),
            );
        }
        if matches!(self.store, StoreKind::Etcd(_)) {
            self.etcd_config()?;
        }
        if self.upgrade && self.store == StoreKind::Memory {
            return Err(
                "--upgrade with --store memory would lose every service: the state moves \
                 through the store, so upgrade servers with a persistent store"
                    .into(),
            );
        }
        let mut claims = vec![(
            "the API (--api-listen)".to_owned(),
            paz::config::Claim::tcp(self.api_listen),
        )];
        claims.extend(self.store_config().claims());
        if let Some(address) = self.metrics_listen {
            claims.push((
                "the metrics (--metrics-listen)".to_owned(),
                paz::config::Claim::tcp(address),
            ));
        }
        if self.scheduler != SchedulerKind::None {
            claims.extend(self.runtime_config().claims());
        }
        paz::config::check_claims(&claims).map_err(|e| e.to_string())
    }

    /// The outgoing notifications, when `--notify-url` is given.
    pub fn notify_config(&self) -> Result<Option<crate::notify::NotifyConfig>, String> {
        if self.notify_urls.is_empty() {
            return Ok(None);
        }
        let mut urls = Vec::new();
        for text in &self.notify_urls {
            let url: reqwest::Url = text
                .parse()
                .map_err(|e| format!("--notify-url {text:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "--notify-url {text:?}: not an http(s) URL with a host"
                ));
            }
            urls.push(url);
        }
        let secret = self
            .notify_secret
            .as_deref()
            .filter(|s| s.len() >= 16)
            .ok_or("--notify-url needs --notify-secret (PAZ_NOTIFY_SECRET), at least 16 bytes")?;
        let known = [
            "service_created",
            "service_updated",
            "service_deleted",
            "release_created",
            "deployment_changed",
            "deployment_step",
            "instance_started",
            "instance_healthy",
            "instance_unhealthy",
            "instance_stopped",
            "delivery_recorded",
        ];
        for pattern in &self.notify_events {
            let matches_some = match pattern.strip_suffix('*') {
                Some(prefix) => known.iter().any(|k| k.starts_with(prefix)),
                None => known.contains(&pattern.as_str()),
            };
            if !matches_some {
                return Err(format!(
                    "--notify-events {pattern:?} names no event type (known: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(Some(crate::notify::NotifyConfig {
            urls,
            secret: std::sync::Arc::from(secret.as_bytes()),
            events: self.notify_events.clone(),
            allow: self
                .notify_allow
                .iter()
                .map(|ip| ip.to_canonical())
                .collect(),
        }))
    }

    /// The engine settings.
    pub fn engine_config(&self) -> paz_core::EngineConfig {
        paz_core::EngineConfig {
            domain: self.domain.clone(),
            keep_releases: self.keep_releases,
            allow_host_mounts: self.allow_host_mounts,
        }
    }

    /// The store these settings choose.
    pub fn store_config(&self) -> paz::config::StoreConfig {
        match &self.store {
            StoreKind::Embedded => paz::config::StoreConfig::Embedded {
                path: self.data_dir.join("paz.redb"),
            },
            StoreKind::Memory => paz::config::StoreConfig::Memory,
            StoreKind::Etcd(_) => paz::config::StoreConfig::Etcd(Box::new(
                self.etcd_config()
                    .expect("checked by Config::validate before the store is opened"),
            )),
        }
    }

    /// The etcd settings, from the store URL and the `--etcd-*` flags.
    pub fn etcd_config(&self) -> Result<paz::etcd::EtcdConfig, String> {
        let StoreKind::Etcd(url) = &self.store else {
            return Err("the store is not etcd".into());
        };
        let mut config = paz::etcd::EtcdConfig::parse(url).map_err(|e| e.to_string())?;
        config.request_timeout = self.etcd_timeout.get();
        match (&self.etcd_user, &self.etcd_password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file)
                    .map_err(|e| format!("--etcd-password-file {}: {e}", file.display()))?;
                config.user = Some((
                    user.clone(),
                    password.trim_end_matches(['\r', '\n']).to_owned(),
                ));
            }
            (None, None) => {}
            _ => return Err("--etcd-user and --etcd-password-file go together".into()),
        }
        let tls_given =
            self.etcd_ca.is_some() || self.etcd_cert.is_some() || self.etcd_key.is_some();
        if tls_given && config.tls.is_none() {
            return Err("--etcd-ca/--etcd-cert/--etcd-key need an etcds:// store URL".into());
        }
        if let Some(tls) = &mut config.tls {
            tls.ca = self.etcd_ca.clone();
            tls.cert = self.etcd_cert.clone();
            tls.key = self.etcd_key.clone();
        }
        Ok(config)
    }

    /// The cluster settings of a replica (with a shared store).
    pub fn cluster_config(&self, api: std::net::SocketAddr) -> paz::config::ClusterConfig {
        paz::config::ClusterConfig {
            leader_ttl: self.leader_ttl.get(),
            api: Some(api.to_string()),
        }
    }

    /// The scheduler and proxy these settings choose.
    pub fn runtime_config(&self) -> paz::config::RuntimeConfig {
        let scheduler = match self.scheduler {
            SchedulerKind::None => paz::config::SchedulerConfig::None,
            SchedulerKind::Docker => {
                paz::config::SchedulerConfig::Docker(paz::docker::DockerConfig {
                    network: self.docker_network.clone(),
                    ..paz::docker::DockerConfig::default()
                })
            }
            SchedulerKind::Swarm => paz::config::SchedulerConfig::Swarm(paz::docker::SwarmConfig {
                host: self.swarm_host.clone(),
                ..paz::docker::SwarmConfig::default()
            }),
            SchedulerKind::Fleet => paz::config::SchedulerConfig::Fleet(paz::fleet::FleetConfig {
                endpoint: self.fleet_endpoint.clone(),
                ..paz::fleet::FleetConfig::default()
            }),
        };
        let proxy = match self.proxy {
            ProxyKind::Builtin => paz::config::ProxyConfig::Builtin {
                listen: self.router_listen,
            },
            ProxyKind::Haproxy => {
                let dir = self
                    .haproxy_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("haproxy"));
                let mut haproxy = paz::proxy::HaproxyConfig::new(self.router_listen, dir);
                haproxy.binary = self.haproxy_bin.clone();
                if let Some(threads) = self.haproxy_threads {
                    haproxy.threads = threads;
                }
                paz::config::ProxyConfig::Haproxy(haproxy)
            }
        };
        paz::config::RuntimeConfig {
            scheduler,
            proxy,
            internal_names: self.internal_names,
            internal_names_ip: self.internal_names_ip,
            tls: self.tls_config().ok().flatten(),
        }
    }

    /// The HTTPS settings, reading the `--tls-cert` files; `None` without `--tls-listen`.
    pub fn tls_config(&self) -> Result<Option<paz::config::TlsConfig>, String> {
        let Some(listen) = self.tls_listen else {
            if !self.tls_certs.is_empty()
                || self.acme_directory.is_some()
                || self.acme_challenge.is_some()
                || self.api_domain.is_some()
            {
                return Err(
                    "--tls-cert, --acme-directory, --acme-challenge and --api-domain need --tls-listen"
                        .into(),
                );
            }
            return Ok(None);
        };
        let mut files = Vec::new();
        for given in &self.tls_certs {
            let parsed = given
                .split_once('=')
                .and_then(|(name, files)| Some((name, files.split_once(':')?)));
            let Some((name, (chain, key))) = parsed else {
                return Err(format!(
                    "--tls-cert {given:?} must look like NAME=CHAIN.pem:KEY.pem"
                ));
            };
            paz_core::names::check_domain(name)
                .map_err(|e| format!("--tls-cert {given:?}: {e}"))?;
            let read = |path: &str| {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--tls-cert {given:?}: cannot read {path}: {e}"))
            };
            files.push(paz::proxy::CertificatePem {
                names: vec![name.to_ascii_lowercase()],
                chain_pem: read(chain)?,
                key_pem: read(key)?,
            });
        }
        if self.acme_challenge.is_some() && self.acme_directory.is_none() {
            return Err("--acme-challenge needs --acme-directory".into());
        }
        let acme = self.acme_directory.as_ref().map(|directory| {
            let mut acme = paz::acme::ManagerConfig::new(paz::acme::AcmeConfig {
                directory: directory.clone(),
                contact: self.acme_contact.clone(),
                ca_root: self.acme_ca_root.clone(),
            });
            if let Some(challenge) = self.acme_challenge {
                acme.challenge = challenge.into();
            }
            acme
        });
        if let Some(domain) = &self.api_domain {
            paz_core::names::check_domain(domain).map_err(|e| format!("--api-domain: {e}"))?;
        }
        Ok(Some(paz::config::TlsConfig {
            listen,
            files,
            acme,
            hsts: self.hsts.map(|h| h.get()),
            // The API's address is known once it listens (see `main`).
            api: self
                .api_domain
                .clone()
                .map(|domain| (domain.to_ascii_lowercase(), self.api_listen)),
        }))
    }

    /// The limits the API is served with.
    pub fn serve_limits(&self) -> crate::ServeLimits {
        crate::ServeLimits {
            header_timeout: self.api_header_timeout.get(),
            body_timeout: self.api_body_timeout.get(),
            max_connections: usize::try_from(self.api_max_connections).unwrap_or(usize::MAX),
            shutdown_timeout: self.shutdown_timeout.get(),
        }
    }

    /// The host labels as a map.
    pub fn host_labels(&self) -> Result<BTreeMap<String, String>, String> {
        self.labels
            .iter()
            .map(|label| match label.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => Err(format!("--label {label:?} must look like key=value")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn validate(args: &[&str]) -> Result<(), String> {
        Config::try_parse_from(std::iter::once("paz-server").chain(args.iter().copied()))
            .unwrap()
            .validate()
    }

    #[test]
    fn store_and_cluster_settings_are_checked() {
        let parsed = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("paz-server").chain(args.iter().copied()))
        };
        let bad = parsed(&["--store", "mysql://h"]).unwrap_err().to_string();
        assert!(bad.contains("use embedded, memory or etcd://"), "{bad}");
        let bad = parsed(&["--store", "etcd://h"]).unwrap_err().to_string();
        assert!(bad.contains("no port"), "{bad}");
        let err = validate(&["--role", "router"]).unwrap_err();
        assert!(err.contains("--store etcd://"), "{err}");
        assert!(validate(&["--role", "router", "--store", "etcd://h:2379"]).is_ok());
        let err = validate(&["--internal-names-ip", "172.17.0.1"]).unwrap_err();
        assert!(err.contains("many hosts"), "{err}");
        let router = ["--role", "router", "--store", "etcd://h:2379"];
        assert!(validate(&[&router[..], &["--internal-names-ip", "172.17.0.1"]].concat()).is_ok());
        let err = validate(
            &[
                &router[..],
                &["--internal-names-ip", "172.17.0.1", "--proxy", "haproxy"],
            ]
            .concat(),
        )
        .unwrap_err();
        assert!(err.contains("built-in router"), "{err}");
        assert!(validate(&["--scheduler", "swarm", "--internal-names-ip", "172.17.0.1"]).is_ok());
        let err = validate(&["--store", "etcd://h:2379", "--leader-ttl", "500ms"]).unwrap_err();
        assert!(err.contains("--leader-ttl"), "{err}");
        let err = validate(&["--store", "etcd://h:2379", "--etcd-user", "paz"]).unwrap_err();
        assert!(err.contains("--etcd-password-file"), "{err}");
        let err = validate(&["--store", "etcd://h:2379", "--etcd-ca", "/ca.pem"]).unwrap_err();
        assert!(err.contains("etcds://"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let config = parsed(&[
            "--store",
            "etcds://h:2379/prod",
            "--etcd-user",
            "paz",
            "--etcd-password-file",
            password.to_str().unwrap(),
            "--etcd-ca",
            "/ca.pem",
            "--etcd-timeout",
            "1s",
        ])
        .unwrap();
        let etcd = config.etcd_config().unwrap();
        assert_eq!(etcd.user, Some(("paz".into(), "s3cret".into())));
        assert_eq!(etcd.namespace, "/prod");
        assert_eq!(etcd.request_timeout, std::time::Duration::from_secs(1));
        assert_eq!(etcd.tls.unwrap().ca, Some("/ca.pem".into()));
        assert!(config.store_config().is_shared());
    }

    #[test]
    fn notification_settings_are_checked() {
        let url = ["--notify-url", "https://hooks.example.com/paz"];
        let err = validate(&url).unwrap_err();
        assert!(err.contains("--notify-secret"), "{err}");
        let secret = ["--notify-secret", "0123456789abcdef"];
        assert!(validate(&[&url[..], &secret[..]].concat()).is_ok());
        assert!(
            validate(&[&url[..], &secret[..], &["--notify-events", "deploy*"]].concat()).is_ok()
        );
        let err = validate(&[&url[..], &secret[..], &["--notify-events", "nothing"]].concat())
            .unwrap_err();
        assert!(err.contains("names no event type"), "{err}");
        let err = validate(&[
            "--notify-url",
            "ftp://x/",
            "--notify-secret",
            "0123456789abcdef",
        ])
        .unwrap_err();
        assert!(err.contains("not an http(s) URL"), "{err}");
    }

    #[test]
    fn settings_that_claim_the_same_port_are_refused_by_name() {
        let err = validate(&[
            "--api-listen",
            "127.0.0.1:7700",
            "--router-listen",
            "0.0.0.0:7700",
        ])
        .unwrap_err();
        assert!(
            err.contains("--api-listen") && err.contains("--router-listen"),
            "{err}"
        );
        // A wildcard router on port 80 would take the gateway port internal names need.
        let err = validate(&["--router-listen", "0.0.0.0:80"]).unwrap_err();
        assert!(err.contains("--internal-names"), "{err}");
        assert!(validate(&["--router-listen", "0.0.0.0:80", "--internal-names", "false"]).is_ok());
        // Without a scheduler there is no router to conflict with.
        assert!(
            validate(&[
                "--scheduler",
                "none",
                "--api-listen",
                "127.0.0.1:8080",
                "--router-listen",
                "0.0.0.0:8080"
            ])
            .is_ok()
        );
        assert!(validate(&[]).is_ok());
    }

    #[test]
    fn limits_have_defaults_and_flags() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("paz-server").chain(args.iter().copied()))
        };
        assert_eq!(
            parse(&[]).unwrap().serve_limits(),
            crate::ServeLimits::default()
        );
        let limits = parse(&[
            "--api-header-timeout",
            "2s",
            "--api-body-timeout",
            "1m",
            "--api-max-connections",
            "8",
            "--shutdown-timeout",
            "500ms",
        ])
        .unwrap()
        .serve_limits();
        assert_eq!(
            limits,
            crate::ServeLimits {
                header_timeout: std::time::Duration::from_secs(2),
                body_timeout: std::time::Duration::from_secs(60),
                max_connections: 8,
                shutdown_timeout: std::time::Duration::from_millis(500),
            }
        );
        assert!(parse(&["--api-max-connections", "0"]).is_err());
        let err = validate(&["--api-header-timeout", "0s"]).unwrap_err();
        assert!(err.contains("--api-header-timeout"), "{err}");
    }

    #[test]
    fn the_acme_challenge_is_http_01_unless_tls_alpn_01_is_asked_for() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("paz-server").chain(args.iter().copied()))
        };
        let acme = |args: &[&str]| {
            let mut all = vec![
                "--tls-listen",
                "127.0.0.1:0",
                "--acme-directory",
                "https://127.0.0.1:14000/dir",
            ];
            all.extend_from_slice(args);
            let config = parse(&all).unwrap();
            config.validate().unwrap();
            config
                .tls_config()
                .unwrap()
                .unwrap()
                .acme
                .unwrap()
                .challenge
        };
        assert_eq!(acme(&[]), paz::acme::ChallengeKind::Http01);
        assert_eq!(
            acme(&["--acme-challenge", "http-01"]),
            paz::acme::ChallengeKind::Http01
        );
        assert_eq!(
            acme(&["--acme-challenge", "tls-alpn-01"]),
            paz::acme::ChallengeKind::TlsAlpn01
        );
        let error = parse(&["--acme-challenge", "dns-01"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid value 'dns-01'")
                && error.contains("[possible values: http-01, tls-alpn-01]"),
            "{error}"
        );
        let error = validate(&[
            "--tls-listen",
            "127.0.0.1:0",
            "--acme-challenge",
            "tls-alpn-01",
        ])
        .unwrap_err();
        assert_eq!(error, "--acme-challenge needs --acme-directory");
        let error = validate(&["--acme-challenge", "tls-alpn-01"]).unwrap_err();
        assert!(error.contains("need --tls-listen"), "{error}");
    }
}
