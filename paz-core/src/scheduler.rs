//! The `Scheduler` port: runs instances on hosts (local Docker, Docker Swarm, fleet), and a
//! fake for tests.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::model::{Host, HostStatus, Instance, InstanceState, Release};
use crate::service::{PortSpec, Resources, VolumeSpec};

/// Everything a scheduler needs to start one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// The service.
    pub service: String,
    /// The release.
    pub release: u64,
    /// The slot (0-based) within the release.
    pub slot: u32,
    /// The image reference.
    pub image: String,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The command; empty keeps the image's.
    pub command: Vec<String>,
    /// Container ports.
    pub ports: Vec<PortSpec>,
    /// Volume mounts.
    pub volumes: Vec<VolumeSpec>,
    /// Resource limits.
    pub resources: Resources,
    /// Placement constraints (`label==value`, `label!=value`).
    pub constraints: Vec<String>,
    /// How many instances the release runs: schedulers that spread a release's instances
    /// over hosts by rule (fleet's `Conflicts`) do so only while there are hosts enough.
    pub replicas: u32,
    /// Which life of the service this is (its creation time): a service deleted and created
    /// again under the same name never adopts the old one's instances.
    pub epoch: Option<String>,
    /// The port the health check probes when it is not the routed port (`None`: it checks
    /// the routed port, or nothing). Schedulers that reach instances only at a published
    /// routed port (Swarm, fleet) refuse such an instance with a clear error.
    pub health_port: Option<u16>,
}

impl InstanceSpec {
    /// The spec of slot `slot` of a release.
    pub fn from_release(release: &Release, slot: u32) -> Self {
        let spec = &release.spec;
        InstanceSpec {
            service: release.service.clone(),
            release: release.version,
            slot,
            image: release.image().to_owned(),
            env: spec.env.clone(),
            command: spec.command.clone(),
            ports: spec.ports.clone(),
            volumes: spec.volumes.clone(),
            resources: spec.resources.clone(),
            constraints: spec.placement.constraints.clone(),
            replicas: spec.instances,
            epoch: None,
            health_port: crate::deploy::health::check_for(spec)
                .and_then(|check| check.port)
                .and_then(|port| u16::try_from(port).ok())
                .filter(|port| Some(*port) != spec.routed_port()),
        }
    }

    /// The routed (first http) port, if any.
    pub fn routed_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == crate::service::Protocol::Http)
            .and_then(|p| u16::try_from(p.port).ok())
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LogStreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of an instance's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// The instance id.
    pub instance: String,
    /// stdout or stderr.
    pub stream: LogStreamKind,
    /// The line, without its newline.
    pub line: String,
}

/// What logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open for new lines.
    pub follow: bool,
    /// Only the last N lines of the past.
    pub tail: Option<usize>,
}

/// A stream of log lines.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine>> + Send>>;

/// A change the scheduler observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerEvent {
    /// An instance started.
    Started {
        /// Instance id.
        id: String,
        /// Its service.
        service: String,
    },
    /// An instance exited or was stopped.
    Exited {
        /// Instance id.
        id: String,
        /// Its service.
        service: String,
        /// The exit code, when known.
        exit_code: Option<i64>,
    },
    /// An instance was removed.
    Removed {
        /// Instance id.
        id: String,
        /// Its service.
        service: String,
    },
    /// The event feed had a gap (reconnect): re-list to catch up.
    Resync,
}

/// A stream of scheduler events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SchedulerEvent>> + Send>>;

/// Runs, stops, lists and inspects instances on hosts. Operations on unknown instance ids
/// are idempotent: stopping or removing one that is gone succeeds.
///
/// Every implementation must pass the contract suite `paz_core::contract::scheduler` (feature `contract`).
#[async_trait]
pub trait Scheduler: Send + Sync + 'static {
    /// The hosts instances can run on.
    async fn hosts(&self) -> Result<Vec<Host>>;
    /// Creates and starts one instance.
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance>;
    /// Stops an instance: SIGTERM, then a kill after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;
    /// Removes a (stopped) instance.
    async fn remove(&self, id: &str) -> Result<()>;
    /// The managed instances, of one service or all.
    async fn list(&self, service: Option<&str>) -> Result<Vec<Instance>>;
    /// One instance, or `None` when it does not exist.
    async fn inspect(&self, id: &str) -> Result<Option<Instance>>;
    /// An instance's output.
    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream>;
    /// Changes as they happen.
    async fn events(&self) -> Result<EventStream>;
    /// Pins `image` to exactly the image it names now, getting it first when missing (as
    /// `start` would): `<repository>@sha256:…` when it came from a registry, else the local
    /// image id `sha256:…`. `None` when the scheduler cannot tell (the default).
    async fn resolve_image(&self, image: &str) -> Result<Option<String>> {
        let _ = image;
        Ok(None)
    }
}

