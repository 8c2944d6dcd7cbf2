//! Test helpers shared by the client's tests: loopback servers and canned bodies.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

pub const EVENT: &str =
    r#"{"revision":5,"at":"2026-01-01T00:00:00Z","type":"service_created","service":"web"}"#;

pub const LOG: &str =
    r#"{"instance":"3f2a9b1c2d3e4f","stream":"stdout","line":"listening on :8080"}"#;

/// Serves one canned HTTP answer on a loopback port; returns the base URL and the raw
/// request it received.
pub fn one_shot_server(status: &str, body: &str) -> (String, mpsc::Receiver<String>) {
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length {
                    tx.send(text).unwrap();
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        stream.write_all(answer.as_bytes()).unwrap();
    });
    (url, rx)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn service_json() -> String {
    r#"{"spec":{"name":"web","image":"demo:v1"},"current_release":1,"latest_release":1,"latest_deployment":1,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","revision":3}"#.to_owned()
}

pub fn deployment_json(id: &str, status: &str) -> String {
    format!(
        r#"{{"id":"{id}","service":"web","sequence":4,"release":2,"previous_release":1,"strategy":"rolling","status":"{status}","trigger":{{"kind":"deploy"}},"created_at":"2026-01-01T00:00:00Z"}}"#
    )
}

/// A loopback HTTP server that answers every connection (one request each) with
/// `answer(request head)`: the raw status line, extra headers and body. An answer with
/// `keep_open` stays open (an event stream with nothing more to say).
pub fn fake_server(
    answer: impl Fn(&str) -> (String, String, bool) + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let (status, body, keep_open) = answer(&head);
                let content_type = if keep_open || head.starts_with("GET /v1/events") {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let length = if keep_open {
                    String::new()
                } else {
                    format!("content-length: {}\r\n", body.len())
                };
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{length}connection: close\r\n\r\n{body}")
                        .as_bytes(),
                );
                let _ = stream.flush();
                if keep_open {
                    std::thread::sleep(Duration::from_secs(10));
                }
            });
        }
    });
    url
}
