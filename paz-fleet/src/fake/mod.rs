//! A fake fleetd for tests (feature `fake`): the v1 HTTP API, the engine and one agent per
//! fake machine, in-process on `127.0.0.1:0`.
//!
//! Faithfulness is the point: the routes, status codes, messages, paging and omitempty
//! rules follow the v1 API reference section by section (the code cites it), so that a
//! client tested against the fake speaks to a real fleetd the same way.
//!
//! - The **engine** reconciles every `reconcile_interval`: it unschedules units of lost
//!   machines and schedules waiting units to the least-loaded machine that satisfies their
//!   `[X-Fleet]` options (MachineID, MachineOf, MachineMetadata, Conflicts both ways,
//!   Global, Replaces).
//! - The **agents** move each unit one neighbouring state per tick (inactive ↔ loaded ↔
//!   launched). With `run_units: false` a launched unit is reported `active`/`running` at
//!   once. With `run_units: true` the agent really runs it: `ExecStartPre` (a leading `-`
//!   ignores failure) and `ExecStart` as child processes (split by systemd's rules, see
//!   [`crate::unit::split_command`]); `active`/`running` while the process lives,
//!   `failed`/`failed` when it exits non-zero on its own, `inactive`/`dead` after a stop
//!   (`ExecStop`, then waiting for the process, a kill after `TimeoutStopSec`).
//! - All fake machines share this machine's processes and Docker Engine: give each a
//!   distinct loopback `primary_ip` (127.0.0.2, 127.0.0.3…); a `docker run -p` publish binds
//!   0.0.0.0, so `<machine ip>:<host port>` answers.
//!
//! Dropping the fake stops its tasks, kills the processes it started and removes
//! (`docker rm -f`) the containers its units started.

mod agent;
mod engine;
mod server;
mod util;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

use engine::{MachineRecord, Registry, StopMode};

pub use util::path_match;

/// One fake machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMachine {
    /// The machine id.
    pub id: String,
    /// Its `primaryIP`.
    pub primary_ip: String,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
}

impl FakeMachine {
    /// A machine without metadata.
    pub fn new(id: &str, primary_ip: &str) -> Self {
        FakeMachine {
            id: id.to_owned(),
            primary_ip: primary_ip.to_owned(),
            metadata: BTreeMap::new(),
        }
    }

    /// Adds a metadata pair.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The machines present at start.
    pub machines: Vec<FakeMachine>,
    /// fleetd's `token_limit`: the page size (default 100).
    pub token_limit: u16,
    /// How often the engine and agents reconcile (default 100 ms; fleetd's is 2 s).
    pub reconcile_interval: Duration,
    /// Really run units' commands (see the module docs).
    pub run_units: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            machines: Vec::new(),
            token_limit: 100,
            reconcile_interval: Duration::from_millis(100),
            run_units: false,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The method, e.g. `PUT`.
    pub method: String,
    /// The path and query, as sent.
    pub path: String,
}

/// The most calls remembered.
const MAX_CALLS: usize = 10_000;

/// State shared by the server, the engine and the agents.
#[derive(Debug)]
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    calls: Mutex<Vec<Call>>,
    token_limit: u16,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, call: Call) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if calls.len() >= MAX_CALLS {
            calls.remove(0);
        }
        calls.push(call);
    }

    /// Records what systemd reports, unless the unit was stopped or restarted since.
    pub(crate) fn set_systemd(
        &self,
        key: &(String, String),
        generation: u64,
        active: &str,
        sub: &str,
    ) {
        let mut registry = self.lock();
        if let Some(unit) = registry.agent.get_mut(key)
            && unit.generation == generation
        {
            unit.active = active.to_owned();
            unit.sub = sub.to_owned();
        }
    }
}

/// A running fake fleetd.
#[derive(Debug)]
pub struct FakeFleet {
    endpoint: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeFleet {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start(options: FakeOptions) -> std::io::Result<FakeFleet> {
        let mut registry = Registry::default();
        for machine in &options.machines {
            add(&mut registry, machine);
        }
        let shared = Arc::new(Shared {
            registry: Mutex::new(registry),
            calls: Mutex::new(Vec::new()),
            token_limit: options.token_limit.max(1),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);

        let app_shared = shared.clone();
        let app = axum::Router::new().fallback(move |method, uri, headers, body| {
            let shared = app_shared.clone();
            async move { server::handle(shared, method, uri, headers, body).await }
        });
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "fake fleet: server ended");
            }
        });

        let engine_shared = shared.clone();
        let run_units = options.run_units;
        let interval = options.reconcile_interval.max(Duration::from_millis(1));
        let engine = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let orders = engine_shared.lock().reconcile(run_units);
                for order in orders {
                    tokio::spawn(agent::run_unit(engine_shared.clone(), order));
                }
            }
        });
        Ok(FakeFleet {
            endpoint,
            shared,
            tasks: vec![server, engine],
        })
    }

    /// The endpoint, e.g. `http://127.0.0.1:41234` (without `/fleet/v1`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The requests received so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A machine joins (or rejoins: metadata set through PATCH is kept, its own is added).
    pub fn add_machine(&self, machine: FakeMachine) {
        add(&mut self.shared.lock(), &machine);
    }

    /// A machine dies: its running units' processes end at once (and the containers they
    /// started go), then its presence expires (§3.8): it disappears from `/machines`, its
    /// agent's reports go, and the engine reschedules its units onto other eligible
    /// machines on the next ticks.
    pub async fn lose_machine(&self, id: &str) {
        let acks: Vec<_> = {
            let mut registry = self.shared.lock();
            let Some(machine) = registry.machines.get_mut(id) else {
                return;
            };
            machine.dead = true;
            registry
                .agent
                .iter_mut()
                .filter(|((_, m), _)| m == id)
                .filter_map(|(_, unit)| unit.stop.take())
                .filter_map(|stop| {
                    let (ack, done) = tokio::sync::oneshot::channel();
                    stop.send(StopMode::Kill(ack)).ok().map(|()| done)
                })
                .collect()
        };
        for done in acks {
            let _ = tokio::time::timeout(Duration::from_secs(20), done).await;
        }
        let mut registry = self.shared.lock();
        if let Some(machine) = registry.machines.get_mut(id) {
            machine.present = false;
        }
        registry.agent.retain(|(_, m), _| m != id);
    }
}

fn add(registry: &mut Registry, machine: &FakeMachine) {
    registry.machines.insert(
        machine.id.clone(),
        MachineRecord {
            primary_ip: machine.primary_ip.clone(),
            present: true,
            dead: false,
        },
    );
    registry
        .metadata
        .entry(machine.id.clone())
        .or_default()
        .extend(machine.metadata.clone());
}

impl Drop for FakeFleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let containers = {
            let mut registry = self.shared.lock();
            // Stop every running process now (as the machines dying would).
            for unit in registry.agent.values_mut() {
                if let Some(stop) = unit.stop.take() {
                    let (ack, _) = tokio::sync::oneshot::channel();
                    let _ = stop.send(StopMode::Kill(ack));
                }
            }
            registry.agent.clear();
            registry.jobs.clear();
            std::mem::take(&mut registry.containers)
        };
        for (docker, name) in containers {
            let _ = std::process::Command::new(&docker)
                .args(["rm", "-f", &name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
