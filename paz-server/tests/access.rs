//! Scoped tokens, write-only secrets and host mounts, through the API in memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use paz_core::{EngineConfig, MemoryStore, Paz, Store};
use paz_server::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";

struct Api {
    app: axum::Router,
    store: MemoryStore,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Api {
    fn with(config: EngineConfig, secrets: bool) -> Self {
        let store = MemoryStore::new();
        let mut paz = Paz::new(Arc::new(store.clone()), config);
        if secrets {
            let key = paz::store::SecretKey::from_hex(&"5a".repeat(32)).unwrap();
            paz = paz.with_secrets(Arc::new(key));
        }
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        Api {
            app: router(AppState::new(paz, ADMIN, receiver)),
            store,
            _shutdown: shutdown,
        }
    }

    fn new() -> Self {
        Self::with(EngineConfig::default(), true)
    }

    fn request(method: Method, path: &str, token: &str, body: Option<Value>) -> Request<Body> {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        match body {
            Some(value) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(value.to_string())),
            None => builder.body(Body::empty()),
        }
        .unwrap()
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self
            .app
            .clone()
            .oneshot(Self::request(method, path, token, body))
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(ADMIN, method, path, body).await
    }

    async fn create(&self, name: &str) {
        let spec = json!({"name": name, "image": "demo:v1", "ports": [{"port": 8080}]});
        let (status, body) = self.admin(Method::POST, "/v1/services", Some(spec)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn token(&self, request: Value) -> String {
        let (status, body) = self.admin(Method::POST, "/v1/tokens", Some(request)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Every value in the store, as text.
    async fn stored(&self) -> String {
        let items = self.store.list("/").await.unwrap().items;
        items
            .iter()
            .map(|kv| format!("{} {}\n", kv.key, String::from_utf8_lossy(&kv.value)))
            .collect()
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_deploy_token_deploys_and_reads_its_service_and_nothing_else() {
    let api = Api::new();
    api.create("web").await;
    api.create("api").await;
    let ci = api
        .token(json!({"name": "ci", "scope": "deploy", "services": ["web"]}))
        .await;
    assert!(ci.starts_with("paz_"), "{ci}");

    let allowed = [
        (
            Method::POST,
            "/v1/services/web/deploy",
            Some(json!({"image": "demo:v2"})),
        ),
        (Method::POST, "/v1/services/web/rollback", Some(json!({}))),
        (Method::GET, "/v1/services/web", None),
        (Method::GET, "/v1/services/web/status", None),
        (Method::GET, "/v1/services/web/releases", None),
        (Method::GET, "/v1/services/web/deployments", None),
        (Method::GET, "/v1/deployments/web-2", None),
    ];
    for (method, path, body) in allowed {
        let (status, answer) = api.call(&ci, method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
    }
    let refused = [
        (Method::POST, "/v1/services/api/deploy", Some(json!({}))),
        (Method::GET, "/v1/services/api", None),
        (Method::GET, "/v1/services", None),
        (Method::GET, "/v1/services/web/logs", None),
        (Method::GET, "/v1/services/web/secrets", None),
        (
            Method::POST,
            "/v1/services/web/scale",
            Some(json!({"instances": 9})),
        ),
        (
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"public": true})),
        ),
        (Method::DELETE, "/v1/services/web", None),
        (
            Method::PUT,
            "/v1/services/web/secrets/A",
            Some(json!({"value": "x"})),
        ),
        (
            Method::POST,
            "/v1/services",
            Some(json!({"name": "x", "image": "demo:v1"})),
        ),
        (Method::GET, "/v1/tokens", None),
        (
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "mine", "scope": "admin"})),
        ),
        (Method::GET, "/metrics", None),
        (Method::GET, "/v1/hosts", None),
    ];
    for (method, path, body) in refused {
        let (status, answer) = api.call(&ci, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(code(&answer), "FORBIDDEN");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deploy web")
        );
    }
    let (_, web) = api.admin(Method::GET, "/v1/services/web", None).await;
    assert_eq!(web["latest_release"], 2, "only the token's deploy happened");
}

#[tokio::test]
async fn a_read_token_reads_everything_and_changes_nothing() {
    let api = Api::new();
    api.create("web").await;
    let read = api
        .token(json!({"name": "dashboard", "scope": "read"}))
        .await;
    for path in ["/v1/services", "/v1/services/web", "/v1/hosts", "/metrics"] {
        let (status, body) = api.call(&read, Method::GET, path, None).await;
        assert!(status.is_success(), "{path}: {status} {body}");
    }
    for (method, path) in [
        (Method::POST, "/v1/services/web/deploy"),
        (Method::DELETE, "/v1/services/web"),
        (Method::GET, "/v1/tokens"),
    ] {
        let (status, _) = api.call(&read, method.clone(), path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let (status, _) = api.call("wrong", Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "/metrics needs a token");
}

#[tokio::test]
async fn tokens_are_stored_hashed_listed_without_secrets_expire_and_revoke() {
    let api = Api::new();
    api.create("web").await;
    let ci = api
        .token(json!({"name": "ci", "scope": "deploy", "services": ["web"], "expires_in": "1h"}))
        .await;
    let secret = ci.rsplit('_').next().unwrap();
    assert!(
        !api.stored().await.contains(secret),
        "only a hash is stored"
    );
    let (status, list) = api.admin(Method::GET, "/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list.to_string().contains(secret), "{list}");
    assert_eq!(list[0]["name"], "ci");
    assert!(list[0]["expires_at"].is_string());
    assert!(list[0].get("hash").is_none());

    // Bad requests get their codes.
    for (request, expected) in [
        (json!({"name": "ci", "scope": "read"}), "TOKEN_EXISTS"),
        (json!({"name": "x", "scope": "deploy"}), "INVALID_SCOPE"),
        (
            json!({"name": "Bad Name", "scope": "read"}),
            "INVALID_TOKEN_NAME",
        ),
        (json!({"name": "x", "scope": "root"}), "INVALID_BODY"),
        (
            json!({"name": "x", "scope": "read", "expires_in": "soon"}),
            "INVALID_BODY",
        ),
    ] {
        let (status, body) = api.admin(Method::POST, "/v1/tokens", Some(request)).await;
        assert!(status.is_client_error(), "{body}");
        assert_eq!(code(&body), expected, "{body}");
    }

    // Expired.
    let short = api
        .token(json!({"name": "short", "scope": "read", "expires_in": "1ms"}))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = api.call(&short, Method::GET, "/v1/services", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED")
    );

    // Revoked: refused at once.
    let (status, _) = api.call(&ci, Method::GET, "/v1/services/web", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.admin(Method::DELETE, "/v1/tokens/ci", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.call(&ci, Method::GET, "/v1/services/web", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "INVALID_TOKEN")
    );
    let (status, body) = api.admin(Method::DELETE, "/v1/tokens/ci", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "TOKEN_NOT_FOUND")
    );

    // A token with a good id but a wrong secret, and garbage, are refused alike.
    let forged = format!(
        "{}{}",
        &short[..short.len() - 1],
        if short.ends_with('0') { '1' } else { '0' }
    );
    for token in [forged.as_str(), "paz_", "paz_zz_zz", "x"] {
        let (status, body) = api.call(token, Method::GET, "/v1/services", None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "INVALID_TOKEN"),
            "{token}"
        );
    }
}

#[tokio::test]
async fn a_deploy_token_sees_only_its_services_events() {
    let api = Api::new();
    api.create("web").await;
    let ci = api
        .token(json!({"name": "ci", "scope": "deploy", "services": ["web"]}))
        .await;
    let response = api
        .app
        .clone()
        .oneshot(Api::request(Method::GET, "/v1/events", &ci, None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    api.create("api").await;
    let (status, _) = api
        .call(
            &ci,
            Method::POST,
            "/v1/services/web/deploy",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut seen = String::new();
    while !seen.contains("\"service\":\"web\"") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }
    assert!(!seen.contains("\"service\":\"api\""), "{seen}");
}

#[tokio::test]
async fn secrets_are_write_only_encrypted_and_deployed() {
    let api = Api::new();
    api.create("web").await;
    let value = "correct horse battery staple";
    let (status, deployment) = api
        .admin(
            Method::PUT,
            "/v1/services/web/secrets/DB_PASSWORD",
            Some(json!({"value": value})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deployment}");
    assert_eq!(deployment["release"], 2, "a secret change is a release");
    let (status, list) = api
        .admin(Method::GET, "/v1/services/web/secrets", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["name"], "DB_PASSWORD");
    assert!(list[0]["set_at"].is_string());
    let mut shown = list.to_string();
    for path in [
        "/v1/services/web",
        "/v1/services/web/releases",
        "/v1/services/web/releases/2",
        "/v1/services/web/deployments",
        "/v1/services/web/status",
    ] {
        let (status, body) = api.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        shown.push_str(&body.to_string());
    }
    assert!(
        !shown.contains("horse"),
        "the value is never shown: {shown}"
    );
    assert!(shown.contains("DB_PASSWORD"), "its name is");
    assert!(!api.stored().await.contains("horse"), "encrypted at rest");

    // Bad input, clearly.
    for (path, body, expected) in [
        (
            "/v1/services/web/secrets/bad-name",
            json!({"value": "x"}),
            "INVALID_SECRET",
        ),
        (
            "/v1/services/web/secrets/A",
            json!({"value": "x\u{0}"}),
            "INVALID_SECRET",
        ),
        (
            "/v1/services/web/secrets/A",
            json!({"val": "x"}),
            "INVALID_BODY",
        ),
        (
            "/v1/services/nope/secrets/A",
            json!({"value": "x"}),
            "SERVICE_NOT_FOUND",
        ),
    ] {
        let (status, answer) = api.admin(Method::PUT, path, Some(body)).await;
        assert!(status.is_client_error(), "{path}: {answer}");
        assert_eq!(code(&answer), expected, "{answer}");
    }
    let (status, deployment) = api
        .admin(Method::DELETE, "/v1/services/web/secrets/DB_PASSWORD", None)
        .await;
    assert_eq!(
        (status, deployment["release"].clone()),
        (StatusCode::ACCEPTED, json!(3))
    );
    let (_, list) = api
        .admin(Method::GET, "/v1/services/web/secrets", None)
        .await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn without_a_secret_key_secrets_are_refused() {
    let api = Api::with(EngineConfig::default(), false);
    api.create("web").await;
    let (status, body) = api
        .admin(
            Method::PUT,
            "/v1/services/web/secrets/A",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "SECRETS_UNAVAILABLE")
    );
}

#[tokio::test]
async fn host_root_mounts_are_refused_unless_allowed() {
    let spec = json!({"name": "agent", "image": "demo:v1",
        "volumes": [{"source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}]});
    let api = Api::new();
    let (status, body) = api
        .admin(Method::POST, "/v1/services", Some(spec.clone()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "HOST_MOUNT_REFUSED");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allow-host-mounts")
    );
    let (status, body) = api
        .admin(
            Method::POST,
            "/v1/services",
            Some(json!({"name": "web", "image": "demo:v1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .admin(
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"volumes": [{"source": "/", "target": "/host"}]})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "HOST_MOUNT_REFUSED")
    );

    let allowed = Api::with(
        EngineConfig {
            allow_host_mounts: true,
            ..EngineConfig::default()
        },
        true,
    );
    let (status, body) = allowed
        .admin(Method::POST, "/v1/services", Some(spec))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
