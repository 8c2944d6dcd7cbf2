//! The typed REST client of a `paz-server`.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{BoxStream, Stream, StreamExt};
use paz_core::api::{DeployRequest, ErrorResponse, HealthResponse, RollbackRequest, ScaleRequest};
use paz_core::scheduler::LogLine;
use paz_core::{
    Deployment, Event, EventKind, FieldError, Host, Instance, Release, Service, ServiceSpec,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, IF_MATCH};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long a non-streaming request may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest SSE line the event stream accepts before giving up.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;
/// The longest NDJSON line the log stream accepts before giving up.
const MAX_LOG_LINE: usize = 16 * 1024 * 1024;
/// How many times in a row [`Client::wait_for_deployment`] subscribes again to an event
/// stream that the server closed at once.
const MAX_RESUBSCRIBES: u32 = 3;
/// How much of an unexpected (non-JSON) body an error keeps.
const MAX_BODY_IN_ERROR: usize = 512;

/// Everything that can go wrong talking to a `paz-server`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL given to [`Client::new`] is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with an error (`{"error": {"code": …, "message": …}}`).
    #[error("{message} ({code})")]
    Api {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The stable machine-readable code, e.g. `SERVICE_NOT_FOUND`.
        code: String,
        /// What went wrong, for people.
        message: String,
        /// Every failed validation rule, when there are several.
        details: Vec<FieldError>,
    },
    /// The request could not be sent or its answer not received (connection refused, DNS,
    /// TLS, timeout, a stream cut off).
    #[error("{}", describe_http(.0))]
    Http(#[source] reqwest::Error),
    /// The server answered with a status and body that are not the Paz API's (e.g. a proxy's
    /// error page).
    #[error("unexpected answer from the server: HTTP {status}: {body}")]
    UnexpectedResponse {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer's JSON body does not have the expected shape (a client/server version skew?).
    #[error("cannot decode the server's answer to {what}")]
    Decode {
        /// What was being read, e.g. `GET /v1/services`.
        what: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The token cannot be sent in an HTTP header (it has control characters or non-ASCII).
    #[error("the token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// The event stream sent a line longer than the client accepts.
    #[error("the event stream sent a line longer than {MAX_SSE_LINE} bytes")]
    EventTooLarge,
    /// The log stream sent a line longer than the client accepts.
    #[error("the log stream sent a line longer than {MAX_LOG_LINE} bytes")]
    LogLineTooLarge,
    /// The server kept closing the event stream that [`Client::wait_for_deployment`] watches
    /// (it is shutting down, or a proxy cuts long-lived answers).
    #[error("the server closed the event stream")]
    EventStreamClosed,
    /// [`Client::wait_for_deployment`] gave up: the deployment was not over in time. It goes
    /// on on the server.
    #[error("deployment {} is still {} after {after:?}", deployment.id, deployment.status)]
    WaitTimedOut {
        /// The deployment as last seen.
        deployment: Box<Deployment>,
        /// How long the client waited.
        after: Duration,
    },
}

impl Error {
    /// The stable code of an [`Error::Api`] error (e.g. `SERVICE_NOT_FOUND`,
    /// `REVISION_MISMATCH`); `None` for errors that did not come from the API.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of an answer the server gave, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedResponse { status, .. } => Some(*status),
            Error::Http(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether the server could not be reached at all (nothing listens, DNS, TLS handshake).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Http(e) if e.is_connect())
    }
}

/// Drops an empty token; rejects one that cannot be sent in a header.
fn check_token(token: Option<String>) -> Result<Option<String>, Error> {
    let token = token.filter(|t| !t.is_empty());
    if let Some(token) = &token
        && HeaderValue::from_str(&format!("Bearer {token}")).is_err()
    {
        return Err(Error::InvalidToken);
    }
    Ok(token)
}

fn describe_http(error: &reqwest::Error) -> String {
    let url = error
        .url()
        .map(|u| u.to_string())
        .unwrap_or_else(|| "the server".into());
    if error.is_connect() {
        format!("cannot connect to {url}")
    } else if error.is_timeout() {
        format!("request to {url} timed out")
    } else if error.is_builder() {
        "cannot build the HTTP client or request".into()
    } else if error.is_body() || error.is_decode() {
        format!("reading the answer from {url} failed")
    } else {
        format!("request to {url} failed")
    }
}

/// A typed client of a `paz-server`'s REST API (`/v1/…`).
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn run() -> Result<(), paz::Error> {
/// use paz::{Client, ServiceSpec};
///
/// let client = Client::new("http://127.0.0.1:7700", Some("my-token".into()))?;
/// let created = client.create_service(&ServiceSpec::new("web", "demo:v1")).await?;
/// let deployment = client.deploy("web", Some("demo:v2".into())).await?;
/// println!("{} is at revision {}; deploying {}", created.spec.name, created.revision, deployment.id);
/// match client.service("nope").await {
///     Err(e) if e.code() == Some("SERVICE_NOT_FOUND") => println!("no such service"),
///     other => println!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7700`), sending `token`
    /// as a bearer token when given.
    ///
    /// Fails with [`Error::InvalidUrl`] when the URL is not an absolute `http`/`https` URL
    /// without credentials, query or fragment, and with [`Error::InvalidToken`] when the token
    /// cannot be sent in a header.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("it must not have a query or fragment"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "it must not carry credentials; pass the token separately",
            ));
        }
        // Requests are built by appending segments, so a path prefix (a server mounted
        // under `/paz/`) is kept; drop a trailing empty segment.
        if base.path().ends_with('/') {
            let trimmed = base.path().trim_end_matches('/').to_owned();
            base.set_path(&trimmed);
        }
        let token = check_token(token)?;
        // reqwest is built with `rustls-no-provider`: the process needs a crypto provider.
        // Installing fails harmlessly when the program already installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("paz-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Http)?;
        Ok(Client {
            http,
            base,
            token,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets how long each non-streaming request may take (default 30 s). The event stream
    /// has no overall timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client with another bearer token (`None`: send none). Fails with
    /// [`Error::InvalidToken`] when the token cannot be sent in a header.
    pub fn with_token(mut self, token: Option<String>) -> Result<Client, Error> {
        self.token = check_token(token)?;
        Ok(self)
    }

    /// The server's base URL, normalized (e.g. `http://127.0.0.1:7700/`).
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /v1/health`: whether the server and its store answer (no token needed).
    pub async fn health(&self) -> Result<HealthResponse, Error> {
        self.call(Method::GET, &["v1", "health"], NoBody, None)
            .await
    }

    /// `GET /v1/services`: every service.
    pub async fn services(&self) -> Result<Vec<Service>, Error> {
        self.call(Method::GET, &["v1", "services"], NoBody, None)
            .await
    }

    /// `GET /v1/services/{name}`: one service (`SERVICE_NOT_FOUND` when there is none).
    pub async fn service(&self, name: &str) -> Result<Service, Error> {
        self.call(Method::GET, &["v1", "services", name], NoBody, None)
            .await
    }

    /// `POST /v1/services`: declares a service; the server makes release v1 and deploys it.
    pub async fn create_service(&self, spec: &ServiceSpec) -> Result<Service, Error> {
        self.call(Method::POST, &["v1", "services"], Json(spec), None)
            .await
    }

    /// `PUT /v1/services/{name}`: replaces a service's spec. With `if_match`, the update
    /// fails with `REVISION_MISMATCH` (412) unless the service is still at that revision.
    pub async fn update_service(
        &self,
        name: &str,
        spec: &ServiceSpec,
        if_match: Option<u64>,
    ) -> Result<Service, Error> {
        self.call(Method::PUT, &["v1", "services", name], Json(spec), if_match)
            .await
    }

    /// `PATCH /v1/services/{name}`: applies a JSON merge patch (RFC 7396) to the spec:
    /// objects merge, `null` removes a key, anything else replaces. With `if_match`, as for
    /// [`Client::update_service`].
    pub async fn patch_service(
        &self,
        name: &str,
        patch: &serde_json::Value,
        if_match: Option<u64>,
    ) -> Result<Service, Error> {
        self.call(
            Method::PATCH,
            &["v1", "services", name],
            MergePatch(patch),
            if_match,
        )
        .await
    }

    /// `DELETE /v1/services/{name}`: deletes a service with its releases and deployments.
    pub async fn delete_service(&self, name: &str, if_match: Option<u64>) -> Result<(), Error> {
        let response = self
            .send(Method::DELETE, &["v1", "services", name], NoBody, if_match)
            .await?;
        check(response).await.map(drop)
    }

    /// `POST /v1/services/{name}/deploy`: makes a new release (with `image`, or the current
    /// spec again) and starts deploying it; follow it with [`Client::deployment`].
    pub async fn deploy(&self, name: &str, image: Option<String>) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "deploy"],
            Json(&DeployRequest { image }),
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/scale`: sets the instance count (no new release).
    pub async fn scale(&self, name: &str, instances: u32) -> Result<Service, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "scale"],
            Json(&ScaleRequest { instances }),
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/rollback`: deploys release `to`, by default the one before
    /// the current.
    pub async fn rollback(&self, name: &str, to: Option<u64>) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "rollback"],
            Json(&RollbackRequest { to }),
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/releases`: the releases of a service, oldest first.
    pub async fn releases(&self, name: &str) -> Result<Vec<Release>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "releases"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/releases/{version}`: one release.
    pub async fn release(&self, name: &str, version: u64) -> Result<Release, Error> {
        let version = version.to_string();
        self.call(
            Method::GET,
            &["v1", "services", name, "releases", &version],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/deployments`: the deploy history of a service, oldest first.
    pub async fn deployments(&self, name: &str) -> Result<Vec<Deployment>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "deployments"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/deployments/{id}`: one deployment (ids look like `web-3`).
    pub async fn deployment(&self, id: &str) -> Result<Deployment, Error> {
        self.call(Method::GET, &["v1", "deployments", id], NoBody, None)
            .await
    }

    /// `GET /v1/hosts`: the machines that run instances.
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        self.call(Method::GET, &["v1", "hosts"], NoBody, None).await
    }

    /// `GET /v1/events`: the server's events as they happen (Server-Sent Events).
    ///
    /// Resolves once the server accepted the subscription; the stream then yields each event
    /// and ends when the server closes it. An event that cannot be decoded yields an
    /// [`Error::Decode`] item and the stream goes on; a broken connection yields an
    /// [`Error::Http`] item and the stream ends (subscribe again to resume).
    pub async fn events(&self) -> Result<EventStream, Error> {
        let response = self
            .request(Method::GET, &["v1", "events"])
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(Error::Http)?;
        let response = check(response).await?;
        Ok(EventStream::new(response.bytes_stream()))
    }

    /// `POST /v1/services/{name}/promote`: moves the service's canary deployment to its next
    /// traffic step. Fails with `INVALID_STATE` (409) when no canary deployment is in
    /// progress or it is already at 100 %.
    pub async fn promote(&self, name: &str) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "promote"],
            NoBody,
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/abort`: stops the service's running deployment. It fails
    /// and the previous release keeps serving. Fails with `INVALID_STATE` (409) when no
    /// deployment is in progress.
    pub async fn abort(&self, name: &str) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "abort"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/instances`: the service's instances (containers), with the
    /// state the server sees.
    pub async fn instances(&self, name: &str) -> Result<Vec<Instance>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "instances"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/status`: the service with its latest deployment, its
    /// instances and what is wrong with it.
    pub async fn status(&self, name: &str) -> Result<ServiceStatus, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "status"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/logs`: the output of the service's instances, one
    /// [`LogLine`] at a time (the server sends newline-delimited JSON).
    ///
    /// `tail` keeps only the last lines of each instance's past output; with `follow`, the
    /// stream stays open and yields new lines as the instances print them (it has no overall
    /// timeout). Resolves once the server accepted the request, so `SERVICE_NOT_FOUND` (404)
    /// and `NO_SCHEDULER` (409, the server runs no scheduler) come back as an `Err`. A line
    /// that cannot be decoded yields an [`Error::Decode`] item and the stream goes on; a
    /// broken connection yields an [`Error::Http`] item and the stream ends.
    ///
    /// ```no_run
    /// # async fn run(client: paz::Client) -> Result<(), paz::Error> {
    /// use futures_util::StreamExt as _;
    ///
    /// let mut lines = client.logs("web", true, Some(10)).await?;
    /// while let Some(line) = lines.next().await {
    ///     let line = line?;
    ///     println!("{} | {}", line.instance, line.line);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<LogLines, Error> {
        let mut url = self.url(&["v1", "services", name, "logs"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("follow", if follow { "true" } else { "false" });
            if let Some(tail) = tail {
                query.append_pair("tail", &tail.to_string());
            }
        }
        // No `.timeout()`: a followed stream lasts as long as the caller reads it.
        let response = self
            .request_url(Method::GET, url)
            .header(ACCEPT, "application/x-ndjson")
            .send()
            .await
            .map_err(Error::Http)?;
        let response = check(response).await?;
        Ok(LogLines::new(response.bytes_stream()))
    }

    /// Waits until deployment `id` is over (succeeded, failed or cancelled) and returns it
    /// as it ended. A failed deployment is an `Ok`: look at its `status` and `error`.
    ///
    /// Watches the server's event stream ([`Client::events`]) and reads the deployment again
    /// when it changes, so it reacts at once without polling. Gives up with
    /// [`Error::WaitTimedOut`] (carrying the deployment as last seen) after `timeout`; the
    /// deployment goes on on the server. When not even the first read of the deployment
    /// finished in time, the error is the [`Error::Http`] timeout.
    ///
    /// ```no_run
    /// # async fn run(client: paz::Client) -> Result<(), paz::Error> {
    /// use std::time::Duration;
    ///
    /// let started = client.deploy("web", Some("demo:v2".into())).await?;
    /// let ended = client.wait_for_deployment(&started.id, Duration::from_secs(600)).await?;
    /// if let Some(error) = &ended.error {
    ///     eprintln!("{} {}: {error}", ended.id, ended.status);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_deployment(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Deployment, Error> {
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let timed_out = |deployment: Deployment| Error::WaitTimedOut {
            deployment: Box::new(deployment),
            after: timeout,
        };
        let mut closed_in_a_row = 0;
        let mut current: Option<Deployment> = None;
        loop {
            // Subscribe first, then read: no change can slip in between.
            let mut events = match self.events_until(remaining()).await {
                Ok(events) => events,
                Err(Error::Http(e)) if e.is_timeout() => match current {
                    Some(current) => return Err(timed_out(current)),
                    None => return Err(Error::Http(e)),
                },
                Err(e) => return Err(e),
            };
            let mut seen = match self.deployment_until(id, remaining()).await {
                Ok(deployment) => deployment,
                Err(Error::Http(e)) if e.is_timeout() && current.is_some() => {
                    return Err(timed_out(current.take().expect("checked")));
                }
                Err(e) => return Err(e),
            };
            loop {
                if seen.status.is_final() {
                    return Ok(seen);
                }
                let reread = match events.next().await {
                    Some(Ok(event)) => {
                        closed_in_a_row = 0;
                        match &event.kind {
                            EventKind::DeploymentChanged { id: changed, .. } => changed == id,
                            EventKind::ServiceDeleted { service } => *service == seen.service,
                            _ => false,
                        }
                    }
                    // A `resync` event (some events were missed) or one this client does not
                    // know: read again to be sure.
                    Some(Err(Error::Decode { .. })) => true,
                    Some(Err(Error::Http(e))) if e.is_timeout() => return Err(timed_out(seen)),
                    Some(Err(e)) => return Err(e),
                    None => break,
                };
                if reread {
                    seen = match self.deployment_until(id, remaining()).await {
                        Ok(deployment) => deployment,
                        Err(Error::Http(e)) if e.is_timeout() => return Err(timed_out(seen)),
                        Err(e) => return Err(e),
                    };
                }
            }
            // The server closed the stream (e.g. it restarts): subscribe again.
            closed_in_a_row += 1;
            if closed_in_a_row > MAX_RESUBSCRIBES {
                return Err(Error::EventStreamClosed);
            }
            current = Some(seen);
        }
    }

    /// [`Client::events`], with the whole stream bounded by `limit`.
    async fn events_until(&self, limit: Duration) -> Result<EventStream, Error> {
        let response = self
            .request(Method::GET, &["v1", "events"])
            .header(ACCEPT, "text/event-stream")
            .timeout(limit)
            .send()
            .await
            .map_err(Error::Http)?;
        let response = check(response).await?;
        Ok(EventStream::new(response.bytes_stream()))
    }

    /// [`Client::deployment`] within `limit` (and within the client's request timeout).
    async fn deployment_until(&self, id: &str, limit: Duration) -> Result<Deployment, Error> {
        self.clone()
            .with_timeout(limit.min(self.timeout))
            .deployment(id)
            .await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs can be a base (checked in Client::new)")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_url(method, self.url(segments))
    }

    fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send<B: Body>(
        &self,
        method: Method,
        segments: &[&str],
        body: B,
        if_match: Option<u64>,
    ) -> Result<Response, Error> {
        let mut builder = self
            .request(method, segments)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        if let Some(revision) = if_match {
            builder = builder.header(IF_MATCH, revision.to_string());
        }
        builder = body.attach(builder)?;
        builder.send().await.map_err(Error::Http)
    }

    async fn call<T: DeserializeOwned, B: Body>(
        &self,
        method: Method,
        segments: &[&str],
        body: B,
        if_match: Option<u64>,
    ) -> Result<T, Error> {
        let what = format!("{method} /{}", segments.join("/"));
        let response = self.send(method, segments, body, if_match).await?;
        let response = check(response).await?;
        let bytes = response.bytes().await.map_err(Error::Http)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { what, source })
    }
}

