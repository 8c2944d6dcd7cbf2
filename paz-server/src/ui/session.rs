//! Signing in: the admin token buys a session, kept in memory, named by a random id in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure`, and `__Host-` prefixed, when the request
//! came over TLS). Every form carries the session's CSRF token, and every POST is checked
//! for it and for a same-origin `Origin` / `Sec-Fetch-Site`. Failed sign-ins are limited per
//! client and in total.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use super::PageError;
use crate::AppState;

/// A session ends this long after sign-in, however busy.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A session ends after this long without a request.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(2 * 3600);
/// At most this many sessions are kept; past it the oldest goes.
const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins allowed per client in [`LIMIT_WINDOW`].
const MAX_FAILURES_PER_CLIENT: u32 = 10;
/// Failed sign-ins allowed from all clients together in [`LIMIT_WINDOW`].
const MAX_FAILURES_TOTAL: u32 = 100;
/// The window of the sign-in limits.
const LIMIT_WINDOW: Duration = Duration::from_secs(600);
/// How long the sign-in form's own CSRF cookie lives.
const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(3600);

/// The session cookie over plain HTTP.
const COOKIE: &str = "paz_session";
/// The session cookie over TLS (`__Host-`: Secure, Path=/, no Domain, so no other site or
/// subdomain can set or shadow it).
const COOKIE_TLS: &str = "__Host-paz_session";
/// The sign-in form's CSRF cookie (double submit: there is no session yet).
const LOGIN_COOKIE: &str = "paz_login";

/// The signed-in session of a request, put in its extensions by [`require_session`].
#[derive(Debug, Clone)]
pub(crate) struct SessionView {
    /// The key the session is stored under (the SHA-256 of its id).
    pub key: String,
    /// Its CSRF token, put in every form.
    pub csrf: String,
    /// A message left by the previous request (GET requests take it).
    pub flash: Option<String>,
}

struct Session {
    csrf: String,
    created: Instant,
    seen: Instant,
    flash: Option<String>,
}

/// The sessions, in memory: a restart signs everybody out.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex(bytes: usize) -> Result<String, PageError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| {
        tracing::error!(error = %e, "no random bytes for a session");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No random bytes for a session",
        )
    })?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// The SHA-256 of a session id, as hex: sessions are looked up by it, so the map never
/// holds (or compares) the ids themselves.
fn key_of(id: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, id.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sessions {
    /// Makes a session; returns its id (the cookie's value).
    pub fn create(&self) -> Result<String, PageError> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key_of(&id),
            Session {
                csrf,
                created: now,
                seen: now,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The live session with this id, touched; `take_flash` takes its message.
    fn get(&self, id: &str, take_flash: bool) -> Option<SessionView> {
        let key = key_of(id);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let session = map.get_mut(&key)?;
        if !alive(session, now) {
            map.remove(&key);
            return None;
        }
        session.seen = now;
        let flash = if take_flash {
            session.flash.take()
        } else {
            None
        };
        Some(SessionView {
            csrf: session.csrf.clone(),
            key,
            flash,
        })
    }

    /// Whether the session stored under `key` is still signed in (live streams check it).
    pub fn is_live(&self, key: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).is_some_and(|s| alive(s, Instant::now()))
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, key: &str, message: impl Into<String>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = map.get_mut(key) {
            session.flash = Some(message.into());
        }
    }

    /// Ends a session.
    pub fn remove(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.duration_since(session.created) < SESSION_LIFETIME
        && now.duration_since(session.seen) < SESSION_IDLE
}

/// Failed sign-ins per client (and in total) in a fixed window.
#[derive(Default)]
pub(crate) struct SignInLimiter {
    map: Mutex<HashMap<String, (u32, Instant)>>,
}

const TOTAL: &str = "*";

impl SignInLimiter {
    /// `Err(wait)` when `client` (or everyone) has failed too often lately.
    fn check(&self, client: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, since)| now.duration_since(*since) < LIMIT_WINDOW);
        for (key, max) in [
            (client, MAX_FAILURES_PER_CLIENT),
            (TOTAL, MAX_FAILURES_TOTAL),
        ] {
            if let Some((failures, since)) = map.get(key)
                && *failures >= max
            {
                return Err(LIMIT_WINDOW.saturating_sub(now.duration_since(*since)));
            }
        }
        Ok(())
    }

    fn fail(&self, client: &str) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: one entry per client that failed within the window, and the total caps
        // how many failures (so entries) a window can have.
        for key in [client, TOTAL] {
            map.entry(key.to_owned()).or_insert((0, now)).0 += 1;
        }
    }

    fn succeed(&self, client: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client);
    }
}

