//! Service discovery through the store, as the original Paz's announce sidekicks did: the
//! leader's runtime announces every instance (its address, its health as the runtime sees
//! it, and the routes it serves) under [`ANNOUNCE_PREFIX`]`<service>/<release>/<slot>` on a
//! lease, and every router in the cluster (each replica's, and router-only hosts') builds its
//! table from those keys ([`RouteFollower`]), keeping its last table while the store is
//! unreachable.
//!
//! Draining stays exact across hosts: each router records the store revision of the table
//! it applied under [`ROUTERS`]`<id>`, and the leader stops a drained instance only after
//! every live router has applied the table that took it out of rotation
//! ([`ClusterProxy::wait_drained`]).
//!
//! The announcements live on a lease of their own ([`ANNOUNCE_TTL`], longer than a
//! failover): when the leader dies they outlive it until the next leader, once it has
//! checked the running instances, announces them again under its own lease.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use paz_core::proxy::Proxy;
use paz_core::route::{Backend, Route, RouteTable};
use paz_core::store::{LeaseId, Mirror, Revision, Store, Txn};
use paz_core::{Error, Instance, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::hosts::stopped_during;

/// Where instances are announced: `/paz/announce/<service>/<release>/<slot>`.
pub const ANNOUNCE_PREFIX: &str = "/paz/announce/";
/// Where routers record the table they applied: `/paz/routers/<id>`.
pub const ROUTERS: &str = "/paz/routers/";
/// How long announcements outlive a leader that stopped renewing them.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(30);
/// How long a router's record lives without renewal.
pub const ROUTER_TTL: Duration = Duration::from_secs(10);
/// How long the leader waits for every router to apply a table before it drains anyway.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One announced instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The instance as the leader's runtime sees it (its state carries its health).
    pub instance: Instance,
    /// The host names it serves, when it is routed (active or draining).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, AnnouncedRoute>,
}

/// How an announced instance is routed under one host name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedRoute {
    /// Its weight and state.
    pub backend: Backend,
    /// Whether plain HTTP to the host name is redirected to HTTPS.
    pub https_redirect: bool,
    /// The route's health path, for routers that check backends themselves (HAProxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
}

pub use paz_core::cluster::RouterRecord;

/// The key of an instance's announcement.
pub fn announce_key(instance: &Instance) -> String {
    format!(
        "{ANNOUNCE_PREFIX}{}/{}/{}",
        instance.service, instance.release, instance.slot
    )
}

/// The announcements for `instances` routed by `table`.
pub fn announcements<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    table: &RouteTable,
) -> BTreeMap<String, Announcement> {
    let mut by_address: BTreeMap<&str, Vec<(&String, &Route, &Backend)>> = BTreeMap::new();
    for (host, route) in &table.routes {
        for (address, backend) in &route.backends {
            by_address
                .entry(address.as_str())
                .or_default()
                .push((host, route, backend));
        }
    }
    let mut records: BTreeMap<String, Announcement> = BTreeMap::new();
    for instance in instances {
        let routes: BTreeMap<String, AnnouncedRoute> = instance
            .address
            .as_deref()
            .and_then(|address| by_address.get(address))
            .into_iter()
            .flatten()
            .filter(|(_, route, _)| route.service == instance.service)
            .map(|(host, route, backend)| {
                (
                    (*host).clone(),
                    AnnouncedRoute {
                        backend: **backend,
                        https_redirect: route.https_redirect,
                        health_path: route.health_path.clone(),
                    },
                )
            })
            .collect();
        let key = announce_key(instance);
        // Two containers of one slot (a crashed one not removed yet): the routed one wins.
        if let Some(existing) = records.get(&key)
            && !existing.routes.is_empty()
            && routes.is_empty()
        {
            continue;
        }
        records.insert(
            key,
            Announcement {
                instance: instance.clone(),
                routes,
            },
        );
    }
    records
}

