//! The web UI, called through the router in memory: signing in and out, sessions, CSRF and
//! origin checks, the sign-in limit, forms whose errors are the API's validators', the
//! pages, the live stream and the assets. The browser test (`tests/it/ui.rs` at the root)
//! drives the same pages in a real Chromium.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use paz_core::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger, TriggerKind};
use paz_server::{AppState, router};
use tower::ServiceExt;

const TOKEN: &str = "ui-test-token-0123456789";

struct Ui {
    app: axum::Router,
    paz: Paz,
    state: AppState,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of hidden input `name` in the page.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

fn peer() -> ConnectInfo<SocketAddr> {
    ConnectInfo("192.0.2.10:40000".parse().unwrap())
}

impl Ui {
    fn new() -> Ui {
        let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        let state = AppState::new(paz.clone(), TOKEN, receiver);
        Ui {
            app: router(state.clone()),
            paz,
            state,
            _shutdown: shutdown,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let mut request = request.body(Body::empty()).unwrap();
        request.extensions_mut().insert(peer());
        self.send(request).await
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        self.post_with(path, cookie, form, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, "127.0.0.1:7700")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookie);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request
            .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
            .unwrap();
        request.extensions_mut().insert(peer());
        self.send(request).await
    }

    /// Signs in through the form; returns the session cookie and the page's CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let form = self.get("/login", None).await;
        assert_eq!(form.status, StatusCode::OK);
        let login_cookie = cookie_pair(&form.cookies()[0]);
        let csrf = form.hidden("csrf");
        let answer = self
            .post(
                "/login",
                &login_cookie,
                &[("token", TOKEN), ("csrf", &csrf), ("next", "/services")],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), "/services");
        let session = answer
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("paz_session="))
            .expect("a session cookie");
        let cookie = cookie_pair(&session);
        let page = self.get("/", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page.hidden("csrf");
        (cookie, csrf)
    }
}

