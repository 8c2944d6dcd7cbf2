//! Deploy hooks and their delivery log (see [`crate::hook`]): hooks are stored with their
//! secret hashed or sealed, found by id (the id is part of every hook secret), and deleted
//! with their service; every delivery a hook accepted or refused after its credential
//! matched is kept, the newest [`KEEP_DELIVERIES`] per service; the keys of deliveries seen
//! (registry event ids, CI idempotency keys) are kept for [`DELIVERY_KEY_TTL`] so that a
//! redelivery never deploys twice.

use std::time::Duration;

use super::{Paz, decode, encode, service_key};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::hook::{
    Delivery, DeliveryKey, HookInfo, HookRecord, HookSecret, HookSource, check_tag_filter,
};
use crate::secret::{from_hex, to_hex};
use crate::store::{Condition, Txn};

/// `<service>/<source>` → [`HookRecord`].
pub(super) const HOOKS: &str = "/paz/hooks/";
/// `<id>` → `<service>/<source>`.
pub(super) const HOOK_IDS: &str = "/paz/hook-ids/";
/// `<service>/<sequence, 10 digits>` → [`Delivery`].
pub(super) const DELIVERIES: &str = "/paz/deliveries/";
/// `<service>` → the last delivery sequence given out.
pub(super) const DELIVERY_SEQUENCES: &str = "/paz/delivery-seq/";
/// `<service>/<key id>` → [`DeliveryKey`].
pub(super) const DELIVERY_KEYS: &str = "/paz/delivery-keys/";

/// How many deliveries a service keeps (the newest), as it keeps
/// [`KEEP_DEPLOYMENTS`](super::KEEP_DEPLOYMENTS) deployments.
pub const KEEP_DELIVERIES: u64 = 100;
/// How long a delivery key is remembered: far longer than the CI timestamp window (so a
/// signed request can never be replayed while its timestamp is fresh) and than a registry's
/// retries of an envelope.
pub const DELIVERY_KEY_TTL: Duration = Duration::from_secs(3600);
/// The most delivery keys a service keeps (the newest): bounds a burst of deliveries.
pub const KEEP_DELIVERY_KEYS: usize = 1000;

fn hook_key(service: &str, source: HookSource) -> String {
    format!("{HOOKS}{service}/{source}")
}
fn hook_id_key(id: &str) -> String {
    format!("{HOOK_IDS}{id}")
}
fn delivery_key(service: &str, sequence: u64) -> String {
    format!("{DELIVERIES}{service}/{sequence:010}")
}
fn delivery_sequence_key(service: &str) -> String {
    format!("{DELIVERY_SEQUENCES}{service}")
}
fn delivery_key_key(service: &str, key_id: &str) -> String {
    format!("{DELIVERY_KEYS}{service}/{key_id}")
}

/// The id of a stored delivery: `<service>-d<sequence>`.
fn delivery_id(service: &str, sequence: u64) -> String {
    format!("{service}-d{sequence}")
}

/// Where a hook's sealed secret belongs: opened under another context it fails.
fn secret_context(service: &str, source: HookSource, id: &str) -> String {
    format!("paz-hook/{service}/{source}/{id}")
}

/// The sealed CI hook secrets among `entries` (key → stored bytes), each as (store key,
/// context, sealed bytes), for checking that a secret key opens them.
pub(super) fn sealed_probes(
    entries: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<(String, String, Vec<u8>)> {
    entries
        .range(HOOKS.to_owned()..)
        .take_while(|(key, _)| key.starts_with(HOOKS))
        .filter_map(|(key, bytes)| {
            let record: HookRecord = serde_json::from_slice(bytes).ok()?;
            let HookSecret::Sealed { value } = &record.secret else {
                return None;
            };
            let info = &record.info;
            Some((
                key.clone(),
                secret_context(&info.service, info.source, &info.id),
                from_hex(value)?,
            ))
        })
        .collect()
}

/// Key ids are hex digests chosen by the caller (they end up in store keys).
fn check_key_id(key_id: &str) -> Result<()> {
    if !key_id.is_empty() && key_id.len() <= 128 && key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::invalid(
            "key",
            "INVALID_KEY",
            "a delivery key id is 1 to 128 hex digits",
        ))
    }
}

