//! Deploy hooks over HTTP: the three endpoints a registry or CI calls (outside the bearer
//! token middleware: the hook's secret is the credential), the hook management operations
//! under `/v1/services/{name}/hooks`, and the delivery log.
//!
//! - `POST /v1/hooks/dockerhub/{secret}`: Docker Hub's post-push payload. The URL holds the
//!   secret (Docker Hub signs nothing); its SHA-256 is compared in constant time. The pushed
//!   tag of the service's repository is deployed and the result is POSTed to the payload's
//!   `callback_url` when its host is allowed (`--hook-callback-host`).
//! - `POST /v1/hooks/registry`: a CNCF distribution registry's notifications
//!   (`events.v1+json`, `events.v2+json`) with `Authorization: Bearer <secret>`. Only manifest
//!   pushes count; an event id is deployed once; a digest already deployed is not deployed
//!   again. Event-level outcomes answer 200 (a registry retries every other answer forever).
//! - `POST /v1/hooks/deploy`: a CI job's JSON, signed `X-Paz-Signature: sha256=<HMAC-SHA256 of
//!   the raw body with the secret>`, with a timestamp (±5 min) and an idempotency key.
//!
//! Every delivery is recorded: in the store once a hook's credential matched, in this
//! server's memory (the newest 1,000) before that, so anonymous requests never write.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use paz_core::api::ErrorResponse;
use paz_core::hook::{
    CiDeployRequest, CreateHookRequest, CreatedHook, Delivery, DeliveryKey, DockerHubPayload,
    HookAnswer, HookInfo, HookRecord, HookSecret, HookSource, REGISTRY_EVENTS_V1,
    REGISTRY_EVENTS_V2, RegistryAnswer, RegistryEnvelope, RegistryEvent, UpdateHookRequest,
    Verdict,
};
use paz_core::image::ImageRef;
use paz_core::{Deployment, Trigger, TriggerKind};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, body_rejection, json_content_type};

/// How many deliveries a server keeps in memory (rejections before a credential matched).
pub const MEMORY_LOG: usize = 1000;
/// How long a Docker Hub callback waits for its deployment to end.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(3600);
/// How long the callback request itself may take.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The signature header of `POST /v1/hooks/deploy`.
pub const SIGNATURE_HEADER: &str = "x-paz-signature";

/// What the hook endpoints share: the in-memory delivery log, one lock per service (so two
/// deliveries for a service are decided one after the other: the same digest deploys once)
/// and where Docker Hub callbacks may go.
pub struct HookState {
    log: Mutex<VecDeque<Delivery>>,
    counter: AtomicU64,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    callback_hosts: Vec<String>,
    http: std::sync::OnceLock<Option<reqwest::Client>>,
}

impl Default for HookState {
    fn default() -> Self {
        HookState::new(vec![DEFAULT_CALLBACK_HOST.to_owned()])
    }
}

/// Where Docker Hub sends its callback URLs from.
pub const DEFAULT_CALLBACK_HOST: &str = "registry.hub.docker.com";

impl HookState {
    /// Callbacks go only to these hosts (`https`; plain `http` only for loopback ones).
    pub fn new(callback_hosts: Vec<String>) -> Self {
        HookState {
            log: Mutex::new(VecDeque::new()),
            counter: AtomicU64::new(0),
            locks: Mutex::new(HashMap::new()),
            callback_hosts: callback_hosts
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            http: std::sync::OnceLock::new(),
        }
    }

    /// Keeps a delivery in memory only, giving it its id (`m<n>`).
    fn remember(&self, mut delivery: Delivery) -> Delivery {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        delivery.id = format!("m{n}");
        delivery.stored = false;
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push_back(delivery.clone());
        while log.len() > MEMORY_LOG {
            log.pop_front();
        }
        delivery
    }

    /// The deliveries kept in memory, oldest first; of one service, or all.
    pub fn memory(&self, service: Option<&str>) -> Vec<Delivery> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|d| service.is_none_or(|s| d.service.as_deref() == Some(s)))
            .cloned()
            .collect()
    }

    async fn lock(&self, service: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(service.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The callback URL when it may be called, or why not.
    pub fn callback_target(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let host = parsed
            .host_str()
            .map(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("it carries credentials".into());
        }
        if !self.callback_hosts.contains(&host) {
            return Err(format!(
                "host {host:?} is not one callbacks may go to (--hook-callback-host: {})",
                self.callback_hosts.join(", ")
            ));
        }
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if loopback => Ok(parsed),
            scheme => Err(format!(
                "{scheme}:// is refused: callbacks go over https (plain http only to loopback)"
            )),
        }
    }

    fn http(&self) -> Option<&reqwest::Client> {
        self.http
            .get_or_init(|| {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(CALLBACK_TIMEOUT)
                    .user_agent(concat!("paz-server/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|error| tracing::error!(%error, "no HTTP client for hook callbacks"))
                    .ok()
            })
            .as_ref()
    }
}

/// The span of each API request (the trace layer's), with a Docker Hub hook's secret cut
/// from the path: that URL is a credential and must not reach the logs.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let uri = request.uri();
    let shown = if uri.path().starts_with("/v1/hooks/dockerhub/") {
        "/v1/hooks/dockerhub/<secret>".to_owned()
    } else {
        uri.to_string()
    };
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %shown,
        version = ?request.version(),
    )
}

// ---------------------------------------------------------------------------------------
// Secrets.

/// A new hook secret: `hook_<12 hex id>_<64 hex secret>`.
struct NewSecret {
    secret: String,
    id: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn generate() -> ApiResult<NewSecret> {
    let mut bytes = [0u8; 38];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("no random bytes for a hook secret: {e}"),
        )
    })?;
    let (id, secret) = bytes.split_at(6);
    let id = hex(id);
    Ok(NewSecret {
        secret: format!("hook_{id}_{}", hex(secret)),
        id,
    })
}

