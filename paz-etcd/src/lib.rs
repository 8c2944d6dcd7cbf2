//! The [`Store`] on etcd v3 ([etcd-client]): the cluster store, as the original Paz had.
//!
//! Paz's store model *is* etcd's (revisions, compare-and-swap transactions, watches from a
//! revision, leases), so each call is one etcd RPC:
//!
//! - `get`/`list` are linearizable range reads; a listing carries the header revision.
//! - `commit` is one etcd `Txn`: `Absent`/`Exists` compare the key's version with 0,
//!   `ModRevision` its mod revision. When a condition fails, the same round trip reads the
//!   condition keys, so the [`Conflict`](paz_core::Error::Conflict) names the key that failed.
//! - `watch` survives disconnects: a task owns the etcd watch stream and, when it breaks (an
//!   etcd restart, a member lost, a network cut found by the HTTP/2 keep-alive), watches again
//!   from the revision after the last event it delivered, so no event is lost or repeated.
//!   Progress notifications advance that revision while the prefix is quiet. A start revision
//!   etcd has compacted away ends the stream with [`Compacted`](paz_core::Error::Compacted):
//!   the caller re-lists and diffs (see `paz_core::store::follow`), never silently missing a
//!   change.
//! - `keep_alive` opens a keep-alive stream, sends one renewal and reads its answer: a TTL of 0
//!   is a lost lease ([`LeaseNotFound`](paz_core::Error::LeaseNotFound)). No stream outlives
//!   the call, so none has to be reconnected.
//!
//! Every unary call has a deadline ([`EtcdConfig::request_timeout`]), connecting has one
//! ([`EtcdConfig::connect_timeout`]), and requests carry `require_leader`, so a member cut
//! off from its quorum answers with an error instead of hanging: the API turns these into
//! `503 STORE_UNAVAILABLE` within the deadline.
//!
//! [etcd-client]: https://docs.rs/etcd-client
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use paz_core::Store;
//! use paz_etcd::{EtcdConfig, EtcdStore};
//!
//! let store = EtcdStore::connect(EtcdConfig::parse("etcd://127.0.0.1:2379")?).await?;
//! store.put("/paz/hello", b"world".to_vec()).await?;
//! # Ok(()) }
//! ```

mod config;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse,
};
use paz_core::store::{
    Condition, KeyValue, LeaseId, Listing, Op, Revision, Store, StoreHealth, StoreMember, Txn,
    WatchStream,
};
use paz_core::{PortErrorKind, Result};

pub use config::{EtcdConfig, EtcdTls};

/// What can go wrong setting up the etcd store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL or a setting is not usable.
    #[error("invalid etcd setting: {0}")]
    InvalidConfig(String),
    /// A TLS file cannot be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No endpoint answered.
    #[error("cannot reach etcd at {endpoints}: {message}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the client said.
        message: String,
    },
}

impl From<Error> for paz_core::Error {
    fn from(error: Error) -> Self {
        let kind = match error {
            Error::Unreachable { .. } => PortErrorKind::Unavailable,
            _ => PortErrorKind::Internal,
        };
        paz_core::Error::store(kind, error.to_string())
    }
}

/// The most operations etcd accepts in one transaction by default (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Responses as large as a listing can be (a listing of every release of every service);
/// tonic's default of 4 MiB is too small for a large cluster.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// A [`Store`] on an etcd v3 cluster. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    /// One client per endpoint: requests go to the current one and move to the next when a
    /// member is unreachable (tonic's balanced channel keeps sending to a dead member).
    clients: Arc<Vec<Client>>,
    current: Arc<AtomicUsize>,
    config: EtcdConfig,
}