struct FakeState {
    instances: BTreeMap<String, Instance>,
    next: u64,
    failing_images: Vec<String>,
    down: bool,
    failing_starts: Option<crate::PortErrorKind>,
    /// What `resolve_image` pins each image to.
    tags: BTreeMap<String, String>,
    /// The image each instance was started with.
    images: BTreeMap<String, String>,
}

/// An in-memory scheduler for tests: instances are records, addresses are made up.
pub struct FakeScheduler {
    state: Mutex<FakeState>,
    events: broadcast::Sender<SchedulerEvent>,
}

impl Default for FakeScheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeScheduler {
    /// An empty fake.
    pub fn new() -> Self {
        FakeScheduler {
            state: Mutex::new(FakeState {
                instances: BTreeMap::new(),
                next: 1,
                failing_images: Vec::new(),
                down: false,
                failing_starts: None,
                tags: BTreeMap::new(),
                images: BTreeMap::new(),
            }),
            events: broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `start` fail for this image, as if it could not be pulled.
    pub fn fail_image(&self, image: &str) {
        self.lock().failing_images.push(image.to_owned());
    }

    /// Makes `start` fail with an error of `kind` (`None` ends it), as if the daemon could
    /// not be reached for that call only.
    pub fn fail_starts(&self, kind: Option<crate::PortErrorKind>) {
        self.lock().failing_starts = kind;
    }

    /// Points `image` (a tag) at the image `id` (`sha256:…`): `resolve_image` pins it to
    /// that from now on, as Docker would after a `docker tag`.
    pub fn tag_image(&self, image: &str, id: &str) {
        self.lock().tags.insert(image.to_owned(), id.to_owned());
    }

    /// The image instance `id` was started with.
    pub fn image_of(&self, id: &str) -> Option<String> {
        self.lock().images.get(id).cloned()
    }

    /// Makes every call fail, as if the daemon were down (`false` brings it back).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    fn check_up(&self) -> Result<()> {
        if self.lock().down {
            Err(Error::scheduler(
                crate::PortErrorKind::Unavailable,
                "the fake daemon is down",
            ))
        } else {
            Ok(())
        }
    }

    /// Simulates an instance crashing with `exit_code`.
    pub fn crash(&self, id: &str, exit_code: i64) {
        let service = {
            let mut state = self.lock();
            let Some(instance) = state.instances.get_mut(id) else {
                return;
            };
            instance.state = InstanceState::Failed;
            instance.message = Some(format!("exited with code {exit_code}"));
            instance.service.clone()
        };
        let _ = self.events.send(SchedulerEvent::Exited {
            id: id.to_owned(),
            service,
            exit_code: Some(exit_code),
        });
    }
}

#[async_trait]
impl Scheduler for FakeScheduler {
    async fn hosts(&self) -> Result<Vec<Host>> {
        Ok(vec![Host {
            id: "fake".into(),
            name: "fake".into(),
            address: "127.0.0.1".into(),
            labels: BTreeMap::new(),
            status: HostStatus::Ready,
            version: None,
        }])
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.check_up()?;
        let instance = {
            let mut state = self.lock();
            if let Some(kind) = state.failing_starts {
                return Err(Error::scheduler(kind, "the fake daemon did not answer"));
            }
            if state.failing_images.contains(&spec.image) {
                return Err(Error::scheduler(
                    crate::PortErrorKind::ImageUnavailable,
                    format!("image {:?} cannot be pulled", spec.image),
                ));
            }
            let n = state.next;
            state.next += 1;
            let instance = Instance {
                id: format!("fake-{n}"),
                service: spec.service.clone(),
                release: spec.release,
                slot: spec.slot,
                host: "fake".into(),
                address: spec
                    .routed_port()
                    .map(|port| format!("10.0.{}.{}:{port}", n / 250, n % 250 + 1)),
                state: InstanceState::Starting,
                message: None,
                epoch: spec.epoch.clone(),
                started_at: Some(jiff::Timestamp::now()),
            };
            state
                .instances
                .insert(instance.id.clone(), instance.clone());
            state.images.insert(instance.id.clone(), spec.image.clone());
            instance
        };
        let _ = self.events.send(SchedulerEvent::Started {
            id: instance.id.clone(),
            service: instance.service.clone(),
        });
        Ok(instance)
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.check_up()?;
        let service = {
            let mut state = self.lock();
            let Some(instance) = state.instances.get_mut(id) else {
                return Ok(());
            };
            if instance.state == InstanceState::Stopped {
                return Ok(());
            }
            instance.state = InstanceState::Stopped;
            instance.service.clone()
        };
        let _ = self.events.send(SchedulerEvent::Exited {
            id: id.to_owned(),
            service,
            exit_code: Some(0),
        });
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.check_up()?;
        let removed = self.lock().instances.remove(id);
        if let Some(instance) = removed {
            let _ = self.events.send(SchedulerEvent::Removed {
                id: id.to_owned(),
                service: instance.service,
            });
        }
        Ok(())
    }