/// Whether the request came from the router on this machine (the API served under
/// `--api-domain`): only then are its `X-Forwarded-*` headers believed.
fn from_local_router(parts: &Parts) -> bool {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback())
        && parts.headers.contains_key("x-forwarded-for")
}

/// Whether the request came over TLS (through the router).
pub(crate) fn is_tls(parts: &Parts) -> bool {
    from_local_router(parts)
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Who is signing in, for the rate limit: the peer address, or the client the local
/// router names.
fn client_of(parts: &Parts) -> String {
    if from_local_router(parts)
        && let Some(client) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return client.to_string();
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_owned(),
            |ConnectInfo(peer)| peer.ip().to_string(),
        )
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE_TLS).or_else(|| cookie(headers, COOKIE))
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn session_cookie(id: &str, secure: bool) -> HeaderValue {
    let name = if secure { COOKIE_TLS } else { COOKIE };
    set_cookie(name, id, "/", SESSION_LIFETIME, secure)
}

/// A path to go back to after signing in: only a path of this site.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(char::is_control)
                && path != "/login" =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Lets a request through when it carries a live session (put in its extensions); else a
/// page is sent to the sign-in form and anything else gets 401.
pub(crate) async fn require_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let take_flash = request.method() == axum::http::Method::GET;
    let session =
        session_id(request.headers()).and_then(|id| state.ui.inner.sessions.get(id, take_flash));
    let Some(session) = session else {
        let path = request.uri().path();
        let wants_page = request.method() == axum::http::Method::GET
            && !path.starts_with("/ui/")
            && !path.ends_with("/stream");
        if wants_page {
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let query = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
            return Redirect::to(&format!("/login?{query}")).into_response();
        }
        return PageError::new(StatusCode::UNAUTHORIZED, "Sign in first").into_response();
    };
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Refuses a request that a browser says comes from another site.
fn same_origin(parts: &Parts) -> Result<(), PageError> {
    let refused = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This form was sent from another site; Paz only takes forms from its own pages",
        )
    };
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused());
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("\u{0}");
        if !authority.eq_ignore_ascii_case(host) {
            return Err(refused());
        }
    }
    Ok(())
}

/// A form posted from one of the UI's own pages: same origin, with the session's CSRF
/// token in its `csrf` field; `T` is the rest of the fields.
pub(crate) struct Csrf<T>(pub SessionView, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Csrf<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, PageError> {
        let (parts, body) = request.into_parts();
        same_origin(&parts)?;
        let session = parts
            .extensions
            .get::<SessionView>()
            .cloned()
            .ok_or_else(|| PageError::new(StatusCode::UNAUTHORIZED, "Sign in first"))?;
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| PageError::new(e.status(), "The form could not be read"))?;
        check_token(&bytes, &session.csrf)?;
        let fields = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("The form is not valid: {e}"),
            )
        })?;
        Ok(Csrf(session, fields))
    }
}

/// Checks the form's `csrf` field against `expected`, in constant time.
fn check_token(body: &[u8], expected: &str) -> Result<(), PageError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let given = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    if given.is_empty() || !crate::token::matches(given, expected) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired (or is not from this site): go back, reload the page and try again",
        ));
    }
    Ok(())
}

/// A form with no fields but its CSRF token (a button).
#[derive(serde::Deserialize)]
pub(crate) struct NoFields {}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
pub(crate) struct SignIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// `?next=` of the sign-in page.
#[derive(serde::Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

/// `GET /login`: the sign-in form (or on to the app when already signed in).
pub(crate) async fn login_page(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, PageError> {
    let (parts, _) = request.into_parts();
    let query: NextQuery =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or(NextQuery {
            next: None,
            signed_out: None,
        });
    let next = safe_next(query.next.as_deref());
    if session_id(&parts.headers).is_some_and(|id| state.ui.inner.sessions.get(id, false).is_some())
    {
        return Ok(Redirect::to(&next).into_response());
    }
    let note = query.signed_out.map(|_| "You are signed out.".to_owned());
    login_form(&parts, &next, None, note, StatusCode::OK)
}

fn login_form(
    parts: &Parts,
    next: &str,
    error: Option<String>,
    note: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let csrf = random_hex(32)?;
    let body = super::pages::login(&csrf, next, error.as_deref(), note.as_deref());
    let mut response = (status, body).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &csrf,
            "/login",
            LOGIN_FORM_LIFETIME,
            is_tls(parts),
        ),
    );
    super::no_store(&mut response);
    Ok(response)
}

