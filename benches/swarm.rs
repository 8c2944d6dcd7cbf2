//! Paz on a 3-node Docker Swarm (issue 12), beside Swarm's own update in the same run, on
//! the same Swarm: three engines in network namespaces (`paz_docker::testing::TestHosts`).
//!
//! - **a 3-instance rolling deploy**: Paz (`paz deploy`, health-gated on `GET /health` every
//!   1 s, one new instance at a time, drained before it stops) from the API call until the
//!   deployment succeeded, against `docker service update --update-order start-first
//!   --image …` of a 3-replica Swarm service of the same image with the same check (exec
//!   `/demo-app check` every 1 s) and Swarm's defaults otherwise, from the call until its
//!   `UpdateStatus` is `completed`. Rounds alternate v1 → v2 → v1 and interleave Paz and
//!   Swarm; medians of `PAZ_BENCH_ROUNDS` (default 5) each;
//! - **a node lost**: a worker's engine stopped, until the service has its three instances
//!   healthy again without it (Swarm's dispatcher heartbeat 1 s).
//!
//! `cargo build --release -p paz-server && cargo bench --bench swarm` (root, Docker, and the
//! demo images `paz-demo:v1`/`v2` from `scripts/build-demo-image.sh`).

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use paz::core::{HealthCheck, HumanDuration, InstanceState, PortSpec, Protocol, ServiceSpec};
use paz_docker::testing::{TestHosts, run};

const TOKEN: &str = "paz-bench-admin-token-0123456789";

fn rounds() -> usize {
    std::env::var("PAZ_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

struct ServerProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn paz_server_binary() -> PathBuf {
    // target/release/deps/swarm-… → target/release/paz-server
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("paz-server")
}

fn start_server(swarm_host: &str) -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(paz_server_binary())
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
        ])
        .args(["--scheduler", "swarm", "--swarm-host", swarm_host])
        .args(["--token", TOKEN])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paz-server (cargo build --release -p paz-server first)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("paz-server exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("paz-server listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    ServerProcess {
        child,
        url,
        _dir: dir,
    }
}

fn demo(name: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "paz-demo:v1");
    spec.instances = 3;
    spec.public = true;
    spec.ports.push(PortSpec {
        port: 8080,
        protocol: Protocol::Http,
    });
    spec.health = Some(HealthCheck {
        path: "/health".into(),
        ..HealthCheck::default()
    });
    spec.deploy.health_timeout = HumanDuration::from_secs(30);
    spec
}

