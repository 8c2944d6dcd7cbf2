//! `FleetScheduler` against the fake: paging, placement, states, errors; and, with the real
//! Docker Engine, the `Scheduler` contract and a lost machine.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use paz_core::PortErrorKind;
use paz_core::contract::scheduler::{Fixture, run};
use paz_core::model::InstanceState;
use paz_core::scheduler::{LogOptions, Scheduler};
use paz_fleet::fake::{FakeFleet, FakeOptions};
use paz_fleet::{Error, FleetConfig, FleetScheduler};

use support::{ContainerGuard, IMAGE, eventually, fake, machines, scheduler, unique};

fn fixture() -> Fixture {
    Fixture {
        image: IMAGE.to_owned(),
        port: 8080,
    }
}

async fn unit_options(fake: &FakeFleet, id: &str) -> serde_json::Value {
    let url = format!("{}/fleet/v1/units/{id}", fake.endpoint());
    support::http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn has_conflicts(unit: &serde_json::Value) -> bool {
    unit["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["section"] == "X-Fleet" && o["name"] == "Conflicts")
}

#[tokio::test]
async fn lists_across_pages_and_maps_hosts() {
    let fake = fake(machines(3), 2).await;
    let s = scheduler(&fake, "paging", "/usr/bin/docker").await;
    let hosts = s.hosts().await.unwrap();
    assert_eq!(hosts.len(), 3, "all machines over two pages");
    assert_eq!(hosts[0].name, "node-1");
    assert_eq!(hosts[0].address, "127.0.0.2");
    assert_eq!(
        hosts[0].labels.get("hostname").map(String::as_str),
        Some("node-1")
    );
    let mut started = Vec::new();
    for slot in 0..5 {
        let mut spec = fixture().spec("paged", slot);
        spec.replicas = 5;
        started.push(s.start(&spec).await.unwrap().id);
    }
    let listed = s.list(Some("paged")).await.unwrap();
    let mut expected = started.clone();
    expected.sort();
    assert_eq!(
        listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        expected
    );
    // Distinct host ports, addresses on the machines' IPs.
    let ports: BTreeSet<&str> = listed
        .iter()
        .map(|i| i.address.as_deref().unwrap().rsplit(':').next().unwrap())
        .collect();
    assert_eq!(ports.len(), 5);
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.path.contains("nextPageToken=")),
        "paged"
    );
    for id in &started {
        s.stop(id, Duration::from_secs(1)).await.unwrap();
        s.remove(id).await.unwrap();
    }
    assert!(s.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn spreads_a_release_only_while_machines_suffice() {
    let fake = fake(machines(3), 100).await;
    let s = scheduler(&fake, "spread", "/usr/bin/docker").await;
    // 2 replicas on 3 machines (one to spare): Conflicts, one per machine.
    let mut hosts = BTreeSet::new();
    for slot in 0..2 {
        let mut spec = fixture().spec("two", slot);
        spec.replicas = 2;
        let instance = s.start(&spec).await.unwrap();
        assert!(has_conflicts(&unit_options(&fake, &instance.id).await));
        hosts.insert(instance.host);
    }
    assert_eq!(hosts.len(), 2, "one unit per machine");
    // 3 replicas on 3 machines: no Conflicts (a replacement after a machine is lost must
    // find a place); least-loaded placement spreads them.
    let mut hosts = BTreeSet::new();
    for slot in 0..3 {
        let mut spec = fixture().spec("three", slot);
        spec.release = 3;
        spec.replicas = 3;
        let instance = s.start(&spec).await.unwrap();
        assert!(!has_conflicts(&unit_options(&fake, &instance.id).await));
        hosts.insert(instance.host);
    }
    assert_eq!(hosts.len(), 3, "least-loaded: one unit per machine");
    // 4 replicas on 3 machines: no Conflicts, all scheduled.
    let mut ids = Vec::new();
    for slot in 0..4 {
        let mut spec = fixture().spec("four", slot);
        spec.release = 2;
        spec.replicas = 4;
        let instance = s.start(&spec).await.unwrap();
        assert!(!has_conflicts(&unit_options(&fake, &instance.id).await));
        assert!(!instance.host.is_empty());
        ids.push(instance.id);
    }
    let listed = s.list(Some("four")).await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|i| !i.host.is_empty()));
}

