//! Secrets: set, list and remove them, and open a release's for its instances. See
//! [`crate::secret`] for the model. Setting or removing a secret makes a release and a
//! deployment, like any change of spec.

use std::collections::BTreeMap;

use super::{Paz, decode, sealed_current_key, sealed_key};
use crate::error::{Error, Result};
use crate::model::{Deployment, Release, Trigger};
use crate::secret::{MAX_SECRET_BYTES, MAX_SECRETS, SecretInfo, SecretRef, from_hex, to_hex};
use crate::service::Service;

/// Sealed values by secret name, as hex.
pub(super) type Sealed = BTreeMap<String, String>;

/// How a change moves the service's sealed values.
#[derive(Debug, Clone)]
pub(super) enum SealedChange {
    /// Everything replaced (a rollback to a release's values).
    Replace(Sealed),
    /// One value set.
    Set(String, String),
    /// One value removed.
    Remove(String),
}

impl SealedChange {
    pub(super) fn apply(&self, mut current: Sealed) -> Sealed {
        match self {
            SealedChange::Replace(all) => return all.clone(),
            SealedChange::Set(name, value) => {
                current.insert(name.clone(), value.clone());
            }
            SealedChange::Remove(name) => {
                current.remove(name);
            }
        }
        current
    }
}

/// Where a sealed value belongs: a value opened under another context fails.
fn context(service: &str, secret: &str, release: u64) -> String {
    format!("paz-secret/{service}/{secret}/{release}")
}

impl Paz {
    pub(super) fn cipher(&self) -> Result<&dyn crate::secret::SecretCipher> {
        self.secrets.as_deref().ok_or_else(|| {
            Error::SecretsUnavailable(
                "this server has no secret key configured (paz-server keeps one in <data dir>/secret-key, or reads PAZ_SECRET_KEY)".into(),
            )
        })
    }

    /// Sets secret `secret` of service `name` to `value` (given to its instances as the
    /// environment variable `secret`), making a release and a deployment.
    pub async fn set_secret(
        &self,
        name: &str,
        secret: &str,
        value: &str,
        trigger: Trigger,
    ) -> Result<Deployment> {
        check_secret(secret, value)?;
        let cipher = self.cipher()?;
        let applied = self
            .change(name, None, |current| {
                if current.spec.env.contains_key(secret) {
                    return Err(Error::invalid(
                        "secret",
                        "SECRET_CONFLICT",
                        format!("{secret} is a plain environment variable of {name}; remove it from env first"),
                    ));
                }
                if !current.secrets.contains_key(secret) && current.secrets.len() >= MAX_SECRETS {
                    return Err(Error::invalid(
                        "secret",
                        "TOO_MANY_SECRETS",
                        format!("{name} has {MAX_SECRETS} secrets already"),
                    ));
                }
                let mut planned = super::deploys::plan_release(current, current.spec.clone(), &trigger);
                let version = planned.service.latest_release;
                let sealed = cipher
                    .seal(&context(name, secret, version), value.as_bytes())
                    .map_err(|e| Error::SecretsUnavailable(e.to_string()))?;
                let reference = SecretRef {
                    set_at: jiff::Timestamp::now(),
                    release: version,
                };
                planned.service.secrets.insert(secret.to_owned(), reference.clone());
                if let Some(release) = &mut planned.release {
                    release.secrets.insert(secret.to_owned(), reference);
                }
                planned.sealed = Some(SealedChange::Set(secret.to_owned(), to_hex(&sealed)));
                Ok(planned)
            })
            .await?;
        Ok(applied.deployment.expect("a new release is deployed"))
    }

