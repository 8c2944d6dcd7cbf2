//! The embedded store: Paz's default, single-machine [`Store`], durable in one redb file.
//!
//! The whole key space lives in memory (Paz's state is small: services, releases,
//! deployments) in a [`MemoryStore`], which gives the revision, compare-and-swap, watch and
//! lease semantics. Every commit is first written to redb with immediate durability (fsync)
//! and only then applied and acknowledged, so a killed process loses no acknowledged write.
//! On open, the file is loaded back into memory. Watch history does not survive a restart:
//! a watch from a revision before the restart gets [`paz_core::Error::Compacted`] and must
//! re-list, as with a compacted etcd.

mod secret_key;

pub use secret_key::SecretKey;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use paz_core::store::{
    Change, CommitRecord, KeyValue, LeaseId, Listing, MemoryStore, Persist, Revision, Snapshot,
    Store, Txn, WatchStream,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// The page cache redb may use, in bytes.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Errors of opening the embedded store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or created (or another process holds it).
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::DatabaseError,
    },
    /// Reading or writing the file failed.
    #[error("store file {path}: {message}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The store file can be read by other users of the machine, though it holds every
    /// service's environment.
    #[error(
        "the store file {path} can be read by other users (mode {mode:04o}) and holds every service's environment; restrict it with `chmod 600 {path}`"
    )]
    NotPrivate {
        /// The store file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secrets key cannot be used.
    #[error("{0}")]
    SecretKey(String),
    /// A record in the file is malformed.
    #[error("store file {path} holds a malformed record at key {key:?}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The key of the record.
        key: String,
    },
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    memory: MemoryStore,
    path: PathBuf,
}

struct RedbPersist {
    db: Database,
}

/// A redb failure at the `Store` boundary: the file cannot be written or read, so the store
/// is unavailable until the disk is fixed.
fn store_error(e: impl std::error::Error + Send + Sync + 'static) -> paz_core::Error {
    paz_core::Error::Store(
        paz_core::PortError::unavailable(format!("embedded store: {e}")).with_source(e),
    )
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(24 + kv.value.len());
    bytes.extend_from_slice(&kv.create_revision.to_le_bytes());
    bytes.extend_from_slice(&kv.mod_revision.to_le_bytes());
    bytes.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(&kv.value);
    bytes
}

fn decode(key: &str, bytes: &[u8]) -> Option<KeyValue> {
    let word = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let lease = word(2)?;
    Some(KeyValue {
        key: key.to_owned(),
        value: bytes[24..].to_vec(),
        create_revision: word(0)?,
        mod_revision: word(1)?,
        lease: (lease != 0).then_some(lease),
    })
}

impl Persist for RedbPersist {
    fn persist(&self, record: &CommitRecord) -> paz_core::Result<()> {
        let txn = self.db.begin_write().map_err(store_error)?;
        {
            let mut kv = txn.open_table(KV).map_err(store_error)?;
            let mut leases = txn.open_table(LEASES).map_err(store_error)?;
            let mut meta = txn.open_table(META).map_err(store_error)?;
            for change in &record.changes {
                match change {
                    Change::Put(entry) => {
                        kv.insert(entry.key.as_str(), encode(entry).as_slice())
                            .map_err(store_error)?;
                    }
                    Change::Delete(key) => {
                        kv.remove(key.as_str()).map_err(store_error)?;
                    }
                    Change::GrantLease { id, ttl } => {
                        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                        leases.insert(*id, ttl_ms).map_err(store_error)?;
                    }
                    Change::EndLease(id) => {
                        leases.remove(*id).map_err(store_error)?;
                    }
                }
            }
            meta.insert(REVISION, record.revision)
                .map_err(store_error)?;
        }
        txn.commit().map_err(store_error)
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path` and loads it.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), paz_store::Error> {
    /// let store = paz_store::EmbeddedStore::open("paz-data/paz.redb")?;
    /// # Ok(()) }
    /// ```
    ///
    /// The file holds every service's environment: a new one is created readable by its owner
    /// only (0600), and an existing one that others can read is refused
    /// ([`Error::NotPrivate`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = path.as_ref().to_path_buf();
        let io = |e: &dyn std::fmt::Display| Error::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                return Err(Error::NotPrivate {
                    path,
                    mode: meta.permissions().mode() & 0o7777,
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Created private before redb writes anything into it.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io(&e))?;
            }
            Err(e) => return Err(io(&e)),
        }
        // The whole state is in memory already (the store serves reads from there): redb's
        // own page cache is only for writes, and its default (up to 1 GiB) grew the
        // process by the size of every value ever written.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?;
        // Create the tables so that reads of a new file find them.
        let txn = db.begin_write().map_err(|e| io(&e))?;
        txn.open_table(KV).map_err(|e| io(&e))?;
        txn.open_table(LEASES).map_err(|e| io(&e))?;
        txn.open_table(META).map_err(|e| io(&e))?;
        txn.commit().map_err(|e| io(&e))?;