/// Why a call failed.
pub(crate) enum CallError {
    /// etcd (or the connection) said no.
    Etcd(etcd_client::Error),
    /// No answer within the request timeout.
    Timeout,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects and checks that the cluster answers (within the connect timeout plus one
    /// request timeout).
    pub async fn connect(config: EtcdConfig) -> std::result::Result<Self, Error> {
        let options = config.connect_options()?;
        let unreachable = |message: String| Error::Unreachable {
            endpoints: config.endpoints.join(","),
            message,
        };
        if config.endpoints.is_empty() {
            return Err(Error::InvalidConfig("no etcd endpoint given".into()));
        }
        let deadline = config.connect_timeout + config.request_timeout;
        // Without auth a client connects lazily; with auth it logs in at once, so a member
        // down at start is left out (the others serve) rather than failing the start.
        let mut clients = Vec::new();
        let mut failures = Vec::new();
        for endpoint in &config.endpoints {
            let connect = Client::connect([endpoint.as_str()], Some(options.clone()));
            match tokio::time::timeout(deadline, connect).await {
                Ok(Ok(client)) => clients.push(client),
                Ok(Err(error)) => failures.push(format!("{endpoint}: {error}")),
                Err(_) => failures.push(format!("{endpoint}: no answer within {deadline:?}")),
            }
        }
        if clients.is_empty() {
            return Err(unreachable(failures.join("; ")));
        }
        for failure in &failures {
            tracing::warn!(%failure, "an etcd member is left out");
        }
        let store = EtcdStore {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
            config: config.clone(),
        };
        // The clients connect lazily: one read proves a member with a leader answers.
        let started = tokio::time::Instant::now();
        let probe_key = store.full_key("/");
        loop {
            let probe = store
                .call(|client| {
                    let key = probe_key.clone();
                    async move {
                        let mut kv = client.kv_client();
                        kv.get(key, Some(GetOptions::new().with_count_only())).await
                    }
                })
                .await;
            match probe {
                Ok(_) => break,
                // Refused credentials or permissions will not change: say so at once.
                Err(CallError::Etcd(e)) if kind_of(&e) == PortErrorKind::Internal => {
                    return Err(unreachable(e.to_string()));
                }
                Err(_) if started.elapsed() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(CallError::Timeout) => {
                    return Err(unreachable(format!("no answer within {deadline:?}")));
                }
                Err(CallError::Etcd(e)) => return Err(unreachable(e.to_string())),
            }
        }
        tracing::info!(endpoints = %config.endpoints.join(","), namespace = %config.namespace, "connected to etcd");
        Ok(store)
    }

    /// Runs `call` on the current member's client. A request that cannot have been
    /// processed (the member refused the connection, or has no leader) is tried on the next
    /// member; everything within one request timeout. A member that does not answer in time
    /// fails the request (it may have been applied) and the next request goes to the next
    /// member.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> std::result::Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let count = self.clients.len();
        let first = self.current.load(Ordering::Relaxed) % count;
        let mut last = None;
        for attempt in 0..count {
            let i = (first + attempt) % count;
            match tokio::time::timeout_at(deadline, call(self.clients[i].clone())).await {
                Ok(Ok(answer)) => {
                    if attempt > 0 {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Ok(Err(error)) if not_processed(&error) => {
                    tracing::debug!(endpoint = %self.config.endpoints[i], %error, "etcd member unusable; trying the next");
                    last = Some(error);
                }
                Ok(Err(error)) => return Err(CallError::Etcd(error)),
                Err(_) => {
                    self.current.store((i + 1) % count, Ordering::Relaxed);
                    return Err(CallError::Timeout);
                }
            }
        }
        self.current.store((first + 1) % count, Ordering::Relaxed);
        Err(CallError::Etcd(
            last.expect("at least one endpoint was tried"),
        ))
    }

    /// [`EtcdStore::call`] with errors as the port's.
    async fn timed<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call(call).await.map_err(|e| self.call_error(what, e))
    }

    pub(crate) fn call_error(&self, what: &str, error: CallError) -> paz_core::Error {
        match error {
            CallError::Etcd(error) => store_error(what, error),
            CallError::Timeout => paz_core::Error::store(
                PortErrorKind::Timeout,
                format!(
                    "etcd {what}: no answer within {:?}",
                    self.config.request_timeout
                ),
            ),
        }
    }

    /// The settings it was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.namespace)
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        key_value(&self.config.namespace, kv)
    }

