//! The in-memory store. With a [`Persist`] hook it is also the engine of the embedded store:
//! every commit is made durable by the hook before it is applied and acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{
    Condition, EventKind, KeyValue, LeaseId, Listing, Op, Revision, Store, Txn, WatchEvent,
    WatchStream,
};
use crate::error::{Error, Result};

/// How many watch events are kept for watches that start in the past.
const HISTORY_LIMIT: usize = 10_000;
/// How many bytes (keys and values) those events may hold: large values (a spec near its
/// 256 KiB cap) would otherwise keep gigabytes of history.
const HISTORY_BYTES: usize = 16 * 1024 * 1024;
/// How many commits a live watcher may fall behind before it must re-list.
const WATCH_BUFFER: usize = 4_096;
/// How often leases are checked for expiry.
const LEASE_TICK: Duration = Duration::from_millis(50);

/// One durable change of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was set.
    Put(KeyValue),
    /// A key was deleted.
    Delete(String),
    /// A lease was granted with this time to live.
    GrantLease {
        /// The lease.
        id: LeaseId,
        /// Its time to live.
        ttl: Duration,
    },
    /// A lease ended (revoked or expired).
    EndLease(LeaseId),
}

/// Everything one commit changed, handed to [`Persist`] before it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The store revision after the commit.
    pub revision: Revision,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

/// The whole durable state, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision.
    pub revision: Revision,
    /// Every key.
    pub data: Vec<KeyValue>,
    /// Live leases and their time to live (their deadlines restart on load, as in etcd).
    pub leases: Vec<(LeaseId, Duration)>,
}

/// Makes commits durable. Called with the store locked, so commits reach it in revision
/// order; when it fails the commit is not applied and the caller gets the error.
pub trait Persist: Send + Sync + 'static {
    /// Writes a commit durably.
    fn persist(&self, record: &CommitRecord) -> Result<()>;
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct State {
    revision: Revision,
    data: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    history: VecDeque<WatchEvent>,
    /// The keys and values held by `history`, in bytes.
    history_bytes: usize,
    /// Watches must start after this revision.
    compact_revision: Revision,
}

/// What one history event holds, in bytes.
fn event_bytes(event: &WatchEvent) -> usize {
    event.kv.key.len() + event.kv.value.len()
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    persist: Option<Box<dyn Persist>>,
}

