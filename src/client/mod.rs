//! The typed REST client of a `paz-server`.
//!
//! [`Client`] and its setup live here; its calls are grouped by concern: `services`
//! (services, scaling, instances, status), `deployments` (deploy, rollback, canaries,
//! releases, history, waiting), `stream` (the event and log streams), on top of `request`
//! (building and sending requests) and `error` ([`Error`] and error answers). `decode` turns
//! streamed bodies (SSE, NDJSON) into items.

mod admin;
mod decode;
mod deployments;
mod error;
mod hooks;
mod request;
mod secrets;
mod services;
mod stream;
#[cfg(test)]
mod testing;
mod tokens;

use std::fmt;
use std::time::Duration;

use paz_core::Host;
use paz_core::api::HealthResponse;
use reqwest::header::HeaderValue;
use reqwest::{Method, Url};

pub use error::Error;
pub use services::ServiceStatus;
pub use stream::{EventStream, LogLines};

use request::NoBody;

/// How long a non-streaming request may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Drops an empty token; rejects one that cannot be sent in a header.
fn check_token(token: Option<String>) -> Result<Option<String>, Error> {
    let token = token.filter(|t| !t.is_empty());
    if let Some(token) = &token
        && HeaderValue::from_str(&format!("Bearer {token}")).is_err()
    {
        return Err(Error::InvalidToken);
    }
    Ok(token)
}

/// A typed client of a `paz-server`'s REST API (`/v1/…`).
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn run() -> Result<(), paz::Error> {
/// use paz::{Client, ServiceSpec};
///
/// let client = Client::new("http://127.0.0.1:7700", Some("my-token".into()))?;
/// let created = client.create_service(&ServiceSpec::new("web", "demo:v1")).await?;
/// let deployment = client.deploy("web", Some("demo:v2".into())).await?;
/// println!("{} is at revision {}; deploying {}", created.spec.name, created.revision, deployment.id);
/// match client.service("nope").await {
///     Err(e) if e.code() == Some("SERVICE_NOT_FOUND") => println!("no such service"),
///     other => println!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7700`), sending `token`
    /// as a bearer token when given.
    ///
    /// Fails with [`Error::InvalidUrl`] when the URL is not an absolute `http`/`https` URL
    /// without credentials, query or fragment, and with [`Error::InvalidToken`] when the token
    /// cannot be sent in a header.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("it must not have a query or fragment"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "it must not carry credentials; pass the token separately",
            ));
        }
        // Requests are built by appending segments, so a path prefix (a server mounted
        // under `/paz/`) is kept; drop a trailing empty segment.
        if base.path().ends_with('/') {
            let trimmed = base.path().trim_end_matches('/').to_owned();
            base.set_path(&trimmed);
        }
        let token = check_token(token)?;
        // reqwest is built with `rustls-no-provider`: the process needs a crypto provider.
        // Installing fails harmlessly when the program already installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("paz-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Http)?;
        Ok(Client {
            http,
            base,
            token,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client trusting the PEM root certificate(s) `ca_pem` for `https://` servers
    /// (a private CA), besides the system's roots. Certificates are always verified.
    pub fn with_root_certificates(mut self, ca_pem: &[u8]) -> Result<Client, Error> {
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem).map_err(Error::Http)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("paz-client/", env!("CARGO_PKG_VERSION")));
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        self.http = builder.build().map_err(Error::Http)?;
        Ok(self)
    }

    /// Sets how long each non-streaming request may take (default 30 s). The event stream
    /// has no overall timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client with another bearer token (`None`: send none). Fails with
    /// [`Error::InvalidToken`] when the token cannot be sent in a header.
    pub fn with_token(mut self, token: Option<String>) -> Result<Client, Error> {
        self.token = check_token(token)?;
        Ok(self)
    }

    /// The server's base URL, normalized (e.g. `http://127.0.0.1:7700/`).
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /v1/health`: whether the server and its store answer (no token needed).
    pub async fn health(&self) -> Result<HealthResponse, Error> {
        self.call(Method::GET, &["v1", "health"], NoBody, None)
            .await
    }

    /// `GET /v1/cluster`: the replicas sharing the store, the leader, the routers and the
    /// store's health.
    pub async fn cluster(&self) -> Result<paz_core::cluster::ClusterStatus, Error> {
        self.call(Method::GET, &["v1", "cluster"], NoBody, None)
            .await
    }

    /// `GET /v1/hosts`: the machines that run instances.
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        self.call(Method::GET, &["v1", "hosts"], NoBody, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_names_escaped() {
        for bad in [
            "",
            "127.0.0.1:7700",
            "ftp://x",
            "http://",
            "http://h/?q=1",
            "http://u:p@h",
        ] {
            assert!(
                matches!(Client::new(bad, None), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let client = Client::new("http://127.0.0.1:7700/", None).unwrap();
        assert_eq!(
            client.url(&["v1", "services", "a/b c"]).as_str(),
            "http://127.0.0.1:7700/v1/services/a%2Fb%20c"
        );
        let client = Client::new("https://paz.example.com/api/", None).unwrap();
        assert_eq!(
            client.url(&["v1", "hosts"]).as_str(),
            "https://paz.example.com/api/v1/hosts"
        );
        assert!(matches!(
            Client::new("http://h", Some("bad\ntoken".into())),
            Err(Error::InvalidToken)
        ));
        assert_eq!(client.base_url(), "https://paz.example.com/api");
        assert!(
            !format!(
                "{:?}",
                Client::new("http://h", Some("s3cret".into())).unwrap()
            )
            .contains("s3cret")
        );
    }
}