/// The id and secret part of a hook secret, if it looks like one.
fn parse_secret(secret: &str) -> Option<(&str, &str)> {
    let rest = secret.strip_prefix("hook_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

/// The stored form of a new secret: hashed, or sealed for CI (the HMAC needs the key).
fn store_secret(
    state: &AppState,
    service: &str,
    source: HookSource,
    new: &NewSecret,
) -> ApiResult<HookSecret> {
    match source {
        HookSource::Ci => Ok(state
            .paz
            .seal_hook_secret(service, source, &new.id, &new.secret)?),
        HookSource::Dockerhub | HookSource::Registry => {
            let (_, secret) = parse_secret(&new.secret).expect("generated secrets parse");
            Ok(HookSecret::Sha256 {
                hash: sha256_hex(secret.as_bytes()),
            })
        }
    }
}

/// Where a hook's deliveries go.
fn hook_path(source: HookSource, secret: &str) -> String {
    match source {
        HookSource::Dockerhub => format!("/v1/hooks/dockerhub/{secret}"),
        HookSource::Registry => "/v1/hooks/registry".to_owned(),
        HookSource::Ci => "/v1/hooks/deploy".to_owned(),
    }
}

/// Whether `secret` (the part after the id) is the hashed one of `record`, in constant time.
fn hash_matches(record: &HookRecord, secret: &str) -> bool {
    match &record.secret {
        HookSecret::Sha256 { hash } => crate::token::matches(&sha256_hex(secret.as_bytes()), hash),
        HookSecret::Sealed { .. } => false,
    }
}

// ---------------------------------------------------------------------------------------
// Recording.

/// A delivery being decided: what is known of it so far.
struct Draft {
    delivery: Delivery,
}

impl Draft {
    fn new(source: HookSource) -> Draft {
        Draft {
            delivery: Delivery {
                id: String::new(),
                service: None,
                source,
                received_at: jiff::Timestamp::now(),
                verdict: Verdict::Rejected,
                status: 0,
                code: String::new(),
                reason: String::new(),
                tag: None,
                image: None,
                digest: None,
                deployment: None,
                key: None,
                callback: None,
                stored: false,
            },
        }
    }

    fn outcome(&self, verdict: Verdict, status: StatusCode, code: &str, reason: &str) -> Delivery {
        let mut delivery = self.delivery.clone();
        delivery.verdict = verdict;
        delivery.status = status.as_u16();
        delivery.code = code.to_owned();
        delivery.reason = reason.to_owned();
        delivery
    }
}

/// Where a delivery is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Log {
    /// This server's memory: the credential did not match (or there was none).
    Memory,
    /// The store: a hook's credential matched.
    Store,
}

/// Records a delivery (in the store, or in memory when that fails) and returns it.
async fn record(state: &AppState, log: Log, delivery: Delivery) -> Delivery {
    tracing::info!(
        source = %delivery.source,
        service = delivery.service.as_deref().unwrap_or("-"),
        verdict = %delivery.verdict,
        code = %delivery.code,
        deployment = delivery.deployment.as_deref().unwrap_or("-"),
        "hook delivery: {}",
        delivery.reason
    );
    if log == Log::Store {
        match state.paz.record_delivery(delivery.clone()).await {
            Ok(stored) => return stored,
            Err(error) => {
                tracing::warn!(%error, "cannot store the delivery; keeping it in memory")
            }
        }
    }
    state.hooks.remember(delivery)
}

/// Records a refused delivery and answers it: the status, its code, the reason and the
/// delivery's id.
async fn refuse(
    state: &AppState,
    draft: &Draft,
    log: Log,
    status: StatusCode,
    code: &str,
    reason: &str,
) -> ApiError {
    let verdict = if status.is_server_error() {
        Verdict::Failed
    } else {
        Verdict::Rejected
    };
    let delivery = record(state, log, draft.outcome(verdict, status, code, reason)).await;
    ApiError::new(status, code, format!("{reason} (delivery {})", delivery.id))
}

/// A delivery's body, or its refusal recorded in `log` (a body too large or cut off).
async fn body_of(
    state: &AppState,
    draft: &Draft,
    log: Log,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    match body {
        Ok(body) => Ok(body),
        Err(rejection) => {
            let error = body_rejection(rejection);
            Err(refuse(
                state,
                draft,
                log,
                error.status,
                &error.body.code,
                &error.body.message,
            )
            .await)
        }
    }
}

/// `body` as a `T`, or a recorded `INVALID_PAYLOAD` refusal saying "`not_a`: <why>".
async fn payload_of<T: serde::de::DeserializeOwned>(
    state: &AppState,
    draft: &Draft,
    log: Log,
    body: &[u8],
    not_a: &str,
) -> Result<T, ApiError> {
    match serde_json::from_slice(body) {
        Ok(payload) => Ok(payload),
        Err(e) => {
            let reason = format!("{not_a}: {e}");
            Err(refuse(
                state,
                draft,
                log,
                StatusCode::BAD_REQUEST,
                "INVALID_PAYLOAD",
                &reason,
            )
            .await)
        }
    }
}

/// Records a delivery that could not deploy because of `error` and answers it.
async fn failed(state: &AppState, draft: &Draft, error: paz_core::Error) -> ApiError {
    let answer = ApiError::from(error);
    let status = answer.status;
    refuse(
        state,
        draft,
        Log::Store,
        status,
        &answer.body.code,
        &answer.body.message,
    )
    .await
}

fn answer_of(delivery: &Delivery, release: Option<u64>) -> HookAnswer {
    HookAnswer {
        delivery: delivery.id.clone(),
        verdict: delivery.verdict,
        code: delivery.code.clone(),
        message: delivery.reason.clone(),
        deployment: delivery.deployment.clone(),
        release,
    }
}

/// Records a deployed delivery and answers 202 with the deployment.
async fn deployed(
    state: &AppState,
    draft: &Draft,
    deployment: &Deployment,
    reason: &str,
) -> (Delivery, HookAnswer) {
    let mut outcome = draft.outcome(Verdict::Deployed, StatusCode::ACCEPTED, "DEPLOYED", reason);
    outcome.deployment = Some(deployment.id.clone());
    let delivery = record(state, Log::Store, outcome).await;
    let answer = answer_of(&delivery, Some(deployment.release));
    (delivery, answer)
}

fn wake(state: &AppState, service: &str) {
    if let Some(reconciler) = &state.reconciler() {
        reconciler.wake(service);
    }
}

fn trigger(source: HookSource, message: String) -> Trigger {
    Trigger {
        kind: TriggerKind::Webhook,
        by: Some(format!("hook:{source}")),
        message: Some(message),
    }
}

/// The image of the service, parsed.
fn service_image(image: &str) -> Result<ImageRef, paz_core::Error> {
    ImageRef::parse(image)
        .map_err(|e| paz_core::Error::invalid("image", "INVALID_IMAGE", e.to_string()))
}

/// The live hook whose secret is `secret`, of `source`, or `None`.
async fn hook_of_secret(
    state: &AppState,
    secret: &str,
    source: HookSource,
) -> ApiResult<Option<HookRecord>> {
    let Some((id, part)) = parse_secret(secret) else {
        return Ok(None);
    };
    let record = state.paz.hook_by_id(id).await?;
    Ok(record.filter(|r| r.info.source == source && hash_matches(r, part)))
}

// ---------------------------------------------------------------------------------------
// Docker Hub.

/// Docker Hub's post-push webhook. The URL is the credential: it is not found unless it is a
/// Docker Hub hook's. Deploys the pushed tag of the service's repository when the hook's tag
/// filter allows it, then reports the deployment's result to the payload's `callback_url`.
#[utoipa::path(post, path = "/v1/hooks/dockerhub/{hook_secret}", tag = "hooks", security(()),
    request_body(content = DockerHubPayload, description = "Docker Hub's post-push payload (other fields are ignored)."),
    params(("hook_secret" = String, Path, description = "The hook's secret, as `paz hook create --source dockerhub` printed it")),
    responses(
        (status = 202, body = HookAnswer, description = "Deployed: follow the deployment."),
        (status = 400, body = ErrorResponse, description = "The payload is malformed (`INVALID_PAYLOAD`)."),
        (status = 403, body = ErrorResponse, description = "The push is not for this service's repository (`REPOSITORY_MISMATCH`) or its tag does not pass the hook's filter (`TAG_FILTERED`)."),
        (status = 404, body = ErrorResponse, description = "No Docker Hub hook has this URL (`HOOK_NOT_FOUND`)."),
        (status = 413, body = ErrorResponse, description = "The body is larger than 1 MiB (`BODY_TOO_LARGE`)."),
    ))]
