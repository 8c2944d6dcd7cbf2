//! Request and response bodies of the REST API, shared by the server, the SDK client and
//! the CLI.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `ok` when the server and its store answer; `degraded` when a runtime task (the
    /// reconcile loop, health checks, the name server…) panicked and was restarted.
    pub status: String,
    /// The server version.
    pub version: String,
    /// The cluster domain: public services answer at `<name>.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The port the router takes public traffic on, when the server runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_port: Option<u16>,
    /// How many times a runtime task panicked and was started again since the server
    /// started (absent without a runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
    /// What the operator should know (e.g. instances of unknown services found at start-up
    /// and left alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The proxy taking public traffic, when it is a process of its own (HAProxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyHealth>,
}

/// The health of a proxy that runs as a process of its own (HAProxy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProxyHealth {
    /// `haproxy`.
    pub kind: String,
    /// Whether it answers on its admin socket.
    pub running: bool,
    /// Its version.
    pub version: String,
    /// Its current worker process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Connections it holds now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Reloads (structural changes) since the server started.
    pub reloads: u64,
    /// Times it exited and was started again.
    pub restarts: u64,
    /// The last problem, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `POST /v1/services/{name}/deploy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployRequest {
    /// A new image; without it the current spec is released again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::optional_image))]
    pub image: Option<String>,
}

/// `POST /v1/services/{name}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScaleRequest {
    /// The new instance count (0 to 1000).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000))]
    pub instances: u32,
}

/// `POST /v1/services/{name}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RollbackRequest {
    /// The release to go back to; defaults to the one before the current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// The body of every error answer: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// A stable code, a message for people and, for validation errors, every failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable machine-readable code such as `SERVICE_NOT_FOUND` or `INVALID_PORT`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Every failed validation rule, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

/// A service's status as the API (`GET /v1/services/{name}/status`), the runtime and the
/// client all see it: the service, its newest deployment, its instances with the health the
/// runtime sees, and what is wrong (crash loops, scheduler errors), for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStatus {
    /// The service.
    pub service: crate::Service,
    /// Its newest deployment, if it has any.
    #[serde(default)]
    pub deployment: Option<crate::Deployment>,
    /// Its instances, with the state the runtime sees (health included).
    #[serde(default)]
    pub instances: Vec<crate::Instance>,
    /// What is wrong, for people.
    #[serde(default)]
    pub problems: Vec<String>,
}
