//! End to end: the real `paz-server` and `paz` binaries, the embedded store on disk.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test.sh`
//! does it).

use std::process::Command;
use std::time::Duration;

use crate::support::{Server, bin, json_of, paz};
use anyhow::Result;

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
        "first start says where the token is: {:?}",
        server.stdout
    );
    let token = std::fs::read_to_string(data.join("admin-token"))?;
    assert!(
        !server.stdout.iter().any(|l| l.contains(token.trim())),
        "the token itself is never printed (output ends up in logs): {:?}",
        server.stdout
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&data)?, 0o700, "the data dir is the owner's only");
        assert_eq!(mode(&data.join("paz.redb"))?, 0o600, "so is the store");
        assert_eq!(mode(&data.join("admin-token"))?, 0o600, "and the token");
        assert_eq!(
            mode(&data.join("secret-key"))?,
            0o600,
            "and the secrets key"
        );
    }

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
    let client = server.client(&data)?;
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
    let client = server.client(&data)?;
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
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--scheduler",
            "none",
            "--data-dir",
        ])
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
    let client = server.client(&data)?;
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

#[test]
fn an_unreachable_docker_daemon_is_a_clear_startup_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(bin("paz-server"))
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("paz-data"))
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-docker.sock", dir.path().display()),
        )
        .env_remove("PAZ_TOKEN")
        .output()?;
    assert!(
        !output.status.success(),
        "paz-server must not start without its scheduler"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Docker daemon is not reachable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--scheduler none"),
        "the error says how to run without Docker: {stderr}"
    );
    Ok(())
}

/// Defect: memory grew without bound: every spec change kept a full release forever and the
/// watch history kept 10,000 full values (60 updates of a 1 MB env: RSS 49 → 301 MiB). Over
/// 1,000 updates of a 128 KiB environment (128 MiB written in all), RSS now levels off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_a_thousand_spec_updates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let server = Server::start(&data)?;
    let client = server.client(&data)?;
    let mut spec = paz::ServiceSpec::new("web", "demo:v1");
    spec.env.insert("BIG".into(), "x".repeat(128 * 1024));
    client.create_service(&spec).await?;
    let started = std::time::Instant::now();
    let mut rss = Vec::new();
    for i in 1..=1000u32 {
        let value = format!("{i:06}{}", "y".repeat(128 * 1024 - 6));
        client
            .patch_service("web", &serde_json::json!({"env": {"BIG": value}}), None)
            .await?;
        if i % 100 == 0 {
            rss.push(server.rss_kib());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(240),
            "1,000 updates took over 4 minutes (at {i})"
        );
    }
    eprintln!(
        "RSS every 100 updates (MiB): {:?} in {:?}",
        rss.iter().map(|k| k / 1024).collect::<Vec<_>>(),
        started.elapsed()
    );
    let releases = client.releases("web").await?;
    assert_eq!(releases.len(), 20, "the newest 20 releases are kept");
    assert_eq!(releases.last().map(|r| r.version), Some(1001));
    // Levelled off after the first hundred: the last 900 updates add less than 24 MiB
    // (unbounded, they would add over 200 MiB of releases alone).
    let (first, last) = (rss[0], *rss.last().unwrap());
    assert!(
        last < first + 24 * 1024,
        "RSS grew from {} MiB to {} MiB over 900 updates: {rss:?}",
        first / 1024,
        last / 1024
    );
    Ok(())
}

/// `/metrics` needs a token with the `read` scope on the API, and none on a listener of its
/// own (`--metrics-listen`, for a scraper on a private network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_except_on_their_own_listener() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let server = Server::start_with(
        &data,
        &["--scheduler", "none", "--metrics-listen", "127.0.0.1:0"],
    )?;
    let metrics = server
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("paz-server metrics listening on "))
        .expect("the metrics address is printed")
        .to_owned();
    // reqwest is built without a crypto provider (rustls with ring is the workspace's one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let open = reqwest::get(&metrics).await?;
    assert_eq!(open.status(), 200, "no token on the metrics listener");
    let api = reqwest::get(format!("{}/metrics", server.url)).await?;
    assert_eq!(api.status(), 401, "the API's /metrics needs a token");
    let token = std::fs::read_to_string(data.join("admin-token"))?;
    let other = reqwest::get(metrics.replace("/metrics", "/v1/services")).await?;
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );
    let authorized = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(token.trim())
        .send()
        .await?;
    assert_eq!(authorized.status(), 200);
    Ok(())
}

/// Lines a child process prints, read on a thread.
fn lines_of(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most `bound`) for a line containing `wanted`.
fn line_within(
    lines: &std::sync::mpsc::Receiver<String>,
    wanted: &str,
    bound: Duration,
) -> Result<String> {
    let deadline = std::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return Ok(line),
            Ok(_) => {}
            Err(_) => anyhow::bail!("no line with {wanted:?} within {bound:?}"),
        }
    }
}

/// [`line_within`] 15 s.
fn line_with(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> Result<String> {
    line_within(lines, wanted, Duration::from_secs(15))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paz_events_follows_the_server_and_survives_an_upgrade() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("paz-data");
    let server = Server::start(&data)?;
    let client = server.client(&data)?;
    let mut follower = Command::new(bin("paz"))
        .args(["events", "--output", "json"])
        .env("PAZ_SERVER", &server.url)
        .env("PAZ_DATA_DIR", &data)
        .env_remove("PAZ_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = lines_of(follower.stdout.take().expect("piped"));
    let stderr = lines_of(follower.stderr.take().expect("piped"));
    // The CLI subscribes in the background: create until its event shows up.
    let mut created = serde_json::Value::Null;
    for attempt in 0..50 {
        let name = format!("web{attempt}");
        client
            .create_service(&paz::ServiceSpec::new(&name, "demo:v1"))
            .await?;
        let wanted = format!("\"service\":\"{name}\"");
        if let Ok(line) = line_within(&stdout, &wanted, Duration::from_millis(300)) {
            created = serde_json::from_str(&line)?;
            break;
        }
    }
    assert_eq!(created["type"], "service_created", "{created}");
    assert!(created["id"].as_str().is_some_and(|id| id.contains('-')));

    // Upgrade the server: the stream ends; the CLI resumes on the new process, which
    // cannot replay the old one's events and says so.
    let upgraded = tokio::task::spawn_blocking({
        let data = data.clone();
        move || Server::start_with(&data, &["--scheduler", "none", "--upgrade"])
    })
    .await??;
    tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(30))).await??;
    let warning =
        tokio::task::spawn_blocking(move || line_with(&stderr, "events were missed")).await??;
    assert!(warning.contains("warning"), "{warning}");
    let client = upgraded.client(&data)?;
    client
        .create_service(&paz::ServiceSpec::new("after", "demo:v1"))
        .await?;
    let line =
        tokio::task::spawn_blocking(move || line_with(&stdout, "\"service\":\"after\"")).await??;
    assert!(line.contains("service_created"), "{line}");
    let _ = follower.kill();
    let _ = follower.wait();
    Ok(())
}
