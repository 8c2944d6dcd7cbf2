//! A cluster on real etcd (Debian's `etcd-server`, started by the test on free loopback
//! ports) and the real Docker Engine: two `paz-server` replicas and a router-only process.
//! The leader is killed with SIGKILL in the middle of a deploy; the other replica takes over
//! and finishes it while a load loop through the surviving routers sees no failed request.
//! Then etcd itself goes down: the routers keep routing, the API answers 503 within its
//! timeout, and everything carries on when etcd is back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use paz::DeploymentStatus;
use paz_etcd::testing::{EtcdCluster, etcd_available};

use crate::support::{
    DOCKER, Load, Server, assert_no_failures, cleanup_network, container_releases, demo,
    require_docker, test_network,
};

const TOKEN: &str = "paz-cluster-test-admin-token-0123456789";
const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Removes the test's containers and network even when it fails.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        cleanup_network(&self.0);
    }
}

fn replica(data: &Path, store: &str, network: &str) -> Result<Server> {
    Server::start_with(
        data,
        &[
            "--store",
            store,
            "--leader-ttl",
            "2s",
            "--etcd-timeout",
            "1s",
            "--router-listen",
            "127.0.0.1:0",
            "--docker-network",
            network,
            "--internal-names",
            "false",
            "--token",
            TOKEN,
            "--secret-key",
            SECRET_KEY,
        ],
    )
}

fn client(server: &Server) -> Result<paz::Client> {
    Ok(paz::Client::new(&server.url, Some(TOKEN.to_owned()))?)
}

