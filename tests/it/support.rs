//! Shared harness of the end-to-end tests: starts the real `paz-server` binary and runs the
//! real `paz` CLI against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use paz::core::{HealthCheck, HumanDuration, PortSpec, Protocol, ServiceSpec};
use paz::{DeploymentStatus, Service};
use serde_json::Value;

/// A binary of the workspace, built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running `paz-server`.
pub struct Server {
    child: Child,
    /// The API's base URL.
    pub url: String,
    /// The router's address, when it runs one.
    pub router: Option<String>,
    /// What it printed on stdout before it was ready.
    pub stdout: Vec<String>,
}

impl Server {
    /// Starts a server without a scheduler (API only) on a data dir.
    pub fn start(data_dir: &Path) -> Result<Server> {
        Self::start_with(data_dir, &["--scheduler", "none"])
    }

    /// Starts a server with extra arguments and waits until its API (and router) listen.
    pub fn start_with(data_dir: &Path, args: &[&str]) -> Result<Server> {
        Self::start_binary(&bin("paz-server"), data_dir, args)
    }

    /// [`Server::start_with`] from the `paz-server` binary at `binary`.
    pub fn start_binary(binary: &Path, data_dir: &Path, args: &[&str]) -> Result<Server> {
        Self::start_command(Command::new(binary), data_dir, args)
    }

    /// [`Server::start_with`] inside the network namespace `netns` (`nsenter --net`, which
    /// execs paz-server: the pid stays the server's).
    pub fn start_in_netns(netns: &str, data_dir: &Path, args: &[&str]) -> Result<Server> {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{netns}"))
            .arg(bin("paz-server"));
        Self::start_command(command, data_dir, args)
    }

