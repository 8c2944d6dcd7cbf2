//! [`FleetScheduler`]: the [`Scheduler`] port on fleet's v1 HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paz_core::model::{Host, HostStatus, Instance};
use paz_core::scheduler::{
    EventStream, InstanceSpec, LogOptions, LogStream, Scheduler, SchedulerEvent,
};

use crate::api::{Machine, Unit, UnitState};
use crate::client::Client;
use crate::config::FleetConfig;
use crate::error::{Error, Result};
use crate::state;
use crate::unit::{self, PazMeta, RenderInput};

/// How often `start` and `stop` look at a unit while they wait for it.
const WAIT_STEP: Duration = Duration::from_millis(100);
/// What `stop` waits on top of the grace period (fleet's neighbouring-state steps, the
/// agent's reconcile ticks).
const STOP_SLACK: Duration = Duration::from_secs(15);

/// Runs each instance as one fleet unit (`docker run` on a fleet machine).
#[derive(Debug, Clone)]
pub struct FleetScheduler {
    client: Client,
    config: FleetConfig,
    /// Units seen scheduled to a machine: one that is unscheduled again lost its machine.
    placed: std::sync::Arc<std::sync::Mutex<BTreeSet<String>>>,
}

/// Random bytes, from the OS (falls back to the clock when it has none to give).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_le_bytes(bytes)
}