/// The route table the announcements describe.
pub fn table_from<'a>(announcements: impl IntoIterator<Item = &'a Announcement>) -> RouteTable {
    let mut table = RouteTable::default();
    for announcement in announcements {
        let Some(address) = &announcement.instance.address else {
            continue;
        };
        for (host, announced) in &announcement.routes {
            let route = table.routes.entry(host.clone()).or_insert_with(|| Route {
                https_redirect: announced.https_redirect,
                health_path: announced.health_path.clone(),
                ..Route::new(announcement.instance.service.clone())
            });
            route.backends.insert(address.clone(), announced.backend);
        }
    }
    table
}

/// The leader's side: writes the announcements that changed, on its lease, through the
/// term's fenced store.
pub struct Announcer {
    store: Arc<dyn Store>,
    state: tokio::sync::Mutex<Published>,
    revision: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Published {
    lease: Option<LeaseId>,
    /// What the store holds, as this announcer knows it (`None`: not read yet).
    values: Option<BTreeMap<String, Vec<u8>>>,
    /// Whether every key must be written again (a new lease: re-attach them).
    rewrite: bool,
}

impl Announcer {
    /// An announcer writing through `store` (the term's fenced store).
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Announcer {
            store,
            state: tokio::sync::Mutex::new(Published {
                rewrite: true,
                ..Published::default()
            }),
            revision: 0.into(),
        })
    }

    /// The store revision of the last announcements written (0 before any).
    pub fn revision(&self) -> Revision {
        self.revision.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the store hold exactly `records` under [`ANNOUNCE_PREFIX`], writing only what
    /// changed (everything, the first time in a term, to move it to this term's lease).
    pub async fn publish(&self, records: &BTreeMap<String, Announcement>) -> Result<()> {
        let mut state = self.state.lock().await;
        let values = match state.values.take() {
            Some(values) => values,
            None => self
                .store
                .list(ANNOUNCE_PREFIX)
                .await?
                .items
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
        };
        let wanted: BTreeMap<String, Vec<u8>> = records
            .iter()
            .map(|(key, record)| {
                (
                    key.clone(),
                    serde_json::to_vec(record).expect("announcements serialize"),
                )
            })
            .collect();
        let mut changes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for key in values.keys() {
            if !wanted.contains_key(key) {
                changes.push((key.clone(), None));
            }
        }
        for (key, value) in &wanted {
            if state.rewrite || values.get(key) != Some(value) {
                changes.push((key.clone(), Some(value.clone())));
            }
        }
        if changes.is_empty() {
            state.values = Some(values);
            state.rewrite = false;
            return Ok(());
        }
        let lease = match state.lease {
            Some(lease) => lease,
            None => {
                let lease = self.store.grant_lease(ANNOUNCE_TTL).await?;
                state.lease = Some(lease);
                lease
            }
        };
        let per_txn = self.store.max_txn_ops().clamp(1, 100);
        let mut values = values;
        for chunk in changes.chunks(per_txn) {
            let mut txn = Txn::new();
            for (key, value) in chunk {
                txn = match value {
                    Some(value) => txn.put_with_lease(key.clone(), value.clone(), lease),
                    None => txn.delete(key.clone()),
                };
            }
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.revision
                        .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
                    for (key, value) in chunk {
                        match value {
                            Some(value) => values.insert(key.clone(), value.clone()),
                            None => values.remove(key),
                        };
                    }
                }
                Err(error) => {
                    if matches!(error, Error::LeaseNotFound(_)) {
                        state.lease = None;
                        state.rewrite = true;
                    }
                    // Read the store again next time: part of this may have been written.
                    state.values = None;
                    return Err(error);
                }
            }
        }
        state.values = Some(values);
        state.rewrite = false;
        Ok(())
    }

    /// Keeps the announcement lease alive until `shutdown` (the end of the term); a lost
    /// lease makes the next publish write everything on a new one.
    pub async fn keep_alive(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if stopped_during(ANNOUNCE_TTL / 3, &mut shutdown).await {
                return;
            }
            let lease = self.state.lock().await.lease;
            let Some(lease) = lease else { continue };
            match self.store.keep_alive(lease).await {
                Ok(()) => {}
                Err(Error::LeaseNotFound(_)) => {
                    tracing::warn!("the announcement lease expired; announcing again");
                    let mut state = self.state.lock().await;
                    state.lease = None;
                    state.rewrite = true;
                    state.values = None;
                }
                Err(error) => tracing::warn!(%error, "cannot renew the announcement lease"),
            }
        }
    }
}

