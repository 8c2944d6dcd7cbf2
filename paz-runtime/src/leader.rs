//! Leader election on the store: several `paz-server` replicas share one store (etcd); each
//! registers itself, one holds the leader key and runs the runtime, the others serve the API.
//!
//! The leader key ([`LEADER_KEY`]) is created only if absent, on a lease of
//! [`Election::ttl`]; the replica that created it leads for as long as that key exists with
//! the revision its creation got. Everything the leader's runtime writes goes through a
//! [`FencedStore`]: each transaction also requires the leader key at that revision, so a
//! deposed leader's writes fail in etcd itself, never racing the next leader's. Its scheduler
//! goes through a [`FencedScheduler`], which refuses to start or stop anything once the term
//! is lost.
//!
//! A term is lost (and the runtime stopped at once) when etcd says the lease is gone, when the
//! leader key changes, or when no renewal has succeeded for three quarters of the TTL: the
//! leader gives up before etcd can expire its lease (which happens a whole TTL after the last
//! renewal etcd received), so two leaders never act at once. A follower watches the key and
//! campaigns the moment it is deleted; failover takes at most the TTL after a leader dies
//! (and no time at all after a clean stop, which revokes the lease).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use paz_core::scheduler::{EventStream, InstanceSpec, LogOptions, LogStream, Scheduler};
use paz_core::store::{
    Condition, KeyValue, LeaseId, Listing, Revision, Store, StoreHealth, Txn, WatchStream,
};
use paz_core::{Error, Host, Instance, PortErrorKind, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::hosts::stopped_during;

/// The key the leader holds.
pub const LEADER_KEY: &str = "/paz/leader";
/// Every replica's record, on a lease: `/paz/replicas/<id>`.
pub const REPLICAS: &str = "/paz/replicas/";
/// How long a leader's lease lives without renewal (failover takes at most this long).
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(5);
/// How long a replica record lives without renewal.
pub const REPLICA_TTL: Duration = Duration::from_secs(10);

pub use paz_core::cluster::{Replica, ReplicaRole};

/// A record for this process: `<host name>-<random>`.
pub fn this_process(role: ReplicaRole, api: Option<String>, router: Option<String>) -> Replica {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let host = crate::hosts::local_host("", Default::default()).name;
    Replica {
        id: format!("{host}-{:06x}", hasher.finish() as u32 & 0xff_ffff),
        role,
        api,
        router,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: jiff::Timestamp::now(),
    }
}

/// The replicas registered now, and the leader.
pub async fn replicas(store: &dyn Store) -> Result<(Vec<Replica>, Option<Replica>)> {
    let listing = store.list(REPLICAS).await?;
    let replicas = listing
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    let leader = match store.get(LEADER_KEY).await? {
        Some(kv) => serde_json::from_slice(&kv.value).ok(),
        None => None,
    };
    Ok((replicas, leader))
}

/// Keeps `replica` registered under [`REPLICAS`] until `shutdown`, then removes it.
pub async fn keep_replica_registered(
    store: Arc<dyn Store>,
    replica: Replica,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = format!("{REPLICAS}{}", replica.id);
    let value = serde_json::to_vec(&replica).expect("a replica record serializes");
    let mut lease = None;
    loop {
        let result = match lease {
            Some(id) => store.keep_alive(id).await,
            None => match store.grant_lease(REPLICA_TTL).await {
                Ok(id) => store
                    .commit(Txn::new().put_with_lease(key.clone(), value.clone(), id))
                    .await
                    .map(|_| lease = Some(id)),
                Err(error) => Err(error),
            },
        };
        if let Err(error) = result {
            tracing::debug!(%error, "replica registration lapsed; registering again");
            lease = None;
        }
        let wait = if lease.is_some() {
            REPLICA_TTL / 3
        } else {
            Duration::from_secs(1)
        };
        if stopped_during(wait, &mut shutdown).await {
            if let Some(id) = lease {
                let _ = store.revoke_lease(id).await;
            }
            return;
        }
    }
}

/// Campaigns for the leader key.
pub struct Election {
    store: Arc<dyn Store>,
    replica: Replica,
    ttl: Duration,
}

impl Election {
    /// An election for `replica` on `store`, with a leader lease of `ttl`.
    pub fn new(store: Arc<dyn Store>, replica: Replica, ttl: Duration) -> Self {
        Election {
            store,
            replica,
            ttl,
        }
    }

    /// The leader lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Waits until this replica leads; `None` once `shutdown` turns true first.
    pub async fn campaign(&self, shutdown: &mut watch::Receiver<bool>) -> Option<Term> {
        loop {
            if *shutdown.borrow() {
                return None;
            }
            match self.try_to_lead().await {
                Ok(Ok(term)) => return Some(term),
                Ok(Err(held)) => {
                    // Someone leads: wait for its key to go (or re-check after a TTL).
                    tokio::select! {
                        () = self.until_gone(held) => {}
                        () = tokio::time::sleep(self.ttl) => {}
                        _ = shutdown.wait_for(|s| *s) => return None,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot campaign for leadership; trying again");
                    if stopped_during(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Takes the key if it is free: the term, or the revision of the key someone holds.
    async fn try_to_lead(&self) -> Result<std::result::Result<Term, Revision>> {
        if let Some(held) = self.store.get(LEADER_KEY).await? {
            return Ok(Err(held.mod_revision));
        }
        let lease = self.store.grant_lease(self.ttl).await?;
        let value = serde_json::to_vec(&self.replica).expect("a replica record serializes");
        let claim = Txn::new()
            .when(LEADER_KEY, Condition::Absent)
            .put_with_lease(LEADER_KEY, value, lease);
        match self.store.commit(claim).await {
            Ok(revision) => {
                tracing::info!(replica = %self.replica.id, revision, ttl = ?self.ttl, "leading");
                Ok(Ok(Term::start(
                    self.store.clone(),
                    lease,
                    revision,
                    self.ttl,
                )))
            }
            Err(error) => {
                let _ = self.store.revoke_lease(lease).await;
                match error {
                    Error::Conflict { .. } => {
                        let held = self.store.get(LEADER_KEY).await?;
                        Ok(Err(held.map_or(0, |kv| kv.mod_revision)))
                    }
                    error => Err(error),
                }
            }
        }
    }

    /// Returns once the leader key is deleted (or changes hands), or the watch fails.
    async fn until_gone(&self, held: Revision) {
        let Ok(mut events) = self.store.watch(LEADER_KEY, held + 1).await else {
            return;
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if event.kv.key == LEADER_KEY => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// One term of leadership: lost when [`Term::lost`] turns true.
pub struct Term {
    store: Arc<dyn Store>,
    lease: LeaseId,
    revision: Revision,
    lost: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Term {
    fn start(store: Arc<dyn Store>, lease: LeaseId, revision: Revision, ttl: Duration) -> Term {
        let (lost, _) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(renew(store.clone(), lease, ttl, lost.clone())),
            tokio::spawn(watch_key(store.clone(), revision, lost.clone())),
        ];
        Term {
            store,
            lease,
            revision,
            lost,
            tasks,
        }
    }

    /// The leader key's revision in this term.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Turns true when the term is lost.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.subscribe()
    }

    /// The store, guarded by this term: writes fail once another replica leads.
    pub fn fenced_store(&self) -> Arc<dyn Store> {
        Arc::new(FencedStore {
            inner: self.store.clone(),
            revision: self.revision,
            lost: self.lost.clone(),
        })
    }

    /// `scheduler`, refusing to start or stop instances once the term is lost.
    pub fn fenced_scheduler(&self, scheduler: Arc<dyn Scheduler>) -> Arc<dyn Scheduler> {
        Arc::new(FencedScheduler {
            inner: scheduler,
            lost: self.lost.subscribe(),
        })
    }

    /// Gives up leadership now (at a clean stop): another replica leads at once.
    pub async fn resign(self) {
        let _ = self.lost.send(true);
        if let Err(error) = self.store.revoke_lease(self.lease).await {
            tracing::warn!(%error, "cannot revoke the leader lease; it expires on its own");
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.lost.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Renews the leader lease every quarter TTL; the term is lost when etcd says the lease is
/// gone or no renewal succeeded for three quarters of the TTL.
async fn renew(store: Arc<dyn Store>, lease: LeaseId, ttl: Duration, lost: watch::Sender<bool>) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 4).await;
        let sent = Instant::now();
        match tokio::time::timeout(ttl / 4, store.keep_alive(lease)).await {
            Ok(Ok(())) => renewed = sent,
            Ok(Err(Error::LeaseNotFound(_))) => {
                tracing::warn!("the leader lease is gone: no longer leading");
                let _ = lost.send(true);
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot renew the leader lease"),
            Err(_) => tracing::warn!("renewing the leader lease timed out"),
        }
        if renewed.elapsed() >= ttl * 3 / 4 {
            tracing::warn!(
                since = ?renewed.elapsed(),
                "the leader lease was not renewed in time: no longer leading"
            );
            let _ = lost.send(true);
            return;
        }
    }
}

/// Loses the term when the leader key changes or goes.
async fn watch_key(store: Arc<dyn Store>, revision: Revision, lost: watch::Sender<bool>) {
    loop {
        match store.watch(LEADER_KEY, revision + 1).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) if event.kv.key == LEADER_KEY => {
                            tracing::warn!("the leader key changed: no longer leading");
                            let _ = lost.send(true);
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "cannot watch the leader key yet"),
        }
        // The store is unreachable: `renew` decides about the term meanwhile.
        tokio::time::sleep(Duration::from_millis(500)).await;
        match store.get(LEADER_KEY).await {
            Ok(Some(kv)) if kv.mod_revision == revision => {}
            Ok(_) => {
                let _ = lost.send(true);
                return;
            }
            Err(_) => {}
        }
    }
}

fn not_leader() -> Error {
    Error::store(
        PortErrorKind::Unavailable,
        "this replica is no longer the leader; the new leader carries on",
    )
}

/// A store whose transactions hold only while this replica leads: each one also requires
/// the leader key at the term's revision.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    revision: Revision,
    lost: watch::Sender<bool>,
}

#[async_trait]
impl Store for FencedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.inner.list(prefix).await
    }

    async fn commit(&self, mut txn: Txn) -> Result<Revision> {
        if *self.lost.borrow() {
            return Err(not_leader());
        }
        // First, so a failed transaction names the leader key when it is the cause.
        txn.conditions.insert(
            0,
            (LEADER_KEY.to_owned(), Condition::ModRevision(self.revision)),
        );
        match self.inner.commit(txn).await {
            Err(Error::Conflict { key }) if key == LEADER_KEY => {
                tracing::warn!("a write found another leader: no longer leading");
                let _ = self.lost.send(true);
                Err(not_leader())
            }
            other => other,
        }
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, from_revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }

    async fn health(&self) -> StoreHealth {
        self.inner.health().await
    }

    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
}

/// A scheduler that refuses to start, stop or remove instances once the term is lost.
pub struct FencedScheduler {
    inner: Arc<dyn Scheduler>,
    lost: watch::Receiver<bool>,
}

impl FencedScheduler {
    fn check(&self) -> Result<()> {
        if *self.lost.borrow() {
            return Err(Error::scheduler(
                PortErrorKind::Unavailable,
                "this replica is no longer the leader; the new leader carries on",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Scheduler for FencedScheduler {
    async fn hosts(&self) -> Result<Vec<Host>> {
        self.inner.hosts().await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.check()?;
        self.inner.start(spec).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        self.check()?;
        self.inner.stop(id, grace).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.check()?;
        self.inner.remove(id).await
    }

    async fn list(&self, service: Option<&str>) -> Result<Vec<Instance>> {
        self.inner.list(service).await
    }

    async fn inspect(&self, id: &str) -> Result<Option<Instance>> {
        self.inner.inspect(id).await
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        self.inner.logs(id, options).await
    }

    async fn events(&self) -> Result<EventStream> {
        self.inner.events().await
    }

    async fn resolve_image(&self, image: &str) -> Result<Option<String>> {
        self.inner.resolve_image(image).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::MemoryStore;

    fn replica(id: &str) -> Replica {
        Replica {
            id: id.into(),
            role: ReplicaRole::Server,
            api: None,
            router: None,
            version: "test".into(),
            started_at: jiff::Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn one_leads_the_other_takes_over_when_it_resigns_and_old_writes_fail() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (_stop, mut shutdown) = watch::channel(false);
        let a = Election::new(store.clone(), replica("a"), Duration::from_secs(2));
        let b = Election::new(store.clone(), replica("b"), Duration::from_secs(2));
        let term_a = a.campaign(&mut shutdown.clone()).await.unwrap();
        let fenced_a = term_a.fenced_store();
        fenced_a.put("/paz/x", b"a".to_vec()).await.unwrap();
        let (_, leader) = replicas(store.as_ref()).await.unwrap();
        assert_eq!(leader.unwrap().id, "a");

        let b_task = tokio::spawn(async move { b.campaign(&mut shutdown).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!b_task.is_finished(), "b must wait while a leads");
        let mut lost_a = term_a.lost();
        let revision_a = term_a.revision();
        // A deposed leader: its fenced store refuses even before it notices by itself.
        store
            .commit(
                Txn::new()
                    .when(LEADER_KEY, Condition::ModRevision(revision_a))
                    .delete(LEADER_KEY),
            )
            .await
            .unwrap();
        let term_b = tokio::time::timeout(Duration::from_secs(5), b_task)
            .await
            .expect("b takes over once the key is gone")
            .unwrap()
            .unwrap();
        assert!(term_b.revision() > revision_a);
        let refused = fenced_a.put("/paz/x", b"stale".to_vec()).await.unwrap_err();
        assert_eq!(refused.code(), "STORE_UNAVAILABLE", "{refused}");
        tokio::time::timeout(Duration::from_secs(2), lost_a.wait_for(|l| *l))
            .await
            .expect("a knows it lost")
            .unwrap();
        assert_eq!(store.get("/paz/x").await.unwrap().unwrap().value, b"a");
        term_b
            .fenced_store()
            .put("/paz/x", b"b".to_vec())
            .await
            .unwrap();
        drop(term_a);
        term_b.resign().await;
        assert!(store.get(LEADER_KEY).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_gives_up_before_its_lease_can_expire() {
        let memory = MemoryStore::new();
        let store: Arc<dyn Store> = Arc::new(memory);
        let (_stop, mut shutdown) = watch::channel(false);
        let election = Election::new(store.clone(), replica("a"), Duration::from_secs(4));
        let term = election.campaign(&mut shutdown).await.unwrap();
        let mut lost = term.lost();
        // The lease is revoked behind its back (as etcd expiring it would): the next
        // renewal finds it gone.
        let lease = store.get(LEADER_KEY).await.unwrap().unwrap().lease.unwrap();
        store.revoke_lease(lease).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), lost.wait_for(|l| *l))
            .await
            .expect("a lost lease ends the term within a renewal period")
            .unwrap();
        let scheduler = term.fenced_scheduler(Arc::new(paz_core::scheduler::FakeScheduler::new()));
        let refused = scheduler.stop("x", Duration::ZERO).await.unwrap_err();
        assert!(
            refused.to_string().contains("no longer the leader"),
            "{refused}"
        );
    }
}
