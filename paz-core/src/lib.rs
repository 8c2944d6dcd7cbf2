//! The IO-free heart of Paz: the service model and its validation, releases and deployments,
//! the route table, the ports (`Store`, `Scheduler`, `Proxy`, `HealthChecker`) with in-memory
//! fakes, and the engine [`Paz`] that records services, releases and deployments.
//!
//! Backends live in their own crates: the embedded store in `paz-store`, Docker and Swarm in
//! `paz-docker`, etcd in `paz-etcd`, fleet in `paz-fleet`, the router and HAProxy in
//! `paz-proxy`.

pub mod api;
pub mod backup;
pub mod cluster;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod deploy;
pub mod duration;
pub mod engine;
pub mod error;
pub mod event;
pub mod health;
pub mod hook;
pub mod image;
pub mod manifest;
pub mod model;
pub mod names;
pub mod planning;
pub mod proxy;
pub mod route;
pub mod scheduler;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod secret;
pub mod service;
pub mod store;
pub mod token;

pub use duration::HumanDuration;
pub use engine::{
    Applied, DEFAULT_KEEP_RELEASES, EngineConfig, KEEP_DEPLOYMENTS, Paz, check_cluster_id,
};
pub use error::{Error, FieldError, PortError, PortErrorKind, Result, ValidationErrors};
pub use event::{Event, EventKind};
pub use image::ImageRef;
pub use model::{
    Deployment, DeploymentStatus, DeploymentStep, Host, HostStatus, Instance, InstanceState,
    Release, StepStatus, Trigger, TriggerKind,
};
pub use route::{Backend, BackendState, Route, RouteTable};
pub use service::{
    DeploySettings, HealthCheck, HealthKind, Placement, PortSpec, Protocol, Resources, Service,
    ServiceSpec, Strategy, VolumeSpec,
};
pub use store::{MemoryStore, Store};