pub async fn dockerhub(
    State(state): State<AppState>,
    ApiPath(secret): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    let mut draft = Draft::new(HookSource::Dockerhub);
    let Some(hook) = hook_of_secret(&state, &secret, HookSource::Dockerhub).await? else {
        if let Some((id, _)) = parse_secret(&secret)
            && let Ok(Some(record)) = state.paz.hook_by_id(id).await
        {
            draft.delivery.service = Some(record.info.service);
        }
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            StatusCode::NOT_FOUND,
            "HOOK_NOT_FOUND",
            "no Docker Hub hook has this URL",
        )
        .await);
    };
    let name = hook.info.service.clone();
    draft.delivery.service = Some(name.clone());
    let _one_at_a_time = state.hooks.lock(&name).await;
    let body = body_of(&state, &draft, Log::Store, body).await?;
    let payload: DockerHubPayload = payload_of(
        &state,
        &draft,
        Log::Store,
        &body,
        "the body is not Docker Hub's push payload",
    )
    .await?;
    let tag = payload.push_data.tag.clone();
    draft.delivery.tag = Some(tag.clone());
    if let Err(reason) = paz_core::image::check_tag(&tag) {
        return Err(refuse(
            &state,
            &draft,
            Log::Store,
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
            &reason,
        )
        .await);
    }
    let service = match state.paz.service(&name).await {
        Ok(service) => service,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    let image = match service_image(&service.spec.image) {
        Ok(image) => image,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    let pushed = paz_core::hook::normalize_hub_name(&payload.repository.repo_name);
    match paz_core::hook::docker_hub_name(&image) {
        Some(own) if own == pushed => {}
        own => {
            let reason = match own {
                Some(own) => format!("the push is to {pushed}, not to {name}'s repository {own}"),
                None => format!("{name}'s image {} is not on Docker Hub", service.spec.image),
            };
            return Err(refuse(
                &state,
                &draft,
                Log::Store,
                StatusCode::FORBIDDEN,
                "REPOSITORY_MISMATCH",
                &reason,
            )
            .await);
        }
    }
    let target = paz_core::hook::image_at_tag(&image, &tag);
    draft.delivery.image = Some(target.clone());
    if !paz_core::hook::tag_matches(hook.info.tag.as_deref(), &tag) {
        let reason = format!(
            "tag {tag:?} does not pass the hook's filter {:?}",
            hook.info.tag.as_deref().unwrap_or("*")
        );
        return Err(refuse(
            &state,
            &draft,
            Log::Store,
            StatusCode::FORBIDDEN,
            "TAG_FILTERED",
            &reason,
        )
        .await);
    }
    let callback = payload
        .callback_url
        .as_deref()
        .map(|url| state.hooks.callback_target(url));
    if let Some(Err(reason)) = &callback {
        draft.delivery.callback = Some(format!("not sent: {reason}"));
    }
    let message = format!("Docker Hub push of {pushed}:{tag}");
    let deployment = match state
        .paz
        .deploy(
            &name,
            Some(target.clone()),
            trigger(HookSource::Dockerhub, message.clone()),
        )
        .await
    {
        Ok(deployment) => deployment,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    wake(&state, &name);
    let reason = format!(
        "{message}: deploying {target} as release v{}",
        deployment.release
    );
    let (delivery, answer) = deployed(&state, &draft, &deployment, &reason).await;
    if let Some(Ok(url)) = callback {
        tokio::spawn(report_to_docker_hub(
            state.clone(),
            delivery.id.clone(),
            deployment.id.clone(),
            url,
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Waits for the deployment to end (at most [`CALLBACK_DEADLINE`]), POSTs its result to
/// Docker Hub's callback URL and records what became of that on the delivery.
async fn report_to_docker_hub(
    state: AppState,
    delivery: String,
    deployment: String,
    url: reqwest::Url,
) {
    let mut events = state.paz.subscribe();
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::Instant::now() + CALLBACK_DEADLINE;
    let outcome = loop {
        match state.paz.deployment(&deployment).await {
            Ok(d) if d.status.is_final() => break Some(d),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, %deployment, "cannot follow the deployment for a callback");
                break None;
            }
        }
        let stopping = tokio::select! {
            _ = events.recv() => false,
            // A missed event is caught by looking again now and then.
            _ = tokio::time::sleep(Duration::from_secs(5)) => false,
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stopping {
            let _ = state
                .paz
                .set_delivery_callback(&delivery, "not sent: the server stopped first")
                .await;
            return;
        }
    };
    let (callback_state, description) = match &outcome {
        Some(d) if d.status == paz_core::DeploymentStatus::Succeeded => (
            "success",
            format!("Paz deployed {} (release v{})", deployment, d.release),
        ),
        Some(d) => (
            "failure",
            format!(
                "Paz deployment {deployment} {}: {}",
                d.status,
                d.error.as_deref().unwrap_or("no reason given")
            ),
        ),
        None => (
            "error",
            format!("Paz deployment {deployment} did not end in time"),
        ),
    };
    let description: String = description.chars().take(255).collect();
    let body = serde_json::json!({
        "state": callback_state,
        "description": description,
        "context": "paz",
    });
    let result = match state.hooks.http() {
        Some(http) => match http.post(url.clone()).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                format!(
                    "{callback_state} sent (HTTP {})",
                    response.status().as_u16()
                )
            }
            Ok(response) => format!(
                "{callback_state} sent, refused with HTTP {}",
                response.status().as_u16()
            ),
            Err(error) => format!("{callback_state} not sent: {error}"),
        },
        None => format!("{callback_state} not sent: no HTTP client"),
    };
    tracing::info!(%delivery, %deployment, host = url.host_str().unwrap_or(""), %result, "Docker Hub callback");
    if let Err(error) = state.paz.set_delivery_callback(&delivery, &result).await {
        tracing::warn!(%error, %delivery, "cannot record the callback's result");
    }
}

// ---------------------------------------------------------------------------------------
// Registry notifications.

/// A registry's notifications (CNCF distribution: docker-registry 2.x sends
/// `application/vnd.docker.distribution.events.v1+json`, distribution 3 `…events.v2+json`),
/// with the hook's secret as a bearer token. Each manifest push of the service's repository
/// whose tag passes the filter deploys exactly its digest; blobs, pulls and other
/// repositories are skipped. An event id seen before, or a digest already deployed, is not
/// deployed again. Outcomes of single events answer 200 (a registry retries any other answer
/// until it succeeds, holding back the events after it).
#[utoipa::path(post, path = "/v1/hooks/registry", tag = "hooks", security(("hook" = [])),
    request_body(content(
        (RegistryEnvelope = "application/vnd.docker.distribution.events.v1+json"),
        (RegistryEnvelope = "application/vnd.docker.distribution.events.v2+json"),
        (RegistryEnvelope = "application/json"),
    )),
    responses(
        (status = 200, body = RegistryAnswer, description = "What became of each manifest push."),
        (status = 400, body = ErrorResponse, description = "The envelope is malformed (`INVALID_PAYLOAD`)."),
        (status = 401, body = ErrorResponse, description = "No bearer token, or not a registry hook's (`UNAUTHORIZED`, `INVALID_HOOK_TOKEN`)."),
        (status = 413, body = ErrorResponse, description = "The body is larger than 1 MiB (`BODY_TOO_LARGE`)."),
        (status = 415, body = ErrorResponse, description = "Not an event envelope's media type (`UNSUPPORTED_MEDIA_TYPE`)."),
    ))]
pub async fn registry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<RegistryAnswer>> {
    let mut draft = Draft::new(HookSource::Registry);
    let token = match headers.get(header::AUTHORIZATION) {
        None => {
            return Err(refuse(
                &state,
                &draft,
                Log::Memory,
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "send the hook's secret as 'Authorization: Bearer <secret>' (the endpoint's headers in the registry's config)",
            )
            .await);
        }
        Some(value) => {
            let value = value.to_str().unwrap_or("").trim();
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or("")
                .trim()
                .to_owned()
        }
    };
    let Some(hook) = hook_of_secret(&state, &token, HookSource::Registry).await? else {
        if let Some((id, _)) = parse_secret(&token)
            && let Ok(Some(record)) = state.paz.hook_by_id(id).await
        {
            draft.delivery.service = Some(record.info.service);
        }
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            StatusCode::UNAUTHORIZED,
            "INVALID_HOOK_TOKEN",
            "the bearer token is not a registry hook's secret",
        )
        .await);
    };
    let name = hook.info.service.clone();
    draft.delivery.service = Some(name.clone());
    let _one_at_a_time = state.hooks.lock(&name).await;
    if !envelope_media_type(&headers) {
        let reason =
            format!("send an event envelope as {REGISTRY_EVENTS_V1} or {REGISTRY_EVENTS_V2}");
        return Err(refuse(
            &state,
            &draft,
            Log::Store,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            &reason,
        )
        .await);
    }
    let body = body_of(&state, &draft, Log::Store, body).await?;
    let envelope: RegistryEnvelope = payload_of(
        &state,
        &draft,
        Log::Store,
        &body,
        "the body is not a registry's event envelope",
    )
    .await?;
    let service = match state.paz.service(&name).await {
        Ok(service) => service,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    let image = match service_image(&service.spec.image) {
        Ok(image) => image,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    let mut answer = RegistryAnswer {
        deliveries: Vec::new(),
        skipped: 0,
    };
    let mut failure = None;
    for event in &envelope.events {
        if !event.is_manifest_push() {
            answer.skipped += 1;
            continue;
        }
        let outcome = registry_event(&state, &hook, &image, event).await;
        match outcome {
            Ok(one) => answer.deliveries.push(one),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        // The registry sends the envelope again later: its events deploy then.
        return Err(error);
    }
    if answer.deliveries.is_empty() {
        let reason = format!(
            "{} event(s), none a manifest push of {name}'s repository (blobs, pulls)",
            envelope.events.len()
        );
        record(
            &state,
            Log::Memory,
            draft.outcome(
                Verdict::Ignored,
                StatusCode::OK,
                "NOT_A_MANIFEST_PUSH",
                &reason,
            ),
        )
        .await;
    }
    Ok(Json(answer))
}

/// Whether the request's content type is an event envelope's (or plain JSON).
fn envelope_media_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    [REGISTRY_EVENTS_V1, REGISTRY_EVENTS_V2, "application/json"]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
}

/// One manifest push: deploys it, or says why not. `Err` only for a failure the registry
/// should retry (the store, the service's state).
async fn registry_event(
    state: &AppState,
    hook: &HookRecord,
    image: &ImageRef,
    event: &RegistryEvent,
) -> ApiResult<HookAnswer> {
    let name = &hook.info.service;
    let target = &event.target;
    let mut draft = Draft::new(HookSource::Registry);
    draft.delivery.service = Some(name.clone());
    draft.delivery.key = (!event.id.is_empty()).then(|| event.id.clone());
    draft.delivery.tag = target.tag.clone();
    draft.delivery.digest = (!target.digest.is_empty()).then(|| target.digest.clone());
    let ignored = async |draft: &Draft, log: Log, code: &str, reason: &str| {
        let delivery = record(
            state,
            log,
            draft.outcome(Verdict::Ignored, StatusCode::OK, code, reason),
        )
        .await;
        answer_of(&delivery, None)
    };
    if target.repository != image.repository {
        let reason = format!(
            "a push to {}, not to {name}'s repository {}",
            target.repository, image.repository
        );
        return Ok(ignored(&draft, Log::Memory, "REPOSITORY_MISMATCH", &reason).await);
    }
    if let Err(reason) = paz_core::image::check_digest(&target.digest) {
        return Ok(ignored(&draft, Log::Store, "INVALID_EVENT", &reason).await);
    }
    let Some(tag) = target.tag.clone() else {
        return Ok(ignored(
            &draft,
            Log::Store,
            "NO_TAG",
            "a push by digest names no tag",
        )
        .await);
    };
    if let Err(reason) = paz_core::image::check_tag(&tag) {
        return Ok(ignored(&draft, Log::Store, "INVALID_EVENT", &reason).await);
    }
    let pin = paz_core::hook::image_at_digest(image, &target.digest);
    let tagged = paz_core::hook::image_at_tag(image, &tag);
    draft.delivery.image = Some(tagged.clone());
    if !paz_core::hook::tag_matches(hook.info.tag.as_deref(), &tag) {
        let reason = format!(
            "tag {tag:?} does not pass the hook's filter {:?}",
            hook.info.tag.as_deref().unwrap_or("*")
        );
        return Ok(ignored(&draft, Log::Store, "TAG_FILTERED", &reason).await);
    }
    let key_id =
        (!event.id.is_empty()).then(|| sha256_hex(format!("registry:{}", event.id).as_bytes()));
    if let Some(key_id) = &key_id {
        let claim = DeliveryKey {
            key: event.id.clone(),
            body: None,
            at: draft.delivery.received_at,
            delivery: None,
            deployment: None,
        };
        if let Some(seen) = state.paz.claim_delivery_key(name, key_id, claim).await? {
            draft.delivery.deployment = seen.deployment.clone();
            let reason = format!(
                "event {} was delivered before{}",
                event.id,
                seen.delivery
                    .map(|d| format!(" (delivery {d})"))
                    .unwrap_or_default()
            );
            return Ok(ignored(&draft, Log::Store, "DUPLICATE_EVENT", &reason).await);
        }
    }
    let result = async {
        if let Some(running) = deployed_digest(state, name, &target.digest).await? {
            draft.delivery.deployment = Some(running.clone());
            let reason = format!(
                "{} is deployed already (deployment {running})",
                target.digest
            );
            return Ok::<_, paz_core::Error>(Err(reason));
        }
        let message = format!("registry push of {}:{tag}", image.repository);
        state
            .paz
            .deploy_pinned(
                name,
                Some(tagged.clone()),
                Some(pin.clone()),
                trigger(HookSource::Registry, message),
            )
            .await
            .map(Ok)
    }
    .await;
    match result {
        Ok(Ok(deployment)) => {
            wake(state, name);
            let reason = format!(
                "registry push of {tagged}: deploying {pin} as release v{}",
                deployment.release
            );
            let (delivery, answer) = deployed(state, &draft, &deployment, &reason).await;
            if let Some(key_id) = &key_id {
                state
                    .paz
                    .settle_delivery_key(name, key_id, &delivery.id, Some(&deployment.id))
                    .await?;
            }
            Ok(answer)
        }
        Ok(Err(reason)) => {
            let answer = ignored(&draft, Log::Store, "ALREADY_DEPLOYED", &reason).await;
            if let Some(key_id) = &key_id {
                state
                    .paz
                    .settle_delivery_key(
                        name,
                        key_id,
                        &answer.delivery,
                        answer.deployment.as_deref(),
                    )
                    .await?;
            }
            Ok(answer)
        }
        Err(error) => {
            if let Some(key_id) = &key_id
                && let Err(e) = state.paz.forget_delivery_key(name, key_id).await
            {
                tracing::warn!(error = %e, "cannot forget the key of a delivery that failed");
            }
            Err(failed(state, &draft, error).await)
        }
    }
}

/// The deployment that runs, or is rolling out, `digest` for `service`, if one does: the
/// same digest pushed twice deploys once.
async fn deployed_digest(
    state: &AppState,
    service: &str,
    digest: &str,
) -> paz_core::Result<Option<String>> {
    let record = state.paz.service(service).await?;
    let Some(latest) = state.paz.latest_deployment_of(&record).await? else {
        return Ok(None);
    };
    if latest.status == paz_core::DeploymentStatus::Failed
        || latest.status == paz_core::DeploymentStatus::Cancelled
    {
        // The release it tried is not running; the current one may be.
        let Some(current) = record.current_release else {
            return Ok(None);
        };
        let release = state.paz.release(service, current).await?;
        return Ok(release
            .image_digest
            .filter(|pin| paz_core::hook::digest_of(pin) == digest)
            .map(|_| format!("release v{current}")));
    }
    let release = state.paz.release(service, latest.release).await?;
    Ok(release
        .image_digest
        .filter(|pin| paz_core::hook::digest_of(pin) == digest)
        .map(|_| latest.id))
}

// ---------------------------------------------------------------------------------------
// CI.

/// The part of a CI body read before its signature is checked: which service's secret
/// signs it.
#[derive(serde::Deserialize)]
struct Addressed {
    service: String,
}

/// A CI job's deploy: the JSON body is signed with the service's CI hook secret
/// (`X-Paz-Signature: sha256=<hex HMAC-SHA256 of the raw body>`), carries a timestamp (at
/// most 5 minutes off) and an idempotency key (a key seen before is refused: a captured
/// request cannot be replayed). Answers 202 with the deployment to follow.
#[utoipa::path(post, path = "/v1/hooks/deploy", tag = "hooks", security(()),
    request_body = CiDeployRequest,
    params(("X-Paz-Signature" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the hook's secret")),
    responses(
        (status = 202, body = HookAnswer, description = "Deployed: follow the deployment."),
        (status = 400, body = ErrorResponse, description = "The body is malformed (`INVALID_PAYLOAD`)."),
        (status = 401, body = ErrorResponse, description = "No signature, a wrong one, or a timestamp more than 5 minutes off (`SIGNATURE_MISSING`, `SIGNATURE_INVALID`, `STALE_TIMESTAMP`)."),
        (status = 403, body = ErrorResponse, description = "The image is not the service's repository (`REPOSITORY_MISMATCH`) or its tag does not pass the hook's filter (`TAG_FILTERED`)."),
        (status = 404, body = ErrorResponse, description = "The service has no CI hook (`HOOK_NOT_FOUND`)."),
        (status = 409, body = ErrorResponse, description = "The idempotency key was delivered before: nothing is deployed again (`DUPLICATE_DELIVERY`)."),
        (status = 413, body = ErrorResponse, description = "The body is larger than 1 MiB (`BODY_TOO_LARGE`)."),
        (status = 415, body = ErrorResponse, description = "The body is not sent as JSON (`UNSUPPORTED_MEDIA_TYPE`)."),
        (status = 422, body = ErrorResponse, description = "The idempotency key was used before with another body (`IDEMPOTENCY_KEY_REUSED`)."),
    ))]
pub async fn ci(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    let mut draft = Draft::new(HookSource::Ci);
    let unauthorized = StatusCode::UNAUTHORIZED;
    let Some(signature) = headers.get(SIGNATURE_HEADER) else {
        return Err(refuse(&state, &draft, Log::Memory, unauthorized, "SIGNATURE_MISSING", "sign the body: X-Paz-Signature: sha256=<hex HMAC-SHA256 of the body with the hook's secret>").await);
    };
    let signature = signature
        .to_str()
        .ok()
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(hex_bytes);
    let Some(signature) = signature else {
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            unauthorized,
            "SIGNATURE_INVALID",
            "X-Paz-Signature must be sha256=<64 hex digits>",
        )
        .await);
    };
    if !json_content_type(&headers) {
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with Content-Type: application/json",
        )
        .await);
    }
    let body = body_of(&state, &draft, Log::Memory, body).await?;
    let addressed: Addressed = payload_of(
        &state,
        &draft,
        Log::Memory,
        &body,
        "the body is not a deploy request",
    )
    .await?;
    let name = addressed.service;
    let no_hook = format!("service {name:?} has no CI hook");
    if paz_core::names::check_service_name(&name).is_err() {
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            StatusCode::NOT_FOUND,
            "HOOK_NOT_FOUND",
            &no_hook,
        )
        .await);
    }
    let hook = match state.paz.hook(&name, HookSource::Ci).await {
        Ok(hook) => hook,
        Err(paz_core::Error::NotFound { .. }) => {
            return Err(refuse(
                &state,
                &draft,
                Log::Memory,
                StatusCode::NOT_FOUND,
                "HOOK_NOT_FOUND",
                &no_hook,
            )
            .await);
        }
        Err(error) => return Err(error.into()),
    };
    draft.delivery.service = Some(name.clone());
    let Some(key) = state.paz.open_hook_secret(&hook)? else {
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            StatusCode::NOT_FOUND,
            "HOOK_NOT_FOUND",
            &no_hook,
        )
        .await);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    // Constant time (ring compares the tags so).
    if ring::hmac::verify(&key, &body, &signature).is_err() {
        return Err(refuse(
            &state,
            &draft,
            Log::Memory,
            unauthorized,
            "SIGNATURE_INVALID",
            "the signature does not match the body and the hook's secret",
        )
        .await);
    }
    // Signed by the hook's secret: recorded in the store from here on.
    let _one_at_a_time = state.hooks.lock(&name).await;
    let request: CiDeployRequest = payload_of(
        &state,
        &draft,
        Log::Store,
        &body,
        "the body is not a deploy request",
    )
    .await?;
    let body_hash = sha256_hex(&body);
    let key = match &request.idempotency_key {
        Some(key) => {
            if let Err(reason) = paz_core::hook::check_idempotency_key(key) {
                return Err(refuse(
                    &state,
                    &draft,
                    Log::Store,
                    StatusCode::BAD_REQUEST,
                    "INVALID_PAYLOAD",
                    &reason,
                )
                .await);
            }
            key.clone()
        }
        None => format!("sha256:{body_hash}"),
    };
    draft.delivery.key = Some(key.clone());
    let now = jiff::Timestamp::now();
    if !paz_core::hook::timestamp_fresh(request.timestamp, now) {
        let reason = format!(
            "the timestamp {} is {} s from the server's clock; at most {} s are accepted (send the current Unix time)",
            request.timestamp,
            now.as_second()
                .saturating_sub(request.timestamp)
                .unsigned_abs(),
            paz_core::hook::TIMESTAMP_WINDOW.as_secs()
        );
        return Err(refuse(
            &state,
            &draft,
            Log::Store,
            unauthorized,
            "STALE_TIMESTAMP",
            &reason,
        )
        .await);
    }
    let service = match state.paz.service(&name).await {
        Ok(service) => service,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    let own = match service_image(&service.spec.image) {
        Ok(image) => image,
        Err(error) => return Err(failed(&state, &draft, error).await),
    };
    let (target, tag, pin) = match (&request.tag, &request.image) {
        (Some(tag), None) => {
            if let Err(reason) = paz_core::image::check_tag(tag) {
                return Err(refuse(
                    &state,
                    &draft,
                    Log::Store,
                    StatusCode::BAD_REQUEST,
                    "INVALID_PAYLOAD",
                    &reason,
                )
                .await);
            }
            (
                paz_core::hook::image_at_tag(&own, tag),
                Some(tag.clone()),
                None,
            )
        }
        (None, Some(image)) => {
            let given = match ImageRef::parse(image) {
                Ok(given) => given,
                Err(e) => {
                    return Err(refuse(
                        &state,
                        &draft,
                        Log::Store,
                        StatusCode::BAD_REQUEST,
                        "INVALID_PAYLOAD",
                        &e.to_string(),
                    )
                    .await);
                }
            };
            if given.name() != own.name() {
                let reason = format!("{image} is not in {name}'s image repository {}", own.name());
                return Err(refuse(
                    &state,
                    &draft,
                    Log::Store,
                    StatusCode::FORBIDDEN,
                    "REPOSITORY_MISMATCH",
                    &reason,
                )
                .await);
            }
            let pin = given
                .digest
                .as_ref()
                .map(|d| paz_core::hook::image_at_digest(&own, d));
            draft.delivery.digest = given.digest.clone();
            (image.clone(), given.tag.clone(), pin)
        }
        _ => {
            return Err(refuse(
                &state,
                &draft,
                Log::Store,
                StatusCode::BAD_REQUEST,
                "INVALID_PAYLOAD",
                "give exactly one of tag and image",
            )
            .await);
        }
    };
    draft.delivery.tag = tag.clone();
    draft.delivery.image = Some(target.clone());
    let passes = match (&hook.info.tag, &tag) {
        (None, _) => true,
        (Some(filter), Some(tag)) => paz_core::hook::tag_matches(Some(filter), tag),
        (Some(_), None) => false,
    };
    if !passes {
        let reason = format!(
            "tag {:?} does not pass the hook's filter {:?}",
            tag.as_deref().unwrap_or(""),
            hook.info.tag.as_deref().unwrap_or("*")
        );
        return Err(refuse(
            &state,
            &draft,
            Log::Store,
            StatusCode::FORBIDDEN,
            "TAG_FILTERED",
            &reason,
        )
        .await);
    }
    let key_id = sha256_hex(format!("ci:{key}").as_bytes());
    let claim = DeliveryKey {
        key: key.clone(),
        body: Some(body_hash.clone()),
        at: draft.delivery.received_at,
        delivery: None,
        deployment: None,
    };
    match state.paz.claim_delivery_key(&name, &key_id, claim).await {
        Ok(None) => {}
        Ok(Some(seen)) => {
            draft.delivery.deployment = seen.deployment.clone();
            let before = match (&seen.delivery, &seen.deployment) {
                (Some(d), Some(dep)) => format!(" as delivery {d} (deployment {dep})"),
                (Some(d), None) => format!(" as delivery {d}"),
                _ => String::new(),
            };
            return Err(if seen.body.as_deref() == Some(body_hash.as_str()) {
                let reason = format!(
                    "idempotency key {key:?} was delivered before{before}; nothing is deployed again"
                );
                refuse(
                    &state,
                    &draft,
                    Log::Store,
                    StatusCode::CONFLICT,
                    "DUPLICATE_DELIVERY",
                    &reason,
                )
                .await
            } else {
                let reason = format!(
                    "idempotency key {key:?} was used before{before} with another body; use a new key for a new deploy"
                );
                refuse(
                    &state,
                    &draft,
                    Log::Store,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "IDEMPOTENCY_KEY_REUSED",
                    &reason,
                )
                .await
            });
        }
        Err(error) => return Err(failed(&state, &draft, error).await),
    }
    let message = format!("CI deploy of {target} (key {key})");
    let deployment = match state
        .paz
        .deploy_pinned(
            &name,
            Some(target.clone()),
            pin,
            trigger(HookSource::Ci, message.clone()),
        )
        .await
    {
        Ok(deployment) => deployment,
        Err(error) => {
            if let Err(e) = state.paz.forget_delivery_key(&name, &key_id).await {
                tracing::warn!(error = %e, "cannot forget the key of a delivery that failed");
            }
            return Err(failed(&state, &draft, error).await);
        }
    };
    wake(&state, &name);
    let reason = format!("{message}: release v{}", deployment.release);
    let (delivery, answer) = deployed(&state, &draft, &deployment, &reason).await;
    state
        .paz
        .settle_delivery_key(&name, &key_id, &delivery.id, Some(&deployment.id))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// The bytes of 64 hex digits.
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Managing hooks (bearer token).

/// Makes a hook for a service (one per source). The answer holds its secret, shown this
/// once (stored hashed, or sealed for CI), and the path to send deliveries to.
#[utoipa::path(post, path = "/v1/services/{name}/hooks", tag = "hooks", request_body = CreateHookRequest,
    params(("name" = String, Path)),
    responses((status = 201, body = CreatedHook), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "The service has a hook of this source already (`HOOK_EXISTS`)."),
        (status = 422, body = ErrorResponse),
        (status = 503, body = ErrorResponse, description = "A CI hook needs the secrets key, and none is configured (`SECRETS_UNAVAILABLE`).")))]
