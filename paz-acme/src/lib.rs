//! `paz-acme`: certificates from an ACME CA (RFC 8555: Let's Encrypt, or pebble in tests)
//! with HTTP-01 or TLS-ALPN-01 (RFC 8737) challenges, answered by whoever implements
//! [`Challenges`] (Paz's router serves `/.well-known/acme-challenge/<token>` on its plain
//! listener, and the challenge certificate to `acme-tls/1` handshakes on its TLS listener).
//!
//! [`Issuer`] holds one ACME account; [`Issuer::issue`] orders a certificate for some names,
//! publishes each challenge's answer, tells the CA to validate, waits, finalizes with a new
//! key and returns the chain, the key and the expiry. The ACME protocol is instant-acme's.

mod manager;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::time::Duration;

pub use manager::{CertManager, CertState, ManagerConfig, Publish, backoff};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

/// Errors of `paz-acme`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CA's directory or account could not be reached or used.
    #[error("ACME account at {directory}: {source}")]
    Account {
        /// The directory URL.
        directory: String,
        /// What instant-acme reported.
        #[source]
        source: instant_acme::Error,
    },
    /// An order failed (the CA refused, a challenge was not validated, a timeout).
    #[error("ACME order for {names:?}: {message}")]
    Order {
        /// The names ordered.
        names: Vec<String>,
        /// What went wrong.
        message: String,
    },
    /// Not a challenge type Paz answers (see [`ChallengeKind`]).
    #[error("unknown ACME challenge type {given:?}: use http-01 or tls-alpn-01")]
    UnknownChallenge {
        /// What was given.
        given: String,
    },
    /// The issued certificate could not be read.
    #[error("the certificate issued for {names:?} cannot be read: {message}")]
    Certificate {
        /// The names ordered.
        names: Vec<String>,
        /// What is wrong.
        message: String,
    },
}

/// The result type of `paz-acme`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where to get certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// A contact for the account, e.g. `mailto:ops@example.com`.
    pub contact: Option<String>,
    /// A PEM root certificate to trust for the CA's own API (a private CA such as pebble);
    /// `None` uses the system's roots.
    pub ca_root: Option<PathBuf>,
}

/// How the CA checks that Paz controls a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeKind {
    /// HTTP-01: the CA fetches `http://<name>/.well-known/acme-challenge/<token>` (port 80).
    #[default]
    Http01,
    /// TLS-ALPN-01 (RFC 8737): the CA connects to `<name>:443` offering only the ALPN
    /// protocol `acme-tls/1` and checks the self-signed challenge certificate served.
    TlsAlpn01,
}

impl ChallengeKind {
    /// The name ACME gives it: `http-01` or `tls-alpn-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }

    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }
}

impl std::fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChallengeKind {
    type Err = Error;

    fn from_str(given: &str) -> Result<Self> {
        match given {
            "http-01" => Ok(ChallengeKind::Http01),
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            _ => Err(Error::UnknownChallenge {
                given: given.to_owned(),
            }),
        }
    }
}

/// Publishes and withdraws the answers to challenges: HTTP-01 (a key authorization served
/// at a path) and TLS-ALPN-01 (a certificate served to `acme-tls/1` handshakes).
pub trait Challenges: Send + Sync {
    /// Answer `GET /.well-known/acme-challenge/<token>` with `key_authorization`.
    fn publish(&self, token: &str, key_authorization: &str);
    /// Stop answering `token`.
    fn withdraw(&self, token: &str);
    /// Serve `certificate_pem` (with its `key_pem`) to TLS clients that ask for `name` by
    /// SNI and offer exactly the ALPN protocol `acme-tls/1` (TLS-ALPN-01, RFC 8737).
    fn publish_tls_alpn(&self, name: &str, certificate_pem: &str, key_pem: &str);
    /// Stop serving the TLS-ALPN-01 certificate of `name`.
    fn withdraw_tls_alpn(&self, name: &str);
}

