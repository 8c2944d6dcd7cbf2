//! Events the engine emits after each committed change.

use serde::{Deserialize, Serialize};

use crate::model::DeploymentStatus;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    /// A service was declared.
    ServiceCreated {
        /// The service.
        service: String,
    },
    /// A service's spec or instance count changed.
    ServiceUpdated {
        /// The service.
        service: String,
    },
    /// A service was deleted.
    ServiceDeleted {
        /// The service.
        service: String,
    },
    /// A release was made.
    ReleaseCreated {
        /// The service.
        service: String,
        /// The release number.
        version: u64,
    },
    /// A deployment was recorded or changed state.
    DeploymentChanged {
        /// The service.
        service: String,
        /// The deployment id.
        id: String,
        /// The release it rolls out.
        release: u64,
        /// Its state.
        status: DeploymentStatus,
    },
    /// A hook delivery was recorded (`GET /v1/services/{service}/deliveries`).
    DeliveryRecorded {
        /// The service.
        service: String,
        /// The delivery id.
        id: String,
        /// What became of it.
        verdict: crate::hook::Verdict,
    },
}

/// One event: what happened, at which store revision and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// The store revision of the change.
    pub revision: u64,
    /// When it happened.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: jiff::Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl EventKind {
    /// The service the event is about.
    pub fn service(&self) -> &str {
        match self {
            EventKind::ServiceCreated { service }
            | EventKind::ServiceUpdated { service }
            | EventKind::ServiceDeleted { service }
            | EventKind::ReleaseCreated { service, .. }
            | EventKind::DeploymentChanged { service, .. }
            | EventKind::DeliveryRecorded { service, .. } => service,
        }
    }

    /// The SSE event name, e.g. `service_created`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ServiceCreated { .. } => "service_created",
            EventKind::ServiceUpdated { .. } => "service_updated",
            EventKind::ServiceDeleted { .. } => "service_deleted",
            EventKind::ReleaseCreated { .. } => "release_created",
            EventKind::DeploymentChanged { .. } => "deployment_changed",
            EventKind::DeliveryRecorded { .. } => "delivery_recorded",
        }
    }
}
