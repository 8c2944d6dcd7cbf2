//! paz-server on fleet, end to end: `--scheduler fleet` against the in-repo fake of fleetd's
//! v1 API (`paz_fleet::fake`), whose three machines (127.0.0.2–4) really run the units'
//! `docker run` on the machine's engine: spread, a rolling deploy under load through the
//! router, a machine lost under load (fleet moves its unit, Paz follows it).
//!
//! Needs Docker (`CI=true` makes a missing engine a failure).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use paz::core::InstanceState;
use paz_fleet::fake::{FakeFleet, FakeMachine, FakeOptions};

use crate::support::{Cluster, Load, assert_no_failures, demo, require_docker};
use crate::swarm::wait_healthy;

/// The fleet machine id of `instance` (`node-<n>` is machine `{n:032x}`).
fn fleet_machine_of(instance: &paz::core::Instance) -> Result<String> {
    let n: u32 = instance
        .host
        .strip_prefix("node-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not on a fake machine: {instance:?}"))?;
    Ok(format!("{n:032x}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_spreads_deploys_and_survives_a_lost_machine() -> Result<()> {
    let test = "fleet_spreads_deploys_and_survives_a_lost_machine";
    if !require_docker(test) {
        return Ok(());
    }
    let one_at_a_time = crate::support::DOCKER.lock().await;
    let machines: Vec<FakeMachine> = (1..=3)
        .map(|n| {
            FakeMachine::new(&format!("{n:032x}"), &format!("127.0.0.{}", n + 1))
                .with("hostname", &format!("node-{n}"))
        })
        .collect();
    let fleet = FakeFleet::start(FakeOptions {
        machines,
        reconcile_interval: Duration::from_millis(100),
        run_units: true,
        ..FakeOptions::default()
    })
    .await?;
    let cluster = Cluster::start_with(
        "fleet",
        &["--scheduler", "fleet", "--fleet-endpoint", fleet.endpoint()],
    )?;

    // Spread: one unit per machine (Conflicts), each at its machine's address.
    cluster.create(&demo("web", 3)).await?;
    let instances = wait_healthy(&cluster, "web", 3, None, Duration::from_secs(30)).await?;
    let placed: BTreeSet<&str> = instances.iter().map(|i| i.host.as_str()).collect();
    ensure!(
        placed.len() == 3,
        "spread over the 3 machines: {instances:?}"
    );
    let hosts = cluster.client.hosts().await?;
    let machines = hosts.iter().filter(|h| h.name.starts_with("node-")).count();
    ensure!(machines == 3, "paz hosts lists the 3 machines: {hosts:?}");

    // A rolling deploy under load.
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
    eprintln!("fleet: 3-instance rolling deploy: {:?}", started.elapsed());
    assert_no_failures(load, "a rolling deploy on fleet").await;
    let instances = wait_healthy(&cluster, "web", 3, None, Duration::from_secs(30)).await?;
    ensure!(instances.iter().all(|i| i.release == 2), "{instances:?}");

    // A machine is lost (its presence expires, its containers die): fleet moves its unit,
    // Paz checks it again at its new machine's address before routing it; the instances
    // on the other machines serve throughout.
    let lost = instances[0].clone();
    let lost_machine = fleet_machine_of(&lost)?;
    let survivors = Load::start(&router, "web.localhost", "/", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lost_at = Instant::now();
    fleet.lose_machine(&lost_machine).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved = loop {
        let now = cluster.client.instances("web").await?;
        let healthy: Vec<_> = now
            .iter()
            .filter(|i| i.state == InstanceState::Healthy)
            .filter(|i| i.host.starts_with("node-") && i.host != lost.host)
            .collect();
        if healthy.len() == 3 && now.len() == 3 {
            break now;
        }
        ensure!(Instant::now() < deadline, "not moved within 20 s: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let serving_in = lost_at.elapsed();
    // Requests in flight on the lost machine's instance as it died move to the others.
    assert_no_failures(survivors, "fleet: while a machine was lost").await;
    let load = Load::start(&router, "web.localhost", "/", 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_no_failures(load, "fleet: after a machine was lost").await;
    let again = moved
        .iter()
        .find(|i| i.id == lost.id)
        .context("fleet moved the unit (same name)")?;
    ensure!(
        again.address != lost.address,
        "at its new machine's address: {again:?}"
    );
    eprintln!("fleet: machine lost, its instance healthy on another after {serving_in:?}");

    cluster.client.delete_service("web", None).await?;
    drop(cluster);
    drop(fleet);
    drop(one_at_a_time);
    Ok(())
}
