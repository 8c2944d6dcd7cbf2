//! From a Docker container to a Paz [`Instance`]: labels, names and the state rules.
//!
//! # State rules
//!
//! | Docker status | Paz state | message |
//! |---|---|---|
//! | `created` (never started) | `Starting` | `created, not started yet` |
//! | `created` with a daemon error (the start failed) | `Failed` | the daemon's error |
//! | `running` | `Starting` | none: Paz's health checker decides `Healthy` |
//! | `restarting`, `paused` | `Starting` | the status (Paz sets no restart policy and never pauses) |
//! | `removing` | `Stopped` | `being removed` |
//! | `exited`/`dead`, OOM-killed | `Failed` | `killed: out of memory (exit code 137)` |
//! | `exited`/`dead` with a daemon error | `Failed` | the daemon's error and the exit code |
//! | `exited`, **stopped by Paz** | `Stopped` | `stopped by Paz (exit code N)` (137: killed after the grace period) |
//! | `exited`/`dead`, anything else | `Failed` | `exited with code N` (also for 0: a service is not meant to end on its own) |
//!
//! "Stopped by Paz" is recorded without labels (labels cannot change after a container is
//! created): before it stops a container, [`Scheduler::stop`](paz_core::scheduler::Scheduler::stop)
//! renames it by appending [`STOPPED_SUFFIX`] to its name. The mark survives restarts of
//! Paz and of the daemon, and shows in `docker ps -a`. A container that exits on its own,
//! crashes, is OOM-killed or is stopped by someone else (`docker stop`) keeps its name and is
//! `Failed`, whatever its exit code: Paz replaces it.

use std::collections::HashMap;

use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, EndpointSettings,
};
use paz_core::model::{Instance, InstanceState};

/// Every container and network Paz creates carries `paz.managed=true`.
pub const LABEL_MANAGED: &str = "paz.managed";
/// The cluster that owns a container: the id kept in its store. A scheduler sees and touches
/// only the containers of its own cluster.
pub const LABEL_CLUSTER: &str = "paz.cluster";
/// The service of an instance.
pub const LABEL_SERVICE: &str = "paz.service";
/// The release (number) of an instance.
pub const LABEL_RELEASE: &str = "paz.release";
/// The slot (0-based) of an instance within its release.
pub const LABEL_INSTANCE: &str = "paz.instance";
/// The routed (first http) container port, when the instance has one: with the container's
/// IP it makes the instance's address.
pub const LABEL_PORT: &str = "paz.port";
/// Which life of the service started the instance (its creation time).
pub const LABEL_EPOCH: &str = "paz.epoch";
/// Appended to a container's name when Paz stops it (see the module docs).
pub const STOPPED_SUFFIX: &str = ".stopped";

/// What the state rules need to know about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    pub status: Option<ContainerStateStatusEnum>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub stopped_by_paz: bool,
}

impl Observed {
    pub(crate) fn new(state: Option<&ContainerState>, name: &str) -> Self {
        let state = state.cloned().unwrap_or_default();
        Observed {
            status: state.status,
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.trim().is_empty()),
            stopped_by_paz: is_marked_stopped(name),
        }
    }
}

/// Whether a container name carries Paz's stop mark.
pub(crate) fn is_marked_stopped(name: &str) -> bool {
    name.trim_start_matches('/').ends_with(STOPPED_SUFFIX)
}

