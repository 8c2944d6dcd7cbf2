//! HTTPS at the router: certificates chosen by SNI, HTTP/2 and HTTP/1.1 by ALPN,
//! `X-Forwarded-Proto: https`, the plain listener's redirect and ACME HTTP-01 answers, HSTS,
//! ACME TLS-ALPN-01 challenge certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paz_proxy::{CertificatePem, Scope};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Client, TestBackend, TestRouter, active, get, request, table};

/// A CA and a leaf certificate for `names`, signed by it.
struct Pki {
    ca_pem: String,
    leaf: CertificatePem,
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "paz test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names.clone())
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf: CertificatePem {
            names,
            chain_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        },
    }
}

/// An HTTPS client trusting `ca_pem`, resolving `host` to `address`.
fn client(ca_pem: &str, host: &str, address: SocketAddr, http2_only: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(host, address)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if http2_only {
        builder = builder.http2_prior_knowledge();
    } else {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

async fn tls_listener(router: &TestRouter) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = router
        .router
        .serve_tls(listener, Scope::Public, router.stop.subscribe());
    std::mem::drop(served);
    address
}

#[tokio::test]
async fn https_with_sni_h2_and_http1_forwarded_proto_https() {
    let router = TestRouter::default().await;
    let backend = TestBackend::start("web").await;
    router
        .router
        .apply_table(&table(&[(
            "web.example.test",
            "web",
            vec![active(&backend)],
        )]))
        .unwrap();
    let pki = pki(&["web.example.test"]);
    router
        .router
        .set_certificates(std::slice::from_ref(&pki.leaf), None)
        .unwrap();
    let address = tls_listener(&router).await;

    for http2 in [true, false] {
        let client = client(&pki.ca_pem, "web.example.test", address, http2);
        let url = format!("https://web.example.test:{}/headers", address.port());
        let response = client.get(&url).send().await.unwrap();
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(response.version(), expected);
        assert_eq!(response.status(), 200);
        let echoed = response.text().await.unwrap().to_ascii_lowercase();
        assert!(echoed.contains("x-forwarded-proto: https"), "{echoed}");
        assert!(echoed.contains("host: web.example.test"), "{echoed}");
    }

    // An unknown name gets no certificate: the handshake fails.
    let other = client(&pki.ca_pem, "api.example.test", address, false);
    let refused = other
        .get(format!("https://api.example.test:{}/", address.port()))
        .send()
        .await;
    assert!(refused.is_err(), "no certificate for api.example.test");

    // Bad PEM is refused, and the served set is unchanged.
    let mut broken = pki.leaf.clone();
    broken.key_pem = "not a key".into();
    assert!(router.router.set_certificates(&[broken], None).is_err());
    assert_eq!(router.router.certificate_names(), ["web.example.test"]);
}

#[tokio::test]
async fn the_plain_listener_redirects_and_answers_acme_challenges() {
    let router = TestRouter::default().await;
    let backend = TestBackend::start("web").await;
    router
        .router
        .apply_table(&table(&[
            ("web.example.test", "web", vec![active(&backend)]),
            ("api.example.test", "api", vec![active(&backend)]),
        ]))
        .unwrap();
    // Without certificates nothing changes.
    let plain = get(router.public, "web.example.test", "/").await.unwrap();
    assert_eq!(plain.status, 200);

    router
        .router
        .set_acme_challenge("tok-1", "tok-1.thumbprint");
    let challenge = get(
        router.public,
        "api.example.test",
        "/.well-known/acme-challenge/tok-1",
    )
    .await
    .unwrap();
    assert_eq!(
        (challenge.status.as_u16(), challenge.body.as_str()),
        (200, "tok-1.thumbprint")
    );
    router.router.clear_acme_challenge("tok-1");
    let gone = get(
        router.public,
        "api.example.test",
        "/.well-known/acme-challenge/tok-1",
    )
    .await
    .unwrap();
    assert_eq!(gone.status, 200, "an unknown token goes to the backend");
    assert_eq!(gone.body.trim(), "web");

    let pki = pki(&["web.example.test"]);
    router
        .router
        .set_certificates(std::slice::from_ref(&pki.leaf), Some(8443))
        .unwrap();
    for path in ["/", "/a/b?c=1"] {
        let redirect = get(router.public, "web.example.test", path).await.unwrap();
        assert_eq!(redirect.status, 308, "{path}");
        assert_eq!(
            redirect.headers["location"],
            format!("https://web.example.test:8443{path}").as_str()
        );
    }
    let other = get(router.public, "api.example.test", "/").await.unwrap();
    assert_eq!(
        other.status, 200,
        "a host without a certificate is not redirected"
    );

    // HSTS on HTTPS answers only.
    router.router.set_hsts(Some(Duration::from_secs(3600)));
    let address = tls_listener(&router).await;
    let client = client(&pki.ca_pem, "web.example.test", address, true);
    let response = client
        .get(format!("https://web.example.test:{}/", address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=3600"
    );
}

/// A service that opts out of the HTTPS redirect (`https_redirect: false` on its routes) is
/// served over plain HTTP although it has a certificate, on the fast path and the general
/// one, and gets no HSTS over HTTPS; another service with a certificate is redirected (308).
#[tokio::test]
async fn a_route_that_opts_out_of_the_redirect_is_served_over_plain_http() {
    let router = TestRouter::default().await;
    let web = TestBackend::start("web").await;
    let plain = TestBackend::start("plain").await;
    let pki = pki(&["web.example.test", "plain.example.test"]);
    // Certificates first, the opt-out with the next table.
    router
        .router
        .set_certificates(std::slice::from_ref(&pki.leaf), Some(8443))
        .unwrap();
    router.router.set_hsts(Some(Duration::from_secs(3600)));
    let mut routes = table(&[
        ("web.example.test", "web", vec![active(&web)]),
        ("plain.example.test", "plain", vec![active(&plain)]),
    ]);
    routes
        .routes
        .get_mut("plain.example.test")
        .unwrap()
        .https_redirect = false;
    router.router.apply_table(&routes).unwrap();

    let redirected = get(router.public, "web.example.test", "/a").await.unwrap();
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.headers["location"],
        "https://web.example.test:8443/a"
    );
    // A simple GET (the fast path) and a request with a body (the general path).
    let served = get(router.public, "plain.example.test", "/").await.unwrap();
    assert_eq!(
        (served.status.as_u16(), served.body.as_str()),
        (200, "plain")
    );
    let mut client_conn = Client::connect(router.public).await.unwrap();
    let posted = client_conn
        .send(request(
            "POST",
            "plain.example.test",
            "/echo",
            Bytes::from_static(b"over plain http"),
        ))
        .await
        .unwrap();
    assert_eq!(
        (posted.status.as_u16(), posted.body.as_str()),
        (200, "over plain http")
    );
    // Over HTTPS: HSTS for the redirected service only.
    let address = tls_listener(&router).await;
    for (host, hsts) in [
        ("web.example.test", Some("max-age=3600")),
        ("plain.example.test", None),
    ] {
        let https = client(&pki.ca_pem, host, address, true);
        let response = https
            .get(format!("https://{host}:{}/", address.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
        assert_eq!(
            response
                .headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            hsts,
            "{host}"
        );
    }

    // Opting back in redirects it too.
    routes
        .routes
        .get_mut("plain.example.test")
        .unwrap()
        .https_redirect = true;
    router.router.apply_table(&routes).unwrap();
    let redirected = get(router.public, "plain.example.test", "/").await.unwrap();
    assert_eq!(redirected.status, 308);
}

#[tokio::test]
async fn without_sni_the_only_certificate_is_served() {
    let router = TestRouter::default().await;
    let backend = TestBackend::start("web").await;
    router
        .router
        .apply_table(&table(&[("127.0.0.1", "web", vec![active(&backend)])]))
        .unwrap();
    let ip = pki(&["127.0.0.1"]);
    router
        .router
        .set_certificates(std::slice::from_ref(&ip.leaf), None)
        .unwrap();
    let address = tls_listener(&router).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ip.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/", address.port());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "an IP address sends no SNI");

    // With two certificates there is no telling which: the handshake fails.
    let other = pki(&["api.example.test"]);
    router
        .router
        .set_certificates(&[ip.leaf.clone(), other.leaf.clone()], None)
        .unwrap();
    let fresh = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ip.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(fresh.get(&url).send().await.is_err());
}

/// Accepts any server certificate and signature (the test compares certificates itself).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // webpki, which checks handshake signatures, refuses the challenge certificate's
    // critical acmeIdentifier extension (an ACME CA reads it itself): the test compares
    // certificates, not signatures.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake with `name` as SNI offering `alpn`: the leaf served and the protocol
/// negotiated, and the stream.
async fn handshake(
    address: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<(
    Vec<u8>,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<TcpStream>,
)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let stream = connector.connect(server_name, tcp).await?;
    let (_, connection) = stream.get_ref();
    let leaf = connection.peer_certificates().unwrap()[0].to_vec();
    let protocol = connection.alpn_protocol().map(<[u8]>::to_vec);
    Ok((leaf, protocol, stream))
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// TLS-ALPN-01 (RFC 8737): a ClientHello offering exactly `acme-tls/1` gets the pending
/// challenge certificate of its SNI name, negotiates `acme-tls/1` and gets no HTTP; any other
/// ClientHello gets the served certificate; without a pending challenge (another name, or
/// once withdrawn) an `acme-tls/1` handshake fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_tls_alpn_hello_gets_the_challenge_certificate_and_no_http() {
    let router = TestRouter::default().await;
    let backend = TestBackend::start("web").await;
    router
        .router
        .apply_table(&table(&[(
            "web.example.test",
            "web",
            vec![active(&backend)],
        )]))
        .unwrap();
    let pki = pki(&["web.example.test", "api.example.test"]);
    router
        .router
        .set_certificates(std::slice::from_ref(&pki.leaf), None)
        .unwrap();
    let address = tls_listener(&router).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["web.example.test".into()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&[7; 32])];
    let challenge = params.self_signed(&key).unwrap();
    router
        .router
        .set_acme_tls_challenge("Web.Example.Test", &challenge.pem(), &key.serialize_pem())
        .unwrap();
    const ACME: &[u8] = b"acme-tls/1";

    let (leaf, protocol, mut stream) = handshake(address, "web.example.test", &[ACME])
        .await
        .unwrap();
    assert_eq!(leaf, challenge.der().to_vec(), "the challenge certificate");
    assert_eq!(protocol.as_deref(), Some(ACME));
    // No HTTP on it: the router closes the connection after the handshake.
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web.example.test\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the router closes the connection");
    assert!(
        answer.is_empty(),
        "no HTTP answer: {read:?} {:?}",
        String::from_utf8_lossy(&answer)
    );

    // Any other ALPN list (or none) gets the served certificate.
    let served = der(&pki.leaf.chain_pem);
    for (alpn, negotiated) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], Some(&b"h2"[..])),
        (&[b"http/1.1".as_slice(), ACME][..], Some(&b"http/1.1"[..])),
        (&[][..], None),
    ] {
        let (leaf, protocol, _) = handshake(address, "web.example.test", alpn).await.unwrap();
        assert_eq!(leaf, served, "{alpn:?}");
        assert_eq!(protocol.as_deref(), negotiated, "{alpn:?}");
    }
    // A name with a served certificate but no pending challenge: no certificate for
    // `acme-tls/1`, the handshake fails.
    assert!(
        handshake(address, "api.example.test", &[ACME])
            .await
            .is_err()
    );
    router.router.clear_acme_tls_challenge("web.example.test");
    assert!(
        handshake(address, "web.example.test", &[ACME])
            .await
            .is_err(),
        "withdrawn"
    );
    // HTTPS goes on as before.
    let client = client(&pki.ca_pem, "web.example.test", address, false);
    let url = format!("https://web.example.test:{}/", address.port());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
}

