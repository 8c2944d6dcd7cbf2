//! Releases and the deploy actions on them: deploy a new release, roll back to an earlier
//! one, promote or abort a running deployment, and plan the release and deployment a change
//! of spec makes.

use super::Paz;
use super::services::Planned;
use super::{RELEASES, decode, release_key};
use crate::error::{Error, Result};
use crate::model::{Deployment, DeploymentStatus, Release, Trigger};
use crate::service::{Service, ServiceSpec};
use crate::store::{Condition, Txn};

impl Paz {
    /// Makes a new release (with a new image, or the same spec again) and records its
    /// deployment.
    pub async fn deploy(
        &self,
        name: &str,
        image: Option<String>,
        trigger: Trigger,
    ) -> Result<Deployment> {
        self.deploy_pinned(name, image, None, trigger).await
    }

    /// [`Paz::deploy`] of an image already resolved to exactly one image: the release is
    /// pinned to `pin` (`<repository>@sha256:…` or an image id `sha256:…`) when it is made,
    /// so its instances run that image whatever `image`'s tag points to later. A registry
    /// push names its digest, so its deploy is pinned this way.
    pub async fn deploy_pinned(
        &self,
        name: &str,
        image: Option<String>,
        pin: Option<String>,
        trigger: Trigger,
    ) -> Result<Deployment> {
        if let Some(image) = &image {
            crate::image::ImageRef::parse(image)
                .map_err(|e| Error::invalid("image", "INVALID_IMAGE", e.to_string()))?;
        }
        if let Some(pin) = &pin {
            check_pin(pin).map_err(|m| Error::invalid("image_digest", "INVALID_IMAGE", m))?;
        }
        let applied = self
            .change(name, None, |current| {
                let mut spec = current.spec.clone();
                if let Some(image) = &image {
                    spec.image = image.clone();
                }
                let mut planned = plan_release(current, spec, &trigger);
                if let (Some(pin), Some(release)) = (&pin, planned.release.as_mut()) {
                    release.image_digest = Some(pin.clone());
                }
                Ok(planned)
            })
            .await?;
        Ok(applied
            .deployment
            .expect("a deploy always records a deployment"))
    }

    /// Pins release `version` of `name` to `pin` (see [`Release::image_digest`]) when it is
    /// not pinned yet, and returns it; a release pinned already keeps its pin (the first
    /// one wins). The runtime calls it when it first starts the release.
    pub async fn pin_release(&self, name: &str, version: u64, pin: &str) -> Result<Release> {
        check_pin(pin).map_err(|m| Error::invalid("image_digest", "INVALID_IMAGE", m))?;
        let key = release_key(name, version);
        let mut retries = super::Retries::new("release", name);
        loop {
            let kv = self.store.get(&key).await?.ok_or_else(|| Error::NotFound {
                kind: "release",
                name: format!("{name} v{version}"),
            })?;
            let mut release: Release = decode(&kv)?;
            if release.image_digest.is_some() {
                return Ok(release);
            }
            release.image_digest = Some(pin.to_owned());
            let txn = Txn::new()
                .when(key.clone(), Condition::ModRevision(kv.mod_revision))
                .put(key.clone(), super::encode(&release));
            match self.store.commit(txn).await {
                Ok(_) => return Ok(release),
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
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
        // The release's secrets come back with it (their values as they were then).
        let sealed = self.sealed_of(&release).await?;
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
                service.secrets = release.secrets.clone();
                Ok(Planned {
                    service,
                    release: None,
                    deployment: Some(deployment),
                    sealed: Some(super::secrets::SealedChange::Replace(sealed.clone())),
                })
            })
            .await?;
        Ok(applied
            .deployment
            .expect("a rollback always records a deployment"))
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
}

pub(super) fn plan_release(current: &Service, spec: ServiceSpec, trigger: &Trigger) -> Planned {
    let now = jiff::Timestamp::now();
    let mut service = current.clone();
    service.latest_release += 1;
    service.latest_deployment += 1;
    let release = Release {
        service: spec.name.clone(),
        version: service.latest_release,
        spec: spec.clone(),
        // An image named by its digest is pinned as it is made.
        image_digest: pinned_reference(&spec.image),
        secrets: current.secrets.clone(),
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
        sealed: None,
    }
}

/// The pin of an image reference that names a digest (`repo[:tag]@sha256:…` →
/// `repo@sha256:…`), else `None`.
fn pinned_reference(image: &str) -> Option<String> {
    let reference = crate::image::ImageRef::parse(image).ok()?;
    let digest = reference.digest.as_deref()?;
    Some(format!("{}@{digest}", reference.name()))
}

/// Checks a pin: a reference with a digest, or an image id `sha256:<64 hex>`.
pub(crate) fn check_pin(pin: &str) -> std::result::Result<(), String> {
    if let Some(hex) = pin.strip_prefix("sha256:") {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        return Err(format!("image id {pin:?} must be sha256:<64 hex digits>"));
    }
    match crate::image::ImageRef::parse(pin) {
        Ok(reference) if reference.digest.is_some() => Ok(()),
        Ok(_) => Err(format!(
            "{pin:?} names no digest; a pin is <repository>@sha256:… or an image id"
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn new_deployment(
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{paz, spec, web};
    use super::*;
    use crate::model::TriggerKind;
    use crate::service::Strategy;

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
}