    fn start_command(mut command: Command, data_dir: &Path, args: &[&str]) -> Result<Server> {
        let mut child = command
            .args(["--api-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env_remove("PAZ_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("PAZ_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("PAZ_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .spawn()
            .context("start paz-server")?;
        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wants_router = !args.windows(2).any(|w| w == ["--scheduler", "none"]);
        // A router-only process serves no API.
        let wants_api = !args.windows(2).any(|w| w == ["--role", "router"]);
        let mut seen = Vec::new();
        let (mut url, mut router) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while (wants_api && url.is_none()) || (wants_router && router.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("paz-server listening on ") {
                        url = Some(rest.to_owned());
                    }
                    if let Some(rest) = line.strip_prefix("paz-server router listening on http://")
                    {
                        router = Some(rest.to_owned());
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let output = child.wait_with_output()?;
                    bail!(
                        "paz-server did not start: {seen:?} {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || while lines_rx.recv().is_ok() {});
        if let Some(mut stderr) = child.stderr.take() {
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        }
        Ok(Server {
            child,
            url: url.unwrap_or_default(),
            router,
            stdout: seen,
        })
    }

    /// Sends a signal (`TERM`, `KILL`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for a clean exit; returns how long it took.
    pub fn stop(mut self) -> Result<Duration> {
        let started = Instant::now();
        self.signal("TERM");
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "paz-server exited with {status} after SIGTERM"
                );
                return Ok(started.elapsed());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "paz-server did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `bound`) for the server to exit by itself; fails unless it exits
    /// with success.
    pub fn wait_exit(mut self, bound: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "paz-server exited with {status}");
                return Ok(started.elapsed());
            }
            ensure!(
                started.elapsed() < bound,
                "paz-server still runs after {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// An SDK client with the token of `data_dir`.
    pub fn client(&self, data_dir: &Path) -> Result<paz::Client> {
        let token = std::fs::read_to_string(data_dir.join("admin-token"))?
            .trim()
            .to_owned();
        Ok(paz::Client::new(&self.url, Some(token))?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `paz` CLI against a server.
pub fn paz(server: &Server, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("paz"))
        .args(args)
        .env("PAZ_SERVER", &server.url)
        .env("PAZ_DATA_DIR", data_dir)
        .env_remove("PAZ_TOKEN")
        .env_remove("PAZ_OUTPUT")
        .output()
        .unwrap()
}

/// The JSON a successful `paz … --output json` printed.
pub fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "paz failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Whether Docker and the demo image are usable. With `CI=true` a missing engine fails the
/// Whether HAProxy can be used; `CI=true` makes its absence a failure.
pub fn require_haproxy(test: &str) -> bool {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: HAProxy is not installed (apt-get install haproxy); CI=true needs it"
    );
    eprintln!("SKIPPED {test}: HAProxy is not installed (apt-get install haproxy)");
    false
}

/// test; locally the test is skipped with a loud message.
pub fn require_docker(test: &str) -> bool {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                return Err(format!(
                    "the Docker daemon does not answer: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Err(error) => return Err(format!("the docker CLI cannot run: {error}")),
        }
        let has_image = |tag: &str| {
            Command::new("docker")
                .args(["image", "inspect", tag])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !(has_image("paz-demo:v1") && has_image("paz-demo:v2") && has_image("paz-demo:v3")) {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-demo-image.sh");
            let status = Command::new("bash")
                .arg(script)
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() || !has_image("paz-demo:v1") {
                return Err(
                    "the demo image paz-demo:v1 could not be built (scripts/build-demo-image.sh)"
                        .into(),
                );
            }
        }
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs Docker: {reason}")
        }
        Err(reason) => {
            eprintln!("\n*** SKIPPED {test}: needs Docker: {reason} ***\n");
            false
        }
    }
}

/// A unique Docker network name for one test, removed by [`cleanup_network`].
pub fn test_network(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("paz-e2e-{test}-{}-{nanos:x}", std::process::id())
}

/// Removes every container Paz made on a test network, then the network.
pub fn cleanup_network(network: &str) {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("network={network}")])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
    let _ = Command::new("docker")
        .args(["network", "rm", network])
        .output();
}

/// The `paz.release` labels of the containers of a service on a network, sorted.
pub fn container_releases(network: &str, service: &str) -> Vec<u64> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("network={network}"),
            "--filter",
            &format!("label=paz.service={service}"),
        ])
        .args(["--format", "{{.Label \"paz.release\"}}"])
        .output()
        .unwrap();
    let mut releases: Vec<u64> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|r| r.parse().ok())
        .collect();
    releases.sort_unstable();
    releases
}

// ---------------------------------------------------------------------------------------
// A server with Docker on a network of its own, and load through its router (shared by the
// Docker end-to-end tests).

/// Docker tests run one at a time: they share two cores with the engine and the builds.
pub(crate) static DOCKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server with Docker on its own network, removed at the end.
pub(crate) struct Cluster {
    pub(crate) server: Option<Server>,
    pub(crate) client: paz::Client,
    pub(crate) network: String,
    pub(crate) data: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster for `test`, one Docker test at a time; `None` when Docker is missing
    /// outside CI (the test is skipped loudly; with `CI=true` it fails instead).
    pub(crate) async fn begin(
        test: &str,
        name: &str,
    ) -> Result<Option<(Cluster, tokio::sync::MutexGuard<'static, ()>)>> {
        Self::begin_with(test, name, &[]).await
    }

    /// [`Cluster::begin`] with extra `paz-server` arguments.
    pub(crate) async fn begin_with(
        test: &str,
        name: &str,
        extra: &[&str],
    ) -> Result<Option<(Cluster, tokio::sync::MutexGuard<'static, ()>)>> {
        if !require_docker(test) {
            return Ok(None);
        }
        let one_at_a_time = DOCKER.lock().await;
        Ok(Some((Cluster::start_with(name, extra)?, one_at_a_time)))
    }

