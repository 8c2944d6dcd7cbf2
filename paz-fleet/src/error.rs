//! The error type of `paz-fleet`.

use std::time::Duration;

use paz_core::PortErrorKind;

/// Everything that can go wrong talking to fleet.
///
/// Each message names what was attempted and fleet's answer (its `{"error":{"code",
/// "message"}}` body), so the text alone is enough for an operator. At the
/// [`Scheduler`](paz_core::scheduler::Scheduler) boundary it becomes
/// [`paz_core::Error::Scheduler`] with the kind of [`Error::port_kind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint setting is not a plain `http://host:port` URL.
    #[error("cannot use the fleet endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answers at the endpoint.
    #[error(
        "fleet is not reachable at {endpoint}: {cause}; fleetd serves its API on a socket \
         (fleet.socket): add a TCP ListenStream (e.g. ListenStream=127.0.0.1:49153) in a \
         drop-in for fleet.socket and point Paz at http://<that address>"
    )]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What failed (connection refused, timeout…).
        cause: String,
    },
    /// A request got no answer (connection lost, timeout).
    #[error("fleet at {endpoint} did not answer {operation}: {cause}")]
    Transport {
        /// What was attempted, e.g. `GET /fleet/v1/units`.
        operation: String,
        /// The endpoint.
        endpoint: String,
        /// What failed.
        cause: String,
        /// Whether it timed out.
        timeout: bool,
    },
    /// fleet answered with an error status.
    #[error("fleet answered {operation} with {status}: {message:?} (error code {code})")]
    Status {
        /// What was attempted.
        operation: String,
        /// The HTTP status.
        status: u16,
        /// The `code` of fleet's error body (0 when it sent none).
        code: u16,
        /// The `message` of fleet's error body, or the raw body when it was not one.
        message: String,
    },
    /// fleet's answer is not the JSON the v1 API defines.
    #[error("fleet answered {operation} with something that is not fleet v1 JSON: {cause}")]
    Decode {
        /// What was attempted.
        operation: String,
        /// Why it did not decode.
        cause: String,
    },
    /// A placement constraint `label!=value`: fleet v1 has no negated metadata.
    #[error(
        "the placement constraint {constraint:?} cannot run on fleet: fleet v1's \
         MachineMetadata has no negation; use label==value constraints"
    )]
    NegatedConstraint {
        /// The constraint as written.
        constraint: String,
    },
    /// The instance spec cannot be rendered as a unit.
    #[error("cannot render a fleet unit: {0}")]
    InvalidSpec(String),
    /// fleet never scheduled the unit: no machine satisfies its options.
    #[error(
        "no fleet machine satisfies unit {unit} within {waited:?}: {detail}; the unit was \
         destroyed"
    )]
    Unschedulable {
        /// The unit.
        unit: String,
        /// How long Paz waited.
        waited: Duration,
        /// The requirements and how many machines matched.
        detail: String,
    },
    /// Every host port of the range is taken by some Paz unit.
    #[error("no free host port in {first}..={last}: every one is used by a Paz unit")]
    NoFreePort {
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// A unit did not reach the expected state in time.
    #[error("unit {unit} did not {what} within {waited:?} (last seen: {last})")]
    Timeout {
        /// The unit.
        unit: String,
        /// What was waited for, e.g. `stop`.
        what: &'static str,
        /// How long.
        waited: Duration,
        /// Its last observed state.
        last: String,
    },
    /// fleet's API carries no logs.
    #[error(
        "fleet's API carries no logs: read them with `journalctl -u {unit}` (or `docker logs \
         {container}`) on machine {machine} ({address})"
    )]
    NoLogs {
        /// The unit.
        unit: String,
        /// Its container.
        container: String,
        /// Its machine id.
        machine: String,
        /// The machine's address.
        address: String,
    },
}

impl Error {
    /// What kind of failure this is at the `Scheduler` boundary.
    pub fn port_kind(&self) -> PortErrorKind {
        match self {
            Error::Unreachable { .. } => PortErrorKind::Unavailable,
            Error::Transport { timeout: true, .. } => PortErrorKind::Timeout,
            Error::Transport { .. } => PortErrorKind::Unavailable,
            Error::Status { status, .. } => match status {
                // fleet answers 400 for bad names/options/states and 415 for a bad
                // Content-Type: the request is at fault.
                400 | 415 | 422 => PortErrorKind::Invalid,
                404 => PortErrorKind::NotFound,
                409 => PortErrorKind::Conflict,
                // fleet answers 500 when its registry (etcd) fails: retry later.
                500 | 502 | 503 | 504 => PortErrorKind::Unavailable,
                _ => PortErrorKind::Internal,
            },
            Error::Decode { .. } => PortErrorKind::Internal,
            Error::InvalidEndpoint { .. }
            | Error::NegatedConstraint { .. }
            | Error::InvalidSpec(_)
            | Error::Unschedulable { .. }
            | Error::NoLogs { .. } => PortErrorKind::Invalid,
            Error::NoFreePort { .. } => PortErrorKind::Conflict,
            Error::Timeout { .. } => PortErrorKind::Timeout,
        }
    }
}

/// The result type of `paz-fleet`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for paz_core::Error {
    fn from(error: Error) -> Self {
        let kind = error.port_kind();
        paz_core::Error::Scheduler(
            paz_core::PortError::new(kind, error.to_string()).with_source(error),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_into_core_errors_with_clear_messages() {
        let err = Error::Status {
            operation: "PUT /fleet/v1/units/x.service (create)".into(),
            status: 409,
            code: 409,
            message: "unit does not exist and options field empty".into(),
        };
        let core: paz_core::Error = err.into();
        assert_eq!(core.port_kind(), Some(PortErrorKind::Conflict));
        let text = core.to_string();
        assert!(
            text.contains("409") && text.contains("options field empty"),
            "{text}"
        );

        let core: paz_core::Error = Error::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            cause: "connection refused".into(),
        }
        .into();
        assert_eq!(core.port_kind(), Some(PortErrorKind::Unavailable));
        assert_eq!(core.code(), "SCHEDULER_UNAVAILABLE");
        let core: paz_core::Error = Error::NegatedConstraint {
            constraint: "zone!=a".into(),
        }
        .into();
        assert_eq!(core.port_kind(), Some(PortErrorKind::Invalid));
    }
}
