//! `GET /v1/admin/export` and `POST /v1/admin/import`, through the router in memory: a
//! server's state moved to another server, and the refusals.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use paz_core::{EngineConfig, MemoryStore, Paz};
use paz_server::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";

struct Api {
    app: axum::Router,
    paz: Paz,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Api {
    /// A server on an empty memory store with the secret key `key` (a hex byte).
    async fn new(key: &str, cluster: &str) -> Self {
        let key = paz::store::SecretKey::from_hex(&key.repeat(32)).unwrap();
        let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default())
            .with_secrets(Arc::new(key));
        paz.claim_cluster_id(cluster).await.unwrap();
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        Api {
            app: router(AppState::new(paz.clone(), ADMIN, receiver)),
            paz,
            _shutdown: shutdown,
        }
    }

    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let request = match body {
            Some(text) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(text)),
            None => builder.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(ADMIN, method, path, body.map(|b| b.to_string()))
            .await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.admin(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn import(&self, document: &str, query: &str) -> (StatusCode, Value) {
        let path = format!("/v1/admin/import{query}");
        self.send(ADMIN, Method::POST, &path, Some(document.to_owned()))
            .await
    }

    /// Every service with its releases, deployments and secrets, and the tokens, as the API
    /// shows them; but the services' `revision`, which is the store's (each store counts its
    /// own).
    async fn everything(&self) -> Value {
        let mut services = self.ok(Method::GET, "/v1/services", None).await;
        let mut all = Vec::new();
        for service in services.as_array_mut().unwrap() {
            assert!(service["revision"].as_u64().is_some_and(|r| r > 0));
            service.as_object_mut().unwrap().remove("revision");
            let name = service["spec"]["name"].as_str().unwrap();
            let releases = self
                .ok(Method::GET, &format!("/v1/services/{name}/releases"), None)
                .await;
            let deployments = self
                .ok(
                    Method::GET,
                    &format!("/v1/services/{name}/deployments"),
                    None,
                )
                .await;
            let secrets = self
                .ok(Method::GET, &format!("/v1/services/{name}/secrets"), None)
                .await;
            all.push(json!({"service": service, "releases": releases,
                "deployments": deployments, "secrets": secrets}));
        }
        let tokens = self.ok(Method::GET, "/v1/tokens", None).await;
        json!({"services": all, "tokens": tokens})
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Server A: two services, one with several releases, a deploy history and a secret; a
/// deploy token. Returns it, the token and the export's text.
async fn source() -> (Api, String, String) {
    let a = Api::new("5a", "cluster-a").await;
    for name in ["web", "api"] {
        let spec = json!({"name": name, "image": "demo:v1", "ports": [{"port": 8080}]});
        a.ok(Method::POST, "/v1/services", Some(spec)).await;
    }
    a.ok(
        Method::POST,
        "/v1/services/web/deploy",
        Some(json!({"image": "demo:v2"})),
    )
    .await;
    a.ok(
        Method::PUT,
        "/v1/services/web/secrets/DB_PASSWORD",
        Some(json!({"value": "hunter2"})),
    )
    .await;
    a.ok(
        Method::POST,
        "/v1/services/web/deploy",
        Some(json!({"image": "demo:v3"})),
    )
    .await;
    a.ok(
        Method::POST,
        "/v1/services/web/scale",
        Some(json!({"instances": 3})),
    )
    .await;
    let token = a
        .ok(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "ci", "scope": "deploy", "services": ["web"]})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, export) = a.admin(Method::GET, "/v1/admin/export", None).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    (a, token, export.to_string())
}

#[tokio::test]
async fn a_servers_state_moves_to_another_server() {
    let (a, token, export) = source().await;
    let document: Value = serde_json::from_str(&export).unwrap();
    assert_eq!(document["format"], "paz-state");
    assert_eq!(document["version"], 1);
    assert_eq!(document["cluster"], "cluster-a");
    assert!(!export.contains("hunter2"), "secrets stay sealed");

    let b = Api::new("5a", "cluster-b").await;
    let (status, report) = b.import(&export, "").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["services"], 2);
    assert_eq!(report["cluster"], "cluster-a");
    assert_eq!(report["cluster_changed"], true);
    assert_eq!(report["secret_key_checked"], true);
    assert_eq!(b.everything().await, a.everything().await);
    // A's token works on B; the secret opens with B's (same) key.
    let (status, _) = b.send(&token, Method::GET, "/v1/services/web", None).await;
    assert_eq!(status, StatusCode::OK);
    let release = b.paz.release("web", 4).await.unwrap();
    assert_eq!(
        b.paz.instance_env(&release).await.unwrap()["DB_PASSWORD"],
        "hunter2"
    );
    // B exports what A exported.
    let (_, again) = b.admin(Method::GET, "/v1/admin/export", None).await;
    assert_eq!(again["keys"], document["keys"]);

