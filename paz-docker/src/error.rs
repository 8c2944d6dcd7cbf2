//! The error type of `paz-docker`.

/// Everything that can go wrong talking to the Docker Engine.
///
/// Each message names what was attempted and includes the daemon's answer, so the text alone
/// is enough for an operator. At the [`Scheduler`](paz_core::scheduler::Scheduler) boundary it
/// becomes [`paz_core::Error::Scheduler`] (or [`paz_core::Error::NotFound`] for an unknown
/// instance) through the `From` impl below.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Docker host setting cannot be used (unknown scheme, no socket file…).
    #[error("cannot use the Docker host {host:?}: {}", chain(.source))]
    Connect {
        /// The Docker host (`unix:///var/run/docker.sock`, `tcp://…`).
        host: String,
        /// What bollard reported.
        #[source]
        source: bollard::errors::Error,
    },
    /// The daemon does not answer.
    #[error("Docker daemon is not reachable at {host}: {}", chain(.source))]
    DaemonUnavailable {
        /// The Docker host.
        host: String,
        /// What failed.
        #[source]
        source: bollard::errors::Error,
    },
    /// The image reference cannot be parsed.
    #[error("{source}")]
    InvalidImage {
        /// The reference as given.
        image: String,
        /// Why it is invalid.
        #[source]
        source: paz_core::image::ImageRefError,
    },
    /// The image is not on the daemon and the pull failed.
    #[error("image {image:?} is not available locally and cannot be pulled: {}", chain(.source))]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        #[source]
        source: bollard::errors::Error,
    },
    /// The Paz network could not be found or created.
    #[error("cannot set up the Docker network {network:?}: {}", chain(.source))]
    Network {
        /// The network name.
        network: String,
        /// What the daemon answered.
        #[source]
        source: bollard::errors::Error,
    },
    /// The Paz network exists but has no usable IPv4 gateway/subnet information.
    #[error("the Docker network {network:?} is not usable: {reason}")]
    NetworkUnusable {
        /// The network name.
        network: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A placement constraint excludes the daemon's machine, the only host.
    #[error("no host satisfies the placement constraint {constraint:?} (host {host:?} does not)")]
    Unschedulable {
        /// The constraint, as written in the service.
        constraint: String,
        /// The daemon's host name.
        host: String,
    },
    /// Creating the container failed.
    #[error("cannot create container {name:?} from image {image:?}: {}", chain(.source))]
    CreateContainer {
        /// The container name Paz chose.
        name: String,
        /// The image.
        image: String,
        /// What the daemon answered.
        #[source]
        source: bollard::errors::Error,
    },
    /// Starting the container failed (bad command, bad mount…); the container was removed.
    #[error("cannot start container {name:?}: {}", chain(.source))]
    StartContainer {
        /// The container name.
        name: String,
        /// What the daemon answered.
        #[source]
        source: bollard::errors::Error,
    },
    /// No managed container has this id.
    #[error("instance {id:?} not found")]
    InstanceNotFound {
        /// The id asked for.
        id: String,
    },
    /// The engine is not a manager of an active Swarm (the Swarm scheduler needs one).
    #[error(
        "the Docker Engine at {host} is not a Swarm manager (its swarm state is {state:?}); run \
         `docker swarm init` there, or point the Swarm scheduler at a manager's engine"
    )]
    NotSwarmManager {
        /// The Docker host.
        host: String,
        /// What the engine reports (`inactive`, `active` on a worker, …).
        state: String,
    },
    /// A placement constraint cannot be given to Swarm.
    #[error("invalid placement constraint {constraint:?}: {reason}")]
    InvalidConstraint {
        /// The constraint, as written in the service.
        constraint: String,
        /// Why it is refused.
        reason: String,
    },
    /// The health check probes a port other than the routed one, which Swarm instances do
    /// not expose to Paz (it reaches them at their node's published routed port only).
    #[error(
        "the health check probes port {port}, but on Swarm Paz reaches an instance only at its node's published routed (first http) port{}; check that port instead",
        routed.map(|p| format!(" ({p})")).unwrap_or_default()
    )]
    HealthPortUnreachable {
        /// The port the check probes.
        port: u16,
        /// The routed port, if any.
        routed: Option<u16>,
    },
    /// Swarm could not place or start the instance's task; its Swarm service was removed.
    #[error("Swarm could not start {name:?}: {reason}")]
    TaskFailed {
        /// The Swarm service Paz created for the instance.
        name: String,
        /// The task's state and Swarm's error.
        reason: String,
        /// Whether no node satisfies the placement constraints (or none is ready).
        unschedulable: bool,
    },
    /// Any other Docker API call failed.
    #[error("Docker {operation} failed: {}", chain(.source))]
    Api {
        /// What was attempted, e.g. `inspect container abc123`.
        operation: String,
        /// What the daemon answered.
        #[source]
        source: bollard::errors::Error,
    },
}