    /// Compacts etcd's history up to `revision` (maintenance and tests): watches from an
    /// older revision then get [`Compacted`](paz_core::Error::Compacted).
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        self.timed("compact", |client| async move {
            kv(&client).compact(revision as i64, None).await
        })
        .await
        .map(|_| ())
    }

    async fn member_status(&self, member: &etcd_client::Member) -> MemberStatus {
        let endpoint = member.client_urls().first().cloned().unwrap_or_default();
        let mut status = MemberStatus {
            id: member.id(),
            name: member.name().to_owned(),
            endpoint: endpoint.clone(),
            healthy: false,
            leader: None,
            version: None,
            error: None,
        };
        let answer = async {
            let options = self
                .config
                .connect_options()
                .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
            let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
            client.status().await
        };
        match tokio::time::timeout(self.config.request_timeout, answer).await {
            Ok(Ok(answer)) => {
                status.healthy = answer.leader() != 0;
                status.leader = (answer.leader() != 0).then_some(answer.leader());
                status.version = Some(answer.version().to_owned());
            }
            Ok(Err(error)) => status.error = Some(error.to_string()),
            Err(_) => status.error = Some("no answer".into()),
        }
        status
    }
}

struct MemberStatus {
    id: u64,
    name: String,
    endpoint: String,
    healthy: bool,
    leader: Option<u64>,
    version: Option<String>,
    error: Option<String>,
}

fn key_value(namespace: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key()).map_err(|_| paz_core::Error::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        message: "the key is not UTF-8".into(),
    })?;
    Ok(KeyValue {
        key: key.strip_prefix(namespace).unwrap_or(key).to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as Revision,
        mod_revision: kv.mod_revision() as Revision,
        lease: (kv.lease() != 0).then_some(kv.lease() as LeaseId),
    })
}

/// Maps an etcd-client error to the store error of the port: connection problems and a
/// missing leader are `Unavailable` (the API answers 503), deadlines `Timeout`.
pub(crate) fn store_error(what: &str, error: etcd_client::Error) -> paz_core::Error {
    paz_core::Error::store(kind_of(&error), format!("etcd {what}: {error}"))
}

/// How an etcd-client error counts: connection problems and a missing leader are
/// `Unavailable`, deadlines `Timeout`, the rest (refused credentials, permissions, invalid
/// requests) `Internal`.
fn kind_of(error: &etcd_client::Error) -> PortErrorKind {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Aborted => PortErrorKind::Unavailable,
            Code::DeadlineExceeded => PortErrorKind::Timeout,
            // etcd's "no leader" and "request timed out" come as Unknown/Unavailable, and so
            // does a connection that broke under a request ("transport error": a member
            // killed while it was being asked).
            Code::Unknown
                if status.message().contains("leader")
                    || status.message().contains("timed out")
                    || status.message().contains("transport error") =>
            {
                PortErrorKind::Unavailable
            }
            _ => PortErrorKind::Internal,
        },
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::EndpointError(_) => {
            PortErrorKind::Unavailable
        }
        _ => PortErrorKind::Internal,
    }
}

/// The client for KV calls, with room for large listings.
fn kv(client: &Client) -> etcd_client::KvClient {
    client.kv_client().max_decoding_message_size(MAX_RESPONSE)
}

/// Whether a failed request cannot have been processed, so another member may take it: the
/// connection was refused or never made, or the member has no leader (`require_leader`).
fn not_processed(error: &etcd_client::Error) -> bool {
    let text = match error {
        etcd_client::Error::GRpcStatus(status) => {
            format!(
                "{} {:?}",
                status.message(),
                std::error::Error::source(status)
            )
        }
        etcd_client::Error::TransportError(error) => format!("{error} {error:?}"),
        _ => return false,
    };
    text.contains("connect error")
        || text.contains("Connection refused")
        || text.contains("no leader")
}

