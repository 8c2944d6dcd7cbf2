//! Paz's scheduler backend on CoreOS fleet's v1 HTTP API: [`FleetScheduler`] runs each
//! instance as one fleet unit, a `docker run` on a fleet machine that fleet's engine picks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paz_core::Error> {
//! use paz_core::scheduler::Scheduler;
//! use paz_fleet::{FleetConfig, FleetScheduler};
//!
//! let fleet = FleetScheduler::connect(FleetConfig {
//!     endpoint: "http://127.0.0.1:49153".into(),
//!     cluster: "prod".into(),
//!     ..FleetConfig::default()
//! })
//! .await?;
//! for host in fleet.hosts().await? {
//!     println!("{} at {}", host.name, host.address);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How Paz maps onto fleet
//!
//! - **Instances are units** named `paz-<service>-v<release>-<slot>-<6 random chars>.service`
//!   ([`unit`]): `ExecStartPre=-docker rm -f <container>`, `ExecStart=docker run --rm --name
//!   <container> -p <host port>:<port> --label paz.… <image> …`, `ExecStop=docker stop -t
//!   <grace>`, `Restart=no` (Paz replaces instances itself). An `[X-Paz]` section carries
//!   what Paz reads back (cluster, service, release, slot, ports, epoch): a scheduler lists
//!   and touches only the units of its own cluster.
//! - **Start** = `PUT /units/<name>` with `desiredState: launched`, then waiting until the
//!   engine schedules it to a machine (`start_timeout`; an unschedulable unit is destroyed and
//!   the start fails). **Stop** = `desiredState: loaded` (`fleetctl stop`), then waiting
//!   until systemd reports it inactive. **Remove** = `DELETE` (`fleetctl destroy`).
//! - **Addresses**: the routed port is published on a host port picked at random in
//!   `host_ports` that no Paz unit of any cluster uses, so two units never collide on a
//!   machine; the address is `<machine primaryIP>:<host port>`.
//! - **Placement**: `label==value` constraints become `MachineMetadata=label=value`;
//!   `label!=value` is refused (fleet v1 has no negated metadata). A release is spread with
//!   `Conflicts=paz-<service>-v<release>-*.service` only while more than `replicas` machines
//!   match (fleet honours conflicts in reverse: with fewer machines, units would never be
//!   scheduled); otherwise fleet's least-loaded placement spreads it.
//! - **Lost machines**: fleet reschedules their units elsewhere under the same name; the
//!   instance then reports its new host and address.
//! - **States** map by the table in [`state`]; **events** come from polling
//!   (`poll_interval`), since fleet pushes nothing.
//!
//! # Limits
//!
//! - fleet's API carries no logs: [`logs`](paz_core::scheduler::Scheduler::logs) yields one
//!   error naming the machine and the `journalctl -u <unit>` to run there.
//! - Plain `http://` endpoints only: fleetd listens on a socket (`fleet.socket`) and has no
//!   TLS or authentication; add a TCP `ListenStream` and reach it through an SSH tunnel or a
//!   private network.
//! - Only the routed (first http) port is published; tcp ports are not reachable.
//! - `ExecStop`'s grace is fixed when a unit is rendered ([`FleetConfig::stop_grace`]).
//!
//! The feature `fake` brings [`fake::FakeFleet`], an in-process fleetd (API, engine and agent)
//! that follows the wire format of the v1 API closely, for tests.

pub mod api;
mod client;
pub mod config;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
mod scheduler;
pub mod state;
pub mod unit;

pub use config::FleetConfig;
pub use error::{Error, Result};
pub use scheduler::FleetScheduler;
