//! Services: list, create, change (update, merge patch, scale) and delete them, the custom
//! domains they claim, and [`merge_patch`]. `Paz::change` is the compare-and-swap core every
//! change to a service goes through, deploys and rollbacks included.

use std::collections::BTreeSet;

use super::deploys::{new_deployment, plan_release};
use super::retention::{KEEP_DEPLOYMENTS, retain_releases};
use super::{
    Applied, DEPLOYMENTS, Paz, RELEASES, Retries, SEALED, SERVICES, decode, deployment_event,
    deployment_key, domain_key, encode, release_key, sealed_current_key, sealed_key, service_key,
};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::model::{Deployment, Release, Trigger, TriggerKind};
use crate::service::{MAX_INSTANCES, Service, ServiceSpec};
use crate::store::{Condition, Txn};

impl Paz {
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
    pub(super) async fn claim_domains(
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
        self.admit(&spec)?;
        let mut retries = Retries::new("service", &spec.name);
        loop {
            // No read first: the commit requires the key absent, and a conflict is read
            // once to tell "exists" from a lost race (one store round trip less per create).
            let key = service_key(&spec.name);
            let now = jiff::Timestamp::now();
            let release = Release {
                service: spec.name.clone(),
                version: 1,
                spec: spec.clone(),
                image_digest: None,
                secrets: Default::default(),
                trigger: trigger.clone(),
                created_at: now,
            };
            let deployment = new_deployment(&release, 1, None, trigger.clone(), now);
            let service = Service {
                spec: spec.clone(),
                current_release: Some(1),
                latest_release: 1,
                latest_deployment: 1,
                pruned_below: 0,
                pinned_releases: Default::default(),
                secrets: Default::default(),
                created_at: now,
                updated_at: now,
                revision: 0,
            };
            // Leftovers of an earlier service with this name are cleared in the same commit.
            let txn = Txn::new()
                .when(key.clone(), Condition::Absent)
                .delete_prefix(format!("{RELEASES}{}/", spec.name))
                .delete_prefix(format!("{DEPLOYMENTS}{}/", spec.name))
                .delete_prefix(format!("{SEALED}{}/", spec.name))
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
                Err(Error::Conflict { .. }) => {
                    if self.store.get(&service_key(&spec.name)).await?.is_some() {
                        return Err(Error::AlreadyExists {
                            kind: "service",
                            name: spec.name.clone(),
                        });
                    }
                    retries.lost()?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The core of every change: loads the service, lets `change` compute the new state,
    /// and commits it guarded by the service's revision, retrying on a lost race.
    pub(super) async fn change<F>(
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
            expect_revision(name, expected_revision, current.mod_revision)?;
            let mut planned = change(&current.service)?;
            if let Some(release) = planned.release.as_mut()
                && release.image_digest.is_none()
                && matches!(
                    release.trigger.kind,
                    TriggerKind::Update | TriggerKind::Apply
                )
            {
                release.image_digest = self
                    .pin_to_keep(&current.service, &release.spec.image)
                    .await?;
            }
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
            // The deployment in progress, if any: a new release keeps its releases, a new
            // deployment supersedes it. Read once for both.
            let running = if planned.release.is_some() || planned.deployment.is_some() {
                self.latest_deployment_of(&current.service)
                    .await?
                    .filter(|d| !d.status.is_final())
            } else {
                None
            };
            if let Some(release) = &planned.release {
                let mut protected: BTreeSet<u64> = [release.version]
                    .into_iter()
                    .chain(current.service.current_release)
                    .chain(planned.service.current_release)
                    .chain(planned.deployment.as_ref().and_then(|d| d.previous_release))
                    .collect();
                if let Some(running) = &running {
                    protected.insert(running.release);
                    protected.extend(running.previous_release);
                }
                let retention = retain_releases(
                    release.version,
                    self.config.keep_releases.max(2),
                    planned.service.pruned_below,
                    &planned.service.pinned_releases,
                    &protected,
                );
                for version in &retention.delete {
                    txn = txn
                        .delete(release_key(name, *version))
                        .delete(sealed_key(name, *version));
                }
                planned.service.pruned_below = retention.pruned_below;
                planned.service.pinned_releases = retention.pinned;
            }
            if let Some(deployment) = &planned.deployment
                && deployment.sequence > KEEP_DEPLOYMENTS
            {
                txn = txn.delete(deployment_key(name, deployment.sequence - KEEP_DEPLOYMENTS));
            }
            txn = txn.put(key, encode(&planned.service));
            // Secret values: the service's own set when it changed, and a copy for the
            // release (its instances get exactly these, whatever is set later).
            let sealed = match &planned.sealed {
                Some(change) => {
                    let sealed = change.apply(self.sealed_current(&current.service).await?);
                    txn = txn.put(sealed_current_key(name), encode(&sealed));
                    Some(sealed)
                }
                None => None,
            };
            if let Some(release) = planned.release.as_ref().filter(|r| !r.secrets.is_empty()) {
                let sealed = match sealed {
                    Some(sealed) => sealed,
                    None => self.sealed_current(&current.service).await?,
                };
                txn = txn.put(sealed_key(name, release.version), encode(&sealed));
            }
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
                if let Some(mut previous) = running {
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
        self.admit(&spec)?;
        self.change(name, expected_revision, |current| {
            check_env_against_secrets(current, &spec)?;
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
            self.admit(&spec)?;
            check_env_against_secrets(current, &spec)?;
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
                    sealed: None,
                })
            })
            .await?;
        Ok(applied.service)
    }

    /// Deletes a service with its releases, deployments and domains.
    pub async fn delete_service(&self, name: &str, expected_revision: Option<u64>) -> Result<()> {
        let mut retries = Retries::new("service", name);
        loop {
            let current = self.load(name).await?;
            expect_revision(name, expected_revision, current.mod_revision)?;
            let mut txn = Txn::new()
                .when(
                    service_key(name),
                    Condition::ModRevision(current.mod_revision),
                )
                .delete(service_key(name))
                .delete_prefix(format!("{RELEASES}{name}/"))
                .delete_prefix(format!("{DEPLOYMENTS}{name}/"))
                .delete_prefix(format!("{SEALED}{name}/"));
            for domain in &current.service.spec.domains {
                txn = txn.delete(domain_key(domain));
            }
            let txn = self.delete_hook_keys(name, txn).await?;
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
}

impl Paz {
    /// The pin of the service's current release when a change keeps its image: a change of
    /// settings (env, ports, a secret) runs the image that ran before, not whatever its tag
    /// points to by then. A deploy resolves the tag again.
    async fn pin_to_keep(&self, service: &Service, image: &str) -> Result<Option<String>> {
        let Some(version) = service.current_release else {
            return Ok(None);
        };
        let Some(kv) = self
            .store
            .get(&release_key(&service.spec.name, version))
            .await?
        else {
            return Ok(None);
        };
        let release: Release = decode(&kv)?;
        Ok(release.image_digest.filter(|_| release.spec.image == image))
    }

    /// Checks a spec before it is stored: its own rules, then the server's (host mounts).
    fn admit(&self, spec: &ServiceSpec) -> Result<()> {
        spec.validate()?;
        spec.check_host_mounts(self.config.allow_host_mounts)
    }
}

/// The outcome of a change before it is committed.
pub(super) struct Planned {
    pub(super) service: Service,
    pub(super) release: Option<Release>,
    pub(super) deployment: Option<Deployment>,
    /// How the service's sealed secret values change; `None` keeps them (and a new release
    /// copies them).
    pub(super) sealed: Option<super::secrets::SealedChange>,
}

/// Refuses a plain environment variable named like one of the service's secrets (which of
/// the two the instance would get is not something to guess).
fn check_env_against_secrets(current: &Service, spec: &ServiceSpec) -> Result<()> {
    match spec.env.keys().find(|k| current.secrets.contains_key(*k)) {
        Some(key) => Err(Error::invalid(
            format!("env.{key}"),
            "SECRET_CONFLICT",
            format!(
                "{key} is a secret of {}; a plain environment variable cannot have its name",
                spec.name
            ),
        )),
        None => Ok(()),
    }
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
            sealed: None,
        }
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

/// Refuses a change guarded by `If-Match` when the service is no longer at that revision.
fn expect_revision(name: &str, expected: Option<u64>, actual: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => Err(Error::RevisionMismatch {
            kind: "service",
            name: name.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{paz, web};
    use super::*;
    use crate::model::TriggerKind;

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
        assert_eq!(
            paz.releases("web").await.unwrap().len(),
            20,
            "the newest 20 releases are kept"
        );
    }

    async fn release_versions(paz: &Paz) -> Vec<u64> {
        let releases = paz.releases("web").await.unwrap();
        releases.iter().map(|r| r.version).collect()
    }

    /// Defect: every spec change kept a full release (and a deployment) forever.
    #[tokio::test]
    async fn old_releases_go_but_the_current_and_previous_stay() {
        let paz = Paz::new(
            std::sync::Arc::new(crate::MemoryStore::new()),
            crate::EngineConfig {
                keep_releases: 5,
                ..Default::default()
            },
        );
        paz.create_service(web(), Trigger::create()).await.unwrap();
        // Release 1 stays current while 2..=12 are made (as if each failed at once).
        for i in 2..=12 {
            let patch = serde_json::json!({"env": {"N": i.to_string()}});
            paz.patch_service("web", &patch, None, Trigger::new(TriggerKind::Update))
                .await
                .unwrap();
            paz.finish_deployment(&format!("web-{i}"), Err("failed".into()))
                .await
                .unwrap();
        }
        let service = paz.service("web").await.unwrap();
        assert_eq!(service.current_release, Some(1));
        let versions = release_versions(&paz).await;
        assert_eq!(
            versions,
            [1, 8, 9, 10, 11, 12],
            "the newest 5 and the current"
        );
        // Once 1 is no longer needed it goes too.
        paz.deploy("web", None, Trigger::new(TriggerKind::Deploy))
            .await
            .unwrap();
        paz.finish_deployment("web-13", Ok(())).await.unwrap();
        paz.deploy("web", None, Trigger::new(TriggerKind::Deploy))
            .await
            .unwrap();
        let versions = release_versions(&paz).await;
        assert_eq!(versions, [10, 11, 12, 13, 14]);
        paz.rollback("web", None, Trigger::new(TriggerKind::Rollback))
            .await
            .expect("the previous release is there to roll back to");
    }

    #[tokio::test]
    async fn deployment_records_are_bounded() {
        let paz = paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        for _ in 0..(KEEP_DEPLOYMENTS + 5) {
            paz.scale("web", 2).await.unwrap();
            paz.deploy("web", None, Trigger::new(TriggerKind::Deploy))
                .await
                .unwrap();
        }
        assert_eq!(
            paz.deployments("web").await.unwrap().len() as u64,
            KEEP_DEPLOYMENTS
        );
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

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &serde_json::json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, serde_json::json!({"a": "z", "c": {"d": "e"}}));
    }
}