fn lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = self.full_key(key);
        let answer = self
            .timed("get", |client| {
                let key = key.clone();
                async move { kv(&client).get(key, None).await }
            })
            .await?;
        answer
            .kvs()
            .first()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = self.full_key(prefix);
        let answer = self
            .timed("list", |client| {
                let prefix = prefix.clone();
                async move {
                    kv(&client)
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision()) as Revision;
        let items = answer
            .kvs()
            .iter()
            .map(|kv| self.key_value(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(Listing { items, revision })
    }

    async fn commit(&self, txn: Txn) -> Result<Revision> {
        let compares: Vec<Compare> = txn
            .conditions
            .iter()
            .map(|(key, condition)| {
                let key = self.full_key(key);
                match condition {
                    Condition::Absent => Compare::version(key, CompareOp::Equal, 0),
                    Condition::Exists => Compare::version(key, CompareOp::Greater, 0),
                    Condition::ModRevision(revision) => {
                        Compare::mod_revision(key, CompareOp::Equal, *revision as i64)
                    }
                }
            })
            .collect();
        let leases: Vec<LeaseId> = txn
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Put { lease, .. } => *lease,
                _ => None,
            })
            .collect();
        let ops: Vec<TxnOp> = etcd_ops(&txn.ops)
            .into_iter()
            .map(|op| match op {
                EtcdOp::Put { key, value, lease } => {
                    let options = lease.map(|id| PutOptions::new().with_lease(id as i64));
                    TxnOp::put(self.full_key(&key), value, options)
                }
                EtcdOp::Delete { key } => TxnOp::delete(self.full_key(&key), None),
                EtcdOp::DeleteRange { from, to } => {
                    let end = match to {
                        RangeEnd::Before(key) => self.full_key(&key).into_bytes(),
                        RangeEnd::EndOf(prefix) => prefix_end(self.full_key(&prefix).as_bytes()),
                    };
                    TxnOp::delete(
                        self.full_key(&from),
                        Some(DeleteOptions::new().with_range(end)),
                    )
                }
            })
            .collect();
        if ops.len() > MAX_TXN_OPS || txn.conditions.len() > MAX_TXN_OPS {
            return Err(paz_core::Error::store(
                PortErrorKind::Internal,
                format!(
                    "a transaction of {} writes or conditions is over etcd's limit of {MAX_TXN_OPS}",
                    ops.len().max(txn.conditions.len())
                ),
            ));
        }
        // When a condition fails, read the condition keys in the same round trip to say which.
        let reads: Vec<TxnOp> = txn
            .conditions
            .iter()
            .map(|(key, _)| TxnOp::get(self.full_key(key), None))
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(reads);
        let answer = match self
            .call(|client| {
                let request = request.clone();
                async move { kv(&client).txn(request).await }
            })
            .await
        {
            Ok(answer) => answer,
            Err(CallError::Etcd(error)) if lease_not_found(&error) => {
                return Err(paz_core::Error::LeaseNotFound(
                    leases.first().copied().unwrap_or(0),
                ));
            }
            Err(CallError::Timeout) => {
                return Err(paz_core::Error::store(
                    PortErrorKind::Timeout,
                    format!(
                        "etcd commit: no answer within {:?}; the write may or may not have happened",
                        self.config.request_timeout
                    ),
                ));
            }
            Err(error) => return Err(self.call_error("commit", error)),
        };
        if answer.succeeded() {
            return Ok(answer.header().map_or(0, |h| h.revision()) as Revision);
        }
        let failed = txn
            .conditions
            .iter()
            .zip(answer.op_responses())
            .find(|((_, condition), response)| {
                let current = match response {
                    TxnOpResponse::Get(get) => get.kvs().first(),
                    _ => None,
                };
                !holds(condition, current)
            })
            .map(|((key, _), _)| key.clone())
            .or_else(|| txn.conditions.first().map(|(key, _)| key.clone()))
            .unwrap_or_default();
        Err(paz_core::Error::Conflict { key: failed })
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        watch::start(self, prefix, from_revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        // etcd's TTLs are whole seconds (and at least its minimum, about 1.5 × the election
        // timeout): round up.
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let answer = self
            .timed("lease grant", |client| async move {
                client.lease_client().grant(seconds, None).await
            })
            .await?;
        Ok(answer.id() as LeaseId)
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<()> {
        // The keeper sends one renewal and reads a positive TTL; dropping it ends the stream.
        let renewed = self
            .call(|client| async move { client.lease_client().keep_alive(id as i64).await })
            .await;
        match renewed {
            Ok(_) => Ok(()),
            Err(CallError::Etcd(error)) if lease_not_found(&error) => {
                Err(paz_core::Error::LeaseNotFound(id))
            }
            Err(error) => Err(self.call_error("lease keep-alive", error)),
        }
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        let revoked = self
            .call(|client| async move { client.lease_client().revoke(id as i64).await })
            .await;
        match revoked {
            Ok(_) => Ok(()),
            Err(CallError::Etcd(error)) if lease_not_found(&error) => {
                Err(paz_core::Error::LeaseNotFound(id))
            }
            Err(error) => Err(self.call_error("lease revoke", error)),
        }
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }

    /// One `Put` RPC rather than a transaction (about a tenth faster; see BENCHMARKS.md).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let key = self.full_key(key);
        let answer = self
            .timed("put", |client| {
                let (key, value) = (key.clone(), value.clone());
                async move { kv(&client).put(key, value, None).await }
            })
            .await?;
        Ok(answer.header().map_or(0, |h| h.revision()) as Revision)
    }

    /// One `DeleteRange` RPC rather than a transaction.
    async fn delete(&self, key: &str) -> Result<Revision> {
        let key = self.full_key(key);
        let answer = self
            .timed("delete", |client| {
                let key = key.clone();
                async move { kv(&client).delete(key, None).await }
            })
            .await?;
        Ok(answer.header().map_or(0, |h| h.revision()) as Revision)
    }

    /// The cluster as etcd sees it: its members (each asked directly), their health and the
    /// raft leader.
    async fn health(&self) -> StoreHealth {
        let listed = self
            .timed("member list", |client| async move {
                client.cluster_client().member_list().await
            })
            .await;
        let members = match listed {
            Ok(list) => list.members().to_vec(),
            Err(error) => {
                return StoreHealth {
                    healthy: false,
                    error: Some(error.to_string()),
                    ..StoreHealth::default()
                };
            }
        };
        let mut statuses = Vec::new();
        for member in &members {
            statuses.push(self.member_status(member).await);
        }
        let leader = statuses
            .iter()
            .find_map(|m| m.leader)
            .and_then(|id| statuses.iter().find(|m| m.id == id).map(|m| m.name.clone()));
        let healthy_members = statuses.iter().filter(|m| m.healthy).count();
        StoreHealth {
            healthy: leader.is_some() && healthy_members * 2 > statuses.len(),
            leader,
            members: statuses
                .into_iter()
                .map(|m| StoreMember {
                    name: m.name,
                    endpoint: m.endpoint,
                    healthy: m.healthy,
                    version: m.version,
                    error: m.error,
                })
                .collect(),
            error: None,
        }
    }
}

/// One write as etcd takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EtcdOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    /// Keys from `from` up to `to`.
    DeleteRange {
        from: String,
        to: RangeEnd,
    },
}

