//! The REST handlers: thin adapters from HTTP to the engine.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use paz_core::api::{
    DeployRequest, ErrorResponse, HealthResponse, RollbackRequest, ScaleRequest, ServiceStatus,
};
use paz_core::secret::{SecretInfo, SetSecretRequest};
use paz_core::token::{CreateTokenRequest, CreatedToken, TokenInfo, TokenRecord};
use paz_core::{Deployment, Host, Instance, Release, Service, ServiceSpec, Trigger, TriggerKind};
use tokio::sync::broadcast;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, IfMatch};

/// Checks that the server and its store answer.
#[utoipa::path(get, path = "/v1/health", tag = "system", security(()),
    responses((status = 200, body = HealthResponse), (status = 503, body = ErrorResponse)))]
pub async fn health(State(state): State<AppState>) -> ApiResult<Json<HealthResponse>> {
    state.paz.store().get("/paz/health-probe").await?;
    let restarts = state.reconciler().as_ref().map(|r| r.panics());
    let proxy = match &state.haproxy {
        Some(haproxy) => {
            let status = haproxy.status().await;
            Some(paz_core::api::ProxyHealth {
                kind: "haproxy".into(),
                running: status.running,
                version: status.version,
                pid: status.worker_pid,
                connections: status.connections,
                reloads: status.reloads,
                restarts: status.restarts,
                last_error: status.last_error,
            })
        }
        None => None,
    };
    let status = if restarts.unwrap_or(0) > 0 || proxy.as_ref().is_some_and(|p| !p.running) {
        "degraded"
    } else {
        "ok"
    };
    Ok(Json(HealthResponse {
        status: status.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        domain: Some(state.paz.config().domain.clone()),
        router_port: state.router_port,
        restarts,
        warnings: state
            .reconciler()
            .as_ref()
            .map(paz_runtime::Reconciler::warnings)
            .unwrap_or_default(),
        proxy,
    }))
}

/// Lists every service.
#[utoipa::path(get, path = "/v1/services", tag = "services",
    responses((status = 200, body = Vec<Service>), (status = 401, body = ErrorResponse)))]
pub async fn list_services(State(state): State<AppState>) -> ApiResult<Json<Vec<Service>>> {
    Ok(Json(state.paz.services().await?))
}

