//! The fake's wire format, spoken to with a plain HTTP client (no Docker).

mod support;

use std::time::Duration;

use paz_fleet::api::PageToken;
use paz_fleet::fake::FakeFleet;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use support::{eventually, fake, machines};

struct Wire {
    client: reqwest::Client,
    base: String,
}

impl Wire {
    fn new(fake: &FakeFleet) -> Wire {
        Wire {
            client: support::http(),
            base: fake.endpoint().to_owned(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        assert_eq!(
            response
                .headers()
                .get("server")
                .and_then(|v| v.to_str().ok()),
            Some("fleetd/1.0.0"),
            "every response carries Server: fleetd/<version>"
        );
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn put(&self, name: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, &format!("/fleet/v1/units/{name}"), Some(body))
            .await
    }
}

fn options(exec: &str) -> Value {
    json!([
        {"section": "Unit", "name": "Description", "value": "test"},
        {"section": "Service", "name": "ExecStart", "value": exec},
    ])
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn routes_methods_headers_and_empty_lists() {
    let fake = fake(Vec::new(), 100).await;
    let wire = Wire::new(&fake);
    // omitempty: an empty list is `{}`.
    for path in ["/fleet/v1/units", "/fleet/v1/state", "/fleet/v1/machines"] {
        assert_eq!(wire.get(path).await, (StatusCode::OK, json!({})), "{path}");
    }
    // The legacy prefix.
    assert_eq!(
        wire.get("/v1-alpha/units").await,
        (StatusCode::OK, json!({}))
    );
    // 405 on collections and on `/`, 404 for unknown paths.
    for (method, path) in [
        (Method::POST, "/fleet/v1/units"),
        (Method::DELETE, "/fleet/v1/state"),
        (Method::PUT, "/fleet/v1/machines"),
        (Method::GET, "/"),
        (Method::POST, "/fleet/v1/units/a.service"),
    ] {
        let (status, body) = wire.call(method.clone(), path, None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(body["error"]["code"], 405, "{body}");
    }
    for path in [
        "/fleet/v2/units",
        "/fleet/v1/nothing",
        "/fleet/v1/units/a/b",
    ] {
        let (status, body) = wire.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], 404);
    }
    let (status, body) = wire.get("/fleet/v1/units/nope.service").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "unit does not exist");
    let (status, body) = wire.get("/fleet/v1/state/nope.service").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "unit state does not exist");
    let (status, body) = wire.get("/fleet/v1/discovery").await;
    assert_eq!((status, &body["id"]), (StatusCode::OK, &json!("fleet:v1")));
    assert!(!fake.calls().is_empty());
}