/// `name=value` of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_need_a_session_and_the_api_is_untouched() {
    let ui = Ui::new();
    let answer = ui.get("/services?q=a", None).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/login?next=%2Fservices%3Fq%3Da");
    for path in ["/ui/live?view=dashboard", "/services/web/logs/stream"] {
        assert_eq!(
            ui.get(path, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let forged = ui.get("/", Some("paz_session=00ff")).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    // The API keeps its JSON answers and its document knows nothing of the UI.
    let missing = ui.get("/v1/nope", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("\"NOT_FOUND\""), "{}", missing.body);
    let unauthorized = ui.get("/v1/services", None).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let document = ui.get("/openapi.json", None).await;
    assert!(!document.body.contains("\"/login\"") && !document.body.contains("\"/services\""));
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it() {
    let ui = Ui::new();
    let form = ui.get("/login", None).await;
    let login_cookie = form.cookies()[0].clone();
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    let csrf = form.hidden("csrf");
    let login = cookie_pair(&login_cookie);

    let wrong = ui
        .post("/login", &login, &[("token", "nope"), ("csrf", &csrf)])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("id=\"err-token\""), "{}", wrong.body);
    assert!(wrong.body.contains("This is not the admin token."));
    let no_csrf = ui.post("/login", &login, &[("token", TOKEN)]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let other_site = ui
        .post_with(
            "/login",
            &login,
            &[("token", TOKEN), ("csrf", &csrf)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(other_site.status, StatusCode::FORBIDDEN);

    let right = ui
        .post("/login", &login, &[("token", TOKEN), ("csrf", &csrf)])
        .await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.location(), "/");
    let session = right
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("paz_session="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(session.contains(attribute), "{attribute}: {session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure");
    let cookie = cookie_pair(&session);
    let dashboard = ui.get("/", Some(&cookie)).await;
    assert_eq!(dashboard.status, StatusCode::OK);
    assert_eq!(
        dashboard.headers[header::CACHE_CONTROL],
        "no-store",
        "pages are never cached"
    );
    let policy = dashboard.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    let csrf = dashboard.hidden("csrf");

    // Sign-out is a POST with the token, and the cookie is refused afterwards.
    assert_eq!(
        ui.post("/logout", &cookie, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let out = ui.post("/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login?signed_out=1");
    assert!(out.cookies().iter().any(|c| c.starts_with("paz_session=;")));
    let refused = ui.get("/", Some(&cookie)).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert!(refused.location().starts_with("/login"));
    assert_eq!(
        ui.get("/ui/live?view=dashboard", Some(&cookie))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        ui.get("/login?signed_out=1", None)
            .await
            .body
            .contains("You are signed out.")
    );
}

#[tokio::test]
async fn over_tls_through_the_router_the_cookie_is_secure() {
    let ui = Ui::new();
    let mut request = Request::get("/login")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(ConnectInfo::<SocketAddr>(
        "127.0.0.1:50000".parse().unwrap(),
    ));
    let form = ui.send(request).await;
    assert!(
        form.cookies()[0].contains("; Secure"),
        "{:?}",
        form.cookies()
    );
    let csrf = form.hidden("csrf");
    let login = cookie_pair(&form.cookies()[0]);
    let body = serde_urlencoded::to_string([("token", TOKEN), ("csrf", csrf.as_str())]).unwrap();
    let mut request = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, login)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Body::from(body))
        .unwrap();
    request.extensions_mut().insert(ConnectInfo::<SocketAddr>(
        "127.0.0.1:50000".parse().unwrap(),
    ));
    let answer = ui.send(request).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let session = answer
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-paz_session="))
        .expect("the __Host- cookie over TLS");
    assert!(session.contains("; Secure") && session.contains("Path=/"));
    // The same header from anyone but the local router is not believed.
    let mut request = Request::get("/login")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(peer());
    assert!(!ui.send(request).await.cookies()[0].contains("Secure"));
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_client() {
    let ui = Ui::new();
    let form = ui.get("/login", None).await;
    let csrf = form.hidden("csrf");
    let login = cookie_pair(&form.cookies()[0]);
    for _ in 0..10 {
        let answer = ui
            .post("/login", &login, &[("token", "guess"), ("csrf", &csrf)])
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = ui
        .post("/login", &login, &[("token", TOKEN), ("csrf", &csrf)])
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    assert!(limited.body.contains("Too many failed sign-ins"));
}

#[tokio::test]
async fn forms_need_the_sessions_token_and_this_sites_origin() {
    let ui = Ui::new();
    let (cookie, csrf) = ui.sign_in().await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", "web"),
        ("image", "demo:v1"),
    ];
    let without = ui
        .post(
            "/services",
            &cookie,
            &[("name", "web"), ("image", "demo:v1")],
        )
        .await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    let wrong = ui
        .post(
            "/services",
            &cookie,
            &[("csrf", "0000"), ("name", "web"), ("image", "demo:v1")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let cross = ui
        .post_with(
            "/services",
            &cookie,
            &fields,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let foreign = ui
        .post_with(
            "/services",
            &cookie,
            &fields,
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(
        ui.paz.services().await.unwrap().is_empty(),
        "nothing was made"
    );
    let same = ui
        .post_with(
            "/services",
            &cookie,
            &fields,
            &[
                ("origin", "http://127.0.0.1:7700"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(same.status, StatusCode::SEE_OTHER, "{}", same.body);
    assert_eq!(same.location(), "/services/web");
}

#[tokio::test]
async fn form_errors_are_the_validators_next_to_their_fields() {
    let ui = Ui::new();
    let (cookie, csrf) = ui.sign_in().await;
    let form = ui.get("/services/new", Some(&cookie)).await;
    assert_eq!(form.status, StatusCode::OK);
    let answer = ui
        .post(
            "/services",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "Web_1"),
                ("image", "demo:v1"),
                ("instances", "2000"),
                ("ports", "8080"),
                ("public", "on"),
                ("health_kind", "http"),
                ("health_path", "health"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The messages are the engine's validators', word for word.
    let mut spec = ServiceSpec::new("Web_1", "demo:v1");
    spec.instances = 2000;
    spec.public = true;
    spec.ports = vec![paz_core::PortSpec {
        port: 8080,
        protocol: paz_core::Protocol::Http,
    }];
    spec.health = Some(paz_core::HealthCheck {
        path: "health".into(),
        ..paz_core::HealthCheck::default()
    });
    let Err(paz_core::Error::Validation(errors)) = spec.validate() else {
        panic!("the spec is invalid")
    };
    for (field, error) in [
        ("name", "INVALID_NAME"),
        ("instances", "INVALID_INSTANCES"),
        ("health_path", "INVALID_HEALTH"),
    ] {
        let expected = errors.0.iter().find(|e| e.code == error).unwrap();
        let shown = format!(
            "id=\"err-{field}\">{}",
            expected.message.replace('"', "&quot;")
        );
        assert!(answer.body.contains(&shown), "{shown} in {}", answer.body);
        assert!(
            answer
                .body
                .contains(&format!("aria-describedby=\"err-{field}\""))
                || answer.body.contains(&format!("err-{field}\""))
        );
    }
    // What was typed stays in the form.
    assert!(answer.body.contains("value=\"Web_1\""));
    // A field that is not even a number, in the API's words.
    let answer = ui
        .post(
            "/services",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "web"),
                ("image", "demo:v1"),
                ("instances", "two"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer
            .body
            .contains("id=\"err-instances\">instances &quot;two&quot; is not a whole number"),
        "{}",
        answer.body
    );
    // A name taken is an error next to the name.
    ui.paz
        .create_service(
            ServiceSpec::new("taken", "demo:v1"),
            Trigger::new(TriggerKind::Create),
        )
        .await
        .unwrap();
    let answer = ui
        .post(
            "/services",
            &cookie,
            &[("csrf", &csrf), ("name", "taken"), ("image", "demo:v1")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(
        answer
            .body
            .contains("id=\"err-name\">service &quot;taken&quot; already exists"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn services_are_created_edited_deployed_scaled_rolled_back_and_deleted() {
    let ui = Ui::new();
    let (cookie, csrf) = ui.sign_in().await;
    let created = ui
        .post(
            "/services",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "web"),
                ("image", "demo:v1"),
                ("instances", "2"),
                ("ports", "8080"),
                ("public", "on"),
                ("https_redirect", "on"),
                ("health_kind", "http"),
                ("health_path", "/health"),
                ("env", "GREETING=hello\nMODE=a=b"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let service = ui.paz.service("web").await.unwrap();
    assert_eq!(service.spec.instances, 2);
    assert_eq!(service.spec.env["MODE"], "a=b");
    assert_eq!(
        service.spec.health.as_ref().unwrap().path,
        "/health",
        "the form's health check"
    );
    let page = ui.get("/services/web", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Created web: deploying release v1."),
        "the flash"
    );
    assert!(page.body.contains("http://web.localhost/"));
    assert!(
        page.body
            .contains("data-live=\"/ui/live?view=service&amp;name=web\"")
    );
    assert!(
        !ui.get("/services/web", Some(&cookie))
            .await
            .body
            .contains("Created web"),
        "a flash shows once"
    );
    let list = ui.get("/services", Some(&cookie)).await;
    assert!(list.body.contains("href=\"/services/web\""));
    assert!(list.body.contains("1 of 1 services"));
    assert!(
        ui.get("/services?q=nomatch", Some(&cookie))
            .await
            .body
            .contains("0 of 1 services")
    );

    // Edit: the form shows the spec and saves a release, guarded by the revision.
    let edit = ui.get("/services/web/edit", Some(&cookie)).await;
    let revision = edit.hidden("revision");
    assert!(edit.body.contains("GREETING=hello"));
    let saved = ui
        .post(
            "/services/web/edit",
            &cookie,
            &[
                ("csrf", &csrf),
                ("revision", &revision),
                ("name", "web"),
                ("image", "demo:v2"),
                ("instances", "2"),
                ("ports", "8080"),
                ("public", "on"),
                ("health_kind", "http"),
                ("health_path", "/health"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(ui.paz.service("web").await.unwrap().spec.image, "demo:v2");
    let stale = ui
        .post(
            "/services/web/edit",
            &cookie,
            &[
                ("csrf", &csrf),
                ("revision", &revision),
                ("name", "web"),
                ("image", "demo:v3"),
            ],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert!(stale.body.contains("was changed by someone else"));

    // Deploy: a bad image is an error next to the image field; a good one shows the deployment.
    let bad = ui
        .post(
            "/services/web/deploy",
            &cookie,
            &[("csrf", &csrf), ("image", "UPPER:case")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"err-deploy-image\""), "{}", bad.body);
    let deployed = ui
        .post(
            "/services/web/deploy",
            &cookie,
            &[("csrf", &csrf), ("image", "demo:v3")],
        )
        .await;
    assert_eq!(deployed.status, StatusCode::SEE_OTHER);
    let deployment = ui.get(deployed.location(), Some(&cookie)).await;
    assert_eq!(deployment.status, StatusCode::OK);
    assert!(deployment.body.contains("Deployment web-3"));
    assert!(deployment.body.contains("deploy by web UI"));

    // Scale, and its error next to the field.
    let scaled = ui
        .post(
            "/services/web/scale",
            &cookie,
            &[("csrf", &csrf), ("instances", "3")],
        )
        .await;
    assert_eq!(scaled.status, StatusCode::SEE_OTHER);
    assert_eq!(ui.paz.service("web").await.unwrap().spec.instances, 3);
    let too_many = ui
        .post(
            "/services/web/scale",
            &cookie,
            &[("csrf", &csrf), ("instances", "5000")],
        )
        .await;
    assert_eq!(too_many.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        too_many
            .body
            .contains("id=\"err-scale-instances\">instances is 5000; it must be 0 to 1000"),
        "{}",
        too_many.body
    );

    // Roll back: the page says what it will do, the POST does it.
    let confirm = ui.get("/services/web/rollback?to=1", Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Roll back web to v1?"));
    assert!(confirm.body.contains("demo:v1"));
    let rolled = ui
        .post(
            "/services/web/rollback",
            &cookie,
            &[("csrf", &csrf), ("to", "1")],
        )
        .await;
    assert_eq!(rolled.status, StatusCode::SEE_OTHER);
    let service = ui.paz.service("web").await.unwrap();
    assert_eq!(service.current_release, Some(1));
    assert_eq!(
        service.spec.instances, 3,
        "a rollback keeps the instance count"
    );

    // Promote without a canary: the engine's word, as a message.
    let promoted = ui
        .post("/services/web/promote", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER);
    assert!(
        ui.get("/services/web", Some(&cookie))
            .await
            .body
            .contains("no canary deployment in progress")
    );

    // Delete asks for the name.
    let page = ui.get("/services/web/delete", Some(&cookie)).await;
    assert!(page.body.contains("It cannot be undone."));
    let wrong = ui
        .post(
            "/services/web/delete",
            &cookie,
            &[("csrf", &csrf), ("confirm", "wbe")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.body.contains("id=\"err-confirm\""));
    let deleted = ui
        .post(
            "/services/web/delete",
            &cookie,
            &[("csrf", &csrf), ("confirm", "web")],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(ui.paz.services().await.unwrap().is_empty());
    let gone = ui.get("/services/web", Some(&cookie)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.body.contains("service &quot;web&quot; not found"));
}

#[tokio::test]
async fn every_page_renders_without_a_scheduler() {
    let ui = Ui::new();
    let (cookie, _) = ui.sign_in().await;
    let mut spec = ServiceSpec::new("api", "demo:v1");
    spec.ports.push(paz_core::PortSpec {
        port: 8080,
        protocol: paz_core::Protocol::Http,
    });
    ui.paz
        .create_service(spec, Trigger::new(TriggerKind::Create))
        .await
        .unwrap();
    for (path, expected) in [
        ("/", "Dashboard"),
        ("/services", "api"),
        ("/services/new", "New service"),
        ("/services/api", "no scheduler"),
        ("/services/api/edit", "Edit api"),
        ("/services/api/logs", "no scheduler"),
        ("/deployments/api-1", "Deployment api-1"),
        ("/hosts", "Hosts"),
    ] {
        let page = ui.get(path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains(expected), "{path} shows {expected:?}");
        assert!(page.body.starts_with("<!DOCTYPE html>"), "{path}");
    }
    assert_eq!(
        ui.get("/deployments/api-9", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Reads a stream's frames until `text` shows up (at most 10 s).
async fn until(body: &mut Body, seen: &mut String, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(text) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {text:?} in {seen}"))
            .expect("the stream goes on")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }
}

impl Ui {
    async fn stream(&self, path: &str, cookie: &str) -> Body {
        let mut request = Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(peer());
        let response = self.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        response.into_body()
    }
}

#[tokio::test]
async fn the_live_stream_sends_fragments_and_follows_changes() {
    let ui = Ui::new();
    let (cookie, csrf) = ui.sign_in().await;
    ui.paz
        .create_service(
            ServiceSpec::new("web", "demo:v1"),
            Trigger::new(TriggerKind::Create),
        )
        .await
        .unwrap();
    let mut service = ui.stream("/ui/live?view=service&name=web", &cookie).await;
    let mut dashboard = ui.stream("/ui/live?view=dashboard", &cookie).await;
    let mut seen = String::new();
    until(&mut service, &mut seen, "\"id\":\"svc-instances\"").await;
    assert!(seen.contains("event: fragment"));
    // A deploy changes the service's fragments: they come again.
    seen.clear();
    ui.paz
        .deploy(
            "web",
            Some("demo:v2".into()),
            Trigger::new(TriggerKind::Deploy),
        )
        .await
        .unwrap();
    until(&mut service, &mut seen, "web-2").await;
    // A deleted service ends its page's stream with a word for the page.
    seen.clear();
    ui.paz.delete_service("web", None).await.unwrap();
    until(&mut service, &mut seen, "event: gone").await;
    assert!(seen.contains("service \\\"web\\\" not found"), "{seen}");
    // Signing out ends every stream of the session.
    seen.clear();
    until(&mut dashboard, &mut seen, "\"id\":\"dashboard\"").await;
    ui.post("/logout", &cookie, &[("csrf", &csrf)]).await;
    until(&mut dashboard, &mut seen, "event: signed_out").await;
    assert_eq!(ui.state.paz.services().await.unwrap().len(), 0);
}

#[tokio::test]
async fn assets_are_cached_by_content_and_small() {
    let ui = Ui::new();
    let login = ui.get("/login", None).await;
    let css = login
        .body
        .split("href=\"/ui/assets/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let js = login
        .body
        .split("src=\"/ui/assets/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut total = 0;
    for file in [css, js] {
        let answer = ui.get(&format!("/ui/assets/{file}"), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert_eq!(
            answer.headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let etag = answer.headers[header::ETAG].to_str().unwrap().to_owned();
        total += answer.body.len();
        let mut request = Request::get(format!("/ui/assets/{file}"))
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(peer());
        assert_eq!(ui.send(request).await.status, StatusCode::NOT_MODIFIED);
    }
    assert!(total < 100 * 1024, "JS + CSS are {total} bytes");
    assert_eq!(
        ui.get("/ui/assets/paz.0000.css", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_canary_is_promoted_and_a_deployment_aborted_from_the_page() {
    let ui = Ui::new();
    let (cookie, csrf) = ui.sign_in().await;
    let mut spec = ServiceSpec::new("web", "demo:v1");
    spec.deploy.strategy = paz_core::Strategy::Canary;
    spec.deploy.canary_steps = vec![10, 50, 100];
    ui.paz
        .create_service(spec, Trigger::new(TriggerKind::Create))
        .await
        .unwrap();
    // Without a runtime the deployment stays in progress: the page offers its controls.
    let page = ui.get("/services/web", Some(&cookie)).await;
    assert!(page.body.contains("of traffic goes to v1"), "{}", page.body);
    assert!(page.body.contains("Promote to 50%"));
    assert!(page.body.contains("action=\"/services/web/abort\""));
    let promoted = ui
        .post("/services/web/promote", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER);
    assert_eq!(promoted.location(), "/deployments/web-1");
    let deployment = ui.get("/deployments/web-1", Some(&cookie)).await;
    assert!(deployment.body.contains("Promoted web-1."), "the flash");
    assert!(deployment.body.contains("promoted to 50%"), "the step");
    assert_eq!(ui.paz.deployment("web-1").await.unwrap().canary_step, 1);
    let aborted = ui
        .post("/services/web/abort", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(aborted.status, StatusCode::SEE_OTHER);
    let deployment = ui.paz.deployment("web-1").await.unwrap();
    assert_eq!(deployment.status, paz_core::DeploymentStatus::Failed);
    assert_eq!(deployment.error.as_deref(), Some("aborted by the user"));
    let page = ui.get("/deployments/web-1", Some(&cookie)).await;
    assert!(
        page.body
            .contains("Why it failed: </strong>aborted by the user"),
        "{}",
        page.body
    );
}