/// Where a deleted range ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RangeEnd {
    /// Just before this key.
    Before(String),
    /// After every key that starts with this prefix.
    EndOf(String),
}

/// The writes of a transaction as etcd accepts them. Paz's transactions apply their writes
/// in order (a later write of a key wins, and a put after a delete of its prefix stands);
/// etcd refuses a transaction that touches one key twice ("duplicate key given in txn
/// request"), so the same effect is expressed with each key written once: the last write of
/// each key, and prefix deletes split around the keys put after them.
fn etcd_ops(ops: &[Op]) -> Vec<EtcdOp> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut puts: BTreeMap<String, (Vec<u8>, Option<LeaseId>)> = BTreeMap::new();
    let mut deletes: BTreeSet<String> = BTreeSet::new();
    let mut prefixes: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value, lease } => {
                deletes.remove(key);
                puts.insert(key.clone(), (value.clone(), *lease));
            }
            Op::Delete { key } => {
                puts.remove(key);
                deletes.insert(key.clone());
            }
            Op::DeletePrefix { prefix } => {
                puts.retain(|key, _| !key.starts_with(prefix.as_str()));
                deletes.retain(|key| !key.starts_with(prefix.as_str()));
                prefixes.push(prefix.clone());
            }
        }
    }
    // A prefix inside another is covered by it.
    prefixes.sort();
    prefixes.dedup();
    let outer: Vec<String> = prefixes
        .iter()
        .filter(|p| {
            !prefixes
                .iter()
                .any(|q| q != *p && p.starts_with(q.as_str()))
        })
        .cloned()
        .collect();
    let mut result = Vec::new();
    for prefix in &outer {
        // Delete the prefix's range except the keys put after the delete.
        let mut from = prefix.clone();
        for key in puts.keys().filter(|k| k.starts_with(prefix.as_str())) {
            if *key > from {
                result.push(EtcdOp::DeleteRange {
                    from: from.clone(),
                    to: RangeEnd::Before(key.clone()),
                });
            }
            // The next range starts right after `key`.
            from = format!("{key}\0");
        }
        result.push(EtcdOp::DeleteRange {
            from,
            to: RangeEnd::EndOf(prefix.clone()),
        });
    }
    // A key deleted after its prefix was (and not put again) is in the prefix's ranges.
    for key in deletes {
        if !outer.iter().any(|prefix| key.starts_with(prefix.as_str())) {
            result.push(EtcdOp::Delete { key });
        }
    }
    for (key, (value, lease)) in puts {
        result.push(EtcdOp::Put { key, value, lease });
    }
    result
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff: to the end of the key space.
    vec![0]
}

