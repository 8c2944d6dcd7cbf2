//! The engine: services, releases and deployments on top of any [`Store`], with events.
//!
//! Every change is one store transaction guarded by compare-and-swap on the service record,
//! so concurrent changes to one service are serialized and none is lost: a writer that
//! loses the race re-reads and tries again (or, when the caller named the revision it
//! expected, fails with [`Error::RevisionMismatch`]).
//!
//! The engine is split by concern: `services` (create, change, scale and delete services, and
//! the domains they claim), `deploys` (releases, deploy, rollback, promote and abort),
//! `deployments` (the deployment records the reconciler saves and finishes) and `hosts` (the
//! hosts that registered themselves). This module holds the engine itself, the store layout,
//! events and the compare-and-swap retry budget every change runs under.

mod backup;
mod certs;
mod cluster;
mod deployments;
mod deploys;
mod hooks;
mod hosts;
mod retention;
mod secrets;
mod services;
mod tokens;

pub use certs::Certificate;
pub use cluster::check_cluster_id;
pub use hooks::{DELIVERY_KEY_TTL, KEEP_DELIVERIES, KEEP_DELIVERY_KEYS};
pub use retention::KEEP_DEPLOYMENTS;
pub use services::merge_patch;

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::model::{Deployment, Release, Trigger, TriggerKind};
use crate::service::Service;
use crate::store::{KeyValue, Store};

const SERVICES: &str = "/paz/services/";
const RELEASES: &str = "/paz/releases/";
const DEPLOYMENTS: &str = "/paz/deployments/";
const DOMAINS: &str = "/paz/domains/";
const HOSTS: &str = "/paz/hosts/";
const CLUSTER: &str = "/paz/cluster";
/// Sealed secret values: `<service>/current` (the service's), `<service>/<version>` (a
/// release's).
const SEALED: &str = "/paz/sealed/";
/// How often a writer retries after losing a compare-and-swap race.
const MAX_ATTEMPTS: u32 = 64;

fn service_key(name: &str) -> String {
    format!("{SERVICES}{name}")
}
fn release_key(service: &str, version: u64) -> String {
    format!("{RELEASES}{service}/{version:010}")
}
fn deployment_key(service: &str, sequence: u64) -> String {
    format!("{DEPLOYMENTS}{service}/{sequence:010}")
}
fn sealed_key(service: &str, version: u64) -> String {
    format!("{SEALED}{service}/{version:010}")
}
fn sealed_current_key(service: &str) -> String {
    format!("{SEALED}{service}/current")
}
fn domain_key(domain: &str) -> String {
    format!("{DOMAINS}{domain}")
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("engine records always serialize")
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| Error::Corrupt {
        key: kv.key.clone(),
        message: e.to_string(),
    })
}

/// How many releases a service keeps by default (see [`EngineConfig::keep_releases`]).
pub const DEFAULT_KEEP_RELEASES: u64 = 20;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The cluster domain: public services answer at `<name>.<domain>`.
    pub domain: String,
    /// How many of its newest releases a service keeps (at least 2); older ones are deleted
    /// when a release is made, except the current and the previous one and those of a
    /// deployment in progress. Default [`DEFAULT_KEEP_RELEASES`].
    pub keep_releases: u64,
    /// Whether specs may bind-mount host paths that make a service root on its host (`/`,
    /// the Docker socket, `/etc`…; see [`crate::service::host_root_mount`]). Default `false`.
    pub allow_host_mounts: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            domain: "localhost".into(),
            keep_releases: DEFAULT_KEEP_RELEASES,
            allow_host_mounts: false,
        }
    }
}

/// What a change to a service produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The service after the change.
    pub service: Service,
    /// The release it made, if the spec changed.
    pub release: Option<Release>,
    /// The deployment it recorded, if any.
    pub deployment: Option<Deployment>,
}

/// The Paz engine: create, change and look at services, releases and deployments.
///
/// ```
/// # let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// # runtime.block_on(async {
/// use std::sync::Arc;
/// use paz_core::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger, TriggerKind};
///
/// let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
/// let applied = paz.create_service(ServiceSpec::new("web", "demo:v1"), Trigger::new(TriggerKind::Create)).await?;
/// assert_eq!(applied.release.unwrap().version, 1);
/// assert_eq!(paz.service("web").await?.spec.image, "demo:v1");
/// # Ok::<(), paz_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Paz {
    store: Arc<dyn Store>,
    config: EngineConfig,
    events: broadcast::Sender<Event>,
    /// The recent events, for resuming subscribers; sending happens under its lock, so a
    /// subscriber's replay and live events neither overlap nor leave a hole.
    journal: Arc<std::sync::Mutex<crate::event::EventJournal>>,
    secrets: Option<Arc<dyn crate::secret::SecretCipher>>,
}

struct Current {
    service: Service,
    mod_revision: u64,
}

impl Paz {
    /// An engine over `store`.
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Self {
        Paz {
            store,
            config,
            events: broadcast::channel(1024).0,
            journal: Arc::new(std::sync::Mutex::new(crate::event::EventJournal::new(
                process_epoch(),
            ))),
            secrets: None,
        }
    }

    /// Seals and opens secret values with `cipher`; without one, setting a secret fails
    /// with [`Error::SecretsUnavailable`].
    pub fn with_secrets(mut self, cipher: Arc<dyn crate::secret::SecretCipher>) -> Self {
        self.secrets = Some(cipher);
        self
    }

