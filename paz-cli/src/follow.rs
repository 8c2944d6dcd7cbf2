//! Following a deployment until it is over, printing its progress on stderr.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use paz::Client;
use paz_core::{Deployment, DeploymentStatus, StepStatus};
use tokio::time::Instant;

use crate::args::FollowArgs;
use crate::failure::{EXIT_FAILURE, Reported};
use crate::output::{self, Output};

/// How often the deployment is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How many polls in a row may fail on the network before giving up.
const MAX_POLL_FAILURES: u32 = 20;
/// How long a deployment may stay pending before a hint is printed.
const PENDING_HINT_AFTER: Duration = Duration::from_secs(10);

/// Which steps of a deployment were printed: each step is printed once, in order, when it
/// is over (a step still pending or running holds back the ones after it until the
/// deployment ends).
#[derive(Debug, Default)]
pub struct StepPrinter {
    printed: usize,
}

impl StepPrinter {
    /// The lines (`  ✓ start v2 slot 0: 3f2a9b1c2d3e`) of the steps not printed yet.
    pub fn update(&mut self, deployment: &Deployment, colour: bool) -> Vec<String> {
        let over = deployment.status.is_final();
        let mut lines = Vec::new();
        for step in deployment.steps.iter().skip(self.printed) {
            let done = !matches!(step.status, StepStatus::Pending | StepStatus::Running);
            if !done && !over {
                break;
            }
            lines.push(format!("  {}", output::step_text(step, colour)));
            self.printed += 1;
        }
        lines
    }
}

/// The last line about a deployment that is over: `deployment web-4 succeeded in 3.2s` or
/// `deployment web-4 failed: <error>`.
pub fn outcome_line(deployment: &Deployment, now: jiff::Timestamp) -> String {
    match deployment.status {
        DeploymentStatus::Succeeded => format!(
            "deployment {} succeeded in {}",
            deployment.id,
            output::deployment_took(deployment, now)
        ),
        status => {
            let reason = deployment.error.as_deref().unwrap_or(match status {
                DeploymentStatus::Cancelled => "replaced or stopped before it finished",
                _ => "no reason recorded",
            });
            format!("deployment {} {status}: {reason}", deployment.id)
        }
    }
}

