//! `paz-server`: hosts the Paz engine behind a REST API (JSON, bearer token, SSE events,
//! OpenAPI). The binary is a thin wrapper around [`run`]; tests build the router with
//! [`router`] and call it directly.

pub mod config;
pub mod dns;
pub mod error;
mod extract;
pub mod handlers;
pub mod openapi;
pub mod reconciler;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::IpAddr;

use paz_core::scheduler::Scheduler;
use paz_core::{EngineConfig, Host, HostStatus, Paz, Store};
use paz_docker::{DockerConfig, DockerScheduler};
use paz_proxy::health::HttpHealthChecker;
use paz_proxy::router::{Router as EdgeRouter, RouterConfig, Scope};
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

pub use config::Config;
use error::ApiError;

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
    /// The Docker daemon cannot be used.
    #[error("{0}; start Docker, or run with --scheduler none to use the API without containers")]
    Docker(#[source] paz_docker::Error),
}

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// How long a host registration lives without a keep-alive.
const HOST_TTL: Duration = Duration::from_secs(15);

/// Renders the router's metrics in the Prometheus text format.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers share: the engine, the admin token, the shutdown signal and, when the
/// server runs containers, the scheduler, the reconciler and the router's metrics.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub paz: Paz,
    /// The admin bearer token.
    pub token: Arc<str>,
    /// Turns `true` when the server shuts down (ends long-lived streams).
    pub shutdown: watch::Receiver<bool>,
    /// The scheduler, when the server runs containers.
    pub scheduler: Option<Arc<dyn Scheduler>>,
    /// The reconciler, when the server runs containers.
    pub reconciler: Option<reconciler::Reconciler>,
    /// The router's metrics, when the server runs the router.
    pub metrics: Option<MetricsSource>,
}

impl AppState {
    /// State for an engine and a token; `shutdown` ends event streams when it turns true.
    pub fn new(paz: Paz, token: impl Into<Arc<str>>, shutdown: watch::Receiver<bool>) -> Self {
        AppState {
            paz,
            token: token.into(),
            shutdown,
            scheduler: None,
            reconciler: None,
            metrics: None,
        }
    }

    /// Adds the scheduler and the reconciler that drives it.
    pub fn with_runtime(
        mut self,
        scheduler: Arc<dyn Scheduler>,
        reconciler: reconciler::Reconciler,
    ) -> Self {
        self.scheduler = Some(scheduler);
        self.reconciler = Some(reconciler);
        self
    }

    /// Adds the router's metrics (served at `/metrics`).
    pub fn with_metrics(mut self, metrics: MetricsSource) -> Self {
        self.metrics = Some(metrics);
        self
    }
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
        .route("/v1/services/{name}/releases/{version}", get(release))
        .route("/v1/services/{name}/deployments", get(deployments))
        .route("/v1/deployments/{id}", get(deployment))
        .route("/v1/hosts", get(hosts))
        .route("/v1/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(handlers::metrics))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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

async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("").trim().to_owned());
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send the admin token as 'Authorization: Bearer <token>'",
        ));
    };
    let Some(token) = given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("bearer "))
    else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the Authorization header must be 'Bearer <token>'",
        ));
    };
    if !token::matches(token.trim(), &state.token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_TOKEN",
            "the token is not valid",
        ));
    }
    Ok(next.run(request).await)
}

/// Registers this machine as a host and keeps its lease alive until `shutdown` turns true.
pub async fn keep_host_registered(paz: Paz, host: Host, mut shutdown: watch::Receiver<bool>) {
    let mut lease = None;
    loop {
        let result = match lease {
            Some(id) => paz.store().keep_alive(id).await,
            None => paz.register_host(&host, HOST_TTL).await.map(|id| {
                lease = Some(id);
            }),
        };
        if let Err(error) = result {
            tracing::warn!(%error, host = %host.id, "host registration lapsed; registering again");
            lease = None;
            continue_after(Duration::from_secs(1), &mut shutdown).await;
            continue;
        }
        if continue_after(HOST_TTL / 3, &mut shutdown).await {
            if let Some(id) = lease {
                let _ = paz.store().revoke_lease(id).await;
            }
            return;
        }
    }
}

/// Sleeps for `delay`; returns `true` early when shutdown was signalled.
async fn continue_after(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait_for(|stopping| *stopping) => true,
    }
}

