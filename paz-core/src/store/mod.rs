//! The `Store` port: a key-value store with revisions, compare-and-swap, watches and leases
//! (the etcd v3 model), and the in-memory implementation every other store builds on.

mod memory;
mod mirror;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;

use crate::error::Result;

pub use memory::{Change, CommitRecord, MemoryStore, Persist, Snapshot};
pub use mirror::Mirror;

/// A store revision: a global counter that grows by one per committed transaction.
pub type Revision = u64;
/// The id of a lease.
pub type LeaseId = u64;

/// A stored key and its value with revision bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty for a delete event).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: Revision,
    /// The revision that last changed the key (for a delete event, the delete's revision).
    pub mod_revision: Revision,
    /// The lease the key is attached to; the key is deleted when the lease ends.
    pub lease: Option<LeaseId>,
}

/// The keys under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys in key order.
    pub items: Vec<KeyValue>,
    /// The store revision the listing was read at; watch from `revision + 1` to follow it.
    pub revision: Revision,
}

/// A condition on one key, checked atomically when a transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key must not exist.
    Absent,
    /// The key must exist.
    Exists,
    /// The key must exist with this mod revision (compare-and-swap).
    ModRevision(Revision),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key, optionally attached to a lease.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Delete a key (no effect when it is missing).
    Delete {
        /// The key.
        key: String,
    },
    /// Delete every key under a prefix.
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

/// An atomic transaction: if every condition holds, all writes apply at one new revision;
/// otherwise nothing is written and the commit fails with [`crate::Error::Conflict`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub conditions: Vec<(String, Condition)>,
    /// Writes, applied in order.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Txn::default()
    }

    /// Adds a condition on `key`.
    pub fn when(mut self, key: impl Into<String>, condition: Condition) -> Self {
        self.conditions.push((key.into(), condition));
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        });
        self
    }

    /// Adds a put attached to a lease.
    pub fn put_with_lease(
        mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Adds a delete of every key under `prefix`.
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(Op::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }
}

/// Whether a watch event is a put or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: the key, empty value, the delete revision).
    pub kv: KeyValue,
}

/// A store's health: for a clustered store (etcd), its members and their leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreHealth {
    /// It answers, and (clustered) a leader is known and a majority of members answers.
    pub healthy: bool,
    /// The name of the members' leader, for a clustered store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Every member, for a clustered store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<StoreMember>,
    /// Why the store could not be asked, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One member of a clustered store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreMember {
    /// Its name.
    pub name: String,
    /// Where clients reach it.
    pub endpoint: String,
    /// It answered and knows a leader.
    pub healthy: bool,
    /// The version it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The events of a watch, in revision order. An `Err(Compacted)` item means the watcher fell
/// behind: re-list and watch again from the listing's revision + 1.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// A key-value store with revisions, compare-and-swap, watches and leases.
///
/// Implementations: [`MemoryStore`] (tests, and the engine of the embedded store),
/// `paz_store::EmbeddedStore` (redb, the default) and etcd (`paz-etcd`).
/// Every implementation must pass the contract suite `paz_core::contract::store` (feature `contract`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads every key under `prefix`, in key order, at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Commits a transaction atomically and returns its revision.
    /// A failed condition gives [`crate::Error::Conflict`] and writes nothing.
    async fn commit(&self, txn: Txn) -> Result<Revision>;

    /// Streams every change under `prefix` from `from_revision` on (history first, then
    /// live). `0` means "from now". A compacted revision gives [`crate::Error::Compacted`].
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream>;

    /// Grants a lease that ends `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease; [`crate::Error::LeaseNotFound`] when it already ended.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends a lease now and deletes its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// How the store is doing, for `paz status` (a local store: healthy, no members).
    async fn health(&self) -> StoreHealth {
        StoreHealth {
            healthy: true,
            ..StoreHealth::default()
        }
    }

    /// The most operations (conditions, and writes) one [`Txn`] may hold; bigger writes
    /// must be split (see [`crate::Paz::import_state`]). Unlimited by default; etcd's
    /// default is 128 (`--max-txn-ops`).
    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }

    /// Sets a key unconditionally.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        self.commit(Txn::new().put(key, value)).await
    }

    /// Deletes a key unconditionally.
    async fn delete(&self, key: &str) -> Result<Revision> {
        self.commit(Txn::new().delete(key)).await
    }
}
