//! Test support (feature `testing`): a real ACME CA on loopback, Debian's `pebble`, with
//! its mock DNS server (`pebble-challtestsrv`, every name → 127.0.0.1), HTTP-01 validation
//! pointed at a port of the caller's (the router's plain listener) and TLS-ALPN-01
//! validation at another (the router's TLS listener).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::AcmeConfig;

pub use anyhow::Result;

/// Whether pebble can be used; `CI=true` makes its absence a failure.
pub fn pebble_available(test: &str) -> bool {
    if Command::new("pebble").arg("-version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: pebble is not installed (apt-get install pebble); CI=true needs it");
    }
    eprintln!("SKIPPED {test}: pebble is not installed (apt-get install pebble)");
    false
}

/// A free loopback port (bound and released; pebble takes ports only by number).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running pebble (and the mock DNS server it resolves through: every name is
/// 127.0.0.1), killed on drop.
pub struct Pebble {
    child: Child,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    management: u16,
    /// The CA of pebble's own API certificate (PEM file).
    pub api_ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.child, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` (every name resolves to 127.0.0.1);
    /// TLS-ALPN-01 goes to a port where nothing listens.
    pub fn start(http_port: u16) -> Result<Pebble> {
        Pebble::start_validating(http_port, free_port())
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
    /// (every name resolves to 127.0.0.1).
    pub fn start_validating(http_port: u16, tls_port: u16) -> Result<Pebble> {
        let dir = tempfile::tempdir()?;
        // pebble's API needs a certificate of its own: a CA and a leaf for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
            .signed_by(&key, &issuer)?;
        let api_ca = dir.path().join("api-ca.pem");
        std::fs::write(&api_ca, ca_cert.pem())?;
        std::fs::write(dir.path().join("cert.pem"), leaf.pem())?;
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem())?;
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string())?;
        let dns_port = free_port();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("start pebble-challtestsrv: {e}"))?;
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("start pebble: {e}"))?;
        let pebble = Pebble {
            child,
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            api_ca,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("pebble did not listen on {listen} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pebble)
    }

    /// An [`AcmeConfig`] for this pebble.
    pub fn config(&self) -> AcmeConfig {
        AcmeConfig {
            directory: self.directory.clone(),
            contact: None,
            ca_root: Some(self.api_ca.clone()),
        }
    }

    /// The root that signs pebble's certificates (made anew at each start).
    pub async fn issuing_root(&self) -> Result<String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api_ca = std::fs::read_to_string(&self.api_ca)?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(api_ca.as_bytes())?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        Ok(client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}
