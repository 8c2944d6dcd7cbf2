//! Settings of the etcd store, from a store URL (`etcd://h1:2379,h2:2379/namespace`).

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::Error;

/// How to reach etcd.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`, or `https://…` with [`EtcdConfig::tls`]).
    pub endpoints: Vec<String>,
    /// Prepended to every key (empty by default): several Paz clusters can share one etcd.
    pub namespace: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one request may take before it fails (then the API answers 503).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive: a ping this often on an idle connection…
    pub keep_alive_interval: Duration,
    /// …and the connection counted dead when the answer takes longer (which ends watches, so
    /// they reconnect, possibly to another member).
    pub keep_alive_timeout: Duration,
    /// User and password (etcd auth); the token is refreshed when it expires.
    pub user: Option<(String, String)>,
    /// TLS to the members.
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("namespace", &self.namespace)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// TLS settings: the CA that signed the members' certificates and, for client-certificate
/// auth, this client's certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    /// The CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), with [`EtcdTls::key`].
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM).
    pub key: Option<PathBuf>,
    /// The name to verify the members' certificates against, when the endpoints are IP
    /// addresses (rustls checks DNS names only).
    pub domain: Option<String>,
}

/// Default connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

impl EtcdConfig {
    /// Plain-HTTP endpoints with the default timeouts.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: String::new(),
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            keep_alive_interval: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(2),
            user: None,
            tls: None,
        }
    }

    /// Parses a store URL: `etcd://host:port[,host:port…][/namespace]`, or `etcds://…` for
    /// TLS (then set [`EtcdConfig::tls`]'s CA). A user and password go in settings, not in
    /// the URL (a URL shows in process lists).
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::InvalidConfig(format!(
                "{url:?}: {why} (expected etcd://host:port[,host:port…][/namespace])"
            ))
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            ("https", rest)
        } else {
            return Err(invalid("the scheme must be etcd:// or etcds://"));
        };
        let (hosts, namespace) = match rest.split_once('/') {
            Some((hosts, namespace)) => (hosts, namespace),
            None => (rest, ""),
        };
        if hosts.contains('@') {
            return Err(invalid(
                "put the user and password in --etcd-user and --etcd-password-file, not in the URL",
            ));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let Some((name, port)) = host.rsplit_once(':') else {
                return Err(invalid(&format!("{host:?} has no port")));
            };
            if name.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid(&format!("{host:?} is not host:port")));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        let namespace = namespace.trim_end_matches('/');
        if namespace
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("the namespace has spaces or control characters"));
        }
        let mut config = EtcdConfig::new(endpoints);
        if !namespace.is_empty() {
            config.namespace = format!("/{namespace}");
        }
        if scheme == "https" {
            config.tls = Some(EtcdTls::default());
        }
        Ok(config)
    }

    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(self.keep_alive_interval, self.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((name, password)) = &self.user {
            options = options
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.tls {
            if self.endpoints.iter().any(|e| e.starts_with("http://")) {
                return Err(Error::InvalidConfig(
                    "TLS settings need etcds:// (https) endpoints".into(),
                ));
            }
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|source| Error::TlsFile {
                    path: path.clone(),
                    source,
                })
            };
            let mut client = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                client = client.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    client = client.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::InvalidConfig(
                        "a client certificate needs both --etcd-cert and --etcd-key".into(),
                    ));
                }
            }
            if let Some(domain) = &tls.domain {
                client = client.domain_name(domain.clone());
            }
            options = options.with_tls(client);
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_endpoints_and_a_namespace() {
        let config = EtcdConfig::parse("etcd://10.0.0.1:2379,h2:2379/prod/").unwrap();
        assert_eq!(config.endpoints, ["http://10.0.0.1:2379", "http://h2:2379"]);
        assert_eq!(config.namespace, "/prod");
        assert_eq!(config.tls, None);
        let tls = EtcdConfig::parse("etcds://h:2379").unwrap();
        assert_eq!(tls.endpoints, ["https://h:2379"]);
        assert!(tls.tls.is_some());
        assert_eq!(tls.namespace, "");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("http://h:2379", "scheme"),
            ("etcd://h", "no port"),
            ("etcd://h:0", "not host:port"),
            ("etcd://:2379", "not host:port"),
            ("etcd://h:99999", "not host:port"),
            ("etcd://user:pw@h:2379", "--etcd-user"),
            ("etcd://h:1,h2", "no port"),
            ("etcd://h:1/a b", "spaces"),
        ] {
            let error = EtcdConfig::parse(url).unwrap_err().to_string();
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    #[test]
    fn tls_needs_https_endpoints_and_a_whole_identity() {
        let mut config = EtcdConfig::parse("etcd://h:2379").unwrap();
        config.tls = Some(EtcdTls::default());
        assert!(
            config
                .connect_options()
                .unwrap_err()
                .to_string()
                .contains("etcds://")
        );
        let mut config = EtcdConfig::parse("etcds://h:2379").unwrap();
        config.tls = Some(EtcdTls {
            cert: Some("/nonexistent.pem".into()),
            ..EtcdTls::default()
        });
        assert!(
            config
                .connect_options()
                .unwrap_err()
                .to_string()
                .contains("--etcd-key")
        );
        config.tls = Some(EtcdTls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..EtcdTls::default()
        });
        assert!(
            config
                .connect_options()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let mut config = EtcdConfig::parse("etcd://h:2379").unwrap();
        config.user = Some(("paz".into(), "s3cret".into()));
        let shown = format!("{config:?}");
        assert!(
            shown.contains("paz") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
