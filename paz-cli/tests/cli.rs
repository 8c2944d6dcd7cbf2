//! Runs the real `paz` binary: help, completions, usage errors and network errors. (End-to-end
//! tests against a real server live with `paz-server`.)

use assert_cmd::Command;
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
