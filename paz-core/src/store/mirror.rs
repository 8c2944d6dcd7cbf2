//! A copy of every key under a prefix kept by list + watch, after kube's reflector: when the
//! watch ends or reports [`Compacted`](crate::Error::Compacted), it lists again and turns the
//! difference into events, so a consumer never silently misses a change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{EventKind, KeyValue, Revision, Store, WatchEvent, WatchStream};
use crate::error::{Error, Result};

/// The keys under a prefix, followed.
///
/// ```
/// # let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// # runtime.block_on(async {
/// use std::sync::Arc;
/// use paz_core::store::{MemoryStore, Mirror, Store};
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// store.put("/app/a", b"1".to_vec()).await?;
/// let mut mirror = Mirror::new(store.clone(), "/app/").await?;
/// assert_eq!(mirror.items().len(), 1);
/// store.put("/app/b", b"2".to_vec()).await?;
/// let changes = mirror.changes().await?;
/// assert_eq!(changes[0].kv.key, "/app/b");
/// # Ok::<(), paz_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Mirror {
    store: Arc<dyn Store>,
    prefix: String,
    items: BTreeMap<String, KeyValue>,
    revision: Revision,
    stream: Option<WatchStream>,
    relists: u64,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("prefix", &self.prefix)
            .field("items", &self.items.len())
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Lists `prefix` and starts following it.
    pub async fn new(store: Arc<dyn Store>, prefix: &str) -> Result<Mirror> {
        let listing = store.list(prefix).await?;
        Ok(Mirror {
            store,
            prefix: prefix.to_owned(),
            items: listing
                .items
                .into_iter()
                .map(|kv| (kv.key.clone(), kv))
                .collect(),
            revision: listing.revision,
            stream: None,
            relists: 0,
        })
    }

    /// The keys as last seen.
    pub fn items(&self) -> &BTreeMap<String, KeyValue> {
        &self.items
    }

    /// The store revision the copy is complete up to.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// How many times it had to list again (compaction, or a watch that could not resume).
    pub fn relists(&self) -> u64 {
        self.relists
    }

    /// Waits for the next changes and applies them to the copy. After a compaction (or a
    /// watch that ended), the changes are the difference between the copy and a new listing.
    /// An error (the store unreachable) leaves the copy as it was; call again to retry.
    pub async fn changes(&mut self) -> Result<Vec<WatchEvent>> {
        loop {
            if self.stream.is_none() {
                match self.store.watch(&self.prefix, self.revision + 1).await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(Error::Compacted { .. }) => return self.relist().await,
                    Err(error) => return Err(error),
                }
            }
            let stream = self.stream.as_mut().expect("a stream was just opened");
            match stream.next().await {
                Some(Ok(first)) => {
                    let mut events = vec![first];
                    // Take what else is ready (a transaction's other keys) without waiting.
                    while let Some(Some(Ok(event))) =
                        futures_util::FutureExt::now_or_never(stream.next())
                    {
                        events.push(event);
                    }
                    for event in &events {
                        self.apply(event);
                    }
                    return Ok(events);
                }
                Some(Err(Error::Compacted { .. })) => {
                    self.stream = None;
                    return self.relist().await;
                }
                Some(Err(error)) => {
                    self.stream = None;
                    return Err(error);
                }
                None => {
                    // The store ended the watch: resume from the last revision seen.
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn apply(&mut self, event: &WatchEvent) {
        self.revision = self.revision.max(event.kv.mod_revision);
        match event.kind {
            EventKind::Put => {
                self.items.insert(event.kv.key.clone(), event.kv.clone());
            }
            EventKind::Delete => {
                self.items.remove(&event.kv.key);
            }
        }
    }

    /// Lists again and returns the difference as events (puts for new and changed keys,
    /// deletes, at the listing's revision, for keys that are gone).
    async fn relist(&mut self) -> Result<Vec<WatchEvent>> {
        let listing = self.store.list(&self.prefix).await?;
        self.relists += 1;
        let fresh: BTreeMap<String, KeyValue> = listing
            .items
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let mut events = Vec::new();
        for (key, old) in &self.items {
            if !fresh.contains_key(key) {
                events.push(WatchEvent {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        value: Vec::new(),
                        mod_revision: listing.revision,
                        lease: None,
                        ..old.clone()
                    },
                });
            }
        }
        for (key, kv) in &fresh {
            if self.items.get(key) != Some(kv) {
                events.push(WatchEvent {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                });
            }
        }
        self.items = fresh;
        self.revision = listing.revision;
        tracing::info!(prefix = %self.prefix, revision = self.revision, changes = events.len(), "listed again after the watch fell behind");
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_compacted_watch_is_listed_again_and_the_difference_is_reported() {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = memory.clone();
        store.put("/m/keep", b"1".to_vec()).await.unwrap();
        store.put("/m/change", b"1".to_vec()).await.unwrap();
        store.put("/m/gone", b"1".to_vec()).await.unwrap();
        let mut mirror = Mirror::new(store.clone(), "/m/").await.unwrap();
        store.put("/m/change", b"2".to_vec()).await.unwrap();
        store.delete("/m/gone").await.unwrap();
        let last = store.put("/m/new", b"1".to_vec()).await.unwrap();
        memory.compact(last);
        let events = mirror.changes().await.unwrap();
        let mut seen: Vec<(EventKind, &str)> =
            events.iter().map(|e| (e.kind, e.kv.key.as_str())).collect();
        seen.sort_by_key(|(_, key)| *key);
        assert_eq!(
            seen,
            [
                (EventKind::Put, "/m/change"),
                (EventKind::Delete, "/m/gone"),
                (EventKind::Put, "/m/new")
            ]
        );
        assert_eq!(mirror.relists(), 1);
        assert_eq!(
            mirror.items().keys().collect::<Vec<_>>(),
            ["/m/change", "/m/keep", "/m/new"]
        );
        assert_eq!(mirror.items()["/m/change"].value, b"2");
    }
}