/// The in-memory [`Store`]: a `BTreeMap`, a revision counter, a bounded event history and
/// broadcast watchers. Cheap to clone (clones share the data).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store that keeps nothing on disk.
    pub fn new() -> Self {
        Self::build(Snapshot::default(), None)
    }

    /// A store that starts from `snapshot` and hands every commit to `persist` first.
    pub fn with_persistence(snapshot: Snapshot, persist: impl Persist) -> Self {
        Self::build(snapshot, Some(Box::new(persist)))
    }

    fn build(snapshot: Snapshot, persist: Option<Box<dyn Persist>>) -> Self {
        let now = Instant::now();
        let mut leases: HashMap<LeaseId, Lease> = snapshot
            .leases
            .iter()
            .map(|&(id, ttl)| {
                (
                    id,
                    Lease {
                        ttl,
                        deadline: now + ttl,
                        keys: BTreeSet::new(),
                    },
                )
            })
            .collect();
        let mut data = BTreeMap::new();
        for kv in snapshot.data {
            if let Some(lease) = kv.lease.and_then(|id| leases.get_mut(&id)) {
                lease.keys.insert(kv.key.clone());
            }
            data.insert(kv.key.clone(), kv);
        }
        let state = State {
            revision: snapshot.revision,
            data,
            leases,
            history: VecDeque::new(),
            history_bytes: 0,
            compact_revision: snapshot.revision,
        };
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            events,
            persist,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_leases(Arc::downgrade(&inner)));
        }
        MemoryStore { inner }
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.inner.lock().revision
    }

    /// Drops the watch history up to `revision` (as etcd's compaction does): watches from
    /// that revision or older then get [`Error::Compacted`].
    pub fn compact(&self, revision: Revision) {
        let mut state = self.inner.lock();
        let revision = revision.min(state.revision);
        while let Some(front) = state.history.front()
            && front.kv.mod_revision <= revision
        {
            let bytes = event_bytes(front);
            state.history_bytes -= bytes;
            state.history.pop_front();
        }
        state.compact_revision = state.compact_revision.max(revision);
    }

    /// Commits synchronously (the embedded store calls this from a blocking thread).
    pub fn commit_sync(&self, txn: Txn) -> Result<Revision> {
        self.inner.commit(txn)
    }

    /// Grants a lease synchronously.
    pub fn grant_lease_sync(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl)
    }

    /// Revokes a lease synchronously.
    pub fn revoke_lease_sync(&self, lease: LeaseId) -> Result<()> {
        self.inner.end_leases(&[lease])
    }

    /// Ends every lease whose deadline has passed, deleting its keys.
    pub fn expire_leases_sync(&self) -> Result<()> {
        let due = self.inner.due_leases();
        if due.is_empty() {
            Ok(())
        } else {
            self.inner.end_leases(&due)
        }
    }

    /// Whether this store writes through a [`Persist`] hook (whose calls may block).
    pub fn is_persistent(&self) -> bool {
        self.inner.persist.is_some()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held leaves no half-applied commit (changes are applied
        // after persistence succeeds, without fallible steps), so the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn persist(&self, record: &CommitRecord) -> Result<()> {
        match &self.persist {
            Some(p) => p.persist(record),
            None => Ok(()),
        }
    }

    fn commit(&self, txn: Txn) -> Result<Revision> {
        let mut state = self.lock();
        for (key, condition) in &txn.conditions {
            let current = state.data.get(key);
            let holds = match condition {
                Condition::Absent => current.is_none(),
                Condition::Exists => current.is_some(),
                Condition::ModRevision(rev) => current.is_some_and(|kv| kv.mod_revision == *rev),
            };
            if !holds {
                return Err(Error::Conflict { key: key.clone() });
            }
        }
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(id), ..
            } = op
                && !state.leases.contains_key(id)
            {
                return Err(Error::LeaseNotFound(*id));
            }
        }
        if txn.ops.is_empty() {
            return Ok(state.revision);
        }
        let revision = state.revision + 1;
        // Compute the effect on a view of the keys, without touching the state yet.
        let mut view: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
        for op in txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    let create_revision = match view.get(&key) {
                        Some(Some(kv)) => kv.create_revision,
                        Some(None) => revision,
                        None => state
                            .data
                            .get(&key)
                            .map_or(revision, |kv| kv.create_revision),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                        lease,
                    };
                    view.insert(key, Some(kv));
                }
                Op::Delete { key } => {
                    view.insert(key, None);
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<String> = state
                        .data
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone())
                        .chain(view.keys().filter(|k| k.starts_with(&prefix)).cloned())
                        .collect();
                    for key in keys {
                        view.insert(key, None);
                    }
                }
            }
        }
        let changes: Vec<Change> = view
            .into_iter()
            .filter_map(|(key, kv)| match kv {
                Some(kv) => Some(Change::Put(kv)),
                None if state.data.contains_key(&key) => Some(Change::Delete(key)),
                None => None,
            })
            .collect();
        if changes.is_empty() {
            return Ok(state.revision);
        }
        let record = CommitRecord { revision, changes };
        self.persist(&record)?;
        self.apply(&mut state, record);
        Ok(revision)
    }

    /// Applies a persisted commit to memory and tells the watchers.
    fn apply(&self, state: &mut State, record: CommitRecord) {
        let revision = record.revision;
        state.revision = revision;
        let mut events = Vec::new();
        for change in record.changes {
            match change {
                Change::Put(kv) => {
                    if let Some(old) = state.data.get(&kv.key)
                        && let Some(old_lease) = old.lease
                        && Some(old_lease) != kv.lease
                        && let Some(lease) = state.leases.get_mut(&old_lease)
                    {
                        lease.keys.remove(&kv.key);
                    }
                    if let Some(lease) = kv.lease.and_then(|id| state.leases.get_mut(&id)) {
                        lease.keys.insert(kv.key.clone());
                    }
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                    });
                    state.data.insert(kv.key.clone(), kv);
                }
                Change::Delete(key) => {
                    if let Some(old) = state.data.remove(&key) {
                        if let Some(lease) = old.lease.and_then(|id| state.leases.get_mut(&id)) {
                            lease.keys.remove(&key);
                        }
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key,
                                value: Vec::new(),
                                create_revision: old.create_revision,
                                mod_revision: revision,
                                lease: None,
                            },
                        });
                    }
                }
                Change::GrantLease { id, ttl } => {
                    state.leases.insert(
                        id,
                        Lease {
                            ttl,
                            deadline: Instant::now() + ttl,
                            keys: BTreeSet::new(),
                        },
                    );
                }
                Change::EndLease(id) => {
                    state.leases.remove(&id);
                }
            }
        }
        if events.is_empty() {
            return;
        }
        state.history_bytes += events.iter().map(event_bytes).sum::<usize>();
        state.history.extend(events.iter().cloned());
        while state.history.len() > HISTORY_LIMIT || state.history_bytes > HISTORY_BYTES {
            let Some(dropped) = state.history.pop_front() else {
                break;
            };
            state.history_bytes -= event_bytes(&dropped);
            state.compact_revision = dropped.kv.mod_revision;
        }
        // Never keep half of a revision: watches start at whole revisions.
        while let Some(front) = state.history.front()
            && front.kv.mod_revision <= state.compact_revision
        {
            state.history_bytes -= event_bytes(front);
            state.history.pop_front();
        }
        // No receiver is not an error: nobody watches.
        let _ = self.events.send(Arc::new(events));
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::invalid(
                "ttl",
                "INVALID_TTL",
                "a lease needs a TTL above zero",
            ));
        }
        let mut state = self.lock();
        // Lease ids take revision numbers, so they are unique and survive restarts.
        let revision = state.revision + 1;
        let record = CommitRecord {
            revision,
            changes: vec![Change::GrantLease { id: revision, ttl }],
        };
        self.persist(&record)?;
        self.apply(&mut state, record);
        Ok(revision)
    }

    fn keep_alive(&self, id: LeaseId) -> Result<()> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.leases.get_mut(&id) {
            Some(lease) if lease.deadline > now => {
                lease.deadline = now + lease.ttl;
                Ok(())
            }
            _ => Err(Error::LeaseNotFound(id)),
        }
    }

    fn end_leases(&self, ids: &[LeaseId]) -> Result<()> {
        let mut state = self.lock();
        let mut changes = Vec::new();
        for id in ids {
            let Some(lease) = state.leases.get(id) else {
                if ids.len() == 1 {
                    return Err(Error::LeaseNotFound(*id));
                }
                continue;
            };
            changes.extend(lease.keys.iter().cloned().map(Change::Delete));
            changes.push(Change::EndLease(*id));
        }
        if changes.is_empty() {
            return Ok(());
        }
        let record = CommitRecord {
            revision: state.revision + 1,
            changes,
        };
        self.persist(&record)?;
        self.apply(&mut state, record);
        Ok(())
    }

    fn due_leases(&self) -> Vec<LeaseId> {
        let state = self.lock();
        let now = Instant::now();
        state
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let state = self.lock();
        let from = if from_revision == 0 {
            state.revision + 1
        } else {
            from_revision
        };
        if from <= state.compact_revision {
            return Err(Error::Compacted {
                requested: from,
                compact_revision: state.compact_revision,
            });
        }
        let receiver = self.events.subscribe();
        let past: Vec<Result<WatchEvent>> = state
            .history
            .iter()
            .filter(|e| e.kv.mod_revision >= from && e.kv.key.starts_with(prefix))
            .cloned()
            .map(Ok)
            .collect();
        let seen = state.revision;
        let compact_revision = state.compact_revision;
        drop(state);
        let prefix = prefix.to_owned();
        let live = futures_util::stream::unfold(
            (receiver, VecDeque::<WatchEvent>::new(), false),
            move |(mut receiver, mut pending, done)| {
                let prefix = prefix.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        if let Some(event) = pending.pop_front() {
                            return Some((Ok(event), (receiver, pending, false)));
                        }
                        match receiver.recv().await {
                            Ok(batch) => pending.extend(
                                batch
                                    .iter()
                                    .filter(|e| {
                                        e.kv.mod_revision > seen
                                            && e.kv.mod_revision >= from
                                            && e.kv.key.starts_with(&prefix)
                                    })
                                    .cloned(),
                            ),
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                let error = Error::Compacted {
                                    requested: from,
                                    compact_revision,
                                };
                                return Some((Err(error), (receiver, pending, true)));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        );
        Ok(Box::pin(futures_util::StreamExt::chain(
            futures_util::stream::iter(past),
            live,
        )))
    }
}

async fn sweep_leases(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(LEASE_TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        let due = inner.due_leases();
        if due.is_empty() {
            continue;
        }
        let result = if inner.persist.is_some() {
            let inner = Arc::clone(&inner);
            tokio::task::spawn_blocking(move || inner.end_leases(&due))
                .await
                .unwrap_or_else(|e| {
                    Err(Error::store(
                        crate::PortErrorKind::Internal,
                        format!("lease expiry task failed: {e}"),
                    ))
                })
        } else {
            inner.end_leases(&due)
        };
        if let Err(error) = result {
            tracing::warn!(%error, "could not expire leases; will retry");
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.inner.lock().data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let state = self.inner.lock();
        let items = state
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Listing {
            items,
            revision: state.revision,
        })
    }

    async fn commit(&self, txn: Txn) -> Result<Revision> {
        self.inner.commit(txn)
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, from_revision)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.keep_alive(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.end_leases(&[lease])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_contract() {
        crate::contract::store::run(|| async { MemoryStore::new() }).await;
    }

    #[tokio::test]
    async fn history_is_bounded_and_old_watches_are_compacted() {
        let store = MemoryStore::new();
        for i in 0..(HISTORY_LIMIT + 10) {
            store.put("k", i.to_string().into_bytes()).await.unwrap();
        }
        let err = store
            .watch("k", 1)
            .await
            .err()
            .expect("revision 1 is compacted");
        assert!(matches!(err, Error::Compacted { .. }), "{err}");
        assert!(store.watch("k", store.revision()).await.is_ok());
    }

    /// Defect: the history kept 10,000 full values whatever their size.
    #[tokio::test]
    async fn history_is_bounded_in_bytes() {
        let store = MemoryStore::new();
        let value = vec![b'x'; 1024 * 1024];
        for _ in 0..40 {
            store.put("k", value.clone()).await.unwrap();
        }
        let held = store.inner.lock().history_bytes;
        assert!(held <= HISTORY_BYTES, "{held} bytes of history");
        let events: usize = store.inner.lock().history.iter().map(event_bytes).sum();
        assert_eq!(events, held, "the byte count follows the events");
        assert!(matches!(
            store.watch("k", 1).await.err(),
            Some(Error::Compacted { .. })
        ));
        assert!(store.watch("k", store.revision()).await.is_ok());
    }

    struct FailingPersist;
    impl Persist for FailingPersist {
        fn persist(&self, _: &CommitRecord) -> Result<()> {
            Err(Error::store(crate::PortErrorKind::Unavailable, "disk full"))
        }
    }

    #[tokio::test]
    async fn a_failed_persist_applies_nothing() {
        let store = MemoryStore::with_persistence(Snapshot::default(), FailingPersist);
        assert!(store.put("k", b"v".to_vec()).await.is_err());
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.revision(), 0);
    }
}
