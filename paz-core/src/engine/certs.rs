//! TLS certificates and ACME accounts, kept in the store so every replica serves the same
//! ones. Private keys are sealed with the secrets cipher when the engine has one (the same
//! key file as secrets); see [`crate::secret`].

use serde::{Deserialize, Serialize};

use super::{Paz, decode, encode};
use crate::error::{Error, Result};
use crate::secret::{from_hex, to_hex};
use crate::store::Txn;

const CERTS: &str = "/paz/certs/";
const ACME_ACCOUNTS: &str = "/paz/acme-accounts/";

/// A certificate the router serves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The name it was issued for (also its key in the store).
    pub name: String,
    /// The chain, leaf first, as PEM.
    pub chain_pem: String,
    /// The private key as PEM (opened; sealed in the store).
    pub key_pem: String,
    /// When the leaf expires.
    pub not_after: jiff::Timestamp,
    /// When it was stored.
    pub issued_at: jiff::Timestamp,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("name", &self.name)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// As stored: the key sealed (hex) when a cipher is configured, else in clear.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCertificate {
    name: String,
    chain_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_sealed: Option<String>,
    not_after: jiff::Timestamp,
    issued_at: jiff::Timestamp,
}

/// The sealed certificate keys among `entries` (key → stored bytes), each as (store key,
/// context, sealed bytes), for checking that a secret key opens them.
pub(super) fn sealed_probes(
    entries: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<(String, String, Vec<u8>)> {
    entries
        .range(CERTS.to_owned()..)
        .take_while(|(key, _)| key.starts_with(CERTS))
        .filter_map(|(key, bytes)| {
            let stored: StoredCertificate = serde_json::from_slice(bytes).ok()?;
            let sealed = from_hex(stored.key_sealed.as_deref()?)?;
            Some((key.clone(), format!("paz-cert/{}", stored.name), sealed))
        })
        .collect()
}

impl Paz {
    fn seal_text(&self, context: &str, text: &str) -> Result<(Option<String>, Option<String>)> {
        match &self.secrets {
            Some(cipher) => {
                let sealed = cipher
                    .seal(context, text.as_bytes())
                    .map_err(|e| Error::SecretsUnavailable(e.to_string()))?;
                Ok((None, Some(to_hex(&sealed))))
            }
            None => Ok((Some(text.to_owned()), None)),
        }
    }

    fn open_text(
        &self,
        context: &str,
        plain: Option<String>,
        sealed: Option<&str>,
    ) -> Result<String> {
        if let Some(plain) = plain {
            return Ok(plain);
        }
        let cipher = self.secrets.as_ref().ok_or_else(|| {
            Error::SecretsUnavailable(format!(
                "{context} is sealed and this server has no secret key"
            ))
        })?;
        let bytes = sealed.and_then(from_hex).ok_or_else(|| Error::Corrupt {
            key: context.to_owned(),
            message: "no key".into(),
        })?;
        let opened = cipher
            .open(context, &bytes)
            .map_err(|e| Error::SecretsUnavailable(format!("{context}: {e}")))?;
        String::from_utf8(opened).map_err(|_| Error::Corrupt {
            key: context.to_owned(),
            message: "not UTF-8".into(),
        })
    }

    /// Every stored certificate, keys opened.
    pub async fn certificates(&self) -> Result<Vec<Certificate>> {
        let listing = self.store.list(CERTS).await?;
        listing
            .items
            .iter()
            .map(|kv| {
                let stored: StoredCertificate = decode(kv)?;
                let context = format!("paz-cert/{}", stored.name);
                let key_pem =
                    self.open_text(&context, stored.key_pem, stored.key_sealed.as_deref())?;
                Ok(Certificate {
                    name: stored.name,
                    chain_pem: stored.chain_pem,
                    key_pem,
                    not_after: stored.not_after,
                    issued_at: stored.issued_at,
                })
            })
            .collect()
    }

    /// Stores (or replaces) the certificate of `certificate.name`.
    pub async fn put_certificate(&self, certificate: &Certificate) -> Result<()> {
        let context = format!("paz-cert/{}", certificate.name);
        let (key_pem, key_sealed) = self.seal_text(&context, &certificate.key_pem)?;
        let stored = StoredCertificate {
            name: certificate.name.clone(),
            chain_pem: certificate.chain_pem.clone(),
            key_pem,
            key_sealed,
            not_after: certificate.not_after,
            issued_at: certificate.issued_at,
        };
        self.store
            .commit(Txn::new().put(format!("{CERTS}{}", certificate.name), encode(&stored)))
            .await?;
        Ok(())
    }

    /// Deletes the certificate of `name` (no error if there is none).
    pub async fn delete_certificate(&self, name: &str) -> Result<()> {
        self.store
            .commit(Txn::new().delete(format!("{CERTS}{name}")))
            .await?;
        Ok(())
    }

    /// The ACME account credentials kept for the CA at `directory`, if any.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        let key = acme_key(directory);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let stored: StoredAccount = decode(&kv)?;
        self.open_text(&key, stored.credentials, stored.sealed.as_deref())
            .map(Some)
    }

    /// Keeps the ACME account credentials for the CA at `directory` (sealed when possible).
    pub async fn put_acme_account(&self, directory: &str, credentials: &str) -> Result<()> {
        let key = acme_key(directory);
        let (credentials, sealed) = self.seal_text(&key, credentials)?;
        let stored = StoredAccount {
            credentials,
            sealed,
        };
        self.store
            .commit(Txn::new().put(key, encode(&stored)))
            .await?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// The store key of a CA's account: the directory URL made a key.
fn acme_key(directory: &str) -> String {
    let safe: String = directory
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{ACME_ACCOUNTS}{safe}")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::paz;
    use super::*;

    #[tokio::test]
    async fn certificates_and_accounts_round_trip() {
        let paz = paz();
        let now = jiff::Timestamp::now();
        let certificate = Certificate {
            name: "web.example.com".into(),
            chain_pem: "CHAIN".into(),
            key_pem: "KEY".into(),
            not_after: now,
            issued_at: now,
        };
        paz.put_certificate(&certificate).await.unwrap();
        assert_eq!(
            paz.certificates().await.unwrap(),
            std::slice::from_ref(&certificate)
        );
        assert!(!format!("{certificate:?}").contains("KEY"));
        paz.delete_certificate("web.example.com").await.unwrap();
        assert!(paz.certificates().await.unwrap().is_empty());
        let directory = "https://acme.example/dir";
        assert_eq!(paz.acme_account(directory).await.unwrap(), None);
        paz.put_acme_account(directory, "{\"id\":1}").await.unwrap();
        assert_eq!(
            paz.acme_account(directory).await.unwrap().as_deref(),
            Some("{\"id\":1}")
        );
    }
}