/// The leader's proxy in a cluster: every router (its own too) follows the announcements,
/// so applying a table only remembers it, and a drain waits until every live router has
/// applied the announcements that took the instance out of rotation, then for this host's
/// router to finish its requests to it.
pub struct ClusterProxy {
    store: Arc<dyn Store>,
    local: Arc<dyn Proxy>,
    announcer: Arc<Announcer>,
    table: Mutex<RouteTable>,
}

impl ClusterProxy {
    /// A proxy for the leader: `local` is this host's router (its in-flight counts).
    pub fn new(store: Arc<dyn Store>, local: Arc<dyn Proxy>, announcer: Arc<Announcer>) -> Self {
        ClusterProxy {
            store,
            local,
            announcer,
            table: Mutex::new(RouteTable::default()),
        }
    }

    /// Waits until every router registered under [`ROUTERS`] applied `revision`, at most
    /// until `deadline`; returns the routers that had not.
    pub async fn wait_applied(
        &self,
        revision: Revision,
        deadline: tokio::time::Instant,
    ) -> Vec<String> {
        loop {
            let behind: Vec<String> = match self.store.list(ROUTERS).await {
                Ok(listing) => listing
                    .items
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<RouterRecord>(&kv.value).ok())
                    .filter(|router| router.applied < revision)
                    .map(|router| router.id)
                    .collect(),
                Err(error) => vec![format!("(the store: {error})")],
            };
            if behind.is_empty() || tokio::time::Instant::now() >= deadline {
                return behind;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl Proxy for ClusterProxy {
    async fn apply(&self, table: &RouteTable) -> Result<()> {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = table.clone();
        Ok(())
    }

    async fn routes(&self) -> Result<RouteTable> {
        Ok(self.table.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn in_flight(&self, address: &str) -> Result<u64> {
        self.local.in_flight(address).await
    }

    async fn wait_drained(&self, address: &str, timeout: Duration) -> Result<u64> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout.min(ACK_TIMEOUT);
        let behind = self.wait_applied(self.announcer.revision(), deadline).await;
        if !behind.is_empty() {
            tracing::warn!(%address, routers = ?behind, "routers did not apply the drain in time; draining anyway");
        }
        self.local
            .wait_drained(address, timeout.saturating_sub(started.elapsed()))
            .await
    }
}

/// What the announcements say about instances, for replicas that do not lead (their API
/// shows the instances the leader announced).
#[derive(Clone, Default)]
pub struct Announced {
    inner: Arc<Mutex<BTreeMap<String, Vec<Instance>>>>,
}

impl Announced {
    /// A service's announced instances.
    pub fn instances(&self, service: &str) -> Vec<Instance> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Every service's announced instances.
    pub fn all(&self) -> BTreeMap<String, Vec<Instance>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set<'a>(&self, announcements: impl IntoIterator<Item = &'a Announcement>) {
        let mut by_service: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for announcement in announcements {
            by_service
                .entry(announcement.instance.service.clone())
                .or_default()
                .push(announcement.instance.clone());
        }
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = by_service;
    }
}

/// A router's side: builds its table from the announcements and records what it applied.
pub struct RouteFollower {
    store: Arc<dyn Store>,
    proxy: Arc<dyn Proxy>,
    id: String,
    address: String,
    announced: Announced,
}

impl RouteFollower {
    /// A follower feeding `proxy` (this host's router, known to others as `id` at
    /// `address`).
    pub fn new(
        store: Arc<dyn Store>,
        proxy: Arc<dyn Proxy>,
        id: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        RouteFollower {
            store,
            proxy,
            id: id.into(),
            address: address.into(),
            announced: Announced::default(),
        }
    }

    /// Shares `announced` (a follower started again after a panic keeps its view).
    pub fn sharing(mut self, announced: Announced) -> Self {
        self.announced = announced;
        self
    }

    /// The announced instances it last saw.
    pub fn announced(&self) -> Announced {
        self.announced.clone()
    }

    /// Follows the announcements until `shutdown`; `first` turns true once the first table
    /// is applied. When the store is unreachable the router keeps its last table.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, first: watch::Sender<bool>) {
        let mut record = RecordKeeper::new(self.store.clone(), self.id.clone());
        let mut mirror = loop {
            match Mirror::new(self.store.clone(), ANNOUNCE_PREFIX).await {
                Ok(mirror) => break mirror,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the announcements yet; routing nothing new");
                    if stopped_during(Duration::from_secs(1), &mut shutdown).await {
                        return;
                    }
                }
            }
        };
        let mut applied = None;
        loop {
            let records: Vec<Announcement> = mirror
                .items()
                .values()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect();
            let table = table_from(&records);
            if applied.as_ref() != Some(&table) {
                match self.proxy.apply(&table).await {
                    Ok(()) => applied = Some(table),
                    Err(error) => tracing::error!(%error, "the router refused the announced table"),
                }
            }
            self.announced.set(&records);
            let _ = first.send(true);
            record
                .applied(
                    RouterRecord {
                        id: self.id.clone(),
                        address: self.address.clone(),
                        applied: mirror.revision(),
                    },
                    &mut shutdown,
                )
                .await;
            loop {
                enum Next {
                    Changed,
                    Failed(Error),
                    Renew,
                    Stop,
                }
                let next = tokio::select! {
                    changes = mirror.changes() => match changes {
                        Ok(_) => Next::Changed,
                        Err(error) => Next::Failed(error),
                    },
                    () = record.renew_due() => Next::Renew,
                    _ = shutdown.wait_for(|s| *s) => Next::Stop,
                };
                let failed = match next {
                    Next::Changed => break,
                    Next::Failed(error) => Some(error),
                    Next::Renew => {
                        record.renew().await;
                        None
                    }
                    Next::Stop => {
                        record.remove().await;
                        return;
                    }
                };
                if let Some(error) = failed {
                    tracing::warn!(%error, "cannot follow the announcements; keeping the last table");
                    if stopped_during(Duration::from_millis(500), &mut shutdown).await {
                        record.remove().await;
                        return;
                    }
                }
            }
        }
    }
}

/// A router record on a lease of its own.
struct RecordKeeper {
    store: Arc<dyn Store>,
    key: String,
    lease: Option<LeaseId>,
    last: Option<RouterRecord>,
    renewed: tokio::time::Instant,
}

impl RecordKeeper {
    fn new(store: Arc<dyn Store>, id: String) -> Self {
        RecordKeeper {
            store,
            key: format!("{ROUTERS}{id}"),
            lease: None,
            last: None,
            renewed: tokio::time::Instant::now(),
        }
    }

