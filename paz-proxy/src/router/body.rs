//! Body types of the request path: no boxing, no copies. The response body carries the
//! request's accounting (in-flight counts, metrics, returning the upstream connection to the
//! pool), settled the moment the body ends. The request body sent through hyper's client
//! ([`RequestBody`]) carries the client's deadline for the whole body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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

/// A hyper client connection to a backend (requests with a body, upgrades).
pub(crate) type Sender = SendRequest<RequestBody>;

/// The client did not send its whole request body within the body deadline.
#[derive(Debug)]
pub(crate) struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive within the body deadline")
    }
}

impl std::error::Error for BodyTimeout {}

/// How far a request body got, as the handler reads it after the body moved upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyProgress {
    Arriving,
    Complete,
    TimedOut,
}

/// Where a [`RequestBody`] records its [`BodyProgress`].
#[derive(Debug, Default)]
pub(crate) struct ProgressCell(AtomicU8);

impl ProgressCell {
    pub fn get(&self) -> BodyProgress {
        match self.0.load(Ordering::Acquire) {
            0 => BodyProgress::Arriving,
            1 => BodyProgress::Complete,
            _ => BodyProgress::TimedOut,
        }
    }

    fn set(&self, progress: BodyProgress) {
        let value = match progress {
            BodyProgress::Arriving => 0,
            BodyProgress::Complete => 1,
            BodyProgress::TimedOut => 2,
        };
        self.0.store(value, Ordering::Release);
    }
}

/// The client's request body on its way to the backend through hyper's client. With a
/// deadline (a request that has a body, [`RouterConfig::body_timeout`]), the whole body must
/// arrive by then, else it fails with [`BodyTimeout`] (the upstream request is abandoned).
/// The timer exists only for requests with a body, never on the fast path.
///
/// [`RouterConfig::body_timeout`]: super::RouterConfig::body_timeout
pub(crate) struct RequestBody {
    inner: Incoming,
    deadline: Option<Deadline>,
}

struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    progress: Arc<ProgressCell>,
}

impl RequestBody {
    /// The body as it is (an upgrade's or an empty one): no deadline.
    pub fn plain(inner: Incoming) -> Self {
        RequestBody {
            inner,
            deadline: None,
        }
    }

    /// The body, to arrive whole by `deadline`; its progress is recorded in the cell returned.
    pub fn with_deadline(
        inner: Incoming,
        deadline: tokio::time::Instant,
    ) -> (Self, Arc<ProgressCell>) {
        let progress = Arc::new(ProgressCell::default());
        let body = RequestBody {
            inner,
            deadline: Some(Deadline {
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                progress: progress.clone(),
            }),
        };
        (body, progress)
    }

    /// The body is complete: the deadline no longer applies (its timer is dropped).
    fn complete(&mut self) {
        if let Some(deadline) = self.deadline.take() {
            deadline.progress.set(BodyProgress::Complete);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // The deadline first: bytes that keep trickling in do not extend it.
        if let Some(deadline) = &mut this.deadline
            && deadline.sleep.as_mut().poll(cx).is_ready()
        {
            deadline.progress.set(BodyProgress::TimedOut);
            this.deadline = None;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.complete(),
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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

    /// The backend's index in its route entry.
    pub fn index(&self) -> usize {
        self.index
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
    pub sender: Option<Sender>,
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
