//! Outgoing notifications: selected events POSTed as JSON to configured URLs
//! (`--notify-url`), signed with HMAC-SHA256 (`--notify-secret`), retried with backoff.
//!
//! Each delivery carries `X-Paz-Event` (the event type), `X-Paz-Delivery` (the event id,
//! for de-duplication), `X-Paz-Timestamp` (Unix seconds) and `X-Paz-Signature:
//! sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`, so a receiver can check the
//! sender and refuse replays outside its time window. Addresses that reach this machine or a
//! private network (loopback, RFC 1918, link-local, unique local, CGNAT, unspecified,
//! multicast) are refused unless allow-listed (`--notify-allow`), whether the URL names them
//! or its host name resolves to them; the resolved address is the one connected to, so a name
//! cannot be re-pointed between the check and the connection.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use paz_core::{Event, Paz};
use tokio::sync::{broadcast, watch};

/// Where and what to notify.
#[derive(Clone)]
pub struct NotifyConfig {
    /// The receivers.
    pub urls: Vec<reqwest::Url>,
    /// The HMAC key.
    pub secret: Arc<[u8]>,
    /// Event types (`deployment_changed`) or prefixes (`deployment_*`) to send; empty: all.
    pub events: Vec<String>,
    /// Addresses allowed although private or local (exact IPs).
    pub allow: Vec<IpAddr>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("urls", &self.urls)
            .field("events", &self.events)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// Attempts per delivery (the first and the retries).
pub const ATTEMPTS: u32 = 5;
/// Deliveries waiting per receiver; past it the oldest is dropped (and logged).
pub const QUEUE: usize = 1000;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

impl NotifyConfig {
    /// Whether an event of type `name` is sent.
    pub fn wants(&self, name: &str) -> bool {
        self.events.is_empty()
            || self
                .events
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => pattern == name,
                })
    }
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `ip` reaches this machine or a private network.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The address to connect to for `url`: its host resolved, refused when private unless
/// allowed.
async fn destination(url: &reqwest::Url, allow: &[IpAddr]) -> Result<SocketAddr, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    let allowed = |a: &SocketAddr| !is_private(a.ip()) || allow.contains(&a.ip().to_canonical());
    // Every address must pass: a name that resolves to a public and a private address is
    // refused rather than tried in turn.
    match addresses.iter().find(|a| !allowed(a)) {
        Some(refused) => Err(format!(
            "{host} resolves to {}, a local or private address (allow it with --notify-allow)",
            refused.ip()
        )),
        None => addresses
            .first()
            .copied()
            .ok_or_else(|| format!("{host} has no address")),
    }
}

