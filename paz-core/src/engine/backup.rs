//! Export and import of the whole state (see [`crate::backup`] for the format).

use std::collections::BTreeMap;

use super::{CLUSTER, DEPLOYMENTS, Paz, RELEASES, SERVICES};
use crate::backup::{
    FORMAT, ImportOptions, ImportReport, PREFIX, StateExport, StateKey, VERSION, is_leased_key,
};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::model::{Deployment, Release};
use crate::service::Service;
use crate::store::{Condition, KeyValue, Op, Txn};

/// One write of an import: the key, its condition (what the target held when it was read)
/// and the operation.
struct Write {
    key: String,
    condition: Condition,
    op: Op,
}

impl Paz {
    /// Exports every key under `/paz/`, read at one store revision, in key order, except
    /// the keys attached to a lease (hosts…: a running server re-creates them). Sealed
    /// values stay sealed; tokens stay hashed.
    pub async fn export_state(&self) -> Result<StateExport> {
        let listing = self.store.list(PREFIX).await?;
        let cluster = listing
            .items
            .iter()
            .find(|kv| kv.key == CLUSTER && kv.lease.is_none())
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let keys = listing
            .items
            .iter()
            .filter(|kv| kv.lease.is_none())
            .map(|kv| StateKey::new(kv.key.clone(), &kv.value))
            .collect();
        Ok(StateExport {
            format: FORMAT.to_owned(),
            version: VERSION,
            paz_version: env!("CARGO_PKG_VERSION").to_owned(),
            exported_at: jiff::Timestamp::now(),
            revision: listing.revision,
            cluster,
            keys,
        })
    }

    /// Imports an export into this engine's store, all or nothing.
    ///
    /// Refused before anything is written (422 unless said otherwise): another format or a
    /// newer version (`UNKNOWN_FORMAT`, `FORMAT_TOO_NEW`); a key outside `/paz/`
    /// (`INVALID_KEY`), a repeated key (`DUPLICATE_KEY`), a key under a leased prefix such
    /// as `/paz/hosts/` (`LEASED_KEY`), a bad value or a service, release or deployment
    /// record that does not decode (`INVALID_RECORD`); a target that holds state (any
    /// non-leased key under `/paz/` but the cluster id) without `replace`
    /// ([`Error::StoreNotEmpty`], 409); sealed values that the engine's secret key does not
    /// open ([`Error::SecretKeyMismatch`], 409; not checked when the engine has no key).
    ///
    /// The write: every imported key is put, and with `replace` every other non-leased key
    /// of the target is deleted (its cluster id is kept unless the export has one); leased
    /// keys are left alone. Each write is guarded by what the target held when it was read
    /// (its mod revision, or absence), so a concurrent change fails the import with
    /// [`Error::Conflict`] instead of being lost.
    ///
    /// All or nothing: when every write fits in one transaction
    /// ([`Store::max_txn_ops`](crate::Store::max_txn_ops)) it is one commit. Otherwise the
    /// writes go in chunks of at most `max_txn_ops` operations, in key order; the target's
    /// previous keys are held in memory, and when a chunk fails the keys of the chunks
    /// already written (and of the failed one, unless it failed its conditions and so wrote
    /// nothing) are put back as they were — previous values restored, new keys deleted — and
    /// the chunk's error is returned. If restoring fails too, the error is
    /// [`Error::ImportIncomplete`]. A reader may see part of a chunked import while it runs.
    pub async fn import_state(
        &self,
        export: &StateExport,
        options: ImportOptions,
    ) -> Result<ImportReport> {
        export.check_format()?;
        let incoming = entries(export)?;
        let secret_key_checked = self.check_secret_key(&incoming)?;
        let listing = self.store.list(PREFIX).await?;
        let previous: BTreeMap<String, KeyValue> = listing
            .items
            .into_iter()
            .filter(|kv| kv.lease.is_none())
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let occupied = previous.keys().filter(|k| *k != CLUSTER).count();
        if occupied > 0 && !options.replace {
            return Err(Error::StoreNotEmpty { keys: occupied });
        }
        let old_cluster = previous.get(CLUSTER).map(|kv| kv.value.clone());
        let new_cluster = incoming.get(CLUSTER).cloned().or(old_cluster.clone());

        let condition = |key: &str| match previous.get(key) {
            Some(kv) => Condition::ModRevision(kv.mod_revision),
            None => Condition::Absent,
        };
        let mut writes: Vec<Write> = incoming
            .iter()
            .map(|(key, value)| Write {
                key: key.clone(),
                condition: condition(key),
                op: Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: None,
                },
            })
            .collect();
        let deletes: Vec<&String> = previous
            .keys()
            .filter(|k| !incoming.contains_key(*k) && *k != CLUSTER)
            .collect();
        writes.extend(deletes.iter().map(|key| Write {
            key: (*key).clone(),
            condition: condition(key),
            op: Op::Delete {
                key: (*key).clone(),
            },
        }));
        writes.sort_by(|a, b| a.key.cmp(&b.key));