/// A challenge answer published during an order, withdrawn when the order ends.
enum Published {
    Http01(String),
    TlsAlpn01(String),
}

/// The TLS-ALPN-01 certificate of `name` (RFC 8737 §3): self-signed, for `name` alone, with
/// the critical acmeIdentifier extension holding `digest` (SHA-256 of the key
/// authorization). Returns the certificate and its new key as PEM.
pub fn tls_alpn_certificate(
    name: &str,
    digest: &[u8],
) -> std::result::Result<(String, String), String> {
    if digest.len() != 32 {
        return Err(format!(
            "the key authorization digest has {} bytes, not 32",
            digest.len()
        ));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| format!("the name {name:?}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let certificate = params
        .self_signed(&key)
        .map_err(|e| format!("signing: {e}"))?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// A certificate as issued.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The names it covers.
    pub names: Vec<String>,
    /// The chain, leaf first, as PEM.
    pub chain_pem: String,
    /// The new private key, as PEM (PKCS#8).
    pub key_pem: String,
    /// When the leaf expires.
    pub not_after: jiff::Timestamp,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How long an order may take, challenges and issuance included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// One ACME account at one CA.
#[derive(Clone)]
pub struct Issuer {
    account: Account,
    directory: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("directory", &self.directory)
            .field("account", &self.account.id())
            .finish()
    }
}

impl Issuer {
    /// The account: restored from `credentials` (JSON, as [`Issuer::connect`] returned them
    /// before) or created at the CA. Returns the credentials to keep (they hold the account
    /// key: store them privately).
    pub async fn connect(
        config: &AcmeConfig,
        credentials: Option<&str>,
    ) -> Result<(Issuer, String)> {
        let failed = |source| Error::Account {
            directory: config.directory.clone(),
            source,
        };
        let builder = match &config.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        }
        .map_err(failed)?;
        let restored = credentials.and_then(|json| {
            serde_json::from_str::<AccountCredentials>(json)
                .ok()
                .map(|c| (json, c))
        });
        let (account, credentials) = match restored {
            Some((json, credentials)) => {
                let account = builder
                    .from_credentials(credentials)
                    .await
                    .map_err(failed)?;
                (account, json.to_owned())
            }
            None => {
                let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(failed)?;
                tracing::info!(directory = %config.directory, id = account.id(), "created the ACME account");
                (account, credentials_json(credentials))
            }
        };
        Ok((
            Issuer {
                account,
                directory: config.directory.clone(),
            },
            credentials,
        ))
    }

    /// Orders a certificate for `names` with challenges of `kind` published through
    /// `challenges` (withdrawn again whatever happens).
    pub async fn issue(
        &self,
        names: &[String],
        kind: ChallengeKind,
        challenges: &dyn Challenges,
    ) -> Result<Issued> {
        let mut published = Vec::new();
        let outcome = tokio::time::timeout(
            ORDER_TIMEOUT,
            self.order(names, kind, challenges, &mut published),
        )
        .await;
        for answer in &published {
            match answer {
                Published::Http01(token) => challenges.withdraw(token),
                Published::TlsAlpn01(name) => challenges.withdraw_tls_alpn(name),
            }
        }
        let failed = |message: String| Error::Order {
            names: names.to_vec(),
            message,
        };
        let (chain_pem, key_pem) =
            outcome.map_err(|_| failed(format!("no certificate within {ORDER_TIMEOUT:?}")))??;
        let not_after = not_after(&chain_pem).map_err(|message| Error::Certificate {
            names: names.to_vec(),
            message,
        })?;
        Ok(Issued {
            names: names.to_vec(),
            chain_pem,
            key_pem,
            not_after,
        })
    }

    async fn order(
        &self,
        names: &[String],
        kind: ChallengeKind,
        challenges: &dyn Challenges,
        published: &mut Vec<Published>,
    ) -> Result<(String, String)> {
        let failed = |message: String| Error::Order {
            names: names.to_vec(),
            message,
        };
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| failed(format!("the CA refused the order: {e}")))?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| failed(format!("reading an authorization: {e}")))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(failed(format!("an authorization is {status:?}"))),
            }
            let mut challenge = authorization
                .challenge(kind.acme_type())
                .ok_or_else(|| failed(format!("the CA offers no {kind} challenge")))?;
            match kind {
                ChallengeKind::Http01 => {
                    let token = challenge.token.clone();
                    challenges.publish(&token, challenge.key_authorization().as_str());
                    published.push(Published::Http01(token));
                }
                ChallengeKind::TlsAlpn01 => {
                    let name = challenge.identifier().to_string();
                    let (certificate, key) = tls_alpn_certificate(
                        &name,
                        challenge.key_authorization().digest().as_ref(),
                    )
                    .map_err(|e| failed(format!("the tls-alpn-01 certificate: {e}")))?;
                    challenges.publish_tls_alpn(&name, &certificate, &key);
                    published.push(Published::TlsAlpn01(name));
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| failed(format!("telling the CA the challenge is ready: {e}")))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(200))
            .timeout(Duration::from_secs(60));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| failed(format!("waiting for validation: {e}")))?;
        if status != OrderStatus::Ready {
            let why = order
                .authorizations()
                .next()
                .await
                .and_then(|a| a.ok())
                .and_then(|a| {
                    a.challenges
                        .iter()
                        .find_map(|c| c.error.as_ref().map(|e| e.to_string()))
                })
                .unwrap_or_else(|| format!("the order is {status:?}"));
            return Err(failed(format!("validation failed: {why}")));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| failed(format!("finalizing: {e}")))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| failed(format!("downloading the certificate: {e}")))?;
        Ok((chain_pem, key_pem))
    }
}

