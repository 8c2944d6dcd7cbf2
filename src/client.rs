//! The typed REST client of a `paz-server`.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{BoxStream, Stream, StreamExt};
use paz_core::api::{DeployRequest, ErrorResponse, HealthResponse, RollbackRequest, ScaleRequest};
use paz_core::{Deployment, Event, FieldError, Host, Release, Service, ServiceSpec};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, IF_MATCH};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long a non-streaming request may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest SSE line the event stream accepts before giving up.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;
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

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs can be a base (checked in Client::new)")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let builder = self.http.request(method, self.url(segments));
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

struct EventState<S> {
    body: S,
    parser: SseParser,
    pending: VecDeque<Result<Event, Error>>,
    done: bool,
}

impl EventStream {
    fn new<S, B>(body: S) -> EventStream
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
        B: AsRef<[u8]>,
    {
        let state = EventState {
            body,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            done: false,
        };
        let inner = futures_util::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.pending.pop_front() {
                    return Some((item, state));
                }
                if state.done {
                    return None;
                }
                match state.body.next().await {
                    Some(Ok(chunk)) => match state.parser.feed(chunk.as_ref()) {
                        Ok(messages) => {
                            state.pending.extend(messages.into_iter().map(decode_event))
                        }
                        Err(e) => {
                            state.done = true;
                            state.pending.push_back(Err(e));
                        }
                    },
                    Some(Err(e)) => {
                        state.done = true;
                        state.pending.push_back(Err(Error::Http(e)));
                    }
                    None => state.done = true,
                }
            }
        });
        EventStream {
            inner: inner.boxed(),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
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
}
