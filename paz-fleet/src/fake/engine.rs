//! The fake's registry (what fleet keeps in etcd) and its engine: X-Fleet parsing and
//! validation, scheduling, and the agent's neighbouring-state steps.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::oneshot;

use crate::api::{self, Machine, Unit, UnitOption, UnitState};

use super::util::{path_match, sha1_hex};

/// A job's target state (§3.3 `desiredState`), ordered inactive < loaded < launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum JobState {
    Inactive,
    Loaded,
    Launched,
}

impl JobState {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "inactive" => Some(JobState::Inactive),
            "loaded" => Some(JobState::Loaded),
            "launched" => Some(JobState::Launched),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobState::Inactive => "inactive",
            JobState::Loaded => "loaded",
            JobState::Launched => "launched",
        }
    }

    /// §3.4 note 3: "fleet moves units only between neighbouring states (inactive ↔ loaded
    /// ↔ launched)": one step toward `target`.
    fn step_toward(self, target: JobState) -> JobState {
        use JobState::*;
        match (self, target) {
            (Inactive, Loaded | Launched) => Loaded,
            (Loaded, Launched) => Launched,
            (Launched, Loaded | Inactive) => Loaded,
            (Loaded, Inactive) => Inactive,
            (same, _) => same,
        }
    }
}

/// The unit file as go-systemd's serializer writes it (sections in order of first
/// appearance, `Name=Value` lines), whose SHA-1 is the unit hash (§3.3 `hash`).
pub(crate) fn serialize(options: &[UnitOption]) -> String {
    let mut sections: Vec<(&str, Vec<&UnitOption>)> = Vec::new();
    for option in options {
        match sections.iter_mut().find(|(s, _)| *s == option.section) {
            Some((_, list)) => list.push(option),
            None => sections.push((&option.section, vec![option])),
        }
    }
    let mut out = String::new();
    for (i, (section, list)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("[{section}]\n"));
        for option in list {
            out.push_str(&format!("{}={}\n", option.name, option.value));
        }
    }
    out
}

/// The `[X-Fleet]` requirements of a unit (§3.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct XFleet {
    pub machine_id: Option<String>,
    pub peers: Vec<String>,
    /// `key → accepted values`: different keys AND, repeated key OR (§3.7).
    pub metadata: BTreeMap<String, Vec<String>>,
    pub conflicts: Vec<String>,
    pub global: bool,
    pub replaces: Vec<String>,
}

/// Expands the X-Fleet specifiers of §3.7: `%n`, `%N`, `%p`, `%i`.
fn expand(value: &str, unit: &str) -> String {
    let stem = unit.rfind('.').map_or(unit, |dot| &unit[..dot]);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    value
        .replace("%n", unit)
        .replace("%N", stem)
        .replace("%p", prefix)
        .replace("%i", instance)
}

impl XFleet {
    pub(crate) fn parse(options: &[UnitOption], unit: &str) -> XFleet {
        let mut x = XFleet::default();
        for option in options.iter().filter(|o| o.section == "X-Fleet") {
            // §3.7: "older `X-Condition*` names deprecated since 0.8" are still read.
            let name = match option.name.as_str() {
                "X-ConditionMachineID" => "MachineID",
                "X-ConditionMachineOf" => "MachineOf",
                "X-ConditionMachineMetadata" => "MachineMetadata",
                "X-Conflicts" => "Conflicts",
                other => other,
            };
            // One line may hold several space-separated values.
            let values = option.value.split_whitespace().map(|v| expand(v, unit));
            match name {
                "MachineID" if x.machine_id.is_none() => x.machine_id = values.into_iter().next(),
                "MachineOf" => x.peers.extend(values),
                // §3.7: "several pairs on one line and different keys are AND; repeating
                // the same key is OR. Exact string match".
                "MachineMetadata" => {
                    for pair in values {
                        let pair = pair.trim_matches('"');
                        if let Some((k, v)) = pair.split_once('=')
                            && !k.is_empty()
                            && !v.is_empty()
                            && !v.contains('=')
                        {
                            x.metadata
                                .entry(k.to_owned())
                                .or_default()
                                .push(v.to_owned());
                        }
                    }
                }
                // §3.7: "`Conflicts=<glob>` … may repeat".
                "Conflicts" => x.conflicts.extend(values),
                "Global" => x.global = option.value.trim().eq_ignore_ascii_case("true"),
                "Replaces" => x.replaces.extend(values),
                _ => {}
            }
        }
        x
    }

