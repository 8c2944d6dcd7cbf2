//! The main job, end to end against the real Docker Engine: zero-downtime deploys through
//! the built-in router under load, the health gate, crash replacement, a server killed
//! mid-deploy, scaling, rollback and service-to-service calls through `<svc>.paz`.
//!
//! Needs Docker (`CI=true` makes a missing engine a failure) and the demo image, which
//! `scripts/build-demo-image.sh` builds (the harness runs it when the image is missing).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    Cluster, DOCKER, Load, Server, assert_no_failures, cleanup_network, container_releases, demo,
    require_docker, test_network,
};
use anyhow::{Result, ensure};
use paz::DeploymentStatus;
use paz::core::{HumanDuration, ServiceSpec};

/// A change that breaks a spec.
type SpecChange = Box<dyn Fn(&mut ServiceSpec)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploys_under_load_drop_no_request() -> Result<()> {
    let Some((cluster, _one_at_a_time)) =
        Cluster::begin("rolling_deploys_under_load_drop_no_request", "rolling").await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 3)).await?;
    let router = cluster.router();
    let load = Load::start(&router, "web.localhost", "/", 6);
    for (version, image) in [(2, "paz-demo:v2"), (3, "paz-demo:v3")] {
        // Long requests in flight when the switch happens must complete.
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let url = format!("http://{router}/slow?ms=2000");
                tokio::spawn(async move {
                    reqwest::Client::new()
                        .get(url)
                        .header("host", "web.localhost")
                        .send()
                        .await
                        .map(|r| r.status())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let deployment = cluster.client.deploy("web", Some(image.into())).await?;
        let done = cluster
            .wait_deployment(&deployment.id, DeploymentStatus::Succeeded)
            .await?;
        assert_eq!(done.release, version);
        for request in slow {
            assert_eq!(
                request
                    .await?
                    .map_err(|e| anyhow::anyhow!("slow request failed: {e}"))?,
                200,
                "in-flight slow requests complete"
            );
        }
        cluster.wait_containers("web", &[version; 3]).await?;
    }
    assert_no_failures(load, "v1 -> v2 -> v3 rolling deploys").await;
    // The quickstart's promise: each tag of the demo image answers its own version, and
    // `paz service show` prints the URL the service is served at (domain and router port
    // as the server reports them).
    let body = cluster.get("web.localhost", "/").await?.text().await?;
    assert_eq!(body.trim(), "v3", "paz-demo:v3 answers v3");
    let port = router.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    let shown = crate::support::paz(cluster.server(), &cluster.data, &["service", "show", "web"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains(&format!("http://web.localhost:{port}/")),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let unauthorized = reqwest::get(format!("{}/metrics", cluster.server().url)).await?;
    assert_eq!(unauthorized.status(), 401, "/metrics needs a read token");
    let token = std::fs::read_to_string(cluster.data.join("admin-token"))?;
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", cluster.server().url))
        .bearer_auth(token.trim())
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("paz_router_requests_total{service=\"web\",code=\"200\"}"),
        "the router's per-service metrics are served at /metrics: {metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_releases_fail_clearly_and_the_old_one_keeps_serving() -> Result<()> {
    let Some((cluster, _one_at_a_time)) = Cluster::begin(
        "bad_releases_fail_clearly_and_the_old_one_keeps_serving",
        "bad",
    )
    .await?
    else {
        return Ok(());
    };
    let mut spec = demo("web", 2);
    spec.deploy.health_timeout = HumanDuration::from_secs(3);
    cluster.create(&spec).await?;
    let load = Load::start(&cluster.router(), "web.localhost", "/", 4);

    let broken: [(&str, SpecChange, &str); 5] = [
        (
            "failing health check",
            Box::new(|s| {
                s.env.insert("FAIL_HEALTH".into(), "1".into());
            }),
            "health check",
        ),
        (
            "missing image",
            Box::new(|s| s.image = "paz-demo:does-not-exist".into()),
            "not available locally",
        ),
        (
            "exits at once",
            Box::new(|s| {
                s.env.insert("CRASH_AFTER_S".into(), "0".into());
            }),
            "exited",
        ),
        (
            "port never opened",
            Box::new(|s| {
                s.env.insert("PORT".into(), "9999".into());
            }),
            "health check",
        ),
        (
            "health path 404",
            Box::new(|s| s.health.as_mut().unwrap().path = "/nope".into()),
            "health check",
        ),
    ];
    for (what, change, reason) in broken {
        let mut bad = spec.clone();
        change(&mut bad);
        cluster.client.update_service("web", &bad, None).await?;
        let failed = cluster.wait_latest("web", DeploymentStatus::Failed).await?;
        let error = failed.error.clone().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{what}: the error says why: {error}"
        );
        let service = cluster.client.service("web").await?;
        assert_eq!(
            service.current_release,
            Some(1),
            "{what}: the service is back on v1"
        );
        cluster.wait_containers("web", &[1, 1]).await?;
        eprintln!("{what}: failed as expected: {error}");
    }
    assert_no_failures(load, "five failed releases").await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_replaced_and_routable_within_5_s() -> Result<()> {
    let Some((cluster, _one_at_a_time)) = Cluster::begin(
        "a_killed_instance_is_replaced_and_routable_within_5_s",
        "kill",
    )
    .await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 2)).await?;
    let before: Vec<String> = cluster
        .client
        .instances("web")
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    let killed = std::process::Command::new("docker")
        .args(["kill", &before[0]])
        .output()?;
    assert!(killed.status.success());
    let started = Instant::now();
    loop {
        let instances = cluster.client.instances("web").await?;
        let healthy: Vec<_> = instances
            .iter()
            .filter(|i| i.state == paz::core::InstanceState::Healthy)
            .collect();
        if healthy.len() == 2 && healthy.iter().all(|i| i.id != before[0]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not replaced within 5 s: {instances:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let response = cluster.get("web.localhost", "/").await?;
    assert!(response.status().is_success());
    eprintln!("killed instance replaced and healthy in {elapsed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_deploy_converges_after_restart() -> Result<()> {
    let Some((mut cluster, _one_at_a_time)) = Cluster::begin(
        "a_server_killed_mid_deploy_converges_after_restart",
        "crash",
    )
    .await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 3)).await?;
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    // Kill the server as soon as the first new instance is started.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !container_releases(&cluster.network, "web").contains(&2) {
        assert!(
            Instant::now() < deadline,
            "the deploy never started an instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.restart_after_kill()?;
    let done = cluster
        .wait_deployment(&deployment.id, DeploymentStatus::Succeeded)
        .await?;
    assert_eq!(done.release, 2);
    cluster.wait_containers("web", &[2, 2, 2]).await?;
    let response = cluster.get("web.localhost", "/").await?;
    assert!(response.status().is_success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_and_rollback_under_load_drop_no_request() -> Result<()> {
    let Some((cluster, _one_at_a_time)) =
        Cluster::begin("scaling_and_rollback_under_load_drop_no_request", "scale").await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 1)).await?;
    let load = Load::start(&cluster.router(), "web.localhost", "/", 4);
    cluster.client.scale("web", 3).await?;
    cluster.wait_containers("web", &[1, 1, 1]).await?;
    wait_healthy(&cluster, "web", 3).await?;
    cluster.client.scale("web", 1).await?;
    cluster.wait_containers("web", &[1]).await?;
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    cluster
        .wait_deployment(&deployment.id, DeploymentStatus::Succeeded)
        .await?;
    let back = cluster.client.rollback("web", Some(1)).await?;
    let done = cluster
        .wait_deployment(&back.id, DeploymentStatus::Succeeded)
        .await?;
    assert_eq!(done.release, 1);
    cluster.wait_containers("web", &[1]).await?;
    assert_no_failures(load, "scale 1 -> 3 -> 1, deploy v2, rollback to v1").await;
    Ok(())
}

async fn wait_healthy(cluster: &Cluster, service: &str, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let instances = cluster.client.instances(service).await?;
        if instances
            .iter()
            .filter(|i| i.state == paz::core::InstanceState::Healthy)
            .count()
            == count
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{service} never had {count} healthy instances: {instances:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_through_svc_paz_survive_a_callee_deploy() -> Result<()> {
    let Some((cluster, _one_at_a_time)) = Cluster::begin(
        "internal_calls_through_svc_paz_survive_a_callee_deploy",
        "internal",
    )
    .await?
    else {
        return Ok(());
    };
    let mut api = demo("api", 2);
    api.public = false;
    api.env.insert("VERSION".into(), "api-v1".into());
    cluster.create(&api).await?;
    cluster.create(&demo("web", 1)).await?;
    let answer = cluster
        .get("web.localhost", "/call?url=http://api.paz/")
        .await?;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.text().await?.trim(),
        "api-v1",
        "web reached api through api.paz"
    );
    let public = cluster.get("api.paz", "/").await?;
    assert_eq!(
        public.status(),
        404,
        "internal names are not served on the public listener"
    );

    let load = Load::start(
        &cluster.router(),
        "web.localhost",
        "/call?url=http://api.paz/",
        4,
    );
    api.env.insert("VERSION".into(), "api-v2".into());
    cluster.client.update_service("api", &api, None).await?;
    cluster
        .wait_latest("api", DeploymentStatus::Succeeded)
        .await?;
    cluster.wait_containers("api", &[2, 2]).await?;
    assert_no_failures(load, "calls to api.paz across a deploy of api").await;
    Ok(())
}

/// The ids of the containers of a service on a network, sorted.
fn container_ids(network: &str, service: &str) -> Vec<String> {
    let output = std::process::Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("network={network}"))
        .arg("--filter")
        .arg(format!("label=paz.service={service}"))
        .output()
        .expect("docker ps");
    let mut ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// Defect: a second paz-server on the same Docker Engine (`--store memory`, or an empty data
/// dir) removed every container it did not know. Containers carry their cluster's id now,
/// and a server never touches another cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_another_store_leaves_the_containers_alone() -> Result<()> {
    let Some((cluster, _one_at_a_time)) = Cluster::begin(
        "a_second_server_on_another_store_leaves_the_containers_alone",
        "second",
    )
    .await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 2)).await?;
    let before = container_ids(&cluster.network, "web");
    assert_eq!(before.len(), 2);
    let other = tempfile::tempdir()?;
    let mut others = Vec::new();
    for store in ["memory", "embedded"] {
        let server = Server::start_with(
            &other.path().join(store),
            &[
                "--store",
                store,
                "--router-listen",
                "127.0.0.1:0",
                "--docker-network",
                &cluster.network,
            ],
        )?;
        let client = server.client(&other.path().join(store))?;
        others.push((server, client));
    }
    // Each has made its first full pass (which used to remove the containers) well within
    // this time; the first server's containers must be untouched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (_, client) in &others {
        assert!(client.services().await?.is_empty());
    }
    assert_eq!(container_ids(&cluster.network, "web"), before);
    let response = cluster.get("web.localhost", "/").await?;
    assert!(response.status().is_success());
    for (server, _) in others {
        server.stop()?;
    }
    assert_eq!(container_ids(&cluster.network, "web"), before);
    Ok(())
}

/// Runs `paz` with `stdin` as its standard input and `extra` environment.
fn paz_with(
    cluster: &Cluster,
    args: &[&str],
    stdin: &str,
    token: Option<&str>,
) -> std::process::Output {
    use std::io::Write as _;
    let mut command = std::process::Command::new(crate::support::bin("paz"));
    command
        .args(args)
        .env("PAZ_SERVER", &cluster.server().url)
        .env("PAZ_DATA_DIR", &cluster.data)
        .env_remove("PAZ_OUTPUT")
        .env_remove("PAZ_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(token) = token {
        command.env("PAZ_TOKEN", token);
    }
    let mut child = command.spawn().expect("run paz");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A secret set with the CLI (value on stdin) reaches the instances as an environment
/// variable through a zero-downtime deploy, and is shown nowhere; a deploy-only token made
/// with the CLI deploys that service and can do nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_instances_and_a_ci_token_only_deploys() -> Result<()> {
    let Some((cluster, _one_at_a_time)) = Cluster::begin(
        "secrets_reach_instances_and_a_ci_token_only_deploys",
        "secrets",
    )
    .await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 2)).await?;
    let router = cluster.router();
    let load = Load::start(&router, "web.localhost", "/", 4);
    let set = paz_with(
        &cluster,
        &["secret", "set", "web", "DB_PASSWORD"],
        "hunter2-secret\n",
        None,
    );
    assert!(
        set.status.success(),
        "paz secret set: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_no_failures(load, "a secret change").await;
    let seen = cluster.get("web.localhost", "/env/DB_PASSWORD").await?;
    assert_eq!(
        seen.text().await?.trim(),
        "hunter2-secret",
        "the instance has it"
    );

    let list = paz_with(&cluster, &["secret", "list", "web"], "", None);
    let show = paz_with(
        &cluster,
        &["service", "show", "web", "-o", "json"],
        "",
        None,
    );
    let releases = paz_with(&cluster, &["releases", "web", "-o", "json"], "", None);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("DB_PASSWORD"), "{listed}");
    for output in [&list, &show, &releases, &set] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!text.contains("hunter2"), "the value is shown: {text}");
    }

    // CI: a token that may only deploy web.
    let created = paz_with(
        &cluster,
        &[
            "token",
            "create",
            "ci",
            "--scope",
            "deploy",
            "--service",
            "web",
        ],
        "",
        None,
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout)?.trim().to_owned();
    assert!(
        token.starts_with("paz_"),
        "stdout is the token alone: {token:?}"
    );
    let deploy = paz_with(
        &cluster,
        &["deploy", "web", "--image", "paz-demo:v2"],
        "",
        Some(&token),
    );
    assert!(
        deploy.status.success(),
        "the CI token deploys: {}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    let seen = cluster.get("web.localhost", "/").await?.text().await?;
    assert_eq!(seen.trim(), "v2");
    for args in [
        &["service", "delete", "web"][..],
        &["scale", "web", "5"],
        &["secret", "list", "web"],
        &["token", "list"],
    ] {
        let refused = paz_with(&cluster, args, "", Some(&token));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("may only deploy web"), "{args:?}: {stderr}");
    }
    let revoked = paz_with(&cluster, &["token", "revoke", "ci"], "", None);
    assert!(revoked.status.success());
    let after = paz_with(&cluster, &["status", "web"], "", Some(&token));
    assert_eq!(after.status.code(), Some(1), "a revoked token is refused");
    Ok(())
}

