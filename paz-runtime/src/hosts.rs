//! Host registration: this machine's record in the store, on a lease kept alive while the
//! runtime runs (so `paz hosts` lists live hosts only).

use std::collections::BTreeMap;
use std::time::Duration;

use paz_core::{Host, HostStatus, Paz};
use tokio::sync::watch;

/// How long a host registration lives without a keep-alive.
pub const HOST_TTL: Duration = Duration::from_secs(15);

/// Registers `host` and keeps its lease alive until `shutdown` turns true; then revokes it.
pub async fn keep_host_registered(paz: Paz, host: Host, mut shutdown: watch::Receiver<bool>) {
    let mut lease = None;
    loop {
        let result = match lease {
            Some(id) => paz.store().keep_alive(id).await,
            None => paz.register_host(&host, HOST_TTL).await.map(|id| {
                lease = Some(id);
            }),
        };
        if let Err(error) = result {
            tracing::warn!(%error, host = %host.id, "host registration lapsed; registering again");
            lease = None;
            if stopped_during(Duration::from_secs(1), &mut shutdown).await {
                return;
            }
            continue;
        }
        if stopped_during(HOST_TTL / 3, &mut shutdown).await {
            if let Some(id) = lease {
                let _ = paz.store().revoke_lease(id).await;
            }
            return;
        }
    }
}

/// Sleeps for `delay`; returns `true` early when shutdown was signalled.
pub async fn stopped_during(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait_for(|stopping| *stopping) => true,
    }
}

/// This machine as a host record: its name from `/etc/hostname`, the address others reach
/// it at, and its placement labels.
pub fn local_host(address: &str, labels: BTreeMap<String, String>) -> Host {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    Host {
        id: name.clone(),
        name,
        address: address.to_owned(),
        labels,
        status: HostStatus::Ready,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}
