//! Upstream HTTP/1.1 keep-alive connections: one idle pool per backend per thread
//! (thread-local, so no lock and no shared cache line on the request path), and the connect
//! path. Each connection is a hyper `http1` client connection driven by its own task.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::Sender;
use super::connect::ConnectError;
use super::state::{BackendSlot, now_ms};
use super::upstream::Upstream;

/// Pool limits, copied from the router's config at start.
#[derive(Clone, Copy)]
pub(crate) struct PoolLimits {
    pub max_idle: usize,
    pub idle_timeout_ms: u64,
}

struct Idle {
    sender: Sender,
    since_ms: u64,
}

struct Entry {
    slot: Weak<BackendSlot>,
    /// hyper client connections (requests with a body).
    idle: Vec<Idle>,
    /// Fast-path connections (requests without a body).
    raw: Vec<(Upstream, u64)>,
}

#[derive(Default)]
struct Pools {
    entries: HashMap<u64, Entry>,
    /// Checkins since the last sweep.
    ops: u32,
    last_sweep_ms: u64,
}

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::new(Pools::default());
    static LIMITS: std::cell::Cell<PoolLimits> = const {
        std::cell::Cell::new(PoolLimits { max_idle: 256, idle_timeout_ms: 60_000 })
    };
}

/// Sets this thread's pool limits (each worker thread calls it once).
pub(crate) fn set_limits(limits: PoolLimits) {
    LIMITS.with(|l| l.set(limits));
}

/// An idle connection to `slot` that can take a request now, if this thread has one.
pub(crate) fn checkout(slot: &BackendSlot) -> Option<Sender> {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let entry = pools.entries.get_mut(&slot.id)?;
        while let Some(idle) = entry.idle.pop() {
            if idle.sender.is_ready() {
                return Some(idle.sender);
            }
            if !idle.sender.is_closed() {
                // Not ready yet (the connection task has not seen the end of the last
                // response): still usable, `send` waits for it.
                return Some(idle.sender);
            }
        }
        None
    })
}

/// An idle fast-path connection to `slot` that still looks open, if this thread has one.
pub(crate) fn checkout_raw(slot: &BackendSlot) -> Option<Upstream> {
    let limits = LIMITS.with(|l| l.get());
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let entry = pools.entries.get_mut(&slot.id)?;
        let mut now = None;
        while let Some((conn, since)) = entry.raw.pop() {
            let now = *now.get_or_insert_with(now_ms);
            if now.saturating_sub(since) < limits.idle_timeout_ms && conn.idle_and_open() {
                return Some(conn);
            }
        }
        None
    })
}

/// Returns a fast-path connection whose last response ended cleanly.
pub(crate) fn checkin_raw(slot: &Arc<BackendSlot>, conn: Upstream) {
    if slot.is_draining() {
        return;
    }
    with_entry(slot, |entry, limits, now| {
        if entry.raw.len() < limits.max_idle {
            entry.raw.push((conn, now));
        }
    });
}

/// Returns a connection whose last response ended cleanly.
pub(crate) fn checkin(slot: &Arc<BackendSlot>, sender: Sender) {
    if sender.is_closed() || slot.is_draining() {
        return;
    }
    with_entry(slot, |entry, limits, now| {
        if entry.idle.len() < limits.max_idle {
            entry.idle.push(Idle {
                sender,
                since_ms: now,
            });
        }
    });
}

fn with_entry(slot: &Arc<BackendSlot>, f: impl FnOnce(&mut Entry, PoolLimits, u64)) {
    let limits = LIMITS.with(|l| l.get());
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let now = now_ms();
        let entry = pools.entries.entry(slot.id).or_insert_with(|| Entry {
            slot: Arc::downgrade(slot),
            idle: Vec::new(),
            raw: Vec::new(),
        });
        f(entry, limits, now);
        pools.ops += 1;
        if pools.ops >= 4096 || now.saturating_sub(pools.last_sweep_ms) > 5_000 {
            pools.sweep(now, limits);
        }
    });
}

impl Pools {
    /// Drops connections of backends that are gone or draining, closed ones and those idle
    /// for longer than the idle timeout.
    fn sweep(&mut self, now: u64, limits: PoolLimits) {
        self.ops = 0;
        self.last_sweep_ms = now;
        self.entries.retain(|_, entry| {
            let live = entry.slot.upgrade().is_some_and(|slot| !slot.is_draining());
            if !live {
                return false;
            }
            entry.idle.retain(|idle| {
                !idle.sender.is_closed()
                    && now.saturating_sub(idle.since_ms) < limits.idle_timeout_ms
            });
            entry.raw.retain(|(conn, since)| {
                now.saturating_sub(*since) < limits.idle_timeout_ms && conn.idle_and_open()
            });
            true
        });
    }
}

async fn tcp(slot: &BackendSlot, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let connect = async {
        match slot.socket_addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect(&*slot.address).await,
        }
    };
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)?;
    stream.set_nodelay(true).map_err(ConnectError::Io)?;
    Ok(stream)
}

/// A new keep-alive connection, its task spawned on the current runtime.
pub(crate) async fn connect(slot: &BackendSlot, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = tcp(slot, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A new connection for one upgrade request (its task supports `hyper::upgrade`).
pub(crate) async fn connect_upgradable(
    slot: &BackendSlot,
    timeout: Duration,
) -> Result<Sender, ConnectError> {
    let stream = tcp(slot, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "upstream upgrade connection ended");
        }
    });
    Ok(sender)
}
