//! A cluster's replicas as the store records them: `paz-server` processes sharing one store
//! (etcd), one of which leads, and router-only processes.

use serde::{Deserialize, Serialize};

use crate::store::StoreHealth;

/// What a replica is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ReplicaRole {
    /// A full server: API, UI, router and, when it leads, the runtime.
    Server,
    /// A router only (`paz-server --role router`).
    Router,
}

/// One replica's record (also the leader key's value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Replica {
    /// Its id (host name and a random suffix).
    pub id: String,
    /// Server or router only.
    pub role: ReplicaRole,
    /// Where its API listens, if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Where its router takes public traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// The Paz version it runs.
    pub version: String,
    /// When it started.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: jiff::Timestamp,
}

/// A router's record: which announcements its table was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterRecord {
    /// The router's replica id.
    pub id: String,
    /// Where it takes public traffic.
    pub address: String,
    /// The store revision of the announcements its table was built from.
    pub applied: u64,
}

/// The cluster as `GET /v1/cluster` and `paz status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    /// The replica that answered, when it is one of a cluster's (`None`: a single server).
    #[serde(default)]
    pub replica: Option<String>,
    /// The replica that leads (runs the runtime), if any.
    #[serde(default)]
    pub leader: Option<Replica>,
    /// Every live replica.
    #[serde(default)]
    pub replicas: Vec<Replica>,
    /// Every live router and the announcements it applied.
    #[serde(default)]
    pub routers: Vec<RouterRecord>,
    /// The store's health (etcd: its members and their leader).
    pub store: StoreHealth,
}
