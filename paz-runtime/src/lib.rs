//! The Paz runtime: the loop that makes running instances and routes match the declared
//! services, carrying out the pure deploy policy of [`paz_core::deploy`] through the ports
//! ([`Scheduler`], [`Proxy`], [`HealthChecker`], the engine's [`Store`](paz_core::Store)).
//!
//! It is to `paz-core` what kube-runtime is to kube-core: any Rust program can embed it. It
//! tracks instance health on the exact address, host name and path the router uses, routes a
//! new instance the moment it passes, drains old ones (no new requests, in-flight ones
//! finish, then SIGTERM), restarts crashed ones with backoff, removes orphans, registers this
//! host and, optionally, serves `<service>.paz` names to containers.
//!
//! Work is per service: a change (engine event, scheduler event, health transition, finished
//! drain) makes its service due, and each reconcile ends with an [`Action`]: requeue after a
//! delay while something is in motion, or await the next change. A full resync (every
//! [`RuntimeBuilder::resync_every`], default 60 s) catches whatever events missed, so idle
//! services cost nothing in between.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use paz_core::health::FakeHealthChecker;
//! use paz_core::proxy::FakeProxy;
//! use paz_core::scheduler::FakeScheduler;
//! use paz_core::{EngineConfig, MemoryStore, Paz};
//! use paz_runtime::Runtime;
//!
//! let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let runtime = Runtime::builder(paz)
//!     .scheduler(Arc::new(FakeScheduler::new()))
//!     .proxy(Arc::new(FakeProxy::new()))
//!     .health(Arc::new(FakeHealthChecker::new()))
//!     .build()?
//!     .spawn(shutdown);
//! // … create and deploy services through the engine; `runtime.status("web")` reports.
//! stop.send(true)?;
//! runtime.join().await;
//! # Ok(()) }
//! ```

pub mod announce;
mod hosts;
pub mod leader;
pub mod names;
mod queue;
mod reconciler;

use std::sync::Arc;
use std::time::Duration;

use paz_core::api::ServiceStatus;
use paz_core::health::HealthChecker;
use paz_core::proxy::Proxy;
use paz_core::scheduler::Scheduler;
use paz_core::{Host, Instance, Paz};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use hosts::{
    HOST_TTL, INVENTORY_INTERVAL, keep_host_registered, keep_inventory, local_host, stopped_during,
};
pub use names::NameServer;
pub use queue::{Action, WorkQueue};
pub use reconciler::Reconciler;

/// What can go wrong building a runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A port the runtime needs was not given to the builder.
    #[error("the runtime needs a {0}; give one to the builder")]
    Missing(&'static str),
}

/// The result type of `paz-runtime`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How often every service is reconciled even if no event said it changed.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(60);

/// The runtime, built and ready to [`spawn`](Runtime::spawn).
pub struct Runtime {
    paz: Paz,
    reconciler: Reconciler,
    host: Option<Host>,
    names: Option<NameServer>,
    inventory: Option<Arc<dyn Scheduler>>,
}

/// Builds a [`Runtime`]; the scheduler, proxy and health checker are required.
pub struct RuntimeBuilder {
    paz: Paz,
    scheduler: Option<Arc<dyn Scheduler>>,
    proxy: Option<Arc<dyn Proxy>>,
    health: Option<Arc<dyn HealthChecker>>,
    host: Option<Host>,
    names: Option<NameServer>,
    resync: Duration,
    announcer: Option<Arc<announce::Announcer>>,
    inventory: bool,
}

impl Runtime {
    /// Starts building a runtime over the engine `paz`.
    pub fn builder(paz: Paz) -> RuntimeBuilder {
        RuntimeBuilder {
            paz,
            scheduler: None,
            proxy: None,
            health: None,
            host: None,
            names: None,
            resync: DEFAULT_RESYNC,
            announcer: None,
            inventory: false,
        }
    }