impl Error {
    /// What kind of failure this is at the `Scheduler` boundary.
    pub fn port_kind(&self) -> paz_core::PortErrorKind {
        use paz_core::PortErrorKind as Kind;
        match self {
            Error::Connect { .. } | Error::DaemonUnavailable { .. } => Kind::Unavailable,
            Error::InvalidImage { .. }
            | Error::Unschedulable { .. }
            | Error::InvalidConstraint { .. }
            | Error::HealthPortUnreachable { .. }
            | Error::NotSwarmManager { .. } => Kind::Invalid,
            Error::TaskFailed {
                unschedulable: true,
                ..
            } => Kind::Invalid,
            Error::TaskFailed { reason, .. } if is_image_problem(reason) => Kind::ImageUnavailable,
            Error::TaskFailed { .. } => Kind::Internal,
            Error::ImageUnavailable { .. } => Kind::ImageUnavailable,
            Error::InstanceNotFound { .. } => Kind::NotFound,
            Error::NetworkUnusable { .. } => Kind::Invalid,
            Error::Network { source, .. }
            | Error::CreateContainer { source, .. }
            | Error::StartContainer { source, .. }
            | Error::Api { source, .. } => match source {
                bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                    match status_code {
                        404 => Kind::NotFound,
                        409 => Kind::Conflict,
                        400 => Kind::Invalid,
                        _ => Kind::Internal,
                    }
                }
                bollard::errors::Error::RequestTimeoutError => Kind::Timeout,
                _ if is_transport(source) => Kind::Unavailable,
                _ => Kind::Internal,
            },
        }
    }

    pub(crate) fn api(operation: impl Into<String>, source: bollard::errors::Error) -> Self {
        Error::Api {
            operation: operation.into(),
            source,
        }
    }
}

/// Whether a task's error says its image is missing on the node (not loaded, no registry).
pub(crate) fn is_image_problem(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("no such image") || reason.contains("pull access denied")
}

/// The result type of `paz-docker`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for paz_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::InstanceNotFound { id } => paz_core::Error::NotFound {
                kind: "instance",
                name: id,
            },
            other => {
                let kind = other.port_kind();
                paz_core::Error::Scheduler(
                    paz_core::PortError::new(kind, other.to_string()).with_source(other),
                )
            }
        }
    }
}

/// The error's message followed by those of its sources (hyper hides the cause, e.g.
/// "connection refused", two levels down), skipping repeats.
fn chain(error: &bollard::errors::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Whether the request never got an answer from the daemon (socket gone, connection refused).
fn is_transport(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::HyperResponseError { .. }
            | bollard::errors::Error::HyperLegacyError { .. }
            | bollard::errors::Error::IOError { .. }
            | bollard::errors::Error::SocketNotFoundError(_)
    )
}

/// The HTTP status of a daemon answer, if the error is one.
pub(crate) fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the daemon answered 404 (no such container/image/network).
pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    status_of(error) == Some(404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_into_core_errors_with_clear_messages() {
        let err = Error::ImageUnavailable {
            image: "demo:v9".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "pull access denied for demo".into(),
            },
        };
        let core: paz_core::Error = err.into();
        assert_eq!(core.code(), "IMAGE_UNAVAILABLE");
        assert_eq!(
            core.port_kind(),
            Some(paz_core::PortErrorKind::ImageUnavailable)
        );
        let text = core.to_string();
        assert!(
            text.contains(r#"image "demo:v9" is not available locally and cannot be pulled"#),
            "{text}"
        );
        assert!(text.contains("pull access denied"), "{text}");

        let core: paz_core::Error = Error::InstanceNotFound { id: "abc".into() }.into();
        assert!(matches!(
            core,
            paz_core::Error::NotFound {
                kind: "instance",
                ..
            }
        ));
    }
}
