//! The fake's HTTP API: fleetd's v1 routes, answered as `api/*.go` answers them.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde::Deserialize;
use serde::Serialize;

use crate::api::{
    self, ErrorBody, ErrorDetail, LEGACY_BASE_PATH, MachinePage, PageToken, Unit, UnitPage,
    UnitStatePage,
};

use super::engine::{Job, JobState, validate_options};
use super::util::{percent_decode, query_pairs};
use super::{Call, Shared};

/// §3.1: "Every response carries `Server: fleetd/<version>`" (fleet's last release).
pub(crate) const SERVER: &str = "fleetd/1.0.0";

fn respond(status: StatusCode, body: Option<Vec<u8>>) -> Response {
    let mut response = Response::new(Body::from(body.clone().unwrap_or_default()));
    *response.status_mut() = status;
    if body.is_some() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, Some(body)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// §3.3 *Error*: `{"error": {"code": <http status>, "message": "<text>"}}`.
fn error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                message: message.to_owned(),
            },
        },
    )
}

/// Every request: recorded, routed, stamped with the `Server` header.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(Call {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
    });
    let mut response = route(&shared, &method, &uri, &headers, &body);
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static(SERVER));
    response
}

fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let path = uri.path();
    let query = query_pairs(uri.query().unwrap_or(""));
    // §3.2: "`/` → 405".
    if path == "/" {
        return error(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    // §3.1: "`GET /metrics` = Prometheus metrics of fleetd".
    if path == "/metrics" {
        let mut r = respond(StatusCode::OK, None);
        *r.body_mut() =
            Body::from("# HELP fleet_fake_up The fake fleetd is up.\nfleet_fake_up 1\n");
        return r;
    }
    // §3.1: "Every route also exists under the legacy prefix `/v1-alpha`."
    let Some(rest) = path
        .strip_prefix(api::BASE_PATH)
        .or_else(|| path.strip_prefix(LEGACY_BASE_PATH))
    else {
        return error(StatusCode::NOT_FOUND, "");
    };
    let only = |allowed: &str| {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("only {allowed} supported against this resource"),
        )
    };
    match rest {
        "/units" => match *method {
            Method::GET => list_units(shared, &query),
            // §3.2: "Other methods on a collection → 405".
            _ => only("GET"),
        },
        "/state" => match *method {
            Method::GET => list_states(shared, &query),
            _ => only("GET"),
        },
        "/machines" => match *method {
            Method::GET => list_machines(shared, &query),
            Method::PATCH => patch_machines(shared, body),
            _ => only("GET and PATCH"),
        },
        "/discovery" | "/discovery.json" => match *method {
            Method::GET => discovery(),
            _ => only("GET"),
        },
        _ => {
            if let Some(name) = rest
                .strip_prefix("/units/")
                .filter(|n| !n.is_empty() && !n.contains('/'))
            {
                let name = percent_decode(name, false);
                match *method {
                    Method::GET => get_unit(shared, &name),
                    Method::PUT => put_unit(shared, &name, headers, body),
                    Method::DELETE => delete_unit(shared, &name),
                    _ => only("GET, PUT and DELETE"),
                }
            } else if let Some(name) = rest
                .strip_prefix("/state/")
                .filter(|n| !n.is_empty() && !n.contains('/'))
            {
                let name = percent_decode(name, false);
                match *method {
                    Method::GET => get_state(shared, &name),
                    _ => only("GET"),
                }
            } else {
                // §3.2: "unknown path → 404".
                error(StatusCode::NOT_FOUND, "")
            }
        }
    }
}

/// The page a request asks for (§3.6), or the message of the 400 answer.
fn requested_page(query: &[(String, String)], limit: u16) -> Result<u16, String> {
    let tokens: Vec<&String> = query
        .iter()
        .filter(|(k, _)| k == "nextPageToken")
        .map(|(_, v)| v)
        .collect();
    let bad = |message: String| Err(message);
    match tokens.as_slice() {
        [] => Ok(1),
        [token] => {
            let Ok(token) = PageToken::decode(token) else {
                return bad("invalid page token".into());
            };
            // §3.6: "The server rejects a token whose limit ≠ its `token_limit` ("token
            // limit must be 100") or page 0 → 400".
            if token.limit != limit {
                return bad(format!("token limit must be {limit}"));
            }
            if token.page == 0 {
                return bad("token page must be greater than zero".into());
            }
            Ok(token.page)
        }
        // §3.6: "more than one `nextPageToken` parameter → 400".
        _ => bad("cannot use more than one nextPageToken".into()),
    }
}

/// §3.6: "page p covers items `[(p-1)*limit, p*limit)`"; the token is present "only when
/// there might be more (also when the last page is exactly full …)".
fn paginate<T: Clone>(items: &[T], page: u16, limit: u16) -> (Vec<T>, Option<String>) {
    let limit_n = usize::from(limit.max(1));
    let start = (usize::from(page) - 1).saturating_mul(limit_n);
    let slice: Vec<T> = items.iter().skip(start).take(limit_n).cloned().collect();
    let next = (slice.len() == limit_n)
        .then(|| page.checked_add(1))
        .flatten()
        .map(|page| PageToken { limit, page }.encode());
    (slice, next)
}