    /// Removes secret `secret` of service `name`, making a release and a deployment.
    pub async fn remove_secret(
        &self,
        name: &str,
        secret: &str,
        trigger: Trigger,
    ) -> Result<Deployment> {
        let applied = self
            .change(name, None, |current| {
                if !current.secrets.contains_key(secret) {
                    return Err(Error::NotFound {
                        kind: "secret",
                        name: format!("{name}/{secret}"),
                    });
                }
                let mut planned =
                    super::deploys::plan_release(current, current.spec.clone(), &trigger);
                planned.service.secrets.remove(secret);
                if let Some(release) = &mut planned.release {
                    release.secrets.remove(secret);
                }
                planned.sealed = Some(SealedChange::Remove(secret.to_owned()));
                Ok(planned)
            })
            .await?;
        Ok(applied.deployment.expect("a new release is deployed"))
    }

    /// The secrets of a service: names and when each was set, never the values.
    pub async fn secrets(&self, name: &str) -> Result<Vec<SecretInfo>> {
        let service = self.service(name).await?;
        Ok(service
            .secrets
            .into_iter()
            .map(|(name, r)| SecretInfo {
                name,
                set_at: r.set_at,
                release: r.release,
            })
            .collect())
    }

    /// The environment of a release's instances: its spec's `env` and its secrets, opened.
    /// Only the runtime calls this, to start instances; nothing shows the result.
    pub async fn instance_env(&self, release: &Release) -> Result<BTreeMap<String, String>> {
        let mut env = release.spec.env.clone();
        if release.secrets.is_empty() {
            return Ok(env);
        }
        let cipher = self.cipher()?;
        let sealed = self.sealed_of(release).await?;
        for (secret, reference) in &release.secrets {
            let unreadable = |why: String| {
                Error::SecretsUnavailable(format!(
                    "cannot open secret {secret} of {} v{}: {why}",
                    release.service, release.version
                ))
            };
            let bytes = sealed
                .get(secret)
                .and_then(|hex| from_hex(hex))
                .ok_or_else(|| unreadable("its sealed value is missing".into()))?;
            let value = cipher
                .open(
                    &context(&release.service, secret, reference.release),
                    &bytes,
                )
                .map_err(|e| unreadable(e.to_string()))?;
            let value = String::from_utf8(value).map_err(|_| unreadable("not UTF-8".into()))?;
            env.insert(secret.clone(), value);
        }
        Ok(env)
    }

    /// The sealed values of a release (empty when it has no secrets).
    pub(super) async fn sealed_of(&self, release: &Release) -> Result<Sealed> {
        if release.secrets.is_empty() {
            return Ok(Sealed::new());
        }
        let key = sealed_key(&release.service, release.version);
        match self.store.get(&key).await? {
            Some(kv) => decode(&kv),
            None => Err(Error::Corrupt {
                key,
                message: "the release has secrets but no sealed values".into(),
            }),
        }
    }

    /// The service's current sealed values (empty when it has none).
    pub(super) async fn sealed_current(&self, service: &Service) -> Result<Sealed> {
        let key = sealed_current_key(&service.spec.name);
        match self.store.get(&key).await? {
            Some(kv) => decode(&kv),
            None => Ok(Sealed::new()),
        }
    }
}

/// The sealed service secrets among `entries` (key → stored bytes, e.g. a state export's),
/// each as (store key, context, sealed bytes), for checking that a secret key opens them. The
/// context comes from the release (or, for `<service>/current`, the service) record that
/// names the secret; values without one are left out.
pub(super) fn sealed_probes(entries: &BTreeMap<String, Vec<u8>>) -> Vec<(String, String, Vec<u8>)> {
    /// The one field of a service or release record that matters here.
    #[derive(serde::Deserialize)]
    struct Refs {
        #[serde(default)]
        secrets: BTreeMap<String, SecretRef>,
    }
    let mut probes = Vec::new();
    for (key, bytes) in entries.range(super::SEALED.to_owned()..) {
        let Some(rest) = key.strip_prefix(super::SEALED) else {
            break;
        };
        let Some((service, which)) = rest.split_once('/') else {
            continue;
        };
        let record = match which {
            "current" => super::service_key(service),
            version => match version.parse() {
                Ok(version) => super::release_key(service, version),
                Err(_) => continue,
            },
        };
        let (Ok(sealed), Some(Ok(refs))) = (
            serde_json::from_slice::<Sealed>(bytes),
            entries
                .get(&record)
                .map(|r| serde_json::from_slice::<Refs>(r)),
        ) else {
            continue;
        };
        for (secret, hex) in sealed {
            if let (Some(reference), Some(value)) = (refs.secrets.get(&secret), from_hex(&hex)) {
                probes.push((
                    key.clone(),
                    context(service, &secret, reference.release),
                    value,
                ));
            }
        }
    }
    probes
}