/// Sends one delivery, with retries; whether it was accepted (2xx).
async fn deliver(config: &NotifyConfig, url: &reqwest::Url, event: &Event) -> bool {
    let body = match serde_json::to_vec(event) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "cannot encode an event for a notification");
            return false;
        }
    };
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let outcome = match destination(url, &config.allow).await {
            // Refused addresses are not retried: the answer will not change.
            Err(reason) => {
                tracing::warn!(%url, %reason, "notification refused");
                return false;
            }
            Ok(address) => send(config, url, address, event, &body).await,
        };
        match outcome {
            Ok(()) => return true,
            Err((reason, retry)) => {
                tracing::warn!(%url, attempt, %reason, "notification failed");
                if !retry || attempt == ATTEMPTS {
                    return false;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    false
}

/// One attempt to `address`; an error says whether a retry may help.
async fn send(
    config: &NotifyConfig,
    url: &reqwest::Url,
    address: SocketAddr,
    event: &Event,
    body: &[u8],
) -> Result<(), (String, bool)> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let client = reqwest::Client::builder()
        .resolve(&host, address)
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("paz-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| (e.to_string(), false))?;
    let timestamp = jiff::Timestamp::now().as_second();
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-paz-event", event.kind.name())
        .header("x-paz-delivery", &event.id)
        .header("x-paz-timestamp", timestamp.to_string())
        .header(
            "x-paz-signature",
            signature(&config.secret, timestamp, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| (e.to_string(), true))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        Err((format!("the receiver answered {status}"), retry))
    }
}

/// Sends the selected events of `paz` to every receiver until `shutdown`: one queue and one
/// sender per receiver, so a slow receiver delays only its own deliveries (in order).
pub async fn run(config: NotifyConfig, paz: Paz, mut shutdown: watch::Receiver<bool>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut events = paz.subscribe();
    let queues: Vec<_> = config
        .urls
        .iter()
        .map(|url| {
            let queue = Arc::new((
                std::sync::Mutex::new(VecDeque::<Event>::new()),
                tokio::sync::Notify::new(),
            ));
            tokio::spawn(sender(
                config.clone(),
                url.clone(),
                queue.clone(),
                shutdown.clone(),
            ));
            queue
        })
        .collect();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "notifications fell behind the events; some are not sent"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !config.wants(event.kind.name()) {
            continue;
        }
        for queue in &queues {
            let mut pending = queue.0.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() == QUEUE {
                pending.pop_front();
                tracing::warn!("a notification queue is full: dropping its oldest delivery");
            }
            pending.push_back(event.clone());
            drop(pending);
            queue.1.notify_one();
        }
    }
}

/// Runs [`run`] until `shutdown`; a panic is logged and the notifier started again a
/// second later (events meanwhile are not sent), never lost silently.
pub async fn supervise(config: NotifyConfig, paz: Paz, shutdown: watch::Receiver<bool>) {
    loop {
        let task = tokio::spawn(run(config.clone(), paz.clone(), shutdown.clone()));
        match task.await {
            Err(error) if error.is_panic() => {
                tracing::error!(%error, "the notifier panicked; restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return,
        }
    }
}

type Queue = Arc<(std::sync::Mutex<VecDeque<Event>>, tokio::sync::Notify)>;

async fn sender(
    config: NotifyConfig,
    url: reqwest::Url,
    queue: Queue,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let next = queue
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match next {
            Some(event) => {
                tokio::select! {
                    _ = deliver(&config, &url, &event) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            None => {
                tokio::select! {
                    _ = queue.1.notified() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "100.128.0.1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let sig = signature(b"key", 1, b"{}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert_eq!(sig, signature(b"key", 1, b"{}"));
        assert_ne!(sig, signature(b"key", 2, b"{}"));
        assert_ne!(sig, signature(b"other", 1, b"{}"));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"key");
        let tag = ring::hmac::sign(&key, b"1.{}");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, format!("sha256={hex}"));
    }

    #[test]
    fn event_selection_takes_names_and_prefixes() {
        let config = NotifyConfig {
            urls: vec![],
            secret: Arc::from(&b"k"[..]),
            events: vec!["deployment_*".into(), "instance_unhealthy".into()],
            allow: vec![],
        };
        assert!(config.wants("deployment_changed"));
        assert!(config.wants("deployment_step"));
        assert!(config.wants("instance_unhealthy"));
        assert!(!config.wants("instance_healthy"));
        assert!(!config.wants("service_created"));
    }

    #[tokio::test]
    async fn private_destinations_are_refused_unless_allowed() {
        let url: reqwest::Url = "http://127.0.0.1:9/hook".parse().unwrap();
        let refused = destination(&url, &[]).await.unwrap_err();
        assert!(refused.contains("--notify-allow"), "{refused}");
        let allowed = destination(&url, &["127.0.0.1".parse().unwrap()])
            .await
            .unwrap();
        assert_eq!(allowed, "127.0.0.1:9".parse().unwrap());
        // A name resolving to loopback is refused the same way.
        let named: reqwest::Url = "http://localhost:9/hook".parse().unwrap();
        assert!(destination(&named, &[]).await.is_err());
    }
}