fn list_units(shared: &Shared, query: &[(String, String)]) -> Response {
    let page = match requested_page(query, shared.token_limit) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    // §3.3: "units are sorted by name" (the registry is a sorted map).
    let units: Vec<Unit> = {
        let registry = shared.lock();
        registry
            .jobs
            .iter()
            .map(|(name, job)| registry.unit_view(name, job))
            .collect()
    };
    let (units, next_page_token) = paginate(&units, page, shared.token_limit);
    json(
        StatusCode::OK,
        &UnitPage {
            units,
            next_page_token,
        },
    )
}

fn list_states(shared: &Shared, query: &[(String, String)]) -> Response {
    let page = match requested_page(query, shared.token_limit) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let first = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (machine, unit) = (first("machineID"), first("unitName"));
    // §3.3: "Filters `machineID` and `unitName` are exact match and are applied before
    // paging."
    let states: Vec<_> = shared
        .lock()
        .states()
        .into_iter()
        .filter(|s| machine.as_ref().is_none_or(|m| &s.machine_id == m))
        .filter(|s| unit.as_ref().is_none_or(|u| &s.name == u))
        .collect();
    let (states, next_page_token) = paginate(&states, page, shared.token_limit);
    json(
        StatusCode::OK,
        &UnitStatePage {
            states,
            next_page_token,
        },
    )
}

fn list_machines(shared: &Shared, query: &[(String, String)]) -> Response {
    let page = match requested_page(query, shared.token_limit) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let machines = shared.lock().machine_list();
    let (machines, next_page_token) = paginate(&machines, page, shared.token_limit);
    json(
        StatusCode::OK,
        &MachinePage {
            machines,
            next_page_token,
        },
    )
}

fn get_unit(shared: &Shared, name: &str) -> Response {
    let registry = shared.lock();
    match registry.jobs.get(name) {
        Some(job) => json(StatusCode::OK, &registry.unit_view(name, job)),
        None => error(StatusCode::NOT_FOUND, "unit does not exist"),
    }
}

fn get_state(shared: &Shared, name: &str) -> Response {
    match shared.lock().states().into_iter().find(|s| s.name == name) {
        Some(state) => json(StatusCode::OK, &state),
        None => error(StatusCode::NOT_FOUND, "unit state does not exist"),
    }
}

fn delete_unit(shared: &Shared, name: &str) -> Response {
    // fleetctl destroy: the job goes; agents stop and unload it on their next tick.
    match shared.lock().jobs.remove(name) {
        Some(_) => respond(StatusCode::NO_CONTENT, None),
        None => error(StatusCode::NOT_FOUND, "unit does not exist"),
    }
}

/// §3.1: "PUT requests must have exactly one `Content-Type` header whose media type is
/// `application/json` (parameters like `; charset=utf-8` are allowed) → otherwise 415."
fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let values: Vec<&HeaderValue> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    let [value] = values.as_slice() else {
        return Err("expected exactly one Content-Type header".into());
    };
    let text = value
        .to_str()
        .map_err(|_| "unable to parse Content-Type header".to_owned())?;
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let well_formed = media
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s))
        && parts.all(|p| p.split_once('=').is_some_and(|(k, _)| token(k.trim())));
    if !well_formed {
        return Err(format!("unable to parse Content-Type header {text:?}"));
    }
    if media != "application/json" {
        return Err(format!("unrecognized Content-Type: {media}"));
    }
    Ok(())
}

