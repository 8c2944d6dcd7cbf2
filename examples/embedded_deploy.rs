//! An embedded Paz, no `paz-server`: the engine on an embedded store in a temporary dir,
//! containers on the local Docker Engine, traffic through the built-in router on a free
//! loopback port. It creates `web` from the demo image, deploys v1 → v2 while a small load
//! loop runs, and fails unless every request succeeded.
//!
//! ```text
//! scripts/build-demo-image.sh paz-demo:v1 paz-demo:v2
//! cargo run --example embedded_deploy --features docker
//! ```
//!
//! `RUST_LOG=info` shows the runtime's steps. It cleans up after itself: the service is
//! deleted (its containers drained and removed) and its Docker network removed.

#![allow(clippy::print_stdout, reason = "an example prints what it did")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paz::config::{ProxyConfig, RuntimeConfig, SchedulerConfig, StoreConfig};
use paz::docker::DockerConfig;
use paz::{DeploymentStatus, EngineConfig, Paz, PortSpec, Protocol, ServiceSpec, Trigger};

/// Longest the whole run may take.
const DEADLINE: Duration = Duration::from_secs(180);
/// At most this many requests in the load loop.
const MAX_REQUESTS: u64 = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    // reqwest is built without a default crypto provider: the workspace's one TLS stack is
    // rustls with ring (plain HTTP here, but the client wants a provider all the same).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started_at = Instant::now();
    let dir = tempfile::tempdir()?;
    let network = format!("paz-example-{}", std::process::id());
    let store = StoreConfig::Embedded {
        path: dir.path().join("paz.redb"),
    }
    .build()?;
    let paz = Paz::new(store, EngineConfig::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let started = RuntimeConfig {
        scheduler: SchedulerConfig::Docker(DockerConfig {
            network: network.clone(),
            ..DockerConfig::default()
        }),
        proxy: ProxyConfig::Builtin {
            listen: "127.0.0.1:0".parse()?,
        },
        internal_names: false,
        internal_names_ip: None,
        tls: None,
    }
    .start(paz.clone(), None, shutdown)
    .await
    .context("is the Docker Engine running?")?
    .context("a scheduler was configured")?;
    let router = started.router_address;

    let mut web = ServiceSpec::new("web", "paz-demo:v1");
    web.instances = 2;
    web.public = true;
    web.ports.push(PortSpec {
        port: 8080,
        protocol: Protocol::Http,
    });
    let result = async {
        paz.create_service(web, Trigger::create()).await?;
        let url = format!("http://{router}/");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let get = |client: reqwest::Client, url: String| async move {
            let response = client
                .get(&url)
                .header(reqwest::header::HOST, "web.localhost")
                .send()
                .await?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::Ok((status, body))
        };
        wait_for_version(&client, &url, "v1", started_at).await?;
        println!("web v1 is served at http://web.localhost (router {router})");

        // A small load loop: one keep-alive client, bounded in count and time.
        let running = Arc::new(AtomicBool::new(true));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let load = tokio::spawn({
            let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
            let (client, url) = (client.clone(), url.clone());
            async move {
                while running.load(Ordering::SeqCst)
                    && ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < MAX_REQUESTS
                    && started_at.elapsed() < DEADLINE
                {
                    match get(client.clone(), url.clone()).await {
                        Ok((status, _)) if status.is_success() => ok.fetch_add(1, Ordering::SeqCst),
                        Ok((status, body)) => {
                            eprintln!("request failed: {status} {body}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(error) => {
                            eprintln!("request failed: {error:#}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });

        let deployment = paz
            .deploy("web", Some("paz-demo:v2".into()), Trigger::create())
            .await?;
        let deploy_started = Instant::now();
        let finished = loop {
            let current = paz.deployment(&deployment.id).await?;
            if current.status.is_final() {
                break current;
            }
            if started_at.elapsed() > DEADLINE {
                bail!("the deployment did not finish in time: {current:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if finished.status != DeploymentStatus::Succeeded {
            bail!("the deployment {}: {:?}", finished.status, finished.error);
        }
        let took = deploy_started.elapsed();
        wait_for_version(&client, &url, "v2", started_at).await?;
        // Keep the load on a little longer: the old instances drain after the switch.
        tokio::time::sleep(Duration::from_millis(500)).await;
        running.store(false, Ordering::SeqCst);
        load.await?;
        let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
        let route = started
            .runtime
            .reconciler()
            .proxy()
            .routes()
            .await?
            .routes
            .remove("web.localhost")
            .context("web.localhost is routed")?;
        println!(
            "deployed web v1 -> v2 in {} ms under load: {ok} requests ok, {failed} failed",
            took.as_millis()
        );
        println!(
            "route web.localhost -> {}",
            route
                .backends
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        if failed > 0 || ok == 0 {
            bail!("{failed} of {} requests failed", ok + failed);
        }
        anyhow::Ok(())
    }
    .await;

    // Clean up: delete the service, wait for its containers to go, stop the runtime.
    let _ = paz.delete_service("web", None).await;
    let scheduler = started.runtime.scheduler().clone();
    let cleanup_deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < cleanup_deadline {
        match scheduler.list(Some("web")).await {
            Ok(left) if left.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    stop.send(true)?;
    for listener in started.listeners {
        let _ = listener.await;
    }
    started.runtime.join().await;
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &network])
        .output();
    result
}

/// Waits until the router answers `/` with `version`.
async fn wait_for_version(
    client: &reqwest::Client,
    url: &str,
    version: &str,
    started_at: Instant,
) -> anyhow::Result<()> {
    loop {
        let answer = client
            .get(url)
            .header(reqwest::header::HOST, "web.localhost")
            .send()
            .await;
        if let Ok(response) = answer
            && response.status().is_success()
            && response
                .text()
                .await
                .is_ok_and(|body| body.trim() == version)
        {
            return Ok(());
        }
        if started_at.elapsed() > DEADLINE {
            bail!("web never answered {version}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