    /// `GET path` through the router with this `Host` header.
    pub(crate) async fn get(&self, host: &str, path: &str) -> reqwest::Result<reqwest::Response> {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.router()))
            .header("host", host)
            .send()
            .await
    }

    /// Starts a server on a network of its own, with extra `paz-server` arguments.
    pub(crate) fn start_with(test: &str, extra: &[&str]) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("paz-data");
        let network = test_network(test);
        let mut args = vec![
            "--router-listen",
            "127.0.0.1:0",
            "--docker-network",
            &network,
        ];
        args.extend_from_slice(extra);
        let server = Server::start_with(&data, &args)?;
        let client = server.client(&data)?;
        Ok(Cluster {
            server: Some(server),
            client,
            network,
            data,
            _dir: dir,
        })
    }

    pub(crate) fn server(&self) -> &Server {
        self.server.as_ref().expect("the server runs")
    }

    pub(crate) fn router(&self) -> String {
        self.server()
            .router
            .clone()
            .expect("the server runs a router")
    }

    /// Kills the server with SIGKILL and starts it again on the same data and network.
    pub(crate) fn restart_after_kill(&mut self) -> Result<()> {
        self.server.take().expect("the server runs").kill();
        let server = Server::start_with(
            &self.data,
            &[
                "--router-listen",
                "127.0.0.1:0",
                "--docker-network",
                &self.network,
            ],
        )?;
        self.client = server.client(&self.data)?;
        self.server = Some(server);
        Ok(())
    }

    pub(crate) async fn create(&self, spec: &ServiceSpec) -> Result<Service> {
        let service = self.client.create_service(spec).await?;
        self.wait_latest(&spec.name, DeploymentStatus::Succeeded)
            .await?;
        Ok(service)
    }

    /// Waits until the service's newest deployment ends, and checks how.
    pub(crate) async fn wait_latest(
        &self,
        service: &str,
        expected: DeploymentStatus,
    ) -> Result<paz::Deployment> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let history = self.client.deployments(service).await?;
            let latest = history.last().expect("a service has deployments").clone();
            if latest.status.is_final() {
                ensure!(
                    latest.status == expected,
                    "deployment {} ended {} (expected {expected}): {:?}",
                    latest.id,
                    latest.status,
                    latest.error
                );
                return Ok(latest);
            }
            ensure!(
                Instant::now() < deadline,
                "deployment {} still {} after 60 s: {:?}",
                latest.id,
                latest.status,
                latest.steps
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn wait_deployment(
        &self,
        id: &str,
        expected: DeploymentStatus,
    ) -> Result<paz::Deployment> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let deployment = self.client.deployment(id).await?;
            if deployment.status.is_final() {
                ensure!(
                    deployment.status == expected,
                    "deployment {id} ended {} (expected {expected}): {:?}",
                    deployment.status,
                    deployment.error
                );
                return Ok(deployment);
            }
            ensure!(
                Instant::now() < deadline,
                "deployment {id} still {} after 60 s",
                deployment.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the service's containers are exactly `releases` (sorted).
    pub(crate) async fn wait_containers(&self, service: &str, releases: &[u64]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = container_releases(&self.network, service);
            if seen == releases {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "containers of {service}: {seen:?}, expected {releases:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
        cleanup_network(&self.network);
    }
}

pub(crate) fn demo(name: &str, instances: u32) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "paz-demo:v1");
    spec.instances = instances;
    spec.public = true;
    spec.ports.push(PortSpec {
        port: 8080,
        protocol: Protocol::Http,
    });
    spec.health = Some(HealthCheck {
        path: "/health".into(),
        ..HealthCheck::default()
    });
    spec.deploy.health_timeout = HumanDuration::from_secs(10);
    spec.deploy.drain_timeout = HumanDuration::from_secs(10);
    spec
}

/// Clients hammering one path through the router: half reuse connections, half open a new
/// connection per request. Every non-2xx answer and every transport error is a failure.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    pub(crate) fn start(router: &str, host: &str, path: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let url = format!("http://{router}{path}");
        let tasks = (0..clients)
            .map(|n| {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(if n % 2 == 0 { 8 } else { 0 })
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let (stop, ok, url, host) =
                    (stop.clone(), ok.clone(), url.clone(), host.to_owned());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).header("host", &host).send().await {
                            Ok(response) if response.status().is_success() => {
                                let _ = response.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(response) => {
                                let status = response.status();
                                failures.push(format!(
                                    "{status}: {}",
                                    response.text().await.unwrap_or_default().trim()
                                ));
                            }
                            Err(error) => failures.push(format!("transport error: {error:?}")),
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    /// Stops the clients; returns the successes and the failures.
    pub(crate) async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

pub(crate) async fn assert_no_failures(load: Load, what: &str) {
    let (ok, failures) = load.finish().await;
    assert!(ok > 50, "{what}: only {ok} requests succeeded");
    assert!(
        failures.is_empty(),
        "{what}: {} of {} requests failed, first: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    eprintln!("{what}: {ok} requests, 0 failed");
}