    /// §3.7: "Invalid combinations rejected at PUT: MachineID with Peers/Conflicts/Global/
    /// Replaces; Global with Peers/Replaces; Conflicts with Replaces; a peer matching a
    /// conflict or replace glob." With fleet's messages (`api.ValidateOptions`).
    pub(crate) fn validate(&self) -> Result<(), String> {
        for peer in &self.peers {
            if let Some(conflict) = self.conflicts.iter().find(|c| path_match(c, peer)) {
                return Err(format!(
                    "unresolvable requirements: peer {peer:?} matches conflict {conflict:?}"
                ));
            }
            if let Some(replace) = self.replaces.iter().find(|r| path_match(r, peer)) {
                return Err(format!(
                    "unresolvable requirements: peer {peer:?} matches replace {replace:?}"
                ));
            }
        }
        let target = self.machine_id.is_some();
        let peers = !self.peers.is_empty();
        let conflicts = !self.conflicts.is_empty();
        let replaces = !self.replaces.is_empty();
        let message = match () {
            () if target && peers => "MachineID cannot be used with Peers",
            () if target && conflicts => "MachineID cannot be used with Conflicts",
            () if target && self.global => "MachineID cannot be used with Global",
            () if target && replaces => "MachineID cannot be used with Replaces",
            () if self.global && peers => "Global cannot be used with Peers",
            () if self.global && replaces => "Global cannot be used with Replaces",
            () if conflicts && replaces => "Conflicts cannot be used with Replaces",
            () => return Ok(()),
        };
        Err(message.to_owned())
    }

    fn metadata_matches(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.metadata
            .iter()
            .all(|(key, values)| metadata.get(key).is_some_and(|v| values.contains(v)))
    }
}

/// Checks options as fleet's PUT does on creation: each must survive the unit-file
/// serializer, and the X-Fleet combination rules hold.
pub(crate) fn validate_options(options: &[UnitOption], unit: &str) -> Result<(), String> {
    for option in options {
        if option.section.is_empty() || option.name.is_empty() {
            return Err("unit option with an empty section or name".into());
        }
        if option.section.contains(['[', ']', '\n'])
            || option.name.contains(['=', '\n', ' ', '\t'])
            || option.value.contains('\n')
        {
            return Err(format!(
                "unit option [{}] {} does not survive the unit file serializer",
                option.section, option.name
            ));
        }
    }
    XFleet::parse(options, unit).validate()
}

/// A unit as fleet's registry holds it (`job/<unit>/…`, §3.8).
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub options: Vec<UnitOption>,
    pub hash: String,
    pub desired: JobState,
    /// `job/<unit>/target`: the machine the engine scheduled it to.
    pub target: Option<String>,
    pub fleet: XFleet,
}

impl Job {
    pub(crate) fn new(name: &str, options: Vec<UnitOption>, desired: JobState) -> Job {
        Job {
            hash: sha1_hex(serialize(&options).as_bytes()),
            fleet: XFleet::parse(&options, name),
            options,
            desired,
            target: None,
        }
    }
}

/// A machine's presence (`machines/<id>/object`).
#[derive(Debug, Clone)]
pub(crate) struct MachineRecord {
    pub primary_ip: String,
    /// The presence key exists (the agent heartbeats).
    pub present: bool,
    /// The machine died: its agent does nothing any more.
    pub dead: bool,
}

/// How a running unit is to end.
#[derive(Debug)]
pub(crate) enum StopMode {
    /// systemd stop: ExecStop, then wait for the main process, kill after TimeoutStopSec.
    Graceful,
    /// The machine died: its processes are gone at once. Acknowledged when done.
    Kill(oneshot::Sender<()>),
}

/// What one machine's agent knows of one unit.
#[derive(Debug)]
pub(crate) struct AgentUnit {
    pub state: JobState,
    pub hash: String,
    pub options: Vec<UnitOption>,
    pub active: String,
    pub sub: String,
    /// Which start this is (writes of an older start's process are ignored).
    pub generation: u64,
    /// Stops the running process (dropping it stops it gracefully).
    pub stop: Option<oneshot::Sender<StopMode>>,
}

