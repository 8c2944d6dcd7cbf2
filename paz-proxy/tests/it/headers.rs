use hyper::StatusCode;
use paz_core::proxy::Proxy;

use crate::support::{Client, TestBackend, TestRouter, active, table};

fn header_lines(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn value<'a>(lines: &'a [(String, String)], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_hop_by_hop_removed() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    let host = format!("web.localhost:{}", r.public.port());
    let req = hyper::Request::builder()
        .uri("/headers")
        .header("host", &host)
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-kept", "end-to-end")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = client.send(req).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let lines = header_lines(&answer.body);
    assert_eq!(value(&lines, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(value(&lines, "x-forwarded-proto"), Some("http"));
    assert_eq!(value(&lines, "x-forwarded-host"), Some(host.as_str()));
    assert_eq!(value(&lines, "host"), Some(host.as_str()), "Host is kept");
    assert_eq!(value(&lines, "x-kept"), Some("end-to-end"));
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert_eq!(
            value(&lines, gone),
            None,
            "{gone} must not reach the backend"
        );
    }
    // `connection` may be set by hyper itself, but never carry the client's options.
    assert!(
        value(&lines, "connection").is_none_or(|v| !v.contains("x-secret")),
        "{lines:?}"
    );
    // The backend's `keep-alive` header does not reach the client either.
    let answer = client.get("web.localhost", "/").await.unwrap();
    assert_eq!(answer.body, "b");
    assert!(
        answer.headers.get("keep-alive").is_none(),
        "{:?}",
        answer.headers
    );
}

/// The client's `X-Forwarded-For` (and `Forwarded`, `X-Real-IP`) as seen by the backend,
/// from a router that trusts `trusted`.
async fn forwarded_seen(trusted: Vec<std::net::IpAddr>) -> Vec<(String, String)> {
    let b = TestBackend::start("b").await;
    let r = TestRouter::start(paz_proxy::RouterConfig {
        trusted_proxies: trusted,
        ..paz_proxy::RouterConfig::default()
    })
    .await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    let req = hyper::Request::builder()
        .uri("/headers")
        .header("host", "web.localhost")
        .header("x-forwarded-for", "203.0.113.7")
        .header("forwarded", "for=203.0.113.7")
        .header("x-real-ip", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = client.send(req).await.unwrap();
    header_lines(&answer.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_replaced_at_the_edge() {
    // Was `forwarded_for_is_appended`: a client's forged chain is no longer kept.
    let lines = forwarded_seen(Vec::new()).await;
    assert_eq!(value(&lines, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(value(&lines, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        value(&lines, "forwarded"),
        Some("for=127.0.0.1;host=\"web.localhost\";proto=http")
    );
    assert_eq!(value(&lines, "x-real-ip"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_appended_from_a_trusted_proxy() {
    let lines = forwarded_seen(vec!["127.0.0.1".parse().unwrap()]).await;
    assert_eq!(
        value(&lines, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        value(&lines, "forwarded"),
        Some("for=203.0.113.7, for=127.0.0.1;host=\"web.localhost\";proto=http")
    );
    assert_eq!(value(&lines, "x-forwarded-proto"), Some("https"));
    assert_eq!(value(&lines, "x-real-ip"), Some("203.0.113.7"));
}