pub async fn create_hook(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<CreateHookRequest>,
) -> ApiResult<(StatusCode, Json<CreatedHook>)> {
    let new = generate()?;
    let secret = store_secret(&state, &name, request.source, &new)?;
    let info = state
        .paz
        .create_hook(HookRecord {
            info: HookInfo {
                service: name,
                source: request.source,
                id: new.id.clone(),
                tag: request.tag,
                created_at: jiff::Timestamp::now(),
                rotated_at: None,
            },
            service_created_at: jiff::Timestamp::UNIX_EPOCH,
            secret,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedHook {
            path: hook_path(info.source, &new.secret),
            secret: new.secret,
            info,
        }),
    ))
}

/// Lists a service's hooks (never their secrets).
#[utoipa::path(get, path = "/v1/services/{name}/hooks", tag = "hooks", params(("name" = String, Path)),
    responses((status = 200, body = Vec<HookInfo>), (status = 404, body = ErrorResponse)))]
pub async fn list_hooks(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<HookInfo>>> {
    Ok(Json(state.paz.hooks(&name).await?))
}

/// Changes a hook's settings (its tag filter); its secret stays.
#[utoipa::path(put, path = "/v1/services/{name}/hooks/{source}", tag = "hooks", request_body = UpdateHookRequest,
    params(("name" = String, Path), ("source" = HookSource, Path)),
    responses((status = 200, body = HookInfo), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn update_hook(
    State(state): State<AppState>,
    ApiPath((name, source)): ApiPath<(String, HookSource)>,
    ApiJson(request): ApiJson<UpdateHookRequest>,
) -> ApiResult<Json<HookInfo>> {
    Ok(Json(
        state.paz.set_hook_tag(&name, source, request.tag).await?,
    ))
}

/// Gives a hook a new secret, shown this once: the old one stops working at once.
#[utoipa::path(post, path = "/v1/services/{name}/hooks/{source}/rotate", tag = "hooks",
    params(("name" = String, Path), ("source" = HookSource, Path)),
    responses((status = 200, body = CreatedHook), (status = 404, body = ErrorResponse),
        (status = 503, body = ErrorResponse, description = "A CI hook needs the secrets key, and none is configured (`SECRETS_UNAVAILABLE`).")))]
