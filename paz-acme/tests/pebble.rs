//! Against a real ACME server: Debian's `pebble` on loopback, its HTTP-01 validation pointed
//! at Paz's router's plain listener and its TLS-ALPN-01 validation at the router's TLS
//! listener, which answer the challenges; the certificate issued is then served by the
//! router's TLS listener. Needs `pebble` (with `CI=true` a missing one fails the test).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use paz_acme::testing::{Pebble, free_port, pebble_available};
use paz_acme::{AcmeConfig, ChallengeKind, Challenges, Issuer};
use paz_core::route::{Backend, BackendState, Route, RouteTable};
use paz_proxy::{CertificatePem, Router, RouterConfig, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn https_client(root_pem: &str, resolve: Option<(&str, SocketAddr)>) -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes())?)
        .timeout(Duration::from_secs(10));
    if let Some((host, address)) = resolve {
        builder = builder.resolve(host, address);
    }
    Ok(builder.build()?)
}

/// The router answers the challenges.
struct RouterChallenges(Arc<Router>);

impl Challenges for RouterChallenges {
    fn publish(&self, token: &str, key_authorization: &str) {
        self.0.set_acme_challenge(token, key_authorization);
    }
    fn withdraw(&self, token: &str) {
        self.0.clear_acme_challenge(token);
    }
    fn publish_tls_alpn(&self, name: &str, certificate_pem: &str, key_pem: &str) {
        self.0
            .set_acme_tls_challenge(name, certificate_pem, key_pem)
            .unwrap();
    }
    fn withdraw_tls_alpn(&self, name: &str) {
        self.0.clear_acme_tls_challenge(name);
    }
}

/// Publishes nothing: every validation fails.
struct Silent;

impl Challenges for Silent {
    fn publish(&self, _: &str, _: &str) {}
    fn withdraw(&self, _: &str) {}
    fn publish_tls_alpn(&self, _: &str, _: &str, _: &str) {}
    fn withdraw_tls_alpn(&self, _: &str) {}
}

/// A backend answering "hello" to everything.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    address
}

fn table(host: &str, backend: SocketAddr) -> RouteTable {
    let mut table = RouteTable::default();
    let mut route = Route::new("web");
    route.backends.insert(
        backend.to_string(),
        Backend {
            weight: 1,
            state: BackendState::Active,
        },
    );
    table.routes.insert(host.into(), route);
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_through_the_router_and_served_renewed_and_refused() -> Result<()> {
    if !pebble_available(
        "a_certificate_is_issued_through_the_router_and_served_renewed_and_refused",
    ) {
        return Ok(());
    }
    let router = Router::new(RouterConfig::default());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let plain_port = plain.local_addr()?.port();
    router.serve(plain, Scope::Public, shutdown.clone());
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let tls_address = tls.local_addr()?;
    router.serve_tls(tls, Scope::Public, shutdown.clone());
    router.apply_table(&table("web.localhost", backend().await))?;

    let pebble = Pebble::start(plain_port)?;
    let (issuer, credentials) = Issuer::connect(&pebble.config(), None).await?;
    let names = vec!["web.localhost".to_owned()];
    let started = Instant::now();
    let issued = issuer
        .issue(
            &names,
            ChallengeKind::Http01,
            &RouterChallenges(router.clone()),
        )
        .await?;
    eprintln!(
        "issued in {:?}, expires {}",
        started.elapsed(),
        issued.not_after
    );
    assert!(issued.not_after > jiff::Timestamp::now());
    router.set_certificates(
        &[CertificatePem {
            names: names.clone(),
            chain_pem: issued.chain_pem.clone(),
            key_pem: issued.key_pem.clone(),
        }],
        Some(tls_address.port()),
    )?;
    let root = pebble.issuing_root().await?;
    let client = https_client(&root, Some(("web.localhost", tls_address)))?;
    let url = format!("https://web.localhost:{}/", tls_address.port());
    let response = client.get(&url).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "hello");

    // The account is kept: a restored one issues again (a renewal), with a new key.
    let (again, _) = Issuer::connect(&pebble.config(), Some(&credentials)).await?;
    let renewed = again
        .issue(
            &names,
            ChallengeKind::Http01,
            &RouterChallenges(router.clone()),
        )
        .await?;
    assert_ne!(renewed.key_pem, issued.key_pem, "a renewal has a new key");
    assert_ne!(renewed.chain_pem, issued.chain_pem);

    // A challenge nobody answers fails the order with the CA's reason.
    let failed = issuer
        .issue(
            &["nobody.localhost".to_owned()],
            ChallengeKind::Http01,
            &Silent,
        )
        .await
        .unwrap_err();
    let message = failed.to_string();
    assert!(
        message.contains("nobody.localhost") && message.contains("unauthorized"),
        "the CA's reason is in the error: {message}"
    );
    Ok(())
}