        let limit = self.store.max_txn_ops().max(1);
        let (transactions, revision) = self.write_all_or_nothing(writes, &previous, limit).await?;
        // Tell subscribers (event streams, the UI's index) what changed.
        let service = |key: &String| key.strip_prefix(SERVICES).map(str::to_owned);
        let mut events: Vec<EventKind> = deletes
            .iter()
            .filter_map(|key| service(key))
            .map(|service| EventKind::ServiceDeleted { service })
            .collect();
        events.extend(incoming.keys().filter_map(|key| {
            let name = service(key)?;
            Some(if previous.contains_key(key) {
                EventKind::ServiceUpdated { service: name }
            } else {
                EventKind::ServiceCreated { service: name }
            })
        }));
        self.emit(revision, events);
        let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok(ImportReport {
            keys: incoming.len(),
            services: incoming.keys().filter(|k| k.starts_with(SERVICES)).count(),
            deleted: deletes.len(),
            transactions,
            cluster_changed: new_cluster != old_cluster,
            cluster: text(new_cluster),
            secret_key_checked,
        })
    }

    /// Commits `writes` as one transaction when they fit in `limit` operations, else in
    /// chunks, restoring `previous` when a chunk fails. Returns how many commits it took and
    /// the revision of the last.
    async fn write_all_or_nothing(
        &self,
        writes: Vec<Write>,
        previous: &BTreeMap<String, KeyValue>,
        limit: usize,
    ) -> Result<(usize, u64)> {
        let mut written: Vec<&str> = Vec::new();
        let mut revision = 0;
        let chunks: Vec<&[Write]> = writes.chunks(limit).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let txn = Txn {
                conditions: chunk
                    .iter()
                    .map(|w| (w.key.clone(), w.condition.clone()))
                    .collect(),
                ops: chunk.iter().map(|w| w.op.clone()).collect(),
            };
            match self.store.commit(txn).await {
                Ok(committed) => {
                    revision = committed;
                    written.extend(chunk.iter().map(|w| w.key.as_str()));
                }
                Err(cause) => {
                    // A failed condition wrote nothing; any other failure may have written
                    // the chunk (a timeout after the store applied it).
                    if !matches!(cause, Error::Conflict { .. }) {
                        written.extend(chunk.iter().map(|w| w.key.as_str()));
                    }
                    tracing::warn!(%cause, chunk = i, keys = written.len(), "import failed part-way; restoring the previous state");
                    return match self.restore(&written, previous, limit).await {
                        Ok(()) => Err(cause),
                        Err(restore) => Err(Error::ImportIncomplete {
                            cause: Box::new(cause),
                            restore: Box::new(restore),
                        }),
                    };
                }
            }
        }
        Ok((chunks.len(), revision))
    }

    /// Puts `keys` back as `previous` held them (deleting those it did not hold).
    async fn restore(
        &self,
        keys: &[&str],
        previous: &BTreeMap<String, KeyValue>,
        limit: usize,
    ) -> Result<()> {
        for chunk in keys.chunks(limit) {
            let ops = chunk
                .iter()
                .map(|key| match previous.get(*key) {
                    Some(kv) => Op::Put {
                        key: kv.key.clone(),
                        value: kv.value.clone(),
                        lease: None,
                    },
                    None => Op::Delete {
                        key: (*key).to_owned(),
                    },
                })
                .collect();
            self.store
                .commit(Txn {
                    conditions: Vec::new(),
                    ops,
                })
                .await?;
        }
        Ok(())
    }

    /// Whether one of the sealed values of `entries` opened with the engine's key: `false`
    /// when there is none or the engine has no key; [`Error::SecretKeyMismatch`] when none
    /// opens.
    fn check_secret_key(&self, entries: &BTreeMap<String, Vec<u8>>) -> Result<bool> {
        let Some(cipher) = self.secrets.as_deref() else {
            return Ok(false);
        };
        let probes = super::secrets::sealed_probes(entries)
            .into_iter()
            .chain(super::hooks::sealed_probes(entries))
            .chain(super::certs::sealed_probes(entries));
        let mut failed = None;
        for (key, context, sealed) in probes {
            match cipher.open(&context, &sealed) {
                Ok(_) => return Ok(true),
                Err(e) => {
                    failed.get_or_insert((key, e.0));
                }
            }
        }
        match failed {
            Some((key, message)) => Err(Error::SecretKeyMismatch { key, message }),
            None => Ok(false),
        }
    }
}

