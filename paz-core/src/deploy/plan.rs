//! The planner: what to start, drain and remove next for one service.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::model::InstanceState;
use crate::service::{DeploySettings, Strategy};

/// One instance as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    /// Scheduler id.
    pub id: String,
    /// The release it runs.
    pub release: u64,
    /// Its slot within the release.
    pub slot: u32,
    /// Starting (not yet healthy), Healthy, Draining, Stopped or Failed.
    pub state: InstanceState,
    /// Time since it was started.
    pub age: Duration,
}

/// What the planner needs to know about one service.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The release the service should run.
    pub release: u64,
    /// How many instances.
    pub instances: u32,
    /// The deploy settings of the target release.
    pub settings: &'a DeploySettings,
    /// Whether a deployment to `release` is in progress (the health gate fails it).
    pub deploying: bool,
    /// For a canary deployment: the index of the current step in `canary_steps`.
    pub canary_step: usize,
    /// Every instance of the service.
    pub observed: &'a [ObservedInstance],
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start an instance of the target release in this slot.
    Start {
        /// The slot.
        slot: u32,
    },
    /// Take an instance out of rotation, let in-flight requests finish, then stop and remove
    /// it. An instance that takes no traffic (starting) is stopped at once.
    Drain {
        /// Instance id.
        id: String,
    },
    /// Remove an instance that already stopped or failed.
    Remove {
        /// Instance id.
        id: String,
    },
    /// The deployment failed its health gate.
    Fail {
        /// Why, for people.
        reason: String,
    },
}

/// The plan for one tick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Router weight of each healthy instance, by release; a release not listed (or 0)
    /// takes no new traffic.
    pub weights: BTreeMap<u64, u32>,
    /// The service runs exactly `instances` healthy instances of the target release and
    /// nothing else (for a canary: at its last step).
    pub converged: bool,
}

fn is_live(state: InstanceState) -> bool {
    matches!(state, InstanceState::Starting | InstanceState::Healthy)
}

