//! Following a deployment until it is over, printing its progress on stderr.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use paz::Client;
use paz_core::{Deployment, DeploymentStatus, StepStatus};
use tokio::time::Instant;

use crate::args::FollowArgs;
use crate::output::{self, Output};

/// How often the deployment is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// How many polls in a row may fail on the network before giving up.
const MAX_POLL_FAILURES: u32 = 20;

/// What changed between two looks at a deployment, as lines for people.
#[derive(Debug, Default)]
pub struct Progress {
    status: Option<DeploymentStatus>,
    steps: Vec<(String, StepStatus, Option<String>)>,
}

impl Progress {
    /// The lines to print for the deployment's new state: each new or changed step, then a
    /// changed status.
    pub fn update(&mut self, deployment: &Deployment) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, step) in deployment.steps.iter().enumerate() {
            let seen = (step.name.clone(), step.status, step.message.clone());
            if self.steps.get(i) != Some(&seen) {
                lines.push(format!("  {}", output::step_line(step)));
                if i < self.steps.len() {
                    self.steps[i] = seen;
                } else {
                    self.steps.push(seen);
                }
            }
        }
        self.steps.truncate(deployment.steps.len());
        if self.status != Some(deployment.status) {
            self.status = Some(deployment.status);
            lines.push(format!("{}: {}", deployment.id, deployment.status));
        }
        lines
    }
}

/// Prints the deployment and returns (`--detach`), or follows it to its end: success returns
/// `Ok`, failure, cancellation and the timeout return an error (exit code 1).
pub async fn follow(
    client: &Client,
    deployment: Deployment,
    args: &FollowArgs,
    out: &Output,
) -> anyhow::Result<()> {
    if args.detach {
        eprintln!(
            "{} started: release v{} of {}; follow it with `paz history {}`",
            deployment.id, deployment.release, deployment.service, deployment.service
        );
        return out.deployment(&deployment);
    }
    eprintln!(
        "deploying release v{} of {} ({}, {})",
        deployment.release,
        deployment.service,
        deployment.id,
        output::strategy_text(deployment.strategy)
    );
    let deadline = Instant::now() + args.timeout.get();
    let mut progress = Progress::default();
    let mut current = deployment;
    let mut failures = 0;
    loop {
        for line in progress.update(&current) {
            eprintln!("{line}");
        }
        if current.status.is_final() {
            break;
        }
        let still_running = || {
            anyhow!(
                "gave up waiting after {}: deployment {} is still {} on the server; \
                 check it later with `paz history {}`",
                args.timeout,
                current.id,
                current.status,
                current.service
            )
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(still_running());
        }
        tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
        match tokio::time::timeout_at(deadline, client.deployment(&current.id)).await {
            Err(_elapsed) => return Err(still_running()),
            Ok(Ok(next)) => {
                current = next;
                failures = 0;
            }
            Ok(Err(e)) if !matches!(e, paz::Error::Api { .. }) && failures < MAX_POLL_FAILURES => {
                failures += 1;
                if failures == 1 {
                    eprintln!("warning: {}; retrying", crate::failure::message_of(&e));
                }
            }
            Ok(Err(e)) => {
                return Err(e).with_context(|| format!("following deployment {}", current.id));
            }
        }
    }
    out.deployment(&current)?;
    let took = output::deployment_duration(&current, jiff::Timestamp::now());
    match current.status {
        DeploymentStatus::Succeeded => {
            eprintln!(
                "{} succeeded in {took}: {} runs release v{}",
                current.id, current.service, current.release
            );
            Ok(())
        }
        status => {
            let reason = current.error.as_deref().unwrap_or("no reason recorded");
            let serving = match current.previous_release {
                Some(previous) => format!("; release v{previous} keeps serving"),
                None => String::new(),
            };
            Err(anyhow!(
                "deployment {} {status}: {reason}{serving}",
                current.id
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::DeploymentStep;

    fn step(name: &str, status: StepStatus) -> DeploymentStep {
        DeploymentStep {
            name: name.into(),
            status,
            started_at: None,
            finished_at: None,
            message: None,
        }
    }

    #[test]
    fn progress_prints_only_what_changed() {
        // From JSON, as the client receives it (and robust to new optional fields).
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "id": "web-2", "service": "web", "sequence": 2, "release": 2,
            "previous_release": 1, "strategy": "rolling", "status": "pending",
            "trigger": {"kind": "deploy"}, "created_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let mut progress = Progress::default();
        assert_eq!(progress.update(&deployment), ["web-2: pending"]);
        assert!(progress.update(&deployment).is_empty());
        deployment.status = DeploymentStatus::Running;
        deployment.steps = vec![step("start v2 instance 0", StepStatus::Running)];
        assert_eq!(
            progress.update(&deployment),
            ["  running    start v2 instance 0", "web-2: running"]
        );
        deployment.steps[0].status = StepStatus::Succeeded;
        deployment.steps[0].message = Some("healthy".into());
        deployment
            .steps
            .push(step("health gate", StepStatus::Pending));
        assert_eq!(
            progress.update(&deployment),
            [
                "  succeeded  start v2 instance 0: healthy",
                "  pending    health gate"
            ]
        );
    }
}
