//! Shared test machinery: fake machines, the Docker gate, container cleanup by label.

#![allow(dead_code)]

use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use paz_fleet::fake::{FakeFleet, FakeMachine, FakeOptions};
use paz_fleet::{FleetConfig, FleetScheduler};

/// The locally built demo image (`scripts/build-demo-image.sh paz-demo:v1`).
pub const IMAGE: &str = "paz-demo:v1";

/// Three machines on distinct loopback addresses.
pub fn machines(n: usize) -> Vec<FakeMachine> {
    (0..n)
        .map(|i| {
            FakeMachine::new(&format!("{:032x}", i + 1), &format!("127.0.0.{}", i + 2))
                .with("hostname", &format!("node-{}", i + 1))
        })
        .collect()
}

/// A fake with `machines` that does not run units.
pub async fn fake(machines: Vec<FakeMachine>, token_limit: u16) -> FakeFleet {
    FakeFleet::start(FakeOptions {
        machines,
        token_limit,
        reconcile_interval: Duration::from_millis(50),
        run_units: false,
    })
    .await
    .expect("start the fake fleet")
}

/// A cluster name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{prefix}-{:08x}", hasher.finish() as u32)
}

/// A scheduler on `fake` for `cluster`, with short timeouts.
pub async fn scheduler(fake: &FakeFleet, cluster: &str, docker: &str) -> FleetScheduler {
    FleetScheduler::connect(FleetConfig {
        endpoint: fake.endpoint().to_owned(),
        cluster: cluster.to_owned(),
        poll_interval: Duration::from_millis(200),
        start_timeout: Duration::from_secs(5),
        docker: docker.to_owned(),
        stop_grace: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..FleetConfig::default()
    })
    .await
    .expect("connect to the fake fleet")
}

/// A plain HTTP client (reqwest's rustls needs a provider even for http).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The docker binary on PATH.
fn docker_bin() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn check_docker() -> Result<String, String> {
    let docker = docker_bin().ok_or("no docker binary on PATH")?;
    let output = Command::new(&docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|e| format!("cannot run {docker}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "Docker is not reachable: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let image = Command::new(&docker)
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .output()
        .map_err(|e| format!("cannot run {docker}: {e}"))?;
    if !image.status.success() {
        return Err(format!(
            "image {IMAGE} is missing: build it with scripts/build-demo-image.sh {IMAGE}"
        ));
    }
    Ok(docker)
}

/// The gate of tests that need the real Docker Engine: the docker binary when Docker
/// answers and the demo image exists. Otherwise a panic when `CI=true`, elsewhere a loud
/// `SKIPPED` line and `None`.
pub fn require_docker() -> Option<String> {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    match CHECK.get_or_init(check_docker) {
        Ok(docker) => Some(docker.clone()),
        Err(reason) if in_ci() => panic!("Docker tests cannot run (CI=true): {reason}"),
        Err(reason) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("a paz-fleet test")
                .to_owned();
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: {test}: {reason} (set CI=true to make this a failure) ***"
            );
            None
        }
    }
}

/// Removes, when dropped (even on panic), every container labelled `paz.cluster=<cluster>`.
pub struct ContainerGuard {
    pub docker: String,
    pub cluster: String,
}

impl ContainerGuard {
    pub fn remove_containers(&self) {
        let filter = format!("label=paz.cluster={}", self.cluster);
        let Ok(output) = Command::new(&self.docker)
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new(&self.docker)
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }

    /// How many containers of the cluster run.
    pub fn running(&self) -> usize {
        let filter = format!("label=paz.cluster={}", self.cluster);
        Command::new(&self.docker)
            .args(["ps", "-q", "--filter", &filter])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        self.remove_containers();
    }
}

/// `GET http://<address><path>`'s body, retried until `deadline`.
pub async fn get_until(address: &str, path: &str, within: Duration) -> Result<String, String> {
    let client = http();
    let began = Instant::now();
    let mut last = String::new();
    while began.elapsed() < within {
        match client.get(format!("http://{address}{path}")).send().await {
            Ok(response) if response.status().is_success() => {
                return response.text().await.map_err(|e| e.to_string());
            }
            Ok(response) => last = format!("status {}", response.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "GET http://{address}{path} did not answer within {within:?}: {last}"
    ))
}

/// Polls `check` every 50 ms until it returns `Some`, at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let began = Instant::now();
    while began.elapsed() < within {
        if let Some(value) = check().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
