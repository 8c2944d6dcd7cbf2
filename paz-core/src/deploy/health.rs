//! Health-state transitions: when a checked instance turns healthy or unhealthy, which check
//! applies to a release, and what state the planner sees for an instance.

use std::time::Duration;

use crate::model::InstanceState;
use crate::service::{HealthCheck, HealthKind, ServiceSpec};

/// How often an instance that has not passed yet is checked: often, so it is routed soon
/// after it can serve.
pub const STARTING_CHECK: Duration = Duration::from_millis(50);

/// What is known about one instance's health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Passed its check (and has not failed `retries` in a row since).
    pub healthy: bool,
    /// Consecutive failed checks since it was last healthy and past its start period.
    pub failures: u32,
}

/// What one check result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing the router or the planner sees.
    None,
    /// The instance passed for the first time (or again): route it.
    BecameHealthy,
    /// The instance failed `retries` checks in a row: stop routing it and replace it.
    BecameUnhealthy,
}

impl HealthState {
    /// Applies one check result to an instance `age` after it started.
    ///
    /// A pass makes it healthy and forgets failures. A failure counts only once the
    /// instance has been healthy and is past its start period; `retries` of them in a row
    /// make it unhealthy. (Before it is first healthy, the deployment's health timeout, not
    /// this count, decides when to give up on it.)
    pub fn observe(&mut self, passed: bool, age: Duration, check: &HealthCheck) -> Transition {
        if passed {
            self.failures = 0;
            if !self.healthy {
                self.healthy = true;
                return Transition::BecameHealthy;
            }
            return Transition::None;
        }
        if self.healthy && age > check.start_period.get() {
            self.failures += 1;
            if self.failures >= check.retries.max(1) {
                self.healthy = false;
                return Transition::BecameUnhealthy;
            }
        }
        Transition::None
    }

    /// Whether it failed its check after having been healthy (to be replaced).
    pub fn has_failed(&self, check: &HealthCheck) -> bool {
        !self.healthy && self.failures > 0 && self.failures >= check.retries.max(1)
    }

    /// When to check it next: at the check's interval once healthy, [`STARTING_CHECK`] before.
    pub fn next_interval(&self, check: &HealthCheck) -> Duration {
        if self.healthy {
            check.interval.get()
        } else {
            STARTING_CHECK
        }
    }
}

/// The check for instances of a spec: the declared one (on the routed port unless it names
/// one), else a TCP check of the routed port, else none (healthy once running).
pub fn check_for(spec: &ServiceSpec) -> Option<HealthCheck> {
    let port = spec
        .routed_port()
        .map(u32::from)
        .or_else(|| spec.ports.first().map(|p| p.port));
    match &spec.health {
        Some(check) => {
            let mut check = check.clone();
            if check.port.is_none() {
                check.port = port;
            }
            Some(check)
        }
        None => Some(HealthCheck {
            kind: HealthKind::Tcp,
            port: Some(port?),
            ..HealthCheck::default()
        }),
    }
}

/// The state the planner sees: the scheduler's, refined by what the runtime knows: draining
/// (taken out by Paz), healthy (passed its check), failed (failed it after being healthy),
/// else starting. `health` is `None` for an instance the runtime has not tracked yet; an
/// instance without a check is healthy once running (`check` `None`, `health` healthy).
pub fn instance_state(
    reported: InstanceState,
    draining: bool,
    health: Option<&HealthState>,
    check: Option<&HealthCheck>,
) -> InstanceState {
    match reported {
        InstanceState::Stopped | InstanceState::Failed => reported,
        _ if draining => InstanceState::Draining,
        _ => match (health, check) {
            (Some(h), _) if h.healthy => InstanceState::Healthy,
            (Some(h), Some(check)) if h.has_failed(check) => InstanceState::Failed,
            _ => InstanceState::Starting,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HumanDuration;
    use proptest::prelude::*;

    fn check(retries: u32, start_period_ms: u64) -> HealthCheck {
        HealthCheck {
            retries,
            start_period: HumanDuration(Duration::from_millis(start_period_ms)),
            ..HealthCheck::default()
        }
    }

    #[test]
    fn a_pass_routes_and_retries_failures_unroute() {
        let check = check(3, 0);
        let mut state = HealthState::default();
        let age = Duration::from_secs(1);
        assert_eq!(state.observe(false, age, &check), Transition::None);
        assert_eq!(state.observe(true, age, &check), Transition::BecameHealthy);
        assert_eq!(state.observe(false, age, &check), Transition::None);
        assert_eq!(state.observe(false, age, &check), Transition::None);
        assert_eq!(
            state.observe(false, age, &check),
            Transition::BecameUnhealthy
        );
        assert!(state.has_failed(&check));
        assert_eq!(
            instance_state(InstanceState::Healthy, false, Some(&state), Some(&check)),
            InstanceState::Failed
        );
    }

    proptest! {
        /// Failures within the start period never count; a single pass resets the count;
        /// an instance becomes unhealthy only after exactly `retries` consecutive failures
        /// past its start period, having been healthy.
        #[test]
        fn transitions_follow_the_rules(
            retries in 1u32..6,
            results in proptest::collection::vec((any::<bool>(), 0u64..2_000), 0..60),
        ) {
            let check = check(retries, 1_000);
            let mut state = HealthState::default();
            let mut model_healthy = false;
            let mut run = 0u32;
            for (passed, age_ms) in results {
                let before = state;
                let t = state.observe(passed, Duration::from_millis(age_ms), &check);
                if passed {
                    run = 0;
                    prop_assert_eq!(t == Transition::BecameHealthy, !model_healthy);
                    model_healthy = true;
                } else if model_healthy && age_ms > 1_000 {
                    run += 1;
                    if run >= retries {
                        prop_assert_eq!(t, Transition::BecameUnhealthy);
                        model_healthy = false;
                    } else {
                        prop_assert_eq!(t, Transition::None);
                    }
                } else {
                    prop_assert_eq!(t, Transition::None);
                    prop_assert_eq!(state, before);
                }
                prop_assert_eq!(state.healthy, model_healthy);
                prop_assert!(state.failures <= retries);
            }
        }

        /// Draining wins over health, and the scheduler's stopped/failed win over both.
        #[test]
        fn the_reported_end_states_win(healthy in any::<bool>(), draining in any::<bool>()) {
            let health = HealthState { healthy, failures: 0 };
            for reported in [InstanceState::Stopped, InstanceState::Failed] {
                prop_assert_eq!(instance_state(reported, draining, Some(&health), None), reported);
            }
            let seen = instance_state(InstanceState::Starting, draining, Some(&health), None);
            let expected = if draining {
                InstanceState::Draining
            } else if healthy {
                InstanceState::Healthy
            } else {
                InstanceState::Starting
            };
            prop_assert_eq!(seen, expected);
        }
    }
}
