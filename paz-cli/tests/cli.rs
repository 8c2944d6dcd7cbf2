//! Runs the real `paz` binary: help, completions, usage errors and network errors. (End-to-end
//! tests against a real server live with `paz-server`.)

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt as _;
use predicates::str::contains;

fn paz() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paz"));
    // Keep the caller's environment from steering the tests.
    for var in ["PAZ_SERVER", "PAZ_TOKEN", "PAZ_OUTPUT", "PAZ_DATA_DIR"] {
        command.env_remove(var);
    }
    command
}

/// A loopback port where nothing listens (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_lists_the_commands_and_globals() {
    paz()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("service"))
        .stdout(contains("deploy"))
        .stdout(contains("rollback"))
        .stdout(contains("apply"))
        .stdout(contains("--server"))
        .stdout(contains("PAZ_TOKEN"));
}

#[test]
fn completions_are_printed_for_bash() {
    paz()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(contains("_paz()"))
        .stdout(contains("service"));
}

#[test]
fn env_without_equals_is_a_usage_error() {
    paz()
        .args([
            "service", "create", "web", "--image", "demo:v1", "--env", "BAD",
        ])
        .assert()
        .code(2)
        .stdout("")
        .stderr(contains("--env"))
        .stderr(contains("KEY=VALUE"));
}

#[test]
fn an_update_without_flags_is_a_usage_error() {
    // Detected before any request, so no server is needed.
    paz()
        .args(["--server", &format!("http://127.0.0.1:{}", closed_port())])
        .args(["service", "update", "web"])
        .assert()
        .code(2)
        .stderr(contains("nothing to update"));
}

#[test]
fn a_bad_server_url_is_a_usage_error() {
    paz()
        .args(["--server", "127.0.0.1:7700", "service", "list"])
        .assert()
        .code(2)
        .stderr(contains("invalid server URL"));
}

#[test]
fn an_unreachable_server_fails_with_a_connection_error() {
    paz()
        .args(["--server", "http://127.0.0.1:1", "service", "list"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains(
            "error: cannot connect to http://127.0.0.1:1/v1/services",
        ))
        .stderr(contains(
            "hint: is paz-server running at http://127.0.0.1:1?",
        ));
}

#[test]
fn a_missing_manifest_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    paz()
        .current_dir(dir.path())
        .args(["--server", &format!("http://127.0.0.1:{}", closed_port())])
        .args(["apply", "-f", "nope.toml", "--dry-run"])
        .assert()
        .code(2)
        .stderr(contains("cannot read the manifest nope.toml"));
}

#[test]
fn an_invalid_manifest_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("paz.toml"),
        "[services.Web]\nimage = \"demo:v1\"\n[services.api]\nimage = \"demo:v1\"\nports = [{ port = 0 }]\n",
    )
    .unwrap();
    paz()
        .current_dir(dir.path())
        .args(["apply", "--dry-run"])
        .assert()
        .code(2)
        .stderr(contains("services.Web.name"))
        .stderr(contains("services.api.ports[0].port"));
}

#[test]
fn help_lists_the_operations_commands() {
    paz()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("status"))
        .stdout(contains("logs"))
        .stdout(contains("promote"))
        .stdout(contains("abort"));
    paz()
        .args(["logs", "--help"])
        .assert()
        .success()
        .stdout(contains("--follow"))
        .stdout(contains("-f"))
        .stdout(contains("--tail <N>"));
}

#[test]
fn commands_without_their_service_are_usage_errors() {
    for command in ["promote", "abort", "logs"] {
        paz()
            .arg(command)
            .assert()
            .code(2)
            .stdout("")
            .stderr(contains("<NAME>"));
    }
}

#[test]
fn logs_tail_must_be_a_count() {
    for bad in ["-1", "all", "1.5"] {
        paz()
            .args(["logs", "web", "--tail", bad])
            .assert()
            .code(2)
            .stdout("")
            .stderr(contains(format!("'{bad}'")));
    }
}

#[test]
fn logs_and_status_fail_cleanly_without_a_server() {
    let server = format!("http://127.0.0.1:{}", closed_port());
    for args in [&["logs", "web", "-f"][..], &["status"], &["status", "web"]] {
        paz()
            .args(["--server", &server, "--token", "t"])
            .args(args)
            .assert()
            .code(1)
            .stdout("")
            .stderr(contains("error: cannot connect to"));
    }
}

