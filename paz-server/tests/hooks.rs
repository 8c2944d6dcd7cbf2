//! Deploy hooks through the router in memory (no scheduler: deployments are recorded, and
//! the tests finish them): creating, rotating and deleting hooks, each source's good and bad
//! deliveries, and the delivery log.

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
const V1: &str = "application/vnd.docker.distribution.events.v1+json";

struct Api {
    app: axum::Router,
    paz: Paz,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Api {
    fn new(callback_hosts: &[&str]) -> Self {
        let key = paz_store::SecretKey::from_hex(&"5a".repeat(32)).unwrap();
        let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default())
            .with_secrets(Arc::new(key));
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        let state = AppState::new(paz.clone(), TOKEN, receiver)
            .with_hook_callback_hosts(callback_hosts.iter().map(|h| h.to_string()).collect());
        Api {
            app: router(state),
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

    /// A POST without the API token, with these headers.
    async fn hook(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(Method::POST).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.raw(builder.body(Body::from(body.to_vec())).unwrap())
            .await
    }

    async fn create(&self, image: &str) {
        let spec =
            json!({"name": "web", "image": image, "ports": [{"port": 8080}], "public": true});
        let (status, body) = self.call(Method::POST, "/v1/services", Some(spec)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.paz.finish_deployment("web-1", Ok(())).await.unwrap();
    }

    async fn create_hook(&self, source: &str, tag: Option<&str>) -> Value {
        let mut request = json!({"source": source});
        if let Some(tag) = tag {
            request["tag"] = tag.into();
        }
        let (status, created) = self
            .call(Method::POST, "/v1/services/web/hooks", Some(request))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    async fn deliveries(&self) -> Vec<Value> {
        let (status, list) = self
            .call(Method::GET, "/v1/services/web/deliveries", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list.as_array().unwrap().clone()
    }

    async fn release_count(&self) -> usize {
        self.paz.releases("web").await.unwrap().len()
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn hooks_are_made_listed_rotated_and_deleted_and_their_secrets_never_shown_again() {
    let api = Api::new(&[]);
    api.create("acme/web:v1").await;
    let created = api.create_hook("dockerhub", Some("v*")).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("hook_"), "{created}");
    assert_eq!(
        created["path"].as_str().unwrap(),
        format!("/v1/hooks/dockerhub/{secret}")
    );
    let (status, again) = api
        .call(
            Method::POST,
            "/v1/services/web/hooks",
            Some(json!({"source": "dockerhub"})),
        )
        .await;
    assert_eq!(
        (status, code(&again)),
        (StatusCode::CONFLICT, "HOOK_EXISTS")
    );
    let (status, bad) = api
        .call(
            Method::POST,
            "/v1/services/web/hooks",
            Some(json!({"source": "ci", "tag": "v 1"})),
        )
        .await;
    assert_eq!(
        (status, code(&bad)),
        (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_TAG_FILTER")
    );
    let (status, none) = api
        .call(
            Method::POST,
            "/v1/services/nope/hooks",
            Some(json!({"source": "ci"})),
        )
        .await;
    assert_eq!(
        (status, code(&none)),
        (StatusCode::NOT_FOUND, "SERVICE_NOT_FOUND")
    );
    let ci = api.create_hook("ci", None).await;
    let ci_secret = ci["secret"].as_str().unwrap();

    // Nothing that reads hooks (or the service) shows a secret.
    let (status, list) = api.call(Method::GET, "/v1/services/web/hooks", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(
        !text.contains(&secret[18..]) && !text.contains(&ci_secret[18..]),
        "{text}"
    );
    assert!(!text.contains("\"secret\""), "{text}");
    for path in [
        "/v1/services/web",
        "/v1/services/web/status",
        "/v1/services/web/releases",
    ] {
        let (_, body) = api.call(Method::GET, path, None).await;
        assert!(!body.to_string().contains(&secret[18..]), "{path}");
    }

    // The filter changes; the secret stays.
    let (status, updated) = api
        .call(
            Method::PUT,
            "/v1/services/web/hooks/dockerhub",
            Some(json!({"tag": "main"})),
        )
        .await;
    assert_eq!(
        (status, updated["tag"].as_str()),
        (StatusCode::OK, Some("main"))
    );
    let payload = json!({"push_data": {"tag": "main"}, "repository": {"repo_name": "acme/web"}});
    let (status, _) = api
        .hook(
            &format!("/v1/hooks/dockerhub/{secret}"),
            &[],
            payload.to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Rotation: the old URL is dead at once, the new one works.
    let (status, rotated) = api
        .call(
            Method::POST,
            "/v1/services/web/hooks/dockerhub/rotate",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["info"]["rotated_at"].is_string());
    let (status, old) = api
        .hook(
            &format!("/v1/hooks/dockerhub/{secret}"),
            &[],
            payload.to_string().as_bytes(),
        )
        .await;
    assert_eq!(
        (status, code(&old)),
        (StatusCode::NOT_FOUND, "HOOK_NOT_FOUND")
    );
    let (status, _) = api
        .hook(
            &format!("/v1/hooks/dockerhub/{new_secret}"),
            &[],
            payload.to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (status, deleted) = api
        .call(Method::DELETE, "/v1/services/web/hooks/dockerhub", None)
        .await;
    assert_eq!(
        (status, deleted["source"].as_str()),
        (StatusCode::OK, Some("dockerhub"))
    );
    let (status, gone) = api
        .hook(
            &format!("/v1/hooks/dockerhub/{new_secret}"),
            &[],
            payload.to_string().as_bytes(),
        )
        .await;
    assert_eq!(
        (status, code(&gone)),
        (StatusCode::NOT_FOUND, "HOOK_NOT_FOUND")
    );
    let (status, missing) = api
        .call(Method::POST, "/v1/services/web/hooks/registry/rotate", None)
        .await;
    assert_eq!(
        (status, code(&missing)),
        (StatusCode::NOT_FOUND, "HOOK_NOT_FOUND")
    );
    let (status, bad_source) = api
        .call(Method::DELETE, "/v1/services/web/hooks/ftp", None)
        .await;
    assert_eq!(
        (status, code(&bad_source)),
        (StatusCode::BAD_REQUEST, "INVALID_PATH")
    );
}

/// A local HTTP server that records the bodies POSTed to it.
async fn callback_server() -> (String, tokio::sync::mpsc::Receiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body).await;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/callback"), rx)
}

#[tokio::test]
async fn docker_hub_pushes_deploy_the_tag_and_report_to_the_callback() {
    let api = Api::new(&["127.0.0.1"]);
    api.create("acme/web:v1").await;
    let created = api.create_hook("dockerhub", Some("v*")).await;
    let url = created["path"].as_str().unwrap().to_owned();
    let (callback, mut reported) = callback_server().await;
    let push = |tag: &str, repo: &str, callback: &str| {
        json!({
            "callback_url": callback,
            "push_data": {"pushed_at": 1_700_000_000, "pusher": "ci", "tag": tag},
            "repository": {"repo_name": repo, "name": "web", "namespace": "acme", "status": "Active"},
        })
        .to_string()
    };
    let (status, answer) = api
        .hook(
            &url,
            &[("content-type", "application/json")],
            push("v2", "acme/web", &callback).as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["deployment"], "web-2");
    assert_eq!(answer["release"], 2);
    let release = api.paz.release("web", 2).await.unwrap();
    assert_eq!(release.spec.image, "acme/web:v2");
    assert_eq!(release.trigger.by.as_deref(), Some("hook:dockerhub"));
    // The result goes to the callback when the deployment ends.
    api.paz.finish_deployment("web-2", Ok(())).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), reported.recv())
        .await
        .expect("the callback is called")
        .unwrap();
    assert_eq!(body["state"], "success", "{body}");
    assert!(
        body["description"].as_str().unwrap().contains("web-2"),
        "{body}"
    );

    // Refusals: a filtered tag, another repository, malformed and oversized payloads, a
    // wrong URL. Nothing is deployed, each is in the log.
    let before = api.release_count().await;
    for (body, status, expected) in [
        (
            push("latest", "acme/web", &callback),
            StatusCode::FORBIDDEN,
            "TAG_FILTERED",
        ),
        (
            push("v3", "acme/other", &callback),
            StatusCode::FORBIDDEN,
            "REPOSITORY_MISMATCH",
        ),
        (
            "{\"push_data\":".to_owned(),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
        (
            json!({"push_data": {"tag": "../x"}, "repository": {"repo_name": "acme/web"}})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
        (
            "x".repeat(paz_server::BODY_LIMIT + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
        ),
    ] {
        let (got, answer) = api
            .hook(
                &url,
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
        assert_eq!((got, code(&answer)), (status, expected), "{answer}");
    }
    let unknown = format!(
        "/v1/hooks/dockerhub/hook_{}_{}",
        "0".repeat(12),
        "0".repeat(64)
    );
    let id = created["info"]["id"].as_str().unwrap();
    let wrong = format!("/v1/hooks/dockerhub/hook_{id}_{}", "0".repeat(64));
    for path in [
        unknown.as_str(),
        "/v1/hooks/dockerhub/guess",
        wrong.as_str(),
    ] {
        let (got, answer) = api
            .hook(path, &[], push("v9", "acme/web", &callback).as_bytes())
            .await;
        assert_eq!(
            (got, code(&answer)),
            (StatusCode::NOT_FOUND, "HOOK_NOT_FOUND"),
            "{path}"
        );
    }
    assert_eq!(
        api.release_count().await,
        before,
        "nothing deployed by accident"
    );

    // A callback URL elsewhere is never called (the deploy still happens).
    let (status, answer) = api
        .hook(
            &url,
            &[],
            push("v4", "acme/web", "https://169.254.169.254/latest").as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");

    let mut log = api.deliveries().await;
    for _ in 0..100 {
        if log[0]["callback"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = api.deliveries().await;
    }
    let codes: Vec<&str> = log.iter().map(|d| d["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "DEPLOYED",
            "TAG_FILTERED",
            "REPOSITORY_MISMATCH",
            "INVALID_PAYLOAD",
            "INVALID_PAYLOAD",
            "BODY_TOO_LARGE",
            "HOOK_NOT_FOUND",
            "DEPLOYED"
        ],
        "{log:#?}"
    );
    assert_eq!(
        log[0]["callback"], "success sent (HTTP 200)",
        "{:#}",
        log[0]
    );
    assert_eq!(log[0]["deployment"], "web-2");
    assert_eq!(
        log[6]["stored"], false,
        "an unknown URL is kept in memory only"
    );
    assert!(
        log[7]["callback"]
            .as_str()
            .unwrap()
            .starts_with("not sent: host"),
        "{:#}",
        log[7]
    );
    // Unknown ids name no service: only the server-wide view shows them.
    let (_, all) = api.call(Method::GET, "/v1/deliveries", None).await;
    assert_eq!(all.as_array().unwrap().len(), 3, "{all:#}");
}

/// A registry envelope of one event.
fn event(
    id: &str,
    action: &str,
    media_type: &str,
    repo: &str,
    tag: Option<&str>,
    digest: &str,
) -> Value {
    let mut target = json!({
        "mediaType": media_type, "size": 527, "digest": digest, "length": 527,
        "repository": repo,
        "url": format!("http://127.0.0.1:5000/v2/{repo}/manifests/{digest}"),
    });
    if let Some(tag) = tag {
        target["tag"] = tag.into();
    }
    json!({
        "id": id, "timestamp": "2026-12-02T02:46:52.98Z", "action": action, "target": target,
        "request": {"id": "r", "addr": "127.0.0.1:1", "host": "127.0.0.1:5000", "method": "PUT", "useragent": "docker"},
        "actor": {}, "source": {"addr": "vm:5000", "instanceID": "i"},
    })
}

const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[tokio::test]
async fn registry_pushes_deploy_exactly_their_digest_once() {
    let api = Api::new(&[]);
    api.create("127.0.0.1:5000/paz-demo:v1").await;
    let created = api.create_hook("registry", Some("v*")).await;
    let bearer = format!("Bearer {}", created["secret"].as_str().unwrap());
    let auth = [("authorization", bearer.as_str()), ("content-type", V1)];
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let envelope = |events: Vec<Value>| json!({"events": events}).to_string();

    // Blobs and pulls are skipped; the manifest push deploys its digest, pinned.
    let push = envelope(vec![
        event(
            "e1",
            "push",
            "application/octet-stream",
            "paz-demo",
            None,
            &digest('1'),
        ),
        event("e2", "pull", MANIFEST, "paz-demo", Some("v2"), &digest('a')),
        event("e3", "push", MANIFEST, "paz-demo", Some("v2"), &digest('a')),
    ]);
    let (status, answer) = api.hook("/v1/hooks/registry", &auth, push.as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["skipped"], 2);
    assert_eq!(answer["deliveries"][0]["code"], "DEPLOYED", "{answer}");
    assert_eq!(answer["deliveries"][0]["deployment"], "web-2");
    let release = api.paz.release("web", 2).await.unwrap();
    assert_eq!(release.spec.image, "127.0.0.1:5000/paz-demo:v2");
    assert_eq!(
        release.image_digest,
        Some(format!("127.0.0.1:5000/paz-demo@{}", digest('a')))
    );

    // The same event again, the same digest under another tag, a filtered tag, another
    // repository, a push by digest: nothing more is deployed, and a registry gets 200.
    let cases = [
        (
            event("e3", "push", MANIFEST, "paz-demo", Some("v2"), &digest('a')),
            "DUPLICATE_EVENT",
        ),
        (
            event(
                "e4",
                "push",
                MANIFEST,
                "paz-demo",
                Some("v2.0"),
                &digest('a'),
            ),
            "ALREADY_DEPLOYED",
        ),
        (
            event(
                "e5",
                "push",
                MANIFEST,
                "paz-demo",
                Some("latest"),
                &digest('b'),
            ),
            "TAG_FILTERED",
        ),
        (
            event("e6", "push", MANIFEST, "other", Some("v3"), &digest('c')),
            "REPOSITORY_MISMATCH",
        ),
        (
            event("e7", "push", MANIFEST, "paz-demo", None, &digest('d')),
            "NO_TAG",
        ),
        (
            event(
                "e8",
                "push",
                MANIFEST,
                "paz-demo",
                Some("v5"),
                "sha256:nothex",
            ),
            "INVALID_EVENT",
        ),
    ];
    for (event, expected) in cases {
        let (status, answer) = api
            .hook(
                "/v1/hooks/registry",
                &auth,
                envelope(vec![event]).as_bytes(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["deliveries"][0]["verdict"], "ignored", "{answer}");
        assert_eq!(answer["deliveries"][0]["code"], expected, "{answer}");
    }
    assert_eq!(api.release_count().await, 2, "nothing deployed by accident");
    // distribution 3's envelope works the same.
    let v2 = [
        ("authorization", bearer.as_str()),
        (
            "content-type",
            "application/vnd.docker.distribution.events.v2+json",
        ),
    ];
    let push = envelope(vec![event(
        "e9",
        "push",
        "application/vnd.oci.image.manifest.v1+json",
        "paz-demo",
        Some("v3"),
        &digest('e'),
    )]);
    let (status, answer) = api.hook("/v1/hooks/registry", &v2, push.as_bytes()).await;
    assert_eq!(
        (status, answer["deliveries"][0]["deployment"].as_str()),
        (StatusCode::OK, Some("web-3")),
        "{answer}"
    );

    // Failed checks: no token, a wrong one, a CI hook's, a wrong media type, bad JSON.
    let push = envelope(vec![event(
        "e10",
        "push",
        MANIFEST,
        "paz-demo",
        Some("v4"),
        &digest('f'),
    )]);
    let ci = api.create_hook("ci", None).await;
    let ci_bearer = format!("Bearer {}", ci["secret"].as_str().unwrap());
    let wrong = format!("Bearer hook_{}_{}", "1".repeat(12), "2".repeat(64));
    for (headers, status, expected) in [
        (
            vec![("content-type", V1)],
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            vec![("authorization", wrong.as_str()), ("content-type", V1)],
            StatusCode::UNAUTHORIZED,
            "INVALID_HOOK_TOKEN",
        ),
        (
            vec![("authorization", ci_bearer.as_str()), ("content-type", V1)],
            StatusCode::UNAUTHORIZED,
            "INVALID_HOOK_TOKEN",
        ),
        (
            vec![("authorization", TOKEN), ("content-type", V1)],
            StatusCode::UNAUTHORIZED,
            "INVALID_HOOK_TOKEN",
        ),
        (
            vec![
                ("authorization", bearer.as_str()),
                ("content-type", "text/plain"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ] {
        let (got, answer) = api
            .hook("/v1/hooks/registry", &headers, push.as_bytes())
            .await;
        assert_eq!((got, code(&answer)), (status, expected), "{answer}");
    }
    let (got, answer) = api
        .hook("/v1/hooks/registry", &auth, b"{\"events\": [1]}")
        .await;
    assert_eq!(
        (got, code(&answer)),
        (StatusCode::BAD_REQUEST, "INVALID_PAYLOAD")
    );
    assert_eq!(api.release_count().await, 3);

    let log = api.deliveries().await;
    let stored: Vec<&str> = log
        .iter()
        .filter(|d| d["stored"] == true)
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        stored,
        [
            "DEPLOYED",
            "DUPLICATE_EVENT",
            "ALREADY_DEPLOYED",
            "TAG_FILTERED",
            "NO_TAG",
            "INVALID_EVENT",
            "DEPLOYED",
            "UNSUPPORTED_MEDIA_TYPE",
            "INVALID_PAYLOAD"
        ],
        "{log:#?}"
    );
    let deployed = &log.iter().find(|d| d["code"] == "DEPLOYED").unwrap();
    assert_eq!(deployed["key"], "e3");
    assert_eq!(deployed["digest"], digest('a'));
}

#[tokio::test]
async fn ci_requests_are_signed_fresh_and_never_replayed() {
    let api = Api::new(&[]);
    api.create("registry.local/acme/web:v1").await;
    let created = api.create_hook("ci", Some("v*")).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["path"], "/v1/hooks/deploy");
    let send = async |body: &Value, signature: Option<String>| {
        let body = body.to_string();
        let signature = signature.unwrap_or_else(|| sign(&secret, body.as_bytes()));
        api.hook(
            "/v1/hooks/deploy",
            &[
                ("content-type", "application/json"),
                ("x-paz-signature", signature.as_str()),
            ],
            body.as_bytes(),
        )
        .await
    };
    let request =
        json!({"service": "web", "tag": "v2", "timestamp": now(), "idempotency_key": "run-1"});
    let (status, answer) = send(&request, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer["deployment"], "web-2",
        "the answer says what to follow"
    );
    assert_eq!(
        api.paz.release("web", 2).await.unwrap().spec.image,
        "registry.local/acme/web:v2"
    );

    // The same request again, the key with another body, a stale and a future timestamp.
    let (status, again) = send(&request, None).await;
    assert_eq!(
        (status, code(&again)),
        (StatusCode::CONFLICT, "DUPLICATE_DELIVERY")
    );
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("web-2"),
        "{again}"
    );
    let reused =
        json!({"service": "web", "tag": "v3", "timestamp": now(), "idempotency_key": "run-1"});
    let (status, answer) = send(&reused, None).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    for timestamp in [now() - 301, now() + 400, 0] {
        let stale = json!({"service": "web", "tag": "v3", "timestamp": timestamp, "idempotency_key": format!("t{timestamp}")});
        let (status, answer) = send(&stale, None).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNAUTHORIZED, "STALE_TIMESTAMP"),
            "{answer}"
        );
    }
    // Without a key the body is the key: an exact replay is refused.
    let keyless = json!({"service": "web", "tag": "v4", "timestamp": now()});
    assert_eq!(send(&keyless, None).await.0, StatusCode::ACCEPTED);
    assert_eq!(send(&keyless, None).await.0, StatusCode::CONFLICT);

    // Forged and missing signatures, unknown services, filtered tags, other repositories,
    // malformed bodies.
    let fresh = |tag: &str, key: &str| json!({"service": "web", "tag": tag, "timestamp": now(), "idempotency_key": key});
    let forged = sign(
        "hook_000000000000_0000",
        fresh("v5", "k1").to_string().as_bytes(),
    );
    let (status, answer) = send(&fresh("v5", "k1"), Some(forged)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
    );
    let (status, answer) = send(&fresh("v5", "k1"), Some("sha256=abc".into())).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
    );
    // The signature covers the whole body: the same signature on another body fails.
    let signed = sign(&secret, fresh("v5", "k2").to_string().as_bytes());
    let (status, answer) = send(&fresh("v6", "k2"), Some(signed)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
    );
    let body = fresh("v5", "k3").to_string();
    let (status, answer) = api
        .hook(
            "/v1/hooks/deploy",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNAUTHORIZED, "SIGNATURE_MISSING")
    );
    let other = json!({"service": "api", "tag": "v5", "timestamp": now()});
    let (status, answer) = send(&other, None).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "HOOK_NOT_FOUND")
    );
    for (body, status, expected) in [
        (fresh("latest", "k4"), StatusCode::FORBIDDEN, "TAG_FILTERED"),
        (
            json!({"service": "web", "image": "evil.example/acme/web:v9", "timestamp": now()}),
            StatusCode::FORBIDDEN,
            "REPOSITORY_MISMATCH",
        ),
        (
            json!({"service": "web", "tag": "v5", "image": "registry.local/acme/web:v5", "timestamp": now()}),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
        (
            json!({"service": "web", "tag": "v5", "timestamp": now(), "extra": 1}),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
        (
            json!({"service": "web", "tag": "v5", "timestamp": now(), "idempotency_key": "has space"}),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
    ] {
        let (got, answer) = send(&body, None).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}: {answer}");
    }
    let (status, answer) = api
        .hook(
            "/v1/hooks/deploy",
            &[
                ("content-type", "application/json"),
                ("x-paz-signature", sign(&secret, b"[]").as_str()),
            ],
            b"[]",
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "INVALID_PAYLOAD")
    );
    let huge = "x".repeat(paz_server::BODY_LIMIT + 1);
    let (status, answer) = api
        .hook(
            "/v1/hooks/deploy",
            &[
                ("content-type", "application/json"),
                ("x-paz-signature", sign(&secret, huge.as_bytes()).as_str()),
            ],
            huge.as_bytes(),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE")
    );

    // A digest in the image pins the release.
    let digest = format!("sha256:{}", "c".repeat(64));
    let pinned = json!({"service": "web", "image": format!("registry.local/acme/web:v7@{digest}"), "timestamp": now()});
    let (status, answer) = send(&pinned, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let release = api
        .paz
        .release("web", answer["release"].as_u64().unwrap())
        .await
        .unwrap();
    assert_eq!(
        release.image_digest,
        Some(format!("registry.local/acme/web@{digest}"))
    );
    assert_eq!(api.release_count().await, 4, "v1, v2, v4 and v7 only");

    let log = api.deliveries().await;
    let codes: Vec<(&str, bool)> = log
        .iter()
        .map(|d| (d["code"].as_str().unwrap(), d["stored"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("DEPLOYED", true),
            ("DUPLICATE_DELIVERY", true),
            ("IDEMPOTENCY_KEY_REUSED", true),
            ("STALE_TIMESTAMP", true),
            ("STALE_TIMESTAMP", true),
            ("STALE_TIMESTAMP", true),
            ("DEPLOYED", true),
            ("DUPLICATE_DELIVERY", true),
            ("SIGNATURE_INVALID", false),
            ("SIGNATURE_INVALID", false),
            ("TAG_FILTERED", true),
            ("REPOSITORY_MISMATCH", true),
            ("INVALID_PAYLOAD", true),
            ("INVALID_PAYLOAD", true),
            ("INVALID_PAYLOAD", true),
            ("DEPLOYED", true),
        ],
        "{log:#?}"
    );
    // A deploy token may follow its service's deliveries.
    let (status, token) = api
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "ci", "scope": "deploy", "services": ["web"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let request = Request::builder()
        .uri("/v1/services/web/deliveries")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token["token"].as_str().unwrap()),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(request).await.0, StatusCode::OK);
}