/// A service's status, from [`Client::status`]: the service, its latest deployment, its
/// instances and its problems. (The same JSON as the server's `StatusResponse`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: Service,
    /// Its newest deployment, if it has any.
    #[serde(default)]
    pub deployment: Option<Deployment>,
    /// Its instances, with the health the server sees.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// What is wrong (crash loops, scheduler errors), for people.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// A request body.
trait Body {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error>;
}

struct NoBody;

impl Body for NoBody {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error> {
        Ok(builder)
    }
}

struct Json<'a, T: Serialize>(&'a T);

impl<T: Serialize> Body for Json<'_, T> {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error> {
        Ok(builder.json(self.0))
    }
}

struct MergePatch<'a>(&'a serde_json::Value);

impl Body for MergePatch<'_> {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error> {
        let bytes = serde_json::to_vec(self.0).map_err(|source| Error::Decode {
            what: "the merge patch".into(),
            source,
        })?;
        Ok(builder
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(bytes))
    }
}

/// Passes a success through; turns an error answer into [`Error::Api`] (or
/// [`Error::UnexpectedResponse`] when its body is not the API's error shape).
async fn check(response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let bytes = response.bytes().await.map_err(Error::Http)?;
    Err(error_from_body(status, &bytes))
}

fn error_from_body(status: StatusCode, bytes: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorResponse>(bytes) {
        Ok(ErrorResponse { error }) => Error::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            details: error.details,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            let mut body: String = text.chars().take(MAX_BODY_IN_ERROR).collect();
            if body.len() < text.len() {
                body.push('…');
            }
            if body.is_empty() {
                body = status.canonical_reason().unwrap_or("no body").to_owned();
            }
            Error::UnexpectedResponse {
                status: status.as_u16(),
                body,
            }
        }
    }
}