/// Six random base-36 characters.
fn random_suffix() -> String {
    let mut n = random_u64();
    (0..6)
        .map(|_| {
            let c = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

impl FleetScheduler {
    /// Connects to fleet: checks that the API answers (`GET /fleet/v1/machines`).
    pub async fn connect(config: FleetConfig) -> Result<Self> {
        let client = Client::new(&config)?;
        if config.host_ports.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "the host port range {:?} is empty",
                config.host_ports
            )));
        }
        match client.machines().await {
            Ok(machines) => {
                tracing::info!(
                    endpoint = client.endpoint(),
                    machines = machines.len(),
                    "connected to fleet"
                );
            }
            Err(Error::Transport { cause, .. }) => {
                return Err(Error::Unreachable {
                    endpoint: client.endpoint().to_owned(),
                    cause,
                });
            }
            Err(other) => return Err(other),
        }
        Ok(FleetScheduler {
            client,
            config,
            placed: Default::default(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// A unit and its Paz metadata, when it is a unit of this cluster.
    async fn own_unit(&self, id: &str) -> Result<Option<(Unit, PazMeta)>> {
        if !id.starts_with(unit::UNIT_PREFIX) || crate::api::validate_unit_name(id).is_err() {
            return Ok(None);
        }
        let Some(unit) = self.client.unit(id).await? else {
            return Ok(None);
        };
        match unit::read_meta(&unit.options) {
            Some(meta) if meta.cluster == self.config.cluster => Ok(Some((unit, meta))),
            Some(meta) => {
                tracing::debug!(
                    unit = id,
                    cluster = meta.cluster,
                    "unit of another cluster: left alone"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The state systemd reports for a unit on the machine it is scheduled to.
    async fn unit_state(&self, unit: &Unit) -> Result<Option<UnitState>> {
        let states = self.client.states(Some(&unit.name)).await?;
        Ok(pick_state(unit, &states))
    }

    /// A free host port: random in the range, used by no listed unit of any Paz cluster.
    fn free_port(&self, units: &[Unit]) -> Result<u16> {
        let used: BTreeSet<u16> = units
            .iter()
            .filter_map(|u| unit::read_meta(&u.options).and_then(|m| m.host_port))
            .collect();
        let (first, last) = (
            *self.config.host_ports.start(),
            *self.config.host_ports.end(),
        );
        let span = u64::from(last - first) + 1;
        let start = random_u64() % span;
        (0..span)
            .map(|i| first + ((start + i) % span) as u16)
            .find(|p| !used.contains(p))
            .ok_or(Error::NoFreePort { first, last })
    }

    async fn start_unit(&self, spec: &InstanceSpec) -> Result<Instance> {
        if let Some(port) = spec.health_port {
            return Err(Error::InvalidSpec(format!(
                "the health check probes port {port}, but on fleet Paz reaches an instance only at its machine's published routed (first http) port{}; check that port instead",
                spec.routed_port()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            )));
        }
        let requirements = unit::metadata_requirements(&spec.constraints)?;
        let (machines, units) = tokio::try_join!(self.client.machines(), self.client.units())?;
        let matching = machines
            .iter()
            .filter(|m| unit::machine_matches(&m.metadata, &requirements))
            .count();
        // fleet honours Conflicts in reverse too: with as many instances as machines, a
        // replacement for an instance whose machine was lost could go nowhere (every machine
        // left holds a sibling that conflicts with it). Only with a machine to spare is the
        // release spread by rule; otherwise fleet's least-loaded placement spreads it.
        let conflicts = matching > spec.replicas.max(1) as usize;
        let host_port = match spec.routed_port() {
            Some(_) => Some(self.free_port(&units)?),
            None => None,
        };
        let name = unit::unit_name(&spec.service, spec.release, spec.slot, &random_suffix())?;
        let options = unit::render(&RenderInput {
            spec,
            name: &name,
            cluster: &self.config.cluster,
            docker: &self.config.docker,
            host_port,
            conflicts,
            stop_grace: self.config.stop_grace,
            dns: &self.config.dns,
        })?;
        let body = Unit {
            name: name.clone(),
            options,
            desired_state: "launched".into(),
            ..Unit::default()
        };
        // §3.4: a new unit with options → 201.
        self.client.put_unit(&name, &body).await?;
        tracing::info!(
            unit = name,
            service = spec.service,
            conflicts,
            "fleet unit submitted"
        );

        let began = Instant::now();
        let scheduled = loop {
            match self.client.unit(&name).await? {
                Some(unit) if !unit.machine_id.is_empty() => break Some(unit),
                Some(_) => {}
                None => break None,
            }
            if began.elapsed() >= self.config.start_timeout {
                break None;
            }
            tokio::time::sleep(WAIT_STEP).await;
        };
        let Some(unit) = scheduled else {
            if let Err(error) = self.client.delete_unit(&name).await {
                tracing::warn!(unit = name, %error, "cannot destroy the unscheduled unit");
            }
            let mut wants = Vec::new();
            if !requirements.is_empty() {
                let pairs: Vec<String> = requirements
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                wants.push(format!("MachineMetadata {}", pairs.join(" ")));
            }
            if conflicts {
                wants.push(format!(
                    "Conflicts={}",
                    unit::release_glob(&spec.service, spec.release)
                ));
            }
            return Err(Error::Unschedulable {
                unit: name,
                waited: self.config.start_timeout,
                detail: format!(
                    "it needs {} and {matching} of {} machines match the metadata",
                    if wants.is_empty() {
                        "any machine".to_owned()
                    } else {
                        wants.join(", ")
                    },
                    machines.len()
                ),
            });
        };
        let machines = if machines.iter().any(|m| m.id == unit.machine_id) {
            machines
        } else {
            self.client.machines().await?
        };
        let meta = unit::read_meta(&unit.options).ok_or_else(|| Error::Decode {
            operation: format!("GET /fleet/v1/units/{name}"),
            cause: "the unit came back without its [X-Paz] section".into(),
        })?;
        let mut instance = state::instance(&unit, &meta, None, &machines);
        instance.state = paz_core::model::InstanceState::Starting;
        instance.message = None;
        instance.started_at = Some(jiff::Timestamp::now());
        Ok(instance)
    }

    async fn stop_unit(&self, id: &str, grace: Duration) -> Result<()> {
        let Some((unit, _)) = self.own_unit(id).await? else {
            return Ok(());
        };
        if unit.desired_state == "launched" {
            // fleetctl stop: launched → loaded (§3.4 "update state" → 204).
            let body = Unit {
                desired_state: "loaded".into(),
                ..Unit::default()
            };
            if self.client.put_unit(id, &body).await?.is_none() {
                return Ok(());
            }
        }
        let limit = grace + STOP_SLACK;
        let began = Instant::now();
        loop {
            let Some(unit) = self.client.unit(id).await? else {
                return Ok(());
            };
            let state = self.unit_state(&unit).await?;
            let active = state.as_ref().is_some_and(|s| {
                matches!(
                    s.systemd_active_state.as_str(),
                    "active" | "activating" | "deactivating" | "reloading"
                )
            });
            if !active {
                return Ok(());
            }
            if began.elapsed() >= limit {
                return Err(Error::Timeout {
                    unit: id.to_owned(),
                    what: "stop",
                    waited: limit,
                    last: state.map_or_else(String::new, |s| {
                        format!("systemd {}/{}", s.systemd_active_state, s.systemd_sub_state)
                    }),
                });
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    async fn list_units(&self, service: Option<&str>) -> Result<Vec<Instance>> {
        let (units, states, machines) = tokio::try_join!(
            self.client.units(),
            self.client.states(None),
            self.client.machines()
        )?;
        let mut by_unit: BTreeMap<&str, Vec<UnitState>> = BTreeMap::new();
        for state in &states {
            by_unit
                .entry(state.name.as_str())
                .or_default()
                .push(state.clone());
        }
        let mut instances: Vec<Instance> = units
            .iter()
            .filter(|u| u.name.starts_with(unit::UNIT_PREFIX))
            .filter_map(|u| Some((u, unit::read_meta(&u.options)?)))
            .filter(|(_, meta)| meta.cluster == self.config.cluster)
            .filter(|(_, meta)| service.is_none_or(|s| meta.service == s))
            .map(|(u, meta)| {
                let state = by_unit.get(u.name.as_str()).and_then(|s| pick_state(u, s));
                self.lost_machine(u, state::instance(u, &meta, state.as_ref(), &machines))
            })
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn inspect_unit(&self, id: &str) -> Result<Option<Instance>> {
        let Some((unit, meta)) = self.own_unit(id).await? else {
            return Ok(None);
        };
        let (state, machines) = tokio::try_join!(self.unit_state(&unit), self.client.machines())?;
        let instance = state::instance(&unit, &meta, state.as_ref(), &machines);
        Ok(Some(self.lost_machine(&unit, instance)))
    }

    /// A unit that ran on a machine and is unscheduled again lost its machine (its
    /// presence expired) and fleet has not placed it elsewhere (its `Conflicts` may leave no
    /// machine): `Failed`, so that Paz replaces it (without `Conflicts` if the machines left
    /// are too few); a unit fleet did move reports its new machine and is checked again.
    fn lost_machine(&self, unit: &Unit, mut instance: Instance) -> Instance {
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        if !unit.machine_id.is_empty() {
            placed.insert(unit.name.clone());
        } else if unit.desired_state == "launched" && placed.contains(&unit.name) {
            instance.state = paz_core::model::InstanceState::Failed;
            instance.message =
                Some("its machine left the fleet and fleet has not placed it again".to_owned());
        }
        instance
    }
}

/// The state of `unit` on its machine, among the states reported for it.
fn pick_state(unit: &Unit, states: &[UnitState]) -> Option<UnitState> {
    states
        .iter()
        .find(|s| s.name == unit.name && s.machine_id == unit.machine_id)
        .cloned()
}

/// What `events` remembers of an instance between polls.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    service: String,
    running: bool,
}

async fn snapshot(scheduler: &FleetScheduler) -> Result<BTreeMap<String, Seen>> {
    let (units, states) =
        tokio::try_join!(scheduler.client.units(), scheduler.client.states(None))?;
    Ok(units
        .iter()
        .filter_map(|u| Some((u, unit::read_meta(&u.options)?)))
        .filter(|(_, meta)| meta.cluster == scheduler.config.cluster)
        .map(|(u, meta)| {
            let state = pick_state(u, &states);
            (
                u.name.clone(),
                Seen {
                    service: meta.service,
                    running: u.desired_state == "launched" && state::is_running(state.as_ref()),
                },
            )
        })
        .collect())
}

/// The events between two views.
fn diff(before: &BTreeMap<String, Seen>, after: &BTreeMap<String, Seen>) -> Vec<SchedulerEvent> {
    let mut events = Vec::new();
    for (id, now) in after {
        let was_running = before.get(id).is_some_and(|s| s.running);
        if now.running && !was_running {
            events.push(SchedulerEvent::Started {
                id: id.clone(),
                service: now.service.clone(),
            });
        } else if !now.running && was_running {
            events.push(SchedulerEvent::Exited {
                id: id.clone(),
                service: now.service.clone(),
                exit_code: None,
            });
        }
    }
    for (id, was) in before {
        if !after.contains_key(id) {
            events.push(SchedulerEvent::Removed {
                id: id.clone(),
                service: was.service.clone(),
            });
        }
    }
    events
}

#[async_trait]
impl Scheduler for FleetScheduler {
    async fn hosts(&self) -> paz_core::Result<Vec<Host>> {
        let machines = self.client.machines().await?;
        Ok(machines.into_iter().map(host).collect())
    }

    async fn start(&self, spec: &InstanceSpec) -> paz_core::Result<Instance> {
        Ok(self.start_unit(spec).await?)
    }

    async fn stop(&self, id: &str, grace: Duration) -> paz_core::Result<()> {
        Ok(self.stop_unit(id, grace).await?)
    }

    async fn remove(&self, id: &str) -> paz_core::Result<()> {
        if self.own_unit(id).await?.is_some() {
            // fleetctl destroy (§3.4): 204, or 404 when it is gone already.
            self.client.delete_unit(id).await?;
        }
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    async fn list(&self, service: Option<&str>) -> paz_core::Result<Vec<Instance>> {
        Ok(self.list_units(service).await?)
    }

    async fn inspect(&self, id: &str) -> paz_core::Result<Option<Instance>> {
        Ok(self.inspect_unit(id).await?)
    }

    /// fleet's API carries no logs (they are in the journal of the unit's machine): the
    /// stream yields exactly one error that says where to read them.
    async fn logs(&self, id: &str, _options: LogOptions) -> paz_core::Result<LogStream> {
        let Some((unit, _)) = self.own_unit(id).await? else {
            return Err(paz_core::Error::NotFound {
                kind: "instance",
                name: id.to_owned(),
            });
        };
        let machines = self.client.machines().await?;
        let address = machines
            .iter()
            .find(|m| m.id == unit.machine_id)
            .map_or_else(|| "address unknown".to_owned(), |m| m.primary_ip.clone());
        let error = Error::NoLogs {
            container: unit::container_name(&unit.name).to_owned(),
            machine: if unit.machine_id.is_empty() {
                "(not scheduled)".to_owned()
            } else {
                unit.machine_id.clone()
            },
            unit: unit.name,
            address,
        };
        Ok(Box::pin(futures_util::stream::iter([Err(error.into())])))
    }

    /// Polls fleet every `poll_interval` and reports the differences: `Started` when a unit
    /// becomes active/running, `Exited` when it stops running, `Removed` when it is gone,
    /// and `Resync` after polls failed. The polling task ends when the stream is dropped.
    async fn events(&self) -> paz_core::Result<EventStream> {
        let mut last = snapshot(self).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel::<SchedulerEvent>(256);
        let scheduler = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(scheduler.config.poll_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            let mut gap = false;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = sender.closed() => return,
                }
                match snapshot(&scheduler).await {
                    Ok(now) => {
                        let mut events = diff(&last, &now);
                        if gap {
                            events.insert(0, SchedulerEvent::Resync);
                            gap = false;
                        }
                        last = now;
                        for event in events {
                            if sender.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        if !gap {
                            tracing::warn!(%error, "polling fleet for events failed");
                        }
                        gap = true;
                    }
                }
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|e| (Ok(e), receiver)) },
        )))
    }
}

/// A fleet machine as a Paz host.
fn host(machine: Machine) -> Host {
    let name = state::machine_name(&machine);
    Host {
        name,
        address: machine.primary_ip,
        labels: machine.metadata,
        status: HostStatus::Ready,
        version: None,
        id: machine.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_views_into_events() {
        let seen = |running| Seen {
            service: "web".into(),
            running,
        };
        let before = BTreeMap::from([("a".to_owned(), seen(true)), ("b".to_owned(), seen(false))]);
        let after = BTreeMap::from([("b".to_owned(), seen(true)), ("c".to_owned(), seen(false))]);
        let events = diff(&before, &after);
        assert_eq!(
            events,
            [
                SchedulerEvent::Started {
                    id: "b".into(),
                    service: "web".into()
                },
                SchedulerEvent::Removed {
                    id: "a".into(),
                    service: "web".into()
                },
            ]
        );
        let events = diff(&after, &BTreeMap::from([("b".to_owned(), seen(false))]));
        assert!(events.contains(&SchedulerEvent::Exited {
            id: "b".into(),
            service: "web".into(),
            exit_code: None
        }));
    }

    #[test]
    fn suffixes_are_base36() {
        let a = random_suffix();
        assert_eq!(a.len(), 6);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(a, random_suffix());
    }

    #[test]
    fn machines_become_hosts() {
        let h = host(Machine {
            id: "0123456789abcdef0123".into(),
            primary_ip: "10.0.0.5".into(),
            metadata: BTreeMap::new(),
        });
        assert_eq!(
            (h.name.as_str(), h.address.as_str()),
            ("0123456789ab", "10.0.0.5")
        );
        let h = host(Machine {
            id: "x".into(),
            primary_ip: "10.0.0.6".into(),
            metadata: BTreeMap::from([("hostname".to_owned(), "node-1".to_owned())]),
        });
        assert_eq!(h.name, "node-1");
    }
}
