//! TLS at the router: the certificates it serves, chosen by SNI ([`Certificates`]), and the
//! rustls server configuration (ALPN `h2` and `http/1.1`; rustls with ring, the workspace's
//! one TLS stack). A ClientHello that offers exactly the ALPN protocol `acme-tls/1` is an
//! ACME CA validating TLS-ALPN-01 (RFC 8737): it gets the pending challenge certificate of
//! its SNI name, never a served one, and the connection ends after the handshake.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// One certificate: the names it is served for, and its chain and key as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificatePem {
    /// The host names (SNI) it answers, lowercase; `*.example.com` covers one label.
    pub names: Vec<String>,
    /// The certificate chain, leaf first.
    pub chain_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for CertificatePem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificatePem")
            .field("names", &self.names)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificates the router serves, by host name; swapped whole without a lock on the
/// handshake path.
#[derive(Default)]
pub struct Certificates {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// Pending TLS-ALPN-01 challenge certificates, by exact host name.
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.by_name.load().keys().cloned().collect();
        f.debug_struct("Certificates")
            .field("names", &names)
            .finish()
    }
}

impl Certificates {
    /// Makes `certificates` the whole set (a name given twice takes the last). Fails, and
    /// changes nothing, when a chain or key does not parse or the key does not match.
    pub fn replace(&self, certificates: &[CertificatePem]) -> Result<()> {
        let mut by_name = HashMap::new();
        for certificate in certificates {
            let key = certified_key(certificate)?;
            for name in &certificate.names {
                by_name.insert(name.to_ascii_lowercase(), key.clone());
            }
        }
        self.by_name.store(Arc::new(by_name));
        Ok(())
    }

    /// Serves `certificate` to `acme-tls/1` handshakes for each of its names (TLS-ALPN-01),
    /// until [`Certificates::clear_challenge`]. Fails, changing nothing, if it does not parse.
    pub fn set_challenge(&self, certificate: &CertificatePem) -> Result<()> {
        let key = parse_certified_key(certificate, false)?;
        self.challenges.rcu(|current| {
            let mut next = HashMap::clone(current);
            for name in &certificate.names {
                next.insert(name.to_ascii_lowercase(), key.clone());
            }
            next
        });
        Ok(())
    }

    /// Stops serving the challenge certificate of `name`.
    pub fn clear_challenge(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.challenges.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.remove(&name);
            next
        });
    }

    /// The names served, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.load().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether a certificate is served for `host` (exactly, or by a wildcard).
    pub fn covers(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }

    fn lookup(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.by_name.load();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = map.get(&host) {
            return Some(key.clone());
        }
        let (_, parent) = host.split_once('.')?;
        map.get(&format!("*.{parent}")).cloned()
    }

    /// The rustls configuration of a TLS listener serving these certificates, offering
    /// HTTP/2 and HTTP/1.1 (ALPN), and `acme-tls/1` to a client that offers nothing else.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        // In order of preference: `acme-tls/1` is chosen only when the client offers no other.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if offers_only_acme_tls(&hello) {
            // A CA validating TLS-ALPN-01: the challenge certificate of that exact name, or
            // no handshake (never a served certificate).
            let name = hello
                .server_name()?
                .trim_end_matches('.')
                .to_ascii_lowercase();
            return self.challenges.load().get(&name).cloned();
        }
        match hello.server_name() {
            Some(name) => self.lookup(name),
            // No SNI (a client dialing an IP address): the one certificate, if there is
            // exactly one; with several there is no telling which.
            None => {
                let map = self.by_name.load();
                let mut keys = map.values();
                let first = keys.next()?;
                keys.all(|k| Arc::ptr_eq(k, first)).then(|| first.clone())
            }
        }
    }
}

/// Whether the client's ALPN list is exactly `acme-tls/1`.
fn offers_only_acme_tls(hello: &ClientHello<'_>) -> bool {
    let Some(mut protocols) = hello.alpn() else {
        return false;
    };
    protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
}

/// Whether a finished handshake negotiated `acme-tls/1` (a CA validating TLS-ALPN-01): such
/// a connection carries no HTTP and is closed at once.
pub(crate) fn is_acme_validation(connection: &rustls::ServerConnection) -> bool {
    connection.alpn_protocol() == Some(ACME_TLS_ALPN)
}

/// Parses a chain and key and checks that they belong together.
fn certified_key(certificate: &CertificatePem) -> Result<Arc<CertifiedKey>> {
    parse_certified_key(certificate, true)
}

/// Parses a chain and key; `check` also verifies that the key is the leaf's, which webpki
/// cannot do for a TLS-ALPN-01 certificate (it refuses the critical acmeIdentifier
/// extension it does not know), so challenge certificates skip it.
fn parse_certified_key(certificate: &CertificatePem, check: bool) -> Result<Arc<CertifiedKey>> {
    let invalid = |message: String| Error::InvalidCertificate {
        names: certificate.names.clone(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate.chain_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| invalid(format!("the chain is not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("the chain holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes())
        .map_err(|e| invalid(format!("the key is not a PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = if check {
        CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| invalid(format!("the key does not fit the certificate: {e}")))?
    } else {
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| invalid(format!("the key cannot sign: {e}")))?;
        CertifiedKey::new(chain, signing)
    };
    Ok(Arc::new(key))
}
