//! paz-server on Docker Swarm, end to end: a single-node Swarm of the machine's own engine
//! (the quick case), and a 3-node Swarm of engines in network namespaces of the test's own
//! (`paz_docker::testing::TestHosts`): spread, a rolling deploy under load through the
//! router, and a node's engine stopped under load.
//!
//! Needs Docker, root and `ip`/`nsenter`/`iptables`: with `CI=true` a missing part is a
//! failure, elsewhere the test is skipped loudly.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use paz::core::InstanceState;
use paz_docker::testing::{LocalSwarm, TestHosts};

use crate::support::{Cluster, Load, assert_no_failures, demo, require_docker};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Extra hosts for `test`, or `None` (skipped loudly) when they cannot be made outside CI.
fn require_hosts(test: &str, count: usize) -> Option<TestHosts> {
    if !require_docker(test) {
        return None;
    }
    match TestHosts::create(count) {
        Ok(hosts) => Some(hosts),
        Err(reason) if in_ci() => {
            panic!("{test}: cannot make {count} hosts in network namespaces (CI=true): {reason}")
        }
        Err(reason) => {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: {test}: cannot make hosts in network namespaces: {reason} ***"
            );
            None
        }
    }
}

fn docker(args: &[&str]) -> Result<String> {
    paz_docker::testing::run("docker", args).map_err(anyhow::Error::msg)
}

/// Removes the Paz Swarm services on the machine's engine (or on `host`).
fn remove_swarm_services(host: Option<&str>) -> Result<()> {
    let mut base = Vec::new();
    if let Some(host) = host {
        base.extend(["-H", host]);
    }
    let mut list = base.clone();
    list.extend(["service", "ls", "-q", "--filter", "label=paz.managed=true"]);
    let ids = docker(&list)?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut remove = base;
        remove.extend(["service", "rm"]);
        remove.extend(ids);
        docker(&remove)?;
    }
    Ok(())
}

