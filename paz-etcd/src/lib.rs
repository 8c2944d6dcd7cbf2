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

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse,
};
use paz_core::store::{
    Condition, KeyValue, LeaseId, Listing, Op, Revision, Store, Txn, WatchStream,
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
    client: Client,
    config: EtcdConfig,
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
        let deadline = config.connect_timeout + config.request_timeout;
        let connect = Client::connect(config.endpoints.clone(), Some(options));
        let mut client = tokio::time::timeout(deadline, connect)
            .await
            .map_err(|_| unreachable(format!("no answer within {deadline:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        // The client connects lazily: one read proves a member with a leader answers.
        let probe = client.get("/", Some(GetOptions::new().with_count_only()));
        tokio::time::timeout(deadline, probe)
            .await
            .map_err(|_| unreachable(format!("no answer within {deadline:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        tracing::info!(endpoints = %config.endpoints.join(","), namespace = %config.namespace, "connected to etcd");
        Ok(EtcdStore { client, config })
    }

    /// The settings it was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.namespace)
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE)
    }

    /// Runs one call under the request timeout (the channel's own timeout covers unary
    /// calls once connected; this also bounds waiting for a connection).
    async fn timed<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|e| store_error(what, e)),
            Err(_) => Err(paz_core::Error::store(
                PortErrorKind::Timeout,
                format!("etcd {what}: no answer within {timeout:?}"),
            )),
        }
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        key_value(&self.config.namespace, kv)
    }

    /// Compacts etcd's history up to `revision` (maintenance and tests): watches from an
    /// older revision then get [`Compacted`](paz_core::Error::Compacted).
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.kv();
        self.timed("compact", kv.compact(revision as i64, None))
            .await
            .map(|_| ())
    }

    /// The cluster as etcd sees it: its members, their health and the raft leader.
    pub async fn health(&self) -> EtcdHealth {
        let mut cluster = self.client.cluster_client();
        let members = match self.timed("member list", cluster.member_list()).await {
            Ok(list) => list.members().to_vec(),
            Err(error) => {
                return EtcdHealth {
                    healthy: false,
                    leader: None,
                    members: Vec::new(),
                    error: Some(error.to_string()),
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
        EtcdHealth {
            healthy: leader.is_some() && healthy_members * 2 > statuses.len(),
            leader,
            members: statuses
                .into_iter()
                .map(|m| EtcdMember {
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

/// The etcd cluster's health, for `paz status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EtcdHealth {
    /// A leader is known and a majority of members answers.
    pub healthy: bool,
    /// The name of the raft leader.
    pub leader: Option<String>,
    /// Every member.
    pub members: Vec<EtcdMember>,
    /// Why the cluster could not be asked, when it could not.
    pub error: Option<String>,
}

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EtcdMember {
    /// Its name.
    pub name: String,
    /// Its first client URL.
    pub endpoint: String,
    /// It answered and knows a leader.
    pub healthy: bool,
    /// The etcd version it runs.
    pub version: Option<String>,
    /// Why it did not answer.
    pub error: Option<String>,
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
    use etcd_client::Error as E;
    use tonic::Code;
    let kind = match &error {
        E::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Aborted => PortErrorKind::Unavailable,
            Code::DeadlineExceeded => PortErrorKind::Timeout,
            // etcd's "no leader" and "request timed out" come as Unknown/Unavailable.
            Code::Unknown
                if status.message().contains("leader")
                    || status.message().contains("timed out") =>
            {
                PortErrorKind::Unavailable
            }
            _ => PortErrorKind::Internal,
        },
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::EndpointError(_) => {
            PortErrorKind::Unavailable
        }
        _ => PortErrorKind::Internal,
    };
    paz_core::Error::store(kind, format!("etcd {what}: {error}"))
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
        let mut kv = self.kv();
        let answer = self.timed("get", kv.get(self.full_key(key), None)).await?;
        answer
            .kvs()
            .first()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut kv = self.kv();
        let answer = self
            .timed(
                "list",
                kv.get(self.full_key(prefix), Some(GetOptions::new().with_prefix())),
            )
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
        if txn.ops.len() > MAX_TXN_OPS {
            return Err(paz_core::Error::store(
                PortErrorKind::Internal,
                format!(
                    "a transaction of {} writes is over etcd's limit of {MAX_TXN_OPS}",
                    txn.ops.len()
                ),
            ));
        }
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
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = lease.map(|id| PutOptions::new().with_lease(id as i64));
                    TxnOp::put(self.full_key(key), value.clone(), options)
                }
                Op::Delete { key } => TxnOp::delete(self.full_key(key), None),
                Op::DeletePrefix { prefix } => TxnOp::delete(
                    self.full_key(prefix),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            })
            .collect();
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
        let mut kv = self.kv();
        let answer = match tokio::time::timeout(self.config.request_timeout, kv.txn(request)).await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) if lease_not_found(&error) => {
                return Err(paz_core::Error::LeaseNotFound(
                    leases.first().copied().unwrap_or(0),
                ));
            }
            Ok(Err(error)) => return Err(store_error("commit", error)),
            Err(_) => {
                return Err(paz_core::Error::store(
                    PortErrorKind::Timeout,
                    format!(
                        "etcd commit: no answer within {:?}; the write may or may not have happened",
                        self.config.request_timeout
                    ),
                ));
            }
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
        let mut lease = self.client.lease_client();
        let answer = self
            .timed("lease grant", lease.grant(seconds, None))
            .await?;
        Ok(answer.id() as LeaseId)
    }

    async fn keep_alive(&self, id: LeaseId) -> Result<()> {
        let mut lease = self.client.lease_client();
        match tokio::time::timeout(self.config.request_timeout, lease.keep_alive(id as i64)).await {
            // The keeper sent one renewal and read a positive TTL; dropping it ends the stream.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) if lease_not_found(&error) => Err(paz_core::Error::LeaseNotFound(id)),
            Ok(Err(error)) => Err(store_error("lease keep-alive", error)),
            Err(_) => Err(paz_core::Error::store(
                PortErrorKind::Timeout,
                format!(
                    "etcd lease keep-alive: no answer within {:?}",
                    self.config.request_timeout
                ),
            )),
        }
    }

    async fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        let mut lease = self.client.lease_client();
        match tokio::time::timeout(self.config.request_timeout, lease.revoke(id as i64)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) if lease_not_found(&error) => Err(paz_core::Error::LeaseNotFound(id)),
            Ok(Err(error)) => Err(store_error("lease revoke", error)),
            Err(_) => Err(paz_core::Error::store(
                PortErrorKind::Timeout,
                format!(
                    "etcd lease revoke: no answer within {:?}",
                    self.config.request_timeout
                ),
            )),
        }
    }

    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }
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
