//! **Paz**: a self-hosted Docker PaaS.
//!
//! This facade crate is the SDK: it re-exports the engine and models of [`core`] and, behind
//! features, the backends and the typed REST [`Client`].
//!
//! | feature | what it adds |
//! |---|---|
//! | `client` (default) | [`Client`]: a typed client of a `paz-server` |
//! | `embedded` (default) | [`store::EmbeddedStore`]: the redb store of the single-machine mode |
//! | `runtime` | `paz::runtime`: the reconcile loop that runs services through the ports |
//! | `router` | `paz::proxy`: the built-in router and HTTP health checker, and `paz::config`: backends chosen by config |
//! | `docker` | `paz::docker`: the local Docker Engine scheduler (with the router) |
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

//! A complete embedded Paz, no `paz-server`: the engine on the embedded store, containers on
//! the local Docker Engine, traffic through the built-in router (features `docker` and
//! `embedded`; `examples/embedded_deploy.rs` runs this against a real engine):
//!
//! ```no_run
//! # #[cfg(all(feature = "docker", feature = "embedded"))]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use paz::config::{ProxyConfig, RuntimeConfig, SchedulerConfig, StoreConfig};
//! use paz::{EngineConfig, Paz, PortSpec, Protocol, ServiceSpec, Trigger};
//!
//! let store = StoreConfig::Embedded { path: "paz-data/paz.redb".into() }.build()?;
//! let paz = Paz::new(store, EngineConfig::default());
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let started = RuntimeConfig {
//!     scheduler: SchedulerConfig::Docker(paz::docker::DockerConfig::default()),
//!     proxy: ProxyConfig::Builtin { listen: "127.0.0.1:8080".parse()? },
//!     internal_names: false,
//!     internal_names_ip: None,
//!     tls: None,
//! }
//! .start(paz.clone(), None, shutdown)
//! .await?
//! .expect("a scheduler was configured");
//!
//! let mut web = ServiceSpec::new("web", "paz-demo:v1");
//! web.ports.push(PortSpec { port: 8080, protocol: Protocol::Http });
//! web.public = true;
//! paz.create_service(web, Trigger::create()).await?;
//! // http://web.localhost:8080 answers once the instance is healthy;
//! // `started.runtime.status("web").await?` shows it.
//! paz.deploy("web", Some("paz-demo:v2".into()), Trigger::create()).await?;
//! stop.send(true)?;
//! started.runtime.join().await;
//! # Ok(()) }
//! ```

pub use paz_core as core;
pub use paz_core::scheduler::{LogLine, LogStreamKind};
pub use paz_core::{
    Applied, Deployment, DeploymentStatus, DeploymentStep, EngineConfig, Event, EventKind, Host,
    ImageRef, Instance, InstanceState, MemoryStore, Paz, PortSpec, Protocol, Release, RouteTable,
    Service, ServiceSpec, StepStatus, Store, Trigger, TriggerKind,
};

#[cfg(feature = "router")]
pub mod config;
#[cfg(feature = "router")]
pub mod handover;
/// The Docker Engine scheduler.
#[cfg(feature = "docker")]
pub use paz_docker as docker;
/// The etcd store.
#[cfg(feature = "etcd")]
pub use paz_etcd as etcd;
/// The fleet scheduler.
#[cfg(feature = "fleet")]
pub use paz_fleet as fleet;
/// The built-in router and HTTP health checker.
#[cfg(feature = "router")]
pub use paz_proxy as proxy;
/// The runtime: the reconcile loop, health tracking, drains, host registration, names.
#[cfg(feature = "runtime")]
pub use paz_runtime as runtime;

/// Certificates from an ACME CA (`paz-acme`), for the router's HTTPS.
#[cfg(feature = "router")]
pub use paz_acme as acme;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::{Client, Error, EventStream, LogLines, ServiceStatus};

/// Store backends.
pub mod store {
    pub use paz_core::store::*;
    #[cfg(feature = "embedded")]
    pub use paz_store::{EmbeddedStore, SecretKey};
}