/// Waits until the cluster, as `client` sees it, is led by a replica whose API is `api`.
async fn wait_leader(client: &paz::Client, api: &str, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(cluster) = client.cluster().await
            && let Some(leader) = &cluster.leader
            && leader.api.as_deref().is_some_and(|a| api.ends_with(a))
        {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < within,
            "{api} did not lead within {within:?}: {:?}",
            client.cluster().await.ok().and_then(|c| c.leader)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `router` answers 200 for `host`.
async fn wait_routable(router: &str, host: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    loop {
        let answer = http
            .get(format!("http://{router}/"))
            .header("host", host)
            .send()
            .await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{host} is not routable through {router}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dirs() -> Result<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let (a, b, r) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("r"),
    );
    Ok((dir, a, b, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_survives_the_leader_killed_mid_deploy_and_routes_through_an_etcd_outage()
-> Result<()> {
    let test = "etcd_cluster_survives_the_leader_killed_mid_deploy";
    if !require_docker(test) || !etcd_available(test) || !crate::support::require_haproxy(test) {
        return Ok(());
    }
    let _one_at_a_time = DOCKER.lock().await;
    let mut etcd = EtcdCluster::single()?;
    let store = etcd.url();
    let network = test_network("cluster");
    let _cleanup = NetworkGuard(network.clone());
    let (_dir, data_a, data_b, data_r) = dirs()?;

    // Replica a starts first and leads; b follows; r only routes.
    let a = replica(&data_a, &store, &network)?;
    let client_a = client(&a)?;
    wait_leader(&client_a, &a.url, Duration::from_secs(10)).await?;
    // a's records outlive it until their leases expire: left out of the counts below.
    let a_id = client_a
        .cluster()
        .await?
        .replica
        .context("a is a replica")?;
    let b = replica(&data_b, &store, &network)?;
    let client_b = client(&b)?;
    let r = Server::start_with(
        &data_r,
        &[
            "--role",
            "router",
            "--store",
            &store,
            "--router-listen",
            "127.0.0.1:0",
        ],
    )?;
    let router_r = r.router.clone().context("the router-only process routes")?;
    // Another edge host, with HAProxy as its router (as in the original Paz).
    let h = Server::start_with(
        &data_r.with_file_name("h"),
        &[
            "--role",
            "router",
            "--store",
            &store,
            "--router-listen",
            "127.0.0.1:0",
            "--proxy",
            "haproxy",
        ],
    )?;
    let router_h = h
        .router
        .clone()
        .context("the HAProxy router-only process routes")?;
    let router_b = b.router.clone().context("replica b routes")?;

    // A service created through the follower's API is run by the leader and routed by all.
    client_b.create_service(&demo("web", 2)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let history = client_b.deployments("web").await?;
        if history
            .last()
            .is_some_and(|d| d.status == DeploymentStatus::Succeeded)
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the first deployment did not finish: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let host = "web.localhost";
    let announced = Instant::now();
    wait_routable(&router_r, host).await?;
    wait_routable(&router_b, host).await?;
    wait_routable(&router_h, host).await?;
    eprintln!(
        "routable through the three routers {:?} after the deployment ended",
        announced.elapsed()
    );
    // The follower's API shows the instances the leader announced, with their health.
    let status = client_b.status("web").await?;
    ensure!(
        status
            .instances
            .iter()
            .filter(|i| i.state == paz::InstanceState::Healthy)
            .count()
            == 2,
        "the follower sees the announced instances: {:?}",
        status.instances
    );

    let through_r = Load::start(&router_r, host, "/", 4);
    let through_b = Load::start(&router_b, host, "/", 2);
    let through_h = Load::start(&router_h, host, "/", 2);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A deploy through the follower; once the leader has started a v2 instance, kill it.
    let deployment = client_b.deploy("web", Some("paz-demo:v2".into())).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !container_releases(&network, "web").contains(&2) {
        ensure!(
            Instant::now() < deadline,
            "the leader never started a v2 instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Instant::now();
    a.kill();
    let failover = wait_leader(&client_b, &b.url, Duration::from_secs(10)).await?;
    eprintln!("failover after the leader's SIGKILL: {failover:?} (leader TTL 2 s)");
    ensure!(
        failover < Duration::from_secs(4),
        "failover took {failover:?}, over 2 × the leader TTL"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let finished = loop {
        let current = client_b.deployment(&deployment.id).await?;
        if current.status.is_final() {
            break current;
        }
        ensure!(
            Instant::now() < deadline,
            "the deployment did not finish after the failover: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        finished.status == DeploymentStatus::Succeeded,
        "the new leader finishes the deployment: {finished:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while container_releases(&network, "web") != [2, 2] {
        ensure!(
            Instant::now() < deadline,
            "v1 is drained and v2 runs: {:?}",
            container_releases(&network, "web")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("deployment finished {:?} after the kill", killed.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_no_failures(through_b, "through replica b's router during the failover").await;
    assert_no_failures(
        through_r,
        "through the router-only process during the failover",
    )
    .await;
    assert_no_failures(
        through_h,
        "through the HAProxy router-only process during the failover",
    )
    .await;

    // The cluster as the API shows it.
    let cluster = client_b.cluster().await?;
    ensure!(cluster.store.healthy, "{:?}", cluster.store);
    ensure!(
        cluster.replicas.iter().filter(|r| r.id != a_id).count() == 3,
        "b and the routers: {:?}",
        cluster.replicas
    );
    ensure!(
        cluster.routers.iter().filter(|r| r.id != a_id).count() == 3,
        "b's router and the router-only ones record what they applied: {:?}",
        cluster.routers
    );

    // etcd down: the routers keep their tables; the API says 503 within its timeout.
    let through_r = Load::start(&router_r, host, "/", 4);
    let through_h = Load::start(&router_h, host, "/", 2);
    etcd.kill(0);
    let started = Instant::now();
    let error = client_b.services().await.expect_err("no store, no answer");
    let took = started.elapsed();
    let text = error.to_string();
    ensure!(
        text.contains("STORE_UNAVAILABLE") || text.contains("503"),
        "a clear 503: {text}"
    );
    ensure!(took < Duration::from_secs(3), "the 503 came after {took:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.restart(0)?;
    etcd.wait_ready(Duration::from_secs(20))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_no_failures(
        through_r,
        "through the router-only process while etcd was down",
    )
    .await;
    assert_no_failures(
        through_h,
        "through the HAProxy router-only process while etcd was down",
    )
    .await;
    // And the cluster carries on: b leads again and the API answers.
    wait_leader(&client_b, &b.url, Duration::from_secs(15)).await?;
    ensure!(client_b.services().await?.len() == 1);
    drop(h);
    drop(r);
    drop(b);
    Ok(())
}

/// The move from a single machine to etcd: export from the embedded store, import into etcd
/// (more keys than one etcd transaction takes, so in chunks), and the services, releases
/// and deployment history read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_export_from_the_embedded_store_imports_into_etcd_identically() -> Result<()> {
    use std::sync::Arc;

    use paz::{EngineConfig, Paz, Trigger};
    if !etcd_available("etcd_export_from_the_embedded_store_imports_into_etcd_identically") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let embedded = Arc::new(paz::store::EmbeddedStore::open(
        dir.path().join("paz.redb"),
    )?);
    let source = Paz::new(embedded, EngineConfig::default());
    for i in 0..30 {
        let name = format!("svc{i:02}");
        source
            .create_service(demo(&name, 1), Trigger::create())
            .await?;
        source
            .deploy(&name, Some("paz-demo:v2".into()), Trigger::create())
            .await?;
        source
            .deploy(&name, Some("paz-demo:v3".into()), Trigger::create())
            .await?;
    }
    source.claim_cluster_id("c0ffee0123456789").await?;
    let export = source.export_state().await?;
    ensure!(
        export.keys.len() > paz_etcd::MAX_TXN_OPS,
        "big enough to need chunks"
    );

    let etcd = EtcdCluster::single()?;
    let store = Arc::new(paz_etcd::EtcdStore::connect(etcd.config("")).await?);
    let target = Paz::new(store, EngineConfig::default());
    let report = target
        .import_state(&export, paz::core::backup::ImportOptions::default())
        .await?;
    ensure!(report.services == 30, "{report:?}");

    // What a user sees is the same.
    let strip = |mut s: paz::Service| {
        s.revision = 0;
        s
    };
    let before: Vec<_> = source.services().await?.into_iter().map(strip).collect();
    let after: Vec<_> = target.services().await?.into_iter().map(strip).collect();
    ensure!(before == after, "services differ");
    for service in &before {
        let name = &service.spec.name;
        ensure!(
            source.releases(name).await? == target.releases(name).await?,
            "releases of {name} differ"
        );
        ensure!(
            source.deployments(name).await? == target.deployments(name).await?,
            "deployments of {name} differ"
        );
    }
    // And so is every key: a second export is the first one.
    let again = target.export_state().await?;
    ensure!(
        serde_json::to_value(&export.keys)? == serde_json::to_value(&again.keys)?,
        "the keys round-trip exactly"
    );
    ensure!(again.cluster.as_deref() == Some("c0ffee0123456789"));
    // A second import without --replace is refused and changes nothing.
    let refused = target
        .import_state(&export, paz::core::backup::ImportOptions::default())
        .await
        .expect_err("a non-empty target is refused");
    ensure!(refused.code() == "STORE_NOT_EMPTY", "{refused}");
    Ok(())
}
