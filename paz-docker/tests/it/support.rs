//! Shared test machinery: the Docker gate, per-test networks and cleanup guards, HTTP GET.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use paz_core::scheduler::InstanceSpec;
use paz_core::service::{PortSpec, Protocol, Resources};
use paz_docker::{DockerConfig, DockerScheduler};

/// Held by the contract runs (Docker and Swarm): the contract's fixed service names
/// (`contract-a`…) would otherwise let one run's cleanup remove the other's containers.
pub static CONTRACT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The locally built demo image every test runs.
pub const IMAGE: &str = "paz-demo:v1";
/// The tags `scripts/build-demo-image.sh` is asked to build.
const DEMO_TAGS: [&str; 3] = ["paz-demo:v1", "paz-demo:v2", "paz-demo:v3"];

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs `docker args…`; its trimmed stdout, or why it failed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn image_present(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok()
}

/// Checks once per test binary that Docker answers and the demo image exists, building the
/// image with `scripts/build-demo-image.sh` (once) when it is missing.
fn check_docker() -> Result<(), String> {
    let version = docker(&["version", "--format", "{{.Server.Version}}"])
        .map_err(|e| format!("Docker is not reachable: {e}"))?;
    if !image_present(IMAGE) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-demo-image.sh");
        eprintln!(
            "[paz-docker tests] image {IMAGE} missing: running {}",
            script.display()
        );
        let status = Command::new("bash")
            .arg(&script)
            .args(DEMO_TAGS)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !status.success() {
            return Err(format!(
                "image {IMAGE} is missing and {} failed ({status})",
                script.display()
            ));
        }
        if !image_present(IMAGE) {
            return Err(format!(
                "image {IMAGE} is still missing after {}",
                script.display()
            ));
        }
    }
    eprintln!("[paz-docker tests] Docker {version}, image {IMAGE} present");
    Ok(())
}

/// The gate of every test that needs the real engine: `true` when Docker answers and the
/// demo image is there. Otherwise it panics when `CI=true` (tests never pass by skipping in
/// CI) and elsewhere prints a loud `SKIPPED` line and returns `false`.
///
/// The line goes straight to the process's stderr: the test harness captures `eprintln!`
/// of passing tests, and a skip must not be silent.
pub fn require_docker() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    match CHECK.get_or_init(check_docker) {
        Ok(()) => true,
        Err(reason) if in_ci() => panic!("Docker tests cannot run (CI=true): {reason}"),
        Err(reason) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("a paz-docker test")
                .to_owned();
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: {test}: {reason} (set CI=true to make this a failure) ***"
            );
            false
        }
    }
}

/// Six random base-36 characters, different on every call.
pub fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let mut n = hasher.finish();
    (0..6)
        .map(|_| {
            let c = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// Removes, when dropped (even on panic), every container labelled with one of its services,
/// its volumes and paths, then its network.
pub struct Guard {
    services: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
    network: String,
}

impl Guard {
    /// Cleans up `network` (and what is added later).
    pub fn new(network: &str) -> Self {
        Guard {
            services: Mutex::new(Vec::new()),
            volumes: Mutex::new(Vec::new()),
            network: network.to_owned(),
        }
    }

    /// Also removes the containers of `service`.
    pub fn service(&self, service: &str) {
        self.services.lock().unwrap().push(service.to_owned());
    }

    /// Also removes the named volume.
    pub fn volume(&self, volume: &str) {
        self.volumes.lock().unwrap().push(volume.to_owned());
    }

    /// Removes every container of the registered services now.
    pub fn remove_containers(&self) {
        for service in self.services.lock().unwrap().iter() {
            let filter = format!("label=paz.service={service}");
            let ids = docker(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-fv"];
                args.extend(ids);
                if let Err(e) = docker(&args) {
                    eprintln!("[paz-docker tests] cleanup: {e}");
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.remove_containers();
        for volume in self.volumes.lock().unwrap().iter() {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
        if docker(&["network", "inspect", &self.network]).is_ok()
            && let Err(e) = docker(&["network", "rm", &self.network])
        {
            eprintln!("[paz-docker tests] cleanup: {e}");
        }
    }
}

/// One test's world: a scheduler on a network of its own, and the cleanup guard.
pub struct TestEnv {
    /// The scheduler under test.
    pub scheduler: DockerScheduler,
    /// The test's network name.
    pub network: String,
    /// A suffix unique to this test run.
    pub suffix: String,
    /// Cleans up when the test ends.
    pub guard: Guard,
}

impl TestEnv {
    /// Connects a scheduler on the network `paz-test-<name>-<random>`; `None` when the test
    /// is skipped (see [`require_docker`]).
    pub async fn new(name: &str) -> Option<TestEnv> {
        Self::with_config(name, DockerConfig::default()).await
    }

    /// Same, with settings (the network name is replaced).
    pub async fn with_config(name: &str, mut config: DockerConfig) -> Option<TestEnv> {
        if !require_docker() {
            return None;
        }
        let suffix = random_suffix();
        let network = format!("paz-test-{name}-{suffix}");
        let guard = Guard::new(&network);
        config.network = network.clone();
        let scheduler = DockerScheduler::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connect to Docker: {e}"));
        Some(TestEnv {
            scheduler,
            network,
            suffix,
            guard,
        })
    }

    /// A service name unique to this run (`<base>-<suffix>`), cleaned up by the guard.
    pub fn service(&self, base: &str) -> String {
        let service = format!("{base}-{}", self.suffix);
        self.guard.service(&service);
        service
    }

    /// A spec of the demo image for `service`, slot `slot`, with env `env`.
    pub fn spec(&self, service: &str, slot: u32, env: &[(&str, &str)]) -> InstanceSpec {
        InstanceSpec {
            service: service.to_owned(),
            release: 1,
            slot,
            image: IMAGE.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            command: Vec::new(),
            ports: vec![PortSpec {
                port: 8080,
                protocol: Protocol::Http,
            }],
            volumes: Vec::new(),
            resources: Resources::default(),
            constraints: Vec::new(),
            replicas: 1,
            epoch: Some("test".to_owned()),
            health_port: None,
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// `GET path` on `addr` (HTTP/1.1, `Connection: close`), with a read timeout.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<Response> {
    let socket: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad address {addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// Retries `GET path` until it answers (the app may still be binding its port).
pub fn wait_http(addr: &str, path: &str) -> Response {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http_get(addr, path, Duration::from_secs(5)) {
            Ok(response) => return response,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{addr}{path} never answered: {e}"),
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
