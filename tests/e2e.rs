//! End to end: the real `paz-server` and `paz` binaries, the embedded store on disk.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test.sh`
//! does it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

fn bin(name: &str) -> PathBuf {
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

struct Server {
    child: Child,
    url: String,
    stdout: Vec<String>,
}

impl Server {
    fn start(data_dir: &Path) -> Result<Server> {
        let mut child = Command::new(bin("paz-server"))
            .args(["--api-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("PAZ_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("paz-server listening on ") {
                        let url = url.to_owned();
                        seen.push(line);
                        // Keep draining stdout so the server never blocks on a full pipe.
                        std::thread::spawn(move || while lines_rx.recv().is_ok() {});
                        return Ok(Server {
                            child,
                            url,
                            stdout: seen,
                        });
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
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) -> Result<Duration> {
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
                started.elapsed() < Duration::from_secs(10),
                "paz-server did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn paz(server: &Server, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("paz"))
        .args(args)
        .env("PAZ_SERVER", &server.url)
        .env("PAZ_DATA_DIR", data_dir)
        .env_remove("PAZ_TOKEN")
        .env_remove("PAZ_OUTPUT")
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
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

#[test]
fn quickstart_survives_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let server = Server::start(&data)?;
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("Generated the admin token")),
        "first start prints the token: {:?}",
        server.stdout
    );
    let token = std::fs::read_to_string(data.join("admin-token"))?;

    let create = paz(
        &server,
        &data,
        &[
            "service",
            "create",
            "web",
            "--image",
            "demo:v1",
            "--instances",
            "2",
            "--port",
            "8080",
            "--public",
        ],
    );
    assert!(
        create.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&create.stderr)
    );
    let list = json_of(&paz(
        &server,
        &data,
        &["service", "list", "--output", "json"],
    ));
    assert_eq!(list[0]["spec"]["name"], "web");
    assert_eq!(list[0]["spec"]["instances"], 2);
    assert_eq!(list[0]["spec"]["public"], true);

    let bad = paz(
        &server,
        &data,
        &["service", "create", "Bad_Name", "--image", "demo:v1"],
    );
    assert_eq!(bad.status.code(), Some(1), "a rejected request exits 1");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("INVALID_NAME"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let stopped_in = server.stop()?;
    assert!(
        stopped_in < Duration::from_secs(5),
        "SIGTERM stops the server promptly ({stopped_in:?})"
    );

    let server = Server::start(&data)?;
    assert!(
        !server.stdout.iter().any(|l| l.contains("Generated")),
        "the token is generated only once"
    );
    assert_eq!(std::fs::read_to_string(data.join("admin-token"))?, token);
    let show = json_of(&paz(
        &server,
        &data,
        &["service", "show", "web", "--output", "json"],
    ));
    assert_eq!(
        show["spec"]["image"], "demo:v1",
        "the service survived the restart"
    );
    let releases = json_of(&paz(
        &server,
        &data,
        &["releases", "web", "--output", "json"],
    ));
    assert_eq!(releases.as_array().map(Vec::len), Some(1));
    server.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let server = Server::start(&data)?;
    let token = std::fs::read_to_string(data.join("admin-token"))?
        .trim()
        .to_owned();
    let client = paz::Client::new(&server.url, Some(token.clone()))?;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .create_service(&paz::ServiceSpec::new(format!("svc-{i}"), "demo:v1"))
                .await
                .map(|_| i)
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.push(task.await??);
    }
    client.deploy("svc-3", Some("demo:v2".into())).await?;
    server.signal("KILL");
    drop(server);

    let server = Server::start(&data)?;
    let client = paz::Client::new(&server.url, Some(token))?;
    let services = client.services().await?;
    assert_eq!(
        services.len(),
        acknowledged.len(),
        "every acknowledged create survived kill -9"
    );
    assert_eq!(client.service("svc-3").await?.spec.image, "demo:v2");
    assert_eq!(client.releases("svc-3").await?.len(), 2);
    Ok(())
}

#[test]
fn a_second_server_on_the_same_data_dir_fails_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let _first = Server::start(&data)?;
    let output = Command::new(bin("paz-server"))
        .args(["--api-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("PAZ_TOKEN")
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another paz-server"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_event_streams() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let server = Server::start(&data)?;
    let token = std::fs::read_to_string(data.join("admin-token"))?
        .trim()
        .to_owned();
    let client = paz::Client::new(&server.url, Some(token))?;
    let events = client.events().await?;
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut events = std::pin::pin!(events);
        while events.next().await.is_some() {}
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped_in = tokio::task::spawn_blocking(move || server.stop()).await??;
    assert!(
        stopped_in < Duration::from_secs(5),
        "an open event stream does not hold up shutdown ({stopped_in:?})"
    );
    tokio::time::timeout(Duration::from_secs(5), reader).await??;
    Ok(())
}
