//! `paz admin export` and `paz admin import` between two real servers (embedded stores).

use std::os::unix::fs::PermissionsExt as _;

use anyhow::Result;
use serde_json::Value;

use crate::support::{Server, json_of, paz};

/// What `paz` shows of every service, their releases and deploy histories (the services'
/// `revision` aside: each store counts its own).
fn state(server: &Server, data: &std::path::Path) -> Value {
    let mut services = json_of(&paz(server, data, &["service", "list", "-o", "json"]));
    let mut all = Vec::new();
    for service in services.as_array_mut().unwrap() {
        service.as_object_mut().unwrap().remove("revision");
        let name = service["spec"]["name"].as_str().unwrap().to_owned();
        let releases = json_of(&paz(server, data, &["releases", &name, "-o", "json"]));
        let history = json_of(&paz(server, data, &["history", &name, "-o", "json"]));
        all.push(serde_json::json!({"service": service, "releases": releases, "history": history}));
    }
    Value::Array(all)
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "paz failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_cli_moves_a_servers_state_to_another_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (data_a, data_b, data_c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let a = Server::start(&data_a)?;
    ok(&paz(
        &a,
        &data_a,
        &[
            "service", "create", "web", "--image", "demo:v1", "--port", "8080",
        ],
    ));
    ok(&paz(
        &a,
        &data_a,
        &["deploy", "web", "--image", "demo:v2", "--detach"],
    ));
    let value = dir.path().join("value");
    std::fs::write(&value, "hunter2")?;
    ok(&paz(
        &a,
        &data_a,
        &[
            "secret",
            "set",
            "web",
            "DB_PASSWORD",
            "--from-file",
            value.to_str().unwrap(),
            "--detach",
        ],
    ));
    ok(&paz(
        &a,
        &data_a,
        &["service", "create", "api", "--image", "api:v1"],
    ));
    let export = paz(&a, &data_a, &["admin", "export"]);
    let said = ok(&export);
    assert!(said.contains("exported"), "{said}");
    let file = dir.path().join("export.json");
    std::fs::write(&file, &export.stdout)?;
    let document: Value = serde_json::from_slice(&export.stdout)?;
    assert_eq!(document["format"], "paz-state");
    assert!(!String::from_utf8_lossy(&export.stdout).contains("hunter2"));

    // --file writes the same document, readable by its owner only.
    let private = dir.path().join("private.json");
    ok(&paz(
        &a,
        &data_a,
        &["admin", "export", "--file", private.to_str().unwrap()],
    ));
    let mode = std::fs::metadata(&private)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again: Value = serde_json::from_slice(&std::fs::read(&private)?)?;
    assert_eq!(again["keys"], document["keys"]);

    // B has the same secret key (copied, as the docs say), its own cluster id.
    std::fs::create_dir_all(&data_b)?;
    std::fs::copy(data_a.join("secret-key"), data_b.join("secret-key"))?;
    let b = Server::start(&data_b)?;
    let said = ok(&paz(
        &b,
        &data_b,
        &["admin", "import", file.to_str().unwrap()],
    ));
    assert!(
        said.contains("imported") && said.contains("2 services"),
        "{said}"
    );
    // (Without a scheduler neither server claims a cluster id, so it does not change.)
    assert!(!said.contains("restart paz-server"), "{said}");
    assert_eq!(state(&b, &data_b), state(&a, &data_a));

    // Not again without --replace.
    let refused = paz(&b, &data_b, &["admin", "import", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("STORE_NOT_EMPTY") && said.contains("--replace"),
        "{said}"
    );
    ok(&paz(
        &b,
        &data_b,
        &["admin", "import", "--replace", file.to_str().unwrap()],
    ));

    // It is in B's store: still there after a restart.
    drop(b);
    let b = Server::start(&data_b)?;
    assert_eq!(state(&b, &data_b), state(&a, &data_a));

    // A file that is not an export is bad input (exit 2), and nothing is sent.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, r#"{"format": "paz-state", "version": 9}"#)?;
    let refused = paz(&b, &data_b, &["admin", "import", junk.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("newer"));

    // A server with another secret key refuses it, and says which key it needs.
    let c = Server::start(&data_c)?;
    let refused = paz(&c, &data_c, &["admin", "import", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("SECRET_KEY_MISMATCH") && said.contains("secret-key"),
        "{said}"
    );
    assert_eq!(state(&c, &data_c), Value::Array(vec![]));
    Ok(())
}