/// The events of a `paz-server` as they happen: a [`Stream`] of [`Event`]s, from
/// [`Client::events`].
pub struct EventStream {
    inner: BoxStream<'static, Result<Event, Error>>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    fn new<S, B>(body: S) -> EventStream
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
        B: AsRef<[u8]>,
    {
        EventStream {
            inner: decoded(body, SseDecoder(SseParser::default())),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The output of a service's instances: a [`Stream`] of [`LogLine`]s, from [`Client::logs`].
pub struct LogLines {
    inner: BoxStream<'static, Result<LogLine, Error>>,
}

impl fmt::Debug for LogLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLines").finish_non_exhaustive()
    }
}

impl LogLines {
    fn new<S, B>(body: S) -> LogLines
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
        B: AsRef<[u8]>,
    {
        LogLines {
            inner: decoded(body, NdjsonDecoder(LineSplitter::new(MAX_LOG_LINE))),
        }
    }
}

impl Stream for LogLines {
    type Item = Result<LogLine, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Turns a response body, in whatever chunks it arrives, into items.
trait ChunkDecoder: Send + 'static {
    /// What the body holds.
    type Item: Send + 'static;
    /// The items completed by `chunk`; an error ends the stream.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Result<Self::Item, Error>>, Error>;
    /// The items left when the body ends.
    fn finish(&mut self) -> Vec<Result<Self::Item, Error>>;
}

/// Server-Sent Events of `paz_core::Event`.
struct SseDecoder(SseParser);

impl ChunkDecoder for SseDecoder {
    type Item = Event;
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Result<Event, Error>>, Error> {
        Ok(self.0.feed(chunk)?.into_iter().map(decode_event).collect())
    }
    fn finish(&mut self) -> Vec<Result<Event, Error>> {
        Vec::new()
    }
}

/// Newline-delimited JSON `LogLine`s.
struct NdjsonDecoder(LineSplitter);

impl ChunkDecoder for NdjsonDecoder {
    type Item = LogLine;
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Result<LogLine, Error>>, Error> {
        Ok(self
            .0
            .feed(chunk)?
            .iter()
            .map(|line| decode_log(line))
            .collect())
    }
    fn finish(&mut self) -> Vec<Result<LogLine, Error>> {
        // A last line without its newline still counts.
        self.0
            .finish()
            .map(|line| decode_log(&line))
            .into_iter()
            .collect()
    }
}

/// The items of a streamed body; a transport or framing error is the last item.
fn decoded<S, B, D>(body: S, decoder: D) -> BoxStream<'static, Result<D::Item, Error>>
where
    S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
    B: AsRef<[u8]>,
    D: ChunkDecoder,
{
    let state = (body, decoder, VecDeque::new(), false);
    futures_util::stream::unfold(
        state,
        |(mut body, mut decoder, mut pending, mut done)| async move {
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((item, (body, decoder, pending, done)));
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => match decoder.feed(chunk.as_ref()) {
                        Ok(items) => pending.extend(items),
                        Err(e) => {
                            done = true;
                            pending.push_back(Err(e));
                        }
                    },
                    Some(Err(e)) => {
                        done = true;
                        pending.push_back(Err(Error::Http(e)));
                    }
                    None => {
                        done = true;
                        pending.extend(decoder.finish());
                    }
                }
            }
        },
    )
    .boxed()
}

