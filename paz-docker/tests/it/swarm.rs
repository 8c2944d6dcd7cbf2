//! The Swarm scheduler on a single-node Swarm of the machine's own engine (the quick case;
//! the multi-host Swarm runs in the workspace's e2e tests, on engines in namespaces).
//!
//! When the engine is not in a Swarm the test makes it a manager on loopback (a free port)
//! and leaves the Swarm when it ends, even on failure; a Swarm that was there is kept. Every
//! Swarm service the test makes carries its own cluster id, and is removed by that label.

use std::time::Duration;

use paz_core::PortErrorKind;
use paz_core::contract::scheduler::{Fixture, run};
use paz_core::model::{HostStatus, InstanceState};
use paz_core::scheduler::Scheduler;
use paz_docker::{Error, SwarmConfig, SwarmScheduler};

use paz_docker::testing::LocalSwarm;

use crate::support::{IMAGE, random_suffix, require_docker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_passes_the_contract_on_a_single_node() {
    if !require_docker() {
        return;
    }
    let mut swarm = LocalSwarm::join().expect("make the engine a Swarm manager");
    let cluster = format!("swarm-test-{}", random_suffix());
    swarm.cluster = Some(cluster.clone());
    let _one_at_a_time = crate::support::CONTRACT.lock().await;
    let scheduler = SwarmScheduler::connect(SwarmConfig {
        cluster,
        stop_grace: Duration::from_secs(2),
        ..SwarmConfig::default()
    })
    .await
    .expect("connect to the Swarm manager");

    let hosts = scheduler.hosts().await.expect("hosts");
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].status, HostStatus::Ready);
    assert_eq!(
        hosts[0].labels.get("swarm.role").map(String::as_str),
        Some("manager")
    );
    assert_eq!(
        hosts[0]
            .labels
            .get("swarm.availability")
            .map(String::as_str),
        Some("active")
    );

    let fixture = Fixture {
        image: IMAGE.to_owned(),
        port: 8080,
    };
    run(&scheduler, &fixture).await;

    // An instance runs at its node's address and a port the engine published.
    let mut spec = fixture.spec("swarm-web", 0);
    spec.constraints = vec!["node.role==manager".into()];
    let instance = scheduler.start(&spec).await.expect("start");
    let address = instance.address.clone().expect("an address");
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let response = crate::support::http_get(&address, "/health", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{address} answers /health: {e}"));
    assert_eq!(response.status, 200, "{address} /health");
    assert_eq!(instance.host, hosts[0].name);
    let listed = scheduler.list(Some("swarm-web")).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].address.as_deref(), Some(address.as_str()));
    scheduler
        .stop(&instance.id, Duration::from_secs(2))
        .await
        .expect("stop");
    let stopped = scheduler.inspect(&instance.id).await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(stopped.address, None);
    scheduler.remove(&instance.id).await.expect("remove");

    // No node satisfies the constraint: a clear error at once, and nothing left behind.
    let mut spec = fixture.spec("swarm-nowhere", 0);
    spec.constraints = vec!["zone==mars".into()];
    let error = scheduler.start(&spec).await.expect_err("unschedulable");
    assert_eq!(error.port_kind(), Some(PortErrorKind::Invalid), "{error}");
    assert!(error.to_string().contains("no suitable node"), "{error}");
    assert!(
        scheduler
            .list(Some("swarm-nowhere"))
            .await
            .unwrap()
            .is_empty()
    );

    // An image no node has (and no registry to pull from).
    let mut spec = fixture.spec("swarm-noimage", 0);
    spec.image = format!("paz-no-such-image-{}:v1", random_suffix());
    let error = scheduler.start(&spec).await.expect_err("no image");
    assert!(
        matches!(
            error.port_kind(),
            Some(PortErrorKind::ImageUnavailable | PortErrorKind::Internal)
        ),
        "{error}"
    );
    assert!(
        scheduler
            .list(Some("swarm-noimage"))
            .await
            .unwrap()
            .is_empty()
    );

    // A bad constraint is refused before anything is created.
    let mut spec = fixture.spec("swarm-bad", 0);
    spec.constraints = vec!["zone".into()];
    let error = scheduler.start(&spec).await.expect_err("bad constraint");
    assert_eq!(error.port_kind(), Some(PortErrorKind::Invalid), "{error}");

    // A health check on a port Paz cannot reach on the node is refused, naming both ports.
    let mut spec = fixture.spec("swarm-health", 0);
    spec.health_port = Some(9090);
    let error = scheduler.start(&spec).await.expect_err("unreachable check");
    assert_eq!(error.port_kind(), Some(PortErrorKind::Invalid), "{error}");
    let text = error.to_string();
    assert!(text.contains("9090") && text.contains("(8080)"), "{text}");
    assert!(
        scheduler
            .list(Some("swarm-health"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_engine_outside_a_swarm_is_a_clear_error() {
    if !require_docker() {
        return;
    }
    // A daemon that does not answer at all.
    let error = SwarmScheduler::connect(SwarmConfig {
        host: Some("tcp://127.0.0.1:1".into()),
        ..SwarmConfig::default()
    })
    .await
    .expect_err("nothing there");
    assert!(
        matches!(error, Error::DaemonUnavailable { .. }),
        "{error:?}"
    );
    let text = Error::NotSwarmManager {
        host: "unix:///var/run/docker.sock".into(),
        state: "inactive".into(),
    }
    .to_string();
    assert!(text.contains("docker swarm init"), "{text}");
}