/// Computes the next actions for one service.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let target = input.release;
    let wanted = input.instances as usize;
    let settings = input.settings;
    let mut actions = Vec::new();

    // Stopped or failed instances are removed; a failed new one during a deploy fails it.
    for instance in input.observed {
        match instance.state {
            InstanceState::Stopped => actions.push(Action::Remove {
                id: instance.id.clone(),
            }),
            InstanceState::Failed => {
                if input.deploying && instance.release == target {
                    actions.push(Action::Fail {
                        reason: format!(
                            "instance {} of v{target} exited before it became healthy",
                            instance.id
                        ),
                    });
                }
                actions.push(Action::Remove {
                    id: instance.id.clone(),
                });
            }
            _ => {}
        }
    }

    // New instances that never pass their health check.
    let timeout = settings.health_timeout.get();
    let mut stuck = BTreeSet::new();
    for instance in input.observed {
        if instance.release == target
            && instance.state == InstanceState::Starting
            && instance.age > timeout
        {
            if input.deploying {
                actions.push(Action::Fail {
                    reason: format!(
                        "instance {} of v{target} did not pass its health check within {}",
                        instance.id, settings.health_timeout
                    ),
                });
            }
            stuck.insert(instance.id.as_str());
            actions.push(Action::Drain {
                id: instance.id.clone(),
            });
        }
    }
    if actions.iter().any(|a| matches!(a, Action::Fail { .. })) {
        // The old releases keep all the traffic while the caller reverts.
        let mut weights: BTreeMap<u64, u32> = input
            .observed
            .iter()
            .filter(|i| i.release != target && i.state == InstanceState::Healthy)
            .map(|i| (i.release, 100))
            .collect();
        weights.insert(target, 0);
        return Plan {
            actions,
            weights,
            converged: false,
        };
    }

    // The target's live instances, one per slot below `wanted`; the rest are excess.
    let mut by_slot: BTreeMap<u32, &ObservedInstance> = BTreeMap::new();
    let mut excess = Vec::new();
    for instance in input
        .observed
        .iter()
        .filter(|i| i.release == target && is_live(i.state) && !stuck.contains(i.id.as_str()))
    {
        if (instance.slot as usize) >= wanted {
            excess.push(instance);
            continue;
        }
        match by_slot.get(&instance.slot) {
            // Two instances in one slot: keep the healthy (or older) one.
            Some(kept)
                if kept.state == InstanceState::Healthy
                    || instance.state != InstanceState::Healthy =>
            {
                excess.push(instance)
            }
            Some(kept) => {
                excess.push(kept);
                by_slot.insert(instance.slot, instance);
            }
            None => {
                by_slot.insert(instance.slot, instance);
            }
        }
    }
    for instance in &excess {
        actions.push(Action::Drain {
            id: instance.id.clone(),
        });
    }
    let healthy_new = by_slot
        .values()
        .filter(|i| i.state == InstanceState::Healthy)
        .count();
    let starting_new = by_slot.len() - healthy_new;
    let free_slots: Vec<u32> = (0..wanted as u32)
        .filter(|slot| !by_slot.contains_key(slot))
        .collect();

    // Old instances still in rotation: not-yet-healthy ones first, then oldest release first.
    let mut old: Vec<&ObservedInstance> = input
        .observed
        .iter()
        .filter(|i| i.release != target && is_live(i.state))
        .collect();
    old.sort_by_key(|i| {
        (
            i.state == InstanceState::Healthy,
            i.release,
            std::cmp::Reverse(i.slot),
        )
    });
    let old_draining = input
        .observed
        .iter()
        .any(|i| i.release != target && i.state == InstanceState::Draining);
    let old_healthy: BTreeSet<u64> = old
        .iter()
        .filter(|i| i.state == InstanceState::Healthy)
        .map(|i| i.release)
        .collect();
    let all_new_healthy = healthy_new == wanted;

    let mut weights: BTreeMap<u64, u32> = old_healthy.iter().map(|&r| (r, 100)).collect();
    let drain_old = |actions: &mut Vec<Action>, count: usize| {
        for instance in old.iter().take(count) {
            actions.push(Action::Drain {
                id: instance.id.clone(),
            });
        }
    };
    let start = |actions: &mut Vec<Action>, count: usize| {
        for &slot in free_slots.iter().take(count) {
            actions.push(Action::Start { slot });
        }
    };

    let mut at_last_step = true;
    match settings.strategy {
        Strategy::Rolling => {
            let room = (settings.max_surge as usize).saturating_sub(starting_new);
            start(&mut actions, room.min(free_slots.len()));
            // Keep enough old instances to make up for new ones that are not healthy yet.
            let keep = wanted.saturating_sub(healthy_new);
            drain_old(&mut actions, old.len().saturating_sub(keep));
            weights.insert(target, 100);
        }
        Strategy::Recreate => {
            if old.is_empty() && !old_draining {
                start(&mut actions, free_slots.len());
            } else {
                drain_old(&mut actions, old.len());
            }
            weights.insert(target, 100);
        }
        Strategy::BlueGreen => {
            start(&mut actions, free_slots.len());
            if all_new_healthy || old_healthy.is_empty() {
                drain_old(&mut actions, old.len());
                weights = BTreeMap::from([(target, 100)]);
            } else {
                weights.insert(target, 0);
            }
        }
        Strategy::Canary => {
            start(&mut actions, free_slots.len());
            let steps = &settings.canary_steps;
            let percent = steps
                .get(input.canary_step)
                .copied()
                .unwrap_or(100)
                .min(100);
            if !input.deploying || old_healthy.is_empty() || (all_new_healthy && percent >= 100) {
                drain_old(&mut actions, old.len());
                weights = BTreeMap::from([(target, 100)]);
            } else if all_new_healthy {
                at_last_step = false;
                // Split traffic by share of the whole, spread over each side's instances.
                let old_count = old
                    .iter()
                    .filter(|i| i.state == InstanceState::Healthy)
                    .count()
                    .max(1) as u32;
                let new_count = healthy_new.max(1) as u32;
                let old_weight = ((100 - percent) * 100 / old_count).max(1);
                let new_weight = (percent * 100 / new_count).max(1);
                weights = old_healthy.iter().map(|&r| (r, old_weight)).collect();
                weights.insert(target, new_weight);
            } else {
                at_last_step = false;
                weights.insert(target, 0);
            }
        }
    }

    let converged = at_last_step
        && all_new_healthy
        && excess.is_empty()
        && input
            .observed
            .iter()
            .all(|i| i.release == target && i.state == InstanceState::Healthy)
        && input.observed.len() == wanted;
    Plan {
        actions,
        weights,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Strategy as S;
    use proptest::prelude::*;

    fn settings(strategy: S, max_surge: u32) -> DeploySettings {
        DeploySettings {
            strategy,
            max_surge,
            ..DeploySettings::default()
        }
    }

    /// A simulated world that carries out plans: started instances become healthy after a
    /// number of ticks (or fail), drains finish after a tick.
    struct World {
        instances: Vec<ObservedInstance>,
        next: u64,
        ready_after: Vec<u32>,
    }

    impl World {
        fn new(release: u64, count: u32) -> Self {
            let instances = (0..count)
                .map(|slot| ObservedInstance {
                    id: format!("old-{slot}"),
                    release,
                    slot,
                    state: InstanceState::Healthy,
                    age: Duration::from_secs(600),
                })
                .collect();
            World {
                instances,
                next: 0,
                ready_after: Vec::new(),
            }
        }

        fn serving(&self, weights: &BTreeMap<u64, u32>) -> usize {
            self.instances
                .iter()
                .filter(|i| {
                    i.state == InstanceState::Healthy
                        && weights.get(&i.release).copied().unwrap_or(0) > 0
                })
                .count()
        }

        /// Applies one plan; returns whether it failed.
        fn apply(
            &mut self,
            plan: &Plan,
            release: u64,
            delays: &mut impl Iterator<Item = u32>,
        ) -> bool {
            for action in &plan.actions {
                match action {
                    Action::Start { slot } => {
                        self.next += 1;
                        self.instances.push(ObservedInstance {
                            id: format!("new-{}", self.next),
                            release,
                            slot: *slot,
                            state: InstanceState::Starting,
                            age: Duration::ZERO,
                        });
                        self.ready_after.push(delays.next().unwrap_or(1));
                    }
                    Action::Drain { id } => {
                        if let Some(i) = self.instances.iter_mut().find(|i| &i.id == id) {
                            i.state = if i.state == InstanceState::Healthy {
                                InstanceState::Draining
                            } else {
                                InstanceState::Stopped
                            };
                        }
                    }
                    Action::Remove { id } => self.instances.retain(|i| &i.id != id),
                    Action::Fail { .. } => return true,
                }
            }
            false
        }

        /// Time passes: draining instances stop, starting ones may become healthy.
        fn tick(&mut self) {
            for instance in self.instances.iter_mut() {
                match instance.state {
                    InstanceState::Draining => instance.state = InstanceState::Stopped,
                    InstanceState::Starting => {
                        instance.age += Duration::from_secs(1);
                        let index: usize = instance.id[4..].parse::<usize>().unwrap() - 1;
                        let delay = self.ready_after.get(index).copied().unwrap_or(1);
                        if instance.age.as_secs() as u32 >= delay {
                            instance.state = InstanceState::Healthy;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn run(
        strategy: S,
        from: u32,
        to: u32,
        surge: u32,
        delays: Vec<u32>,
    ) -> (bool, usize, usize, usize) {
        let settings = settings(strategy, surge);
        let mut world = World::new(1, from);
        let mut delays = delays.into_iter().cycle();
        let mut min_serving = usize::MAX;
        let mut max_live = 0;
        let mut step = 0;
        for tick in 0..200 {
            let plan = plan(&PlanInput {
                release: 2,
                instances: to,
                settings: &settings,
                deploying: true,
                canary_step: step,
                observed: &world.instances,
            });
            if plan.converged {
                return (true, min_serving, max_live, tick);
            }
            assert!(!world.apply(&plan, 2, &mut delays), "no failure expected");
            // Serving is measured after the actions: drains take effect before the tick.
            min_serving = min_serving.min(
                world.serving(&plan.weights)
                    + usize::from(
                        world
                            .instances
                            .iter()
                            .all(|i| i.state != InstanceState::Healthy)
                            && from == 0,
                    ),
            );
            max_live = max_live.max(world.instances.iter().filter(|i| is_live(i.state)).count());
            if strategy == S::Canary && plan.weights.len() > 1 {
                step += 1;
            }
            world.tick();
        }
        (false, min_serving, max_live, 200)
    }

    proptest! {
        #[test]
        fn rolling_never_drops_below_wanted_and_converges(n in 1u32..6, surge in 1u32..4, delays in proptest::collection::vec(1u32..4, 1..6)) {
            let (converged, min_serving, max_live, _) = run(S::Rolling, n, n, surge, delays);
            prop_assert!(converged);
            prop_assert!(min_serving >= n as usize, "serving fell to {min_serving} of {n}");
            prop_assert!(max_live <= (n + surge) as usize, "{max_live} live > {n} + {surge}");
        }

        #[test]
        fn blue_green_and_canary_always_serve(n in 1u32..5, delays in proptest::collection::vec(1u32..4, 1..6)) {
            for strategy in [S::BlueGreen, S::Canary] {
                let (converged, min_serving, _, _) = run(strategy, n, n, 1, delays.clone());
                prop_assert!(converged, "{strategy:?} converges");
                prop_assert!(min_serving >= 1, "{strategy:?} always serves");
            }
        }

        #[test]
        fn scaling_converges(from in 0u32..5, to in 0u32..5) {
            for strategy in [S::Rolling, S::Recreate, S::BlueGreen] {
                let (converged, _, _, _) = run(strategy, from, to, 1, vec![1]);
                prop_assert!(converged, "{strategy:?} from {from} to {to}");
            }
        }
    }

    fn obs(
        id: &str,
        release: u64,
        slot: u32,
        state: InstanceState,
        age_secs: u64,
    ) -> ObservedInstance {
        ObservedInstance {
            id: id.into(),
            release,
            slot,
            state,
            age: Duration::from_secs(age_secs),
        }
    }

    /// The plan for release `release` × `instances` over `observed`.
    fn plan_for(
        settings: &DeploySettings,
        release: u64,
        instances: u32,
        deploying: bool,
        canary_step: usize,
        observed: &[ObservedInstance],
    ) -> Plan {
        plan(&PlanInput {
            release,
            instances,
            settings,
            deploying,
            canary_step,
            observed,
        })
    }

    #[test]
    fn health_gate_fails_a_deploy() {
        let settings = DeploySettings::default();
        let observed = [
            obs("a", 1, 0, InstanceState::Healthy, 900),
            obs("b", 2, 0, InstanceState::Starting, 61),
        ];
        let p = plan_for(&settings, 2, 1, true, 0, &observed);
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::Fail { reason } if reason.contains("health check"))),
            "{p:?}"
        );
        assert!(
            !p.actions.contains(&Action::Drain { id: "a".into() }),
            "the old instance keeps serving"
        );
        assert_eq!(
            p.weights,
            BTreeMap::from([(1, 100), (2, 0)]),
            "and keeps its traffic"
        );
        let observed = [
            obs("a", 1, 0, InstanceState::Healthy, 900),
            obs("b", 2, 0, InstanceState::Failed, 1),
        ];
        let p = plan_for(&settings, 2, 1, true, 0, &observed);
        assert!(p.actions.iter().any(|a| matches!(a, Action::Fail { .. })));
    }

    #[test]
    fn crashed_instances_are_replaced_outside_deploys() {
        let settings = DeploySettings::default();
        let observed = [
            obs("a", 1, 0, InstanceState::Healthy, 900),
            obs("b", 1, 1, InstanceState::Failed, 5),
        ];
        let p = plan_for(&settings, 1, 2, false, 0, &observed);
        assert_eq!(
            p.actions,
            [Action::Remove { id: "b".into() }, Action::Start { slot: 1 }]
        );
        assert!(!p.converged);
    }

    #[test]
    fn orphans_of_other_releases_are_drained_when_converged_otherwise() {
        let settings = DeploySettings::default();
        let observed = [
            obs("a", 3, 0, InstanceState::Healthy, 900),
            obs("x", 1, 4, InstanceState::Healthy, 900),
        ];
        let p = plan_for(&settings, 3, 1, false, 0, &observed);
        assert_eq!(p.actions, [Action::Drain { id: "x".into() }]);
    }

    #[test]
    fn canary_splits_traffic_by_step() {
        let settings = DeploySettings {
            strategy: S::Canary,
            ..DeploySettings::default()
        };
        let observed = [
            obs("a", 1, 0, InstanceState::Healthy, 900),
            obs("b", 1, 1, InstanceState::Healthy, 900),
            obs("c", 2, 0, InstanceState::Healthy, 9),
            obs("d", 2, 1, InstanceState::Healthy, 9),
        ];
        let p = plan_for(&settings, 2, 2, true, 0, &observed);
        assert_eq!(
            p.weights,
            BTreeMap::from([(1, 4500), (2, 500)]),
            "10% to the canary"
        );
        assert!(p.actions.is_empty() && !p.converged);
        let p = plan_for(&settings, 2, 2, true, 2, &observed);
        assert_eq!(p.weights, BTreeMap::from([(2, 100)]));
        assert_eq!(p.actions.len(), 2, "old instances drain at 100%");
    }
}