pub async fn rotate_hook(
    State(state): State<AppState>,
    ApiPath((name, source)): ApiPath<(String, HookSource)>,
) -> ApiResult<Json<CreatedHook>> {
    state.paz.hook(&name, source).await?;
    let new = generate()?;
    let secret = store_secret(&state, &name, source, &new)?;
    let info = state
        .paz
        .rotate_hook(&name, source, &new.id, secret)
        .await?;
    Ok(Json(CreatedHook {
        path: hook_path(source, &new.secret),
        secret: new.secret,
        info,
    }))
}

/// Deletes a hook: its secret stops working at once.
#[utoipa::path(delete, path = "/v1/services/{name}/hooks/{source}", tag = "hooks",
    params(("name" = String, Path), ("source" = HookSource, Path)),
    responses((status = 200, body = HookInfo), (status = 404, body = ErrorResponse)))]
pub async fn delete_hook(
    State(state): State<AppState>,
    ApiPath((name, source)): ApiPath<(String, HookSource)>,
) -> ApiResult<Json<HookInfo>> {
    Ok(Json(state.paz.delete_hook(&name, source).await?))
}

/// A service's delivery log, oldest first: the stored deliveries (the newest 100) and the
/// rejections this server keeps in memory that name the service.
#[utoipa::path(get, path = "/v1/services/{name}/deliveries", tag = "hooks", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Delivery>), (status = 404, body = ErrorResponse)))]
pub async fn deliveries(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let mut all = state.paz.deliveries(&name).await?;
    all.extend(state.hooks.memory(Some(&name)));
    all.sort_by_key(|d| d.received_at);
    Ok(Json(all))
}