/// Removes a test network (and its containers) when dropped.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        cleanup_network(&self.0);
    }
}

/// HTTPS end to end: `paz-server --tls-listen … --acme-directory <pebble>`; a public service
/// gets a certificate from the CA (HTTP-01 answered by the router), served over HTTP/2, and
/// its plain-HTTP requests are redirected. Needs Docker and pebble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_service_is_served_over_https_with_a_certificate_from_acme() -> Result<()> {
    let test = "a_public_service_is_served_over_https_with_a_certificate_from_acme";
    if !require_docker(test) || !paz_acme::testing::pebble_available(test) {
        return Ok(());
    }
    let _one_at_a_time = DOCKER.lock().await;
    let router_port = paz_acme::testing::free_port();
    let pebble = paz_acme::testing::Pebble::start(router_port)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let network = NetworkGuard(test_network("https"));
    let server = Server::start_with(
        &data,
        &[
            "--router-listen",
            &format!("127.0.0.1:{router_port}"),
            "--docker-network",
            &network.0,
            "--tls-listen",
            "127.0.0.1:0",
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-root",
            pebble.api_ca.to_str().unwrap(),
            "--api-domain",
            "localhost",
        ],
    )?;
    let tls: std::net::SocketAddr = server
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("paz-server router listening on https://"))
        .expect("the HTTPS address is printed")
        .parse()?;
    let client = server.client(&data)?;
    let service = client.create_service(&demo("web", 1)).await?;
    let first = client
        .deployments(&service.spec.name)
        .await?
        .last()
        .map(|d| d.id.clone())
        .unwrap();
    let done = client
        .wait_for_deployment(&first, Duration::from_secs(60))
        .await?;
    ensure!(done.status == DeploymentStatus::Succeeded, "{done:?}");
    let healthy = Instant::now();

    let root = pebble.issuing_root().await?;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes())?)
        .resolve("web.localhost", tls)
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("https://web.localhost:{}/", tls.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    let response = loop {
        match https.get(&url).send().await {
            Ok(response) => break response,
            Err(error) => {
                ensure!(Instant::now() < deadline, "no HTTPS within 60 s: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let served = healthy.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(response.text().await?.trim(), "v1");
    eprintln!("healthy → served over HTTPS with an ACME certificate in {served:?}");

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("http://127.0.0.1:{router_port}/path?q=1"))
        .header("host", "web.localhost")
        .send()
        .await?;
    assert_eq!(plain.status(), 308);
    assert_eq!(
        plain.headers()["location"],
        format!("https://web.localhost:{}/path?q=1", tls.port()).as_str()
    );
    let status = client.status("web").await?;
    assert!(
        !status.problems.iter().any(|p| p.contains("certificate")),
        "{:?}",
        status.problems
    );

    // The API through the router under its own name (`--api-domain`), over HTTPS with a
    // certificate from the CA: the CLI reaches it with --server https://… and --ca-file.
    let root_file = dir.path().join("pebble-root.pem");
    std::fs::write(&root_file, &root)?;
    let token = std::fs::read_to_string(data.join("admin-token"))?;
    let api_url = format!("https://localhost:{}", tls.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let output = std::process::Command::new(crate::support::bin("paz"))
            .args(["--server", &api_url, "--ca-file"])
            .arg(&root_file)
            .args(["service", "list", "-o", "json"])
            .env("PAZ_TOKEN", token.trim())
            .output()?;
        if output.status.success() {
            break output;
        }
        ensure!(
            Instant::now() < deadline,
            "the CLI never reached {api_url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"web\""));
    let untrusted = std::process::Command::new(crate::support::bin("paz"))
        .args(["--server", &api_url, "service", "list"])
        .env("PAZ_TOKEN", token.trim())
        .output()?;
    assert!(
        !untrusted.status.success(),
        "without the CA the certificate is refused"
    );
    Ok(())
}

/// Load as wrk makes it: connections that each keep one request outstanding and open a new
/// connection only when an answer says `Connection: close`. Any other end of a connection
/// (refused, reset, closed before or during an answer) fails the request it carried, as does
/// any non-2xx answer.
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl KeepAliveLoad {
    fn start(router: &str, host: &str, connections: usize) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let tasks = (0..connections)
            .map(|_| {
                let (stop, ok, reconnects) = (stop.clone(), ok.clone(), reconnects.clone());
                let (router, request) = (
                    router.to_owned(),
                    format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                );
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut connection: Option<tokio::net::TcpStream> = None;
                    let mut buf = Vec::with_capacity(4096);
                    // Bounded: a broken router ends the loop after a few failures.
                    while !stop.load(Ordering::Relaxed) && failures.len() < 20 {
                        let stream = match connection.as_mut() {
                            Some(stream) => stream,
                            None => match tokio::time::timeout(
                                Duration::from_secs(5),
                                tokio::net::TcpStream::connect(&router),
                            )
                            .await
                            {
                                Ok(Ok(stream)) => connection.insert(stream),
                                other => {
                                    failures.push(format!("connect: {other:?}"));
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            },
                        };
                        let exchange = tokio::time::timeout(
                            Duration::from_secs(10),
                            http1_exchange(stream, request.as_bytes(), &mut buf),
                        )
                        .await;
                        match exchange {
                            Ok(Ok((status, close))) => {
                                if (200..300).contains(&status) {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failures.push(format!("status {status}"));
                                }
                                if close {
                                    connection = None;
                                    reconnects.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(Err(error)) => {
                                failures.push(format!("{error}"));
                                connection = None;
                            }
                            Err(_) => {
                                failures.push("no answer within 10 s".into());
                                connection = None;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    failures
                })
            })
            .collect();
        KeepAliveLoad {
            stop,
            ok,
            reconnects,
            tasks,
        }
    }

    /// Stops the connections; returns the successes, how many times an answer closed a
    /// connection, and the failures.
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
            failures,
        )
    }
}

/// One request and its `Content-Length`-framed answer on `stream`: the status, and whether
/// the answer said `Connection: close`.
async fn http1_exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    use std::io::{Error, ErrorKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::new(ErrorKind::InvalidData, format!("bad head {head:?}")))?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    Error::new(ErrorKind::InvalidData, format!("no length in {head:?}"))
                })?;
            let close = head
                .lines()
                .any(|l| l.starts_with("connection:") && l.contains("close"));
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(Error::new(ErrorKind::UnexpectedEof, "closed mid-body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, close));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `paz-server --upgrade` beside the running server of `cluster`, from `binary`: returns
/// the new server once the old one has exited, and how long the hand-over took.
async fn upgrade(cluster: &mut Cluster, binary: PathBuf) -> Result<Duration> {
    let old = cluster.server.take().expect("the server runs");
    let (data, network) = (cluster.data.clone(), cluster.network.clone());
    let started = Instant::now();
    let new = tokio::task::spawn_blocking(move || {
        Server::start_binary(
            &binary,
            &data,
            &[
                "--router-listen",
                "127.0.0.1:0",
                "--docker-network",
                &network,
                "--upgrade",
            ],
        )
    })
    .await??;
    let took = started.elapsed();
    ensure!(
        new.url == old.url && new.router == old.router,
        "the new server listens where the old one did: {} {:?} vs {} {:?}",
        new.url,
        new.router,
        old.url,
        old.router
    );
    // The old one drains and exits by itself (it has exited already: the new one opens the
    // store only then).
    tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(30))).await??;
    cluster.server = Some(new);
    Ok(took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_a_binary_swap_under_load_fail_no_request() -> Result<()> {
    let Some((mut cluster, _one_at_a_time)) = Cluster::begin(
        "a_restart_and_a_binary_swap_under_load_fail_no_request",
        "upgrade",
    )
    .await?
    else {
        return Ok(());
    };
    cluster.create(&demo("web", 2)).await?;
    wait_healthy(&cluster, "web", 2).await?;
    let router = cluster.router();
    let keep_alive = KeepAliveLoad::start(&router, "web.localhost", 8);
    let fresh = Load::start(&router, "web.localhost", "/", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A restart: the same binary takes over.
    let restart = upgrade(&mut cluster, crate::support::bin("paz-server")).await?;
    // The new server's runtime and API work: a deploy under the same load.
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    cluster
        .wait_deployment(&deployment.id, DeploymentStatus::Succeeded)
        .await?;
    // A binary swap: another binary file takes over.
    let next = cluster._dir.path().join("paz-server-next");
    std::fs::copy(crate::support::bin("paz-server"), &next)?;
    let swap = upgrade(&mut cluster, next).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, reconnects, failures) = keep_alive.finish().await;
    assert_no_failures(fresh, "new and pooled connections across two upgrades").await;
    ensure!(
        failures.is_empty(),
        "keep-alive connections: {} of {} requests failed, first: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    ensure!(ok > 100, "only {ok} keep-alive requests");
    // Each upgrade ended every connection of the old server with `Connection: close`.
    ensure!(
        reconnects >= 8,
        "only {reconnects} answers closed a connection"
    );
    eprintln!(
        "restart took {restart:?}, binary swap {swap:?}; keep-alive: {ok} requests, \
         {reconnects} moved to the new process, 0 failed"
    );
    let versions = cluster.get("web.localhost", "/").await?.text().await?;
    ensure!(
        versions.contains("v2"),
        "serving v2 after the swap: {versions}"
    );

    // A plain restart (stop, then start): the new server restores the routes of the running
    // instances before it accepts, so its first answer is no 404.
    let (data, network) = (cluster.data.clone(), cluster.network.clone());
    cluster.server.take().expect("the server runs").stop()?;
    let server = tokio::task::spawn_blocking(move || {
        Server::start_with(
            &data,
            &[
                "--router-listen",
                "127.0.0.1:0",
                "--docker-network",
                &network,
            ],
        )
    })
    .await??;
    cluster.server = Some(server);
    let first = cluster.get("web.localhost", "/").await?;
    ensure!(
        first.status().is_success(),
        "the first answer after a restart: {}",
        first.status()
    );
    Ok(())
}

/// HTTPS with TLS-ALPN-01 end to end: `paz-server --acme-challenge tls-alpn-01`, pebble
/// validating on the router's TLS port (its HTTP-01 port is closed), two public services get
/// certificates; the one created with `https_redirect: false` is served over plain HTTP while
/// the other is redirected. Needs Docker and pebble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_come_through_tls_alpn_01_and_a_service_can_keep_plain_http() -> Result<()> {
    let test = "certificates_come_through_tls_alpn_01_and_a_service_can_keep_plain_http";
    if !require_docker(test) || !paz_acme::testing::pebble_available(test) {
        return Ok(());
    }
    let _one_at_a_time = DOCKER.lock().await;
    let (router_port, tls_port) = (
        paz_acme::testing::free_port(),
        paz_acme::testing::free_port(),
    );
    let pebble =
        paz_acme::testing::Pebble::start_validating(paz_acme::testing::free_port(), tls_port)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let network = NetworkGuard(test_network("alpn"));
    let server = Server::start_with(
        &data,
        &[
            "--router-listen",
            &format!("127.0.0.1:{router_port}"),
            "--docker-network",
            &network.0,
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-root",
            pebble.api_ca.to_str().unwrap(),
            "--acme-challenge",
            "tls-alpn-01",
        ],
    )?;
    let client = server.client(&data)?;
    let mut plain = demo("plain", 1);
    plain.https_redirect = false;
    for spec in [demo("web", 1), plain] {
        let service = client.create_service(&spec).await?;
        assert_eq!(service.spec.https_redirect, spec.https_redirect);
        let first = client
            .deployments(&service.spec.name)
            .await?
            .last()
            .map(|d| d.id.clone())
            .unwrap();
        let done = client
            .wait_for_deployment(&first, Duration::from_secs(60))
            .await?;
        ensure!(done.status == DeploymentStatus::Succeeded, "{done:?}");
    }

    let root = pebble.issuing_root().await?;
    let tls: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse()?;
    for name in ["web", "plain"] {
        let host = format!("{name}.localhost");
        let https = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes())?)
            .resolve(&host, tls)
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("https://{host}:{tls_port}/");
        let deadline = Instant::now() + Duration::from_secs(60);
        let response = loop {
            match https.get(&url).send().await {
                Ok(response) => break response,
                Err(error) => {
                    ensure!(
                        Instant::now() < deadline,
                        "no HTTPS for {host} within 60 s: {error:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(response.status(), 200, "{host}");
        assert_eq!(response.text().await?.trim(), "v1");
    }

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let plain_url = format!("http://127.0.0.1:{router_port}/");
    let redirected = http
        .get(&plain_url)
        .header("host", "web.localhost")
        .send()
        .await?;
    assert_eq!(redirected.status(), 308);
    let served = http
        .get(&plain_url)
        .header("host", "plain.localhost")
        .send()
        .await?;
    assert_eq!(served.status(), 200, "plain opted out of the redirect");
    assert_eq!(served.text().await?.trim(), "v1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_a_failing_release_and_a_rollback_through_haproxy_drop_no_request() -> Result<()> {
    let test = "deploys_a_failing_release_and_a_rollback_through_haproxy_drop_no_request";
    if !crate::support::require_haproxy(test) {
        return Ok(());
    }
    let Some((cluster, _one_at_a_time)) =
        Cluster::begin_with(test, "haproxy", &["--proxy", "haproxy"]).await?
    else {
        return Ok(());
    };
    let mut spec = demo("web", 2);
    spec.domains.push("www.shop.example".into());
    spec.deploy.health_timeout = HumanDuration::from_secs(3);
    cluster.create(&spec).await?;
    cluster.wait_containers("web", &[1, 1]).await?;
    let router = cluster.router();
    let load = Load::start(&router, "web.localhost", "/", 4);
    let custom = Load::start(&router, "www.shop.example", "/", 2);
    // A rolling deploy to v2.
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    cluster
        .wait_deployment(&deployment.id, DeploymentStatus::Succeeded)
        .await?;
    cluster.wait_containers("web", &[2, 2]).await?;
    // A release that never gets healthy: it fails, v2 keeps serving.
    let mut bad = cluster.client.service("web").await?.spec;
    bad.env.insert("FAIL_HEALTH".into(), "1".into());
    cluster.client.update_service("web", &bad, None).await?;
    let failed = cluster.wait_latest("web", DeploymentStatus::Failed).await?;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("health check"),
        "{failed:?}"
    );
    cluster.wait_containers("web", &[2, 2]).await?;
    // A rollback to v1.
    let back = cluster.client.rollback("web", Some(1)).await?;
    let done = cluster
        .wait_deployment(&back.id, DeploymentStatus::Succeeded)
        .await?;
    assert_eq!(done.release, 1);
    cluster.wait_containers("web", &[1, 1]).await?;
    assert_no_failures(
        load,
        "through HAProxy: deploy v2, a failing release, rollback to v1",
    )
    .await;
    assert_no_failures(custom, "through HAProxy, on a custom domain").await;
    let body = cluster.get("web.localhost", "/").await?.text().await?;
    assert_eq!(body.trim(), "v1");
    // `paz status` shows HAProxy's health.
    let shown = crate::support::paz(cluster.server(), &cluster.data, &["status"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains("proxy: haproxy 2.") && text.contains("running"),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let health = cluster.client.health().await?;
    let proxy = health.proxy.expect("the health shows the proxy");
    assert!(proxy.running && proxy.restarts == 0, "{proxy:?}");
    Ok(())
}
