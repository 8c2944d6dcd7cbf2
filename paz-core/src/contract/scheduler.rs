//! The `Scheduler` contract.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;

use crate::model::InstanceState;
use crate::scheduler::{InstanceSpec, LogOptions, Scheduler, SchedulerEvent};
use crate::service::{PortSpec, Protocol, Resources};

/// What the backend under test can run: an image available to it and the port it serves.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// An image the backend can start without a registry.
    pub image: String,
    /// The HTTP port the image listens on.
    pub port: u32,
}

impl Fixture {
    /// An instance spec of `service`, slot `slot`, release 1.
    pub fn spec(&self, service: &str, slot: u32) -> InstanceSpec {
        InstanceSpec {
            service: service.to_owned(),
            release: 1,
            slot,
            image: self.image.clone(),
            env: BTreeMap::from([("PAZ_CONTRACT".to_owned(), "1".to_owned())]),
            command: Vec::new(),
            ports: vec![PortSpec {
                port: self.port,
                protocol: Protocol::Http,
            }],
            volumes: Vec::new(),
            resources: Resources::default(),
            constraints: Vec::new(),
            replicas: 1,
            epoch: Some("contract".to_owned()),
            health_port: None,
        }
    }
}

/// Runs every check. Uses service names starting with `contract-`; cleans up what it starts.
pub async fn run(scheduler: &impl Scheduler, fixture: &Fixture) {
    let hosts = scheduler.hosts().await.expect("hosts");
    assert!(!hosts.is_empty(), "a scheduler reports at least one host");

    let mut events = scheduler.events().await.expect("events");
    let a = scheduler
        .start(&fixture.spec("contract-a", 0))
        .await
        .expect("start");
    let b = scheduler
        .start(&fixture.spec("contract-b", 0))
        .await
        .expect("start");
    assert_eq!(
        (a.service.as_str(), a.release, a.slot),
        ("contract-a", 1, 0),
        "start reports what it started"
    );
    assert!(
        matches!(a.state, InstanceState::Starting | InstanceState::Healthy),
        "a started instance is starting or healthy, not {:?}",
        a.state
    );
    assert!(
        a.address.is_some(),
        "an instance with an http port has an address"
    );

    let started = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            if let Ok(SchedulerEvent::Started { id, .. }) = event
                && id == a.id
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the events stream reports a start");

    let listed = scheduler.list(Some("contract-a")).await.expect("list");
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str()],
        "list filters by service"
    );
    let all = scheduler.list(None).await.expect("list all");
    assert!(
        all.iter().any(|i| i.id == a.id) && all.iter().any(|i| i.id == b.id),
        "list without a filter shows all"
    );

    assert_eq!(
        scheduler
            .inspect(&a.id)
            .await
            .expect("inspect")
            .map(|i| i.id),
        Some(a.id.clone())
    );
    assert_eq!(
        scheduler
            .inspect("contract-no-such-instance")
            .await
            .expect("inspect unknown"),
        None
    );
    let logs = scheduler
        .logs(
            &a.id,
            LogOptions {
                follow: false,
                tail: Some(10),
            },
        )
        .await;
    assert!(logs.is_ok(), "logs of a live instance can be read");

    scheduler
        .stop(&a.id, Duration::from_secs(5))
        .await
        .expect("stop");
    let stopped = scheduler
        .inspect(&a.id)
        .await
        .expect("inspect")
        .expect("a stopped instance still exists");
    assert!(
        matches!(
            stopped.state,
            InstanceState::Stopped | InstanceState::Failed
        ),
        "a stopped instance is stopped, not {:?}",
        stopped.state
    );
    scheduler
        .stop(&a.id, Duration::from_secs(1))
        .await
        .expect("stopping twice is fine");
    for instance in [&a, &b] {
        scheduler
            .stop(&instance.id, Duration::from_secs(5))
            .await
            .expect("stop");
        scheduler.remove(&instance.id).await.expect("remove");
        assert_eq!(
            scheduler.inspect(&instance.id).await.expect("inspect"),
            None,
            "a removed instance is gone"
        );
    }
    scheduler
        .remove(&a.id)
        .await
        .expect("removing twice is fine");
    scheduler
        .stop("contract-no-such-instance", Duration::from_secs(1))
        .await
        .expect("stopping an unknown id is fine");
    assert!(
        scheduler
            .list(Some("contract-a"))
            .await
            .expect("list")
            .is_empty()
    );

    // A pin, when the scheduler gives one, is stable and starts the image it names.
    let pin = scheduler
        .resolve_image(&fixture.image)
        .await
        .expect("resolve the fixture's image");
    if let Some(pin) = pin {
        assert_eq!(
            scheduler.resolve_image(&pin).await.expect("resolve a pin"),
            Some(pin.clone()),
            "a pin pins to itself"
        );
        let mut spec = fixture.spec("contract-pin", 0);
        spec.image = pin;
        let pinned = scheduler.start(&spec).await.expect("start from a pin");
        scheduler
            .stop(&pinned.id, Duration::from_secs(5))
            .await
            .expect("stop");
        scheduler.remove(&pinned.id).await.expect("remove");
    }
}
