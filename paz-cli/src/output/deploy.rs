//! Deployments and releases: the history table, one deployment in detail, its steps.

use std::fmt::Write as _;

use jiff::Timestamp;
use paz_core::{Deployment, DeploymentStatus, DeploymentStep, Release, StepStatus};

use super::table::{detail_table, new_table, render};
use super::text::{
    ago, duration_text, release_text, shorten_ids, strategy_text, timestamp_text, trigger_text,
};

pub(super) fn deployments_table(deployments: &[Deployment], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &["ID", "RELEASE", "STATUS", "TRIGGER", "CREATED", "DURATION"],
        tty,
    );
    for deployment in deployments {
        table.add_row(vec![
            deployment.id.clone(),
            release_text(Some(deployment.release)),
            deployment.status.to_string(),
            trigger_text(&deployment.trigger),
            ago(deployment.created_at, now),
            deployment_duration(deployment, now),
        ]);
    }
    render(table, tty)
}

pub(super) fn deployment_detail(deployment: &Deployment, tty: bool) -> String {
    let mut rows = vec![
        ("id", deployment.id.clone()),
        ("service", deployment.service.clone()),
        (
            "release",
            match deployment.previous_release {
                Some(previous) => format!("v{} (from v{previous})", deployment.release),
                None => format!("v{}", deployment.release),
            },
        ),
        ("strategy", strategy_text(deployment.strategy).to_owned()),
        ("status", deployment.status.to_string()),
        ("trigger", trigger_text(&deployment.trigger)),
        ("created", timestamp_text(deployment.created_at)),
    ];
    if deployment.started_at.is_some() {
        rows.push((
            "duration",
            deployment_duration(deployment, Timestamp::now()),
        ));
    }
    if let Some(error) = &deployment.error {
        rows.push(("error", error.clone()));
    }
    if !deployment.steps.is_empty() {
        let steps: Vec<String> = deployment
            .steps
            .iter()
            .map(|step| step_text(step, false))
            .collect();
        rows.push(("steps", steps.join("\n")));
    }
    detail_table(rows, tty)
}

/// One step of a deployment: `✓ start v2 slot 0: 3f2a9b1c2d3e`, with long container ids
/// shortened and the step's message after a colon. `colour` paints the mark.
pub fn step_text(step: &DeploymentStep, colour: bool) -> String {
    let mark = step_mark(step.status);
    let mark = match (colour, step.status) {
        (true, StepStatus::Succeeded) => format!("\x1b[32m{mark}\x1b[0m"),
        (true, StepStatus::Failed) => format!("\x1b[31m{mark}\x1b[0m"),
        _ => mark.to_owned(),
    };
    let mut line = format!("{mark} {}", shorten_ids(&step.name));
    if let Some(message) = &step.message {
        let _ = write!(line, ": {}", shorten_ids(message));
    }
    line
}

/// The mark of a step's state.
pub(super) fn step_mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "·",
        StepStatus::Running => "…",
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Skipped => "-",
    }
}

/// `web-4: v2 (from v1), rolling, succeeded in 3.2s, 5m ago`.
pub(super) fn deployment_summary(deployment: &Deployment, now: Timestamp) -> String {
    let mut text = format!("{}: v{}", deployment.id, deployment.release);
    if let Some(previous) = deployment.previous_release {
        let _ = write!(text, " (from v{previous})");
    }
    let _ = write!(
        text,
        ", {}, {}",
        strategy_text(deployment.strategy),
        deployment.status
    );
    match deployment.status {
        DeploymentStatus::Pending => {}
        DeploymentStatus::Running => {
            let _ = write!(text, " for {}", deployment_took(deployment, now));
        }
        _ => {
            let _ = write!(text, " in {}", deployment_took(deployment, now));
        }
    }
    let _ = write!(text, ", {}", ago(deployment.created_at, now));
    text
}

/// How long a deployment took (or has been going on): from its start (or creation) to its
/// end (or `now`).
pub fn deployment_took(deployment: &Deployment, now: Timestamp) -> String {
    let start = deployment.started_at.unwrap_or(deployment.created_at);
    let end = deployment.finished_at.unwrap_or(now);
    duration_text(end.duration_since(start).as_millis().max(0) as u64)
}

/// How long a deployment ran (so far, while it runs); `-` before it started.
pub fn deployment_duration(deployment: &Deployment, now: Timestamp) -> String {
    let Some(started) = deployment.started_at else {
        return "-".into();
    };
    let end = match (deployment.finished_at, deployment.status) {
        (Some(end), _) => end,
        (None, DeploymentStatus::Pending | DeploymentStatus::Running) => now,
        (None, _) => return "-".into(),
    };
    duration_text(end.duration_since(started).as_millis().max(0) as u64)
}

/// The releases table of `paz releases`.
pub(super) fn releases_table(releases: &[Release], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &[
            "VERSION",
            "IMAGE",
            "PINNED",
            "INSTANCES",
            "TRIGGER",
            "CREATED",
        ],
        tty,
    );
    for release in releases {
        table.add_row(vec![
            format!("v{}", release.version),
            release.spec.image.clone(),
            pin_text(release.image_digest.as_deref()),
            release.spec.instances.to_string(),
            trigger_text(&release.trigger),
            ago(release.created_at, now),
        ]);
    }
    render(table, tty)
}

/// The image a release is pinned to, short: `sha256:` and 12 hex digits of its digest or
/// image id (`--output json` has it whole); `-` until its first start.
pub(super) fn pin_text(pin: Option<&str>) -> String {
    let Some(pin) = pin else {
        return "-".into();
    };
    let digest = paz_core::hook::digest_of(pin);
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 => format!("{algorithm}:{}", &hex[..12]),
        _ => digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::{at, deployment};

    #[test]
    fn running_deployments_show_how_long_so_far() {
        let mut running = deployment(DeploymentStatus::Running);
        running.finished_at = None;
        assert_eq!(
            deployment_summary(&running, at(1_006)),
            "web-4: v3 (from v2), rolling, running for 5.0s, 6s ago"
        );
    }

    #[test]
    fn releases_show_the_image_they_are_pinned_to() {
        let digest = format!("sha256:{}", "e2f8af01".repeat(8));
        let release = |version, pin: Option<String>| Release {
            service: "web".into(),
            version,
            spec: paz_core::ServiceSpec::new("web", "paz-demo:latest"),
            image_digest: pin,
            secrets: Default::default(),
            trigger: paz_core::Trigger::new(paz_core::TriggerKind::Deploy),
            created_at: at(1_000),
        };
        let releases = [
            release(1, Some(format!("127.0.0.1:5000/paz-demo@{digest}"))),
            release(2, Some(format!("sha256:{}", "5c4941a0".repeat(8)))),
            release(3, None),
        ];
        let text = releases_table(&releases, false, at(1_010));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("PINNED"), "{text}");
        assert!(lines[1].contains("sha256:e2f8af01e2f8 "), "{text}");
        assert!(lines[2].contains("sha256:5c4941a05c49 "), "{text}");
        assert!(lines[3].contains(" - "), "{text}");
    }

    #[test]
    fn deployment_details_list_steps_with_marks() {
        let text = deployment_detail(&deployment(DeploymentStatus::Failed), false);
        assert!(
            text.contains("steps     ✓ deploying v3 (rolling)\n"),
            "{text}"
        );
        assert!(
            text.contains("✗ failed: v3 slot 1 did not become healthy"),
            "{text}"
        );
    }
}
