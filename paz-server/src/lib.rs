//! `paz-server`: hosts the Paz engine behind a REST API (JSON, bearer token, SSE events,
//! OpenAPI). The binary is a thin wrapper around [`start`] and [`Server::serve`]: it maps flags
//! to `paz::config` and serves the API over the runtime it starts; tests build the router with
//! [`router`] and call it directly.

pub mod admin;
pub mod auth;
pub mod config;
pub mod error;
mod extract;
pub mod handlers;
pub mod hooks;
pub mod notify;
pub mod openapi;
mod serve;
pub mod token;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use paz::config::{ConfigError, RuntimeConfig};
use paz::handover::Sockets;
use paz_core::Paz;
use paz_runtime::Reconciler;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

pub use config::Config;
use error::ApiError;
pub use serve::ServeLimits;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
    /// Serving failed.
    #[error("serving the API failed: {0}")]
    Io(#[from] std::io::Error),
    /// The backends cannot be started.
    #[error(transparent)]
    Backends(#[from] ConfigError),
    /// A request body did not arrive within [`ServeLimits::body_timeout`].
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Reading a request body failed.
    #[error("reading the request body failed: {0}")]
    Body(#[source] hyper::Error),
}

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Renders the router's metrics in the Prometheus text format.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers share: the engine, the admin token, the shutdown signal and, when the
/// server runs containers, the runtime's reconciler and the router's metrics.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub paz: Paz,
    /// The admin bearer token.
    pub token: Arc<str>,
    /// Turns `true` when the server shuts down (ends long-lived streams).
    pub shutdown: watch::Receiver<bool>,
    /// How the handlers reach the runtime (see [`AppState::reconciler`]).
    runtime: RuntimeAccess,
    /// This replica's id, when it is one of a cluster's.
    pub replica: Option<String>,
    /// The router's metrics, when the server runs the router.
    pub metrics: Option<MetricsSource>,
    /// The port the router takes public traffic on, when the server runs one.
    pub router_port: Option<u16>,
    /// The ACME certificate manager, when the router gets certificates from a CA.
    pub certificates: Option<paz::acme::CertManager>,
    /// HAProxy, when it takes public traffic (`--proxy haproxy`).
    pub haproxy: Option<Arc<paz::proxy::Haproxy>>,
    /// The deploy hooks' in-memory delivery log, locks and callback policy.
    pub hooks: Arc<hooks::HookState>,
    /// The web UI's sessions, charts and indexes.
    pub ui: ui::Ui,
}

impl AppState {
    /// State for an engine and a token; `shutdown` ends event streams when it turns true.
    pub fn new(paz: Paz, token: impl Into<Arc<str>>, shutdown: watch::Receiver<bool>) -> Self {
        AppState {
            ui: ui::Ui::new(&paz),
            paz,
            token: token.into(),
            shutdown,
            runtime: RuntimeAccess::None,
            replica: None,
            metrics: None,
            router_port: None,
            certificates: None,
            haproxy: None,
            hooks: Arc::new(hooks::HookState::default()),
        }
    }

    /// Sends Docker Hub callbacks only to these hosts (see `--hook-callback-host`).
    pub fn with_hook_callback_hosts(mut self, hosts: Vec<String>) -> Self {
        self.hooks = Arc::new(hooks::HookState::new(hosts));
        self
    }

    /// Adds the runtime's reconciler.
    pub fn with_runtime(mut self, reconciler: Reconciler) -> Self {
        self.runtime = RuntimeAccess::Local(reconciler);
        self
    }

    /// A replica of a cluster: the runtime's reconciler while it leads, else the instances
    /// the leader announced.
    pub fn with_cluster(
        mut self,
        replica: String,
        leading: watch::Receiver<Option<Reconciler>>,
        announced: paz_runtime::announce::Announced,
    ) -> Self {
        self.replica = Some(replica);
        self.runtime = RuntimeAccess::Cluster { leading, announced };
        self
    }

    /// The runtime's reconciler (and through it the scheduler), when this server runs
    /// containers: always on a single server, only while it leads in a cluster.
    pub fn reconciler(&self) -> Option<Reconciler> {
        match &self.runtime {
            RuntimeAccess::None => None,
            RuntimeAccess::Local(reconciler) => Some(reconciler.clone()),
            RuntimeAccess::Cluster { leading, .. } => leading.borrow().clone(),
        }
    }

    /// A service's instances as the runtime sees them, or (a replica that does not lead) as
    /// the leader announced them; `None` when the server runs no containers.
    pub fn instances(&self, service: &str) -> Option<Vec<paz_core::Instance>> {
        if let Some(reconciler) = self.reconciler() {
            return Some(reconciler.instances(service));
        }
        match &self.runtime {
            RuntimeAccess::Cluster { announced, .. } => Some(announced.instances(service)),
            _ => None,
        }
    }

    /// Every service's instances, as [`AppState::instances`] sees them.
    pub fn all_instances(
        &self,
    ) -> Option<std::collections::BTreeMap<String, Vec<paz_core::Instance>>> {
        if let Some(reconciler) = self.reconciler() {
            return Some(reconciler.all_instances());
        }
        match &self.runtime {
            RuntimeAccess::Cluster { announced, .. } => Some(announced.all()),
            _ => None,
        }
    }

    /// Adds the router's metrics (served at `/metrics`).
    pub fn with_metrics(mut self, metrics: MetricsSource) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// How the handlers reach the runtime.
#[derive(Clone)]
enum RuntimeAccess {
    /// No containers (`--scheduler none`).
    None,
    /// A single server's runtime.
    Local(Reconciler),
    /// A cluster replica's: the runtime while it leads, and the announcements.
    Cluster {
        leading: watch::Receiver<Option<Reconciler>>,
        announced: paz_runtime::announce::Announced,
    },
}

/// The HTTP router of the API.
pub fn router(state: AppState) -> Router {
    use handlers::*;
    let api = Router::new()
        .route("/v1/services", get(list_services).post(create_service))
        .route(
            "/v1/services/{name}",
            get(get_service)
                .put(put_service)
                .patch(patch_service)
                .delete(delete_service),
        )
        .route("/v1/services/{name}/deploy", axum::routing::post(deploy))
        .route("/v1/services/{name}/scale", axum::routing::post(scale))
        .route(
            "/v1/services/{name}/rollback",
            axum::routing::post(rollback),
        )
        .route("/v1/services/{name}/promote", axum::routing::post(promote))
        .route("/v1/services/{name}/abort", axum::routing::post(abort))
        .route("/v1/services/{name}/instances", get(instances))
        .route("/v1/services/{name}/status", get(status))
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/services/{name}/releases", get(releases))
        .route("/v1/services/{name}/secrets", get(secrets))
        .route(
            "/v1/services/{name}/secrets/{secret}",
            axum::routing::put(set_secret).delete(delete_secret),
        )
        .route("/v1/services/{name}/releases/{version}", get(release))
        .route("/v1/services/{name}/deployments", get(deployments))
        .route("/v1/deployments/{id}", get(deployment))
        .route("/v1/hosts", get(hosts))
        .route("/v1/cluster", get(cluster))
        .route("/v1/events", get(events))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{token}", axum::routing::delete(revoke_token))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/admin/export", get(admin::export_state))
        .route(
            "/v1/admin/import",
            axum::routing::post(admin::import_state)
                .layer(DefaultBodyLimit::max(admin::IMPORT_BODY_LIMIT)),
        )
        .merge(hook_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/v1/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .merge(hook_endpoints())
        .merge(api)
        // The web UI at `/` (not part of the OpenAPI document).
        .merge(ui::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http().make_span_with(hooks::request_span))
        .with_state(state)
}

/// The hook endpoints: outside the token middleware (the hook's secret is the credential),
/// inside the body limit.
fn hook_endpoints() -> Router<AppState> {
    use axum::routing::post;
    Router::new()
        .route("/v1/hooks/dockerhub/{hook_secret}", post(hooks::dockerhub))
        .route("/v1/hooks/registry", post(hooks::registry))
        .route("/v1/hooks/deploy", post(hooks::ci))
}

/// Managing hooks and reading deliveries (bearer token).
fn hook_routes() -> Router<AppState> {
    use axum::routing::post;
    Router::new()
        .route(
            "/v1/services/{name}/hooks",
            get(hooks::list_hooks).post(hooks::create_hook),
        )
        .route(
            "/v1/services/{name}/hooks/{source}",
            axum::routing::put(hooks::update_hook).delete(hooks::delete_hook),
        )
        .route(
            "/v1/services/{name}/hooks/{source}/rotate",
            post(hooks::rotate_hook),
        )
        .route("/v1/services/{name}/deliveries", get(hooks::deliveries))
        .route("/v1/deliveries", get(hooks::unmatched_deliveries))
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such endpoint; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this endpoint does not take that method; see /openapi.json",
    )
}

pub use paz_runtime::{keep_host_registered, local_host};

/// What a server starts on besides its settings: its sockets (bound here, or handed over
/// by the server it takes over from with `--upgrade`), its router when built early, and
/// its upgrade socket.
pub struct Launch {
    sockets: Arc<Sockets>,
    predecessor: Option<paz::handover::Predecessor>,
    edge: Option<paz::config::Edge>,
    stop: watch::Sender<bool>,
    upgrades: Option<std::os::unix::net::UnixListener>,
}

/// How long a successor waits for the server it takes over to finish and exit.
const PREDECESSOR_EXIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Launch {
    /// Sockets bound as they are asked for, and no upgrade socket (tests, embedding).
    pub fn new() -> Launch {
        Launch {
            sockets: Sockets::new(),
            predecessor: None,
            edge: None,
            stop: watch::channel(false).0,
            upgrades: None,
        }
    }

    /// A fresh start with the data dir's upgrade socket (so a later `--upgrade` can take
    /// over); fails if a server already runs with this data dir.
    pub fn fresh(data_dir: &std::path::Path) -> Result<Launch, ServerError> {
        let mut launch = Launch::new();
        let path = paz::handover::socket_path(data_dir);
        launch.upgrades = Some(launch.sockets.upgrade_listener(&path)?);
        Ok(launch)
    }

    /// Takes over from the server running with this data dir: its sockets, route table and
    /// certificates. It goes on serving until [`Launch::prepare`].
    pub async fn take_over(data_dir: &std::path::Path) -> Result<Launch, ServerError> {
        let path = paz::handover::socket_path(data_dir);
        let predecessor = paz::handover::take_over(&path).await?;
        let sockets = predecessor.sockets.clone();
        let upgrades = Some(sockets.upgrade_listener(&path)?);
        Ok(Launch {
            sockets,
            predecessor: Some(predecessor),
            edge: None,
            stop: watch::channel(false).0,
            upgrades,
        })
    }

    /// The sockets (for the API's and the metrics' listeners).
    pub fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// Builds the router on its sockets. Taking over: serves the predecessor's routes and
    /// certificates at once, tells it, and waits until it has exited (its store is free
    /// then; the API's connections wait in the shared listen queue meanwhile).
    pub async fn prepare(&mut self, backends: &RuntimeConfig) -> Result<(), ServerError> {
        self.edge = backends.edge(&self.sockets).await?;
        let Some(predecessor) = self.predecessor.take() else {
            return Ok(());
        };
        if let Some(edge) = &mut self.edge {
            let mut certificates = backends
                .tls
                .as_ref()
                .map(|tls| tls.files.clone())
                .unwrap_or_default();
            let given: std::collections::HashSet<String> =
                certificates.iter().flat_map(|c| c.names.clone()).collect();
            certificates.extend(
                predecessor
                    .certificates
                    .iter()
                    .filter(|c| !c.names.iter().any(|n| given.contains(n)))
                    .cloned(),
            );
            edge.set_certificates(&certificates)?;
            if let Some(router) = edge.router() {
                router
                    .apply_table(&predecessor.routes)
                    .map_err(|e| ServerError::Config(format!("the predecessor's routes: {e}")))?;
            }
            edge.serve(&self.stop.subscribe());
            tracing::info!(
                routes = predecessor.routes.routes.len(),
                "serving the predecessor's routes; it finishes its requests and exits"
            );
        }
        if !predecessor.routing(PREDECESSOR_EXIT).await? {
            tracing::warn!(
                timeout = ?PREDECESSOR_EXIT,
                "the server taken over has not exited yet; opening the store anyway"
            );
        }
        Ok(())
    }
}

impl Default for Launch {
    fn default() -> Self {
        Launch::new()
    }
}

/// A server whose backends are running, ready to [`serve`](Server::serve) the API.
pub struct Server {
    app: Router,
    listener: tokio::net::TcpListener,
    domain: String,
    stop: watch::Sender<bool>,
    started: Option<paz::config::Started>,
    cluster: Option<paz::config::ClusterStarted>,
    registration: Option<tokio::task::JoinHandle<()>>,
    limits: ServeLimits,
    /// `/metrics` alone, unauthenticated, for a listener of its own.
    metrics_app: Router,
    metrics_listener: Option<tokio::net::TcpListener>,
    /// Where a successor asks to take over, and what it is given.
    upgrades: Option<std::os::unix::net::UnixListener>,
    sockets: Arc<Sockets>,
}

/// Starts the backends of `backends` (with a scheduler: the router, the runtime and the
/// internal names) and prepares the API on `listener` with the limits of
/// [`Config::serve_limits`]; nothing is served until [`Server::serve`].
pub async fn start(
    config: &Config,
    token: String,
    paz: Paz,
    listener: tokio::net::TcpListener,
    backends: RuntimeConfig,
) -> Result<Server, ServerError> {
    start_with(config, token, paz, listener, backends, Launch::new()).await
}

/// [`start`] on a [`Launch`]: the sockets and router it prepared (at an upgrade, serving
/// already), and its upgrade socket, served by [`Server::serve`].
pub async fn start_with(
    config: &Config,
    token: String,
    paz: Paz,
    listener: tokio::net::TcpListener,
    backends: RuntimeConfig,
    mut launch: Launch,
) -> Result<Server, ServerError> {
    let stop = launch.stop;
    let stop_rx = stop.subscribe();
    let address = listener.local_addr()?;
    let host = local_host(
        &address.ip().to_string(),
        config.host_labels().map_err(ServerError::Config)?,
    );
    if let Some(notify) = config.notify_config().map_err(ServerError::Config)? {
        tokio::spawn(notify::supervise(notify, paz.clone(), stop_rx.clone()));
    }
    let mut state = AppState::new(paz.clone(), token, stop_rx.clone())
        .with_hook_callback_hosts(config.hook_callback_hosts.clone());
    let mut registration = None;
    let edge = match launch.edge.take() {
        Some(edge) => Some(edge),
        None => backends.edge(&launch.sockets).await?,
    };
    let mut started = None;
    let mut cluster = None;
    match edge {
        Some(edge) if config.store_config().is_shared() => {
            let replica = backends
                .start_cluster(
                    edge,
                    paz.clone(),
                    Some(host.clone()),
                    &config.cluster_config(address),
                    stop_rx.clone(),
                )
                .await?;
            state = state
                .with_cluster(
                    replica.replica.id.clone(),
                    replica.leading.clone(),
                    replica.announced.clone(),
                )
                .with_metrics(replica.metrics.clone());
            state.router_port = Some(replica.router_address.port());
            state.haproxy = replica.haproxy.clone();
            ui::spawn_sampler(&state, stop_rx.clone());
            cluster = Some(replica);
        }
        Some(edge) => {
            let runtime = backends
                .start_on(
                    edge,
                    paz.clone(),
                    Some(host.clone()),
                    &launch.sockets,
                    stop_rx.clone(),
                )
                .await?;
            state = state
                .with_runtime(runtime.runtime.reconciler().clone())
                .with_metrics(runtime.metrics.clone());
            state.router_port = Some(runtime.router_address.port());
            state.haproxy = runtime.haproxy.clone();
            state.certificates = runtime.certificates.clone();
            ui::spawn_sampler(&state, stop_rx.clone());
            started = Some(runtime);
        }
        None => {
            registration = Some(tokio::spawn(keep_host_registered(paz, host, stop_rx)));
        }
    }
    let metrics_app = Router::new()
        .route("/metrics", get(handlers::metrics))
        .fallback(not_found)
        .with_state(state.clone());
    Ok(Server {
        metrics_app,
        metrics_listener: None,
        app: router(state),
        listener,
        domain: config.domain.clone(),
        stop,
        started,
        cluster,
        registration,
        limits: config.serve_limits(),
        upgrades: launch.upgrades,
        sockets: launch.sockets,
    })
}

impl Server {
    /// Where the router serves HTTPS, when it does.
    pub fn tls_address(&self) -> Option<std::net::SocketAddr> {
        match (&self.started, &self.cluster) {
            (Some(started), _) => started.tls_address,
            (None, Some(cluster)) => cluster.tls_address,
            (None, None) => None,
        }
    }

    /// Where the router takes public traffic, when there is one.
    pub fn router_address(&self) -> Option<std::net::SocketAddr> {
        match (&self.started, &self.cluster) {
            (Some(started), _) => Some(started.router_address),
            (None, Some(cluster)) => Some(cluster.router_address),
            (None, None) => None,
        }
    }

    /// The limits the API is served with.
    pub fn limits(&self) -> ServeLimits {
        self.limits
    }

    /// Also serves `/metrics` on `listener`, without a token (for a scraper on a private
    /// network); on the API, `/metrics` needs a token with the `read` scope.
    pub fn with_metrics_listener(mut self, listener: tokio::net::TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// Serves with `limits` instead of those of the [`Config`].
    pub fn with_limits(mut self, limits: ServeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves the API until `shutdown` resolves; then stops accepting, drains in-flight
    /// requests for at most [`ServeLimits::shutdown_timeout`] (event and log streams end at
    /// once) and stops the router and the runtime. Running containers are left running: a
    /// restarted server adopts them.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let address = self.listener.local_addr()?;
        tracing::info!(%address, domain = %self.domain, "paz-server API listening");
        let stop = self.stop;
        let metrics = self.metrics_listener.map(|listener| {
            let mut stopping = stop.subscribe();
            tokio::spawn(serve::serve(
                listener,
                self.metrics_app,
                self.limits,
                async move {
                    let _ = stopping.wait_for(|s| *s).await;
                },
                || {},
            ))
        });
        // A successor that takes over is a shutdown too.
        let (taken_tx, taken_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(upgrades) = self.upgrades {
            let source = match (&self.started, &self.cluster) {
                (Some(started), _) => started.router.clone(),
                (None, Some(cluster)) => cluster.router.clone(),
                (None, None) => None,
            }
            .map(|router| router as Arc<dyn paz::handover::HandoverSource>);
            let sockets = self.sockets.clone();
            let stopping = stop.subscribe();
            tokio::spawn(async move {
                if paz::handover::serve_upgrades(upgrades, sockets, source, stopping).await {
                    let _ = taken_tx.send(());
                }
            });
        }
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                Ok(()) = taken_rx => {}
            }
        };
        // The router, the runtime and the streams stop while the API drains.
        serve::serve(self.listener, self.app, self.limits, shutdown, || {
            let _ = stop.send(true);
        })
        .await;
        let _ = stop.send(true);
        if let Some(started) = self.started {
            for listener in started.listeners {
                let _ = listener.await;
            }
            started.runtime.join().await;
        }
        if let Some(cluster) = self.cluster {
            for listener in cluster.listeners {
                let _ = listener.await;
            }
            let _ = cluster.task.await;
        }
        if let Some(task) = self.registration {
            let _ = task.await;
        }
        if let Some(task) = metrics {
            let _ = task.await;
        }
        tracing::info!("paz-server stopped");
        Ok(())
    }
}
