//! The latest deployment of every service, kept from the engine's events: the dashboard and
//! the services page show one per service without reading a thousand records each time.
//! Seeded from the store on first use (and after a gap in the events); then only the
//! services an event named are read again.

use std::collections::{HashMap, HashSet};

use paz_core::{Deployment, Paz, Service};
use tokio::sync::{Mutex, MutexGuard, broadcast};

struct State {
    events: broadcast::Receiver<paz_core::Event>,
    seeded: bool,
    latest: HashMap<String, Deployment>,
    dirty: HashSet<String>,
}

/// The index.
pub(crate) struct Recent {
    state: Mutex<State>,
}

/// The index brought up to date, locked while a page reads it.
pub(crate) struct Latest<'a> {
    guard: MutexGuard<'a, State>,
}

impl Latest<'_> {
    /// The latest deployment of `service`.
    pub fn of(&self, service: &str) -> Option<&Deployment> {
        self.guard.latest.get(service)
    }

    /// Every service's latest deployment.
    pub fn all(&self) -> impl Iterator<Item = &Deployment> {
        self.guard.latest.values()
    }
}

impl Recent {
    /// An index that follows `paz`'s events from now on.
    pub fn new(paz: &Paz) -> Recent {
        Recent {
            state: Mutex::new(State {
                events: paz.subscribe(),
                seeded: false,
                latest: HashMap::new(),
                dirty: HashSet::new(),
            }),
        }
    }

    /// The index for `services` (the current list): events since the last look are
    /// applied, re-reading only the services they named.
    pub async fn latest(&self, paz: &Paz, services: &[Service]) -> paz_core::Result<Latest<'_>> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        loop {
            match state.events.try_recv() {
                Ok(event) => {
                    state.dirty.insert(event.kind.service().to_owned());
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => state.seeded = false,
                Err(_) => break,
            }
        }
        let by_name: HashMap<&str, &Service> =
            services.iter().map(|s| (s.spec.name.as_str(), s)).collect();
        if !state.seeded {
            state.latest.clear();
            state.dirty = by_name.keys().map(|n| (*n).to_owned()).collect();
        }
        state
            .latest
            .retain(|name, _| by_name.contains_key(name.as_str()));
        for name in std::mem::take(&mut state.dirty) {
            let Some(service) = by_name.get(name.as_str()) else {
                state.latest.remove(&name);
                continue;
            };
            match paz.latest_deployment_of(service).await {
                Ok(Some(deployment)) => {
                    state.latest.insert(name, deployment);
                }
                Ok(None) => {
                    state.latest.remove(&name);
                }
                Err(error) => {
                    // Try again next time.
                    state.dirty.insert(name);
                    return Err(error);
                }
            }
        }
        // A service whose record is newer than what the index holds (a change made through
        // another replica, say) is read again.
        for service in services {
            let stale = state
                .latest
                .get(&service.spec.name)
                .is_some_and(|d| d.sequence < service.latest_deployment)
                || (service.latest_deployment > 0
                    && !state.latest.contains_key(&service.spec.name));
            if stale && let Some(deployment) = paz.latest_deployment_of(service).await? {
                state.latest.insert(service.spec.name.clone(), deployment);
            }
        }
        state.seeded = true;
        Ok(Latest { guard })
    }
}