async fn wait_succeeded(client: &paz::Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let deployment = client.deployment(id).await.unwrap();
        if deployment.status.is_final() {
            assert_eq!(
                deployment.status,
                paz::DeploymentStatus::Succeeded,
                "{deployment:?}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "deployment {id} never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until the service has three healthy instances, none on `not_on`.
async fn wait_three_healthy(client: &paz::Client, not_on: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let instances = client.instances("web").await.unwrap();
        let healthy = instances
            .iter()
            .filter(|i| i.state == InstanceState::Healthy)
            .filter(|i| not_on.is_none_or(|h| i.host != h))
            .count();
        if healthy == 3 && instances.len() == 3 {
            return;
        }
        assert!(Instant::now() < deadline, "not 3 healthy: {instances:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates the Swarm reference service through the Engine API (the CLI's `--health-cmd` is
/// a shell command, and the demo image has no shell).
fn create_swarm_service(socket: &str) {
    let spec = serde_json::json!({
        "Name": "bench-swarm",
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "paz-demo:v1",
                "HealthCheck": {
                    "Test": ["CMD", "/demo-app", "check"],
                    "Interval": 1_000_000_000u64,
                    "Timeout": 2_000_000_000u64,
                    "Retries": 3
                }
            }
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "EndpointSpec": {"Ports": [{"TargetPort": 8080, "PublishMode": "host"}]}
    });
    run(
        "curl",
        &[
            "-sf",
            "--unix-socket",
            socket,
            "-H",
            "Content-Type: application/json",
            "-d",
            &spec.to_string(),
            "http://localhost/services/create",
        ],
    )
    .expect("create the Swarm reference service");
}

fn swarm_running_healthy(hosts: &TestHosts) -> usize {
    hosts
        .docker(
            0,
            &[
                "service",
                "ps",
                "bench-swarm",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ],
        )
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Running"))
        .count()
}

/// `docker service update --update-order start-first --image <image>` until completed.
fn swarm_update(hosts: &TestHosts, image: &str) -> Duration {
    let started = Instant::now();
    hosts
        .docker(
            0,
            &[
                "service",
                "update",
                "--detach",
                "--update-order",
                "start-first",
                "--image",
                image,
                "bench-swarm",
            ],
        )
        .expect("docker service update");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let state = hosts
            .docker(
                0,
                &[
                    "service",
                    "inspect",
                    "--format",
                    "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                    "bench-swarm",
                ],
            )
            .unwrap_or_default();
        if state == "completed" {
            return started.elapsed();
        }
        assert!(
            !state.contains("paused") && !state.contains("rollback"),
            "Swarm's update: {state}"
        );
        assert!(Instant::now() < deadline, "Swarm's update never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> ExitCode {
    if !paz_server_binary().exists() {
        eprintln!(
            "error: {} is missing: cargo build --release -p paz-server",
            paz_server_binary().display()
        );
        return ExitCode::FAILURE;
    }
    let mut hosts = match TestHosts::create(3) {
        Ok(hosts) => hosts,
        Err(reason) => {
            eprintln!("error: cannot make 3 hosts in network namespaces: {reason}");
            return ExitCode::FAILURE;
        }
    };
    hosts
        .load_images(&["paz-demo:v1", "paz-demo:v2"])
        .expect("load the demo images");
    hosts.swarm(Duration::from_secs(1)).expect("make the Swarm");
    let manager = hosts.hosts[0].docker_host();
    let socket = hosts.hosts[0].socket.display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = start_server(&manager);
    let client = paz::Client::new(&server.url, Some(TOKEN.into())).unwrap();

    runtime.block_on(async {
        client.create_service(&demo("web")).await.unwrap();
        wait_three_healthy(&client, None).await;
    });
    create_swarm_service(&socket);
    let deadline = Instant::now() + Duration::from_secs(120);
    while swarm_running_healthy(&hosts) < 3 {
        assert!(Instant::now() < deadline, "the Swarm service never ran");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (mut paz_times, mut swarm_times) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        let image = if round % 2 == 0 {
            "paz-demo:v2"
        } else {
            "paz-demo:v1"
        };
        let took = runtime.block_on(async {
            let started = Instant::now();
            let deployment = client.deploy("web", Some(image.into())).await.unwrap();
            wait_succeeded(&client, &deployment.id).await;
            started.elapsed()
        });
        paz_times.push(took);
        let swarm = swarm_update(&hosts, image);
        swarm_times.push(swarm);
        println!(
            "round {round}: Paz {}  Swarm start-first {}",
            secs(took),
            secs(swarm)
        );
    }
    let (paz_median, swarm_median) = (median(&mut paz_times), median(&mut swarm_times));
    println!(
        "3-instance rolling deploy over 3 nodes: Paz median {}, Swarm median {}: {:.2}× Swarm's time",
        secs(paz_median),
        secs(swarm_median),
        paz_median.as_secs_f64() / swarm_median.as_secs_f64()
    );

    // A worker's engine lost: until Paz's three instances are healthy without it.
    let _ = hosts.docker(0, &["service", "rm", "bench-swarm"]);
    let lost = runtime.block_on(async {
        let instances = client.instances("web").await.unwrap();
        let worker = hosts.hosts[2].address.to_string();
        instances
            .iter()
            .find(|i| {
                i.address
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&format!("{worker}:")))
            })
            .map(|i| i.host.clone())
    });
    match lost {
        Some(lost) => {
            let started = Instant::now();
            hosts.stop_engine(2).expect("stop the engine");
            runtime.block_on(wait_three_healthy(&client, Some(&lost)));
            println!(
                "a node lost → its instance healthy on another node: {}",
                secs(started.elapsed())
            );
        }
        None => println!("no instance on h3 to lose (spread missed it): loss not measured"),
    }
    runtime.block_on(async {
        let _ = client.delete_service("web", None).await;
    });
    drop(server);
    drop(hosts);
    ExitCode::SUCCESS
}
