//! `paz-server`: hosts the Paz engine behind a REST API (JSON, bearer token, SSE events,
//! OpenAPI). The binary is a thin wrapper around [`start`] and [`Server::serve`]: it maps flags
//! to `paz::config` and serves the API over the runtime it starts; tests build the router with
//! [`router`] and call it directly.

pub mod auth;
pub mod config;
pub mod error;
mod extract;
pub mod handlers;
pub mod openapi;
mod serve;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use paz::config::{ConfigError, RuntimeConfig};
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
    /// The runtime's reconciler (and through it the scheduler), when the server runs
    /// containers.
    pub reconciler: Option<Reconciler>,
    /// The router's metrics, when the server runs the router.
    pub metrics: Option<MetricsSource>,
    /// The port the router takes public traffic on, when the server runs one.
    pub router_port: Option<u16>,
    /// The ACME certificate manager, when the router gets certificates from a CA.
    pub certificates: Option<paz::acme::CertManager>,
}

impl AppState {
    /// State for an engine and a token; `shutdown` ends event streams when it turns true.
    pub fn new(paz: Paz, token: impl Into<Arc<str>>, shutdown: watch::Receiver<bool>) -> Self {
        AppState {
            paz,
            token: token.into(),
            shutdown,
            reconciler: None,
            metrics: None,
            router_port: None,
            certificates: None,
        }
    }

    /// Adds the runtime's reconciler.
    pub fn with_runtime(mut self, reconciler: Reconciler) -> Self {
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
        .route("/v1/services/{name}/secrets", get(secrets))
        .route(
            "/v1/services/{name}/secrets/{secret}",
            axum::routing::put(set_secret).delete(delete_secret),
        )
        .route("/v1/services/{name}/releases/{version}", get(release))
        .route("/v1/services/{name}/deployments", get(deployments))
        .route("/v1/deployments/{id}", get(deployment))
        .route("/v1/hosts", get(hosts))
        .route("/v1/events", get(events))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{token}", axum::routing::delete(revoke_token))
        .route("/metrics", get(handlers::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/v1/health", get(health))
        .route("/openapi.json", get(openapi_json))
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

pub use paz_runtime::{keep_host_registered, local_host};

/// A server whose backends are running, ready to [`serve`](Server::serve) the API.
pub struct Server {
    app: Router,
    listener: tokio::net::TcpListener,
    domain: String,
    stop: watch::Sender<bool>,
    started: Option<paz::config::Started>,
    registration: Option<tokio::task::JoinHandle<()>>,
    limits: ServeLimits,
    /// `/metrics` alone, unauthenticated, for a listener of its own.
    metrics_app: Router,
    metrics_listener: Option<tokio::net::TcpListener>,
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
    let (stop, stop_rx) = watch::channel(false);
    let address = listener.local_addr()?;
    let host = local_host(
        &address.ip().to_string(),
        config.host_labels().map_err(ServerError::Config)?,
    );
    let mut state = AppState::new(paz.clone(), token, stop_rx.clone());
    let mut registration = None;
    let started = backends
        .start(paz.clone(), Some(host.clone()), stop_rx.clone())
        .await?;
    if let Some(started) = &started {
        state = state
            .with_runtime(started.runtime.reconciler().clone())
            .with_metrics(started.metrics.clone());
        state.router_port = Some(started.router_address.port());
        state.certificates = started.certificates.clone();
    } else {
        registration = Some(tokio::spawn(keep_host_registered(paz, host, stop_rx)));
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
        registration,
        limits: config.serve_limits(),
    })
}

impl Server {
    /// Where the router serves HTTPS, when it does.
    pub fn tls_address(&self) -> Option<std::net::SocketAddr> {
        self.started.as_ref().and_then(|s| s.tls_address)
    }

    /// Where the router takes public traffic, when there is one.
    pub fn router_address(&self) -> Option<std::net::SocketAddr> {
        self.started.as_ref().map(|s| s.router_address)
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
