//! Upgraded connections (WebSocket and others): a bidirectional copy that ends gracefully
//! when the backend drains or the router shuts down.
//!
//! For WebSockets the backend→client direction is parsed frame by frame (headers only) so
//! that, on drain, a close frame (1001 "going away") is sent to the client exactly at a frame
//! boundary; the connection is cut after a grace period. Other upgrades are cut when the
//! drain timeout ends.

use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::InFlight;
use super::conn::Hold;

/// The close frame sent to clients on drain: FIN + close opcode, unmasked, status 1001
/// ("going away") and its reason.
pub(crate) const GOING_AWAY: [u8; 14] = [
    0x88, 12, 0x03, 0xE9, b'g', b'o', b'i', b'n', b'g', b' ', b'a', b'w', b'a', b'y',
];

/// Tracks WebSocket frame boundaries in one direction of a stream (headers are parsed,
/// payloads skipped).
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameParser {
    header: [u8; 14],
    header_len: usize,
    payload_left: u64,
}

impl FrameParser {
    /// Whether the bytes seen so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// The header length and payload length of a complete header, `None` if more bytes are
    /// needed.
    fn header_complete(&self) -> Option<u64> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let len7 = h[1] & 0x7F;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if h.len() < need {
            return None;
        }
        Some(match len7 {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or([0; 8])),
            n => u64::from(n),
        })
    }

    /// Consumes `data`. With `stop_at_boundary`, stops at the first frame boundary (which may
    /// be offset 0) and returns its offset; otherwise consumes everything and returns
    /// `data.len()`. Returns `data.len()` when no boundary is reached.
    pub fn advance(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        let mut i = 0;
        loop {
            if stop_at_boundary && self.at_boundary() {
                return i;
            }
            if i == data.len() {
                return i;
            }
            if self.payload_left > 0 {
                let take = self.payload_left.min((data.len() - i) as u64);
                self.payload_left -= take;
                // `take` is at most `data.len() - i`, a usize.
                i += usize::try_from(take).unwrap_or(data.len() - i);
                continue;
            }
            self.header[self.header_len] = data[i];
            self.header_len += 1;
            i += 1;
            if let Some(payload) = self.header_complete() {
                self.header_len = 0;
                self.payload_left = payload;
            }
        }
    }
}

pub(crate) struct Tunnel {
    pub client: OnUpgrade,
    pub backend: OnUpgrade,
    /// Keeps the backend's in-flight count up while the tunnel lives.
    pub in_flight: InFlight,
    /// Keeps the router's accept loop waiting for this tunnel at shutdown.
    pub hold: Hold,
    /// Keeps the client connection counted against the connection caps.
    pub conn: std::sync::Arc<super::conn::ConnCtx>,
    pub websocket: bool,
    pub shutdown: watch::Receiver<bool>,
    pub upgrade_drain_timeout: Duration,
    pub close_grace: Duration,
}

/// Waits until `signal` turns true or its sender is dropped.
async fn turns_true(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|v| *v).await;
}

/// Waits until the backend drains or the router shuts down.
async fn drain_or_shutdown(drain: watch::Receiver<bool>, shutdown: watch::Receiver<bool>) {
    tokio::select! {
        () = turns_true(drain) => {}
        () = turns_true(shutdown) => {}
    }
}

/// Copies backend→client; for WebSockets, on `closing` sends the close frame at the next
/// frame boundary and returns true.
async fn backend_to_client<R, W>(
    mut from: R,
    mut to: W,
    websocket: bool,
    closing: impl std::future::Future<Output = ()>,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut parser = FrameParser::default();
    let mut draining = false;
    tokio::pin!(closing);
    loop {
        let n = tokio::select! {
            () = &mut closing, if websocket && !draining => {
                draining = true;
                if parser.at_boundary() {
                    let _ = to.write_all(&GOING_AWAY).await;
                    let _ = to.flush().await;
                    return true;
                }
                continue;
            }
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return false;
                }
                Ok(n) => n,
            }
        };
        let chunk = &buf[..n];
        if websocket {
            let upto = parser.advance(chunk, draining);
            if to.write_all(&chunk[..upto]).await.is_err() {
                return false;
            }
            if draining && parser.at_boundary() {
                let _ = to.write_all(&GOING_AWAY).await;
                let _ = to.flush().await;
                return true;
            }
        } else if to.write_all(chunk).await.is_err() {
            return false;
        }
    }
}

async fn client_to_backend<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Runs a tunnel to its end.
pub(crate) async fn run(tunnel: Tunnel) {
    let Tunnel {
        client,
        backend,
        in_flight,
        hold,
        // Held until the tunnel ends.
        conn: _conn,
        websocket,
        shutdown,
        upgrade_drain_timeout,
        close_grace,
    } = tunnel;
    let (client, backend): (Upgraded, Upgraded) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let drain = in_flight.slot().drain_signal();
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (backend_read, backend_write) = tokio::io::split(TokioIo::new(backend));

    let down = backend_to_client(
        backend_read,
        client_write,
        websocket,
        drain_or_shutdown(drain.clone(), shutdown.clone()),
    );
    let up = client_to_backend(client_read, backend_write);
    let signal = drain_or_shutdown(drain, shutdown);
    tokio::pin!(down, up, signal);

    let mut down_done = false;
    let mut up_done = false;
    let mut signalled = false;
    let mut deadline: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    while !(down_done && up_done) {
        tokio::select! {
            closed = &mut down, if !down_done => {
                down_done = true;
                let grace = Instant::now() + close_grace;
                deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                if closed {
                    tracing::debug!("websocket told to go away");
                }
            }
            () = &mut up, if !up_done => {
                up_done = true;
                let grace = Instant::now() + close_grace;
                deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
            }
            () = &mut signal, if !signalled => {
                signalled = true;
                let cut = Instant::now() + upgrade_drain_timeout;
                deadline = Some(deadline.map_or(cut, |d| d.min(cut)));
            }
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => break,
        }
    }
    drop(in_flight);
    drop(hold);
}