/// Applies the state rules of the module docs.
pub(crate) fn classify(observed: &Observed) -> (InstanceState, Option<String>) {
    use ContainerStateStatusEnum as S;
    let code = observed.exit_code.unwrap_or(-1);
    let status = observed.status.unwrap_or(S::EMPTY);
    match status {
        S::CREATED => match &observed.error {
            Some(error) => (
                InstanceState::Failed,
                Some(format!("failed to start: {error}")),
            ),
            None if observed.stopped_by_paz => (
                InstanceState::Stopped,
                Some("stopped by Paz before it started".into()),
            ),
            None => (
                InstanceState::Starting,
                Some("created, not started yet".into()),
            ),
        },
        S::RUNNING => (InstanceState::Starting, None),
        S::RESTARTING | S::PAUSED | S::STOPPING => {
            (InstanceState::Starting, Some(status.to_string()))
        }
        S::REMOVING => (InstanceState::Stopped, Some("being removed".into())),
        S::EXITED | S::DEAD => {
            if observed.oom_killed {
                (
                    InstanceState::Failed,
                    Some(format!("killed: out of memory (exit code {code})")),
                )
            } else if let Some(error) = &observed.error {
                (
                    InstanceState::Failed,
                    Some(format!("{error} (exit code {code})")),
                )
            } else if observed.stopped_by_paz && status == S::EXITED {
                let how = if code == 137 {
                    "stopped by Paz: killed after the grace period (exit code 137)".to_owned()
                } else {
                    format!("stopped by Paz (exit code {code})")
                };
                (InstanceState::Stopped, Some(how))
            } else if status == S::DEAD {
                (
                    InstanceState::Failed,
                    Some(format!("dead (exit code {code})")),
                )
            } else {
                (
                    InstanceState::Failed,
                    Some(format!("exited with code {code}")),
                )
            }
        }
        S::EMPTY => (
            InstanceState::Failed,
            Some("the daemon reports no state".into()),
        ),
    }
}

/// The labels of a container (empty when it has none).
fn labels_of(container: &ContainerInspectResponse) -> HashMap<String, String> {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

/// Whether these labels mark a container that `cluster`'s Paz manages.
pub(crate) fn is_managed(labels: &HashMap<String, String>, cluster: &str) -> bool {
    labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && labels.get(LABEL_CLUSTER).map(String::as_str) == Some(cluster)
        && labels.contains_key(LABEL_SERVICE)
}

/// The container's IP on the Paz network (by network id, then name), else on any network.
fn ip_of(
    networks: Option<&HashMap<String, EndpointSettings>>,
    network_id: &str,
    network_name: &str,
) -> Option<String> {
    let networks = networks?;
    let ip = |e: &EndpointSettings| e.ip_address.clone().filter(|ip| !ip.is_empty());
    networks
        .values()
        .find(|e| e.network_id.as_deref() == Some(network_id))
        .and_then(ip)
        .or_else(|| networks.get(network_name).and_then(ip))
        .or_else(|| {
            let mut names: Vec<_> = networks.keys().collect();
            names.sort();
            names.into_iter().find_map(|n| ip(&networks[n]))
        })
}

/// Where the scheduler is: names the network to take the address from and the host.
pub(crate) struct Context<'a> {
    pub network_id: &'a str,
    pub network_name: &'a str,
    pub host: &'a str,
    pub cluster: &'a str,
}

