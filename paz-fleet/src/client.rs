//! A small client of fleet's v1 HTTP API: typed calls, error bodies, paging.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{
    BASE_PATH, ErrorBody, Machine, MachinePage, Unit, UnitPage, UnitState, UnitStatePage,
};
use crate::config::FleetConfig;
use crate::error::{Error, Result};

/// The most pages one listing follows (a guard against a server that never ends).
const MAX_PAGES: usize = 10_000;

/// A client of one fleet endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    base: String,
}

/// A page of a listing: its items and the token of the next.
trait Page: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for UnitPage {
    type Item = Unit;
    fn into_parts(self) -> (Vec<Unit>, Option<String>) {
        (self.units, self.next_page_token)
    }
}
impl Page for UnitStatePage {
    type Item = UnitState;
    fn into_parts(self) -> (Vec<UnitState>, Option<String>) {
        (self.states, self.next_page_token)
    }
}
impl Page for MachinePage {
    type Item = Machine;
    fn into_parts(self) -> (Vec<Machine>, Option<String>) {
        (self.machines, self.next_page_token)
    }
}

/// Percent-encodes a query value or path segment (RFC 3986 unreserved characters stay).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of `config.endpoint` (no request is sent).
    pub fn new(config: &FleetConfig) -> Result<Self> {
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        let invalid = |reason: &str| Error::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let rest = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only plain http://host:port endpoints are supported (fleet has no TLS; use an SSH tunnel for remote access)"))?;
        if rest.is_empty() || rest.contains('/') || rest.contains('?') {
            return Err(invalid("expected http://host:port, without a path"));
        }
        // reqwest's rustls has no built-in crypto provider; fleet is plain http, but a
        // client cannot be built without one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Client {
            http,
            base: format!("{endpoint}{BASE_PATH}"),
            endpoint,
        })
    }

    /// The endpoint, without the base path.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one request; `Ok(None)` for a 404 when `allow_404`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Unit>,
        allow_404: bool,
    ) -> Result<Option<(StatusCode, Body)>> {
        let operation = format!("{method} {BASE_PATH}{path}");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            let json = serde_json::to_vec(body).map_err(|e| Error::InvalidSpec(e.to_string()))?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json);
        }
        let response = request.send().await.map_err(|e| Error::Transport {
            operation: operation.clone(),
            endpoint: self.endpoint.clone(),
            cause: chain(&e),
            timeout: e.is_timeout(),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| Error::Transport {
            operation: operation.clone(),
            endpoint: self.endpoint.clone(),
            cause: chain(&e),
            timeout: e.is_timeout(),
        })?;
        if status == StatusCode::NOT_FOUND && allow_404 {
            return Ok(None);
        }
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => (
                    0,
                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                ),
            };
            return Err(Error::Status {
                operation,
                status: status.as_u16(),
                code,
                message,
            });
        }
        Ok(Some((status, Body { operation, bytes })))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, allow_404: bool) -> Result<Option<T>> {
        match self.send(Method::GET, path, None, allow_404).await? {
            None => Ok(None),
            Some((_, body)) => body.json().map(Some),
        }
    }

    /// Every item of a paged listing, following `nextPageToken` until it is absent.
    async fn all<P: Page>(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<P::Item>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut params: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            if let Some(token) = &token {
                params.push(format!("nextPageToken={}", encode(token)));
            }
            let url = if params.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", params.join("&"))
            };
            let page: P = self.get(&url, false).await?.ok_or_else(|| Error::Decode {
                operation: format!("GET {BASE_PATH}{url}"),
                cause: "no body".into(),
            })?;
            let (mut page_items, next) = page.into_parts();
            items.append(&mut page_items);
            // §3.6: "Stop when the field is absent."
            match next {
                Some(next) if seen.insert(next.clone()) => token = Some(next),
                _ => return Ok(items),
            }
        }
        Ok(items)
    }

    /// Every machine (deduplicated by id).
    pub async fn machines(&self) -> Result<Vec<Machine>> {
        let mut machines = self.all::<MachinePage>("/machines", &[]).await?;
        let mut seen = HashSet::new();
        machines.retain(|m| seen.insert(m.id.clone()));
        Ok(machines)
    }

    /// Every unit (deduplicated by name: §3.6 "Not a snapshot").
    pub async fn units(&self) -> Result<Vec<Unit>> {
        let mut units = self.all::<UnitPage>("/units", &[]).await?;
        let mut seen = HashSet::new();
        units.retain(|u| seen.insert(u.name.clone()));
        Ok(units)
    }

    /// Every unit state, optionally of one unit (deduplicated by name and machine).
    pub async fn states(&self, unit: Option<&str>) -> Result<Vec<UnitState>> {
        let query: Vec<(&str, &str)> = unit.map(|u| ("unitName", u)).into_iter().collect();
        let mut states = self.all::<UnitStatePage>("/state", &query).await?;
        let mut seen = HashSet::new();
        states.retain(|s| seen.insert((s.name.clone(), s.machine_id.clone())));
        Ok(states)
    }

    /// One unit, `None` when fleet does not know it.
    pub async fn unit(&self, name: &str) -> Result<Option<Unit>> {
        self.get(&format!("/units/{}", encode(name)), true).await
    }

    /// Creates, replaces or changes the desired state of a unit; the status on success.
    pub async fn put_unit(&self, name: &str, unit: &Unit) -> Result<Option<u16>> {
        let path = format!("/units/{}", encode(name));
        Ok(self
            .send(Method::PUT, &path, Some(unit), true)
            .await?
            .map(|(status, _)| status.as_u16()))
    }

    /// Destroys a unit; `false` when it did not exist.
    pub async fn delete_unit(&self, name: &str) -> Result<bool> {
        let path = format!("/units/{}", encode(name));
        Ok(self
            .send(Method::DELETE, &path, None, true)
            .await?
            .is_some())
    }
}

/// A response body and the request it answers.
struct Body {
    operation: String,
    bytes: bytes::Bytes,
}

impl Body {
    fn json<T: DeserializeOwned>(self) -> Result<T> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::Decode {
            operation: self.operation,
            cause: e.to_string(),
        })
    }
}

/// The error's message followed by those of its sources, skipping repeats.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
