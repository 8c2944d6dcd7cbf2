//! The engine: services, releases and deployments on top of any [`Store`], with events.
//!
//! Every change is one store transaction guarded by compare-and-swap on the service record,
//! so concurrent changes to one service are serialized and none is lost: a writer that
//! loses the race re-reads and tries again (or, when the caller named the revision it
//! expected, fails with [`Error::RevisionMismatch`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::model::{Deployment, DeploymentStatus, Host, Release, Trigger, TriggerKind};
use crate::service::{MAX_INSTANCES, Service, ServiceSpec};
use crate::store::{Condition, KeyValue, LeaseId, Store, Txn};

const SERVICES: &str = "/paz/services/";
const RELEASES: &str = "/paz/releases/";
const DEPLOYMENTS: &str = "/paz/deployments/";
const DOMAINS: &str = "/paz/domains/";
const HOSTS: &str = "/paz/hosts/";
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

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The cluster domain: public services answer at `<name>.<domain>`.
    pub domain: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            domain: "localhost".into(),
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

    fn emit(&self, revision: u64, kinds: Vec<EventKind>) {
        let at = jiff::Timestamp::now();
        for kind in kinds {
            // No subscriber is fine.
            let _ = self.events.send(Event { revision, at, kind });
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

    /// Every service, by name.
    pub async fn services(&self) -> Result<Vec<Service>> {
        let listing = self.store.list(SERVICES).await?;
        listing
            .items
            .iter()
            .map(|kv| {
                let mut service: Service = decode(kv)?;
                service.revision = kv.mod_revision;
                Ok(service)
            })
            .collect()
    }

    /// One service.
    pub async fn service(&self, name: &str) -> Result<Service> {
        Ok(self.load(name).await?.service)
    }

    /// Checks that the custom domains of `spec` are free (or already its own), and returns the
    /// conditions and writes that claim them and release the ones it no longer uses.
    async fn claim_domains(
        &self,
        spec: &ServiceSpec,
        old: Option<&ServiceSpec>,
        mut txn: Txn,
    ) -> Result<Txn> {
        let default_host = format!("{}.{}", spec.name, self.config.domain);
        if let Some(kv) = self.store.get(&domain_key(&default_host)).await? {
            let owner = String::from_utf8_lossy(&kv.value).into_owned();
            if owner != spec.name {
                return Err(Error::DomainConflict {
                    domain: default_host,
                    service: owner,
                });
            }
        }
        let suffix = format!(".{}", self.config.domain);
        for domain in &spec.domains {
            if let Some(other) = domain.strip_suffix(&suffix)
                && other != spec.name
                && !other.contains('.')
                && self.store.get(&service_key(other)).await?.is_some()
            {
                return Err(Error::DomainConflict {
                    domain: domain.clone(),
                    service: other.to_owned(),
                });
            }
            let key = domain_key(domain);
            match self.store.get(&key).await? {
                Some(kv) if kv.value != spec.name.as_bytes() => {
                    let owner = String::from_utf8_lossy(&kv.value).into_owned();
                    return Err(Error::DomainConflict {
                        domain: domain.clone(),
                        service: owner,
                    });
                }
                Some(kv) => txn = txn.when(key, Condition::ModRevision(kv.mod_revision)),
                None => {
                    txn = txn
                        .when(key.clone(), Condition::Absent)
                        .put(key, spec.name.as_bytes().to_vec())
                }
            }
        }
        if let Some(old) = old {
            for domain in old.domains.iter().filter(|d| !spec.domains.contains(d)) {
                txn = txn.delete(domain_key(domain));
            }
        }
        Ok(txn)
    }

    /// Declares a new service; makes release v1 and records its first deployment.
    pub async fn create_service(&self, spec: ServiceSpec, trigger: Trigger) -> Result<Applied> {
        spec.validate()?;
        let mut retries = Retries::new("service", &spec.name);
        loop {
            let key = service_key(&spec.name);
            if self.store.get(&key).await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: "service",
                    name: spec.name.clone(),
                });
            }
            let now = jiff::Timestamp::now();
            let release = Release {
                service: spec.name.clone(),
                version: 1,
                spec: spec.clone(),
                image_digest: None,
                trigger: trigger.clone(),
                created_at: now,
            };
            let deployment = new_deployment(&release, 1, None, trigger.clone(), now);
            let service = Service {
                spec: spec.clone(),
                current_release: Some(1),
                latest_release: 1,
                latest_deployment: 1,
                created_at: now,
                updated_at: now,
                revision: 0,
            };
            // Leftovers of an earlier service with this name are cleared in the same commit.
            let txn = Txn::new()
                .when(key.clone(), Condition::Absent)
                .delete_prefix(format!("{RELEASES}{}/", spec.name))
                .delete_prefix(format!("{DEPLOYMENTS}{}/", spec.name))
                .put(key, encode(&service))
                .put(release_key(&spec.name, 1), encode(&release))
                .put(deployment_key(&spec.name, 1), encode(&deployment));
            let txn = self.claim_domains(&spec, None, txn).await?;
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.emit(
                        revision,
                        vec![
                            EventKind::ServiceCreated {
                                service: spec.name.clone(),
                            },
                            EventKind::ReleaseCreated {
                                service: spec.name.clone(),
                                version: 1,
                            },
                            deployment_event(&deployment),
                        ],
                    );
                    let service = Service {
                        revision,
                        ..service
                    };
                    return Ok(Applied {
                        service,
                        release: Some(release),
                        deployment: Some(deployment),
                    });
                }
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The core of every change: loads the service, lets `change` compute the new state,
    /// and commits it guarded by the service's revision, retrying on a lost race.
    async fn change<F>(
        &self,
        name: &str,
        expected_revision: Option<u64>,
        mut change: F,
    ) -> Result<Applied>
    where
        F: FnMut(&Service) -> Result<Planned> + Send,
    {
        let mut retries = Retries::new("service", name);
        loop {
            let current = self.load(name).await?;
            if let Some(expected) = expected_revision
                && expected != current.mod_revision
            {
                return Err(Error::RevisionMismatch {
                    kind: "service",
                    name: name.to_owned(),
                    expected,
                    actual: current.mod_revision,
                });
            }
            let planned = change(&current.service)?;
            let key = service_key(name);
            let mut txn =
                Txn::new().when(key.clone(), Condition::ModRevision(current.mod_revision));
            let mut events = vec![EventKind::ServiceUpdated {
                service: name.to_owned(),
            }];
            if planned.service.spec.domains != current.service.spec.domains {
                txn = self
                    .claim_domains(&planned.service.spec, Some(&current.service.spec), txn)
                    .await?;
            }
            txn = txn.put(key, encode(&planned.service));
            if let Some(release) = &planned.release {
                txn = txn
                    .when(release_key(name, release.version), Condition::Absent)
                    .put(release_key(name, release.version), encode(release));
                events.push(EventKind::ReleaseCreated {
                    service: name.to_owned(),
                    version: release.version,
                });
            }
            if let Some(deployment) = &planned.deployment {
                if let Some(mut previous) = self.latest_deployment_of(&current.service).await?
                    && !previous.status.is_final()
                {
                    crate::deploy::lifecycle::cancel(
                        &mut previous,
                        format!("superseded by deployment {}", deployment.id),
                        jiff::Timestamp::now(),
                    );
                    txn = txn.put(deployment_key(name, previous.sequence), encode(&previous));
                    events.push(deployment_event(&previous));
                }
                txn = txn.put(
                    deployment_key(name, deployment.sequence),
                    encode(deployment),
                );
                events.push(deployment_event(deployment));
            }
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.emit(revision, events);
                    let service = Service {
                        revision,
                        ..planned.service
                    };
                    return Ok(Applied {
                        service,
                        release: planned.release,
                        deployment: planned.deployment,
                    });
                }
                Err(Error::Conflict { .. }) if expected_revision.is_none() => retries.lost()?,
                Err(Error::Conflict { .. }) => {
                    let actual = self.load(name).await?.mod_revision;
                    return Err(Error::RevisionMismatch {
                        kind: "service",
                        name: name.to_owned(),
                        expected: expected_revision.unwrap_or_default(),
                        actual,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Replaces a service's spec. A change beyond the instance count makes a new release and
    /// records a deployment; a change of the count alone does not.
    pub async fn update_service(
        &self,
        name: &str,
        spec: ServiceSpec,
        expected_revision: Option<u64>,
        trigger: Trigger,
    ) -> Result<Applied> {
        if spec.name != name {
            return Err(Error::invalid(
                "name",
                "NAME_MISMATCH",
                format!(
                    "the spec names {:?} but the request is for {name:?}; services cannot be renamed",
                    spec.name
                ),
            ));
        }
        spec.validate()?;
        self.change(name, expected_revision, |current| {
            Ok(plan_spec_change(current, &spec, &trigger))
        })
        .await
    }

    /// Applies a JSON merge patch (RFC 7396) to a service's spec, then updates it.
    pub async fn patch_service(
        &self,
        name: &str,
        patch: &serde_json::Value,
        expected_revision: Option<u64>,
        trigger: Trigger,
    ) -> Result<Applied> {
        if !patch.is_object() {
            return Err(Error::invalid(
                "body",
                "INVALID_PATCH",
                "a merge patch must be a JSON object",
            ));
        }
        self.change(name, expected_revision, |current| {
            let mut document = serde_json::to_value(&current.spec).expect("specs serialize");
            merge_patch(&mut document, patch);
            let spec: ServiceSpec = serde_json::from_value(document).map_err(|e| {
                Error::invalid(
                    "body",
                    "INVALID_PATCH",
                    format!("the patched spec is invalid: {e}"),
                )
            })?;
            if spec.name != name {
                return Err(Error::invalid(
                    "name",
                    "NAME_MISMATCH",
                    "services cannot be renamed",
                ));
            }
            spec.validate()?;
            Ok(plan_spec_change(current, &spec, &trigger))
        })
        .await
    }

    /// Sets the instance count (no new release).
    pub async fn scale(&self, name: &str, instances: u32) -> Result<Service> {
        if instances > MAX_INSTANCES {
            return Err(Error::invalid(
                "instances",
                "INVALID_INSTANCES",
                format!("instances is {instances}; it must be 0 to {MAX_INSTANCES}"),
            ));
        }
        let applied = self
            .change(name, None, |current| {
                let mut service = current.clone();
                service.spec.instances = instances;
                service.updated_at = jiff::Timestamp::now();
                Ok(Planned {
                    service,
                    release: None,
                    deployment: None,
                })
            })
            .await?;
        Ok(applied.service)
    }

    /// Makes a new release (with a new image, or the same spec again) and records its
    /// deployment.
    pub async fn deploy(
        &self,
        name: &str,
        image: Option<String>,
        trigger: Trigger,
    ) -> Result<Deployment> {
        if let Some(image) = &image {
            crate::image::ImageRef::parse(image)
                .map_err(|e| Error::invalid("image", "INVALID_IMAGE", e.to_string()))?;
        }
        let applied = self
            .change(name, None, |current| {
                let mut spec = current.spec.clone();
                if let Some(image) = &image {
                    spec.image = image.clone();
                }
                Ok(plan_release(current, spec, &trigger))
            })
            .await?;
        Ok(applied
            .deployment
            .expect("a deploy always records a deployment"))
    }

    /// Goes back to an earlier release (by default the one before the current) and records
    /// the deployment. The instance count stays as it is.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u64>,
        trigger: Trigger,
    ) -> Result<Deployment> {
        let current = self.load(name).await?.service;
        let target = match to {
            Some(version) => version,
            None => {
                let releases = self.releases(name).await?;
                let current_version = current.current_release.unwrap_or(0);
                releases
                    .iter()
                    .rev()
                    .map(|r| r.version)
                    .find(|&v| v < current_version)
                    .ok_or_else(|| Error::InvalidState(format!("service {name:?} has no release before v{current_version} to roll back to")))?
            }
        };
        let release = self.release(name, target).await?;
        let applied = self
            .change(name, None, |current| {
                let mut service = current.clone();
                let now = jiff::Timestamp::now();
                service.spec = ServiceSpec {
                    instances: current.spec.instances,
                    ..release.spec.clone()
                };
                service.latest_deployment += 1;
                service.updated_at = now;
                let deployment = new_deployment(
                    &release,
                    service.latest_deployment,
                    current.current_release,
                    trigger.clone(),
                    now,
                );
                service.current_release = Some(release.version);
                Ok(Planned {
                    service,
                    release: None,
                    deployment: Some(deployment),
                })
            })
            .await?;
        Ok(applied
            .deployment
            .expect("a rollback always records a deployment"))
    }

    /// Deletes a service with its releases, deployments and domains.
    pub async fn delete_service(&self, name: &str, expected_revision: Option<u64>) -> Result<()> {
        let mut retries = Retries::new("service", name);
        loop {
            let current = self.load(name).await?;
            if let Some(expected) = expected_revision
                && expected != current.mod_revision
            {
                return Err(Error::RevisionMismatch {
                    kind: "service",
                    name: name.into(),
                    expected,
                    actual: current.mod_revision,
                });
            }
            let mut txn = Txn::new()
                .when(
                    service_key(name),
                    Condition::ModRevision(current.mod_revision),
                )
                .delete(service_key(name))
                .delete_prefix(format!("{RELEASES}{name}/"))
                .delete_prefix(format!("{DEPLOYMENTS}{name}/"));
            for domain in &current.service.spec.domains {
                txn = txn.delete(domain_key(domain));
            }
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.emit(
                        revision,
                        vec![EventKind::ServiceDeleted {
                            service: name.to_owned(),
                        }],
                    );
                    return Ok(());
                }
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The releases of a service, oldest first.
    pub async fn releases(&self, name: &str) -> Result<Vec<Release>> {
        self.load(name).await?;
        let listing = self.store.list(&format!("{RELEASES}{name}/")).await?;
        listing.items.iter().map(decode).collect()
    }

    /// One release.
    pub async fn release(&self, name: &str, version: u64) -> Result<Release> {
        let kv = self
            .store
            .get(&release_key(name, version))
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "release",
                name: format!("{name} v{version}"),
            })?;
        decode(&kv)
    }

    /// The deployments of a service, oldest first (its deploy history).
    pub async fn deployments(&self, name: &str) -> Result<Vec<Deployment>> {
        self.load(name).await?;
        let listing = self.store.list(&format!("{DEPLOYMENTS}{name}/")).await?;
        listing.items.iter().map(decode).collect()
    }

    /// One deployment by id (`<service>-<sequence>`).
    pub async fn deployment(&self, id: &str) -> Result<Deployment> {
        Ok(self.load_deployment(id).await?.0)
    }

    /// Stores a deployment's new state (steps, status). Used by the reconciler.
    pub async fn save_deployment(&self, deployment: &Deployment) -> Result<()> {
        let mut retries = Retries::new("deployment", &deployment.id);
        loop {
            let (stored, mod_revision) = self.load_deployment(&deployment.id).await?;
            if !crate::deploy::lifecycle::can_move(stored.status, deployment.status) {
                // Someone ended it meanwhile (a newer deploy, an abort): that word is final.
                tracing::debug!(deployment = %deployment.id, status = %stored.status, "not reviving a finished deployment");
                return Ok(());
            }
            let mut merged = deployment.clone();
            // A promotion recorded meanwhile is not lost.
            merged.canary_step = merged.canary_step.max(stored.canary_step);
            let key = deployment_key(&deployment.service, deployment.sequence);
            let txn = Txn::new()
                .when(key.clone(), Condition::ModRevision(mod_revision))
                .put(key, encode(&merged));
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.emit(revision, vec![deployment_event(&merged)]);
                    return Ok(());
                }
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// A deployment and the mod revision of its record.
    async fn load_deployment(&self, id: &str) -> Result<(Deployment, u64)> {
        let not_found = || Error::NotFound {
            kind: "deployment",
            name: id.to_owned(),
        };
        let (service, sequence) = Deployment::parse_id(id).ok_or_else(not_found)?;
        let kv = self
            .store
            .get(&deployment_key(service, sequence))
            .await?
            .ok_or_else(not_found)?;
        Ok((decode(&kv)?, kv.mod_revision))
    }

    /// The newest deployment of a service already loaded (one store read fewer than
    /// [`Paz::latest_deployment`]).
    pub async fn latest_deployment_of(&self, service: &Service) -> Result<Option<Deployment>> {
        if service.latest_deployment == 0 {
            return Ok(None);
        }
        match self
            .store
            .get(&deployment_key(
                &service.spec.name,
                service.latest_deployment,
            ))
            .await?
        {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// The service's newest deployment, if any.
    pub async fn latest_deployment(&self, name: &str) -> Result<Option<Deployment>> {
        let service = self.load(name).await?.service;
        self.latest_deployment_of(&service).await
    }

    /// Ends a deployment. A failed one reverts the service to the release that served
    /// before (keeping the instance count), in the same commit, so the reconciler converges
    /// back to it; a deployment that is already over is left as it is.
    pub async fn finish_deployment(
        &self,
        id: &str,
        outcome: std::result::Result<(), String>,
    ) -> Result<Deployment> {
        let mut retries = Retries::new("deployment", id);
        loop {
            let (mut deployment, deployment_revision) = self.load_deployment(id).await?;
            if deployment.status.is_final() {
                return Ok(deployment);
            }
            let current = self.load(&deployment.service).await?;
            let now = jiff::Timestamp::now();
            crate::deploy::lifecycle::finish(&mut deployment, outcome.clone(), now);
            let dkey = deployment_key(&deployment.service, deployment.sequence);
            let mut txn =
                Txn::new().when(dkey.clone(), Condition::ModRevision(deployment_revision));
            let mut events = Vec::new();
            // A failed deployment reverts the service to the release that served before.
            if outcome.is_err() && current.service.current_release == Some(deployment.release) {
                let mut service = current.service.clone();
                service.current_release = deployment.previous_release;
                if let Some(previous) = deployment.previous_release {
                    let release = self.release(&deployment.service, previous).await?;
                    service.spec = ServiceSpec {
                        instances: service.spec.instances,
                        ..release.spec
                    };
                }
                service.updated_at = now;
                if service.spec.domains != current.service.spec.domains {
                    // The reverted spec claims its domains back and frees the failed one's.
                    match self
                        .claim_domains(&service.spec, Some(&current.service.spec), txn.clone())
                        .await
                    {
                        Ok(claimed) => txn = claimed,
                        Err(Error::DomainConflict {
                            domain,
                            service: owner,
                        }) => {
                            tracing::warn!(%domain, %owner, "a domain of the previous release was taken meanwhile");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let key = service_key(&deployment.service);
                txn = txn
                    .when(key.clone(), Condition::ModRevision(current.mod_revision))
                    .put(key, encode(&service));
                events.push(EventKind::ServiceUpdated {
                    service: deployment.service.clone(),
                });
            }
            txn = txn.put(dkey, encode(&deployment));
            events.push(deployment_event(&deployment));
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.emit(revision, events);
                    return Ok(deployment);
                }
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves a running canary deployment to its next traffic step.
    pub async fn promote(&self, name: &str) -> Result<Deployment> {
        let mut deployment = self
            .latest_deployment(name)
            .await?
            .filter(|d| !d.status.is_final() && d.strategy == crate::service::Strategy::Canary)
            .ok_or_else(|| {
                Error::InvalidState(format!(
                    "service {name:?} has no canary deployment in progress"
                ))
            })?;
        let release = self.release(name, deployment.release).await?;
        let steps = &release.spec.deploy.canary_steps;
        if deployment.canary_step as usize + 1 >= steps.len() {
            return Err(Error::InvalidState(format!(
                "deployment {} is already at its last step (100%)",
                deployment.id
            )));
        }
        deployment.canary_step += 1;
        let percent = steps[deployment.canary_step as usize];
        deployment.record(
            format!("promoted to {percent}%"),
            crate::model::StepStatus::Succeeded,
            None,
        );
        self.save_deployment(&deployment).await?;
        Ok(deployment)
    }

    /// Aborts a running deployment: it fails and the service goes back to its previous release.
    pub async fn abort(&self, name: &str) -> Result<Deployment> {
        let deployment = self
            .latest_deployment(name)
            .await?
            .filter(|d| !d.status.is_final())
            .ok_or_else(|| {
                Error::InvalidState(format!("service {name:?} has no deployment in progress"))
            })?;
        self.finish_deployment(&deployment.id, Err("aborted by the user".into()))
            .await
    }

    /// The hosts that registered themselves.
    pub async fn hosts(&self) -> Result<Vec<Host>> {
        let listing = self.store.list(HOSTS).await?;
        listing.items.iter().map(decode).collect()
    }

    /// Registers a host on a lease of `ttl`; keep the lease alive to stay listed.
    pub async fn register_host(&self, host: &Host, ttl: Duration) -> Result<LeaseId> {
        let lease = self.store.grant_lease(ttl).await?;
        self.store
            .commit(Txn::new().put_with_lease(format!("{HOSTS}{}", host.id), encode(host), lease))
            .await?;
        Ok(lease)
    }
}

/// The outcome of a change before it is committed.
struct Planned {
    service: Service,
    release: Option<Release>,
    deployment: Option<Deployment>,
}

fn plan_spec_change(current: &Service, spec: &ServiceSpec, trigger: &Trigger) -> Planned {
    if current.spec.differs_beyond_instances(spec) {
        plan_release(current, spec.clone(), trigger)
    } else {
        let mut service = current.clone();
        service.spec = spec.clone();
        service.updated_at = jiff::Timestamp::now();
        Planned {
            service,
            release: None,
            deployment: None,
        }
    }
}

fn plan_release(current: &Service, spec: ServiceSpec, trigger: &Trigger) -> Planned {
    let now = jiff::Timestamp::now();
    let mut service = current.clone();
    service.latest_release += 1;
    service.latest_deployment += 1;
    let release = Release {
        service: spec.name.clone(),
        version: service.latest_release,
        spec: spec.clone(),
        image_digest: None,
        trigger: trigger.clone(),
        created_at: now,
    };
    let deployment = new_deployment(
        &release,
        service.latest_deployment,
        current.current_release,
        trigger.clone(),
        now,
    );
    service.spec = spec;
    service.current_release = Some(release.version);
    service.updated_at = now;
    Planned {
        service,
        release: Some(release),
        deployment: Some(deployment),
    }
}

fn new_deployment(
    release: &Release,
    sequence: u64,
    previous_release: Option<u64>,
    trigger: Trigger,
    now: jiff::Timestamp,
) -> Deployment {
    Deployment {
        id: Deployment::make_id(&release.service, sequence),
        service: release.service.clone(),
        sequence,
        release: release.version,
        previous_release,
        strategy: release.spec.deploy.strategy,
        status: DeploymentStatus::Pending,
        steps: Vec::new(),
        canary_step: 0,
        trigger,
        error: None,
        created_at: now,
        started_at: None,
        finished_at: None,
    }
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

/// Applies an RFC 7396 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            let Value::Object(target) = target else {
                unreachable!()
            };
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl Trigger {
    /// The trigger of a create.
    pub fn create() -> Self {
        Trigger::new(TriggerKind::Create)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{PortSpec, Protocol};
    use crate::store::MemoryStore;

    fn paz() -> Paz {
        Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default())
    }

    fn web() -> ServiceSpec {
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        spec.public = true;
        spec
    }

    #[tokio::test]
    async fn create_makes_release_and_deployment() {
        let paz = paz();
        let mut events = paz.subscribe();
        let applied = paz.create_service(web(), Trigger::create()).await.unwrap();
        assert_eq!(applied.service.current_release, Some(1));
        assert_eq!(applied.deployment.unwrap().id, "web-1");
        assert_eq!(
            events.recv().await.unwrap().kind,
            EventKind::ServiceCreated {
                service: "web".into()
            }
        );
        let again = paz
            .create_service(web(), Trigger::create())
            .await
            .unwrap_err();
        assert_eq!(again.code(), "SERVICE_EXISTS");
        let mut bad = web();
        bad.name = "Bad_Name".into();
        assert_eq!(
            paz.create_service(bad, Trigger::create())
                .await
                .unwrap_err()
                .code(),
            "INVALID_NAME"
        );
        assert!(
            paz.services().await.unwrap().len() == 1,
            "nothing stored for bad input"
        );
    }

    #[tokio::test]
    async fn updates_release_only_when_the_spec_changes() {
        let paz = paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let mut spec = web();
        spec.instances = 5;
        let applied = paz
            .update_service("web", spec.clone(), None, Trigger::new(TriggerKind::Update))
            .await
            .unwrap();
        assert!(applied.release.is_none(), "a count change is no release");
        spec.image = "demo:v2".into();
        let applied = paz
            .update_service("web", spec, None, Trigger::new(TriggerKind::Update))
            .await
            .unwrap();
        assert_eq!(applied.release.unwrap().version, 2);
        let patched = paz
            .patch_service(
                "web",
                &serde_json::json!({"env": {"A": "1"}}),
                None,
                Trigger::new(TriggerKind::Update),
            )
            .await
            .unwrap();
        assert_eq!(patched.service.spec.env["A"], "1");
        assert_eq!(patched.service.latest_release, 3);
        let unknown = paz
            .patch_service(
                "web",
                &serde_json::json!({"replicas": 2}),
                None,
                Trigger::new(TriggerKind::Update),
            )
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), "INVALID_PATCH");
        let stale = paz
            .patch_service(
                "web",
                &serde_json::json!({"public": false}),
                Some(1),
                Trigger::create(),
            )
            .await;
        assert_eq!(stale.unwrap_err().code(), "REVISION_MISMATCH");
    }

    #[tokio::test]
    async fn deploy_and_rollback() {
        let paz = paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let d = paz
            .deploy(
                "web",
                Some("demo:v2".into()),
                Trigger::new(TriggerKind::Deploy),
            )
            .await
            .unwrap();
        assert_eq!(
            (d.id.as_str(), d.release, d.previous_release),
            ("web-2", 2, Some(1))
        );
        assert_eq!(
            paz.deploy("web", Some("Bad Image".into()), Trigger::create())
                .await
                .unwrap_err()
                .code(),
            "INVALID_IMAGE"
        );
        let back = paz
            .rollback("web", None, Trigger::new(TriggerKind::Rollback))
            .await
            .unwrap();
        assert_eq!((back.release, back.previous_release), (1, Some(2)));
        let service = paz.service("web").await.unwrap();
        assert_eq!(
            (service.spec.image.as_str(), service.current_release),
            ("demo:v1", Some(1))
        );
        assert_eq!(paz.deployments("web").await.unwrap().len(), 3);
        assert_eq!(paz.deployment("web-3").await.unwrap().release, 1);
        assert_eq!(
            paz.rollback("web", Some(9), Trigger::create())
                .await
                .unwrap_err()
                .code(),
            "RELEASE_NOT_FOUND"
        );
    }

    #[tokio::test]
    async fn domains_are_exclusive() {
        let paz = paz();
        let mut a = web();
        a.domains = vec!["shop.example.com".into()];
        paz.create_service(a, Trigger::create()).await.unwrap();
        let mut b = web();
        b.name = "api".into();
        b.domains = vec!["shop.example.com".into()];
        assert_eq!(
            paz.create_service(b.clone(), Trigger::create())
                .await
                .unwrap_err()
                .code(),
            "DOMAIN_CONFLICT"
        );
        b.domains = vec!["web.localhost".into()];
        assert_eq!(
            paz.create_service(b, Trigger::create())
                .await
                .unwrap_err()
                .code(),
            "DOMAIN_CONFLICT"
        );
        paz.delete_service("web", None).await.unwrap();
        let mut c = web();
        c.name = "shop".into();
        c.domains = vec!["shop.example.com".into()];
        paz.create_service(c, Trigger::create())
            .await
            .expect("a deleted service frees its domains");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_are_serialized() {
        let paz = paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let paz = paz.clone();
            tasks.push(tokio::spawn(async move {
                let patch = serde_json::json!({"env": {format!("K{i}"): "v"}});
                paz.patch_service("web", &patch, None, Trigger::new(TriggerKind::Update))
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let service = paz.service("web").await.unwrap();
        assert_eq!(service.spec.env.len(), 20, "no concurrent update is lost");
        assert_eq!(service.latest_release, 21);
        assert_eq!(paz.releases("web").await.unwrap().len(), 21);
    }

    #[tokio::test]
    async fn recreating_a_deleted_service_starts_fresh() {
        let paz = paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        paz.deploy("web", None, Trigger::create()).await.unwrap();
        paz.delete_service("web", None).await.unwrap();
        assert_eq!(
            paz.service("web").await.unwrap_err().code(),
            "SERVICE_NOT_FOUND"
        );
        paz.create_service(web(), Trigger::create()).await.unwrap();
        assert_eq!(paz.releases("web").await.unwrap().len(), 1);
    }

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

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &serde_json::json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, serde_json::json!({"a": "z", "c": {"d": "e"}}));
    }
}

#[cfg(test)]
mod deployment_tests {
    use super::*;
    use crate::service::{PortSpec, Protocol, Strategy};
    use crate::store::MemoryStore;

    fn paz() -> Paz {
        Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default())
    }

    fn spec(strategy: Strategy) -> ServiceSpec {
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        spec.deploy.strategy = strategy;
        spec
    }

    #[tokio::test]
    async fn a_failed_deployment_reverts_the_service() {
        let paz = paz();
        paz.create_service(spec(Strategy::Rolling), Trigger::create())
            .await
            .unwrap();
        paz.finish_deployment("web-1", Ok(())).await.unwrap();
        paz.scale("web", 3).await.unwrap();
        let d = paz
            .deploy(
                "web",
                Some("demo:v2".into()),
                Trigger::new(TriggerKind::Deploy),
            )
            .await
            .unwrap();
        let failed = paz
            .finish_deployment(&d.id, Err("health check failed".into()))
            .await
            .unwrap();
        assert_eq!(
            (failed.status, failed.error.as_deref()),
            (DeploymentStatus::Failed, Some("health check failed"))
        );
        let service = paz.service("web").await.unwrap();
        assert_eq!(
            (
                service.current_release,
                service.spec.image.as_str(),
                service.spec.instances
            ),
            (Some(1), "demo:v1", 3)
        );
        let again = paz.finish_deployment(&d.id, Ok(())).await.unwrap();
        assert_eq!(
            again.status,
            DeploymentStatus::Failed,
            "a finished deployment stays finished"
        );
    }

    #[tokio::test]
    async fn a_new_deployment_supersedes_a_running_one() {
        let paz = paz();
        paz.create_service(spec(Strategy::Rolling), Trigger::create())
            .await
            .unwrap();
        paz.deploy(
            "web",
            Some("demo:v2".into()),
            Trigger::new(TriggerKind::Deploy),
        )
        .await
        .unwrap();
        let first = paz.deployment("web-1").await.unwrap();
        assert_eq!(first.status, DeploymentStatus::Cancelled);
        assert_eq!(
            first.error.as_deref(),
            Some("superseded by deployment web-2")
        );
    }

    #[tokio::test]
    async fn canary_promote_and_abort() {
        let paz = paz();
        paz.create_service(spec(Strategy::Canary), Trigger::create())
            .await
            .unwrap();
        paz.finish_deployment("web-1", Ok(())).await.unwrap();
        assert_eq!(
            paz.promote("web").await.unwrap_err().code(),
            "INVALID_STATE"
        );
        paz.deploy(
            "web",
            Some("demo:v2".into()),
            Trigger::new(TriggerKind::Deploy),
        )
        .await
        .unwrap();
        assert_eq!(paz.promote("web").await.unwrap().canary_step, 1);
        assert_eq!(paz.promote("web").await.unwrap().canary_step, 2);
        assert_eq!(
            paz.promote("web").await.unwrap_err().code(),
            "INVALID_STATE"
        );
        let aborted = paz.abort("web").await.unwrap();
        assert_eq!(aborted.status, DeploymentStatus::Failed);
        assert_eq!(paz.service("web").await.unwrap().current_release, Some(1));
    }

    #[tokio::test]
    async fn a_stale_save_never_revives_a_finished_deployment() {
        let paz = paz();
        paz.create_service(spec(Strategy::Canary), Trigger::create())
            .await
            .unwrap();
        let mut stale = paz.deployment("web-1").await.unwrap();
        stale.status = DeploymentStatus::Running;
        paz.deploy(
            "web",
            Some("demo:v2".into()),
            Trigger::new(TriggerKind::Deploy),
        )
        .await
        .unwrap();
        paz.save_deployment(&stale).await.unwrap();
        assert_eq!(
            paz.deployment("web-1").await.unwrap().status,
            DeploymentStatus::Cancelled
        );

        let mut running = paz.deployment("web-2").await.unwrap();
        running.status = DeploymentStatus::Running;
        paz.promote("web").await.unwrap();
        paz.save_deployment(&running).await.unwrap();
        let saved = paz.deployment("web-2").await.unwrap();
        assert_eq!(
            (saved.status, saved.canary_step),
            (DeploymentStatus::Running, 1),
            "the promotion is kept"
        );
    }

    #[tokio::test]
    async fn a_failed_deployment_gives_domains_back() {
        let paz = paz();
        let mut first = spec(Strategy::Rolling);
        first.domains = vec!["a.example.com".into()];
        paz.create_service(first.clone(), Trigger::create())
            .await
            .unwrap();
        paz.finish_deployment("web-1", Ok(())).await.unwrap();
        let mut second = first.clone();
        second.domains = vec!["b.example.com".into()];
        let applied = paz
            .update_service("web", second, None, Trigger::new(TriggerKind::Update))
            .await
            .unwrap();
        paz.finish_deployment(&applied.deployment.unwrap().id, Err("boom".into()))
            .await
            .unwrap();
        let mut other = spec(Strategy::Rolling);
        other.name = "api".into();
        other.domains = vec!["a.example.com".into()];
        let taken = paz
            .create_service(other.clone(), Trigger::create())
            .await
            .unwrap_err();
        assert_eq!(
            taken.code(),
            "DOMAIN_CONFLICT",
            "the reverted service owns a.example.com again"
        );
        other.domains = vec!["b.example.com".into()];
        paz.create_service(other, Trigger::create())
            .await
            .expect("b.example.com was freed");
    }
}
