//! Paz's scheduler backend on the Docker Engine API (through bollard): [`DockerScheduler`]
//! runs each instance as a container on one local Docker daemon (the unix socket, or
//! `DOCKER_HOST`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), paz_docker::Error> {
//! use paz_docker::{DockerConfig, DockerScheduler};
//!
//! let docker = DockerScheduler::connect(DockerConfig::default()).await?;
//! println!("instances reach paz-server at {:?}", docker.network_gateway());
//! # Ok(())
//! # }
//! ```
//!
//! - Containers join a user-defined bridge network (default `paz`), which `connect` creates
//!   when missing; nothing is published on the host: the host (paz-server's router and
//!   health checker) reaches instances on their bridge IPs, and instances reach paz-server on
//!   the network's gateway ([`DockerScheduler::network_gateway`]).
//! - Images are used when present locally and pulled only when missing.
//! - Container states map to instance states by the rules in [`state`].
//! - Logs are split into lines per stream ([`logs`]); events reconnect with backoff and emit
//!   `Resync` after every gap ([`events`]).
//!
//! Docker Engine 20.10 (API 1.41) and newer. bollard 0.21 sends no API version in request
//! paths, so requests are served at the daemon's default API version; the client still
//! negotiates once at connect so that a later bollard (which sends the version) keeps working.

pub mod config;
pub mod error;
pub mod events;
pub mod logs;
mod scheduler;
pub mod state;
pub mod swarm;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::DockerConfig;
pub use error::{Error, Result};
pub use scheduler::DockerScheduler;
pub use swarm::{SwarmConfig, SwarmScheduler};