/// `POST /login`: checks the admin token (in constant time) and starts a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, PageError> {
    let (parts, body) = request.into_parts();
    let client = client_of(&parts);
    if let Err(wait) = state.ui.inner.limiter.check(&client) {
        tracing::warn!(%client, "sign-in refused: too many failed attempts");
        let mut response = PageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins. Try again in {} minutes.",
                wait.as_secs().div_ceil(60).max(1)
            ),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    same_origin(&parts)?;
    let bytes = axum::body::to_bytes(body, crate::BODY_LIMIT)
        .await
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "The form could not be read"))?;
    let form: SignIn = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "The form is not valid"))?;
    let next = safe_next(form.next.as_deref());
    let expected = cookie(&parts.headers, LOGIN_COOKIE).unwrap_or("");
    if form.csrf.is_empty() || expected.is_empty() || !crate::token::matches(&form.csrf, expected) {
        return login_form(
            &parts,
            &next,
            None,
            Some("The sign-in form had expired; enter the token again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    if form.token.trim().is_empty() || !crate::token::matches(form.token.trim(), &state.token) {
        state.ui.inner.limiter.fail(&client);
        tracing::info!(%client, "sign-in with a wrong token");
        return login_form(
            &parts,
            &next,
            Some("This is not the admin token.".into()),
            None,
            StatusCode::UNAUTHORIZED,
        );
    }
    state.ui.inner.limiter.succeed(&client);
    let id = state.ui.inner.sessions.create()?;
    let secure = is_tls(&parts);
    let mut response = Redirect::to(&next).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session_cookie(&id, secure));
    headers.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", Duration::ZERO, secure),
    );
    tracing::info!(%client, "signed in to the web UI");
    Ok(response)
}

/// `POST /logout`: ends the session and expires its cookie.
pub(crate) async fn logout(
    State(state): State<AppState>,
    Csrf(session, NoFields {}): Csrf<NoFields>,
) -> Response {
    state.ui.inner.sessions.remove(&session.key);
    let mut response = Redirect::to("/login?signed_out=1").into_response();
    for (name, secure) in [(COOKIE, false), (COOKIE_TLS, true)] {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(name, "", "/", Duration::ZERO, secure),
        );
    }
    response
}

/// Makes a signed-in session and returns the `Cookie` header that carries it (for
/// in-process tests and benchmarks).
pub(crate) fn cookie_header(sessions: &Sessions) -> Result<String, PageError> {
    Ok(format!("{COOKIE}={}", sessions.create()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_local_path() {
        assert_eq!(safe_next(Some("/services/web")), "/services/web");
        assert_eq!(safe_next(Some("/services?q=a")), "/services?q=a");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "",
            "x",
            "/login",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn sessions_end_when_removed_and_keep_their_csrf() {
        let sessions = Sessions::default();
        let id = sessions.create().unwrap();
        let view = sessions.get(&id, false).unwrap();
        assert_eq!(view.csrf.len(), 64);
        assert_eq!(sessions.get(&id, false).unwrap().csrf, view.csrf);
        assert!(sessions.get("not-an-id", false).is_none());
        sessions.flash(&view.key, "hello");
        assert_eq!(sessions.get(&id, false).unwrap().flash, None);
        assert_eq!(
            sessions.get(&id, true).unwrap().flash.as_deref(),
            Some("hello")
        );
        assert_eq!(sessions.get(&id, true).unwrap().flash, None);
        sessions.remove(&view.key);
        assert!(sessions.get(&id, false).is_none());
        assert!(!sessions.is_live(&view.key));
    }

    #[test]
    fn failed_sign_ins_are_limited_per_client_and_in_total() {
        let limiter = SignInLimiter::default();
        for _ in 0..MAX_FAILURES_PER_CLIENT {
            assert!(limiter.check("10.0.0.1").is_ok());
            limiter.fail("10.0.0.1");
        }
        assert!(limiter.check("10.0.0.1").is_err());
        assert!(limiter.check("10.0.0.2").is_ok());
        limiter.succeed("10.0.0.1");
        assert!(limiter.check("10.0.0.1").is_ok());
        for n in 0..MAX_FAILURES_TOTAL {
            limiter.fail(&format!("192.0.2.{}", n % 250));
        }
        assert!(
            limiter.check("10.0.0.3").is_err(),
            "the total limit holds for a new client"
        );
    }

    #[test]
    fn the_csrf_field_must_match() {
        assert!(check_token(b"csrf=abc&x=1", "abc").is_ok());
        assert!(check_token(b"csrf=abd&x=1", "abc").is_err());
        assert!(check_token(b"x=1", "abc").is_err());
        assert!(check_token(b"csrf=", "").is_err());
    }
}