/// Checks a secret's name (an environment variable name) and value.
fn check_secret(secret: &str, value: &str) -> Result<()> {
    if let Err(message) = crate::names::check_env_key(secret) {
        return Err(Error::invalid("secret", "INVALID_SECRET", message));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(Error::invalid(
            "value",
            "INVALID_SECRET",
            format!(
                "the value is {} bytes; at most {MAX_SECRET_BYTES} (64 KiB)",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(
            "value",
            "INVALID_SECRET",
            "an environment value must not contain NUL bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fixtures::web;
    use super::*;
    use crate::model::TriggerKind;
    use crate::secret::{CipherError, SecretCipher};
    use crate::store::{MemoryStore, Store};

    /// A toy cipher for the engine's tests: the context, then the bytes reversed.
    struct Toy;
    impl SecretCipher for Toy {
        fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
            let mut out = format!("{context}|").into_bytes();
            out.extend(plaintext.iter().rev());
            Ok(out)
        }
        fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
            let prefix = format!("{context}|");
            let rest = sealed
                .strip_prefix(prefix.as_bytes())
                .ok_or_else(|| CipherError("wrong context".into()))?;
            Ok(rest.iter().rev().copied().collect())
        }
    }

    fn paz_with_secrets() -> (Paz, MemoryStore) {
        let store = MemoryStore::new();
        let paz = Paz::new(Arc::new(store.clone()), crate::EngineConfig::default())
            .with_secrets(Arc::new(Toy));
        (paz, store)
    }

    fn deploy() -> Trigger {
        Trigger::new(TriggerKind::Deploy)
    }

    #[tokio::test]
    async fn a_secret_is_a_release_and_reaches_only_the_instance_env() {
        let (paz, store) = paz_with_secrets();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let d = paz
            .set_secret("web", "DB_PASSWORD", "hunter2", deploy())
            .await
            .unwrap();
        assert_eq!(d.release, 2, "setting a secret is a release");
        let release = paz.release("web", 2).await.unwrap();
        assert!(release.secrets.contains_key("DB_PASSWORD"));
        assert_eq!(
            paz.instance_env(&release).await.unwrap()["DB_PASSWORD"],
            "hunter2"
        );
        // Nothing the API shows holds the value, nor does the store hold it in clear.
        let shown = serde_json::to_string(&(
            paz.service("web").await.unwrap(),
            paz.releases("web").await.unwrap(),
            paz.secrets("web").await.unwrap(),
            paz.deployments("web").await.unwrap(),
        ))
        .unwrap();
        assert!(
            !shown.contains("hunter2") && !shown.contains("2retnuh"),
            "{shown}"
        );
        for kv in store.list("/").await.unwrap().items {
            assert!(
                !String::from_utf8_lossy(&kv.value).contains("hunter2"),
                "{} holds the value in clear",
                kv.key
            );
        }
        // A spec change keeps the secret; a rollback brings back the release's secrets.
        paz.deploy("web", Some("demo:v2".into()), deploy())
            .await
            .unwrap();
        let v3 = paz.release("web", 3).await.unwrap();
        assert_eq!(
            paz.instance_env(&v3).await.unwrap()["DB_PASSWORD"],
            "hunter2"
        );
        paz.set_secret("web", "DB_PASSWORD", "new", deploy())
            .await
            .unwrap();
        paz.rollback("web", Some(3), deploy()).await.unwrap();
        let service = paz.service("web").await.unwrap();
        assert_eq!(service.secrets["DB_PASSWORD"].release, 2);
        let d = paz.deploy("web", None, deploy()).await.unwrap();
        let after = paz.release("web", d.release).await.unwrap();
        assert_eq!(
            paz.instance_env(&after).await.unwrap()["DB_PASSWORD"],
            "hunter2"
        );
        // Removing one is a release without it.
        let d = paz
            .remove_secret("web", "DB_PASSWORD", deploy())
            .await
            .unwrap();
        let gone = paz.release("web", d.release).await.unwrap();
        assert!(
            !paz.instance_env(&gone)
                .await
                .unwrap()
                .contains_key("DB_PASSWORD")
        );
        assert_eq!(
            paz.remove_secret("web", "DB_PASSWORD", deploy())
                .await
                .unwrap_err()
                .code(),
            "SECRET_NOT_FOUND"
        );
    }

    #[tokio::test]
    async fn bad_secrets_and_clashes_are_refused() {
        let (paz, _) = paz_with_secrets();
        let mut spec = web();
        spec.env.insert("PLAIN".into(), "1".into());
        paz.create_service(spec.clone(), Trigger::create())
            .await
            .unwrap();
        let code = |r: Result<Deployment>| r.unwrap_err().code().to_owned();
        assert_eq!(
            code(paz.set_secret("web", "bad name", "x", deploy()).await),
            "INVALID_SECRET"
        );
        assert_eq!(
            code(paz.set_secret("web", "A", "x\0y", deploy()).await),
            "INVALID_SECRET"
        );
        let big = "x".repeat(MAX_SECRET_BYTES + 1);
        assert_eq!(
            code(paz.set_secret("web", "A", &big, deploy()).await),
            "INVALID_SECRET"
        );
        assert_eq!(
            code(paz.set_secret("web", "PLAIN", "x", deploy()).await),
            "SECRET_CONFLICT"
        );
        assert_eq!(
            code(paz.set_secret("nope", "A", "x", deploy()).await),
            "SERVICE_NOT_FOUND"
        );
        paz.set_secret("web", "TOKEN", "t", deploy()).await.unwrap();
        spec.env.insert("TOKEN".into(), "plain".into());
        let err = paz
            .update_service("web", spec, None, Trigger::new(TriggerKind::Update))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SECRET_CONFLICT");
        assert_eq!(
            paz.service("web").await.unwrap().latest_release,
            2,
            "nothing stored"
        );
    }

    #[tokio::test]
    async fn without_a_key_secrets_are_refused_clearly() {
        let paz = super::super::fixtures::paz();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        let err = paz.set_secret("web", "A", "x", deploy()).await.unwrap_err();
        assert_eq!(err.code(), "SECRETS_UNAVAILABLE");
        assert!(err.to_string().contains("secret-key"), "{err}");
    }

    #[tokio::test]
    async fn a_value_moved_to_another_name_does_not_open() {
        let (paz, store) = paz_with_secrets();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        paz.set_secret("web", "A", "a", deploy()).await.unwrap();
        paz.set_secret("web", "B", "b", deploy()).await.unwrap();
        // Swap the sealed values of A and B in release 3's record.
        let key = sealed_key("web", 3);
        let mut sealed: Sealed =
            serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().value).unwrap();
        let a = sealed["A"].clone();
        sealed.insert("A".into(), sealed["B"].clone());
        sealed.insert("B".into(), a);
        store
            .put(&key, serde_json::to_vec(&sealed).unwrap())
            .await
            .unwrap();
        let release = paz.release("web", 3).await.unwrap();
        let err = paz.instance_env(&release).await.unwrap_err();
        assert_eq!(err.code(), "SECRETS_UNAVAILABLE");
        assert!(err.to_string().contains("cannot open secret"), "{err}");
    }

    #[tokio::test]
    async fn deleting_the_service_deletes_its_sealed_values() {
        let (paz, store) = paz_with_secrets();
        paz.create_service(web(), Trigger::create()).await.unwrap();
        paz.set_secret("web", "A", "a", deploy()).await.unwrap();
        paz.delete_service("web", None).await.unwrap();
        assert!(store.list("/paz/sealed/").await.unwrap().items.is_empty());
    }
}