#[tokio::test]
async fn states_events_logs_and_other_clusters() {
    let fake = fake(machines(2), 100).await;
    let s = scheduler(&fake, "mine", "/usr/bin/docker").await;
    let other = scheduler(&fake, "theirs", "/usr/bin/docker").await;
    let mut events = s.events().await.unwrap();
    let a = s.start(&fixture().spec("web", 0)).await.unwrap();
    assert_eq!(a.state, InstanceState::Starting);
    assert!(
        a.address
            .as_deref()
            .is_some_and(|x| x.starts_with("127.0.0."))
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    assert!(
        matches!(&event, Ok(Some(Ok(paz_core::scheduler::SchedulerEvent::Started { id, .. }))) if *id == a.id),
        "{event:?}"
    );
    // Another cluster neither sees nor touches it.
    assert!(other.list(None).await.unwrap().is_empty());
    assert_eq!(other.inspect(&a.id).await.unwrap(), None);
    other.stop(&a.id, Duration::from_secs(1)).await.unwrap();
    other.remove(&a.id).await.unwrap();
    let still = s.inspect(&a.id).await.unwrap().expect("untouched");
    assert_eq!(still.state, InstanceState::Starting);
    assert_eq!(still.message, None, "active/running");
    // Logs: one honest error.
    let mut logs = s.logs(&a.id, LogOptions::default()).await.unwrap();
    let first = logs.next().await.expect("one item").expect_err("an error");
    let text = first.to_string();
    assert!(
        text.contains("journalctl -u") && text.contains(&a.id),
        "{text}"
    );
    assert!(logs.next().await.is_none());
    // An instance without an http port has no address.
    let mut spec = fixture().spec("worker", 0);
    spec.ports.clear();
    let worker = s.start(&spec).await.unwrap();
    assert_eq!(worker.address, None);
    // Stop: Stopped, and an Exited event.
    s.stop(&a.id, Duration::from_secs(1)).await.unwrap();
    let stopped = s.inspect(&a.id).await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped, "{stopped:?}");
    let exited = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            if let Ok(paz_core::scheduler::SchedulerEvent::Exited { id, .. }) = event
                && id == a.id
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(exited, Ok(true));
    s.remove(&a.id).await.unwrap();
    assert_eq!(s.inspect(&a.id).await.unwrap(), None);
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let fake = fake(machines(2), 100).await;
    let s = scheduler(&fake, "bad", "/usr/bin/docker").await;
    // A negated constraint.
    let mut spec = fixture().spec("neg", 0);
    spec.constraints = vec!["zone!=a".into()];
    let error = s.start(&spec).await.unwrap_err();
    assert_eq!(error.port_kind(), Some(PortErrorKind::Invalid));
    assert!(error.to_string().contains("no negation"), "{error}");
    // A health check on a port other than the published routed one.
    let mut spec = fixture().spec("health", 0);
    spec.health_port = Some(9090);
    let error = s.start(&spec).await.unwrap_err();
    assert_eq!(error.port_kind(), Some(PortErrorKind::Invalid));
    assert!(error.to_string().contains("port 9090"), "{error}");
    // No machine matches: the unit is destroyed and the start fails clearly.
    let s_quick = FleetScheduler::connect(FleetConfig {
        endpoint: fake.endpoint().to_owned(),
        cluster: "bad".into(),
        start_timeout: Duration::from_millis(500),
        ..FleetConfig::default()
    })
    .await
    .unwrap();
    let mut spec = fixture().spec("nowhere", 0);
    spec.constraints = vec!["zone==mars".into()];
    let error = s_quick.start(&spec).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("no fleet machine satisfies") && text.contains("zone=mars"),
        "{text}"
    );
    assert_eq!(error.port_kind(), Some(PortErrorKind::Invalid));
    assert!(
        s.list(None).await.unwrap().is_empty(),
        "the unit was destroyed"
    );

    // An unreachable endpoint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = format!("http://{address}");
    let error = FleetScheduler::connect(FleetConfig {
        endpoint: endpoint.clone(),
        ..FleetConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("fleet is not reachable at {endpoint}")),
        "{text}"
    );
    assert!(text.contains("ListenStream"), "{text}");
    let core: paz_core::Error = error.into();
    assert_eq!(core.port_kind(), Some(PortErrorKind::Unavailable));
    // https and paths are refused.
    for endpoint in [
        "https://127.0.0.1:1",
        "http://127.0.0.1:1/fleet/v1",
        "unix:///var/run/fleet.sock",
    ] {
        let error = FleetScheduler::connect(FleetConfig {
            endpoint: endpoint.into(),
            ..FleetConfig::default()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(error, Error::InvalidEndpoint { .. }),
            "{endpoint}: {error:?}"
        );
    }
}

