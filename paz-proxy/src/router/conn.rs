//! Client connections: what their requests share ([`ConnCtx`]), the accept loop's registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// The router's shutdown signal (tunnels close on it).
    pub shutdown: watch::Receiver<bool>,
    /// The accept loop's connections (a tunnel holds it open until it ends).
    pub connections: Arc<Connections>,
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

    /// Tells every connection to finish its current request and close.
    pub(crate) fn stop_all(&self) {
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
