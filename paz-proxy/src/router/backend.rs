//! Getting a connection to a route's backend ([`acquire`]), for the fast and general paths.

use std::sync::Arc;

use super::body::{InFlight, Sender};
use super::pool;
use super::shared::Shared;
use super::state::RouteEntry;
use super::upstream::Upstream;

/// A connection to the picked backend.
pub(crate) enum Conn {
    /// Fast path (request without a body).
    Raw(Upstream),
    /// hyper client (request with a body, or an upgrade).
    Hyper(Sender),
}

/// How a request travels upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Fast,
    Body,
    Upgrade,
}

/// Why no connection to a backend could be had.
pub(crate) enum Failure {
    /// No Active backend (503), or none left after a connect failure (502).
    NoBackend { retried: bool },
    /// The backend refused the connection and the request may not be retried (502).
    Connect,
}

/// Picks a backend of `entry` (not `avoid`, the index of one that just failed) and gets a
/// connection to it (pooled or new), counting the request in flight. A connect failure
/// ejects the backend; a `retryable` request then tries once more on another one. `reload`
/// reads the route again when a backend started draining meanwhile (it replaces `entry`).
pub(crate) async fn acquire(
    shared: &Shared,
    entry: &mut Arc<RouteEntry>,
    reload: impl Fn() -> Option<Arc<RouteEntry>>,
    mode: Mode,
    retryable: bool,
    avoid: Option<usize>,
) -> Result<(InFlight, Conn, bool), Failure> {
    let config = &shared.config;
    let mut exclude = avoid;
    let mut retried = false;
    let mut bounces = 0;
    loop {
        let Some(index) = entry.pick(exclude) else {
            return Err(Failure::NoBackend { retried });
        };
        let Some(in_flight) = InFlight::acquire(entry, index) else {
            // The backend began draining since the state was read: read it again.
            bounces += 1;
            match reload() {
                Some(fresh) if bounces < 8 => {
                    *entry = fresh;
                    exclude = None;
                    continue;
                }
                _ => return Err(Failure::NoBackend { retried: false }),
            }
        };
        let slot = in_flight.slot();
        let pooled = match mode {
            Mode::Fast => pool::checkout_raw(slot).map(Conn::Raw),
            Mode::Body => pool::checkout(slot).map(Conn::Hyper),
            Mode::Upgrade => None,
        };
        if let Some(conn) = pooled {
            return Ok((in_flight, conn, true));
        }
        let connected = match mode {
            Mode::Fast => Upstream::connect(slot, config.connect_timeout)
                .await
                .map(Conn::Raw),
            Mode::Body => pool::connect(slot, config.connect_timeout)
                .await
                .map(Conn::Hyper),
            Mode::Upgrade => pool::connect_upgradable(slot, config.connect_timeout)
                .await
                .map(Conn::Hyper),
        };
        match connected {
            Ok(conn) => {
                slot.connected();
                return Ok((in_flight, conn, false));
            }
            Err(error) => {
                slot.eject(config.ejection, config.max_ejection);
                tracing::warn!(
                    service = %entry.service.name, backend = %slot.address, %error,
                    "backend refused a connection: ejected"
                );
                drop(in_flight);
                if retryable && !retried && entry.backends.len() > 1 {
                    retried = true;
                    exclude = Some(index);
                    continue;
                }
                return Err(Failure::Connect);
            }
        }
    }
}
