//! Releases, deployments, instances and hosts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::service::{ServiceSpec, Strategy};

/// What caused a release or deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TriggerKind {
    /// The service was created.
    Create,
    /// The service spec was updated.
    Update,
    /// An explicit deploy (API, CLI or SDK).
    Deploy,
    /// A rollback to an earlier release.
    Rollback,
    /// A declarative manifest was applied.
    Apply,
    /// A webhook (e.g. a registry push).
    Webhook,
}

/// Who or what triggered a release or deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trigger {
    /// The kind of trigger.
    pub kind: TriggerKind,
    /// Who did it (a token name, a webhook source), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// A free-form note (e.g. the rolled-back-from release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Trigger {
    /// A trigger of this kind with no author or message.
    pub fn new(kind: TriggerKind) -> Self {
        Trigger {
            kind,
            by: None,
            message: None,
        }
    }
}

/// An immutable, numbered snapshot of a service's spec: what a deployment rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
    /// The service it belongs to.
    pub service: String,
    /// Its number: 1, 2, 3… per service (shown as `v1`, `v2`…).
    pub version: u64,
    /// The spec at the time of the release.
    pub spec: ServiceSpec,
    /// The exact image the release runs, fixed when it is made (a deploy of a digest, a
    /// registry push) or when its first instance starts: `<repository>@sha256:…` (the
    /// registry's digest, Docker's `RepoDigests`) or, for an image that never came from a
    /// registry, the local image id `sha256:…`. Rollbacks and crash replacements run exactly
    /// this image, whatever the tag in `spec.image` points to by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The secrets its instances get, by name (never their values).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, crate::secret::SecretRef>,
    /// What made the release.
    pub trigger: Trigger,
    /// When it was made.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: jiff::Timestamp,
}

impl Release {
    /// The image its instances run: the pinned one when known, else the spec's.
    pub fn image(&self) -> &str {
        self.image_digest.as_deref().unwrap_or(&self.spec.image)
    }
}

/// The state of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeploymentStatus {
    /// Recorded; waiting for the reconciler.
    Pending,
    /// Steps are being carried out.
    Running,
    /// The release serves all traffic.
    Succeeded,
    /// A step failed; the previous release keeps serving.
    Failed,
    /// Stopped by a user or replaced by a newer deployment before it finished.
    Cancelled,
}

impl DeploymentStatus {
    /// Whether the deployment is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Succeeded | DeploymentStatus::Failed | DeploymentStatus::Cancelled
        )
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::Running => "running",
            DeploymentStatus::Succeeded => "succeeded",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Cancelled => "cancelled",
        };
        f.write_str(text)
    }
}

/// The state of one step of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// In progress.
    Running,
    /// Done.
    Succeeded,
    /// Failed.
    Failed,
    /// Not needed any more.
    Skipped,
}

/// One recorded step of a deployment (e.g. "start v3 instance 1", "health gate").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentStep {
    /// What the step does, for people.
    pub name: String,
    /// Its state.
    pub status: StepStatus,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<jiff::Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<jiff::Timestamp>,
    /// Details or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One attempt to move a service to a release: the deploy history and audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    /// `<service>-<sequence>`, e.g. `web-3`.
    pub id: String,
    /// The service.
    pub service: String,
    /// The sequence number within the service.
    pub sequence: u64,
    /// The release being rolled out.
    pub release: u64,
    /// The release that served before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_release: Option<u64>,
    /// The strategy used.
    pub strategy: Strategy,
    /// The state.
    pub status: DeploymentStatus,
    /// The steps so far.
    #[serde(default)]
    pub steps: Vec<DeploymentStep>,
    /// For a canary deployment: the index of the current traffic step in `canary_steps`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary_step: u32,
    /// What caused it.
    pub trigger: Trigger,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was recorded.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: jiff::Timestamp,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<jiff::Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<jiff::Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Deployment {
    /// Appends a finished step and returns it.
    pub fn record(&mut self, name: impl Into<String>, status: StepStatus, message: Option<String>) {
        let now = jiff::Timestamp::now();
        self.steps.push(DeploymentStep {
            name: name.into(),
            status,
            started_at: Some(now),
            finished_at: Some(now),
            message,
        });
    }

    /// The id of the `sequence`th deployment of `service`.
    pub fn make_id(service: &str, sequence: u64) -> String {
        format!("{service}-{sequence}")
    }

    /// Splits an id into service and sequence.
    pub fn parse_id(id: &str) -> Option<(&str, u64)> {
        let (service, seq) = id.rsplit_once('-')?;
        if service.is_empty() || !seq.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some((service, seq.parse().ok()?))
    }
}

/// The lifecycle state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InstanceState {
    /// Created or started; not yet healthy.
    Starting,
    /// Passing its health check; may receive traffic.
    Healthy,
    /// No new traffic; finishing in-flight requests.
    Draining,
    /// Stopped on purpose.
    Stopped,
    /// Exited or failed on its own.
    Failed,
}

/// One container of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    /// The scheduler's id (container id, unit name).
    pub id: String,
    /// The service.
    pub service: String,
    /// The release it runs.
    pub release: u64,
    /// The instance slot (0-based) within the release.
    pub slot: u32,
    /// The host it runs on.
    pub host: String,
    /// `ip:port` of the routed port, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its state.
    pub state: InstanceState,
    /// Exit code, restarts or the error, when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Which life of the service started it (see `InstanceSpec::epoch`), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// When its process last started, when the scheduler knows it (its age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<jiff::Timestamp>,
}

/// The state of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HostStatus {
    /// Reachable and accepting instances.
    Ready,
    /// Not accepting new instances.
    Drained,
    /// Not heard from.
    Down,
}

/// A machine that runs instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Host {
    /// A stable id (machine id, node id).
    pub id: String,
    /// The host name.
    pub name: String,
    /// The address other hosts reach it on.
    pub address: String,
    /// Labels used by placement constraints.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub status: HostStatus,
    /// The Paz version running there, if it runs Paz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ids_round_trip() {
        let id = Deployment::make_id("web-2", 17);
        assert_eq!(id, "web-2-17");
        assert_eq!(Deployment::parse_id(&id), Some(("web-2", 17)));
        assert_eq!(Deployment::parse_id("web"), None);
        assert_eq!(Deployment::parse_id("-3"), None);
        assert_eq!(Deployment::parse_id("web-x"), None);
    }
}
