//! The work queue: when each service is due for its next reconcile. A change (an engine
//! event, a scheduler event, a health transition, a finished drain) makes its service due
//! now; a reconcile ends by requeueing its service after a delay, or not at all when it
//! awaits a change (kube-runtime's `Action::requeue` / `Action::await_change`). Idle
//! services therefore cost nothing between the rare full resyncs.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// What to do after reconciling a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile it again after this long (something is in motion).
    Requeue(Duration),
    /// Nothing to do until something changes.
    AwaitChange,
}

impl Action {
    /// Reconcile again after `after`.
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    /// Wait for a change.
    pub fn await_change() -> Self {
        Action::AwaitChange
    }

    /// The sooner of two actions.
    pub fn sooner(self, other: Action) -> Action {
        match (self, other) {
            (Action::Requeue(a), Action::Requeue(b)) => Action::Requeue(a.min(b)),
            (Action::Requeue(a), Action::AwaitChange)
            | (Action::AwaitChange, Action::Requeue(a)) => Action::Requeue(a),
            (Action::AwaitChange, Action::AwaitChange) => Action::AwaitChange,
        }
    }
}

/// Services by the time they are due. A service is in the queue at most once, at its
/// earliest due time.
#[derive(Debug, Default)]
pub struct WorkQueue {
    due: BTreeSet<(Instant, String)>,
    by_service: HashMap<String, Instant>,
}

impl WorkQueue {
    /// Makes `service` due at `at`, unless it is already due sooner.
    pub fn schedule(&mut self, service: &str, at: Instant) {
        if let Some(&current) = self.by_service.get(service) {
            if current <= at {
                return;
            }
            self.due.remove(&(current, service.to_owned()));
        }
        self.by_service.insert(service.to_owned(), at);
        self.due.insert((at, service.to_owned()));
    }

    /// Takes every service due at `now` or before.
    pub fn pop_due(&mut self, now: Instant) -> Vec<String> {
        let mut ready = Vec::new();
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                break;
            }
            let (_, service) = self.due.pop_first().expect("checked above");
            self.by_service.remove(&service);
            ready.push(service);
        }
        ready
    }

    /// When the next service is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// How many services are queued.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_service_is_queued_once_at_its_earliest_time() {
        let mut queue = WorkQueue::default();
        let now = Instant::now();
        let second = Duration::from_secs(1);
        queue.schedule("web", now + 3 * second);
        queue.schedule("web", now + second);
        queue.schedule("web", now + 5 * second);
        queue.schedule("api", now + 2 * second);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next_due(), Some(now + second));
        assert!(queue.pop_due(now).is_empty());
        assert_eq!(queue.pop_due(now + second), ["web"]);
        assert_eq!(queue.pop_due(now + 10 * second), ["api"]);
        assert!(queue.is_empty());
        assert_eq!(
            Action::AwaitChange.sooner(Action::requeue(second)),
            Action::Requeue(second)
        );
    }
}