/// The deliveries this server keeps in memory, oldest first: rejections before a hook's
/// credential matched (unknown URLs and tokens, bad signatures), whatever they named.
#[utoipa::path(get, path = "/v1/deliveries", tag = "hooks",
    responses((status = 200, body = Vec<Delivery>)))]
pub async fn unmatched_deliveries(State(state): State<AppState>) -> Json<Vec<Delivery>> {
    Json(state.hooks.memory(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_only_in_their_exact_form() {
        let new = generate().unwrap();
        let (id, secret) = parse_secret(&new.secret).unwrap();
        assert_eq!(id, new.id);
        assert_eq!(secret.len(), 64);
        assert_ne!(generate().unwrap().secret, new.secret);
        for bad in [
            "",
            "hook_",
            "hook__",
            &new.secret[..new.secret.len() - 1],
            &format!("{}0", new.secret),
            &new.secret.replace("hook_", "paz_"),
        ] {
            assert!(parse_secret(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn callbacks_go_only_to_allowed_hosts_over_https() {
        let hooks = HookState::new(vec!["registry.hub.docker.com".into(), "127.0.0.1".into()]);
        assert!(
            hooks
                .callback_target("https://registry.hub.docker.com/u/acme/web/hook/1/")
                .is_ok()
        );
        assert!(hooks.callback_target("http://127.0.0.1:9/cb").is_ok());
        for bad in [
            "http://registry.hub.docker.com/u/acme/web/hook/1/",
            "https://evil.example/cb",
            "https://user:pw@registry.hub.docker.com/",
            "ftp://127.0.0.1/",
            "not a url",
            "https://169.254.169.254/latest/meta-data",
        ] {
            assert!(hooks.callback_target(bad).is_err(), "{bad}");
        }
        let default = HookState::default();
        assert!(default.callback_target("http://127.0.0.1:9/cb").is_err());
    }

    #[test]
    fn request_spans_never_show_a_docker_hub_secret() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Seen {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let seen = Seen::default();
        let writer = seen.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW),
        );
        tracing::subscriber::with_default(subscriber, || {
            for uri in [
                "/v1/hooks/dockerhub/hook_0123456789ab_s3cret",
                "/v1/services?x=1",
            ] {
                let request = axum::http::Request::builder().uri(uri).body(()).unwrap();
                let _span = request_span(&request).entered();
            }
        });
        let text = String::from_utf8(seen.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("/v1/hooks/dockerhub/<secret>") && text.contains("/v1/services?x=1"),
            "{text}"
        );
    }

    #[test]
    fn the_memory_log_is_bounded() {
        let hooks = HookState::default();
        for _ in 0..MEMORY_LOG + 10 {
            hooks.remember(Draft::new(HookSource::Ci).outcome(
                Verdict::Rejected,
                StatusCode::UNAUTHORIZED,
                "SIGNATURE_INVALID",
                "no",
            ));
        }
        let kept = hooks.memory(None);
        assert_eq!(kept.len(), MEMORY_LOG);
        assert_eq!(kept[0].id, "m11");
        assert!(kept.iter().all(|d| !d.stored));
    }
}