/// The body deadline on TLS connections (hyper's HTTP/1.1 and HTTP/2 servers): a body
/// trickled past it gets 408; over HTTP/1.1 the connection is then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_over_tls_past_the_body_deadline_gets_408() {
    let router = TestRouter::start(paz_proxy::RouterConfig {
        body_timeout: Some(Duration::from_secs(1)),
        ..paz_proxy::RouterConfig::default()
    })
    .await;
    let backend = TestBackend::start("web").await;
    router
        .router
        .apply_table(&table(&[(
            "web.example.test",
            "web",
            vec![active(&backend)],
        )]))
        .unwrap();
    let pki = pki(&["web.example.test"]);
    router
        .router
        .set_certificates(std::slice::from_ref(&pki.leaf), None)
        .unwrap();
    let address = tls_listener(&router).await;

    // HTTP/1.1: a byte every 300 ms of a 100-byte body.
    let (_, protocol, stream) = handshake(address, "web.example.test", &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]));
    let (mut reader, mut writer) = tokio::io::split(stream);
    writer
        .write_all(b"POST /echo HTTP/1.1\r\nHost: web.example.test\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let writing = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
        .await
        .expect("the router closes the connection");
    writing.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{read:?} {answer:?}"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");

    // HTTP/2: the stream gets 408.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let feeding = tokio::spawn(async move {
        while sender.send(Bytes::from_static(b"x")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let h2 = client(&pki.ca_pem, "web.example.test", address, true);
    let started = tokio::time::Instant::now();
    let response = h2
        .post(format!("https://web.example.test:{}/echo", address.port()))
        .body(reqwest::Body::wrap(crate::support::ChanBody::new(receiver)))
        .send()
        .await
        .unwrap();
    feeding.abort();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 408);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
}