/// `PUT /units/{name}`, step by step as §3.4 (`api/units.go`) describes.
fn put_unit(shared: &Shared, url_name: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(message) = check_content_type(headers) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message);
    }
    // §3.4 step 1: "Decode the body; an empty `name` takes the URL name; a differing
    // `name` → 400. Validate the name (3.7)."
    let mut unit: Unit = match serde_json::from_slice(body) {
        Ok(unit) => unit,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unable to decode body: {e}"),
            );
        }
    };
    if unit.name.is_empty() {
        unit.name = url_name.to_owned();
    }
    if unit.name != url_name {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "name in URL {url_name:?} differs from unit name in request body {:?}",
                unit.name
            ),
        );
    }
    if let Err(message) = api::validate_unit_name(&unit.name) {
        return error(StatusCode::BAD_REQUEST, &message);
    }
    let desired = if unit.desired_state.is_empty() {
        None
    } else {
        match JobState::parse(&unit.desired_state) {
            Some(state) => Some(state),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid desiredState: {:?}", unit.desired_state),
                );
            }
        }
    };

    let mut registry = shared.lock();
    // §3.4 step 2: "Look up the existing unit."
    let create = match registry.jobs.get(&unit.name) {
        None => {
            // "Not found: `options` must be non-empty (else 409 …); options are validated".
            if unit.options.is_empty() {
                return error(
                    StatusCode::CONFLICT,
                    "unit does not exist and options field empty",
                );
            }
            if let Err(message) = validate_options(&unit.options, &unit.name) {
                return error(StatusCode::BAD_REQUEST, &message);
            }
            true
        }
        // "Found and `options` non-empty: compare the unit files. If they differ, this is
        // a replace … → 201. If they are identical, fall through to 'update state'."
        Some(existing) if !unit.options.is_empty() => {
            Job::new(&unit.name, unit.options.clone(), JobState::Inactive).hash != existing.hash
        }
        Some(_) => false,
    };
    if create {
        let mut job = Job::new(
            &unit.name,
            unit.options,
            desired.unwrap_or(JobState::Inactive),
        );
        // A replace overwrites the job object, keeping its place.
        if let Some(old) = registry.jobs.get(&unit.name) {
            job.target = old.target.clone();
        }
        registry.jobs.insert(unit.name, job);
        return respond(StatusCode::CREATED, None);
    }
    // "Update state: `desiredState` required (else 409 …)".
    let Some(desired) = desired else {
        return error(
            StatusCode::CONFLICT,
            "must provide DesiredState to update existing unit",
        );
    };
    // "Template units (`foo@.service`) may only be set to `inactive` (else 400 …)".
    if api::is_template(&unit.name) && desired != JobState::Inactive {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("cannot activate template {:?}", unit.name),
        );
    }
    if let Some(job) = registry.jobs.get_mut(&unit.name) {
        job.desired = desired;
    }
    respond(StatusCode::NO_CONTENT, None)
}

/// §3.5: the handler's struct nests the value: `"value": {"value": "<string>"}`.
#[derive(Debug, Deserialize)]
struct MachineOp {
    #[serde(default)]
    op: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    value: Option<MachineValue>,
}

#[derive(Debug, Default, Deserialize)]
struct MachineValue {
    #[serde(default)]
    value: String,
}

/// §3.5: "`path` must match `^/([^/]+)/metadata/([A-Za-z0-9_.-]+)$`".
fn metadata_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix('/')?;
    let (machine, key) = rest.split_once("/metadata/")?;
    let key_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    (!machine.is_empty() && !machine.contains('/') && key_ok)
        .then(|| (machine.to_owned(), key.to_owned()))
}

/// `PATCH /machines` (§3.5). The handler does not check Content-Type.
fn patch_machines(shared: &Shared, body: &[u8]) -> Response {
    let ops: Vec<MachineOp> = match serde_json::from_slice(body) {
        Ok(ops) => ops,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // §3.5: "All ops are validated first, then applied in order."
    let mut changes = Vec::new();
    for op in &ops {
        if !matches!(op.op.as_str(), "add" | "remove" | "replace") {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid op: expect add, remove, or replace",
            );
        }
        let Some((machine, key)) = metadata_path(&op.path) else {
            return error(StatusCode::BAD_REQUEST, "machine metadata path invalid");
        };
        let value = op.value.as_ref().map_or("", |v| v.value.as_str());
        if op.op != "remove" && value.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid value: add and replace require a value",
            );
        }
        changes.push((op.op == "remove", machine, key, value.to_owned()));
    }
    let mut registry = shared.lock();
    for (remove, machine, key, value) in changes {
        // §3.5: "The machine need not be registered; metadata persists across leave/rejoin.
        // `add` and `replace` behave the same (set)."
        let metadata = registry.metadata.entry(machine).or_default();
        if remove {
            metadata.remove(&key);
        } else {
            metadata.insert(key, value);
        }
    }
    respond(StatusCode::NO_CONTENT, None)
}

/// §3.1: "Discovery document … `id: fleet:v1`, `rootUrl` deliberately unusable".
fn discovery() -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "discovery#restDescription",
            "discoveryVersion": "v1",
            "id": "fleet:v1",
            "name": "fleet",
            "version": "v1",
            "title": "fleet API",
            "rootUrl": "$ENDPOINT/",
            "servicePath": "fleet/v1/",
            "protocol": "rest",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_reference() {
        let items: Vec<u32> = (1..=5).collect();
        assert_eq!(
            paginate(&items, 1, 2),
            (vec![1, 2], Some(PageToken { limit: 2, page: 2 }.encode()))
        );
        assert_eq!(paginate(&items, 3, 2), (vec![5], None));
        // Exactly full last page: a token, then an empty page without one.
        let four: Vec<u32> = (1..=4).collect();
        assert!(paginate(&four, 2, 2).1.is_some());
        assert_eq!(paginate(&four, 3, 2), (vec![], None));
    }

    #[test]
    fn metadata_paths() {
        assert_eq!(
            metadata_path("/m1/metadata/disk"),
            Some(("m1".into(), "disk".into()))
        );
        assert_eq!(metadata_path("/m1/metadata/"), None);
        assert_eq!(metadata_path("/m1/metadata/a b"), None);
        assert_eq!(metadata_path("m1/metadata/a"), None);
        assert_eq!(metadata_path("/a/b/metadata/c"), None);
    }
}