/// Waits until `service` has `count` healthy instances on `hosts` distinct hosts, with none
/// on `not_on`; returns the instances' hosts.
pub(crate) async fn wait_healthy(
    cluster: &Cluster,
    service: &str,
    count: usize,
    not_on: Option<&str>,
    within: Duration,
) -> Result<Vec<paz::core::Instance>> {
    let deadline = Instant::now() + within;
    loop {
        let instances = cluster.client.instances(service).await?;
        let healthy: Vec<_> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Healthy)
            .filter(|i| not_on.is_none_or(|h| i.host != h))
            .cloned()
            .collect();
        if healthy.len() == count && instances.len() == count {
            return Ok(healthy);
        }
        if Instant::now() >= deadline {
            bail!("{service}: not {count} healthy instances within {within:?}: {instances:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_swarm_runs_a_service_behind_the_router() -> Result<()> {
    let test = "a_single_node_swarm_runs_a_service_behind_the_router";
    if !require_docker(test) {
        return Ok(());
    }
    let one_at_a_time = crate::support::DOCKER.lock().await;
    let _swarm = LocalSwarm::join()
        .map_err(anyhow::Error::msg)
        .context("make the engine a Swarm manager")?;
    let cluster = Cluster::start_with("swarm1", &["--scheduler", "swarm"])?;
    cluster.create(&demo("web", 2)).await?;
    let instances = wait_healthy(&cluster, "web", 2, None, Duration::from_secs(30)).await?;
    for instance in &instances {
        let address = instance.address.as_deref().unwrap_or_default();
        ensure!(address.starts_with("127.0.0.1:"), "{address}");
    }
    let response = cluster.get("web.localhost", "/").await?;
    ensure!(response.status() == 200, "routed: {}", response.status());
    let load = Load::start(&cluster.router(), "web.localhost", "/", 4);
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    cluster
        .wait_deployment(&deployment.id, paz::DeploymentStatus::Succeeded)
        .await?;
    assert_no_failures(load, "a rolling deploy on a single-node Swarm").await;
    let hosts = cluster.client.hosts().await?;
    ensure!(
        hosts
            .iter()
            .any(|h| h.labels.get("swarm.role").map(String::as_str) == Some("manager")),
        "paz hosts lists the Swarm node: {hosts:?}"
    );
    cluster.client.delete_service("web", None).await?;
    drop(cluster);
    drop(one_at_a_time);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_swarm_spreads_deploys_and_survives_a_lost_node() -> Result<()> {
    let test = "a_three_node_swarm_spreads_deploys_and_survives_a_lost_node";
    let Some(mut hosts) = require_hosts(test, 3) else {
        return Ok(());
    };
    let one_at_a_time = crate::support::DOCKER.lock().await;
    hosts
        .load_images(&["paz-demo:v1", "paz-demo:v2"])
        .map_err(anyhow::Error::msg)?;
    hosts
        .swarm(Duration::from_secs(1))
        .map_err(anyhow::Error::msg)?;
    let manager = hosts.hosts[0].docker_host();
    let cluster = Cluster::start_with(
        "swarm3",
        &["--scheduler", "swarm", "--swarm-host", &manager],
    )?;

    // Spread: one instance per node.
    cluster.create(&demo("web", 3)).await?;
    let instances = wait_healthy(&cluster, "web", 3, None, Duration::from_secs(30)).await?;
    let placed: BTreeSet<&str> = instances.iter().map(|i| i.host.as_str()).collect();
    ensure!(placed.len() == 3, "spread over the 3 nodes: {instances:?}");
    let addresses: BTreeSet<String> = hosts.hosts.iter().map(|h| h.address.to_string()).collect();
    for instance in &instances {
        let ip = instance
            .address
            .as_deref()
            .and_then(|a| a.split(':').next())
            .unwrap_or_default();
        ensure!(addresses.contains(ip), "at a node's address: {instance:?}");
    }
    let listed = cluster.client.hosts().await?;
    let nodes = listed
        .iter()
        .filter(|h| h.labels.contains_key("paz.host"))
        .count();
    ensure!(nodes == 3, "paz hosts lists the 3 nodes: {listed:?}");

    // A rolling deploy under load through the router.
    let router = cluster.router();
    let load = Load::start(&router, "web.localhost", "/", 6);
    let started = Instant::now();
    let deployment = cluster
        .client
        .deploy("web", Some("paz-demo:v2".into()))
        .await?;
    cluster
        .wait_deployment(&deployment.id, paz::DeploymentStatus::Succeeded)
        .await?;
    eprintln!(
        "3-instance rolling deploy over 3 nodes: {:?}",
        started.elapsed()
    );
    assert_no_failures(load, "a rolling deploy over a 3-node Swarm").await;
    let instances = wait_healthy(&cluster, "web", 3, None, Duration::from_secs(30)).await?;
    ensure!(
        instances.iter().all(|i| i.release == 2),
        "all on the new release: {instances:?}"
    );

    // A worker's engine stops: its instance is replaced on the others, routable in 10 s.
    let lost = instances
        .iter()
        .find(|i| {
            let ip = i.address.as_deref().and_then(|a| a.split(':').next());
            ip != Some(hosts.hosts[0].address.to_string().as_str())
        })
        .context("an instance on a worker")?
        .clone();
    let lost_ip = lost.address.clone().unwrap_or_default();
    let index = hosts
        .hosts
        .iter()
        .position(|h| lost_ip.starts_with(&format!("{}:", h.address)))
        .context("the lost instance's host")?;
    // Requests the router sent to the lost node's instance as its engine stopped move to
    // the surviving instances (idempotent GETs the dead backend dropped unanswered or
    // refused): none fails.
    let clients = 6;
    let in_flight = Load::start(&router, "web.localhost", "/", clients);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    hosts.stop_engine(index).map_err(anyhow::Error::msg)?;
    assert_no_failures(
        in_flight,
        &format!("while node {}'s engine stopped", hosts.hosts[index].name),
    )
    .await;
    let load = Load::start(&router, "web.localhost", "/", clients);
    let after = wait_healthy(
        &cluster,
        "web",
        3,
        Some(lost.host.as_str()),
        Duration::from_secs(10),
    )
    .await
    .context("replaced within 10 s")?;
    let replaced_in = stopped.elapsed();
    eprintln!(
        "node {} lost: its instance replaced and healthy elsewhere after {replaced_in:?}",
        hosts.hosts[index].name
    );
    ensure!(
        after.iter().all(|i| i.host != lost.host),
        "nothing on the lost node: {after:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_no_failures(load, "the surviving instances after a node was lost").await;

    // A rollback is Paz's own deploy of the previous release (never Swarm's rollback).
    let load = Load::start(&router, "web.localhost", "/", clients);
    let rollback = cluster.client.rollback("web", None).await?;
    cluster
        .wait_deployment(&rollback.id, paz::DeploymentStatus::Succeeded)
        .await?;
    assert_no_failures(load, "a rollback on the 2 nodes left").await;
    let rolled = wait_healthy(&cluster, "web", 3, None, Duration::from_secs(30)).await?;
    ensure!(
        rolled.iter().all(|i| i.release == rollback.release),
        "all on the rollback's release {}: {rolled:?}",
        rollback.release
    );
    let served = reqwest::Client::new()
        .get(format!("http://{router}/"))
        .header("host", "web.localhost")
        .send()
        .await?
        .text()
        .await?;
    ensure!(served.contains("v1"), "the v1 image serves again: {served}");

    cluster.client.delete_service("web", None).await?;
    drop(cluster);
    let _ = remove_swarm_services(Some(&manager));
    drop(hosts);
    drop(one_at_a_time);
    Ok(())
}

/// Waits until `router` answers 200 for `host` at `path`.
async fn wait_routable(router: &str, host: &str, path: &str, within: Duration) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let answer = client
            .get(format!("http://{router}{path}"))
            .header("host", host)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == 200 => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(response) => bail!(
                "{host}{path} through {router}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            Err(error) => bail!("{host}{path} through {router}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_of_a_three_node_swarm_routes_public_and_internal_names() -> Result<()> {
    let test = "every_host_of_a_three_node_swarm_routes_public_and_internal_names";
    if !paz_etcd::testing::etcd_available(test) {
        return Ok(());
    }
    let Some(mut hosts) = require_hosts(test, 3) else {
        return Ok(());
    };
    let one_at_a_time = crate::support::DOCKER.lock().await;
    hosts
        .load_images(&["paz-demo:v1"])
        .map_err(anyhow::Error::msg)?;
    hosts
        .swarm(Duration::from_secs(1))
        .map_err(anyhow::Error::msg)?;
    let manager = hosts.hosts[0].docker_host();
    // The cluster's state on etcd, which the hosts reach on the bridge.
    let etcd = paz_etcd::testing::EtcdCluster::single_also_on(hosts.gateway)?;
    // Docker's default bridge gateway: the same address on every node's engine.
    let names_ip = "172.17.0.1";
    let cluster = Cluster::start_with(
        "swarmr",
        &[
            "--scheduler",
            "swarm",
            "--swarm-host",
            &manager,
            "--store",
            &etcd.url(),
            "--internal-names-ip",
            names_ip,
        ],
    )?;
    // A router-only process on every host, inside its namespace.
    let store_on_bridge = etcd.url_on(hosts.gateway);
    let dir = tempfile::tempdir()?;
    let mut routers = Vec::new();
    for host in &hosts.hosts {
        let listen = format!("{}:0", host.address);
        let router = crate::support::Server::start_in_netns(
            &host.netns,
            &dir.path().join(&host.name),
            &[
                "--role",
                "router",
                "--store",
                &store_on_bridge,
                "--router-listen",
                &listen,
                "--internal-names-ip",
                names_ip,
            ],
        )
        .with_context(|| format!("a router-only process on {}", host.name))?;
        routers.push(router);
    }

    // web first: Swarm spreads by the tasks a node runs already.
    cluster.create(&demo("web", 3)).await?;
    let web = wait_healthy(&cluster, "web", 3, None, Duration::from_secs(30)).await?;
    let placed: BTreeSet<&str> = web.iter().map(|i| i.host.as_str()).collect();
    ensure!(placed.len() == 3, "web spread over the 3 nodes: {web:?}");
    let mut api = demo("api", 1);
    api.public = false;
    api.env.insert("VERSION".into(), "api-v1".into());
    cluster.create(&api).await?;

    // Every host's router serves web.localhost; every web instance, whatever its node,
    // reaches api through api.paz (its node's name server and router).
    let client = reqwest::Client::new();
    let mut callers = BTreeSet::new();
    for (host, router) in hosts.hosts.iter().zip(&routers) {
        let address = router
            .router
            .clone()
            .context("the router-only process routes")?;
        ensure!(
            address.starts_with(&format!("{}:", host.address)),
            "{} routes on its own address: {address}",
            host.name
        );
        wait_routable(&address, "web.localhost", "/", Duration::from_secs(20)).await?;
        wait_routable(
            &address,
            "web.localhost",
            "/call?url=http://api.paz/",
            Duration::from_secs(20),
        )
        .await?;
        for _ in 0..12 {
            let answer = client
                .get(format!("http://{address}/call?url=http://api.paz/"))
                .header("host", "web.localhost")
                .timeout(Duration::from_secs(10))
                .send()
                .await?;
            ensure!(
                answer.status() == 200,
                "{}: web → api.paz: {}",
                host.name,
                answer.status()
            );
            if let Some(caller) = answer.headers().get("x-demo-instance") {
                callers.insert(caller.to_str()?.to_owned());
            }
            ensure!(answer.text().await?.trim() == "api-v1", "api answered");
        }
        let internal = client
            .get(format!("http://{address}/"))
            .header("host", "api.paz")
            .send()
            .await?;
        ensure!(
            internal.status() == 404,
            "internal names are not served on a host's public listener: {}",
            internal.status()
        );
    }
    ensure!(
        callers.len() == 3,
        "web instances on all 3 nodes called api.paz: {callers:?}"
    );
    eprintln!("3 hosts' routers: web.localhost and api.paz from every node");

    for router in routers {
        router.stop()?;
    }
    cluster.client.delete_service("web", None).await?;
    cluster.client.delete_service("api", None).await?;
    drop(cluster);
    let _ = remove_swarm_services(Some(&manager));
    drop(hosts);
    drop(etcd);
    drop(one_at_a_time);
    Ok(())
}