impl Paz {
    /// Stores a new hook of an existing service (at most one per source). The record's
    /// `service_created_at` is set from the service, so the hook dies with this life of it.
    pub async fn create_hook(&self, mut record: HookRecord) -> Result<HookInfo> {
        let service = self.service(&record.info.service).await?;
        if let Some(tag) = &record.info.tag {
            check_tag_filter(tag).map_err(|m| Error::invalid("tag", "INVALID_TAG_FILTER", m))?;
        }
        record.service_created_at = service.created_at;
        let info = &record.info;
        let key = hook_key(&info.service, info.source);
        let txn = Txn::new()
            .when(service_key(&info.service), Condition::Exists)
            .when(key.clone(), Condition::Absent)
            .when(hook_id_key(&info.id), Condition::Absent)
            .put(key, encode(&record))
            .put(
                hook_id_key(&info.id),
                format!("{}/{}", info.service, info.source).into_bytes(),
            );
        match self.store.commit(txn).await {
            Ok(_) => Ok(record.info),
            Err(Error::Conflict { .. }) => {
                // The service went away, or it has a hook of this source already.
                self.service(&record.info.service).await?;
                Err(Error::AlreadyExists {
                    kind: "hook",
                    name: format!("{}/{}", record.info.service, record.info.source),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The hooks of a service, by source (never their secrets).
    pub async fn hooks(&self, service: &str) -> Result<Vec<HookInfo>> {
        let service = self.service(service).await?;
        let listing = self
            .store
            .list(&format!("{HOOKS}{}/", service.spec.name))
            .await?;
        let mut hooks = Vec::new();
        for kv in &listing.items {
            let record: HookRecord = decode(kv)?;
            if record.service_created_at == service.created_at {
                hooks.push(record.info);
            }
        }
        Ok(hooks)
    }

    /// The hook of `service` for `source`.
    pub async fn hook(&self, service: &str, source: HookSource) -> Result<HookRecord> {
        let current = self.service(service).await?;
        let not_found = || Error::NotFound {
            kind: "hook",
            name: format!("{service}/{source}"),
        };
        let kv = self
            .store
            .get(&hook_key(service, source))
            .await?
            .ok_or_else(not_found)?;
        let record: HookRecord = decode(&kv)?;
        if record.service_created_at != current.created_at {
            return Err(not_found());
        }
        Ok(record)
    }

    /// The live hook with this id (the id part of a hook secret), if any: its service
    /// exists and is the life it was made for.
    pub async fn hook_by_id(&self, id: &str) -> Result<Option<HookRecord>> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(place) = self.store.get(&hook_id_key(id)).await? else {
            return Ok(None);
        };
        let place = String::from_utf8_lossy(&place.value).into_owned();
        let Some((service, source)) = place
            .split_once('/')
            .and_then(|(service, source)| Some((service, HookSource::parse(source)?)))
        else {
            return Ok(None);
        };
        match self.hook(service, source).await {
            Ok(record) if record.info.id == id => Ok(Some(record)),
            Ok(_) | Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives a hook a new id and secret: the old secret stops working at once.
    pub async fn rotate_hook(
        &self,
        service: &str,
        source: HookSource,
        id: &str,
        secret: HookSecret,
    ) -> Result<HookInfo> {
        self.replace_hook(service, source, |record| {
            record.info.id = id.to_owned();
            record.info.rotated_at = Some(jiff::Timestamp::now());
            record.secret = secret.clone();
            Ok(())
        })
        .await
    }

    /// Sets a hook's tag filter (`None`: every tag).
    pub async fn set_hook_tag(
        &self,
        service: &str,
        source: HookSource,
        tag: Option<String>,
    ) -> Result<HookInfo> {
        if let Some(tag) = &tag {
            check_tag_filter(tag).map_err(|m| Error::invalid("tag", "INVALID_TAG_FILTER", m))?;
        }
        self.replace_hook(service, source, |record| {
            record.info.tag = tag.clone();
            Ok(())
        })
        .await
    }

    /// Changes a hook under compare-and-swap; moves its id entry when the id changed.
    async fn replace_hook(
        &self,
        service: &str,
        source: HookSource,
        mut change: impl FnMut(&mut HookRecord) -> Result<()>,
    ) -> Result<HookInfo> {
        let key = hook_key(service, source);
        let mut retries = super::Retries::new("hook", service);
        loop {
            let record = self.hook(service, source).await?;
            let kv = self.store.get(&key).await?.ok_or_else(|| Error::NotFound {
                kind: "hook",
                name: format!("{service}/{source}"),
            })?;
            let mut changed = record.clone();
            change(&mut changed)?;
            let mut txn = Txn::new()
                .when(key.clone(), Condition::ModRevision(kv.mod_revision))
                .put(key.clone(), encode(&changed));
            if changed.info.id != record.info.id {
                txn = txn
                    .delete(hook_id_key(&record.info.id))
                    .when(hook_id_key(&changed.info.id), Condition::Absent)
                    .put(
                        hook_id_key(&changed.info.id),
                        format!("{service}/{source}").into_bytes(),
                    );
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(changed.info),
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes a hook: its secret stops working at once.
    pub async fn delete_hook(&self, service: &str, source: HookSource) -> Result<HookInfo> {
        let record = self.hook(service, source).await?;
        let txn = Txn::new()
            .delete(hook_key(service, source))
            .delete(hook_id_key(&record.info.id));
        self.store.commit(txn).await?;
        Ok(record.info)
    }

    /// Seals a CI hook's secret (the server needs it back to check signatures).
    pub fn seal_hook_secret(
        &self,
        service: &str,
        source: HookSource,
        id: &str,
        secret: &str,
    ) -> Result<HookSecret> {
        let sealed = self
            .cipher()?
            .seal(&secret_context(service, source, id), secret.as_bytes())
            .map_err(|e| Error::SecretsUnavailable(e.to_string()))?;
        Ok(HookSecret::Sealed {
            value: to_hex(&sealed),
        })
    }

    /// Opens a hook's sealed secret; `None` for a hook whose secret is only hashed.
    pub fn open_hook_secret(&self, record: &HookRecord) -> Result<Option<Vec<u8>>> {
        let HookSecret::Sealed { value } = &record.secret else {
            return Ok(None);
        };
        let info = &record.info;
        let sealed = from_hex(value).ok_or_else(|| Error::Corrupt {
            key: hook_key(&info.service, info.source),
            message: "the sealed hook secret is not hex".into(),
        })?;
        self.cipher()?
            .open(
                &secret_context(&info.service, info.source, &info.id),
                &sealed,
            )
            .map(Some)
            .map_err(|e| Error::SecretsUnavailable(e.to_string()))
    }

    /// Stores a delivery of an existing service, giving it its id (`<service>-d<n>`); the
    /// oldest past [`KEEP_DELIVERIES`] goes in the same commit.
    pub async fn record_delivery(&self, mut delivery: Delivery) -> Result<Delivery> {
        let service = delivery.service.clone().ok_or_else(|| {
            Error::invalid(
                "service",
                "INVALID_DELIVERY",
                "a stored delivery names its service",
            )
        })?;
        let sequence_key = delivery_sequence_key(&service);
        let mut retries = super::Retries::new("delivery", &service);
        loop {
            let last = self.store.get(&sequence_key).await?;
            let (next, condition) = match &last {
                Some(kv) => (
                    String::from_utf8_lossy(&kv.value)
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                        + 1,
                    Condition::ModRevision(kv.mod_revision),
                ),
                None => (1, Condition::Absent),
            };
            delivery.id = delivery_id(&service, next);
            delivery.stored = true;
            let mut txn = Txn::new()
                .when(service_key(&service), Condition::Exists)
                .when(sequence_key.clone(), condition)
                .put(sequence_key.clone(), next.to_string().into_bytes())
                .put(delivery_key(&service, next), encode(&delivery));
            if next > KEEP_DELIVERIES {
                txn = txn.delete(delivery_key(&service, next - KEEP_DELIVERIES));
            }
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.emit(
                        revision,
                        vec![EventKind::DeliveryRecorded {
                            service: service.clone(),
                            id: delivery.id.clone(),
                            verdict: delivery.verdict,
                        }],
                    );
                    return Ok(delivery);
                }
                Err(Error::Conflict { .. }) => {
                    self.service(&service).await?;
                    retries.lost()?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets what became of a Docker Hub delivery's callback.
    pub async fn set_delivery_callback(&self, id: &str, callback: &str) -> Result<()> {
        let not_found = || Error::NotFound {
            kind: "delivery",
            name: id.to_owned(),
        };
        let (service, sequence) = id
            .rsplit_once("-d")
            .and_then(|(s, n)| Some((s, n.parse::<u64>().ok()?)))
            .ok_or_else(not_found)?;
        let key = delivery_key(service, sequence);
        let mut retries = super::Retries::new("delivery", service);
        loop {
            let kv = self.store.get(&key).await?.ok_or_else(not_found)?;
            let mut delivery: Delivery = decode(&kv)?;
            delivery.callback = Some(callback.to_owned());
            let txn = Txn::new()
                .when(key.clone(), Condition::ModRevision(kv.mod_revision))
                .put(key.clone(), encode(&delivery));
            match self.store.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(Error::Conflict { .. }) => retries.lost()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// A service's stored deliveries, oldest first.
    pub async fn deliveries(&self, service: &str) -> Result<Vec<Delivery>> {
        self.service(service).await?;
        let listing = self.store.list(&format!("{DELIVERIES}{service}/")).await?;
        listing.items.iter().map(decode).collect()
    }

    /// Claims a delivery key for `service` (`key_id`: a hex digest of the key): `None`
    /// when it is new (it is stored now), or the record of the delivery that had it first.
    /// Keys older than [`DELIVERY_KEY_TTL`], and the oldest past [`KEEP_DELIVERY_KEYS`],
    /// go in the same commit.
    pub async fn claim_delivery_key(
        &self,
        service: &str,
        key_id: &str,
        record: DeliveryKey,
    ) -> Result<Option<DeliveryKey>> {
        check_key_id(key_id)?;
        let key = delivery_key_key(service, key_id);
        let mut retries = super::Retries::new("delivery key", service);
        loop {
            if let Some(kv) = self.store.get(&key).await? {
                return Ok(Some(decode(&kv)?));
            }
            let listing = self
                .store
                .list(&format!("{DELIVERY_KEYS}{service}/"))
                .await?;
            let mut seen: Vec<(jiff::Timestamp, String)> = listing
                .items
                .iter()
                .map(|kv| {
                    let at = decode::<DeliveryKey>(kv)
                        .map(|k| k.at)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                    (at, kv.key.clone())
                })
                .collect();
            seen.sort();
            let oldest_kept = record
                .at
                .checked_sub(jiff::SignedDuration::try_from(DELIVERY_KEY_TTL).unwrap_or_default())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let over = seen.len().saturating_sub(KEEP_DELIVERY_KEYS - 1);
            let mut txn = Txn::new()
                .when(service_key(service), Condition::Exists)
                .when(key.clone(), Condition::Absent)
                .put(key.clone(), encode(&record));
            for (i, (at, old)) in seen.iter().enumerate() {
                if i < over || *at < oldest_kept {
                    txn = txn.delete(old.clone());
                }
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(None),
                Err(Error::Conflict { .. }) => {
                    self.service(service).await?;
                    retries.lost()?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets a claimed key whose delivery could not deploy (the sender may try again
    /// with it).
    pub async fn forget_delivery_key(&self, service: &str, key_id: &str) -> Result<()> {
        check_key_id(key_id)?;
        self.store
            .commit(Txn::new().delete(delivery_key_key(service, key_id)))
            .await?;
        Ok(())
    }

    /// Records which delivery and deployment a claimed key led to.
    pub async fn settle_delivery_key(
        &self,
        service: &str,
        key_id: &str,
        delivery: &str,
        deployment: Option<&str>,
    ) -> Result<()> {
        check_key_id(key_id)?;
        let key = delivery_key_key(service, key_id);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(());
        };
        let mut record: DeliveryKey = decode(&kv)?;
        record.delivery = Some(delivery.to_owned());
        record.deployment = deployment.map(str::to_owned);
        let txn = Txn::new()
            .when(key.clone(), Condition::ModRevision(kv.mod_revision))
            .put(key, encode(&record));
        match self.store.commit(txn).await {
            // Pruned or settled meanwhile: nothing to add.
            Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds to a service's deletion what it removes besides its own records: its hooks (and
    /// their id entries), deliveries and delivery keys.
    pub(super) async fn delete_hook_keys(&self, service: &str, txn: Txn) -> Result<Txn> {
        let listing = self.store.list(&format!("{HOOKS}{service}/")).await?;
        let mut txn = txn
            .delete_prefix(format!("{HOOKS}{service}/"))
            .delete_prefix(format!("{DELIVERIES}{service}/"))
            .delete_prefix(format!("{DELIVERY_KEYS}{service}/"))
            .delete(delivery_sequence_key(service));
        for kv in &listing.items {
            if let Ok(record) = decode::<HookRecord>(kv) {
                txn = txn.delete(hook_id_key(&record.info.id));
            }
        }
        Ok(txn)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{paz, web};
    use super::*;
    use crate::hook::Verdict;
    use crate::model::Trigger;

    fn record(service: &str, source: HookSource, id: &str) -> HookRecord {
        HookRecord {
            info: HookInfo {
                service: service.into(),
                source,
                id: id.into(),
                tag: Some("v*".into()),
                created_at: jiff::Timestamp::now(),
                rotated_at: None,
            },
            service_created_at: jiff::Timestamp::UNIX_EPOCH,
            secret: HookSecret::Sha256 {
                hash: "00".repeat(32),
            },
        }
    }

    fn delivery(service: &str) -> Delivery {
        Delivery {
            id: String::new(),
            service: Some(service.into()),
            source: HookSource::Registry,
            received_at: jiff::Timestamp::now(),
            verdict: Verdict::Ignored,
            status: 200,
            code: "TAG_FILTERED".into(),
            reason: "no".into(),
            tag: Some("x".into()),
            image: None,
            digest: None,
            deployment: None,
            key: None,
            callback: None,
            stored: false,
        }
    }

    #[tokio::test]
    async fn hooks_are_made_found_rotated_and_die_with_their_service() {
        let paz = paz();
        let code = |e: Error| e.code().to_owned();
        assert_eq!(
            code(
                paz.create_hook(record("web", HookSource::Registry, "a1"))
                    .await
                    .unwrap_err()
            ),
            "SERVICE_NOT_FOUND"
        );
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let info = paz
            .create_hook(record("web", HookSource::Registry, "a1"))
            .await
            .unwrap();
        assert_eq!(info.tag.as_deref(), Some("v*"));
        assert_eq!(
            code(
                paz.create_hook(record("web", HookSource::Registry, "b2"))
                    .await
                    .unwrap_err()
            ),
            "HOOK_EXISTS"
        );
        let mut bad = record("web", HookSource::Ci, "c3");
        bad.info.tag = Some("a b".into());
        assert_eq!(
            code(paz.create_hook(bad).await.unwrap_err()),
            "INVALID_TAG_FILTER"
        );
        assert!(paz.hook_by_id("a1").await.unwrap().is_some());
        assert!(paz.hook_by_id("zz").await.unwrap().is_none());
        assert!(paz.hook_by_id("").await.unwrap().is_none());

        let rotated = paz
            .rotate_hook(
                "web",
                HookSource::Registry,
                "d4",
                HookSecret::Sha256 {
                    hash: "11".repeat(32),
                },
            )
            .await
            .unwrap();
        assert!(rotated.rotated_at.is_some());
        assert!(
            paz.hook_by_id("a1").await.unwrap().is_none(),
            "the old id is dead"
        );
        let found = paz.hook_by_id("d4").await.unwrap().unwrap();
        assert_eq!(
            found.secret,
            HookSecret::Sha256 {
                hash: "11".repeat(32)
            }
        );
        let tagged = paz
            .set_hook_tag("web", HookSource::Registry, None)
            .await
            .unwrap();
        assert_eq!(tagged.tag, None);
        assert_eq!(paz.hooks("web").await.unwrap().len(), 1);

        // A service deleted and made again does not inherit its hooks or deliveries.
        paz.record_delivery(delivery("web")).await.unwrap();
        paz.delete_service("web", None).await.unwrap();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        assert!(paz.hook_by_id("d4").await.unwrap().is_none());
        assert!(paz.hooks("web").await.unwrap().is_empty());
        assert!(paz.deliveries("web").await.unwrap().is_empty());
        paz.create_hook(record("web", HookSource::Ci, "e5"))
            .await
            .unwrap();
        assert_eq!(
            paz.delete_hook("web", HookSource::Ci).await.unwrap().id,
            "e5"
        );
        assert!(paz.hook_by_id("e5").await.unwrap().is_none());
        assert_eq!(
            code(paz.delete_hook("web", HookSource::Ci).await.unwrap_err()),
            "HOOK_NOT_FOUND"
        );
    }

    #[tokio::test]
    async fn ci_secrets_are_sealed_and_open_only_for_their_hook() {
        struct Xor;
        impl crate::secret::SecretCipher for Xor {
            fn seal(
                &self,
                context: &str,
                plaintext: &[u8],
            ) -> std::result::Result<Vec<u8>, crate::secret::CipherError> {
                let mut out = context.as_bytes().to_vec();
                out.push(0);
                out.extend(plaintext.iter().map(|b| b ^ 0x5a));
                Ok(out)
            }
            fn open(
                &self,
                context: &str,
                sealed: &[u8],
            ) -> std::result::Result<Vec<u8>, crate::secret::CipherError> {
                let (ctx, rest) = sealed.split_at(sealed.iter().position(|&b| b == 0).unwrap_or(0));
                if ctx != context.as_bytes() {
                    return Err(crate::secret::CipherError("wrong context".into()));
                }
                Ok(rest[1..].iter().map(|b| b ^ 0x5a).collect())
            }
        }
        let plain = paz();
        assert_eq!(
            plain
                .seal_hook_secret("web", HookSource::Ci, "a1", "s")
                .unwrap_err()
                .code(),
            "SECRETS_UNAVAILABLE"
        );
        let paz = paz().with_secrets(std::sync::Arc::new(Xor));
        let sealed = paz
            .seal_hook_secret("web", HookSource::Ci, "a1", "hook_s3cret")
            .unwrap();
        let HookSecret::Sealed { value } = &sealed else {
            panic!("{sealed:?}")
        };
        assert!(!value.contains("s3cret"));
        let mut record = record("web", HookSource::Ci, "a1");
        record.secret = sealed;
        assert_eq!(
            paz.open_hook_secret(&record).unwrap().unwrap(),
            b"hook_s3cret"
        );
        record.info.id = "b2".into();
        assert!(
            paz.open_hook_secret(&record).is_err(),
            "moved to another hook"
        );
    }

    #[tokio::test]
    async fn deliveries_are_numbered_and_bounded() {
        let paz = paz();
        assert_eq!(
            paz.record_delivery(delivery("web"))
                .await
                .unwrap_err()
                .code(),
            "SERVICE_NOT_FOUND"
        );
        paz.create_service(web(), Trigger::create()).await.unwrap();
        for _ in 0..KEEP_DELIVERIES + 5 {
            paz.record_delivery(delivery("web")).await.unwrap();
        }
        let stored = paz.deliveries("web").await.unwrap();
        assert_eq!(stored.len() as u64, KEEP_DELIVERIES);
        assert_eq!(stored[0].id, "web-d6");
        assert_eq!(stored.last().unwrap().id, "web-d105");
        assert!(stored.iter().all(|d| d.stored));
        paz.set_delivery_callback("web-d105", "success sent")
            .await
            .unwrap();
        assert_eq!(
            paz.deliveries("web")
                .await
                .unwrap()
                .last()
                .unwrap()
                .callback
                .as_deref(),
            Some("success sent")
        );
        assert!(paz.set_delivery_callback("web-d1", "x").await.is_err());
    }

    #[tokio::test]
    async fn delivery_keys_are_claimed_once_and_expire() {
        let paz = paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let now = jiff::Timestamp::now();
        let key = |at| DeliveryKey {
            key: "run-1".into(),
            body: Some("ab".into()),
            at,
            delivery: None,
            deployment: None,
        };
        assert!(
            paz.claim_delivery_key("web", "aa", key(now))
                .await
                .unwrap()
                .is_none()
        );
        paz.settle_delivery_key("web", "aa", "web-d1", Some("web-2"))
            .await
            .unwrap();
        let seen = paz
            .claim_delivery_key("web", "aa", key(now))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.deployment.as_deref(), Some("web-2"));
        assert!(
            paz.claim_delivery_key("web", "no/hex", key(now))
                .await
                .is_err()
        );
        // A claim an hour and more later prunes the old key.
        let later = now + jiff::SignedDuration::from_secs(3601);
        assert!(
            paz.claim_delivery_key("web", "bb", key(later))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            paz.claim_delivery_key("web", "aa", key(later))
                .await
                .unwrap()
                .is_none()
        );
    }
}