/// What an agent has to do after a tick, outside the lock.
#[derive(Debug)]
pub(crate) struct StartOrder {
    pub key: (String, String),
    /// The machine's `primaryIP`: what its processes' published ports bind.
    pub machine_ip: String,
    pub generation: u64,
    pub options: Vec<UnitOption>,
    pub stop: oneshot::Receiver<StopMode>,
}

/// fleet's state: units, machines, metadata, and what agents report.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub jobs: BTreeMap<String, Job>,
    pub machines: BTreeMap<String, MachineRecord>,
    /// `machines/<id>/metadata/<key>`: kept across leave/rejoin (§3.5).
    pub metadata: BTreeMap<String, BTreeMap<String, String>>,
    /// `(unit, machine)` → the agent's view (`states/<unit>/<machine>`).
    pub agent: BTreeMap<(String, String), AgentUnit>,
    /// Containers started by units, `(docker, name)`, removed at shutdown.
    pub containers: BTreeSet<(String, String)>,
    pub generation: u64,
}

impl Registry {
    fn alive(&self, id: &str) -> bool {
        self.machines.get(id).is_some_and(|m| m.present && !m.dead)
    }

    /// The machines as `/machines` lists them: present ones, sorted by id.
    pub(crate) fn machine_list(&self) -> Vec<Machine> {
        self.machines
            .iter()
            .filter(|(_, m)| m.present)
            .map(|(id, m)| Machine {
                id: id.clone(),
                primary_ip: m.primary_ip.clone(),
                metadata: self.metadata.get(id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// A unit as `/units` shows it.
    pub(crate) fn unit_view(&self, name: &str, job: &Job) -> Unit {
        // §3.3: "For global units and unscheduled units, machineID/currentState are absent."
        let (machine_id, current_state) = match (&job.target, job.fleet.global) {
            (Some(target), false) => (
                target.clone(),
                self.agent
                    .get(&(name.to_owned(), target.clone()))
                    .map_or(JobState::Inactive, |a| a.state)
                    .as_str()
                    .to_owned(),
            ),
            _ => (String::new(), String::new()),
        };
        Unit {
            name: name.to_owned(),
            options: job.options.clone(),
            desired_state: job.desired.as_str().to_owned(),
            current_state,
            machine_id,
        }
    }

    /// The states agents report: one per (unit, machine) loaded into systemd.
    pub(crate) fn states(&self) -> Vec<UnitState> {
        self.agent
            .iter()
            .filter(|(_, a)| a.state >= JobState::Loaded)
            .map(|((unit, machine), a)| UnitState {
                name: unit.clone(),
                hash: a.hash.clone(),
                machine_id: machine.clone(),
                systemd_load_state: "loaded".into(),
                systemd_active_state: a.active.clone(),
                systemd_sub_state: a.sub.clone(),
            })
            .collect()
    }

    /// Non-global units scheduled to `machine`.
    fn scheduled_to<'a>(&'a self, machine: &'a str) -> impl Iterator<Item = (&'a String, &'a Job)> {
        self.jobs
            .iter()
            .filter(move |(_, j)| !j.fleet.global && j.target.as_deref() == Some(machine))
    }

    /// Whether `name` may share `machine` with the units there (Conflicts both ways, §3.7:
    /// "also honoured in reverse"; and never where a unit that replaces it runs).
    fn compatible(&self, name: &str, fleet: &XFleet, machine: &str) -> bool {
        self.scheduled_to(machine).all(|(other, job)| {
            other == name
                || !(fleet.conflicts.iter().any(|g| path_match(g, other))
                    || job.fleet.conflicts.iter().any(|g| path_match(g, name))
                    || job.fleet.replaces.iter().any(|g| path_match(g, name)))
        })
    }

    /// §3.8: the engine "filters machines by the X-Fleet rules and picks the least-loaded
    /// one (fewest units)". `None`: unschedulable for now.
    fn choose(&self, name: &str) -> Option<(String, Vec<String>)> {
        let job = self.jobs.get(name)?;
        let fleet = &job.fleet;
        let mut candidates: Vec<&String> = self
            .machines
            .keys()
            .filter(|id| self.alive(id))
            .filter(|id| fleet.machine_id.as_ref().is_none_or(|m| m == *id))
            // §3.7 MachineOf: "place on the machine running that unit …; unschedulable if
            // the target doesn't exist".
            .filter(|id| {
                fleet.peers.iter().all(|peer| {
                    self.jobs
                        .get(peer)
                        .is_some_and(|p| p.target.as_deref() == Some(id.as_str()))
                })
            })
            .filter(|id| {
                fleet.metadata_matches(&self.metadata.get(*id).cloned().unwrap_or_default())
            })
            .filter(|id| self.compatible(name, fleet, id))
            .collect();
        let load = |id: &str| self.scheduled_to(id).filter(|(n, _)| *n != name).count();
        candidates.sort_by_key(|id| (load(id), (*id).clone()));
        // §3.7 Replaces: "take the named unit's place and move that unit to another
        // machine".
        for id in &candidates {
            let replaced: Vec<String> = self
                .scheduled_to(id)
                .filter(|(other, _)| fleet.replaces.iter().any(|g| path_match(g, other)))
                .map(|(other, _)| other.clone())
                .collect();
            if !replaced.is_empty() {
                return Some(((*id).clone(), replaced));
            }
        }
        candidates.first().map(|id| ((*id).clone(), Vec::new()))
    }

    /// One engine reconcile and one agent reconcile (§3.8). Returns the units to start.
    pub(crate) fn reconcile(&mut self, run_units: bool) -> Vec<StartOrder> {
        // Engine: unschedule units whose machine vanished, or whose target is inactive.
        let alive: BTreeSet<String> = self
            .machines
            .keys()
            .filter(|id| self.alive(id))
            .cloned()
            .collect();
        // §3.8: "When a machine's presence key expires it unschedules its units": a dead
        // machine whose presence has not expired yet keeps them (nobody knows yet).
        let present: BTreeSet<String> = self
            .machines
            .iter()
            .filter(|(_, m)| m.present)
            .map(|(id, _)| id.clone())
            .collect();
        for job in self.jobs.values_mut() {
            if let Some(target) = &job.target
                && (!present.contains(target) || job.desired == JobState::Inactive)
            {
                job.target = None;
            }
        }
        // Engine: schedule unscheduled non-global, non-template units that should run.
        let waiting: Vec<String> = self
            .jobs
            .iter()
            .filter(|(name, j)| {
                j.target.is_none()
                    && !j.fleet.global
                    && j.desired >= JobState::Loaded
                    && !api::is_template(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            if let Some((machine, replaced)) = self.choose(&name) {
                tracing::debug!(unit = name, machine, "fake fleet engine: scheduled");
                for other in replaced {
                    if let Some(job) = self.jobs.get_mut(&other) {
                        job.target = None;
                    }
                }
                if let Some(job) = self.jobs.get_mut(&name) {
                    job.target = Some(machine);
                }
            }
        }

        let machine_ips: BTreeMap<String, String> = self
            .machines
            .iter()
            .map(|(id, m)| (id.clone(), m.primary_ip.clone()))
            .collect();
        // Agents: what each live machine should run.
        let mut wanted: BTreeMap<(String, String), (JobState, String, Vec<UnitOption>)> =
            BTreeMap::new();
        for (name, job) in &self.jobs {
            if job.fleet.global {
                // §3.7 Global: "agents check metadata themselves".
                if job.desired >= JobState::Loaded {
                    for id in &alive {
                        let metadata = self.metadata.get(id).cloned().unwrap_or_default();
                        if job.fleet.metadata_matches(&metadata)
                            && self.compatible(name, &job.fleet, id)
                        {
                            wanted.insert(
                                (name.clone(), id.clone()),
                                (job.desired, job.hash.clone(), job.options.clone()),
                            );
                        }
                    }
                }
            } else if let Some(target) = &job.target
                && alive.contains(target)
            {
                wanted.insert(
                    (name.clone(), target.clone()),
                    (job.desired, job.hash.clone(), job.options.clone()),
                );
            }
        }
        // Units no longer wanted on a machine are stopped and unloaded (dropping `stop`
        // stops the process gracefully). A dead machine's agent reports nothing.
        // A dead machine's agent does nothing: its reports stay until its presence expires.
        let frozen: BTreeSet<&String> = present.iter().filter(|id| !alive.contains(*id)).collect();
        self.agent
            .retain(|key, _| wanted.contains_key(key) || frozen.contains(&key.1));

        let mut orders = Vec::new();
        for (key, (desired, hash, options)) in wanted {
            let unit = self.agent.entry(key.clone()).or_insert_with(|| AgentUnit {
                state: JobState::Inactive,
                hash: hash.clone(),
                options: options.clone(),
                active: "inactive".into(),
                sub: "dead".into(),
                generation: 0,
                stop: None,
            });
            if unit.hash != hash {
                // A replaced unit file (§3.4 "replace"): the old one is stopped and
                // unloaded, the new one goes through the states again.
                unit.stop = None;
                unit.state = JobState::Inactive;
                unit.hash = hash;
                unit.options = options;
                unit.active = "inactive".into();
                unit.sub = "dead".into();
                unit.generation += 1;
                continue;
            }
            let next = unit.state.step_toward(desired);
            if next == unit.state {
                continue;
            }
            let was = unit.state;
            unit.state = next;
            if next == JobState::Launched {
                self.generation += 1;
                unit.generation = self.generation;
                if run_units {
                    let (sender, receiver) = oneshot::channel();
                    unit.stop = Some(sender);
                    unit.active = "activating".into();
                    unit.sub = "start-pre".into();
                    orders.push(StartOrder {
                        key: key.clone(),
                        machine_ip: machine_ips.get(&key.1).cloned().unwrap_or_default(),
                        generation: unit.generation,
                        options: unit.options.clone(),
                        stop: receiver,
                    });
                } else {
                    unit.active = "active".into();
                    unit.sub = "running".into();
                }
            } else if was == JobState::Launched {
                if let Some(stop) = unit.stop.take() {
                    let _ = stop.send(StopMode::Graceful);
                    unit.active = "deactivating".into();
                    unit.sub = "stop-sigterm".into();
                } else {
                    unit.active = "inactive".into();
                    unit.sub = "dead".into();
                }
            }
        }
        orders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption::new(section, name, value)
    }

    #[test]
    fn neighbouring_states() {
        use JobState::*;
        assert_eq!(Inactive.step_toward(Launched), Loaded);
        assert_eq!(Loaded.step_toward(Launched), Launched);
        assert_eq!(Launched.step_toward(Inactive), Loaded);
        assert_eq!(Loaded.step_toward(Loaded), Loaded);
    }

    #[test]
    fn serializes_like_go_systemd() {
        let options = [
            opt("Unit", "Description", "x"),
            opt("Service", "ExecStart", "/bin/true"),
            opt("Unit", "After", "y"),
        ];
        assert_eq!(
            serialize(&options),
            "[Unit]\nDescription=x\nAfter=y\n\n[Service]\nExecStart=/bin/true\n"
        );
    }

    #[test]
    fn x_fleet_rules() {
        let x = XFleet::parse(
            &[
                opt("X-Fleet", "MachineMetadata", "region=us disk=ssd"),
                opt("X-Fleet", "MachineMetadata", "region=eu"),
                opt("X-Fleet", "X-Conflicts", "%p@*.service"),
            ],
            "web@1.service",
        );
        assert_eq!(x.conflicts, ["web@*.service"]);
        let m = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(x.metadata_matches(&m(&[("region", "eu"), ("disk", "ssd")])));
        assert!(x.metadata_matches(&m(&[("region", "us"), ("disk", "ssd")])));
        assert!(!x.metadata_matches(&m(&[("region", "us")])));
        assert!(!x.metadata_matches(&m(&[("region", "ap"), ("disk", "ssd")])));

        let bad = |options: &[UnitOption]| XFleet::parse(options, "a.service").validate();
        assert_eq!(
            bad(&[
                opt("X-Fleet", "MachineID", "m1"),
                opt("X-Fleet", "Conflicts", "b*")
            ]),
            Err("MachineID cannot be used with Conflicts".into())
        );
        assert!(
            bad(&[
                opt("X-Fleet", "Global", "true"),
                opt("X-Fleet", "MachineOf", "b.service")
            ])
            .is_err()
        );
        assert!(
            bad(&[
                opt("X-Fleet", "Conflicts", "b*"),
                opt("X-Fleet", "Replaces", "c.service")
            ])
            .is_err()
        );
        assert!(
            bad(&[
                opt("X-Fleet", "MachineOf", "b.service"),
                opt("X-Fleet", "Conflicts", "b*")
            ])
            .is_err()
        );
        assert_eq!(bad(&[opt("X-Fleet", "Conflicts", "b*")]), Ok(()));
    }
}
