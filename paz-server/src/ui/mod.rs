//! The web UI, served at `/`: pages rendered on the server with maud, usable without
//! JavaScript, and made live by one small hand-written script ([`assets`]) that applies
//! HTML fragments the server pushes over SSE ([`live`]) and follows logs ([`logs`]).
//!
//! It calls the engine directly, with the same calls and validators as the REST API, so a
//! form's errors are the API's, shown next to their field. It is not part of the OpenAPI
//! document. Sessions and CSRF: [`session`]; charts from the router's metrics: [`charts`].

mod assets;
mod charts;
mod form;
mod layout;
mod live;
mod logs;
mod pages;
mod recent;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::AppState;
use crate::error::ApiError;

/// What the UI keeps between requests: sessions, the sign-in limiter, the request-rate and
/// latency samples of each service, and an index of each service's latest deployment.
#[derive(Clone)]
pub struct Ui {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: session::Sessions,
    limiter: session::SignInLimiter,
    charts: charts::Charts,
    recent: recent::Recent,
}

impl Ui {
    /// The UI's state for an engine (it follows the engine's events to keep its index of
    /// latest deployments current).
    pub fn new(paz: &paz_core::Paz) -> Ui {
        Ui {
            inner: Arc::new(Inner {
                sessions: session::Sessions::default(),
                limiter: session::SignInLimiter::default(),
                charts: charts::Charts::default(),
                recent: recent::Recent::new(paz),
            }),
        }
    }

    /// Signs in a session without the form and returns the `Cookie` header value that
    /// carries it: for in-process tests and benchmarks.
    pub fn test_session_cookie(&self) -> String {
        session::cookie_header(&self.inner.sessions).unwrap_or_default()
    }

    /// Takes one sample of the router's metrics (Prometheus text) for the charts; the
    /// server does it every [`SAMPLE_EVERY`].
    pub fn sample_metrics(&self, prometheus_text: &str) {
        self.inner
            .charts
            .sample(prometheus_text, jiff::Timestamp::now());
    }
}

/// How often the router's metrics are sampled for the charts.
pub const SAMPLE_EVERY: std::time::Duration = charts::SAMPLE_EVERY;

/// Samples the router's metrics into the charts until shutdown (when the server runs a
/// router).
pub fn spawn_sampler(state: &AppState, mut shutdown: watch::Receiver<bool>) {
    let Some(metrics) = state.metrics.clone() else {
        return;
    };
    let ui = state.ui.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => ui.sample_metrics(&metrics()),
                () = stopped(&mut shutdown) => return,
            }
        }
    });
}

/// Resolves once the server shuts down.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The UI's routes: the sign-in form and the assets are open, the rest needs a session.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(pages::dashboard))
        .route("/services", get(pages::services).post(pages::create))
        .route("/services/new", get(pages::new_service))
        .route("/services/{name}", get(pages::service))
        .route(
            "/services/{name}/edit",
            get(pages::edit_service).post(pages::update),
        )
        .route("/services/{name}/deploy", post(pages::deploy))
        .route("/services/{name}/scale", post(pages::scale))
        .route("/services/{name}/promote", post(pages::promote))
        .route("/services/{name}/abort", post(pages::abort))
        .route(
            "/services/{name}/rollback",
            get(pages::rollback_page).post(pages::rollback),
        )
        .route(
            "/services/{name}/delete",
            get(pages::delete_page).post(pages::delete),
        )
        .route("/services/{name}/logs", get(logs::page))
        .route("/services/{name}/logs/stream", get(logs::stream))
        .route("/services/{name}/logs.txt", get(logs::download))
        .route("/deployments/{id}", get(pages::deployment))
        .route("/hosts", get(pages::hosts))
        .route("/ui/live", get(live::stream))
        .route("/logout", post(session::logout))
        .route_layer(middleware::from_fn_with_state(
            state,
            session::require_session,
        ));
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/ui/assets/{file}", get(assets::serve))
        .merge(pages)
        .layer(middleware::map_response(security_headers))
}

/// Headers on every UI answer: a strict content security policy (the UI's own script and
/// style only, no inline script), no framing, no sniffing.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Pages show live state and sit behind a session: never cached.
pub(crate) fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An error shown as a page: its status and a message for people (the engine's message,
/// as the API would give it).
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }
}

impl From<paz_core::Error> for PageError {
    fn from(error: paz_core::Error) -> Self {
        let api = ApiError::from(error);
        PageError::new(api.status, api.body.message)
    }
}

impl From<ApiError> for PageError {
    fn from(api: ApiError) -> Self {
        PageError::new(api.status, api.body.message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, layout::error_page(self.status, &self.message)).into_response();
        no_store(&mut response);
        response
    }
}
