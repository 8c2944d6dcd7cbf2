//! One proxied request: route by host, pick a backend, forward, answer.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Uri;
use hyper::{Method, Request, Response, StatusCode, Version};

use super::backend::{Conn, Failure, Mode, acquire};
use super::body::{BodyProgress, Guard, InFlight, ProgressCell, ProxyBody, RequestBody, Sender};
use super::config::{RouterConfig, Scope};
use super::conn::ConnCtx;
use super::h1;
use super::host::route_host;
use super::state::RouteEntry;
use super::upstream::Upstream;
use super::{pool, tunnel};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

pub(crate) fn text(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error answer counted in the service's metrics.
fn fail(
    entry: &RouteEntry,
    started: Instant,
    status: StatusCode,
    message: String,
) -> Response<ProxyBody> {
    entry.service.record(status.as_u16(), started.elapsed());
    text(status, message)
}

/// The host a request is for: `Host` header (or the absolute URI's authority), without port,
/// lower case, without a trailing dot. `Err` if it is not `host[:port]`.
fn request_host<B>(req: &Request<B>) -> Result<Option<Cow<'_, str>>, ()> {
    let raw = match req.headers().get(header::HOST) {
        Some(value) => value.as_bytes(),
        None => match req.uri().authority() {
            Some(authority) => authority.as_str().as_bytes(),
            None => return Ok(None),
        },
    };
    if !h1::valid_host(raw) {
        return Err(());
    }
    Ok(std::str::from_utf8(raw).ok().and_then(route_host))
}

/// The `Strict-Transport-Security` value for the HTTPS answer to `req`, if any (none for a
/// host whose service opted out of the HTTPS redirect).
pub(crate) fn hsts<B>(edge: &super::edge::Edge, req: &Request<B>) -> Option<String> {
    edge.hsts_for(|| request_host(req).ok().flatten().map(Cow::into_owned))
        .map(str::to_owned)
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// `Some(is_websocket)` for an HTTP/1.1 upgrade request.
fn upgrade_of(req: &Request<Incoming>) -> Option<bool> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    let connection = req.headers().get(header::CONNECTION)?;
    has_token(connection, "upgrade").then(|| upgrade.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Removes hop-by-hop headers ([`h1::HOP_BY_HOP`]), including those the `Connection`
/// header names (never `Host` or framing headers), and `Expect`. `keep_upgrade` keeps
/// `Upgrade` (and sets `Connection: upgrade`).
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) names first: most messages carry none of these.
    let hop = |name: &HeaderName| name == header::EXPECT || h1::is_hop_by_hop(name.as_ref());
    if !keep_upgrade && !headers.keys().any(hop) {
        return;
    }
    // The router answers `Expect: 100-continue` itself when it reads the body.
    headers.remove(header::EXPECT);
    // Rare: `Connection` naming other headers (besides the usual options).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| h1::connection_names(value.as_bytes()))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in h1::HOP_BY_HOP {
        if !(keep_upgrade && name == "upgrade") {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// All values of `name`, joined with `, ` (borrowed when there is one).
fn joined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.as_bytes();
    let mut out = Cow::Borrowed(first);
    for value in values {
        let out = out.to_mut();
        out.extend_from_slice(b", ");
        out.extend_from_slice(value.as_bytes());
    }
    Some(out)
}

fn header_value(bytes: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(bytes)).ok()
}

