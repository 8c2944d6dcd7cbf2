//! Deploy hooks and pinned releases end to end: the real `paz-server` on the real Docker
//! Engine, Debian's docker-registry (2.8) on a loopback port notifying it, `docker push`;
//! Docker Hub's payload with a local callback server; a signed CI request; and a rollback
//! after a tag has moved.
//!
//! Needs Docker and, for the registry test, `docker-registry` (`apt-get install
//! docker-registry`); with `CI=true` a missing one fails the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use paz::DeploymentStatus;
use paz::core::hook::{Delivery, HookSource};
use serde_json::{Value, json};

use crate::support::{Cluster, Load, assert_no_failures, demo, json_of};

/// Runs `docker args…`; its stdout, or the error with its stderr.
fn docker(args: &[&str]) -> Result<String> {
    let output = Command::new("docker").args(args).output()?;
    ensure!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether Debian's `docker-registry` is installed; with `CI=true` its absence fails.
fn require_registry(test: &str) -> bool {
    if Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs docker-registry (apt-get install docker-registry); CI=true");
    }
    eprintln!(
        "\n*** SKIPPED {test}: needs docker-registry (apt-get install docker-registry) ***\n"
    );
    false
}

/// A docker-registry on a free loopback port whose notifications go to a Paz hook with its
/// secret as the bearer token; killed (by pid) on drop, and the local tags made for it
/// removed.
struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    address: String,
    /// The registry hook's secret.
    token: String,
    tags: Vec<String>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry on a free port, not started yet (images can be tagged for it).
    fn new() -> Result<Registry> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(Registry {
            child: None,
            address: format!("127.0.0.1:{port}"),
            token: String::new(),
            tags: Vec::new(),
            dir: tempfile::tempdir()?,
        })
    }

    /// Starts it, notifying `endpoint` with `Authorization: Bearer <token>`.
    fn start(&mut self, endpoint: &str, token: &str) -> Result<()> {
        self.token = token.to_owned();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {address}\n\
             notifications:\n  endpoints:\n    - name: paz\n      url: {endpoint}\n      \
             headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 2s\n      \
             threshold: 5\n      backoff: 1s\n",
            root = self.dir.path().join("data").display(),
            address = self.address,
        );
        let config_path = self.dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start docker-registry")?;
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(&self.address).is_ok() {
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                bail!("docker-registry exited at once: {status}");
            }
            ensure!(
                Instant::now() < deadline,
                "docker-registry does not listen on {} after 10 s",
                self.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `<registry>/paz-demo:<tag>`.
    fn image(&self, tag: &str) -> String {
        format!("{}/paz-demo:{tag}", self.address)
    }

    /// Tags the local image `local` as `<registry>/paz-demo:<tag>` (removed on drop).
    fn tag(&mut self, local: &str, tag: &str) -> Result<String> {
        let image = self.image(tag);
        docker(&["tag", local, &image])?;
        self.tags.push(image.clone());
        Ok(image)
    }

    /// Tags and pushes; returns the pushed manifest's digest.
    fn push(&mut self, local: &str, tag: &str) -> Result<String> {
        let image = self.tag(local, tag)?;
        let output = docker(&["push", &image])?;
        output
            .lines()
            .find_map(|line| {
                let (_, rest) = line.split_once("digest: ")?;
                rest.split_whitespace().next().map(str::to_owned)
            })
            .with_context(|| format!("no digest in the output of docker push: {output}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The tags, and the images pulled by digest from this registry.
        let pulled = docker(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}}@{{.Digest}}",
            &format!("{}/paz-demo", self.address),
        ])
        .unwrap_or_default();
        let mut names = self.tags.clone();
        names.extend(
            pulled
                .lines()
                .filter(|l| !l.ends_with("@<none>"))
                .map(str::to_owned),
        );
        if !names.is_empty() {
            let _ = Command::new("docker").arg("rmi").args(&names).output();
        }
    }
}

