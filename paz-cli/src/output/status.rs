//! `paz status`: the overview of every service and one service with its deployment,
//! instances and problems.

use std::fmt::Write as _;

use jiff::Timestamp;
use paz::ServiceStatus;
use paz_core::{Instance, InstanceState};

use super::deploy::{deployment_summary, step_text};
use super::table::{detail_table, new_table, render};
use super::text::{ago, or_dash, release_text, short_id, shorten_ids};

/// How many instances of the release the service should run are healthy.
pub(super) fn healthy_count(status: &ServiceStatus) -> usize {
    status
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Healthy)
        .filter(|i| {
            status
                .service
                .current_release
                .is_none_or(|release| i.release == release)
        })
        .count()
}

pub(super) fn status_table(statuses: &[ServiceStatus], tty: bool) -> String {
    let mut table = new_table(
        &[
            "NAME",
            "RELEASE",
            "INSTANCES",
            "LAST DEPLOYMENT",
            "PROBLEMS",
        ],
        tty,
    );
    for status in statuses {
        table.add_row(vec![
            status.service.spec.name.clone(),
            release_text(status.service.current_release),
            format!(
                "{}/{}",
                healthy_count(status),
                status.service.spec.instances
            ),
            status
                .deployment
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| format!("{} {}", d.id, d.status)),
            status.problems.len().to_string(),
        ]);
    }
    render(table, tty)
}

pub(super) fn status_detail(
    status: &ServiceStatus,
    tty: bool,
    colour: bool,
    now: Timestamp,
) -> String {
    let service = &status.service;
    let spec = &service.spec;
    let summary = detail_table(
        vec![
            ("name", spec.name.clone()),
            ("image", spec.image.clone()),
            (
                "release",
                format!(
                    "{} (latest v{})",
                    release_text(service.current_release),
                    service.latest_release
                ),
            ),
            (
                "instances",
                format!("{}/{} healthy", healthy_count(status), spec.instances),
            ),
            ("updated", ago(service.updated_at, now)),
        ],
        tty,
    );
    let mut text = summary;
    text.push('\n');
    match &status.deployment {
        None => text.push_str("no deployment yet\n"),
        Some(deployment) => {
            let _ = writeln!(text, "deployment {}", deployment_summary(deployment, now));
            if let Some(error) = &deployment.error {
                let _ = writeln!(text, "  error: {error}");
            }
            for step in &deployment.steps {
                let _ = writeln!(text, "  {}", step_text(step, colour));
            }
        }
    }
    text.push('\n');
    if status.instances.is_empty() {
        text.push_str("no instances\n");
    } else {
        text.push_str(&instances_table(&status.instances, tty));
    }
    text.push('\n');
    if status.problems.is_empty() {
        text.push_str("no problems\n");
    } else {
        text.push_str("problems:\n");
        for problem in &status.problems {
            let _ = writeln!(text, "  - {}", shorten_ids(problem));
        }
    }
    text
}

pub(super) fn instances_table(instances: &[Instance], tty: bool) -> String {
    let mut table = new_table(
        &[
            "ID", "RELEASE", "SLOT", "STATE", "HOST", "ADDRESS", "MESSAGE",
        ],
        tty,
    );
    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by(|a, b| (b.release, a.slot, &a.id).cmp(&(a.release, b.slot, &b.id)));
    for instance in sorted {
        table.add_row(vec![
            short_id(&instance.id).to_owned(),
            release_text(Some(instance.release)),
            instance.slot.to_string(),
            instance_state_text(instance.state).to_owned(),
            or_dash(instance.host.clone()),
            instance.address.clone().unwrap_or_else(|| "-".into()),
            or_dash(
                instance
                    .message
                    .as_deref()
                    .map(shorten_ids)
                    .unwrap_or_default(),
            ),
        ]);
    }
    render(table, tty)
}

pub(super) fn instance_state_text(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Starting => "starting",
        InstanceState::Healthy => "healthy",
        InstanceState::Draining => "draining",
        InstanceState::Stopped => "stopped",
        InstanceState::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::{at, status};

    #[test]
    fn the_status_overview_has_one_row_per_service() {
        let mut idle = status("worker");
        idle.service.current_release = None;
        idle.deployment = None;
        idle.instances.clear();
        idle.problems.clear();
        assert_eq!(
            status_table(&[status("web"), idle], false),
            "NAME    RELEASE  INSTANCES  LAST DEPLOYMENT  PROBLEMS\n\
             web     v3       1/2        web-4 failed     1\n\
             worker  -        0/2        -                0\n"
        );
    }

    #[test]
    fn the_status_of_one_service_shows_deployment_instances_and_problems() {
        let mut web = status("web");
        web.instances[2].message = Some("exited with code 1".into());
        let text = status_detail(&web, false, false, at(1_090));
        assert_eq!(
            text,
            "name       web\n\
             image      demo:v1\n\
             release    v3 (latest v3)\n\
             instances  1/2 healthy\n\
             updated    1m ago\n\
             \n\
             deployment web-4: v3 (from v2), rolling, failed in 3.2s, 1m ago\n\
             \x20 error: v3 slot 1 did not become healthy\n\
             \x20 ✓ deploying v3 (rolling)\n\
             \x20 ✓ start v3 slot 0: 3f2a9b1c2d3e\n\
             \x20 ✗ failed: v3 slot 1 did not become healthy\n\
             \n\
             ID            RELEASE  SLOT  STATE    HOST  ADDRESS          MESSAGE\n\
             3f2a9b1c2d3e  v3       0     healthy  h1    172.17.0.2:8080  -\n\
             c2            v3       1     failed   h1    172.17.0.3:8080  exited with code 1\n\
             b1            v2       0     healthy  h1    172.17.0.2:8080  -\n\
             \n\
             problems:\n\
             \x20 - v3 slot 1 keeps crashing\n"
        );
        let mut quiet = status("web");
        quiet.deployment = None;
        quiet.instances.clear();
        quiet.problems.clear();
        let text = status_detail(&quiet, false, false, at(1_090));
        assert!(
            text.ends_with("\nno deployment yet\n\nno instances\n\nno problems\n"),
            "{text}"
        );
    }
}
