//! TLS at the router: the certificates it serves, chosen by SNI ([`Certificates`]), and the
//! rustls server configuration (ALPN `h2` and `http/1.1`; rustls with ring, the workspace's
//! one TLS stack).

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

/// The certificates the router serves, by host name; swapped whole without a lock on the
/// handshake path.
#[derive(Default)]
pub struct Certificates {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
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
    /// HTTP/2 and HTTP/1.1 (ALPN).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
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

/// Parses a chain and key and checks that they belong together.
fn certified_key(certificate: &CertificatePem) -> Result<Arc<CertifiedKey>> {
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
    let key = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| invalid(format!("the key does not fit the certificate: {e}")))?;
    Ok(Arc::new(key))
}