/// This machine, as a host record.
pub fn local_host(address: &str, labels: std::collections::BTreeMap<String, String>) -> Host {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    Host {
        id: name.clone(),
        name,
        address: address.to_owned(),
        labels,
        status: HostStatus::Ready,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// The runtime parts of a server that runs containers.
struct Runtime {
    scheduler: Arc<dyn Scheduler>,
    reconciler: reconciler::Reconciler,
    router: Arc<EdgeRouter>,
}

/// Connects Docker, starts the router's listeners, the internal name server and the
/// reconciler.
async fn start_runtime(
    config: &Config,
    paz: &Paz,
    router_listener: tokio::net::TcpListener,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Runtime, ServerError> {
    let docker_config = DockerConfig {
        network: config.docker_network.clone(),
        ..DockerConfig::default()
    };
    let probe = DockerScheduler::connect(docker_config.clone())
        .await
        .map_err(ServerError::Docker)?;
    let gateway = probe.network_gateway();
    let router = EdgeRouter::new(RouterConfig::default());
    tasks.push(router.serve(router_listener, Scope::Public, shutdown.clone()));
    let mut dns = Vec::new();
    if config.internal_names {
        match gateway {
            Some(IpAddr::V4(ip)) => match start_internal_names(&router, ip, shutdown).await {
                Ok(started) => {
                    tasks.extend(started);
                    dns.push(ip.to_string());
                    tracing::info!(%ip, "internal names: <service>.paz resolves to the router on the Paz network");
                }
                Err(error) => tracing::warn!(%error, %ip, "internal names disabled"),
            },
            _ => {
                tracing::warn!(network = %config.docker_network, "internal names disabled: the network has no IPv4 gateway")
            }
        }
    }
    let scheduler = if dns.is_empty() {
        probe
    } else {
        DockerScheduler::connect(DockerConfig {
            dns,
            ..docker_config
        })
        .await
        .map_err(ServerError::Docker)?
    };
    let scheduler: Arc<dyn Scheduler> = Arc::new(scheduler);
    let proxy: Arc<dyn paz_core::proxy::Proxy> = router.clone();
    let reconciler = reconciler::Reconciler::new(
        paz.clone(),
        scheduler.clone(),
        proxy,
        Arc::new(HttpHealthChecker::new()),
    );
    tasks.push(tokio::spawn(reconciler.clone().run(shutdown.clone())));
    Ok(Runtime {
        scheduler,
        reconciler,
        router,
    })
}

/// The router's internal listener (gateway:80) and the name server (gateway:53).
async fn start_internal_names(
    router: &Arc<EdgeRouter>,
    ip: std::net::Ipv4Addr,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let listener = tokio::net::TcpListener::bind((ip, 80)).await?;
    let socket = tokio::net::UdpSocket::bind((ip, 53)).await?;
    let names = dns::NameServer::new(socket, ip, dns::NameServer::system_upstream());
    Ok(vec![
        router.serve(listener, Scope::Internal, shutdown.clone()),
        tokio::spawn(names.run(shutdown.clone())),
    ])
}

/// Runs the server until `shutdown` resolves: serves the API, keeps the host registered and,
/// with a scheduler, runs the router (on `router_listener`), the reconciler and the internal
/// name server; on the way out it drains in-flight requests. Running containers are left
/// running: a restarted server adopts them.
pub async fn run(
    config: Config,
    token: String,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    router_listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let paz = Paz::new(
        store,
        EngineConfig {
            domain: config.domain.clone(),
        },
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let address = listener.local_addr()?;
    let host = local_host(
        &address.ip().to_string(),
        config.host_labels().map_err(ServerError::Config)?,
    );
    let mut tasks = vec![tokio::spawn(keep_host_registered(
        paz.clone(),
        host,
        stop_rx.clone(),
    ))];
    let mut state = AppState::new(paz.clone(), token, stop_rx.clone());
    if let Some(router_listener) = router_listener {
        let runtime = start_runtime(&config, &paz, router_listener, &stop_rx, &mut tasks).await?;
        let router = runtime.router.clone();
        state = state
            .with_runtime(runtime.scheduler, runtime.reconciler)
            .with_metrics(Arc::new(move || router.metrics_text()));
    }
    let app = router(state);
    tracing::info!(%address, domain = %config.domain, "paz-server API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        })
        .await?;
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("paz-server stopped");
    Ok(())
}
