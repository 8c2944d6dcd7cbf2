//! The deployment lifecycle: pending → running → (steps) → succeeded | failed | cancelled.
//! Once a deployment is over, nothing moves it again: a stale writer never revives it.

use crate::deploy::Plan;
use crate::model::{Deployment, DeploymentStatus, StepStatus};

/// Whether a deployment may go from `from` to `to` (staying in a live state is allowed:
/// that is recording steps).
pub fn can_move(from: DeploymentStatus, to: DeploymentStatus) -> bool {
    use DeploymentStatus::*;
    match (from, to) {
        (Pending, _) => true,
        (Running, Pending) => false,
        (Running, _) => true,
        (Succeeded | Failed | Cancelled, _) => false,
    }
}

/// Starts a pending deployment (running, start time, a first step naming what it does).
/// Returns whether it changed.
pub fn begin(deployment: &mut Deployment, now: jiff::Timestamp) -> bool {
    if deployment.status != DeploymentStatus::Pending {
        return false;
    }
    deployment.status = DeploymentStatus::Running;
    deployment.started_at = Some(now);
    deployment.record(
        format!(
            "deploying v{} ({:?})",
            deployment.release, deployment.strategy
        )
        .to_lowercase(),
        StepStatus::Succeeded,
        None,
    );
    true
}

/// How a running deployment stands after one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not there yet.
    Continue,
    /// The release serves as declared.
    Succeeded,
    /// A step failed: the deployment fails and the service goes back to its previous release.
    Failed(String),
}

/// The outcome of one reconcile: a failure wins, else converged means done.
pub fn outcome(plan: &Plan, failure: Option<String>) -> Outcome {
    match failure {
        Some(reason) => Outcome::Failed(reason),
        None if plan.converged => Outcome::Succeeded,
        None => Outcome::Continue,
    }
}

/// Ends a live deployment with `result` at `now`: status, error, end time and a last step.
/// Returns `false` (and changes nothing) when it is already over.
pub fn finish(
    deployment: &mut Deployment,
    result: Result<(), String>,
    now: jiff::Timestamp,
) -> bool {
    if deployment.status.is_final() {
        return false;
    }
    deployment.finished_at = Some(now);
    match result {
        Ok(()) => {
            deployment.status = DeploymentStatus::Succeeded;
            deployment.record("done", StepStatus::Succeeded, None);
        }
        Err(reason) => {
            deployment.status = DeploymentStatus::Failed;
            deployment.error = Some(reason.clone());
            deployment.record("failed", StepStatus::Failed, Some(reason));
        }
    }
    true
}

/// Cancels a live deployment (superseded or aborted) with `reason`. Returns `false` when it
/// is already over.
pub fn cancel(deployment: &mut Deployment, reason: String, now: jiff::Timestamp) -> bool {
    if deployment.status.is_final() {
        return false;
    }
    deployment.status = DeploymentStatus::Cancelled;
    deployment.error = Some(reason);
    deployment.finished_at = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Trigger;
    use crate::service::Strategy as DeployStrategy;
    use proptest::prelude::*;

    fn pending() -> Deployment {
        Deployment {
            id: Deployment::make_id("web", 1),
            service: "web".into(),
            sequence: 1,
            release: 2,
            previous_release: Some(1),
            strategy: DeployStrategy::Rolling,
            status: DeploymentStatus::Pending,
            steps: Vec::new(),
            canary_step: 0,
            trigger: Trigger::create(),
            error: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Begin,
        Record,
        Succeed,
        Fail,
        Cancel,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Begin),
            Just(Op::Record),
            Just(Op::Succeed),
            Just(Op::Fail),
            Just(Op::Cancel),
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: every status change is allowed by
        /// `can_move`, a final deployment never changes again, steps are only appended,
        /// and the end time is set exactly when it is over.
        #[test]
        fn lifecycle_never_revives(ops in proptest::collection::vec(op(), 0..20)) {
            let mut d = pending();
            let now = jiff::Timestamp::UNIX_EPOCH;
            for op in ops {
                let before = d.clone();
                match op {
                    Op::Begin => { begin(&mut d, now); }
                    Op::Record if !d.status.is_final() => d.record("step", StepStatus::Succeeded, None),
                    Op::Record => {}
                    Op::Succeed => { finish(&mut d, Ok(()), now); }
                    Op::Fail => { finish(&mut d, Err("boom".into()), now); }
                    Op::Cancel => { cancel(&mut d, "superseded".into(), now); }
                }
                prop_assert!(d.status == before.status || can_move(before.status, d.status));
                if before.status.is_final() {
                    prop_assert_eq!(&d, &before);
                }
                prop_assert!(d.steps.len() >= before.steps.len());
                prop_assert_eq!(d.finished_at.is_some(), d.status.is_final());
                prop_assert_eq!(d.error.is_some(), matches!(d.status, DeploymentStatus::Failed | DeploymentStatus::Cancelled));
            }
        }
    }

    #[test]
    fn a_failure_wins_over_convergence() {
        let plan = Plan {
            converged: true,
            ..Plan::default()
        };
        assert_eq!(
            outcome(&plan, Some("x".into())),
            Outcome::Failed("x".into())
        );
        assert_eq!(outcome(&plan, None), Outcome::Succeeded);
        assert_eq!(outcome(&Plan::default(), None), Outcome::Continue);
    }
}