    async fn applied(&mut self, record: RouterRecord, shutdown: &mut watch::Receiver<bool>) {
        if self.last.as_ref() == Some(&record) {
            return;
        }
        for _ in 0..3 {
            match self.write(&record).await {
                Ok(()) => {
                    self.last = Some(record);
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot record the applied table yet");
                    if stopped_during(Duration::from_millis(100), shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    async fn write(&mut self, record: &RouterRecord) -> Result<()> {
        let lease = match self.lease {
            Some(lease) => lease,
            None => {
                let lease = self.store.grant_lease(ROUTER_TTL).await?;
                self.lease = Some(lease);
                self.renewed = tokio::time::Instant::now();
                lease
            }
        };
        let value = serde_json::to_vec(record).expect("router records serialize");
        match self
            .store
            .commit(Txn::new().put_with_lease(self.key.clone(), value, lease))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                if matches!(error, Error::LeaseNotFound(_)) {
                    self.lease = None;
                }
                Err(error)
            }
        }
    }

    async fn renew_due(&self) {
        tokio::time::sleep_until(self.renewed + ROUTER_TTL / 3).await;
    }

    async fn renew(&mut self) {
        self.renewed = tokio::time::Instant::now();
        let Some(lease) = self.lease else {
            if let Some(record) = self.last.clone() {
                let _ = self.write(&record).await;
            }
            return;
        };
        if let Err(error) = self.store.keep_alive(lease).await {
            tracing::debug!(%error, "router record lapsed; writing it again");
            self.lease = None;
            if let Some(record) = self.last.clone() {
                let _ = self.write(&record).await;
            }
        }
    }

    async fn remove(&mut self) {
        if let Some(lease) = self.lease.take() {
            let _ = self.store.revoke_lease(lease).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::InstanceState;
    use paz_core::route::BackendState;

    fn instance(service: &str, release: u64, slot: u32, address: &str) -> Instance {
        Instance {
            id: format!("{service}-{release}-{slot}"),
            service: service.into(),
            release,
            slot,
            host: "h".into(),
            address: Some(address.into()),
            state: InstanceState::Healthy,
            message: None,
            epoch: None,
            started_at: None,
        }
    }

    #[test]
    fn announcements_round_trip_to_the_same_route_table() {
        let mut table = RouteTable::default();
        let mut web = Route::new("web");
        web.backends
            .insert("10.0.0.1:80".into(), Backend::default());
        web.backends.insert(
            "10.0.0.2:80".into(),
            Backend {
                weight: 10,
                state: BackendState::Draining,
            },
        );
        table.routes.insert("web.example.com".into(), web.clone());
        table.routes.insert("web.paz".into(), web);
        let mut api = Route::new("api");
        api.https_redirect = false;
        api.backends
            .insert("10.0.0.3:80".into(), Backend::default());
        table.routes.insert("api.example.com".into(), api);
        let instances = [
            instance("web", 2, 0, "10.0.0.1:80"),
            instance("web", 1, 0, "10.0.0.2:80"),
            instance("api", 1, 0, "10.0.0.3:80"),
            // Not routed (starting): announced, without routes.
            instance("api", 1, 1, "10.0.0.4:80"),
        ];
        let records = announcements(&instances, &table);
        assert_eq!(
            records.keys().collect::<Vec<_>>(),
            [
                "/paz/announce/api/1/0",
                "/paz/announce/api/1/1",
                "/paz/announce/web/1/0",
                "/paz/announce/web/2/0"
            ]
        );
        assert!(records["/paz/announce/api/1/1"].routes.is_empty());
        assert_eq!(table_from(records.values()), table);
    }

    #[tokio::test]
    async fn a_follower_routes_what_is_announced_and_records_the_revision() {
        let store: Arc<dyn Store> = Arc::new(paz_core::MemoryStore::new());
        let router = Arc::new(paz_core::proxy::FakeProxy::new());
        let follower = RouteFollower::new(store.clone(), router.clone(), "r1", "127.0.0.1:1");
        let announced = follower.announced();
        let (stop, shutdown) = watch::channel(false);
        let (first, mut first_rx) = watch::channel(false);
        let task = tokio::spawn(follower.run(shutdown, first));
        first_rx.wait_for(|f| *f).await.unwrap();

        let announcer = Announcer::new(store.clone());
        let mut table = RouteTable::default();
        let mut web = Route::new("web");
        web.backends
            .insert("10.0.0.1:80".into(), Backend::default());
        table.routes.insert("web.example.com".into(), web);
        let instances = [instance("web", 1, 0, "10.0.0.1:80")];
        announcer
            .publish(&announcements(&instances, &table))
            .await
            .unwrap();
        let proxy = ClusterProxy::new(store.clone(), router.clone(), announcer.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        assert!(
            proxy
                .wait_applied(announcer.revision(), deadline)
                .await
                .is_empty(),
            "the follower records the revision it applied"
        );
        assert_eq!(router.routes().await.unwrap(), table);
        assert_eq!(announced.instances("web").len(), 1);
        // Unchanged records are not written again.
        let before = announcer.revision();
        announcer
            .publish(&announcements(&instances, &table))
            .await
            .unwrap();
        assert_eq!(announcer.revision(), before);
        // Gone instances are deleted.
        announcer.publish(&BTreeMap::new()).await.unwrap();
        proxy.wait_applied(announcer.revision(), deadline).await;
        assert!(router.routes().await.unwrap().routes.is_empty());
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(
            store.list(ROUTERS).await.unwrap().items.is_empty(),
            "the record goes at stop"
        );
    }
}