/// The hook secret `paz hook create` printed (stdout).
fn create_hook(cluster: &Cluster, service: &str, source: &str, tag: &str) -> Result<String> {
    let output = crate::support::paz(
        cluster.server(),
        &cluster.data,
        &["hook", "create", service, "--source", source, "--tag", tag],
    );
    ensure!(
        output.status.success(),
        "paz hook create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Waits (at most 60 s) until the service's delivery log has a delivery `matching`.
async fn wait_delivery(
    cluster: &Cluster,
    service: &str,
    what: &str,
    matching: impl Fn(&Delivery) -> bool,
) -> Result<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = cluster.client.deliveries(service).await?;
        if let Some(found) = log.iter().find(|d| matching(d)) {
            return Ok(found.clone());
        }
        ensure!(
            Instant::now() < deadline,
            "no delivery {what} after 60 s: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `GET /` through the router.
async fn version(cluster: &Cluster) -> Result<String> {
    Ok(cluster
        .get("web.localhost", "/")
        .await?
        .text()
        .await?
        .trim()
        .to_owned())
}

/// The images the service's running containers were created from.
fn running_images(cluster: &Cluster, service: &str) -> Result<Vec<String>> {
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("network={}", cluster.network),
        "--filter",
        &format!("label=paz.service={service}"),
    ])?;
    let mut images = Vec::new();
    for id in ids.split_whitespace() {
        images.push(docker(&["inspect", "--format", "{{.Config.Image}}", id])?);
    }
    images.sort();
    images.dedup();
    Ok(images)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_push_deploys_exactly_the_pushed_digest_with_no_failed_request() -> Result<()> {
    const TEST: &str = "a_registry_push_deploys_exactly_the_pushed_digest_with_no_failed_request";
    if !require_registry(TEST) {
        return Ok(());
    }
    let Some((cluster, _one_at_a_time)) = Cluster::begin_with(TEST, "registry", &[]).await? else {
        return Ok(());
    };
    // The registry's address is in the service's image, and the hook's secret in the
    // registry's config: the port first, then the service and its hook, then the registry.
    let mut registry = Registry::new()?;
    let v1 = registry.tag("paz-demo:v1", "v1")?;
    let mut spec = demo("web", 2);
    spec.image = v1;
    cluster.create(&spec).await?;
    let token = create_hook(&cluster, "web", "registry", "v*")?;
    registry.start(
        &format!("{}/v1/hooks/registry", cluster.server().url),
        &token,
    )?;
    let load = Load::start(&cluster.router(), "web.localhost", "/", 4);

    // docker push of a new tag → the registry notifies Paz → exactly that digest runs.
    let digest = registry.push("paz-demo:v2", "v2")?;
    let pin = format!("{}/paz-demo@{digest}", registry.address);
    let delivery = wait_delivery(&cluster, "web", "deploying v2", |d| {
        d.code == "DEPLOYED" && d.tag.as_deref() == Some("v2")
    })
    .await?;
    assert_eq!(delivery.digest.as_deref(), Some(digest.as_str()));
    let id = delivery.deployment.clone().expect("a deployment");
    let done = cluster
        .wait_deployment(&id, DeploymentStatus::Succeeded)
        .await?;
    let release = cluster.client.release("web", done.release).await?;
    assert_eq!(release.image_digest.as_deref(), Some(pin.as_str()));
    assert_eq!(release.spec.image, registry.image("v2"));
    cluster.wait_containers("web", &[done.release; 2]).await?;
    assert_eq!(running_images(&cluster, "web")?, std::slice::from_ref(&pin));
    assert_eq!(version(&cluster).await?, "v2");

    // The same digest under another tag deploys nothing; a filtered tag neither.
    let releases = cluster.client.releases("web").await?.len();
    let again = registry.push("paz-demo:v2", "v2.0")?;
    assert_eq!(again, digest);
    wait_delivery(&cluster, "web", "v2.0 already deployed", |d| {
        d.code == "ALREADY_DEPLOYED" && d.tag.as_deref() == Some("v2.0")
    })
    .await?;
    registry.push("paz-demo:v3", "latest")?;
    wait_delivery(&cluster, "web", "latest filtered", |d| {
        d.code == "TAG_FILTERED" && d.tag.as_deref() == Some("latest")
    })
    .await?;
    assert_eq!(cluster.client.releases("web").await?.len(), releases);

    // An event for a digest that cannot be pulled: a failed deployment that says why, and
    // v2 keeps serving.
    let missing = format!("sha256:{}", "0".repeat(64));
    let envelope = json!({"events": [{
        "id": "never-pushed", "action": "push",
        "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                   "digest": missing, "repository": "paz-demo", "tag": "v9", "size": 527},
    }]});
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/v1/hooks/registry", cluster.server().url))
        .bearer_auth(&registry.token)
        .header("content-type", paz::core::hook::REGISTRY_EVENTS_V1)
        .body(envelope.to_string())
        .send()
        .await?
        .json()
        .await?;
    let failing = answer["deliveries"][0]["deployment"]
        .as_str()
        .with_context(|| format!("no deployment in {answer}"))?
        .to_owned();
    let failed = cluster
        .wait_deployment(&failing, DeploymentStatus::Failed)
        .await?;
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("cannot be pulled"), "{error}");
    assert_eq!(version(&cluster).await?, "v2");

    assert_no_failures(
        load,
        "a registry push, a repeat, a filtered tag, a bad digest",
    )
    .await;

    // The CLI shows the pinned digest and the delivery log.
    let short = &digest[..19];
    let releases = crate::support::paz(cluster.server(), &cluster.data, &["releases", "web"]);
    let text = String::from_utf8_lossy(&releases.stdout);
    assert!(text.contains(short), "paz releases shows {short}: {text}");
    let log = crate::support::paz(cluster.server(), &cluster.data, &["deliveries", "web"]);
    let text = String::from_utf8_lossy(&log.stdout);
    for code in ["DEPLOYED", "ALREADY_DEPLOYED", "TAG_FILTERED"] {
        assert!(text.contains(code), "paz deliveries shows {code}: {text}");
    }
    Ok(())
}

/// A local HTTP server (loopback) standing in for Docker Hub's callback URL: the bodies
/// POSTed to it.
async fn callback_server() -> Result<(String, tokio::sync::mpsc::Receiver<Value>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let app = axum::Router::new().route(
        "/u/library/paz-demo/hook/1/",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body).await;
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{address}/u/library/paz-demo/hook/1/"), rx))
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`, computed with `openssl dgst` as a
/// CI script would (the test shares no code with the server for it).
fn sign(secret: &str, body: &[u8]) -> String {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt"])
        .arg(format!("key:{secret}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs (apt-get install openssl)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl dgst failed");
    output
        .stdout
        .iter()
        .fold(String::from("sha256="), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_and_ci_hooks_deploy_under_load_and_report_back() -> Result<()> {
    const TEST: &str = "docker_hub_and_ci_hooks_deploy_under_load_and_report_back";
    let Some((cluster, _one_at_a_time)) =
        Cluster::begin_with(TEST, "hub", &["--hook-callback-host", "127.0.0.1"]).await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 2)).await?;
    let url = create_hook(&cluster, "web", "dockerhub", "v*")?;
    assert!(url.contains("/v1/hooks/dockerhub/hook_"), "{url}");
    let secret = create_hook(&cluster, "web", "ci", "v*")?;
    let load = Load::start(&cluster.router(), "web.localhost", "/", 4);

    // Docker Hub: the pushed tag deploys, the result goes to the callback URL.
    let (callback, mut reported) = callback_server().await?;
    let payload = json!({
        "callback_url": callback,
        "push_data": {"pushed_at": 1_700_000_000, "pusher": "ci", "tag": "v2"},
        "repository": {"repo_name": "library/paz-demo", "name": "paz-demo", "namespace": "library"},
    });
    let http = reqwest::Client::new();
    let answer: Value = http.post(&url).json(&payload).send().await?.json().await?;
    let id = answer["deployment"]
        .as_str()
        .with_context(|| format!("{answer}"))?
        .to_owned();
    cluster
        .wait_deployment(&id, DeploymentStatus::Succeeded)
        .await?;
    let report = tokio::time::timeout(Duration::from_secs(30), reported.recv())
        .await
        .context("the callback is called within 30 s")?
        .context("a callback body")?;
    assert_eq!(report["state"], "success", "{report}");
    assert_eq!(version(&cluster).await?, "v2");

    // CI: a signed request deploys and answers the deployment to follow; a replay is refused.
    let now = jiff::Timestamp::now().as_second();
    let body =
        json!({"service": "web", "tag": "v3", "timestamp": now, "idempotency_key": "run-42"})
            .to_string();
    let send = async |body: &str, signature: &str| {
        http.post(format!("{}/v1/hooks/deploy", cluster.server().url))
            .header("content-type", "application/json")
            .header("x-paz-signature", signature)
            .body(body.to_owned())
            .send()
            .await
    };
    let response = send(&body, &sign(&secret, body.as_bytes())).await?;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await?;
    let id = answer["deployment"]
        .as_str()
        .context("a deployment")?
        .to_owned();
    cluster
        .wait_deployment(&id, DeploymentStatus::Succeeded)
        .await?;
    assert_eq!(version(&cluster).await?, "v3");
    let replay = send(&body, &sign(&secret, body.as_bytes())).await?;
    assert_eq!(replay.status(), 409);
    let forged = send(&body, &sign("hook_000000000000_00", body.as_bytes())).await?;
    assert_eq!(forged.status(), 401);
    assert_no_failures(load, "Docker Hub and CI hook deploys").await;

    let log = json_of(&crate::support::paz(
        cluster.server(),
        &cluster.data,
        &["deliveries", "web", "--output", "json"],
    ));
    let codes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "DEPLOYED",
            "DEPLOYED",
            "DUPLICATE_DELIVERY",
            "SIGNATURE_INVALID"
        ]
    );
    assert_eq!(log[0]["callback"], "success sent (HTTP 200)", "{log:#}");
    let hooks = cluster.client.hooks("web").await?;
    let sources: Vec<HookSource> = hooks.iter().map(|h| h.source).collect();
    assert_eq!(
        sources,
        [HookSource::Ci, HookSource::Dockerhub],
        "by source name"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_runs_the_image_its_release_ran_after_the_tag_moved() -> Result<()> {
    const TEST: &str = "a_rollback_runs_the_image_its_release_ran_after_the_tag_moved";
    let Some((cluster, _one_at_a_time)) = Cluster::begin_with(TEST, "pin", &[]).await? else {
        return Ok(());
    };
    // A tag of this test's own, like `:latest`, first on v1's image.
    let tag = format!("paz-demo:moving-{}", std::process::id());
    let _untag = Untag(tag.clone());
    docker(&["tag", "paz-demo:v1", &tag])?;
    let v1_id = docker(&["image", "inspect", "--format", "{{.Id}}", "paz-demo:v1"])?;
    let mut spec = demo("web", 2);
    spec.image = tag.clone();
    cluster.create(&spec).await?;
    let v1 = cluster.client.release("web", 1).await?;
    assert_eq!(
        v1.image_digest.as_deref(),
        Some(v1_id.as_str()),
        "pinned to v1's image id"
    );
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    cluster
        .wait_deployment(&deployment.id, DeploymentStatus::Succeeded)
        .await?;
    // The tag moves to v3's image; going back to release 1 runs v1's.
    docker(&["tag", "paz-demo:v3", &tag])?;
    let load = Load::start(&cluster.router(), "web.localhost", "/", 4);
    let back = cluster.client.rollback("web", Some(1)).await?;
    cluster
        .wait_deployment(&back.id, DeploymentStatus::Succeeded)
        .await?;
    cluster.wait_containers("web", &[1, 1]).await?;
    assert_eq!(
        running_images(&cluster, "web")?,
        std::slice::from_ref(&v1_id)
    );
    assert_eq!(
        version(&cluster).await?,
        "v1",
        "the old image runs, not the tag's new one"
    );
    assert_no_failures(load, "a rollback to a pinned release").await;

    // A crashed instance is replaced with the same image.
    let victim = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("network={}", cluster.network),
        "--filter",
        "label=paz.service=web",
    ])?
    .split_whitespace()
    .next()
    .context("a container")?
    .to_owned();
    docker(&["kill", &victim])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("network={}", cluster.network),
            "--filter",
            "label=paz.service=web",
        ])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.len() == 2 && !ids.contains(&victim.as_str()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the killed instance is not replaced: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        running_images(&cluster, "web")?,
        std::slice::from_ref(&v1_id)
    );
    let releases = json_of(&crate::support::paz(
        cluster.server(),
        &cluster.data,
        &["releases", "web", "--output", "json"],
    ));
    assert_eq!(releases[0]["image_digest"], v1_id.as_str());
    let table = crate::support::paz(cluster.server(), &cluster.data, &["releases", "web"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&v1_id[..19]),
        "paz releases shows the pin: {text}"
    );
    Ok(())
}

/// Removes a local tag on drop.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

/// Polls `GET /` through the router (every 2 ms, for at most 60 s) until it answers
/// `expected`; when it did.
async fn first_served(router: String, expected: &'static str) -> Result<jiff::Timestamp> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client
            .get(format!("http://{router}/"))
            .header("host", "web.localhost")
            .send()
            .await;
        if let Ok(response) = response
            && response
                .text()
                .await
                .is_ok_and(|body| body.trim() == expected)
        {
            return Ok(jiff::Timestamp::now());
        }
        ensure!(
            Instant::now() < deadline,
            "{expected} is not served after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn millis(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}

/// The benchmark of BENCHMARKS.md: time from a registry's push notification reaching Paz to
/// the new release serving its first request through the router, next to the same deploy
/// started with `paz deploy --detach`. Run by hand:
/// `cargo test -p paz --test it hooks::bench -- --ignored --nocapture` (`PAZ_BENCH_ROUNDS`,
/// default 7, per way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand (see BENCHMARKS.md)"]
async fn bench_registry_notification_to_serving_vs_cli_deploy() -> Result<()> {
    const TEST: &str = "bench_registry_notification_to_serving_vs_cli_deploy";
    if !require_registry(TEST) {
        return Ok(());
    }
    let Some((cluster, _one_at_a_time)) = Cluster::begin_with(TEST, "bench", &[]).await? else {
        return Ok(());
    };
    let rounds: usize = std::env::var("PAZ_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    let mut registry = Registry::new()?;
    let v1 = registry.tag("paz-demo:v1", "v1")?;
    let mut spec = demo("web", 2);
    spec.image = v1;
    cluster.create(&spec).await?;
    let token = create_hook(&cluster, "web", "registry", "*")?;
    registry.start(
        &format!("{}/v1/hooks/registry", cluster.server().url),
        &token,
    )?;
    // Every image in the registry first, so both ways deploy images already local.
    for version in ["v2", "v3"] {
        registry.push(&format!("paz-demo:{version}"), version)?;
    }
    // Those pushes deployed; wait for them to settle.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .client
        .deliveries("web")
        .await?
        .iter()
        .filter(|d| d.code == "DEPLOYED")
        .count()
        < 2
    {
        ensure!(Instant::now() < deadline, "the first pushes did not deploy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
        .wait_latest("web", DeploymentStatus::Succeeded)
        .await?;
    let router = cluster.router();
    let (mut hook, mut push_to_served, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    let mut decided = Vec::new();
    let mut current = "v3";
    for round in 0..rounds * 2 {
        let next: &'static str = if current == "v3" { "v2" } else { "v3" };
        let served = tokio::spawn(first_served(router.clone(), next));
        if round % 2 == 0 {
            let deployed = cluster
                .client
                .deliveries("web")
                .await?
                .iter()
                .filter(|d| d.code == "DEPLOYED")
                .count();
            // Push the tag again (same digest, a new event): the registry notifies Paz.
            let image = registry.image(next);
            docker(&["push", &image])?;
            let pushed = jiff::Timestamp::now();
            let delivery = {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let log = cluster.client.deliveries("web").await?;
                    let done: Vec<&Delivery> =
                        log.iter().filter(|d| d.code == "DEPLOYED").collect();
                    if done.len() > deployed {
                        break (*done.last().unwrap()).clone();
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "the push of {next} did not deploy"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let at = served.await??;
            let deployment = cluster
                .client
                .deployment(delivery.deployment.as_deref().context("a deployment")?)
                .await?;
            decided.push(millis(delivery.received_at, deployment.created_at));
            hook.push(millis(delivery.received_at, at));
            push_to_served.push(millis(pushed, at));
        } else {
            let started = jiff::Timestamp::now();
            let output = crate::support::paz(
                cluster.server(),
                &cluster.data,
                &[
                    "deploy",
                    "web",
                    "--image",
                    &registry.image(next),
                    "--detach",
                ],
            );
            ensure!(
                output.status.success(),
                "paz deploy: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let at = served.await??;
            cli.push(millis(started, at));
        }
        cluster
            .wait_latest("web", DeploymentStatus::Succeeded)
            .await?;
        current = next;
    }
    let show = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "registry notification received -> first request served by the new release (ms): {}",
        show(&hook)
    );
    eprintln!(
        "`docker push` returned -> first request served (ms): {}",
        show(&push_to_served)
    );
    eprintln!(
        "`paz deploy --detach` started -> first request served (ms): {}",
        show(&cli)
    );
    let (hook, push, cli) = (
        median(&mut hook),
        median(&mut push_to_served),
        median(&mut cli),
    );
    eprintln!(
        "medians over {rounds} rounds each: notification {hook:.0} ms, push returned {push:.0} ms, CLI {cli:.0} ms (notification - CLI: {:+.0} ms); the hook decides in {:.1} ms",
        hook - cli,
        median(&mut decided)
    );
    Ok(())
}