/// The instance a container is, or `None` when Paz does not manage it.
pub(crate) fn instance_of(
    container: &ContainerInspectResponse,
    context: &Context<'_>,
) -> Option<Instance> {
    let labels = labels_of(container);
    if !is_managed(&labels, context.cluster) {
        return None;
    }
    let id = container.id.clone()?;
    let name = container.name.clone().unwrap_or_default();
    let observed = Observed::new(container.state.as_ref(), &name);
    let (state, message) = classify(&observed);
    let live = matches!(
        observed.status,
        Some(
            ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING
        )
    );
    let address = match labels.get(LABEL_PORT) {
        Some(port) if live => ip_of(
            container
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref()),
            context.network_id,
            context.network_name,
        )
        .map(|ip| format!("{ip}:{port}")),
        _ => None,
    };
    Some(Instance {
        id,
        service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        release: labels
            .get(LABEL_RELEASE)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        slot: labels
            .get(LABEL_INSTANCE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        host: context.host.to_owned(),
        address,
        state,
        message,
        epoch: labels.get(LABEL_EPOCH).cloned(),
        // Docker writes `0001-01-01T00:00:00Z` for a container never started.
        started_at: container
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .filter(|t| t.as_second() > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, NetworkSettings};

    fn observed(status: ContainerStateStatusEnum, code: i64) -> Observed {
        Observed {
            status: Some(status),
            exit_code: Some(code),
            ..Observed::default()
        }
    }

    #[test]
    fn running_and_created_are_starting() {
        use ContainerStateStatusEnum as S;
        assert_eq!(
            classify(&observed(S::RUNNING, 0)).0,
            InstanceState::Starting
        );
        assert_eq!(
            classify(&observed(S::CREATED, 0)).0,
            InstanceState::Starting
        );
        let mut failed_start = observed(S::CREATED, 127);
        failed_start.error = Some("exec: \"/nope\": not found".into());
        let (state, message) = classify(&failed_start);
        assert_eq!(state, InstanceState::Failed);
        assert!(message.unwrap().contains("not found"));
    }

    #[test]
    fn exits_fail_unless_paz_stopped_them() {
        use ContainerStateStatusEnum as S;
        for code in [0, 1, 2, 137, 143] {
            let (state, message) = classify(&observed(S::EXITED, code));
            assert_eq!(state, InstanceState::Failed, "code {code}");
            assert_eq!(message.unwrap(), format!("exited with code {code}"));
        }
        for code in [0, 1, 137, 143] {
            let mut o = observed(S::EXITED, code);
            o.stopped_by_paz = true;
            assert_eq!(classify(&o).0, InstanceState::Stopped, "code {code}");
        }
        let mut oom = observed(S::EXITED, 137);
        oom.stopped_by_paz = true;
        oom.oom_killed = true;
        let (state, message) = classify(&oom);
        assert_eq!(state, InstanceState::Failed);
        assert!(message.unwrap().contains("out of memory"));
        let mut dead = observed(S::DEAD, 0);
        dead.stopped_by_paz = true;
        assert_eq!(classify(&dead).0, InstanceState::Failed);
    }

    #[test]
    fn stop_marks_are_read_from_names() {
        assert!(is_marked_stopped("/paz-web-v1-0-abc123.stopped"));
        assert!(!is_marked_stopped("/paz-web-v1-0-abc123"));
    }

    #[test]
    fn instances_come_from_labelled_containers_only() {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_CLUSTER.to_owned(), "c1".to_owned()),
            (LABEL_SERVICE.to_owned(), "web".to_owned()),
            (LABEL_RELEASE.to_owned(), "3".to_owned()),
            (LABEL_INSTANCE.to_owned(), "1".to_owned()),
            (LABEL_PORT.to_owned(), "8080".to_owned()),
        ]);
        let container = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/paz-web-v3-1-xyz".into()),
            config: Some(ContainerConfig {
                labels: Some(labels),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([
                    (
                        "bridge".to_owned(),
                        EndpointSettings {
                            network_id: Some("other".into()),
                            ip_address: Some("172.17.0.2".into()),
                            ..Default::default()
                        },
                    ),
                    (
                        "paz".to_owned(),
                        EndpointSettings {
                            network_id: Some("n1".into()),
                            ip_address: Some("172.30.0.5".into()),
                            ..Default::default()
                        },
                    ),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let context = Context {
            network_id: "n1",
            network_name: "paz",
            host: "box",
            cluster: "c1",
        };
        let instance = instance_of(&container, &context).unwrap();
        assert_eq!(
            (
                instance.service.as_str(),
                instance.release,
                instance.slot,
                instance.host.as_str()
            ),
            ("web", 3, 1, "box")
        );
        assert_eq!(instance.address.as_deref(), Some("172.30.0.5:8080"));
        assert_eq!(instance.state, InstanceState::Starting);

        let mut foreign = container.clone();
        foreign.config = Some(ContainerConfig::default());
        assert!(instance_of(&foreign, &context).is_none());
        let other_cluster = Context {
            cluster: "c2",
            ..context
        };
        assert!(
            instance_of(&container, &other_cluster).is_none(),
            "another cluster's container is not this scheduler's"
        );
    }
}