        let read = db.begin_read().map_err(|e| io(&e))?;
        let mut snapshot = Snapshot::default();
        let meta = read.open_table(META).map_err(|e| io(&e))?;
        snapshot.revision = meta
            .get(REVISION)
            .map_err(|e| io(&e))?
            .map_or(0, |v| v.value());
        let kv = read.open_table(KV).map_err(|e| io(&e))?;
        for entry in kv.iter().map_err(|e| io(&e))? {
            let (key, value) = entry.map_err(|e| io(&e))?;
            let key = key.value();
            let record = decode(key, value.value()).ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                key: key.to_owned(),
            })?;
            snapshot.data.push(record);
        }
        let leases = read.open_table(LEASES).map_err(|e| io(&e))?;
        for entry in leases.iter().map_err(|e| io(&e))? {
            let (id, ttl_ms) = entry.map_err(|e| io(&e))?;
            snapshot
                .leases
                .push((id.value(), Duration::from_millis(ttl_ms.value())));
        }
        drop((meta, kv, leases, read));
        tracing::debug!(path = %path.display(), keys = snapshot.data.len(), revision = snapshot.revision, "embedded store loaded");
        Ok(EmbeddedStore {
            memory: MemoryStore::with_persistence(snapshot, RedbPersist { db }),
            path,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.memory.revision()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&MemoryStore) -> paz_core::Result<T> + Send + 'static,
    ) -> paz_core::Result<T> {
        let memory = self.memory.clone();
        tokio::task::spawn_blocking(move || work(&memory))
            .await
            .map_err(|e| {
                paz_core::Error::store(
                    paz_core::PortErrorKind::Internal,
                    format!("store task failed: {e}"),
                )
            })?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> paz_core::Result<Option<KeyValue>> {
        self.memory.get(key).await
    }

    async fn list(&self, prefix: &str) -> paz_core::Result<Listing> {
        self.memory.list(prefix).await
    }

    async fn commit(&self, txn: Txn) -> paz_core::Result<Revision> {
        self.blocking(move |memory| memory.commit_sync(txn)).await
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> paz_core::Result<WatchStream> {
        self.memory.watch(prefix, from_revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> paz_core::Result<LeaseId> {
        self.blocking(move |memory| memory.grant_lease_sync(ttl))
            .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> paz_core::Result<()> {
        self.memory.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> paz_core::Result<()> {
        self.blocking(move |memory| memory.revoke_lease_sync(lease))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::store::Condition;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        paz_core::contract::store::run(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = dir.path().join(format!("store-{n}.redb"));
            async move { EmbeddedStore::open(path).unwrap() }
        })
        .await;
    }

    #[test]
    fn the_store_file_is_private_and_a_readable_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paz.redb");
        drop(EmbeddedStore::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a new store file is the owner's only");
        drop(EmbeddedStore::open(&path).unwrap());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = EmbeddedStore::open(&path).err().expect("refused");
        let text = err.to_string();
        assert!(
            matches!(err, Error::NotPrivate { mode: 0o644, .. }),
            "{text}"
        );
        assert!(text.contains("chmod 600"), "says how to fix it: {text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_keeps_every_acknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paz.redb");
        let (revision, lease) = {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put("/a", b"1".to_vec()).await.unwrap();
            store
                .commit(Txn::new().put("/b", b"2".to_vec()).put("/c", b"3".to_vec()))
                .await
                .unwrap();
            store.delete("/c").await.unwrap();
            let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
            let revision = store
                .commit(Txn::new().put_with_lease("/host", b"h".to_vec(), lease))
                .await
                .unwrap();
            (revision, lease)
        };
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.revision(), revision);
        let keys: Vec<_> = store
            .list("/")
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, ["/a", "/b", "/host"]);
        let a = store.get("/a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.create_revision), (&b"1"[..], 1));
        store
            .keep_alive(lease)
            .await
            .expect("leases survive a restart");
        let next = store
            .commit(
                Txn::new()
                    .when("/a", Condition::ModRevision(a.mod_revision))
                    .put("/a", b"x".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(next, revision + 1, "revisions continue after a restart");
        let compacted = store
            .watch("/", 1)
            .await
            .err()
            .expect("history before the restart is gone");
        assert_eq!(compacted.code(), "COMPACTED");
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paz.redb");
        let _first = EmbeddedStore::open(&path).unwrap();
        let error = EmbeddedStore::open(&path)
            .err()
            .expect("the file is in use");
        assert!(
            error.to_string().contains("cannot open the store"),
            "{error}"
        );
    }
}