/// A loopback HTTP server for one test: each request (one per connection) is answered by
/// `answer(method and path, request number)` with a status line and a body; every request
/// line is recorded.
struct Fake {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn fake(answer: impl Fn(&str, usize) -> (&'static str, String) + Send + Sync + 'static) -> Fake {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buf[..read]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let line = head.lines().next().unwrap_or_default();
            let target = line.rsplit_once(' ').map_or(line, |(t, _)| t).to_owned();
            seen.lock().unwrap().push(target.clone());
            let (status, body) = answer(&target, n);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    Fake { url, requests }
}

const CONTAINER: &str = "3f2a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";

fn log_body() -> String {
    format!(
        "{{\"instance\":\"{CONTAINER}\",\"stream\":\"stdout\",\"line\":\"listening on :8080\"}}\n\
         {{\"instance\":\"web-v2-1\",\"stream\":\"stderr\",\"line\":\"warning: slow\"}}\n"
    )
}

#[test]
fn logs_print_one_prefixed_line_each() {
    let server = fake(|_, _| ("200 OK", log_body()));
    paz()
        .args(["--server", &server.url, "--token", "t"])
        .args(["logs", "web", "--tail", "2"])
        .assert()
        .success()
        .stdout("3f2a9b1c2d3e | listening on :8080\nweb-v2-1 | warning: slow\n");
    assert_eq!(
        server.requests.lock().unwrap()[0],
        "GET /v1/services/web/logs?follow=false&tail=2"
    );
}

#[test]
fn logs_in_json_mode_are_ndjson() {
    let server = fake(|_, _| ("200 OK", log_body()));
    let output = paz()
        .args(["--server", &server.url, "--token", "t", "-o", "json"])
        .args(["logs", "web", "-f"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["instance"], CONTAINER);
    assert_eq!(lines[1]["stream"], "stderr");
    assert!(server.requests.lock().unwrap()[0].ends_with("?follow=true"));
}

#[test]
fn logs_without_a_scheduler_explain_why() {
    let server = fake(|_, _| {
        (
            "409 Conflict",
            r#"{"error":{"code":"NO_SCHEDULER","message":"this server runs no scheduler"}}"#.into(),
        )
    });
    paz()
        .args(["--server", &server.url, "--token", "t", "logs", "web"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("this server runs no scheduler (NO_SCHEDULER)"));
}

fn deployment(status: &str, steps: &[(&str, &str)], error: Option<&str>) -> String {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|(name, status)| serde_json::json!({"name": name, "status": status}))
        .collect();
    let mut value = serde_json::json!({
        "id": "web-4", "service": "web", "sequence": 4, "release": 2,
        "previous_release": 1, "strategy": "rolling", "status": status, "steps": steps,
        "trigger": {"kind": "deploy"}, "created_at": "2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:01Z",
    });
    if status != "pending" && status != "running" {
        value["finished_at"] = "2026-01-01T00:00:04.200Z".into();
    }
    if let Some(error) = error {
        value["error"] = error.into();
    }
    value.to_string()
}

/// A deploy that the fake moves on a little at each poll, ending `last` (`succeeded` or
/// `failed`).
fn deploying(last: &'static str) -> Fake {
    let start = format!("start v2 slot 0: {CONTAINER}");
    fake(move |target, n| {
        if target.starts_with("POST /v1/services/web/deploy") {
            return ("202 Accepted", deployment("pending", &[], None));
        }
        let first = ("deploying v2 (rolling)", "succeeded");
        let second = (start.as_str(), "succeeded");
        match n {
            1 => ("200 OK", deployment("running", &[first], None)),
            2 | 3 => ("200 OK", deployment("running", &[first, second], None)),
            _ if last == "succeeded" => (
                "200 OK",
                deployment("succeeded", &[first, second, ("done", "succeeded")], None),
            ),
            _ => (
                "200 OK",
                deployment(
                    "failed",
                    &[first, second, ("failed", "failed")],
                    Some("v2 slot 0 did not become healthy"),
                ),
            ),
        }
    })
}

#[test]
fn deploy_prints_each_step_once_then_the_outcome() {
    let server = deploying("succeeded");
    let output = paz()
        .args(["--server", &server.url, "--token", "t"])
        .args(["deploy", "web", "--image", "demo:v2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "");
    assert_eq!(
        stderr,
        "deploying release v2 of web (web-4, rolling)\n\
         \x20 ✓ deploying v2 (rolling)\n\
         \x20 ✓ start v2 slot 0: 3f2a9b1c2d3e\n\
         \x20 ✓ done\n\
         deployment web-4 succeeded in 3.2s\n"
    );
}

#[test]
fn a_failed_deploy_exits_1_with_the_reason() {
    let server = deploying("failed");
    let output = paz()
        .args(["--server", &server.url, "--token", "t", "-o", "json"])
        .args(["deploy", "web"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("start v2 slot 0").count(), 1, "{stderr}");
    assert!(
        stderr.ends_with(
            "  ✗ failed\n\
             deployment web-4 failed: v2 slot 0 did not become healthy\n\
             release v1 keeps serving\n"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("error:"), "{stderr}");
    // JSON mode: the deployment as it ended is the data on stdout.
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["status"], "failed");
}

#[test]
fn promote_without_a_canary_in_progress_fails() {
    let server = fake(|_, _| {
        (
            "409 Conflict",
            r#"{"error":{"code":"INVALID_STATE","message":"service \"web\" has no canary deployment in progress"}}"#
                .into(),
        )
    });
    paz()
        .args(["--server", &server.url, "--token", "t", "promote", "web"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("no canary deployment in progress (INVALID_STATE)"));
    assert_eq!(
        server.requests.lock().unwrap()[0],
        "POST /v1/services/web/promote"
    );
}

#[test]
fn abort_prints_the_deployment() {
    let server = fake(|_, _| {
        (
            "200 OK",
            deployment(
                "failed",
                &[("failed", "failed")],
                Some("aborted by the user"),
            ),
        )
    });
    paz()
        .args(["--server", &server.url, "--token", "t", "abort", "web"])
        .assert()
        .success()
        .stdout(contains("web-4"))
        .stdout(contains("aborted by the user"))
        .stderr("aborted web-4; release v1 keeps serving\n");
}

#[test]
fn status_lists_every_service() {
    let service = r#"{"spec":{"name":"web","image":"demo:v2","instances":2},"current_release":2,"latest_release":2,"latest_deployment":4,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","revision":3}"#;
    let server = fake(move |target, _| match target {
        "GET /v1/services" => ("200 OK", format!("[{service}]")),
        "GET /v1/services/web/status" => (
            "200 OK",
            format!(
                r#"{{"service":{service},"deployment":{},"instances":[{{"id":"{CONTAINER}","service":"web","release":2,"slot":0,"host":"h","state":"healthy"}}],"problems":[]}}"#,
                deployment("succeeded", &[("done", "succeeded")], None)
            ),
        ),
        _ => ("404 Not Found", String::new()),
    });
    paz()
        .args(["--server", &server.url, "--token", "t", "status"])
        .assert()
        .success()
        .stdout(
            "NAME  RELEASE  INSTANCES  LAST DEPLOYMENT  PROBLEMS\n\
             web   v2       1/2        web-4 succeeded  0\n",
        );
}

#[test]
fn service_show_lists_the_urls_the_service_is_served_at() {
    let service = r#"{"spec":{"name":"web","image":"demo:v2","instances":2,"ports":[{"port":8080}],"public":true,"domains":["www.example.com"]},"current_release":2,"latest_release":2,"latest_deployment":4,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","revision":3}"#;
    // The server reports its cluster domain and router port in /v1/health.
    let server = fake(move |target, _| match target {
        "GET /v1/services/web" => ("200 OK", service.to_owned()),
        "GET /v1/health" => (
            "200 OK",
            r#"{"status":"ok","version":"0.1.0","domain":"apps.example.net","router_port":8080}"#
                .to_owned(),
        ),
        _ => ("404 Not Found", String::new()),
    });
    paz()
        .args(["--server", &server.url, "--token", "t", "service", "show", "web"])
        .assert()
        .success()
        .stdout(contains(
            "served at  http://web.apps.example.net:8080/\n           http://www.example.com:8080/\n           http://web.paz/ (internal)\n",
        ))
        // A spec stored before `https_redirect` existed: redirected.
        .stdout(contains(
            "redirect   http → https (host names with a certificate)\n",
        ));
    // JSON is the API's, unchanged.
    paz()
        .args(["--server", &server.url, "--token", "t", "-o", "json"])
        .args(["service", "show", "web"])
        .assert()
        .success()
        .stdout(contains("\"domains\": [\n      \"www.example.com\"\n    ]"))
        .stdout(contains("served at").not());

    // An older server that reports neither: host names on the default domain, no port.
    let old = fake(move |target, _| match target {
        "GET /v1/services/web" => ("200 OK", service.to_owned()),
        "GET /v1/health" => ("200 OK", r#"{"status":"ok","version":"0.0.9"}"#.to_owned()),
        _ => ("404 Not Found", String::new()),
    });
    paz()
        .args([
            "--server", &old.url, "--token", "t", "service", "show", "web",
        ])
        .assert()
        .success()
        .stdout(contains("served at  http://web.localhost/\n"));
}
