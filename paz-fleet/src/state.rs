//! From a fleet unit and its systemd state to a Paz [`Instance`].
//!
//! # State rules
//!
//! Paz starts a unit with `desiredState: launched` and stops it with `desiredState: loaded`
//! (`fleetctl stop`), so a desired state other than `launched` means "stopped by Paz".
//!
//! | desiredState | machineID | currentState | systemd active/sub | Paz state | message |
//! |---|---|---|---|---|---|
//! | `loaded`/`inactive` | any | any | any | `Stopped` | `stopped by Paz (systemd …)` |
//! | `launched` | absent | — | — | `Starting` (address `None`) | `waiting for fleet to schedule it` |
//! | `launched` | absent, after it was scheduled (its machine was lost) | — | — | `Failed` | `its machine left the fleet…` (set by the scheduler, which remembers what it saw placed) |
//! | `launched` | set, a machine not among `/machines` (its presence expired) | any | any | `Starting` (address `None`) | `its machine … left the fleet; waiting for fleet to move it` |
//! | `launched` | set | not `launched` yet, or no state reported | — | `Starting` | `scheduled, not started yet` |
//! | `launched` | set | `launched` | `active`/`running` | `Starting` | none: Paz's health checker decides `Healthy` |
//! | `launched` | set | `launched` | `activating`/`reloading`, or `active` with another substate | `Starting` | the systemd states |
//! | `launched` | set | `launched` | `failed`/… | `Failed` | `failed (systemd failed/…)` |
//! | `launched` | set | `launched` | `inactive`/`deactivating` | `Failed` | `exited (systemd inactive/dead)` (units have `Restart=no`) |
//!
//! The address is `<machine primaryIP>:<HostPort>` while the unit is scheduled to a known
//! machine and the instance has an http port; `None` otherwise. When fleet reschedules a
//! unit (its machine was lost), the unit keeps its name and gets a new machine, so the
//! instance reports the new host and address.

use paz_core::model::{Instance, InstanceState};

use crate::api::{Machine, Unit, UnitState};
use crate::unit::PazMeta;

/// Whether systemd reports the unit running.
pub(crate) fn is_running(state: Option<&UnitState>) -> bool {
    state.is_some_and(|s| s.systemd_active_state == "active" && s.systemd_sub_state == "running")
}

fn systemd(state: &UnitState) -> String {
    format!(
        "systemd {}/{}",
        state.systemd_active_state, state.systemd_sub_state
    )
}

/// Applies the state rules of the module docs.
pub(crate) fn classify(unit: &Unit, state: Option<&UnitState>) -> (InstanceState, Option<String>) {
    // Only the state reported by the machine the unit is scheduled to counts.
    let state = state.filter(|s| !unit.machine_id.is_empty() && s.machine_id == unit.machine_id);
    if unit.desired_state != "launched" {
        let detail = state.map_or_else(|| "not running".to_owned(), systemd);
        return (
            InstanceState::Stopped,
            Some(format!("stopped by Paz ({detail})")),
        );
    }
    if unit.machine_id.is_empty() {
        return (
            InstanceState::Starting,
            Some("waiting for fleet to schedule it".into()),
        );
    }
    let Some(state) = state.filter(|_| unit.current_state == "launched") else {
        return (
            InstanceState::Starting,
            Some(format!(
                "scheduled to machine {}, not started yet",
                unit.machine_id
            )),
        );
    };
    match (
        state.systemd_active_state.as_str(),
        state.systemd_sub_state.as_str(),
    ) {
        ("active", "running") => (InstanceState::Starting, None),
        ("active" | "activating" | "reloading", _) => {
            (InstanceState::Starting, Some(systemd(state)))
        }
        ("failed", _) => (
            InstanceState::Failed,
            Some(format!("failed ({})", systemd(state))),
        ),
        _ => (
            InstanceState::Failed,
            Some(format!("exited ({})", systemd(state))),
        ),
    }
}

/// The name Paz shows for a machine (`paz hosts`, an instance's host): its `hostname`
/// metadata, else the first 12 characters of its id.
pub(crate) fn machine_name(machine: &Machine) -> String {
    machine
        .metadata
        .get("hostname")
        .cloned()
        .unwrap_or_else(|| machine.id.chars().take(12).collect())
}

