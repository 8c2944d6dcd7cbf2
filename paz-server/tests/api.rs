//! The REST API, called through the router in memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use paz_core::{EngineConfig, MemoryStore, Paz};
use paz_server::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789";

struct Api {
    app: axum::Router,
    paz: Paz,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Api {
    fn new() -> Self {
        let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        let app = router(AppState::new(paz.clone(), TOKEN, receiver));
        Api {
            app,
            paz,
            _shutdown: shutdown,
        }
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        self.raw(builder.body(body).unwrap()).await
    }

    async fn create_web(&self) -> Value {
        let (status, body) = self.call(Method::POST, "/v1/services", Some(web())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

fn web() -> Value {
    json!({"name": "web", "image": "demo:v1", "instances": 2, "ports": [{"port": 8080}], "public": true})
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn health_needs_no_token_but_the_rest_does() {
    let api = Api::new();
    let (status, body) = api
        .raw(Request::get("/v1/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    // The cluster domain is reported (clients show services' URLs with it); a server
    // without a router reports no router port.
    assert_eq!(body["domain"], "localhost");
    assert!(body.get("router_port").is_none(), "{body}");
    let (status, body) = api
        .raw(Request::get("/v1/services").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let wrong = Request::get("/v1/services")
        .header(header::AUTHORIZATION, "Bearer nope-nope-nope-nope")
        .body(Body::empty())
        .unwrap();
    let (status, body) = api.raw(wrong).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "INVALID_TOKEN")
    );
    let basic = Request::get("/v1/services")
        .header(header::AUTHORIZATION, "Basic abc")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(basic).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn services_crud() {
    let api = Api::new();
    let created = api.create_web().await;
    assert_eq!(created["spec"]["name"], "web");
    assert_eq!(created["current_release"], 1);
    let (status, list) = api.call(Method::GET, "/v1/services", None).await;
    assert_eq!(
        (status, list.as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (status, body) = api.call(Method::POST, "/v1/services", Some(web())).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "SERVICE_EXISTS")
    );

    let mut spec = web();
    spec["image"] = json!("demo:v2");
    let (status, updated) = api
        .call(Method::PUT, "/v1/services/web", Some(spec.clone()))
        .await;
    assert_eq!(
        (status, updated["current_release"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let (status, body) = api.call(Method::PUT, "/v1/services/api", Some(spec)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "NAME_MISMATCH")
    );

    let (status, patched) = api
        .call(
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"env": {"MODE": "prod"}})),
        )
        .await;
    assert_eq!(
        (status, patched["spec"]["env"]["MODE"].as_str()),
        (StatusCode::OK, Some("prod"))
    );
    let revision = patched["revision"].as_u64().unwrap();

    let stale = Request::patch("/v1/services/web")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(header::IF_MATCH, format!("\"{}\"", revision - 1))
        .body(Body::from(r#"{"instances": 3}"#))
        .unwrap();
    let (status, body) = api.raw(stale).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PRECONDITION_FAILED, "REVISION_MISMATCH")
    );
    let fresh = Request::patch("/v1/services/web")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(header::IF_MATCH, revision.to_string())
        .body(Body::from(r#"{"instances": 3}"#))
        .unwrap();
    assert_eq!(api.raw(fresh).await.0, StatusCode::OK);
    let bad_if_match = Request::delete("/v1/services/web")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::IF_MATCH, "yesterday")
        .body(Body::empty())
        .unwrap();
    let (status, body) = api.raw(bad_if_match).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_IF_MATCH")
    );

    let (status, _) = api.call(Method::DELETE, "/v1/services/web", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.call(Method::GET, "/v1/services/web", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "SERVICE_NOT_FOUND")
    );
}

/// `https_redirect`: on when not given, off when created so, changed by a merge patch, kept
/// in the service's releases; anything but a boolean is refused.
#[tokio::test]
async fn the_https_redirect_opt_out_round_trips() {
    let api = Api::new();
    let created = api.create_web().await;
    assert_eq!(created["spec"]["https_redirect"], true, "the default");

    let mut plain = web();
    plain["name"] = json!("plain");
    plain["https_redirect"] = json!(false);
    let (status, created) = api.call(Method::POST, "/v1/services", Some(plain)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["https_redirect"], false);
    let (_, read) = api.call(Method::GET, "/v1/services/plain", None).await;
    assert_eq!(read["spec"]["https_redirect"], false);

    let (status, patched) = api
        .call(
            Method::PATCH,
            "/v1/services/plain",
            Some(json!({"https_redirect": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["spec"]["https_redirect"], true);
    let (_, read) = api.call(Method::GET, "/v1/services/plain", None).await;
    assert_eq!(read["spec"]["https_redirect"], true);
    let (_, releases) = api
        .call(Method::GET, "/v1/services/plain/releases", None)
        .await;
    let redirects: Vec<&Value> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["spec"]["https_redirect"])
        .collect();
    assert!(
        redirects.contains(&&json!(false)) && redirects.contains(&&json!(true)),
        "each release keeps its own: {releases}"
    );

    let (status, body) = api
        .call(
            Method::PATCH,
            "/v1/services/plain",
            Some(json!({"https_redirect": "no"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, read) = api.call(Method::GET, "/v1/services/plain", None).await;
    assert_eq!(read["spec"]["https_redirect"], true, "unchanged");
}

#[tokio::test]
async fn bad_input_gets_a_specific_code_and_stores_nothing() {
    let api = Api::new();
    let cases = [
        (
            json!({"name": "Web_1", "image": "demo:v1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_NAME",
        ),
        (
            json!({"name": "a".repeat(64), "image": "demo:v1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_NAME",
        ),
        (
            json!({"name": "web", "image": "Demo:v1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_IMAGE",
        ),
        (
            json!({"name": "web", "image": "demo:v1", "ports": [{"port": 70000}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_PORT",
        ),
        (
            json!({"name": "web", "image": "demo:v1", "ports": [{"port": 0}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_PORT",
        ),
        (
            json!({"name": "web", "image": "demo:v1", "ports": [{"port": 80}, {"port": 80}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "DUPLICATE_PORT",
        ),
        (
            json!({"name": "web", "image": "demo:v1", "instances": 5000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_INSTANCES",
        ),
        (
            json!({"name": "web", "image": "demo:v1", "instances": -1}),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        (
            json!({"name": "web", "image": "demo:v1", "replicas": 2}),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        (
            json!({"name": "web"}),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        // serde reads a struct from an array of its fields; the API takes objects only.
        (
            json!(["web", "demo:v1"]),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        // A whole float is the integer it spells (JSON Schema counts it as one).
        (
            json!({"name": "web", "image": "demo:v1", "instances": 5000.0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_INSTANCES",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = api
            .call(Method::POST, "/v1/services", Some(body.clone()))
            .await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected),
            "for {body}: {answer}"
        );
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, answer) = api
        .call(
            Method::POST,
            "/v1/services",
            Some(json!({"name": "Bad", "image": "Bad", "ports": [{"port": 0}]})),
        )
        .await;
    assert_eq!(
        answer["error"]["details"].as_array().unwrap().len(),
        3,
        "every failed rule is listed: {answer}"
    );

    let malformed = Request::post("/v1/services")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let (status, body) = api.raw(malformed).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_JSON")
    );
    let no_type = Request::post("/v1/services")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(web().to_string()))
        .unwrap();
    let (status, body) = api.raw(no_type).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    );
    let mut huge = web();
    huge["env"] = json!({"BIG": "x".repeat(paz_server::BODY_LIMIT + 10)});
    let (status, body) = api.call(Method::POST, "/v1/services", Some(huge)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE")
    );

    assert!(
        api.paz.services().await.unwrap().is_empty(),
        "nothing was stored"
    );
    let (status, body) = api.call(Method::GET, "/v1/nope", None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (status, body) = api.call(Method::DELETE, "/v1/services", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );
}

#[tokio::test]
async fn releases_deployments_scale_and_rollback() {
    let api = Api::new();
    api.create_web().await;
    let (status, deployment) = api
        .call(
            Method::POST,
            "/v1/services/web/deploy",
            Some(json!({"image": "demo:v2"})),
        )
        .await;
    assert_eq!(
        (
            status,
            deployment["id"].as_str(),
            deployment["status"].as_str()
        ),
        (StatusCode::ACCEPTED, Some("web-2"), Some("pending"))
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/services/web/deploy",
            Some(json!({"image": "no good"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_IMAGE")
    );
    let (status, body) = api
        .call(Method::POST, "/v1/services/nope/deploy", Some(json!({})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "SERVICE_NOT_FOUND")
    );

    let (_, releases) = api
        .call(Method::GET, "/v1/services/web/releases", None)
        .await;
    let versions: Vec<_> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    let (status, release) = api
        .call(Method::GET, "/v1/services/web/releases/v2", None)
        .await;
    assert_eq!(
        (status, release["spec"]["image"].as_str()),
        (StatusCode::OK, Some("demo:v2"))
    );
    let (status, body) = api
        .call(Method::GET, "/v1/services/web/releases/latest", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_VERSION")
    );

    let (status, scaled) = api
        .call(
            Method::POST,
            "/v1/services/web/scale",
            Some(json!({"instances": 4})),
        )
        .await;
    assert_eq!(
        (status, scaled["spec"]["instances"].as_u64()),
        (StatusCode::OK, Some(4))
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/services/web/scale",
            Some(json!({"instances": 1001})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_INSTANCES")
    );

    let (status, back) = api
        .call(Method::POST, "/v1/services/web/rollback", Some(json!({})))
        .await;
    assert_eq!(
        (status, back["release"].as_u64()),
        (StatusCode::ACCEPTED, Some(1))
    );
    let (_, history) = api
        .call(Method::GET, "/v1/services/web/deployments", None)
        .await;
    assert_eq!(history.as_array().unwrap().len(), 3);
    let (status, one) = api.call(Method::GET, "/v1/deployments/web-3", None).await;
    assert_eq!(
        (status, one["trigger"]["kind"].as_str()),
        (StatusCode::OK, Some("rollback"))
    );
    let (status, body) = api.call(Method::GET, "/v1/deployments/web-99", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "DEPLOYMENT_NOT_FOUND")
    );
    let (_, service) = api.call(Method::GET, "/v1/services/web", None).await;
    assert_eq!(
        (
            service["spec"]["image"].as_str(),
            service["spec"]["instances"].as_u64()
        ),
        (Some("demo:v1"), Some(4))
    );
}

#[tokio::test]
async fn hosts_are_listed_while_registered() {
    let api = Api::new();
    let (stop, receiver) = tokio::sync::watch::channel(false);
    let host = paz_server::local_host("127.0.0.1", Default::default());
    let task = tokio::spawn(paz_server::keep_host_registered(
        api.paz.clone(),
        host.clone(),
        receiver,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, hosts) = api.call(Method::GET, "/v1/hosts", None).await;
        if hosts.as_array().unwrap().len() == 1 {
            assert_eq!(hosts[0]["id"], host.id);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the host registers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let (_, hosts) = api.call(Method::GET, "/v1/hosts", None).await;
    assert!(
        hosts.as_array().unwrap().is_empty(),
        "a stopped server deregisters its host"
    );
}

#[tokio::test]
async fn events_stream_as_sse() {
    let api = Api::new();
    let request = Request::get("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    api.create_web().await;
    let mut text = String::new();
    while !text.contains("deployment_changed") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event arrives")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("event: service_created"), "{text}");
    assert!(text.contains("\"type\":\"service_created\""), "{text}");
    assert!(text.contains("id: "), "{text}");
}

/// Reads SSE text from `body` until it holds `wanted`.
async fn sse_until(body: &mut Body, wanted: &str) -> String {
    let mut text = String::new();
    while !text.contains(wanted) {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} in {text}"))
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text
}

fn events_request(last_id: Option<&str>) -> Request<Body> {
    let mut request =
        Request::get("/v1/events").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_client_resumes_the_events_after_its_last_event_id() {
    let api = Api::new();
    let mut first = api
        .app
        .clone()
        .oneshot(events_request(None))
        .await
        .unwrap()
        .into_body();
    api.create_web().await;
    let text = sse_until(&mut first, "event: deployment_changed").await;
    let last_id = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .expect("events carry ids")
        .to_owned();
    drop(first);
    // Missed while disconnected: a change to another service.
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/services",
            Some(json!({"name": "api", "image": "demo:v1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut resumed = api
        .app
        .clone()
        .oneshot(events_request(Some(&last_id)))
        .await
        .unwrap()
        .into_body();
    let text = sse_until(&mut resumed, "\"service\":\"api\"").await;
    assert!(
        text.starts_with("event: "),
        "the missed events come first: {text}"
    );
    assert!(
        !text.contains(&format!("id: {last_id}\n")),
        "not the one already seen: {text}"
    );
    assert!(
        !text.contains("\"service\":\"web\""),
        "only what came after: {text}"
    );
    // An id of another process (or garbage) is a gap: `resync` first.
    for stale in ["00000000-1", "junk"] {
        let mut body = api
            .app
            .clone()
            .oneshot(events_request(Some(stale)))
            .await
            .unwrap()
            .into_body();
        let text = sse_until(&mut body, "event: resync").await;
        assert!(text.contains("reason"), "{text}");
    }
}

#[tokio::test]
async fn openapi_document_matches_the_golden_file() {
    let document = paz_server::openapi::document();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("PAZ_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &document).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .expect("openapi.json exists; run with PAZ_UPDATE_GOLDEN=1 to write it");
    assert!(
        golden == document,
        "the API changed: review and run with PAZ_UPDATE_GOLDEN=1 to update paz-server/openapi.json"
    );
    let api = Api::new();
    let (status, served) = api
        .raw(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(served["paths"]["/v1/services/{name}"]["patch"].is_object());
    assert!(served["components"]["schemas"]["ServiceSpec"].is_object());
}

#[tokio::test]
async fn path_and_query_rejections_are_json_with_their_own_codes() {
    let api = Api::new();
    api.create_web().await;
    for (path, expected) in [
        ("/v1/services/%ff", "INVALID_PATH"),
        ("/v1/services/web/releases/%ff%fe", "INVALID_PATH"),
        ("/v1/services/web/logs?tail=-1", "INVALID_QUERY"),
        ("/v1/services/web/logs?follow=maybe", "INVALID_QUERY"),
        ("/v1/services/web/logs?colour=red", "INVALID_QUERY"),
    ] {
        let (status, body) = api.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(code(&body), expected, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
}
