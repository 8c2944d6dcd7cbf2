//! Client connections: what their requests share ([`ConnCtx`]), the accept loop's registry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::header::HeaderValue;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;

use super::config::Scope;
use super::shared::Shared;

/// What a connection's requests share.
pub(crate) struct ConnCtx {
    pub shared: Arc<Shared>,
    pub scope: Scope,
    /// The client's IP, ready for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept and extended).
    pub trusted: bool,
    /// The scheme the client speaks (`X-Forwarded-Proto`).
    pub proto: super::h1::Proto,
    /// Counts the connection against the caps while its requests or tunnel live.
    pub _admitted: Admitted,
    /// The router's shutdown signal (tunnels close on it).
    pub shutdown: watch::Receiver<bool>,
    /// The accept loop's connections (a tunnel holds it open until it ends).
    pub connections: Arc<Connections>,
    /// Requests seen on the connection (its idle timer on HTTP/2).
    pub requests: AtomicU64,
}

impl ConnCtx {
    /// Counts a request on the connection.
    pub(crate) fn note_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests seen so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The client connections (and tunnels) of one accept loop: each gets a one-shot stop
/// signal (polled cheaply by its own task, unlike a shared `watch`) and, once spawned, an
/// abort handle for when the drain deadline passes.
#[derive(Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    tasks: Mutex<HashMap<u64, Task>>,
    active: AtomicUsize,
    idle: Notify,
    /// Set by [`Connections::stop_all`]: answers say `Connection: close`.
    draining: AtomicBool,
}

/// What the accept loop keeps of a connection or tunnel task.
struct Task {
    stop: Option<oneshot::Sender<()>>,
    abort: Option<AbortHandle>,
}

impl Connections {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(self: &Arc<Self>, stop: Option<oneshot::Sender<()>>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.tasks().insert(id, Task { stop, abort: None });
        self.active.fetch_add(1, Ordering::SeqCst);
        Registration {
            connections: self.clone(),
            id,
        }
    }

    /// Registers a connection: it counts until the registration drops, and gets a stop
    /// signal.
    pub(crate) fn register(self: &Arc<Self>) -> (Registration, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (self.add(Some(tx)), rx)
    }

    /// Keeps the accept loop from ending (at shutdown) while the holder lives: tunnels.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        self.add(None)
    }

    /// Lets [`Connections::abort_all`] end the task of registration `id` (no-op if it
    /// already ended).
    pub(crate) fn track(&self, id: u64, abort: AbortHandle) {
        if let Some(task) = self.tasks().get_mut(&id) {
            task.abort = Some(abort);
        }
    }

    fn unregister(&self, id: u64) {
        self.tasks().remove(&id);
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Whether the accept loop is draining: every answer from now on carries
    /// `Connection: close` and ends its connection.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Tells every connection to finish: the request in flight, or the next one if it
    /// comes within [`RouterConfig::drain_grace`](super::RouterConfig::drain_grace), is
    /// answered with `Connection: close`; then it closes.
    pub(crate) fn stop_all(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let stops: Vec<_> = self
            .tasks()
            .values_mut()
            .filter_map(|task| task.stop.take())
            .collect();
        for tx in stops {
            let _ = tx.send(());
        }
    }

    /// Ends every tracked task now (their registrations drop as they are cancelled).
    pub(crate) fn abort_all(&self) -> usize {
        let aborts: Vec<_> = self
            .tasks()
            .values_mut()
            .filter_map(|task| task.abort.take())
            .collect();
        for abort in &aborts {
            abort.abort();
        }
        aborts.len()
    }

    /// How many connections and tunnels are registered.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A registered connection or tunnel ([`Connections::register`], [`Connections::hold`]):
/// counted until dropped, also when its task is aborted.
pub(crate) struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Registration {
    /// The id to [`Connections::track`] the task with.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.unregister(self.id);
    }
}

/// A tunnel's registration, see [`Connections::hold`].
pub(crate) type Hold = Registration;

/// The router's caps on client connections, over all listeners and workers:
/// [`RouterConfig::max_connections`](super::RouterConfig::max_connections) and
/// [`RouterConfig::max_connections_per_ip`](super::RouterConfig::max_connections_per_ip).
#[derive(Default)]
pub(crate) struct ConnLimits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimits {
    fn per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`, or `None` if a cap (0 = none) is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        max_per_ip: usize,
    ) -> Option<Admitted> {
        let total = self.total.fetch_add(1, Ordering::Relaxed);
        // Uncounts the total if refused.
        let mut admitted = Admitted {
            limits: self.clone(),
            ip: None,
        };
        if max > 0 && total >= max {
            return None;
        }
        if max_per_ip > 0 {
            let mut per_ip = self.per_ip();
            let count = per_ip.entry(ip).or_default();
            if *count >= max_per_ip {
                return None;
            }
            *count += 1;
            admitted.ip = Some(ip);
        }
        Some(admitted)
    }

    /// Client connections counted now.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// A connection counted by [`ConnLimits::admit`], until dropped.
pub(crate) struct Admitted {
    limits: Arc<ConnLimits>,
    /// Counted per IP too.
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.per_ip();
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_release() {
        let limits = Arc::new(ConnLimits::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.admit(a, 3, 2).unwrap();
        let _a2 = limits.admit(a, 3, 2).unwrap();
        assert!(limits.admit(a, 3, 2).is_none(), "per-IP cap");
        let _b1 = limits.admit(b, 3, 2).unwrap();
        assert!(limits.admit(b, 3, 2).is_none(), "global cap");
        assert_eq!(limits.total(), 3);
        drop(a1);
        let _a3 = limits.admit(a, 3, 2).unwrap();
        assert_eq!(limits.total(), 3);
        assert!(limits.admit(a, 0, 0).is_some(), "no caps");
    }
}