/// The instance of a Paz unit.
pub(crate) fn instance(
    unit: &Unit,
    meta: &PazMeta,
    state: Option<&UnitState>,
    machines: &[Machine],
) -> Instance {
    let (mut state_, mut message) = classify(unit, state);
    let machine = machines.iter().find(|m| m.id == unit.machine_id);
    if machine.is_none() && !unit.machine_id.is_empty() && state_ != InstanceState::Stopped {
        // Its machine left (presence expired) and fleet has not moved it yet: what its
        // agent last reported does not count.
        state_ = InstanceState::Starting;
        message = Some(format!(
            "its machine {} left the fleet; waiting for fleet to move it",
            unit.machine_id
        ));
    }
    let address = match (machine, meta.host_port, meta.port) {
        (Some(machine), Some(host_port), Some(_)) if !machine.primary_ip.is_empty() => {
            Some(format!("{}:{host_port}", machine.primary_ip))
        }
        _ => None,
    };
    Instance {
        id: unit.name.clone(),
        service: meta.service.clone(),
        release: meta.release,
        slot: meta.slot,
        host: machine.map_or_else(|| unit.machine_id.clone(), machine_name),
        address,
        state: state_,
        message,
        epoch: meta.epoch.clone(),
        started_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(desired: &str, machine: &str, current: &str) -> Unit {
        Unit {
            name: "paz-web-v1-0-aaaaaa.service".into(),
            options: Vec::new(),
            desired_state: desired.into(),
            current_state: current.into(),
            machine_id: machine.into(),
        }
    }

    fn state(active: &str, sub: &str) -> UnitState {
        UnitState {
            name: "paz-web-v1-0-aaaaaa.service".into(),
            hash: String::new(),
            machine_id: "m1".into(),
            systemd_load_state: "loaded".into(),
            systemd_active_state: active.into(),
            systemd_sub_state: sub.into(),
        }
    }

    #[test]
    fn follows_the_table() {
        use InstanceState::*;
        let cases = [
            (unit("launched", "", ""), None, Starting),
            (unit("launched", "m1", "loaded"), None, Starting),
            (unit("launched", "m1", "launched"), None, Starting),
            (
                unit("launched", "m1", "launched"),
                Some(state("active", "running")),
                Starting,
            ),
            (
                unit("launched", "m1", "launched"),
                Some(state("activating", "start-pre")),
                Starting,
            ),
            (
                unit("launched", "m1", "launched"),
                Some(state("failed", "failed")),
                Failed,
            ),
            (
                unit("launched", "m1", "launched"),
                Some(state("inactive", "dead")),
                Failed,
            ),
            (
                unit("loaded", "m1", "loaded"),
                Some(state("inactive", "dead")),
                Stopped,
            ),
            (
                unit("loaded", "m1", "launched"),
                Some(state("active", "running")),
                Stopped,
            ),
            (unit("inactive", "", ""), None, Stopped),
        ];
        for (unit, state, expected) in cases {
            let (got, message) = classify(&unit, state.as_ref());
            assert_eq!(got, expected, "{unit:?} {state:?} → {message:?}");
        }
        let (_, message) = classify(
            &unit("launched", "m1", "launched"),
            Some(&state("failed", "failed")),
        );
        assert_eq!(message.as_deref(), Some("failed (systemd failed/failed)"));
        // A running unit on a machine that left: not routable until fleet moves it.
        let meta = PazMeta {
            cluster: "c1".into(),
            service: "web".into(),
            release: 1,
            slot: 0,
            port: Some(8080),
            host_port: Some(20001),
            epoch: None,
        };
        let running = (
            unit("launched", "m1", "launched"),
            state("active", "running"),
        );
        let m1 = Machine {
            id: "m1".into(),
            primary_ip: "10.0.0.5".into(),
            ..Machine::default()
        };
        let here = instance(
            &running.0,
            &meta,
            Some(&running.1),
            std::slice::from_ref(&m1),
        );
        assert_eq!(here.address.as_deref(), Some("10.0.0.5:20001"));
        let gone = instance(&running.0, &meta, Some(&running.1), &[]);
        assert_eq!((gone.state, gone.address), (Starting, None));
        assert!(gone.message.unwrap().contains("left the fleet"));
        // A state reported by another machine (the unit moved) does not count.
        let mut other = state("failed", "failed");
        other.machine_id = "m2".into();
        assert_eq!(
            classify(&unit("launched", "m1", "launched"), Some(&other)).0,
            Starting
        );
    }
}
