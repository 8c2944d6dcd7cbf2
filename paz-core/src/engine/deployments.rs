//! Deployment records: list and load them, save the reconciler's progress, and finish a
//! deployment (a failed one reverts its service to the release that served before).

use super::{
    DEPLOYMENTS, Paz, Retries, decode, deployment_event, deployment_key, encode, service_key,
};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::model::Deployment;
use crate::service::{Service, ServiceSpec};
use crate::store::{Condition, Txn};

/// A [`EventKind::DeploymentStep`] for each step of `new` that `old` did not have or had
/// otherwise.
fn step_events(old: &Deployment, new: &Deployment) -> Vec<EventKind> {
    new.steps
        .iter()
        .enumerate()
        .filter(|(index, step)| old.steps.get(*index) != Some(step))
        .map(|(index, step)| EventKind::DeploymentStep {
            service: new.service.clone(),
            id: new.id.clone(),
            index,
            name: step.name.clone(),
            status: step.status,
            message: step.message.clone(),
        })
        .collect()
}

impl Paz {
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
                    let mut events = vec![deployment_event(&merged)];
                    events.extend(step_events(&stored, &merged));
                    self.emit(revision, events);
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{paz, spec};
    use crate::model::{DeploymentStatus, StepStatus, Trigger, TriggerKind};
    use crate::service::Strategy;

    #[tokio::test]
    async fn a_saved_step_is_an_event_of_its_own_and_ids_resume() {
        use crate::event::{EventKind, Replay};
        let paz = paz();
        paz.create_service(spec(Strategy::Rolling), Trigger::create())
            .await
            .unwrap();
        let mut events = paz.subscribe();
        let mut deployment = paz.deployment("web-1").await.unwrap();
        deployment.status = DeploymentStatus::Running;
        deployment.record("start v1 slot 0", StepStatus::Succeeded, None);
        paz.save_deployment(&deployment).await.unwrap();
        let changed = events.recv().await.unwrap();
        assert!(matches!(changed.kind, EventKind::DeploymentChanged { .. }));
        let step = events.recv().await.unwrap();
        assert_eq!(
            step.kind,
            EventKind::DeploymentStep {
                service: "web".into(),
                id: "web-1".into(),
                index: 0,
                name: "start v1 slot 0".into(),
                status: StepStatus::Succeeded,
                message: None,
            }
        );
        // Saving again with one more step: only the new step is an event.
        deployment.record("route v1", StepStatus::Succeeded, Some("2 backends".into()));
        paz.save_deployment(&deployment).await.unwrap();
        let _changed = events.recv().await.unwrap();
        let next = events.recv().await.unwrap();
        assert!(
            matches!(next.kind, EventKind::DeploymentStep { index: 1, .. }),
            "{next:?}"
        );
        assert!(events.try_recv().is_err());
        // Every event has an id a client can resume after.
        let (replay, _) = paz.subscribe_since(Some(&step.id));
        match replay {
            Replay::Events(after) => {
                assert_eq!(after.len(), 2);
                assert_eq!(after[1], next);
            }
            Replay::Gap => panic!("the journal has them"),
        }
        // The runtime's reports travel the same way.
        paz.publish(EventKind::InstanceHealthy {
            service: "web".into(),
            instance: "i1".into(),
            release: 1,
        });
        let healthy = events.recv().await.unwrap();
        assert_eq!(
            (healthy.revision, healthy.kind.name()),
            (0, "instance_healthy")
        );
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
