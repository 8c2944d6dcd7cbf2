//! Client connections: what their requests share ([`ConnCtx`]), the accept loop's registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::header::HeaderValue;
use tokio::sync::{Notify, oneshot, watch};

use super::config::Scope;
use super::shared::Shared;

/// What a connection's requests share.
pub(crate) struct ConnCtx {
    pub shared: Arc<Shared>,
    pub scope: Scope,
    /// The client's IP, ready for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// The router's shutdown signal (tunnels close on it).
    pub shutdown: watch::Receiver<bool>,
    /// The accept loop's connections (a tunnel holds it open until it ends).
    pub connections: Arc<Connections>,
}

/// The client connections of one accept loop: each gets a one-shot stop signal (polled
/// cheaply by its own task, unlike a shared `watch`).
#[derive(Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    stops: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    active: AtomicUsize,
    idle: Notify,
}

impl Connections {
    pub(crate) fn register(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        self.active.fetch_add(1, Ordering::SeqCst);
        (id, rx)
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.release();
    }

    fn release(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Keeps the accept loop from ending (at shutdown) while the holder lives: tunnels.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        self.active.fetch_add(1, Ordering::SeqCst);
        Hold(self.clone())
    }

    pub(crate) fn stop_all(&self) {
        let stops: Vec<_> = self
            .stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, tx)| tx)
            .collect();
        for tx in stops {
            let _ = tx.send(());
        }
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

/// See [`Connections::hold`].
pub(crate) struct Hold(Arc<Connections>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.release();
    }
}
