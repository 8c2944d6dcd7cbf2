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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_appended() {
    let b = TestBackend::start("b").await;
    let r = TestRouter::default().await;
    r.router
        .apply(&table(&[("web.localhost", "web", vec![active(&b)])]))
        .await
        .unwrap();
    let mut client = Client::connect(r.public).await.unwrap();
    let req = hyper::Request::builder()
        .uri("/headers")
        .header("host", "web.localhost")
        .header("x-forwarded-for", "203.0.113.7")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = client.send(req).await.unwrap();
    let lines = header_lines(&answer.body);
    assert_eq!(
        value(&lines, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}