/// Prints the deployment and returns (`--detach`), or follows it to its end, printing each
/// step on stderr once: success returns `Ok`; failure, cancellation and the timeout exit
/// with 1. In JSON mode the deployment as it ended goes to stdout.
pub async fn follow(
    client: &Client,
    deployment: Deployment,
    args: &FollowArgs,
    out: &Output,
) -> anyhow::Result<()> {
    if args.detach {
        eprintln!(
            "{} started: release v{} of {}; see its progress with `paz status {}`",
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
    let colour = output::colour_for(std::io::stderr().is_terminal());
    let started = Instant::now();
    let deadline = started + args.timeout.get();
    let mut steps = StepPrinter::default();
    let mut hinted = false;
    let mut current = deployment;
    let mut failures = 0;
    loop {
        for line in steps.update(&current, colour) {
            eprintln!("{line}");
        }
        if current.status.is_final() {
            break;
        }
        if current.status == DeploymentStatus::Pending
            && !hinted
            && started.elapsed() >= PENDING_HINT_AFTER
        {
            hinted = true;
            eprintln!(
                "  {} is still pending: is the server running its scheduler? See `paz status {}`",
                current.id, current.service
            );
        }
        let still_running = || {
            anyhow!(
                "gave up waiting after {}: deployment {} is still {} on the server; \
                 check it later with `paz status {}`",
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
    if out.is_json() {
        out.deployment(&current)?;
    }
    eprintln!("{}", outcome_line(&current, jiff::Timestamp::now()));
    if current.status == DeploymentStatus::Succeeded {
        return Ok(());
    }
    if let Some(previous) = current.previous_release {
        eprintln!("release v{previous} keeps serving");
    }
    Err(Reported(EXIT_FAILURE).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::DeploymentStep;

    fn step(name: &str, status: StepStatus, message: Option<&str>) -> DeploymentStep {
        DeploymentStep {
            name: name.into(),
            status,
            started_at: None,
            finished_at: None,
            message: message.map(Into::into),
        }
    }

    /// From JSON, as the client receives it (and robust to new optional fields).
    fn pending() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "id": "web-4", "service": "web", "sequence": 4, "release": 2,
            "previous_release": 1, "strategy": "rolling", "status": "pending",
            "trigger": {"kind": "deploy"}, "created_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    const ID: &str = "3f2a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";

    #[test]
    fn each_step_is_printed_once_in_order() {
        let mut deployment = pending();
        let mut printer = StepPrinter::default();
        assert!(printer.update(&deployment, false).is_empty());
        deployment.status = DeploymentStatus::Running;
        deployment.steps = vec![step("deploying v2 (rolling)", StepStatus::Succeeded, None)];
        assert_eq!(
            printer.update(&deployment, false),
            ["  ✓ deploying v2 (rolling)"]
        );
        // Polling again without a change prints nothing.
        assert!(printer.update(&deployment, false).is_empty());
        deployment.steps.push(step(
            &format!("start v2 slot 0: {ID}"),
            StepStatus::Succeeded,
            None,
        ));
        // A step still running holds back itself and the ones after it…
        deployment
            .steps
            .push(step("health gate", StepStatus::Running, None));
        deployment
            .steps
            .push(step(&format!("drain {ID}"), StepStatus::Succeeded, None));
        assert_eq!(
            printer.update(&deployment, false),
            ["  ✓ start v2 slot 0: 3f2a9b1c2d3e"]
        );
        // …until it is over.
        deployment.steps[2].status = StepStatus::Succeeded;
        assert_eq!(
            printer.update(&deployment, false),
            ["  ✓ health gate", "  ✓ drain 3f2a9b1c2d3e"]
        );
        deployment.status = DeploymentStatus::Failed;
        deployment.error = Some("v2 slot 1 did not become healthy".into());
        deployment.steps.push(step(
            "failed",
            StepStatus::Failed,
            Some("v2 slot 1 did not become healthy"),
        ));
        assert_eq!(
            printer.update(&deployment, false),
            ["  ✗ failed: v2 slot 1 did not become healthy"]
        );
        assert!(printer.update(&deployment, false).is_empty());
    }

    #[test]
    fn a_deployment_that_ends_flushes_unfinished_steps() {
        let mut deployment = pending();
        deployment.status = DeploymentStatus::Cancelled;
        deployment.steps = vec![step("start v2 slot 0", StepStatus::Running, None)];
        let mut printer = StepPrinter::default();
        assert_eq!(printer.update(&deployment, false), ["  … start v2 slot 0"]);
    }

    #[test]
    fn colour_paints_only_the_mark() {
        let mut deployment = pending();
        deployment.steps = vec![
            step("done", StepStatus::Succeeded, None),
            step("failed", StepStatus::Failed, Some("boom")),
        ];
        deployment.status = DeploymentStatus::Failed;
        assert_eq!(
            StepPrinter::default().update(&deployment, true),
            ["  \x1b[32m✓\x1b[0m done", "  \x1b[31m✗\x1b[0m failed: boom"]
        );
    }

    #[test]
    fn the_outcome_is_one_line() {
        let mut deployment = pending();
        deployment.started_at = Some("2026-01-01T00:00:01Z".parse().unwrap());
        deployment.finished_at = Some("2026-01-01T00:00:04.2Z".parse().unwrap());
        deployment.status = DeploymentStatus::Succeeded;
        let now = jiff::Timestamp::now();
        assert_eq!(
            outcome_line(&deployment, now),
            "deployment web-4 succeeded in 3.2s"
        );
        deployment.status = DeploymentStatus::Failed;
        deployment.error = Some("aborted by the user".into());
        assert_eq!(
            outcome_line(&deployment, now),
            "deployment web-4 failed: aborted by the user"
        );
        deployment.status = DeploymentStatus::Cancelled;
        deployment.error = None;
        assert_eq!(
            outcome_line(&deployment, now),
            "deployment web-4 cancelled: replaced or stopped before it finished"
        );
    }
}
