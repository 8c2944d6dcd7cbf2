//! Host registration: this machine's record in the store, on a lease kept alive while the
//! runtime runs (so `paz hosts` lists live hosts only).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use paz_core::scheduler::Scheduler;
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

/// How often a scheduler's host inventory is read into the store.
pub const INVENTORY_INTERVAL: Duration = Duration::from_secs(3);

/// Keeps the scheduler's hosts (Swarm nodes, fleet machines) in the store, on one lease
/// renewed while the runtime runs, so that `paz hosts` and the UI show them from any replica;
/// a host's record changes within [`INVENTORY_INTERVAL`] of its state. At shutdown the lease
/// is revoked (the records go with it; the next leader writes them again).
pub async fn keep_inventory(
    paz: Paz,
    scheduler: Arc<dyn Scheduler>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut lease = None;
    let mut written: HashMap<String, Host> = HashMap::new();
    loop {
        if let Err(error) = sync_inventory(&paz, scheduler.as_ref(), &mut lease, &mut written).await
        {
            tracing::warn!(%error, "cannot record the scheduler's hosts; trying again");
            lease = None;
            written.clear();
        }
        if stopped_during(INVENTORY_INTERVAL, &mut shutdown).await {
            if let Some(id) = lease {
                let _ = paz.store().revoke_lease(id).await;
            }
            return;
        }
    }
}

async fn sync_inventory(
    paz: &Paz,
    scheduler: &dyn Scheduler,
    lease: &mut Option<paz_core::store::LeaseId>,
    written: &mut HashMap<String, Host>,
) -> paz_core::Result<()> {
    let hosts = scheduler.hosts().await?;
    let id = match *lease {
        Some(id) => {
            paz.store().keep_alive(id).await?;
            id
        }
        None => {
            let id = paz.store().grant_lease(HOST_TTL).await?;
            *lease = Some(id);
            id
        }
    };
    for host in &hosts {
        if written.get(&host.id) != Some(host) {
            paz.put_host(host, id).await?;
            written.insert(host.id.clone(), host.clone());
        }
    }
    let gone: Vec<String> = written
        .keys()
        .filter(|id| !hosts.iter().any(|h| &h.id == *id))
        .cloned()
        .collect();
    for host in gone {
        paz.remove_host(&host).await?;
        written.remove(&host);
    }
    Ok(())
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