/// The manager end to end on pebble: a certificate for each public name, kept in the store
/// and served; renewed when due; a CA that cannot be reached is a failure visible in its
/// problems with backoff; a name no service uses any more loses its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_issues_renews_backs_off_and_drops() -> Result<()> {
    use paz_acme::{CertManager, CertState, ManagerConfig};
    use paz_core::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger};
    if !pebble_available("the_manager_issues_renews_backs_off_and_drops") {
        return Ok(());
    }
    let router = Router::new(RouterConfig::default());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let pebble = Pebble::start(plain.local_addr()?.port())?;
    router.serve(plain, Scope::Public, shutdown.clone());
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let tls_address = tls.local_addr()?;
    router.serve_tls(tls, Scope::Public, shutdown.clone());
    router.apply_table(&table("web.localhost", backend().await))?;

    let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
    let mut web = ServiceSpec::new("web", "demo:v1");
    web.public = true;
    web.ports.push(paz_core::PortSpec {
        port: 8080,
        protocol: paz_core::Protocol::Http,
    });
    paz.create_service(web, Trigger::create()).await?;
    let published = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let publish: paz_acme::Publish = {
        let (router, published) = (router.clone(), published.clone());
        Arc::new(move |certificates: &[paz_core::engine::Certificate]| {
            let pems: Vec<CertificatePem> = certificates
                .iter()
                .map(|c| CertificatePem {
                    names: vec![c.name.clone()],
                    chain_pem: c.chain_pem.clone(),
                    key_pem: c.key_pem.clone(),
                })
                .collect();
            router.set_certificates(&pems, None).unwrap();
            *published.lock().unwrap() = certificates.iter().map(|c| c.chain_pem.clone()).collect();
        })
    };
    let mut config = ManagerConfig::new(pebble.config());
    let manager = CertManager::new(
        paz.clone(),
        config.clone(),
        Arc::new(RouterChallenges(router.clone())),
        publish.clone(),
    );
    let (mut issuer, mut served) = (None, None);
    manager.pass(&mut issuer, &mut served).await?;
    let stored = paz.certificates().await?;
    assert_eq!(stored.len(), 1, "one certificate, for web.localhost");
    assert!(matches!(
        manager.states_now()["web.localhost"],
        CertState::Valid { .. }
    ));
    assert!(
        paz.acme_account(&pebble.directory).await?.is_some(),
        "the account is kept"
    );
    let client = https_client(
        &pebble.issuing_root().await?,
        Some(("web.localhost", tls_address)),
    )?;
    let url = format!("https://web.localhost:{}/", tls_address.port());
    assert_eq!(client.get(&url).send().await?.text().await?, "hello");

    // Not due: nothing new. Due (renew_before beyond its expiry): a new one, served.
    manager.pass(&mut issuer, &mut served).await?;
    assert_eq!(paz.certificates().await?[0].chain_pem, stored[0].chain_pem);
    config.renew_before = Duration::from_secs(100 * 365 * 24 * 3600);
    let renewing = CertManager::new(
        paz.clone(),
        config,
        Arc::new(RouterChallenges(router.clone())),
        publish.clone(),
    );
    renewing.pass(&mut None, &mut served).await?;
    let renewed = paz.certificates().await?;
    assert_ne!(renewed[0].chain_pem, stored[0].chain_pem, "renewed");
    assert_eq!(
        published.lock().unwrap().as_slice(),
        [renewed[0].chain_pem.clone()]
    );

    // A CA that does not answer: a failure with backoff, shown in the problems.
    paz.delete_certificate("web.localhost").await?;
    let mut dead = ManagerConfig::new(AcmeConfig {
        directory: format!("https://127.0.0.1:{}/dir", free_port()),
        ..pebble.config()
    });
    dead.backoff = Duration::from_secs(600);
    let failing = CertManager::new(paz.clone(), dead, Arc::new(Silent), publish.clone());
    failing.pass(&mut None, &mut None).await?;
    failing.pass(&mut None, &mut None).await?;
    match &failing.states_now()["web.localhost"] {
        CertState::Failed { attempts, .. } => assert_eq!(*attempts, 1, "the second pass waits"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let problems = failing.problems(&["web.localhost".to_owned()]);
    assert!(problems[0].contains("next attempt in"), "{problems:?}");

    // The service goes: so does its certificate.
    manager.pass(&mut issuer, &mut served).await?;
    assert_eq!(paz.certificates().await?.len(), 1);
    paz.delete_service("web", None).await?;
    manager.pass(&mut issuer, &mut served).await?;
    assert!(paz.certificates().await?.is_empty());
    assert!(
        published.lock().unwrap().is_empty(),
        "the router serves none"
    );
    Ok(())
}

/// TLS-ALPN-01 end to end on pebble: its validation connects to the router's TLS listener
/// (nothing answers HTTP-01: pebble's HTTP port is closed), the router serves the challenge
/// certificate to the `acme-tls/1` handshake, and the certificate issued is then served to
/// ordinary HTTPS clients; the manager issues through it too when configured so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_through_tls_alpn_01_on_the_routers_tls_listener() -> Result<()> {
    use paz_acme::{CertManager, CertState, ManagerConfig};
    use paz_core::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger};
    let test = "a_certificate_is_issued_through_tls_alpn_01_on_the_routers_tls_listener";
    if !pebble_available(test) {
        return Ok(());
    }
    let router = Router::new(RouterConfig::default());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let tls_address = tls.local_addr()?;
    router.serve_tls(tls, Scope::Public, shutdown.clone());
    router.apply_table(&table("web.localhost", backend().await))?;
    // HTTP-01 would go to a port where nothing listens.
    let pebble = Pebble::start_validating(free_port(), tls_address.port())?;

    let (issuer, _) = Issuer::connect(&pebble.config(), None).await?;
    let names = vec!["web.localhost".to_owned()];
    let issued = issuer
        .issue(
            &names,
            ChallengeKind::TlsAlpn01,
            &RouterChallenges(router.clone()),
        )
        .await?;
    assert!(issued.not_after > jiff::Timestamp::now());
    router.set_certificates(
        &[CertificatePem {
            names: names.clone(),
            chain_pem: issued.chain_pem.clone(),
            key_pem: issued.key_pem.clone(),
        }],
        Some(tls_address.port()),
    )?;
    let root = pebble.issuing_root().await?;
    let client = https_client(&root, Some(("web.localhost", tls_address)))?;
    let url = format!("https://web.localhost:{}/", tls_address.port());
    let response = client.get(&url).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "hello");

    // Nobody serves the challenge certificate: the CA's validation fails the order.
    let failed = issuer
        .issue(
            &["nobody.localhost".to_owned()],
            ChallengeKind::TlsAlpn01,
            &Silent,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        failed.contains("nobody.localhost")
            && failed.contains("tls-alpn-01")
            && failed.contains("unauthorized"),
        "{failed}"
    );

    // The manager, configured for tls-alpn-01, issues the same way.
    let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
    let mut web = ServiceSpec::new("web", "demo:v1");
    web.public = true;
    web.ports.push(paz_core::PortSpec {
        port: 8080,
        protocol: paz_core::Protocol::Http,
    });
    paz.create_service(web, Trigger::create()).await?;
    let mut config = ManagerConfig::new(pebble.config());
    config.challenge = ChallengeKind::TlsAlpn01;
    let publish: paz_acme::Publish = Arc::new(|_: &[paz_core::engine::Certificate]| {});
    let manager = CertManager::new(
        paz.clone(),
        config,
        Arc::new(RouterChallenges(router.clone())),
        publish,
    );
    manager.pass(&mut None, &mut None).await?;
    assert!(
        matches!(
            manager.states_now()["web.localhost"],
            CertState::Valid { .. }
        ),
        "{:?}",
        manager.states_now()
    );
    assert_eq!(paz.certificates().await?.len(), 1);
    Ok(())
}