fn decode_log(line: &[u8]) -> Result<LogLine, Error> {
    serde_json::from_slice(line).map_err(|source| Error::Decode {
        what: "a log line".into(),
        source,
    })
}

/// Splits bytes in any chunking into the lines of newline-delimited JSON: lines end in LF
/// (a CR before it is dropped), blank lines are skipped.
#[derive(Debug)]
struct LineSplitter {
    line: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter {
            line: Vec::new(),
            max,
        }
    }

    /// The lines that `chunk` completes.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            if let Some(line) = self.take() {
                out.push(line);
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > self.max {
            self.line = Vec::new();
            return Err(Error::LogLineTooLarge);
        }
        Ok(out)
    }

    /// The last line, when the input did not end with a newline.
    fn finish(&mut self) -> Option<Vec<u8>> {
        self.take()
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

fn decode_event(message: SseMessage) -> Result<Event, Error> {
    serde_json::from_str(&message.data).map_err(|source| Error::Decode {
        what: format!("the {:?} event", message.event),
        source,
    })
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseMessage {
    /// The `event:` field (`message` when absent).
    event: String,
    /// The `data:` lines joined by `\n`.
    data: String,
    /// The last `id:` seen.
    id: Option<String>,
}

/// An incremental parser of the `text/event-stream` format (WHATWG HTML, "Server-sent
/// events"): bytes in any chunking, lines ending in LF, CRLF or CR, `:` comments.
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF belongs to that line ending.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, Error> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_SSE_LINE {
            return Err(Error::EventTooLarge);
        }
        Ok(out)
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseMessage>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                let event = std::mem::take(&mut self.event);
                out.push(SseMessage {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                    id: self.id.clone(),
                });
            } else {
                self.event.clear();
                self.data.clear();
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseMessage> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.feed(c).unwrap())
            .collect()
    }

    const EVENT: &str =
        r#"{"revision":5,"at":"2026-01-01T00:00:00Z","type":"service_created","service":"web"}"#;

    #[test]
    fn sse_parses_events_in_any_chunking() {
        let text = format!(
            ": keep-alive\n\nevent: service_created\nid: 5\ndata: {EVENT}\n\n:ping\r\n\r\nevent: x\r\ndata: a\r\ndata:b\r\rdata: c\r\n\r\n"
        );
        let whole = parse_chunks(&[text.as_bytes()]);
        assert_eq!(
            whole,
            [
                SseMessage {
                    event: "service_created".into(),
                    data: EVENT.into(),
                    id: Some("5".into())
                },
                SseMessage {
                    event: "x".into(),
                    data: "a\nb".into(),
                    id: Some("5".into())
                },
                SseMessage {
                    event: "message".into(),
                    data: "c".into(),
                    id: Some("5".into())
                },
            ]
        );
        // Every split point, including inside CRLF pairs, gives the same events.
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(
                parse_chunks(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&single_bytes), whole);
    }

    #[test]
    fn sse_ignores_an_unfinished_event_and_empty_data() {
        assert!(parse_chunks(&[b"event: a\n\ndata: x"]).is_empty());
    }

    #[test]
    fn event_stream_decodes_events_and_reports_bad_ones() {
        let chunks: Vec<Result<Vec<u8>, reqwest::Error>> = vec![
            Ok(format!("event: service_created\ndata: {}", &EVENT[..20]).into_bytes()),
            Ok(format!("{}\n\ndata: {{\"nope\":1}}\n\n", &EVENT[20..]).into_bytes()),
        ];
        let stream = EventStream::new(futures_util::stream::iter(chunks));
        let items: Vec<_> = runtime().block_on(stream.collect::<Vec<_>>());
        assert_eq!(items.len(), 2);
        let event = items[0].as_ref().unwrap();
        assert_eq!(event.revision, 5);
        assert_eq!(event.kind.name(), "service_created");
        assert!(matches!(items[1], Err(Error::Decode { .. })));
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"code":"INVALID_PORT","message":"bad","details":[{"field":"ports[0].port","code":"INVALID_PORT","message":"port 0 is outside 1..65535"}]}}"#;
        let err = error_from_body(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(err.code(), Some("INVALID_PORT"));
        assert_eq!(err.status(), Some(422));
        assert_eq!(err.to_string(), "bad (INVALID_PORT)");
        let Error::Api { details, .. } = err else {
            panic!()
        };
        assert_eq!(details[0].field, "ports[0].port");
        let err = error_from_body(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(err.code(), None);
        assert_eq!(
            err.to_string(),
            "unexpected answer from the server: HTTP 502: <html>bad gateway</html>"
        );
    }

    #[test]
    fn urls_are_validated_and_names_escaped() {
        for bad in [
            "",
            "127.0.0.1:7700",
            "ftp://x",
            "http://",
            "http://h/?q=1",
            "http://u:p@h",
        ] {
            assert!(
                matches!(Client::new(bad, None), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let client = Client::new("http://127.0.0.1:7700/", None).unwrap();
        assert_eq!(
            client.url(&["v1", "services", "a/b c"]).as_str(),
            "http://127.0.0.1:7700/v1/services/a%2Fb%20c"
        );
        let client = Client::new("https://paz.example.com/api/", None).unwrap();
        assert_eq!(
            client.url(&["v1", "hosts"]).as_str(),
            "https://paz.example.com/api/v1/hosts"
        );
        assert!(matches!(
            Client::new("http://h", Some("bad\ntoken".into())),
            Err(Error::InvalidToken)
        ));
        assert_eq!(client.base_url(), "https://paz.example.com/api");
        assert!(
            !format!(
                "{:?}",
                Client::new("http://h", Some("s3cret".into())).unwrap()
            )
            .contains("s3cret")
        );
    }

    /// Serves one canned HTTP answer on a loopback port; returns the base URL and the raw
    /// request it received.
    fn one_shot_server(status: &str, body: &str) -> (String, mpsc::Receiver<String>) {
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        tx.send(text).unwrap();
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            stream.write_all(answer.as_bytes()).unwrap();
        });
        (url, rx)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn patch_sends_token_if_match_and_merge_patch_and_reads_api_errors() {
        let (url, requests) = one_shot_server(
            "412 Precondition Failed",
            r#"{"error":{"code":"REVISION_MISMATCH","message":"web changed"}}"#,
        );
        let client = Client::new(&url, Some("t0k".into())).unwrap();
        let err = runtime()
            .block_on(client.patch_service("web", &serde_json::json!({"instances": 3}), Some(7)))
            .unwrap_err();
        assert_eq!(err.code(), Some("REVISION_MISMATCH"), "{err:?}");
        assert_eq!(err.status(), Some(412));
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("patch /v1/services/web http/1.1"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer t0k"), "{request}");
        assert!(request.contains("if-match: 7"), "{request}");
        assert!(
            request.contains("content-type: application/merge-patch+json"),
            "{request}"
        );
        assert!(request.ends_with("{\"instances\":3}"), "{request}");
    }

    #[test]
    fn connection_refused_is_a_clear_http_error() {
        // Bind then drop to get a port where nothing listens.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = runtime().block_on(client.services()).unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot connect to http://127.0.0.1:{port}/v1/services"
            )),
            "{err}"
        );
    }
    const LOG: &str =
        r#"{"instance":"3f2a9b1c2d3e4f","stream":"stdout","line":"listening on :8080"}"#;

    fn split_chunks(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(1024);
        let mut lines: Vec<Vec<u8>> = chunks
            .iter()
            .flat_map(|c| splitter.feed(c).unwrap())
            .collect();
        lines.extend(splitter.finish());
        lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn ndjson_lines_split_the_same_in_any_chunking() {
        let text = format!("{LOG}\n\n{{\"a\":\"é\"}}\r\n  \n{LOG}");
        let whole = split_chunks(&[text.as_bytes()]);
        assert_eq!(whole, [LOG, "{\"a\":\"é\"}", LOG]);
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(
                split_chunks(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split_chunks(&single_bytes), whole);
    }

    #[test]
    fn ndjson_lines_have_a_size_limit() {
        let mut splitter = LineSplitter::new(8);
        assert!(splitter.feed(b"12345678\n1234").unwrap().len() == 1);
        assert!(matches!(
            splitter.feed(b"56789"),
            Err(Error::LogLineTooLarge)
        ));
    }

    #[test]
    fn log_lines_decode_and_report_bad_lines() {
        let chunks: Vec<Result<Vec<u8>, reqwest::Error>> = vec![
            Ok(LOG.as_bytes()[..10].to_vec()),
            Ok(format!("{}\nnot json\n", &LOG[10..]).into_bytes()),
            Ok(br#"{"instance":"x","stream":"stderr","line":"oops"}"#.to_vec()),
        ];
        let items = runtime()
            .block_on(LogLines::new(futures_util::stream::iter(chunks)).collect::<Vec<_>>());
        assert_eq!(items.len(), 3, "{items:?}");
        let first = items[0].as_ref().unwrap();
        assert_eq!(first.instance, "3f2a9b1c2d3e4f");
        assert_eq!(first.line, "listening on :8080");
        assert!(matches!(items[1], Err(Error::Decode { .. })));
        let last = items[2].as_ref().unwrap();
        assert_eq!(last.stream, paz_core::scheduler::LogStreamKind::Stderr);
        assert_eq!(last.line, "oops");
    }

    #[test]
    fn logs_sends_follow_and_tail_and_streams_lines() {
        let (url, requests) = one_shot_server("200 OK", &format!("{LOG}\n{LOG}\n"));
        let client = Client::new(&url, Some("t0k".into())).unwrap();
        let lines = runtime().block_on(async {
            let stream = client.logs("web", true, Some(5)).await.unwrap();
            stream.collect::<Vec<_>>().await
        });
        assert_eq!(lines.len(), 2);
        assert!(
            lines
                .iter()
                .all(|l| l.as_ref().unwrap().line == "listening on :8080")
        );
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /v1/services/web/logs?follow=true&tail=5 http/1.1"),
            "{request}"
        );
        assert!(
            request.contains("accept: application/x-ndjson"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer t0k"), "{request}");

        let (url, requests) = one_shot_server("200 OK", "");
        let client = Client::new(&url, None).unwrap();
        runtime().block_on(client.logs("web", false, None)).unwrap();
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /v1/services/web/logs?follow=false http/1.1"),
            "{request}"
        );
    }

    #[test]
    fn logs_without_a_scheduler_is_an_api_error() {
        let (url, _requests) = one_shot_server(
            "409 Conflict",
            r#"{"error":{"code":"NO_SCHEDULER","message":"this server runs no scheduler"}}"#,
        );
        let client = Client::new(&url, None).unwrap();
        let err = runtime()
            .block_on(client.logs("web", false, None))
            .unwrap_err();
        assert_eq!(err.code(), Some("NO_SCHEDULER"));
        assert_eq!(err.status(), Some(409));
    }

    #[test]
    fn promote_and_abort_post_to_their_paths() {
        for (path, call) in [("promote", true), ("abort", false)] {
            let (url, requests) = one_shot_server("200 OK", &deployment_json("web-4", "running"));
            let client = Client::new(&url, None).unwrap();
            let deployment = runtime()
                .block_on(async {
                    if call {
                        client.promote("web").await
                    } else {
                        client.abort("web").await
                    }
                })
                .unwrap();
            assert_eq!(deployment.id, "web-4");
            let request = requests.recv().unwrap().to_ascii_lowercase();
            assert!(
                request.starts_with(&format!("post /v1/services/web/{path} http/1.1")),
                "{request}"
            );
        }
    }

    #[test]
    fn status_reads_the_servers_status_response() {
        let body = format!(
            r#"{{"service":{},"deployment":null,"instances":[{{"id":"abc","service":"web","release":1,"slot":0,"host":"h1","state":"healthy","address":"10.0.0.2:8080"}}],"problems":["slot 1 keeps crashing"]}}"#,
            service_json()
        );
        let (url, requests) = one_shot_server("200 OK", &body);
        let client = Client::new(&url, None).unwrap();
        let status = runtime().block_on(client.status("web")).unwrap();
        assert_eq!(status.service.spec.name, "web");
        assert_eq!(status.deployment, None);
        assert_eq!(status.instances[0].state, paz_core::InstanceState::Healthy);
        assert_eq!(status.problems, ["slot 1 keeps crashing"]);
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /v1/services/web/status http/1.1"),
            "{request}"
        );
        // It serializes back to the same shape.
        let again: ServiceStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(again, status);
    }

    fn service_json() -> String {
        r#"{"spec":{"name":"web","image":"demo:v1"},"current_release":1,"latest_release":1,"latest_deployment":1,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","revision":3}"#.to_owned()
    }

    fn deployment_json(id: &str, status: &str) -> String {
        format!(
            r#"{{"id":"{id}","service":"web","sequence":4,"release":2,"previous_release":1,"strategy":"rolling","status":"{status}","trigger":{{"kind":"deploy"}},"created_at":"2026-01-01T00:00:00Z"}}"#
        )
    }

    /// A loopback HTTP server that answers every connection (one request each) with
    /// `answer(request head)`: the raw status line, extra headers and body. An answer with
    /// `keep_open` stays open (an event stream with nothing more to say).
    fn fake_server(
        answer: impl Fn(&str) -> (String, String, bool) + Send + Sync + 'static,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer = std::sync::Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let (status, body, keep_open) = answer(&head);
                    let content_type = if keep_open || head.starts_with("GET /v1/events") {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    let length = if keep_open {
                        String::new()
                    } else {
                        format!("content-length: {}\r\n", body.len())
                    };
                    let _ = stream.write_all(
                        format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{length}connection: close\r\n\r\n{body}")
                            .as_bytes(),
                    );
                    let _ = stream.flush();
                    if keep_open {
                        std::thread::sleep(Duration::from_secs(10));
                    }
                });
            }
        });
        url
    }

    #[test]
    fn wait_for_deployment_reads_again_on_each_change() {
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = reads.clone();
        let url = fake_server(move |head| {
            if head.starts_with("GET /v1/events ") {
                let other = r#"{"revision":8,"at":"2026-01-01T00:00:00Z","type":"deployment_changed","service":"api","id":"api-1","release":1,"status":"running"}"#;
                let ours = r#"{"revision":9,"at":"2026-01-01T00:00:00Z","type":"deployment_changed","service":"web","id":"web-4","release":2,"status":"succeeded"}"#;
                let body = format!(
                    ": hi\n\nevent: deployment_changed\ndata: {other}\n\nevent: deployment_changed\ndata: {ours}\n\n"
                );
                ("200 OK".into(), body, true)
            } else if head.starts_with("GET /v1/deployments/web-4 ") {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = if n == 0 { "running" } else { "succeeded" };
                ("200 OK".into(), deployment_json("web-4", status), false)
            } else {
                ("404 Not Found".into(), String::new(), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let ended = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_secs(20)))
            .unwrap();
        assert_eq!(ended.status, paz_core::DeploymentStatus::Succeeded);
        // Once after subscribing, once for its own event (not for the other service's).
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn wait_for_deployment_gives_up_with_the_last_state() {
        let url = fake_server(|head| {
            if head.starts_with("GET /v1/events ") {
                ("200 OK".into(), ": keep-alive\n\n".into(), true)
            } else {
                ("200 OK".into(), deployment_json("web-4", "running"), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let started = std::time::Instant::now();
        let err = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_millis(400)))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let Error::WaitTimedOut { deployment, after } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(deployment.status, paz_core::DeploymentStatus::Running);
        assert_eq!(*after, Duration::from_millis(400));
        assert_eq!(
            err.to_string(),
            "deployment web-4 is still running after 400ms"
        );
    }

    #[test]
    fn wait_for_deployment_returns_a_finished_one_at_once() {
        let url = fake_server(|head| {
            if head.starts_with("GET /v1/events ") {
                ("200 OK".into(), String::new(), true)
            } else {
                ("200 OK".into(), deployment_json("web-4", "failed"), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let ended = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_secs(20)))
            .unwrap();
        assert_eq!(ended.status, paz_core::DeploymentStatus::Failed);
    }

    #[test]
    fn wait_for_deployment_gives_up_when_the_stream_keeps_closing() {
        let url = fake_server(|head| {
            if head.starts_with("GET /v1/events ") {
                ("200 OK".into(), String::new(), false)
            } else {
                ("200 OK".into(), deployment_json("web-4", "running"), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let err = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_secs(20)))
            .unwrap_err();
        assert!(matches!(err, Error::EventStreamClosed), "{err:?}");
    }
}