#[tokio::test]
async fn put_checks_content_type() {
    let fake = fake(machines(1), 100).await;
    let wire = Wire::new(&fake);
    let url = format!("{}/fleet/v1/units/a.service", fake.endpoint());
    let body = json!({"desiredState": "inactive", "options": options("/bin/true")}).to_string();
    let send = |headers: Vec<&'static str>| {
        let mut request = wire.client.put(&url).body(body.clone());
        for value in headers {
            request = request.header("content-type", value);
        }
        request.send()
    };
    for headers in [
        vec![],
        vec!["text/plain"],
        vec!["application/json", "application/json"],
        vec!["application/json, text/plain"],
        vec!["application/jsonx"],
    ] {
        let response = send(headers.clone()).await.expect("send");
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{headers:?}"
        );
    }
    let response = send(vec!["Application/JSON; charset=utf-8"])
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "parameters are allowed"
    );
    // PATCH does not check Content-Type.
    let response = wire
        .client
        .patch(format!("{}/fleet/v1/machines", fake.endpoint()))
        .body("[]")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn put_follows_its_steps() {
    let fake = fake(machines(1), 100).await;
    let wire = Wire::new(&fake);
    // New unit without options → 409.
    let (status, body) = wire
        .put("a.service", json!({"desiredState": "launched"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        message(&body),
        "unit does not exist and options field empty"
    );
    // Body name ≠ URL name → 400.
    let (status, body) = wire
        .put(
            "a.service",
            json!({"name": "b.service", "options": options("/bin/true")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("differs from unit name"), "{body}");
    // Invalid names → 400.
    for name in ["a.exe", "a", "%40a.service", "a%20b.service"] {
        let (status, _) = wire
            .put(name, json!({"options": options("/bin/true")}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
    }
    // A body that does not decode → 400.
    let (status, body) = wire.put("a.service", json!({"options": "nope"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&body).starts_with("unable to decode body"),
        "{body}"
    );
    // Create → 201; without desiredState it is inactive.
    let (status, _) = wire
        .put("a.service", json!({"options": options("/bin/true")}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, unit) = wire.get("/fleet/v1/units/a.service").await;
    assert_eq!(unit["desiredState"], "inactive");
    assert_eq!(unit["name"], "a.service");
    assert!(unit.get("machineID").is_none() && unit.get("currentState").is_none());
    // Existing unit without desiredState → 409.
    let (status, body) = wire.put("a.service", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        message(&body),
        "must provide DesiredState to update existing unit"
    );
    // Identical options fall through to the state update → 204.
    let (status, _) = wire
        .put(
            "a.service",
            json!({"desiredState": "loaded", "options": options("/bin/true")}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Different options replace → 201.
    let (status, _) = wire
        .put(
            "a.service",
            json!({"desiredState": "loaded", "options": options("/bin/false")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, unit) = wire.get("/fleet/v1/units/a.service").await;
    assert_eq!(unit["options"][1]["value"], "/bin/false");
    // A bad desiredState → 400.
    let (status, _) = wire
        .put("a.service", json!({"desiredState": "running"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Templates may only be inactive.
    let (status, _) = wire
        .put("t@.service", json!({"options": options("/bin/true")}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = wire
        .put("t@.service", json!({"desiredState": "launched"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&body), "cannot activate template \"t@.service\"");
    let (status, _) = wire
        .put("t@.service", json!({"desiredState": "inactive"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // DELETE: 204, then 404.
    let url = "/fleet/v1/units/a.service";
    assert_eq!(
        wire.call(Method::DELETE, url, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        wire.call(Method::DELETE, url, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_x_fleet_combinations_are_rejected() {
    let fake = fake(machines(1), 100).await;
    let wire = Wire::new(&fake);
    let with = |extra: Vec<(&str, &str)>| {
        let mut list =
            vec![json!({"section": "Service", "name": "ExecStart", "value": "/bin/true"})];
        for (name, value) in extra {
            list.push(json!({"section": "X-Fleet", "name": name, "value": value}));
        }
        json!({"desiredState": "launched", "options": list})
    };
    for (extra, expected) in [
        (
            vec![("MachineID", "m"), ("MachineOf", "b.service")],
            "MachineID cannot be used with Peers",
        ),
        (
            vec![("MachineID", "m"), ("Conflicts", "b*")],
            "MachineID cannot be used with Conflicts",
        ),
        (
            vec![("MachineID", "m"), ("Global", "true")],
            "MachineID cannot be used with Global",
        ),
        (
            vec![("MachineID", "m"), ("Replaces", "b.service")],
            "MachineID cannot be used with Replaces",
        ),
        (
            vec![("Global", "true"), ("MachineOf", "b.service")],
            "Global cannot be used with Peers",
        ),
        (
            vec![("Global", "true"), ("Replaces", "b.service")],
            "Global cannot be used with Replaces",
        ),
        (
            vec![("Conflicts", "b*"), ("Replaces", "c.service")],
            "Conflicts cannot be used with Replaces",
        ),
        (
            vec![("MachineOf", "b.service"), ("Conflicts", "b*")],
            "unresolvable requirements: peer \"b.service\" matches conflict \"b*\"",
        ),
    ] {
        let (status, body) = wire.put("a.service", with(extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra:?}");
        assert_eq!(message(&body), expected);
    }
    assert_eq!(wire.get("/fleet/v1/units").await.1, json!({}));
}

#[tokio::test]
async fn pages_and_tokens() {
    let fake = fake(machines(1), 2).await;
    let wire = Wire::new(&fake);
    for i in 0..5 {
        let (status, _) = wire
            .put(
                &format!("u{i}.service"),
                json!({"options": options("/bin/true")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut path = "/fleet/v1/units".to_owned();
    let mut tokens = Vec::new();
    for _ in 0..10 {
        let (status, page) = wire.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        for unit in page["units"].as_array().into_iter().flatten() {
            names.push(unit["name"].as_str().unwrap().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(token) => {
                tokens.push(token.to_owned());
                path = format!("/fleet/v1/units?nextPageToken={token}");
            }
            None => break,
        }
    }
    assert_eq!(
        names,
        [
            "u0.service",
            "u1.service",
            "u2.service",
            "u3.service",
            "u4.service"
        ]
    );
    assert_eq!(
        tokens,
        [
            PageToken { limit: 2, page: 2 }.encode(),
            PageToken { limit: 2, page: 3 }.encode()
        ]
    );
    assert_eq!(tokens[0], "AgACAA==");
    // Bad tokens → 400.
    for query in [
        "nextPageToken=garbage",
        "nextPageToken=ZAACAA==", // limit 100 ≠ token_limit 2
        "nextPageToken=AgAAAA==", // page 0
        "nextPageToken=AgACAA==&nextPageToken=AgACAA==",
    ] {
        let (status, body) = wire.get(&format!("/fleet/v1/units?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (_, body) = wire.get("/fleet/v1/units?nextPageToken=ZAACAA==").await;
    assert_eq!(message(&body), "token limit must be 2");

    // Exactly full: 4 units → page 2 has a token, page 3 is `{}`.
    wire.call(Method::DELETE, "/fleet/v1/units/u4.service", None)
        .await;
    let (_, page) = wire.get("/fleet/v1/units?nextPageToken=AgACAA==").await;
    assert_eq!(page["nextPageToken"], "AgADAA==");
    assert_eq!(
        wire.get("/fleet/v1/units?nextPageToken=AgADAA==").await.1,
        json!({})
    );

    // With the default limit, ZAACAA== is page 2 (empty here).
    let fake100 = support::fake(Vec::new(), 100).await;
    let wire100 = Wire::new(&fake100);
    assert_eq!(
        wire100
            .get("/fleet/v1/machines?nextPageToken=ZAACAA==")
            .await,
        (StatusCode::OK, json!({}))
    );
}

#[tokio::test]
async fn states_move_between_neighbours_and_filter() {
    let fake = fake(machines(2), 100).await;
    let wire = Wire::new(&fake);
    let (status, _) = wire
        .put(
            "a.service",
            json!({"desiredState": "launched", "options": options("/bin/true")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut seen: Vec<String> = Vec::new();
    let mut launched = None;
    for _ in 0..500 {
        let (_, unit) = wire.get("/fleet/v1/units/a.service").await;
        let current = unit["currentState"].as_str().unwrap_or("").to_owned();
        if seen.last() != Some(&current) {
            seen.push(current.clone());
        }
        if current == "launched" {
            launched = Some(unit);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let launched = launched.expect("the unit launches");
    let loaded_at = seen.iter().position(|s| s == "loaded");
    let launched_at = seen.iter().position(|s| s == "launched");
    assert!(
        loaded_at.is_some() && loaded_at < launched_at,
        "inactive → loaded → launched: {seen:?}"
    );
    let machine = launched["machineID"].as_str().unwrap().to_owned();

    let (_, states) = wire.get("/fleet/v1/state").await;
    let state = &states["states"][0];
    assert_eq!(state["name"], "a.service");
    assert_eq!(state["machineID"], machine.as_str());
    assert_eq!(state["systemdLoadState"], "loaded");
    assert_eq!(state["systemdActiveState"], "active");
    assert_eq!(state["systemdSubState"], "running");
    assert_eq!(state["hash"].as_str().unwrap().len(), 40);
    // GET /state/{name}.
    assert_eq!(wire.get("/fleet/v1/state/a.service").await.1, *state);
    // Filters, exact match, before paging.
    assert_eq!(
        wire.get("/fleet/v1/state?unitName=a.service").await.1["states"][0],
        *state
    );
    assert_eq!(wire.get("/fleet/v1/state?unitName=a").await.1, json!({}));
    assert_eq!(
        wire.get(&format!("/fleet/v1/state?machineID={machine}"))
            .await
            .1["states"][0],
        *state
    );
    assert_eq!(
        wire.get("/fleet/v1/state?machineID=other").await.1,
        json!({})
    );

    // fleetctl stop (loaded), then unload (inactive): unscheduled, no state.
    let (status, _) = wire
        .put("a.service", json!({"desiredState": "loaded"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stopped = eventually(Duration::from_secs(5), || async {
        let (_, s) = wire.get("/fleet/v1/state/a.service").await;
        (s["systemdActiveState"] == "inactive").then_some(s)
    })
    .await
    .expect("stops");
    assert_eq!(stopped["systemdSubState"], "dead");
    wire.put("a.service", json!({"desiredState": "inactive"}))
        .await;
    let unit = eventually(Duration::from_secs(5), || async {
        let (_, unit) = wire.get("/fleet/v1/units/a.service").await;
        unit.get("machineID").is_none().then_some(unit)
    })
    .await
    .expect("unscheduled");
    assert!(unit.get("currentState").is_none());
    assert_eq!(wire.get("/fleet/v1/state").await.1, json!({}));
}

#[tokio::test]
async fn patch_machines_takes_the_nested_value() {
    let fake = fake(machines(1), 100).await;
    let wire = Wire::new(&fake);
    let id = format!("{:032x}", 1);
    let patch = |body: Value| wire.call(Method::PATCH, "/fleet/v1/machines", Some(body));
    // The documented bare string does not decode → 400.
    let (status, _) =
        patch(json!([{"op": "add", "path": format!("/{id}/metadata/disk"), "value": "ssd"}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The handler's nested form → 204.
    let (status, _) = patch(json!([
        {"op": "add", "path": format!("/{id}/metadata/disk"), "value": {"value": "ssd"}},
        {"op": "replace", "path": format!("/{id}/metadata/zone"), "value": {"value": "a"}},
        {"op": "add", "path": "/not-yet-joined/metadata/role", "value": {"value": "db"}},
    ]))
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = wire.get("/fleet/v1/machines").await;
    assert_eq!(page["machines"][0]["metadata"]["disk"], "ssd");
    assert_eq!(page["machines"][0]["metadata"]["zone"], "a");
    assert_eq!(page["machines"][0]["primaryIP"], "127.0.0.2");
    for (body, expected) in [
        (
            json!([{"op": "move", "path": format!("/{id}/metadata/x"), "value": {"value": "1"}}]),
            "invalid op: expect add, remove, or replace",
        ),
        (
            json!([{"op": "add", "path": format!("/{id}/meta/x"), "value": {"value": "1"}}]),
            "machine metadata path invalid",
        ),
        (
            json!([{"op": "add", "path": format!("/{id}/metadata/a b"), "value": {"value": "1"}}]),
            "machine metadata path invalid",
        ),
        (
            json!([{"op": "add", "path": format!("/{id}/metadata/x")}]),
            "invalid value: add and replace require a value",
        ),
        (
            json!([{"op": "replace", "path": format!("/{id}/metadata/x"), "value": {"value": ""}}]),
            "invalid value: add and replace require a value",
        ),
    ] {
        let (status, answer) = patch(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(message(&answer), expected);
    }
    // Validated first, applied in order: one bad op applies none.
    let (status, _) = patch(json!([
        {"op": "remove", "path": format!("/{id}/metadata/disk")},
        {"op": "bad", "path": format!("/{id}/metadata/zone")},
    ]))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        wire.get("/fleet/v1/machines").await.1["machines"][0]["metadata"]["disk"],
        "ssd"
    );
    let (status, _) =
        patch(json!([{"op": "remove", "path": format!("/{id}/metadata/disk")}])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        wire.get("/fleet/v1/machines").await.1["machines"][0]["metadata"]
            .get("disk")
            .is_none()
    );
    // Metadata set before a machine joins is there when it does.
    fake.add_machine(paz_fleet::fake::FakeMachine::new(
        "not-yet-joined",
        "127.0.0.9",
    ));
    let (_, page) = wire.get("/fleet/v1/machines").await;
    let joined = page["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "not-yet-joined")
        .cloned()
        .unwrap();
    assert_eq!(joined["metadata"]["role"], "db");
}

/// Launches `name` with extra X-Fleet options and waits for its machine.
async fn place(wire: &Wire, name: &str, x_fleet: &[(&str, &str)]) -> Option<String> {
    let mut list = vec![json!({"section": "Service", "name": "ExecStart", "value": "/bin/true"})];
    for (key, value) in x_fleet {
        list.push(json!({"section": "X-Fleet", "name": key, "value": value}));
    }
    let (status, body) = wire
        .put(name, json!({"desiredState": "launched", "options": list}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    eventually(Duration::from_secs(2), || async {
        let (_, unit) = wire.get(&format!("/fleet/v1/units/{name}")).await;
        unit["machineID"].as_str().map(str::to_owned)
    })
    .await
}

#[tokio::test]
async fn placement_follows_x_fleet() {
    let mut ms = machines(3);
    ms[0].metadata.insert("disk".into(), "ssd".into());
    ms[1].metadata.insert("disk".into(), "hdd".into());
    ms[2].metadata.insert("disk".into(), "ssd".into());
    ms[2].metadata.insert("zone".into(), "b".into());
    let ids: Vec<String> = ms.iter().map(|m| m.id.clone()).collect();
    let fake = fake(ms, 100).await;
    let wire = Wire::new(&fake);

    // AND across keys.
    assert_eq!(
        place(
            &wire,
            "m1.service",
            &[("MachineMetadata", "disk=ssd zone=b")]
        )
        .await
        .as_deref(),
        Some(ids[2].as_str())
    );
    // OR within one key.
    let m = place(
        &wire,
        "m2.service",
        &[
            ("MachineMetadata", "disk=hdd"),
            ("MachineMetadata", "disk=nvme"),
        ],
    )
    .await;
    assert_eq!(m.as_deref(), Some(ids[1].as_str()));
    // Nothing matches: stays unscheduled.
    assert_eq!(
        place(&wire, "m3.service", &[("MachineMetadata", "disk=tape")]).await,
        None
    );
    // MachineID pins; MachineOf follows.
    assert_eq!(
        place(&wire, "p1.service", &[("MachineID", &ids[0])])
            .await
            .as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(
        place(&wire, "p2.service", &[("MachineOf", "p1.service")])
            .await
            .as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(
        place(&wire, "p3.service", &[("MachineOf", "nothing.service")]).await,
        None
    );
    // Conflicts: three units of a glob on three machines, the fourth never scheduled.
    let mut placed = std::collections::BTreeSet::new();
    for i in 0..3 {
        let name = format!("web@{i}.service");
        placed.insert(
            place(&wire, &name, &[("Conflicts", "web@*.service")])
                .await
                .expect("scheduled"),
        );
    }
    assert_eq!(placed.len(), 3, "one per machine");
    assert_eq!(
        place(&wire, "web@3.service", &[("Conflicts", "web@*.service")]).await,
        None
    );
    // Reverse: a unit without Conflicts matching the glob has nowhere to go either.
    assert_eq!(place(&wire, "web@4.service", &[]).await, None);
    // Global: one state per matching machine, no machineID.
    let (status, _) = wire
        .put(
            "g.service",
            json!({"desiredState": "launched", "options": [
                {"section": "Service", "name": "ExecStart", "value": "/bin/true"},
                {"section": "X-Fleet", "name": "Global", "value": "true"},
                {"section": "X-Fleet", "name": "MachineMetadata", "value": "disk=ssd"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let states = eventually(Duration::from_secs(3), || async {
        let (_, page) = wire.get("/fleet/v1/state?unitName=g.service").await;
        let states = page["states"].as_array().cloned().unwrap_or_default();
        (states.len() == 2 && states.iter().all(|s| s["systemdSubState"] == "running"))
            .then_some(states)
    })
    .await
    .expect("a global unit runs on both ssd machines");
    assert_eq!(states[0]["machineID"], ids[0].as_str());
    assert_eq!(states[1]["machineID"], ids[2].as_str());
    assert!(
        wire.get("/fleet/v1/units/g.service")
            .await
            .1
            .get("machineID")
            .is_none()
    );
}

#[tokio::test]
async fn least_loaded_placement_and_lost_machines() {
    let ms = machines(3);
    let ids: Vec<String> = ms.iter().map(|m| m.id.clone()).collect();
    let fake = fake(ms, 100).await;
    let wire = Wire::new(&fake);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..6 {
        let m = place(&wire, &format!("s{i}.service"), &[])
            .await
            .expect("scheduled");
        *counts.entry(m).or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "least loaded: {counts:?}"
    );

    fake.lose_machine(&ids[0]).await;
    let (_, page) = wire.get("/fleet/v1/machines").await;
    assert_eq!(
        page["machines"].as_array().unwrap().len(),
        2,
        "the lost machine is gone"
    );
    let moved = eventually(Duration::from_secs(5), || async {
        let (_, page) = wire.get("/fleet/v1/units").await;
        let units = page["units"].as_array().cloned().unwrap_or_default();
        let ok = units.iter().all(|u| {
            u["machineID"].as_str().is_some_and(|m| m != ids[0]) && u["currentState"] == "launched"
        });
        ok.then_some(units)
    })
    .await
    .expect("every unit is rescheduled and launched elsewhere");
    assert_eq!(moved.len(), 6);
    let (_, states) = wire
        .get(&format!("/fleet/v1/state?machineID={}", ids[0]))
        .await;
    assert_eq!(states, json!({}), "a lost machine reports nothing");
}