/// A server that answers every request with `status` and `body`.
async fn broken_fleet(status: u16, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(move || async move { (axum::http::StatusCode::from_u16(status).unwrap(), body) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    endpoint
}

#[tokio::test]
async fn fleet_failures_are_reported() {
    let endpoint = broken_fleet(
        500,
        r#"{"error":{"code":500,"message":"registry unavailable"}}"#,
    )
    .await;
    let error = FleetScheduler::connect(FleetConfig {
        endpoint,
        ..FleetConfig::default()
    })
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("500") && text.contains("registry unavailable"),
        "{text}"
    );
    assert_eq!(error.port_kind(), PortErrorKind::Unavailable);

    let endpoint = broken_fleet(200, "this is not json").await;
    let error = FleetScheduler::connect(FleetConfig {
        endpoint,
        ..FleetConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(error, Error::Decode { .. }), "{error:?}");
    assert!(error.to_string().contains("not fleet v1 JSON"), "{error}");
}

async fn docker_fake(cluster: &str) -> Option<(FakeFleet, FleetScheduler, ContainerGuard)> {
    let docker = support::require_docker()?;
    let guard = ContainerGuard {
        docker: docker.clone(),
        cluster: cluster.to_owned(),
    };
    guard.remove_containers();
    let fake = FakeFleet::start(FakeOptions {
        machines: machines(3),
        run_units: true,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let s = scheduler(&fake, cluster, &docker).await;
    Some((fake, s, guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_scheduler_contract() {
    let cluster = unique("fleet-contract");
    let Some((_fake, s, _guard)) = docker_fake(&cluster).await else {
        return;
    };
    run(&s, &fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_machine_s_instance_moves_and_answers() {
    let cluster = unique("fleet-lost");
    let Some((fake, s, guard)) = docker_fake(&cluster).await else {
        return;
    };
    let mut instances = Vec::new();
    for slot in 0..2 {
        let mut spec = fixture().spec("lost", slot);
        spec.replicas = 2;
        instances.push(s.start(&spec).await.unwrap());
    }
    for instance in &instances {
        let address = instance.address.as_deref().unwrap();
        let body = support::get_until(address, "/health", Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(body.trim(), "ok");
    }
    assert_eq!(guard.running(), 2);
    let victim = &instances[0];
    // An instance's host is the machine's name; fleet's calls take its id.
    let machine = s
        .hosts()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.name == victim.host)
        .expect("the victim's machine")
        .id;
    fake.lose_machine(&machine).await;
    let moved = eventually(Duration::from_secs(10), || async {
        let now = s.inspect(&victim.id).await.ok()??;
        let running = s
            .list(Some("lost"))
            .await
            .ok()?
            .into_iter()
            .any(|i| i.id == victim.id && i.message.is_none());
        (now.host != victim.host && !now.host.is_empty() && running).then_some(now)
    })
    .await;
    let Some(moved) = moved else {
        panic!(
            "within 10 s the instance runs on another machine: {:?} / {:?}",
            s.inspect(&victim.id).await,
            unit_options(&fake, &victim.id).await
        );
    };
    assert_eq!(moved.state, InstanceState::Starting);
    let address = moved.address.as_deref().unwrap();
    assert_ne!(Some(address), victim.address.as_deref());
    let body = support::get_until(address, "/health", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(body.trim(), "ok");
    for instance in &instances {
        s.stop(&instance.id, Duration::from_secs(2)).await.unwrap();
        s.remove(&instance.id).await.unwrap();
    }
}