    /// The same engine (settings, secrets, events) working on another store: the runtime
    /// of a cluster's leader writes through a store guarded by its leadership, and its events
    /// still reach the API's subscribers.
    pub fn on_store(&self, store: Arc<dyn Store>) -> Paz {
        Paz {
            store,
            ..self.clone()
        }
    }

    /// The store the engine works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Receives every event from now on and, for a client resuming with the id of the last
    /// event it saw (`Last-Event-ID`), the recent events after it (or
    /// [`Replay::Gap`](crate::event::Replay::Gap) when they are no longer known), with no
    /// event lost or repeated between the two.
    pub fn subscribe_since(
        &self,
        last_id: Option<&str>,
    ) -> (crate::event::Replay, broadcast::Receiver<Event>) {
        let journal = self.journal();
        let replay = match last_id {
            Some(id) => journal.since(id),
            None => crate::event::Replay::Events(Vec::new()),
        };
        (replay, self.events.subscribe())
    }

    /// Reports what the runtime saw of an instance (started, healthy, unhealthy, stopped):
    /// journaled and sent to subscribers like the engine's own events, with revision 0.
    pub fn publish(&self, kind: EventKind) {
        self.emit(0, vec![kind]);
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, crate::event::EventJournal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, revision: u64, kinds: Vec<EventKind>) {
        let at = jiff::Timestamp::now();
        let mut journal = self.journal();
        for kind in kinds {
            let event = journal.record(Event {
                id: String::new(),
                revision,
                at,
                kind,
            });
            // No subscriber is fine.
            let _ = self.events.send(event);
        }
    }

    async fn load(&self, name: &str) -> Result<Current> {
        let kv = self
            .store
            .get(&service_key(name))
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "service",
                name: name.to_owned(),
            })?;
        let mut service: Service = decode(&kv)?;
        service.revision = kv.mod_revision;
        Ok(Current {
            service,
            mod_revision: kv.mod_revision,
        })
    }
}

/// A random tag for this process's event ids (from the std's randomly seeded hasher and
/// the time: it only tells processes apart).
fn process_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i128(jiff::Timestamp::now().as_nanosecond());
    format!("{:08x}", hasher.finish() as u32)
}

fn deployment_event(deployment: &Deployment) -> EventKind {
    EventKind::DeploymentChanged {
        service: deployment.service.clone(),
        id: deployment.id.clone(),
        release: deployment.release,
        status: deployment.status,
    }
}

/// The retry budget of one compare-and-swap change: every change reads, computes and commits
/// guarded by what it read, and on a lost race ([`Error::Conflict`]) tries again, at most
/// [`MAX_ATTEMPTS`] times, then gives up with [`Error::TooManyConflicts`] (409
/// `CONCURRENT_CHANGES` at the API, not a store outage).
struct Retries<'a> {
    kind: &'static str,
    name: &'a str,
    lost: u32,
}

impl<'a> Retries<'a> {
    fn new(kind: &'static str, name: &'a str) -> Self {
        Retries {
            kind,
            name,
            lost: 0,
        }
    }

    /// Records a lost race: `Ok` to try again, or the error to give up with.
    fn lost(&mut self) -> Result<()> {
        self.lost += 1;
        if self.lost < MAX_ATTEMPTS {
            return Ok(());
        }
        Err(Error::TooManyConflicts {
            kind: self.kind,
            name: self.name.to_owned(),
            attempts: self.lost,
        })
    }
}

impl Trigger {
    /// The trigger of a create.
    pub fn create() -> Self {
        Trigger::new(TriggerKind::Create)
    }
}

#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::service::{PortSpec, Protocol, ServiceSpec, Strategy};
    use crate::store::MemoryStore;

    pub(super) fn paz() -> Paz {
        Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default())
    }

    pub(super) fn web() -> ServiceSpec {
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        spec.public = true;
        spec
    }

    pub(super) fn spec(strategy: Strategy) -> ServiceSpec {
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        spec.deploy.strategy = strategy;
        spec
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fixtures::web;
    use super::*;
    use crate::store::{LeaseId, MemoryStore, Txn};

    /// A store whose commits always lose their race, after the first `allowed` ones.
    struct AlwaysRacing {
        inner: MemoryStore,
        allowed: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl Store for AlwaysRacing {
        async fn get(&self, key: &str) -> Result<Option<crate::store::KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<crate::store::Listing> {
            self.inner.list(prefix).await
        }
        async fn commit(&self, txn: Txn) -> Result<crate::store::Revision> {
            use std::sync::atomic::Ordering;
            if self
                .allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return self.inner.commit(txn).await;
            }
            Err(Error::Conflict {
                key: "raced".into(),
            })
        }
        async fn watch(
            &self,
            prefix: &str,
            from: crate::store::Revision,
        ) -> Result<crate::store::WatchStream> {
            self.inner.watch(prefix, from).await
        }
        async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
            self.inner.grant_lease(ttl).await
        }
        async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
            self.inner.keep_alive(lease).await
        }
        async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
            self.inner.revoke_lease(lease).await
        }
    }

    #[tokio::test]
    async fn a_race_lost_on_every_attempt_is_a_conflict_of_its_own() {
        let store = AlwaysRacing {
            inner: MemoryStore::new(),
            allowed: 1.into(),
        };
        let paz = Paz::new(Arc::new(store), EngineConfig::default());
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let err = paz.scale("web", 3).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyConflicts {
                    kind: "service",
                    attempts: MAX_ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), "CONCURRENT_CHANGES");
        assert_eq!(
            paz.service("web").await.unwrap().spec.instances,
            web().instances
        );
    }
}