    async fn list(&self, service: Option<&str>) -> Result<Vec<Instance>> {
        self.check_up()?;
        Ok(self
            .lock()
            .instances
            .values()
            .filter(|i| service.is_none_or(|s| i.service == s))
            .cloned()
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<Instance>> {
        Ok(self.lock().instances.get(id).cloned())
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let instance = self
            .lock()
            .instances
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "instance",
                name: id.to_owned(),
            })?;
        let mut lines = vec![LogLine {
            instance: instance.id.clone(),
            stream: LogStreamKind::Stdout,
            line: format!("{} v{} started", instance.service, instance.release),
        }];
        if let Some(tail) = options.tail {
            let skip = lines.len().saturating_sub(tail);
            lines.drain(..skip);
        }
        Ok(Box::pin(futures_util::stream::iter(
            lines.into_iter().map(Ok),
        )))
    }

    async fn resolve_image(&self, image: &str) -> Result<Option<String>> {
        self.check_up()?;
        let state = self.lock();
        if state.failing_images.iter().any(|i| i == image) {
            return Err(Error::scheduler(
                crate::PortErrorKind::ImageUnavailable,
                format!("image {image:?} cannot be pulled"),
            ));
        }
        Ok(state.tags.get(image).cloned())
    }

    async fn events(&self) -> Result<EventStream> {
        let receiver = self.events.subscribe();
        Ok(Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move {
                match receiver.recv().await {
                    Ok(event) => Some((Ok(event), receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Some((Ok(SchedulerEvent::Resync), receiver))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_passes_the_scheduler_contract() {
        let fixture = crate::contract::scheduler::Fixture {
            image: "demo:v1".into(),
            port: 8080,
        };
        crate::contract::scheduler::run(&FakeScheduler::new(), &fixture).await;
    }

    #[test]
    fn the_health_port_is_set_only_off_the_routed_port() {
        use crate::service::{HealthCheck, PortSpec, Protocol, ServiceSpec};
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        let release = |spec: &ServiceSpec| Release {
            service: "web".into(),
            version: 1,
            spec: spec.clone(),
            image_digest: None,
            secrets: Default::default(),
            trigger: crate::model::Trigger::new(crate::model::TriggerKind::Create),
            created_at: jiff::Timestamp::UNIX_EPOCH,
        };
        // The default TCP check and a declared check without a port use the routed port.
        assert_eq!(
            InstanceSpec::from_release(&release(&spec), 0).health_port,
            None
        );
        spec.health = Some(HealthCheck::default());
        assert_eq!(
            InstanceSpec::from_release(&release(&spec), 0).health_port,
            None
        );
        spec.health.as_mut().unwrap().port = Some(8080);
        assert_eq!(
            InstanceSpec::from_release(&release(&spec), 0).health_port,
            None
        );
        spec.health.as_mut().unwrap().port = Some(9090);
        assert_eq!(
            InstanceSpec::from_release(&release(&spec), 0).health_port,
            Some(9090)
        );
    }

    #[tokio::test]
    async fn fake_reports_crashes_and_failing_images() {
        let scheduler = FakeScheduler::new();
        let mut spec = crate::contract::scheduler::Fixture {
            image: "demo:v1".into(),
            port: 8080,
        }
        .spec("crashy", 0);
        let instance = scheduler.start(&spec).await.unwrap();
        scheduler.crash(&instance.id, 3);
        let seen = scheduler.inspect(&instance.id).await.unwrap().unwrap();
        assert_eq!(seen.state, InstanceState::Failed);
        spec.image = "missing:v9".into();
        scheduler.fail_image("missing:v9");
        assert!(scheduler.start(&spec).await.is_err());
    }
}