/// The keys and values of an export, checked: under `/paz/`, not leased, not repeated,
/// values decodable, and the service, release and deployment records readable.
fn entries(export: &StateExport) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut entries = BTreeMap::new();
    for (i, entry) in export.keys.iter().enumerate() {
        let field = || format!("keys[{i}]");
        let key = &entry.key;
        if !key.starts_with(PREFIX) || key.len() == PREFIX.len() {
            return Err(Error::invalid(
                field(),
                "INVALID_KEY",
                format!("key {key:?} is not under {PREFIX}"),
            ));
        }
        if is_leased_key(key) {
            return Err(Error::invalid(
                field(),
                "LEASED_KEY",
                format!(
                    "key {key:?} lives on a lease (a running server re-creates it) and cannot be imported"
                ),
            ));
        }
        let bytes = entry
            .bytes()
            .map_err(|m| Error::invalid(field(), "INVALID_RECORD", format!("key {key:?}: {m}")))?;
        check_record(key, &bytes)
            .map_err(|m| Error::invalid(field(), "INVALID_RECORD", format!("key {key:?}: {m}")))?;
        if entries.insert(key.clone(), bytes).is_some() {
            return Err(Error::invalid(
                field(),
                "DUPLICATE_KEY",
                format!("key {key:?} appears more than once"),
            ));
        }
    }
    Ok(entries)
}

