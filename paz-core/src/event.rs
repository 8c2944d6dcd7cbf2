//! Events: what the engine emits after each committed change, and what the runtime reports
//! of instances. Each has an id unique in its process (`<epoch>-<seq>`) so that a client can
//! resume after a disconnect (`Last-Event-ID`) from the engine's [`EventJournal`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::{DeploymentStatus, StepStatus};

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    /// A service was declared.
    ServiceCreated {
        /// The service.
        service: String,
    },
    /// A service's spec or instance count changed.
    ServiceUpdated {
        /// The service.
        service: String,
    },
    /// A service was deleted.
    ServiceDeleted {
        /// The service.
        service: String,
    },
    /// A release was made.
    ReleaseCreated {
        /// The service.
        service: String,
        /// The release number.
        version: u64,
    },
    /// A deployment was recorded or changed state (`running` once started, then
    /// `succeeded`, `failed` or another final state).
    DeploymentChanged {
        /// The service.
        service: String,
        /// The deployment id.
        id: String,
        /// The release it rolls out.
        release: u64,
        /// Its state.
        status: DeploymentStatus,
    },
    /// A hook delivery was recorded (`GET /v1/services/{service}/deliveries`).
    DeliveryRecorded {
        /// The service.
        service: String,
        /// The delivery id.
        id: String,
        /// What became of it.
        verdict: crate::hook::Verdict,
    },
    /// A step of a deployment was recorded or changed state.
    DeploymentStep {
        /// The service.
        service: String,
        /// The deployment id.
        id: String,
        /// The step's position in the deployment, from 0.
        index: usize,
        /// What the step does.
        name: String,
        /// Its state.
        status: StepStatus,
        /// Details or the error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// An instance was started (by the runtime).
    InstanceStarted {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
        /// Its release.
        release: u64,
    },
    /// An instance passed its health check (it is routed).
    InstanceHealthy {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
        /// Its release.
        release: u64,
    },
    /// An instance that was healthy failed its health check.
    InstanceUnhealthy {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
        /// Its release.
        release: u64,
        /// What the check saw.
        detail: String,
    },
    /// An instance was stopped and removed (after its drain), or exited.
    InstanceStopped {
        /// The service.
        service: String,
        /// The instance id.
        instance: String,
        /// Its release.
        release: u64,
    },
}

/// One event: what happened, at which store revision and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Unique in the server's process: `<epoch>-<sequence>`, the SSE `id:`. Send it back as
    /// `Last-Event-ID` to resume after a disconnect.
    #[serde(default)]
    pub id: String,
    /// The store revision of the change (0 for the runtime's instance events).
    pub revision: u64,
    /// When it happened.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: jiff::Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl EventKind {
    /// The service the event is about.
    pub fn service(&self) -> &str {
        match self {
            EventKind::ServiceCreated { service }
            | EventKind::ServiceUpdated { service }
            | EventKind::ServiceDeleted { service }
            | EventKind::ReleaseCreated { service, .. }
            | EventKind::DeploymentChanged { service, .. }
            | EventKind::DeliveryRecorded { service, .. }
            | EventKind::DeploymentStep { service, .. }
            | EventKind::InstanceStarted { service, .. }
            | EventKind::InstanceHealthy { service, .. }
            | EventKind::InstanceUnhealthy { service, .. }
            | EventKind::InstanceStopped { service, .. } => service,
        }
    }

    /// The SSE event name, e.g. `service_created`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ServiceCreated { .. } => "service_created",
            EventKind::ServiceUpdated { .. } => "service_updated",
            EventKind::ServiceDeleted { .. } => "service_deleted",
            EventKind::ReleaseCreated { .. } => "release_created",
            EventKind::DeploymentChanged { .. } => "deployment_changed",
            EventKind::DeliveryRecorded { .. } => "delivery_recorded",
            EventKind::DeploymentStep { .. } => "deployment_step",
            EventKind::InstanceStarted { .. } => "instance_started",
            EventKind::InstanceHealthy { .. } => "instance_healthy",
            EventKind::InstanceUnhealthy { .. } => "instance_unhealthy",
            EventKind::InstanceStopped { .. } => "instance_stopped",
        }
    }
}

/// How many recent events the journal keeps for resuming clients.
pub const JOURNAL_EVENTS: usize = 4096;

/// The recent events of a process, for clients that resume with `Last-Event-ID`: ids are
/// `<epoch>-<sequence>`, the epoch random per process, so an id from another process (a
/// restarted server) is recognised as such.
#[derive(Debug)]
pub struct EventJournal {
    epoch: String,
    next: u64,
    recent: VecDeque<Event>,
}

/// What a resuming client gets: the events after its id, or the news that some are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The events after the given id (perhaps none).
    Events(Vec<Event>),
    /// Events after the id are no longer known (another process's id, or too old): the
    /// client must list the state again.
    Gap,
}

impl EventJournal {
    /// An empty journal whose ids start with `epoch`.
    pub fn new(epoch: impl Into<String>) -> Self {
        EventJournal {
            epoch: epoch.into(),
            next: 1,
            recent: VecDeque::new(),
        }
    }

    /// Gives `event` the next id and keeps it (dropping the oldest past
    /// [`JOURNAL_EVENTS`]).
    pub fn record(&mut self, mut event: Event) -> Event {
        event.id = format!("{}-{}", self.epoch, self.next);
        self.next += 1;
        if self.recent.len() == JOURNAL_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        event
    }

    /// The events after `last_id`, or [`Replay::Gap`] when they cannot all be given.
    pub fn since(&self, last_id: &str) -> Replay {
        let Some(seq) = last_id
            .strip_prefix(self.epoch.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Replay::Gap;
        };
        if seq >= self.next {
            // An id this process never gave.
            return Replay::Gap;
        }
        let oldest = self.next - self.recent.len() as u64;
        if seq + 1 < oldest {
            return Replay::Gap;
        }
        let skip = usize::try_from(seq + 1 - oldest).unwrap_or(usize::MAX);
        Replay::Events(self.recent.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(service: &str) -> Event {
        Event {
            id: String::new(),
            revision: 1,
            at: jiff::Timestamp::UNIX_EPOCH,
            kind: EventKind::ServiceCreated {
                service: service.into(),
            },
        }
    }

    #[test]
    fn a_client_resumes_after_its_last_id_and_learns_of_gaps() {
        let mut journal = EventJournal::new("e1");
        let a = journal.record(event("a"));
        let b = journal.record(event("b"));
        assert_eq!((a.id.as_str(), b.id.as_str()), ("e1-1", "e1-2"));
        assert_eq!(journal.since("e1-1"), Replay::Events(vec![b.clone()]));
        assert_eq!(journal.since("e1-2"), Replay::Events(vec![]));
        assert_eq!(journal.since("e1-0"), Replay::Events(vec![a, b]));
        for bad in ["e0-1", "e1-3", "e1-x", "", "e1", "e1-"] {
            assert_eq!(journal.since(bad), Replay::Gap, "{bad:?}");
        }
        for n in 0..JOURNAL_EVENTS {
            journal.record(event(&format!("s{n}")));
        }
        // e1-1 and e1-2 are gone: after e1-1 is a gap, after e1-2 the oldest kept follows.
        assert_eq!(journal.since("e1-1"), Replay::Gap);
        match journal.since("e1-2") {
            Replay::Events(events) => {
                assert_eq!(events.len(), JOURNAL_EVENTS);
                assert_eq!(events[0].id, "e1-3");
            }
            Replay::Gap => panic!("e1-2 is just before the oldest kept"),
        }
    }
}
