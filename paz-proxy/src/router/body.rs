//! Body types of the request path: no boxing, no copies. The response body carries the
//! request's accounting (in-flight counts, metrics, returning the upstream connection to the
//! pool), settled the moment the body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::pool;
use super::state::RouteEntry;
use super::upstream::RawBody;

/// The error of a proxied body (the upstream connection failed mid-body).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request (or tunnel) counted in flight on a backend and its service; uncounted on drop.
pub(crate) struct InFlight {
    entry: Arc<RouteEntry>,
    index: usize,
}

impl InFlight {
    /// Counts a request on `entry.backends[index]`; `None` if that backend began draining.
    pub fn acquire(entry: &Arc<RouteEntry>, index: usize) -> Option<InFlight> {
        if !entry.backends[index].acquire() {
            return None;
        }
        entry.service.start();
        Some(InFlight {
            entry: entry.clone(),
            index,
        })
    }

    pub fn entry(&self) -> &Arc<RouteEntry> {
        &self.entry
    }

    pub fn slot(&self) -> &Arc<super::state::BackendSlot> {
        &self.entry.backends[self.index]
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.entry.backends[self.index].release();
        self.entry.service.end();
    }
}

/// The accounting of one proxied response, settled once when its body ends or is dropped.
pub(crate) struct Guard {
    pub in_flight: InFlight,
    pub started: Instant,
    pub status: u16,
    /// The upstream connection, returned to the pool if the body ended cleanly.
    pub sender: Option<SendRequest<Incoming>>,
}

impl Guard {
    fn settle(self, complete: bool) {
        let Guard {
            in_flight,
            started,
            status,
            sender,
        } = self;
        in_flight.entry().service.record(status, started.elapsed());
        if complete && let Some(sender) = sender {
            pool::checkin(in_flight.slot(), sender);
        }
        drop(in_flight);
    }
}

enum Kind {
    /// Through hyper's client.
    Upstream(Incoming),
    /// Through the fast path.
    Raw(RawBody),
    Full(Option<Bytes>),
}

/// The body answered to the client.
pub(crate) struct ProxyBody {
    kind: Kind,
    guard: Option<Guard>,
}

impl ProxyBody {
    pub(crate) fn upstream(body: Incoming, guard: Guard) -> Self {
        let mut body = ProxyBody {
            kind: Kind::Upstream(body),
            guard: Some(guard),
        };
        if body.is_end_stream() {
            body.settle(true);
        }
        body
    }

    pub(crate) fn raw(body: RawBody, guard: Guard) -> Self {
        ProxyBody {
            kind: Kind::Raw(body),
            guard: Some(guard),
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(bytes)),
            guard: None,
        }
    }

    pub(crate) fn empty() -> Self {
        ProxyBody {
            kind: Kind::Full(None),
            guard: None,
        }
    }

    fn settle(&mut self, complete: bool) {
        if let Some(guard) = self.guard.take() {
            if complete
                && let Kind::Raw(_) = self.kind
                && let Kind::Raw(raw) = std::mem::replace(&mut self.kind, Kind::Full(None))
                && let Some(conn) = raw.into_reusable()
            {
                pool::checkin_raw(guard.in_flight.slot(), conn);
            }
            guard.settle(complete);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.settle(complete);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => this.settle(true),
                    Poll::Ready(Some(Err(_))) => this.settle(false),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => this.settle(true),
                    _ => {}
                }
                polled.map_err(BoxError::from)
            }
            Kind::Raw(body) => {
                let polled = body.poll_data(cx);
                let end = body.is_end_stream();
                match &polled {
                    Poll::Ready(None) => this.settle(true),
                    Poll::Ready(Some(Err(_))) => this.settle(false),
                    Poll::Ready(Some(Ok(_))) if end => this.settle(true),
                    _ => {}
                }
                polled.map(|o| o.map(|r| r.map(Frame::data).map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Raw(body) => body
                .exact_len()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}