/// Whether a service, release or deployment record decodes (other keys are not looked at).
fn check_record(key: &str, bytes: &[u8]) -> std::result::Result<(), String> {
    let decoded = if key.starts_with(SERVICES) {
        serde_json::from_slice::<Service>(bytes).map(drop)
    } else if key.starts_with(RELEASES) {
        serde_json::from_slice::<Release>(bytes).map(drop)
    } else if key.starts_with(DEPLOYMENTS) {
        serde_json::from_slice::<Deployment>(bytes).map(drop)
    } else {
        Ok(())
    };
    decoded.map_err(|e| format!("not a valid record: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::super::fixtures::web;
    use super::*;
    use crate::EngineConfig;
    use crate::model::{Host, HostStatus, Trigger, TriggerKind};
    use crate::secret::{CipherError, SecretCipher};
    use crate::service::ServiceSpec;
    use crate::store::{LeaseId, Listing, MemoryStore, Revision, Store, WatchStream};
    use crate::token::{Scope, TokenInfo, TokenRecord};

    /// A toy cipher with a one-byte key: the key and context, then the bytes reversed.
    struct Toy(u8);
    impl SecretCipher for Toy {
        fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
            let mut out = format!("{}|{context}|", self.0).into_bytes();
            out.extend(plaintext.iter().rev());
            Ok(out)
        }
        fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
            let prefix = format!("{}|{context}|", self.0);
            let rest = sealed
                .strip_prefix(prefix.as_bytes())
                .ok_or_else(|| CipherError("wrong key or context".into()))?;
            Ok(rest.iter().rev().copied().collect())
        }
    }

    /// A store that limits transactions to `max_ops` (checked once `enforce` is on) and
    /// fails its `fail_at`th commit (counting from 1; 0: never).
    struct Limited {
        inner: MemoryStore,
        max_ops: usize,
        enforce: std::sync::atomic::AtomicBool,
        commits: AtomicUsize,
        fail_at: AtomicUsize,
    }

    impl Limited {
        fn new(inner: MemoryStore, max_ops: usize) -> Arc<Self> {
            Arc::new(Limited {
                inner,
                max_ops,
                enforce: false.into(),
                commits: AtomicUsize::new(0),
                fail_at: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl Store for Limited {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Listing> {
            self.inner.list(prefix).await
        }
        async fn commit(&self, txn: Txn) -> Result<Revision> {
            assert!(
                !self.enforce.load(Ordering::SeqCst)
                    || txn.ops.len() <= self.max_ops && txn.conditions.len() <= self.max_ops,
                "a transaction of {} ops and {} conditions",
                txn.ops.len(),
                txn.conditions.len()
            );
            let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.fail_at.load(Ordering::SeqCst) {
                return Err(Error::store(crate::PortErrorKind::Unavailable, "boom"));
            }
            self.inner.commit(txn).await
        }
        async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
            self.inner.watch(prefix, from).await
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
        fn max_txn_ops(&self) -> usize {
            self.max_ops
        }
    }

    fn engine(store: Arc<dyn Store>, key: u8) -> Paz {
        Paz::new(store, EngineConfig::default()).with_secrets(Arc::new(Toy(key)))
    }

    /// Every key, value and lease under `/paz/`.
    async fn everything(store: &dyn Store) -> Vec<(String, Vec<u8>, bool)> {
        let listing = store.list("/paz/").await.unwrap();
        listing
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.lease.is_some()))
            .collect()
    }

    /// The non-leased keys and values under `/paz/`.
    async fn state(store: &dyn Store) -> Vec<(String, Vec<u8>)> {
        everything(store)
            .await
            .into_iter()
            .filter(|(_, _, leased)| !leased)
            .map(|(k, v, _)| (k, v))
            .collect()
    }

    fn host(id: &str) -> Host {
        Host {
            id: id.into(),
            name: id.into(),
            address: "127.0.0.1".into(),
            labels: Default::default(),
            status: HostStatus::Ready,
            version: None,
        }
    }

    /// A source with two services (several releases, a secret, a deploy history), a token,
    /// a cluster id and a registered host.
    async fn source() -> (Paz, MemoryStore) {
        let store = MemoryStore::new();
        let paz = engine(Arc::new(store.clone()), 1);
        paz.claim_cluster_id("source-1").await.unwrap();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let deploy = || Trigger::new(TriggerKind::Deploy);
        paz.deploy("web", Some("demo:v2".into()), deploy())
            .await
            .unwrap();
        paz.set_secret("web", "DB_PASSWORD", "hunter2", deploy())
            .await
            .unwrap();
        paz.create_service(ServiceSpec::new("api", "api:v1"), Trigger::create())
            .await
            .unwrap();
        paz.create_token(TokenRecord {
            info: TokenInfo {
                id: "0123456789ab".into(),
                name: "ci".into(),
                scope: Scope::Deploy,
                services: vec!["web".into()],
                created_at: jiff::Timestamp::now(),
                expires_at: None,
            },
            hash: "ab".repeat(32),
        })
        .await
        .unwrap();
        paz.register_host(&host("h1"), Duration::from_secs(60))
            .await
            .unwrap();
        (paz, store)
    }

    #[tokio::test]
    async fn an_export_imports_into_an_empty_store_exactly() {
        let (paz, store) = source().await;
        let export = paz.export_state().await.unwrap();
        assert_eq!((export.format.as_str(), export.version), ("paz-state", 1));
        assert_eq!(export.cluster.as_deref(), Some("source-1"));
        assert!(
            export
                .keys
                .iter()
                .all(|k| !k.key.starts_with("/paz/hosts/")),
            "leased keys are not exported"
        );
        assert!(
            everything(&store)
                .await
                .iter()
                .any(|(_, _, leased)| *leased),
            "the source has a leased key"
        );
        let keys: Vec<&str> = export.keys.iter().map(|k| k.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "in key order");
        // Records are readable JSON; the cluster id (not JSON) is base64.
        let service = export
            .keys
            .iter()
            .find(|k| k.key == "/paz/services/web")
            .unwrap();
        assert!(
            service
                .value
                .as_ref()
                .unwrap()
                .get()
                .contains("\"demo:v2\"")
        );
        let cluster = export.keys.iter().find(|k| k.key == CLUSTER).unwrap();
        assert!(cluster.base64.is_some());

        // Through the document's text, as a file would carry it.
        let text = serde_json::to_string_pretty(&export).unwrap();
        assert!(!text.contains("hunter2"), "secrets stay sealed");
        let read = StateExport::from_slice(text.as_bytes()).unwrap();
        let target = MemoryStore::new();
        let imported = engine(Arc::new(target.clone()), 1);
        let mut events = imported.subscribe();
        let report = imported
            .import_state(&read, ImportOptions::default())
            .await
            .unwrap();
        assert_eq!(state(&target).await, state(&store).await);
        let mut created = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let EventKind::ServiceCreated { service } = event.kind {
                created.push(service);
            }
        }
        assert_eq!(created, ["api", "web"], "subscribers hear of the import");
        assert_eq!(report.keys, export.keys.len());
        assert_eq!(report.services, 2);
        assert_eq!(report.transactions, 1);
        assert!(report.cluster_changed);
        assert_eq!(report.cluster.as_deref(), Some("source-1"));
        assert!(report.secret_key_checked);
        // The imported engine works on what it imported.
        let release = imported.release("web", 3).await.unwrap();
        assert_eq!(
            imported.instance_env(&release).await.unwrap()["DB_PASSWORD"],
            "hunter2"
        );
        assert_eq!(imported.tokens().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn other_formats_newer_versions_and_bad_keys_are_refused() {
        let (paz, _) = source().await;
        let export = paz.export_state().await.unwrap();
        let target = MemoryStore::new();
        let imported = engine(Arc::new(target.clone()), 1);
        let refused = |export: StateExport| {
            let imported = imported.clone();
            async move {
                imported
                    .import_state(&export, ImportOptions { replace: true })
                    .await
                    .unwrap_err()
            }
        };
        let mut newer = export.clone();
        newer.version = 2;
        let err = refused(newer).await;
        assert_eq!(err.code(), "FORMAT_TOO_NEW");
        assert!(err.to_string().contains("newer"), "{err}");
        let mut other = export.clone();
        other.format = "tarball".into();
        assert_eq!(refused(other).await.code(), "UNKNOWN_FORMAT");
        let mut outside = export.clone();
        outside.keys.push(StateKey::new("/etc/passwd", b"x"));
        let err = refused(outside).await;
        assert_eq!(err.code(), "INVALID_KEY");
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
        let mut twice = export.clone();
        twice.keys.push(export.keys[0].clone());
        let err = refused(twice).await;
        assert_eq!(err.code(), "DUPLICATE_KEY");
        assert!(err.to_string().contains(&export.keys[0].key), "{err}");
        let mut leased = export.clone();
        leased.keys.push(StateKey::new("/paz/hosts/h9", b"{}"));
        let err = refused(leased).await;
        assert_eq!(err.code(), "LEASED_KEY");
        assert!(err.to_string().contains("/paz/hosts/h9"), "{err}");
        let mut broken = export.clone();
        broken
            .keys
            .push(StateKey::new("/paz/services/zzz", br#"{"nope":1}"#));
        let err = refused(broken).await;
        assert_eq!(err.code(), "INVALID_RECORD");
        assert!(state(&target).await.is_empty(), "nothing was written");
    }

    #[tokio::test]
    async fn a_store_with_state_is_refused_unless_replaced() {
        let (paz, store) = source().await;
        let export = paz.export_state().await.unwrap();
        let target = MemoryStore::new();
        let other = engine(Arc::new(target.clone()), 1);
        other.claim_cluster_id("target-1").await.unwrap();
        other
            .create_service(ServiceSpec::new("old", "old:v1"), Trigger::create())
            .await
            .unwrap();
        other
            .register_host(&host("t1"), Duration::from_secs(60))
            .await
            .unwrap();
        let before = everything(&target).await;
        let err = other
            .import_state(&export, ImportOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "STORE_NOT_EMPTY");
        assert!(err.to_string().contains("--replace"), "{err}");
        assert_eq!(everything(&target).await, before, "left unchanged");

        let report = other
            .import_state(&export, ImportOptions { replace: true })
            .await
            .unwrap();
        assert_eq!(state(&target).await, state(&store).await);
        assert!(report.deleted > 0);
        assert!(report.cluster_changed);
        assert!(
            everything(&target)
                .await
                .iter()
                .any(|(k, _, leased)| k == "/paz/hosts/t1" && *leased),
            "the target's leased keys are left alone"
        );
        assert_eq!(
            other.service("old").await.unwrap_err().code(),
            "SERVICE_NOT_FOUND"
        );
        // Importing the same again changes nothing, and the cluster stays.
        let again = other
            .import_state(&export, ImportOptions { replace: true })
            .await
            .unwrap();
        assert!(!again.cluster_changed);
        assert_eq!(again.deleted, 0);
        assert_eq!(state(&target).await, state(&store).await);
    }

    #[tokio::test]
    async fn a_chunked_import_that_fails_part_way_leaves_the_target_as_it_was() {
        let (paz, store) = source().await;
        let export = paz.export_state().await.unwrap();
        // A target with state of its own, replaced in chunks of 3 operations.
        let memory = MemoryStore::new();
        let limited = Limited::new(memory.clone(), 3);
        let target = engine(limited.clone(), 1);
        target.claim_cluster_id("target-1").await.unwrap();
        for name in ["old", "older"] {
            target
                .create_service(ServiceSpec::new(name, "old:v1"), Trigger::create())
                .await
                .unwrap();
        }
        target
            .register_host(&host("t1"), Duration::from_secs(60))
            .await
            .unwrap();
        let before = everything(&memory).await;
        let commits = limited.commits.load(Ordering::SeqCst);
        // The fourth chunk fails (unavailable: it may have been written, so it is undone too).
        limited.fail_at.store(commits + 4, Ordering::SeqCst);
        limited.enforce.store(true, Ordering::SeqCst);
        let err = target
            .import_state(&export, ImportOptions { replace: true })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "STORE_UNAVAILABLE", "{err}");
        assert_eq!(everything(&memory).await, before, "exactly as before");

        // Without the failure it goes through in chunks.
        limited.fail_at.store(0, Ordering::SeqCst);
        let report = target
            .import_state(&export, ImportOptions { replace: true })
            .await
            .unwrap();
        assert!(report.transactions > 1, "{report:?}");
        assert_eq!(state(&memory).await, state(&store).await);
    }

    /// A store where another writer changes `key` right after each listing.
    struct Racing {
        inner: MemoryStore,
        key: &'static str,
    }

    #[async_trait::async_trait]
    impl Store for Racing {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Listing> {
            let listing = self.inner.list(prefix).await?;
            if let Some(kv) = self.inner.get(self.key).await? {
                self.inner.put(self.key, kv.value).await?;
            }
            Ok(listing)
        }
        async fn commit(&self, txn: Txn) -> Result<Revision> {
            self.inner.commit(txn).await
        }
        async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
            self.inner.watch(prefix, from).await
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
    }

    #[tokio::test]
    async fn a_change_made_while_importing_fails_the_import_and_is_kept() {
        let (paz, _) = source().await;
        let export = paz.export_state().await.unwrap();
        let memory = MemoryStore::new();
        engine(Arc::new(memory.clone()), 1)
            .create_service(ServiceSpec::new("old", "old:v1"), Trigger::create())
            .await
            .unwrap();
        let racing = Racing {
            inner: memory.clone(),
            key: "/paz/services/old",
        };
        let target = engine(Arc::new(racing), 1);
        let before = state(&memory).await;
        let err = target
            .import_state(&export, ImportOptions { replace: true })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "CONFLICT", "{err}");
        assert_eq!(state(&memory).await, before, "nothing written");
    }

    #[tokio::test]
    async fn another_secret_key_is_refused_before_anything_is_written() {
        let (paz, _) = source().await;
        let export = paz.export_state().await.unwrap();
        let target = MemoryStore::new();
        let wrong = engine(Arc::new(target.clone()), 2);
        let err = wrong
            .import_state(&export, ImportOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SECRET_KEY_MISMATCH");
        assert!(err.to_string().contains("secret-key"), "{err}");
        assert!(everything(&target).await.is_empty(), "nothing was written");
        // Without a key it cannot be checked: imported, and reported unchecked.
        let keyless = Paz::new(Arc::new(target.clone()), EngineConfig::default());
        let report = keyless
            .import_state(&export, ImportOptions::default())
            .await
            .unwrap();
        assert!(!report.secret_key_checked);
    }
}
