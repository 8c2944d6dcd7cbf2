//! **Paz**: a self-hosted Docker PaaS.
//!
//! This facade crate is the SDK: it re-exports the engine and models of [`core`] and, behind
//! features, the backends and the typed REST [`Client`].
//!
//! | feature | what it adds |
//! |---|---|
//! | `client` (default) | [`Client`]: a typed client of a `paz-server` |
//! | `embedded` (default) | [`store::EmbeddedStore`]: the redb store of the single-machine mode |
//!
//! Embed the engine in a program:
//!
//! ```
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! # runtime.block_on(async {
//! use std::sync::Arc;
//! use paz::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger};
//!
//! let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
//! paz.create_service(ServiceSpec::new("web", "demo:v1"), Trigger::create()).await?;
//! assert_eq!(paz.services().await?.len(), 1);
//! # Ok::<(), paz::core::Error>(())
//! # }).unwrap();
//! ```

pub use paz_core as core;
pub use paz_core::scheduler::{LogLine, LogStreamKind};
pub use paz_core::{
    Applied, Deployment, DeploymentStatus, DeploymentStep, EngineConfig, Event, EventKind, Host,
    ImageRef, Instance, InstanceState, MemoryStore, Paz, Release, RouteTable, Service, ServiceSpec,
    StepStatus, Store, Trigger, TriggerKind,
};

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::{Client, Error, EventStream, LogLines, ServiceStatus};

/// Store backends.
pub mod store {
    pub use paz_core::store::*;
    #[cfg(feature = "embedded")]
    pub use paz_store::EmbeddedStore;
}