    // B now holds state: refused unless replaced.
    let (status, body) = b.import(&export, "").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "STORE_NOT_EMPTY")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--replace"),
        "{body}"
    );
    b.ok(Method::DELETE, "/v1/services/api", None).await;
    let (status, report) = b.import(&export, "?replace=true").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["cluster_changed"], false);
    assert!(
        b.everything().await == a.everything().await,
        "the same state"
    );
}

#[tokio::test]
async fn bad_documents_and_another_secret_key_are_refused_and_write_nothing() {
    let (_, _, export) = source().await;
    let c = Api::new("77", "cluster-c").await;
    let (status, body) = c.import(&export, "").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "SECRET_KEY_MISMATCH"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret-key"),
        "{body}"
    );
    let document: Value = serde_json::from_str(&export).unwrap();
    let with = |pointer: &str, value: Value| {
        let mut changed = document.clone();
        *changed.pointer_mut(pointer).unwrap() = value;
        changed.to_string()
    };
    let mut leased = document.clone();
    leased["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "/paz/hosts/h1", "value": {}}));
    let mut duplicated = document.clone();
    let first = duplicated["keys"][0].clone();
    duplicated["keys"].as_array_mut().unwrap().push(first);
    for (text, status, expected) in [
        (
            with("/version", json!(2)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "FORMAT_TOO_NEW",
        ),
        (
            with("/format", json!("something-else")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_FORMAT",
        ),
        (
            leased.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "LEASED_KEY",
        ),
        (
            duplicated.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "DUPLICATE_KEY",
        ),
        (
            with("/keys/0/key", json!("/etc/passwd")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_KEY",
        ),
        (
            with("/keys", json!("nope")),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        (
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
        ),
    ] {
        let (got, body) = c.import(&text, "?replace=true").await;
        assert_eq!((got, code(&body)), (status, expected), "{body}");
    }
    let (status, body) = c.import(&export, "?replace=maybe").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_QUERY")
    );
    let (_, services) = c.admin(Method::GET, "/v1/services", None).await;
    assert_eq!(services, json!([]), "nothing was written");
}

#[tokio::test]
async fn only_admins_export_and_import() {
    let (a, deploy, export) = source().await;
    let read = a
        .ok(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "viewer", "scope": "read"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in [&deploy, &read] {
        let (status, body) = a.send(token, Method::GET, "/v1/admin/export", None).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        let (status, body) = a
            .send(
                token,
                Method::POST,
                "/v1/admin/import?replace=true",
                Some(export.clone()),
            )
            .await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    }
    let (status, _) = a.send("", Method::GET, "/v1/admin/export", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_export_larger_than_the_api_body_limit_imports() {
    let a = Api::new("5a", "cluster-a").await;
    // Six services with a 200 KB variable each: their records and releases pass 1 MiB.
    for i in 0..6 {
        let spec = json!({"name": format!("big-{i}"), "image": "demo:v1",
            "env": {"BIG": "x".repeat(200_000)}});
        a.ok(Method::POST, "/v1/services", Some(spec)).await;
    }
    let (_, export) = a.admin(Method::GET, "/v1/admin/export", None).await;
    let text = export.to_string();
    assert!(text.len() > paz_server::BODY_LIMIT, "{}", text.len());
    let b = Api::new("5a", "cluster-b").await;
    let (status, report) = b.import(&text, "").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["services"], 6);
    assert!(
        b.everything().await == a.everything().await,
        "the same state"
    );
}