fn credentials_json(credentials: AccountCredentials) -> String {
    serde_json::to_string(&credentials).expect("account credentials serialize")
}

/// When the first (leaf) certificate of a PEM chain expires.
pub fn not_after(chain_pem: &str) -> std::result::Result<jiff::Timestamp, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("not PEM: {e}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let seconds = certificate.validity().not_after.timestamp();
    jiff::Timestamp::from_second(seconds).map_err(|e| format!("expiry out of range: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_leafs_expiry() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["web.example.test".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let certificate = params.self_signed(&key).unwrap();
        let expiry = not_after(&certificate.pem()).unwrap();
        assert_eq!(expiry.to_string(), "2031-05-17T00:00:00Z");
        assert!(not_after("garbage").is_err());
    }

    #[test]
    fn challenge_kinds_parse_and_print_as_acme_names_them() {
        for kind in [ChallengeKind::Http01, ChallengeKind::TlsAlpn01] {
            assert_eq!(kind.to_string().parse::<ChallengeKind>().unwrap(), kind);
        }
        assert_eq!(ChallengeKind::default(), ChallengeKind::Http01);
        let error = "dns-01".parse::<ChallengeKind>().unwrap_err().to_string();
        assert_eq!(
            error,
            "unknown ACME challenge type \"dns-01\": use http-01 or tls-alpn-01"
        );
    }

    #[test]
    fn the_tls_alpn_certificate_has_the_name_alone_and_the_critical_acme_identifier() {
        let digest: Vec<u8> = (0..32).collect();
        let (pem, key) = tls_alpn_certificate("web.example.test", &digest).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let certificate = pem.parse_x509().unwrap();
        let names: Vec<String> = certificate
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(web.example.test)"]);
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31): critical, an OCTET STRING of the digest.
        let extension = certificate
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(extension.critical);
        let mut der = vec![0x04, 32];
        der.extend_from_slice(&digest);
        assert_eq!(extension.value, der.as_slice());
        assert!(tls_alpn_certificate("web.example.test", &digest[..31]).is_err());
    }
}