/// Whether `condition` holds for the key as it is now (`None`: missing).
fn holds(condition: &Condition, current: Option<&etcd_client::KeyValue>) -> bool {
    match (condition, current) {
        (Condition::Absent, None) => true,
        (Condition::Absent, Some(_)) => false,
        (Condition::Exists, current) => current.is_some(),
        (Condition::ModRevision(revision), Some(kv)) => kv.mod_revision() as u64 == *revision,
        (Condition::ModRevision(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn broken_connections_and_lost_leaders_are_unavailable_and_refusals_internal() {
        use etcd_client::Error as E;
        for (status, kind) in [
            (
                tonic::Status::unknown("transport error"),
                PortErrorKind::Unavailable,
            ),
            (
                tonic::Status::unknown("etcdserver: no leader"),
                PortErrorKind::Unavailable,
            ),
            (
                tonic::Status::unavailable("connection refused"),
                PortErrorKind::Unavailable,
            ),
            (
                tonic::Status::deadline_exceeded("late"),
                PortErrorKind::Timeout,
            ),
            (
                tonic::Status::unknown("something else"),
                PortErrorKind::Internal,
            ),
            (
                tonic::Status::permission_denied("no"),
                PortErrorKind::Internal,
            ),
        ] {
            let message = status.message().to_owned();
            assert_eq!(kind_of(&E::GRpcStatus(status)), kind, "{message}");
        }
    }

    /// Applies Paz's ops in order.
    fn in_order(start: &BTreeMap<String, Vec<u8>>, ops: &[Op]) -> BTreeMap<String, Vec<u8>> {
        let mut data = start.clone();
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    data.insert(key.clone(), value.clone());
                }
                Op::Delete { key } => {
                    data.remove(key);
                }
                Op::DeletePrefix { prefix } => data.retain(|k, _| !k.starts_with(prefix.as_str())),
            }
        }
        data
    }

    /// Applies etcd's ops as etcd does: all at once, each key touched at most once.
    fn as_etcd(start: &BTreeMap<String, Vec<u8>>, ops: &[EtcdOp]) -> BTreeMap<String, Vec<u8>> {
        let mut touched = BTreeSet::new();
        let mut data = start.clone();
        let universe: BTreeSet<String> = start
            .keys()
            .cloned()
            .chain(ops.iter().filter_map(|op| match op {
                EtcdOp::Put { key, .. } | EtcdOp::Delete { key } => Some(key.clone()),
                EtcdOp::DeleteRange { .. } => None,
            }))
            .collect();
        for op in ops {
            match op {
                EtcdOp::Put { key, value, .. } => {
                    assert!(touched.insert(key.clone()), "{key} written twice: {ops:?}");
                    data.insert(key.clone(), value.clone());
                }
                EtcdOp::Delete { key } => {
                    assert!(touched.insert(key.clone()), "{key} written twice: {ops:?}");
                    data.remove(key);
                }
                EtcdOp::DeleteRange { from, to } => {
                    let end = match to {
                        RangeEnd::Before(key) => key.clone().into_bytes(),
                        RangeEnd::EndOf(prefix) => prefix_end(prefix.as_bytes()),
                    };
                    for key in &universe {
                        if key.as_str() >= from.as_str() && key.as_bytes() < end.as_slice() {
                            assert!(touched.insert(key.clone()), "{key} in two writes: {ops:?}");
                            data.remove(key);
                        }
                    }
                }
            }
        }
        data
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = prop::sample::select(vec![
            "/a/", "/a/1", "/a/2", "/a/1/x", "/a/10", "/b/1", "/a", "/ab",
        ]);
        prop_oneof![
            (key.clone(), 0u8..3).prop_map(|(k, v)| Op::Put {
                key: k.to_owned(),
                value: vec![v],
                lease: None
            }),
            key.clone().prop_map(|k| Op::Delete { key: k.to_owned() }),
            prop::sample::select(vec!["/a/", "/a/1", "/", "/b/", "/a"]).prop_map(|p| {
                Op::DeletePrefix {
                    prefix: p.to_owned(),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn etcd_ops_have_the_effect_of_the_ops_in_order_touching_each_key_once(
            ops in prop::collection::vec(op(), 0..12),
            start in prop::collection::btree_map(
                prop::sample::select(vec!["/a/1", "/a/2", "/a/1/x", "/a/10", "/b/1", "/a", "/ab", "/c"])
                    .prop_map(str::to_owned),
                Just(vec![9u8]),
                0..6,
            ),
        ) {
            prop_assert_eq!(as_etcd(&start, &etcd_ops(&ops)), in_order(&start, &ops));
        }
    }

    #[test]
    fn a_put_after_its_prefix_is_deleted_splits_the_range() {
        let ops = etcd_ops(&[
            Op::DeletePrefix {
                prefix: "/r/web/".into(),
            },
            Op::Put {
                key: "/r/web/1".into(),
                value: b"v".to_vec(),
                lease: None,
            },
        ]);
        assert_eq!(
            ops,
            [
                EtcdOp::DeleteRange {
                    from: "/r/web/".into(),
                    to: RangeEnd::Before("/r/web/1".into())
                },
                EtcdOp::DeleteRange {
                    from: "/r/web/1\0".into(),
                    to: RangeEnd::EndOf("/r/web/".into())
                },
                EtcdOp::Put {
                    key: "/r/web/1".into(),
                    value: b"v".to_vec(),
                    lease: None
                },
            ]
        );
        assert_eq!(prefix_end(b"/r/"), b"/r0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
    }
}