/// Declares a service; makes release v1 and records its first deployment.
#[utoipa::path(post, path = "/v1/services", tag = "services", request_body = ServiceSpec,
    responses((status = 201, body = Service), (status = 400, body = ErrorResponse),
        (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn create_service(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<ServiceSpec>,
) -> ApiResult<(StatusCode, Json<Service>)> {
    let applied = state
        .paz
        .create_service(spec, Trigger::new(TriggerKind::Create))
        .await?;
    wake(&state, &applied.service.spec.name);
    Ok((StatusCode::CREATED, Json(applied.service)))
}

/// Reads one service.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = Service), (status = 404, body = ErrorResponse)))]
pub async fn get_service(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Service>> {
    Ok(Json(state.paz.service(&name).await?))
}

/// Replaces a service's spec. Send `If-Match: <revision>` to fail instead of overwriting a
/// concurrent change.
#[utoipa::path(put, path = "/v1/services/{name}", tag = "services", request_body = ServiceSpec,
    params(("name" = String, Path), ("If-Match" = Option<String>, Header, description = "the expected revision")),
    responses((status = 200, body = Service), (status = 404, body = ErrorResponse),
        (status = 412, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn put_service(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    IfMatch(expected): IfMatch,
    ApiJson(spec): ApiJson<ServiceSpec>,
) -> ApiResult<Json<Service>> {
    let applied = state
        .paz
        .update_service(&name, spec, expected, Trigger::new(TriggerKind::Update))
        .await?;
    Ok(Json(applied.service))
}

/// Changes part of a service's spec with a JSON merge patch (RFC 7396).
#[utoipa::path(patch, path = "/v1/services/{name}", tag = "services",
    request_body(content = Object, content_type = "application/merge-patch+json"),
    params(("name" = String, Path), ("If-Match" = Option<String>, Header, description = "the expected revision")),
    responses((status = 200, body = Service), (status = 404, body = ErrorResponse),
        (status = 412, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn patch_service(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    IfMatch(expected): IfMatch,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> ApiResult<Json<Service>> {
    let applied = state
        .paz
        .patch_service(&name, &patch, expected, Trigger::new(TriggerKind::Update))
        .await?;
    Ok(Json(applied.service))
}

/// Deletes a service with its releases and deployments.
#[utoipa::path(delete, path = "/v1/services/{name}", tag = "services",
    params(("name" = String, Path), ("If-Match" = Option<String>, Header, description = "the expected revision")),
    responses((status = 204), (status = 404, body = ErrorResponse), (status = 412, body = ErrorResponse)))]
pub async fn delete_service(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    IfMatch(expected): IfMatch,
) -> ApiResult<StatusCode> {
    state.paz.delete_service(&name, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new release (optionally with a new image) and records its deployment.
#[utoipa::path(post, path = "/v1/services/{name}/deploy", tag = "deploys", request_body = DeployRequest,
    params(("name" = String, Path)),
    responses((status = 202, body = Deployment), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn deploy(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<DeployRequest>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let deployment = state
        .paz
        .deploy(&name, request.image, Trigger::new(TriggerKind::Deploy))
        .await?;
    wake(&state, &name);
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// Sets a secret: write-only (the value is never shown again), given to the instances as an
/// environment variable, encrypted at rest. Makes a release and a zero-downtime deployment.
#[utoipa::path(put, path = "/v1/services/{name}/secrets/{secret}", tag = "secrets", request_body = SetSecretRequest,
    params(("name" = String, Path), ("secret" = String, Path, description = "The environment variable name")),
    responses((status = 202, body = Deployment), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse),
        (status = 503, body = ErrorResponse, description = "No secret key is configured")))]
pub async fn set_secret(
    State(state): State<AppState>,
    ApiPath((name, secret)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<SetSecretRequest>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let deployment = state
        .paz
        .set_secret(
            &name,
            &secret,
            &request.value,
            Trigger::new(TriggerKind::Update),
        )
        .await?;
    wake(&state, &name);
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// Lists a service's secrets: names and when each was set, never the values.
#[utoipa::path(get, path = "/v1/services/{name}/secrets", tag = "secrets", params(("name" = String, Path)),
    responses((status = 200, body = Vec<SecretInfo>), (status = 404, body = ErrorResponse)))]
pub async fn secrets(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<SecretInfo>>> {
    Ok(Json(state.paz.secrets(&name).await?))
}

/// Removes a secret. Makes a release and a deployment without it.
#[utoipa::path(delete, path = "/v1/services/{name}/secrets/{secret}", tag = "secrets",
    params(("name" = String, Path), ("secret" = String, Path)),
    responses((status = 202, body = Deployment), (status = 404, body = ErrorResponse)))]
pub async fn delete_secret(
    State(state): State<AppState>,
    ApiPath((name, secret)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let deployment = state
        .paz
        .remove_secret(&name, &secret, Trigger::new(TriggerKind::Update))
        .await?;
    wake(&state, &name);
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// Sets the instance count.
#[utoipa::path(post, path = "/v1/services/{name}/scale", tag = "deploys", request_body = ScaleRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = Service), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn scale(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<ScaleRequest>,
) -> ApiResult<Json<Service>> {
    Ok(Json(state.paz.scale(&name, request.instances).await?))
}

/// Goes back to an earlier release (default: the one before the current).
#[utoipa::path(post, path = "/v1/services/{name}/rollback", tag = "deploys", request_body = RollbackRequest,
    params(("name" = String, Path)),
    responses((status = 202, body = Deployment), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn rollback(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let deployment = state
        .paz
        .rollback(&name, request.to, Trigger::new(TriggerKind::Rollback))
        .await?;
    wake(&state, &name);
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// Lists a service's releases, oldest first.
#[utoipa::path(get, path = "/v1/services/{name}/releases", tag = "deploys", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Release>), (status = 404, body = ErrorResponse)))]
pub async fn releases(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<Release>>> {
    Ok(Json(state.paz.releases(&name).await?))
}

/// Reads one release.
#[utoipa::path(get, path = "/v1/services/{name}/releases/{version}", tag = "deploys",
    params(("name" = String, Path), ("version" = u64, Path)),
    responses((status = 200, body = Release), (status = 404, body = ErrorResponse)))]
pub async fn release(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<Json<Release>> {
    let number = version
        .strip_prefix('v')
        .unwrap_or(&version)
        .parse::<u64>()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_VERSION",
                format!("release version {version:?} is not a number like 3 or v3"),
            )
        })?;
    Ok(Json(state.paz.release(&name, number).await?))
}

/// Lists a service's deployments, oldest first: its deploy history.
#[utoipa::path(get, path = "/v1/services/{name}/deployments", tag = "deploys", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Deployment>), (status = 404, body = ErrorResponse)))]
pub async fn deployments(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<Deployment>>> {
    Ok(Json(state.paz.deployments(&name).await?))
}

/// Reads one deployment (ids look like `web-3`).
#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deploys", params(("id" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = ErrorResponse)))]
pub async fn deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deployment>> {
    Ok(Json(state.paz.deployment(&id).await?))
}

/// Lists the hosts that run Paz.
#[utoipa::path(get, path = "/v1/hosts", tag = "system", responses((status = 200, body = Vec<Host>)))]
pub async fn hosts(State(state): State<AppState>) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(state.paz.hosts().await?))
}

/// The cluster: the replicas sharing the store, the leader, the routers and the store's
/// health (a single server: no replicas, the local store's health).
#[utoipa::path(get, path = "/v1/cluster", tag = "system",
    responses((status = 200, body = paz_core::cluster::ClusterStatus), (status = 401, body = ErrorResponse),
        (status = 503, body = ErrorResponse)))]
pub async fn cluster(
    State(state): State<AppState>,
) -> ApiResult<Json<paz_core::cluster::ClusterStatus>> {
    let store = state.paz.store();
    let health = store.health().await;
    let (replicas, leader) = paz_runtime::leader::replicas(store.as_ref()).await?;
    let routers = store
        .list(paz_runtime::announce::ROUTERS)
        .await?
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    Ok(Json(paz_core::cluster::ClusterStatus {
        replica: state.replica.clone(),
        leader,
        replicas,
        routers,
        store: health,
    }))
}

/// Streams events as Server-Sent Events: the event name is the event type, the id the
/// event's id (`<epoch>-<sequence>`), the data the event as JSON. A client that reconnects
/// with `Last-Event-ID` gets the events it missed first (the server keeps the last 4,096); a
/// `resync` event means some cannot be given (too old, or the server restarted): re-read the
/// state.
#[utoipa::path(get, path = "/v1/events", tag = "system",
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event seen: resume after it")),
    responses((status = 200, content_type = "text/event-stream", body = paz_core::Event)))]
pub async fn events(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    use futures_util::StreamExt;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let (replay, receiver) = state.paz.subscribe_since(last_id);
    let visible = {
        let caller = caller.clone();
        move |event: &paz_core::Event| caller.sees_service(event.kind.service())
    };
    let missed: Vec<SseEvent> = match replay {
        paz_core::event::Replay::Events(events) => events
            .iter()
            .filter(|e| visible(e))
            .map(sse_event)
            .collect(),
        paz_core::event::Replay::Gap => vec![resync("the events after Last-Event-ID are gone")],
    };
    let live = futures_util::stream::unfold(receiver, move |mut receiver| {
        let visible = visible.clone();
        async move {
            let event = loop {
                match receiver.recv().await {
                    // A deploy token sees only its services' events.
                    Ok(event) if !visible(&event) => continue,
                    other => break other,
                }
            };
            let event = match event {
                Ok(event) => sse_event(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    resync("this client fell behind the events")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(event), receiver))
        }
    });
    let stream = futures_util::stream::iter(missed.into_iter().map(Ok)).chain(live);
    let mut shutdown = state.shutdown.clone();
    let stream = stream.take_until(async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn sse_event(event: &paz_core::Event) -> SseEvent {
    SseEvent::default()
        .event(event.kind.name())
        .id(event.id.clone())
        .json_data(event)
        .unwrap_or_else(|_| resync("an event could not be encoded"))
}

fn resync(reason: &str) -> SseEvent {
    SseEvent::default()
        .event("resync")
        .json_data(serde_json::json!({ "reason": reason }))
        .unwrap_or_default()
}

/// Moves a canary deployment to its next traffic step.
#[utoipa::path(post, path = "/v1/services/{name}/promote", tag = "deploys", params(("name" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn promote(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Deployment>> {
    let deployment = state.paz.promote(&name).await?;
    wake(&state, &name);
    Ok(Json(deployment))
}

/// Aborts the running deployment: it fails and the previous release keeps serving.
#[utoipa::path(post, path = "/v1/services/{name}/abort", tag = "deploys", params(("name" = String, Path)),
    responses((status = 200, body = Deployment), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn abort(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Deployment>> {
    let deployment = state.paz.abort(&name).await?;
    wake(&state, &name);
    Ok(Json(deployment))
}

/// Makes the service due at once (the engine's event does too; this saves the hop).
fn wake(state: &AppState, service: &str) {
    if let Some(reconciler) = &state.reconciler() {
        reconciler.wake(service);
    }
}

async fn instances_of(state: &AppState, name: &str) -> ApiResult<Vec<Instance>> {
    Ok(state.instances(name).unwrap_or_default())
}

/// Lists a service's instances.
#[utoipa::path(get, path = "/v1/services/{name}/instances", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Instance>), (status = 404, body = ErrorResponse)))]
pub async fn instances(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<Instance>>> {
    state.paz.service(&name).await?;
    Ok(Json(instances_of(&state, &name).await?))
}

/// A service's status: its latest deployment, instances and problems.
#[utoipa::path(get, path = "/v1/services/{name}/status", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceStatus), (status = 404, body = ErrorResponse)))]
pub async fn status(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ServiceStatus>> {
    let service = state.paz.service(&name).await?;
    let deployment = state.paz.latest_deployment(&name).await?;
    let (instances, mut problems) = match (state.reconciler(), state.instances(&name)) {
        (Some(reconciler), _) => (reconciler.instances(&name), reconciler.problems(&name)),
        // A replica that does not lead: the instances the leader announced.
        (None, Some(announced)) => (announced, Vec::new()),
        (None, None) => (
            Vec::new(),
            vec!["this server runs no scheduler (--scheduler none)".to_owned()],
        ),
    };
    if let Some(certificates) = &state.certificates {
        let spec = &service.spec;
        let names: Vec<String> = spec
            .public
            .then(|| format!("{}.{}", spec.name, state.paz.config().domain))
            .into_iter()
            .chain(spec.domains.iter().cloned())
            .collect();
        problems.extend(certificates.problems(&names));
    }
    Ok(Json(ServiceStatus {
        service,
        deployment,
        instances,
        problems,
    }))
}

/// Options of the logs endpoint.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Keep streaming new lines.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines of each instance's past output.
    pub tail: Option<usize>,
}

/// The output of a service's instances as newline-delimited JSON `LogLine`s.
#[utoipa::path(get, path = "/v1/services/{name}/logs", tag = "services", params(("name" = String, Path), LogsQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = paz_core::scheduler::LogLine),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn logs(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    state.paz.service(&name).await?;
    let Some(scheduler) = state.reconciler().map(|r| r.scheduler().clone()) else {
        if state.replica.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "NOT_LEADER",
                "this replica does not lead the cluster, and logs come from the leader's \
                 scheduler: ask the leader's API (`paz status --cluster` shows it)",
            ));
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NO_SCHEDULER",
            "this server runs no scheduler (--scheduler none), so there are no logs",
        ));
    };
    let options = paz_core::scheduler::LogOptions {
        follow: query.follow,
        tail: query.tail,
    };
    let mut streams = Vec::new();
    for instance in scheduler.list(Some(&name)).await? {
        match scheduler.logs(&instance.id, options.clone()).await {
            Ok(stream) => streams.push(stream),
            Err(error) => tracing::debug!(id = %instance.id, %error, "no logs for instance"),
        }
    }
    let mut shutdown = state.shutdown.clone();
    let lines = futures_util::stream::select_all(streams)
        .filter_map(|line| async move { line.ok() })
        .map(|line| {
            let mut text = serde_json::to_vec(&line).unwrap_or_default();
            text.push(b'\n');
            Ok::<_, Infallible>(axum::body::Bytes::from(text))
        })
        .take_until(async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        });
    let headers = [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")];
    Ok((headers, axum::body::Body::from_stream(lines)).into_response())
}