/// Sets `X-Forwarded-For`/`-Proto`/`-Host` and `Forwarded` ([`h1::Forwarding`]): the
/// client's own are replaced unless the peer is a trusted proxy.
fn set_forwarding(headers: &mut HeaderMap, ctx: &ConnCtx) {
    let (xff, xfp, xfh, forwarded) = {
        let prior = |name: &HeaderName| joined(headers, name).filter(|_| ctx.trusted);
        let (prior_for, prior_forwarded) = (prior(&X_FORWARDED_FOR), prior(&FORWARDED));
        let (prior_proto, prior_host) = (prior(&X_FORWARDED_PROTO), prior(&X_FORWARDED_HOST));
        let f = h1::Forwarding {
            client_ip: ctx.client_ip.as_bytes(),
            host: headers
                .get(header::HOST)
                .map_or(&[][..], HeaderValue::as_bytes),
            proto: ctx.proto,
            prior_for: prior_for.as_deref(),
            prior_forwarded: prior_forwarded.as_deref(),
            prior_proto: prior_proto.as_deref(),
            prior_host: prior_host.as_deref(),
        };
        let xff = if f.prior_for.is_none() {
            ctx.client_ip.clone()
        } else {
            let mut xff = Vec::new();
            f.write_for(&mut xff);
            header_value(xff).unwrap_or_else(|| ctx.client_ip.clone())
        };
        let mut forwarded = Vec::with_capacity(64);
        f.write_forwarded(&mut forwarded);
        (
            xff,
            HeaderValue::from_bytes(f.proto()).ok(),
            HeaderValue::from_bytes(f.forwarded_host()).ok(),
            header_value(forwarded),
        )
    };
    for name in h1::FORWARDING {
        if !(ctx.trusted && name == "x-real-ip") {
            headers.remove(name);
        }
    }
    headers.insert(&X_FORWARDED_FOR, xff);
    for (name, value) in [
        (&X_FORWARDED_PROTO, xfp),
        (&X_FORWARDED_HOST, xfh),
        (&FORWARDED, forwarded),
    ] {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
}

/// Prepares the request for the backend: hop-by-hop headers and `_` aliases of the router's
/// headers out, forwarding headers in, origin-form URI, HTTP/1.1.
fn prepare(req: &mut Request<Incoming>, ctx: &ConnCtx, upgrade: bool) {
    if req.uri().scheme().is_some() {
        if !req.headers().contains_key(header::HOST)
            && let Some(authority) = req.uri().authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        let origin = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *req.uri_mut() = origin;
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    let alias = |name: &HeaderName| h1::is_underscore_alias(name.as_ref());
    if headers.keys().any(alias) {
        let aliases: Vec<HeaderName> = headers.keys().filter(|n| alias(n)).cloned().collect();
        for name in aliases {
            headers.remove(name);
        }
    }
    set_forwarding(headers, ctx);
}

/// A refused request (400, 405…), answered with `Connection: close`.
fn refuse(status: StatusCode, why: &str) -> Response<ProxyBody> {
    let mut response = text(status, format!("paz: {why}\n"));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// How the upstream send ended.
enum Sent {
    Response(Response<Incoming>, Sender),
    /// The client's request body was malformed or cut short.
    ClientBody,
    /// The client's request body did not arrive in time (the client's fault, not the
    /// backend's).
    BodyTimeout,
    Failed(String),
    TimedOut,
}

/// Sends `req` on `sender`; a request the connection gave back unsent (a pooled connection
/// that was closing) goes once more on a fresh connection: it never reached the backend.
/// `body` is the progress of a request body under a deadline.
async fn send(
    ctx: &ConnCtx,
    slot: &super::state::BackendSlot,
    mut sender: Sender,
    mut pooled: bool,
    mut req: Request<RequestBody>,
    deadline: tokio::time::Instant,
    body: Option<&ProgressCell>,
) -> Sent {
    let config = &ctx.shared.config;
    let progress = || body.map_or(BodyProgress::Complete, ProgressCell::get);
    loop {
        let attempt = async {
            if !sender.is_ready()
                && let Err(error) = sender.ready().await
            {
                return Err((Some(req), error));
            }
            sender
                .try_send_request(req)
                .await
                .map_err(|mut e| (e.take_message(), e.into_error()))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            // A backend cannot be blamed for not answering a request still arriving.
            Err(_) if progress() != BodyProgress::Complete => return Sent::BodyTimeout,
            Err(_) => return Sent::TimedOut,
            Ok(Ok(response)) => return Sent::Response(response, sender),
            Ok(Err((Some(unsent), _))) if pooled => {
                req = unsent;
                pooled = false;
                let fresh =
                    tokio::time::timeout_at(deadline, pool::connect(slot, config.connect_timeout))
                        .await;
                match fresh {
                    Err(_) => return Sent::TimedOut,
                    Ok(Ok(fresh)) => sender = fresh,
                    Ok(Err(error)) => return Sent::Failed(error.to_string()),
                }
            }
            // Reading the request body failed: the client's fault, not the backend's.
            Ok(Err((_, error))) if error.is_user() => {
                return match progress() {
                    BodyProgress::TimedOut => Sent::BodyTimeout,
                    _ => Sent::ClientBody,
                };
            }
            Ok(Err((_, error))) => return Sent::Failed(error.to_string()),
        }
    }
}

pub(crate) fn no_backend(
    entry: &RouteEntry,
    started: Instant,
    retried: bool,
) -> Response<ProxyBody> {
    let name = &*entry.service.name;
    if retried {
        fail(
            entry,
            started,
            StatusCode::BAD_GATEWAY,
            format!("paz: no backend of service {name:?} accepted a connection\n"),
        )
    } else {
        fail(
            entry,
            started,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("paz: service {name:?} has no healthy backend\n"),
        )
    }
}

fn backend_failed(
    entry: &RouteEntry,
    address: &str,
    started: Instant,
    error: &dyn std::fmt::Display,
) -> Response<ProxyBody> {
    tracing::warn!(service = %entry.service.name, backend = %address, %error, "backend failed");
    fail(
        entry,
        started,
        StatusCode::BAD_GATEWAY,
        format!(
            "paz: a backend of service {:?} failed to answer\n",
            &*entry.service.name
        ),
    )
}

fn timed_out(entry: &RouteEntry, started: Instant, timeout: Duration) -> Response<ProxyBody> {
    fail(
        entry,
        started,
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "paz: a backend of service {:?} did not answer within {timeout:?}\n",
            &*entry.service.name
        ),
    )
}

fn failure_response(entry: &RouteEntry, started: Instant, failure: Failure) -> Response<ProxyBody> {
    match failure {
        Failure::NoBackend { retried } => no_backend(entry, started, retried),
        Failure::Connect => fail(
            entry,
            started,
            StatusCode::BAD_GATEWAY,
            format!(
                "paz: cannot connect to a backend of service {:?}\n",
                &*entry.service.name
            ),
        ),
    }
}

/// Handles one request from a client connection.
pub(crate) async fn handle(ctx: Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let shared = &*ctx.shared;
    if req.method() == Method::CONNECT {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported");
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return refuse(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    let Ok(host) = request_host(&req) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid Host header");
    };
    let Some(host) = host else {
        return text(
            StatusCode::BAD_REQUEST,
            "paz: the request has no Host header\n".into(),
        );
    };
    if ctx.proto != "https" {
        let edge = shared.edge.load();
        if !edge.is_empty() {
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            match edge.answer(&host, target) {
                Some(super::edge::Answer::Challenge(key_authorization)) => {
                    return text(StatusCode::OK, key_authorization);
                }
                Some(super::edge::Answer::Redirect(location)) => {
                    let mut response = text(
                        StatusCode::PERMANENT_REDIRECT,
                        format!("paz: {host} is served over HTTPS: {location}\n"),
                    );
                    if let Ok(location) = HeaderValue::from_str(&location) {
                        response.headers_mut().insert(header::LOCATION, location);
                    }
                    return response;
                }
                None => {}
            }
        }
    }
    let lookup = |host: &str| {
        let state = shared.state.load();
        let map = match ctx.scope {
            Scope::Public => &state.public,
            Scope::Internal => &state.internal,
        };
        map.get(host).cloned()
    };
    let Some(mut entry) = lookup(&host) else {
        shared.unmatched.fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::NOT_FOUND,
            format!("paz: no service is routed at host {host:?}\n"),
        );
    };
    drop(host);
    let upgrade = upgrade_of(&req);
    let bodiless = req.body().is_end_stream();
    let mode = match upgrade {
        Some(_) => Mode::Upgrade,
        None if bodiless => Mode::Fast,
        None => Mode::Body,
    };
    let retryable = is_idempotent(req.method()) && bodiless;
    let client_upgrade = upgrade.map(|_| hyper::upgrade::on(&mut req));
    prepare(&mut req, &ctx, upgrade.is_some());
    let config = &shared.config;

    let acquired = acquire(
        shared,
        &mut entry,
        || {
            request_host(&req)
                .ok()
                .flatten()
                .and_then(|host| lookup(&host))
        },
        mode,
        retryable,
        None,
    )
    .await;
    let (in_flight, conn, pooled) = match acquired {
        Ok(acquired) => acquired,
        Err(failure) => return failure_response(&entry, started, failure),
    };

    let deadline = tokio::time::Instant::from_std(started) + config.backend_timeout;
    let sender = match conn {
        Conn::Raw(conn) => {
            return fast(
                &req, conn, pooled, in_flight, &entry, started, deadline, config,
            )
            .await;
        }
        Conn::Hyper(sender) => sender,
    };
    // A body must arrive whole within `body_timeout` of the head (its timer runs in the
    // upstream connection's task as the body is read); upgrades carry none.
    let (req, body) = match config.body_timeout.filter(|_| mode == Mode::Body) {
        Some(timeout) => {
            let (parts, body) = req.into_parts();
            let body_deadline = tokio::time::Instant::from_std(started) + timeout;
            let (body, progress) = RequestBody::with_deadline(body, body_deadline);
            (Request::from_parts(parts, body), Some(progress))
        }
        None => (req.map(RequestBody::plain), None),
    };
    let sent = send(
        &ctx,
        in_flight.slot(),
        sender,
        pooled,
        req,
        deadline,
        body.as_deref(),
    )
    .await;
    let (mut response, sender) = match sent {
        Sent::Response(response, sender) => (response, sender),
        Sent::Failed(error) => {
            return backend_failed(&entry, &in_flight.slot().address, started, &error);
        }
        Sent::TimedOut => return timed_out(&entry, started, config.backend_timeout),
        Sent::ClientBody => {
            entry.service.record(400, started.elapsed());
            return refuse(
                StatusCode::BAD_REQUEST,
                "malformed or incomplete request body",
            );
        }
        Sent::BodyTimeout => {
            // Both deadlines run from the head: the earlier one cut the body short.
            let timeout = config
                .body_timeout
                .map_or(config.backend_timeout, |t| t.min(config.backend_timeout));
            tracing::debug!(service = %entry.service.name, ?timeout, "request body too slow: 408");
            entry.service.record(408, started.elapsed());
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the request body did not arrive within {timeout:?}"),
            );
        }
    };

    let status = response.status();
    if let (Some(websocket), Some(client_upgrade)) = (upgrade, client_upgrade)
        && status == StatusCode::SWITCHING_PROTOCOLS
    {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        strip_hop_by_hop(response.headers_mut(), true);
        entry.service.record(status.as_u16(), started.elapsed());
        let hold = ctx.connections.hold();
        let id = hold.id();
        let task = tokio::spawn(tunnel::run(tunnel::Tunnel {
            client: client_upgrade,
            backend: backend_upgrade,
            in_flight,
            hold,
            conn: ctx.clone(),
            websocket,
            shutdown: ctx.shutdown.clone(),
            upgrade_drain_timeout: config.upgrade_drain_timeout,
            close_grace: config.websocket_close_grace,
        }));
        ctx.connections.track(id, task.abort_handle());
        return response.map(|_| ProxyBody::empty());
    }
    strip_hop_by_hop(response.headers_mut(), false);
    let guard = Guard {
        in_flight,
        started,
        status: status.as_u16(),
        sender: (mode == Mode::Body).then_some(sender),
    };
    response.map(|body| ProxyBody::upstream(body, guard))
}

/// The fast path: a request without a body on an `Upstream` connection. A pooled connection
/// that fails before a byte of the request went out is replaced once by a fresh one.
#[allow(clippy::too_many_arguments)]
async fn fast(
    req: &Request<Incoming>,
    mut conn: Upstream,
    mut pooled: bool,
    in_flight: InFlight,
    entry: &RouteEntry,
    started: Instant,
    deadline: tokio::time::Instant,
    config: &RouterConfig,
) -> Response<ProxyBody> {
    let slot = in_flight.slot().clone();
    let (head, mut body) = loop {
        match tokio::time::timeout_at(deadline, conn.send_head(req)).await {
            Err(_) => return timed_out(entry, started, config.backend_timeout),
            Ok(Ok(exchange)) => break exchange,
            Ok(Err((_, false))) if pooled => {
                pooled = false;
                let fresh = tokio::time::timeout_at(
                    deadline,
                    Upstream::connect(&slot, config.connect_timeout),
                )
                .await;
                conn = match fresh {
                    Err(_) => return timed_out(entry, started, config.backend_timeout),
                    Ok(Ok(fresh)) => fresh,
                    Ok(Err(error)) => return backend_failed(entry, &slot.address, started, &error),
                };
            }
            Ok(Err((error, _))) => return backend_failed(entry, &slot.address, started, &error),
        }
    };
    let (mut parts, ()) = head.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let status = parts.status.as_u16();
    if let Some(bytes) = body.try_complete() {
        // Small answer, already here: settle now and give the connection back.
        if let Some(conn) = body.into_reusable() {
            pool::checkin_raw(&slot, conn);
        }
        entry.service.record(status, started.elapsed());
        drop(in_flight);
        return Response::from_parts(parts, ProxyBody::full(bytes));
    }
    let guard = Guard {
        in_flight,
        started,
        status,
        sender: None,
    };
    Response::from_parts(parts, ProxyBody::raw(body, guard))
}