    /// Starts the reconcile loop, health checks, host registration and the name server;
    /// they run until `shutdown` turns true. Running instances are left running at
    /// shutdown: a runtime started later adopts them.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> RuntimeHandle {
        let mut tasks = vec![tokio::spawn(self.reconciler.clone().run(shutdown.clone()))];
        if let Some(host) = self.host {
            tasks.push(tokio::spawn(keep_host_registered(
                self.paz.clone(),
                host,
                shutdown.clone(),
            )));
        }
        if let Some(scheduler) = self.inventory {
            let (reconciler, paz, shutdown) =
                (self.reconciler.clone(), self.paz.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                reconciler
                    .supervise("host inventory", shutdown, move |stop| {
                        keep_inventory(paz.clone(), scheduler.clone(), stop)
                    })
                    .await;
            }));
        }
        if let Some(names) = self.names {
            let reconciler = self.reconciler.clone();
            tasks.push(tokio::spawn(async move {
                reconciler
                    .supervise("name server", shutdown, move |stop| names.clone().run(stop))
                    .await;
            }));
        }
        RuntimeHandle {
            reconciler: self.reconciler,
            tasks,
        }
    }
}

impl RuntimeBuilder {
    /// What runs the instances.
    pub fn scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// What routes traffic to them.
    pub fn proxy(mut self, proxy: Arc<dyn Proxy>) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// What checks their health.
    pub fn health(mut self, health: Arc<dyn HealthChecker>) -> Self {
        self.health = Some(health);
        self
    }

    /// Registers this host (kept alive on a lease while the runtime runs).
    pub fn host(mut self, host: Host) -> Self {
        self.host = Some(host);
        self
    }

    /// Keeps the scheduler's hosts in the store (see [`keep_inventory`]): for schedulers
    /// of many hosts (Swarm, fleet).
    pub fn host_inventory(mut self) -> Self {
        self.inventory = true;
        self
    }

    /// Serves `<service>.paz` to containers with this name server.
    pub fn name_server(mut self, names: NameServer) -> Self {
        self.names = Some(names);
        self
    }

    /// How often every service is reconciled without an event (default
    /// [`DEFAULT_RESYNC`]).
    pub fn resync_every(mut self, every: Duration) -> Self {
        self.resync = every;
        self
    }

    /// Announces the instances through `announcer` (a cluster's leader; see
    /// [`announce`]).
    pub fn announce(mut self, announcer: Arc<announce::Announcer>) -> Self {
        self.announcer = Some(announcer);
        self
    }

    /// Builds the runtime; fails when a required port is missing.
    pub fn build(self) -> Result<Runtime> {
        let scheduler = self.scheduler.ok_or(Error::Missing("scheduler"))?;
        let proxy = self.proxy.ok_or(Error::Missing("proxy"))?;
        let health = self.health.ok_or(Error::Missing("health checker"))?;
        let inventory = self.inventory.then(|| scheduler.clone());
        let reconciler =
            Reconciler::with_resync(self.paz.clone(), scheduler, proxy, health, self.resync);
        if let Some(announcer) = self.announcer {
            reconciler.announce_with(announcer);
        }
        Ok(Runtime {
            paz: self.paz,
            reconciler,
            host: self.host,
            names: self.names,
            inventory,
        })
    }
}

/// A running runtime: what the server asks for status, and what it waits on at shutdown.
pub struct RuntimeHandle {
    reconciler: Reconciler,
    tasks: Vec<JoinHandle<()>>,
}

impl RuntimeHandle {
    /// The scheduler the runtime drives.
    pub fn scheduler(&self) -> &Arc<dyn Scheduler> {
        self.reconciler.scheduler()
    }

    /// The reconciler (cheap to clone).
    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// A service's instances, with the state the runtime sees (health included).
    pub fn instances(&self, service: &str) -> Vec<Instance> {
        self.reconciler.instances(service)
    }

    /// What is wrong with a service (crash loops, scheduler errors), for people.
    pub fn problems(&self, service: &str) -> Vec<String> {
        self.reconciler.problems(service)
    }

    /// A service's whole status: the service and newest deployment from the engine, the
    /// instances and problems from the runtime.
    pub async fn status(&self, service: &str) -> paz_core::Result<ServiceStatus> {
        self.reconciler.status(service).await
    }

    /// How many times a runtime task panicked (each was started again).
    pub fn panics(&self) -> u64 {
        self.reconciler.panics()
    }

    /// Makes a service due for a reconcile now (after a change the engine did not announce).
    pub fn wake(&self, service: &str) {
        self.reconciler.wake(service);
    }

    /// Waits until the routes are restored after start-up (see
    /// [`Reconciler::wait_restored`]), for at most `timeout`.
    pub async fn wait_restored(&self, timeout: std::time::Duration) -> bool {
        self.reconciler.wait_restored(timeout).await
    }

    /// Waits until every task has stopped (after shutdown was signalled).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}