/// Makes a scoped token; the answer holds the token, shown this once (it is stored hashed).
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse),
        (status = 403, body = ErrorResponse)))]
pub async fn create_token(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let new = crate::auth::generate()?;
    let created_at = jiff::Timestamp::now();
    let expires_at = match request.expires_in {
        Some(ttl) if ttl.get().is_zero() => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_EXPIRY",
                "expires_in must be above zero",
            ));
        }
        // Past the last representable time (year 9999) it expires then.
        Some(ttl) => Some(
            jiff::SignedDuration::try_from(ttl.get())
                .ok()
                .and_then(|d| created_at.checked_add(d).ok())
                .unwrap_or(jiff::Timestamp::MAX),
        ),
        None => None,
    };
    let info = state
        .paz
        .create_token(TokenRecord {
            info: TokenInfo {
                id: new.id,
                name: request.name,
                scope: request.scope,
                services: request.services,
                created_at,
                expires_at,
            },
            hash: new.hash,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: new.token,
            info,
        }),
    ))
}

/// Lists the scoped tokens (never the tokens themselves).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 403, body = ErrorResponse)))]
pub async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(state.paz.tokens().await?))
}

/// Revokes a token (by name or id): it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "The token's name or id")),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorResponse), (status = 403, body = ErrorResponse)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    Ok(Json(state.paz.revoke_token(&token).await?))
}

/// The router's metrics in the Prometheus text format (empty without a router).
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = state.metrics.as_ref().map(|m| m()).unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}