/// Each certificate is served as soon as it is issued, not after the orders of the other
/// names; prints how long from issued (the CA's answer, `issued_at`) to served (the router
/// swapped it in, so the next handshake gets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_is_served_as_soon_as_it_is_issued() -> Result<()> {
    use paz_acme::{CertManager, ManagerConfig};
    use paz_core::{EngineConfig, MemoryStore, Paz, ServiceSpec, Trigger};
    if !pebble_available("each_certificate_is_served_as_soon_as_it_is_issued") {
        return Ok(());
    }
    let router = Router::new(RouterConfig::default());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let pebble = Pebble::start(plain.local_addr()?.port())?;
    router.serve(plain, Scope::Public, shutdown.clone());
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let tls_address = tls.local_addr()?;
    router.serve_tls(tls, Scope::Public, shutdown.clone());
    let backend = backend().await;
    let mut routes = table("a.localhost", backend);
    routes.routes.extend(table("b.localhost", backend).routes);
    router.apply_table(&routes)?;

    let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
    for name in ["a", "b"] {
        let mut spec = ServiceSpec::new(name, "demo:v1");
        spec.public = true;
        spec.ports.push(paz_core::PortSpec {
            port: 8080,
            protocol: paz_core::Protocol::Http,
        });
        paz.create_service(spec, Trigger::create()).await?;
    }
    // Per publish: the names served and how long since the newest was issued.
    let publishes = Arc::new(std::sync::Mutex::new(Vec::<(Vec<String>, Duration)>::new()));
    let publish: paz_acme::Publish = {
        let (router, publishes) = (router.clone(), publishes.clone());
        Arc::new(move |certificates: &[paz_core::engine::Certificate]| {
            let pems: Vec<CertificatePem> = certificates
                .iter()
                .map(|c| CertificatePem {
                    names: vec![c.name.clone()],
                    chain_pem: c.chain_pem.clone(),
                    key_pem: c.key_pem.clone(),
                })
                .collect();
            router.set_certificates(&pems, None).unwrap();
            let newest = certificates.iter().map(|c| c.issued_at).max();
            let since = newest
                .map(|at| jiff::Timestamp::now().duration_since(at))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            let names = certificates.iter().map(|c| c.name.clone()).collect();
            publishes.lock().unwrap().push((names, since));
        })
    };
    let manager = CertManager::new(
        paz.clone(),
        ManagerConfig::new(pebble.config()),
        Arc::new(RouterChallenges(router.clone())),
        publish,
    );
    manager.pass(&mut None, &mut None).await?;
    // (The pass starts by serving what the store has: nothing here.)
    let publishes: Vec<_> = publishes
        .lock()
        .unwrap()
        .iter()
        .filter(|(names, _)| !names.is_empty())
        .cloned()
        .collect();
    let served: Vec<Vec<String>> = publishes.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        served,
        [
            vec!["a.localhost".to_owned()],
            vec!["a.localhost".to_owned(), "b.localhost".to_owned()]
        ],
        "the first certificate is served before the second is ordered"
    );
    let root = pebble.issuing_root().await?;
    for host in ["a.localhost", "b.localhost"] {
        let client = https_client(&root, Some((host, tls_address)))?;
        let url = format!("https://{host}:{}/", tls_address.port());
        assert_eq!(client.get(&url).send().await?.text().await?, "hello");
    }
    for (names, since) in &publishes {
        eprintln!(
            "issued -> served: {:.2} ms ({} certificates served)",
            since.as_secs_f64() * 1000.0,
            names.len()
        );
        assert!(*since < Duration::from_secs(1), "{since:?}");
    }
    Ok(())
}
