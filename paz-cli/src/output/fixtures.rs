//! Test data shared by the output tests.

use jiff::Timestamp;
use paz::ServiceStatus;
use paz_core::{Deployment, DeploymentStatus, Instance, InstanceState, Service, ServiceSpec};
use serde_json::json;

pub const ID: &str = "3f2a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

pub fn service(name: &str, release: Option<u64>) -> Service {
    let mut spec = ServiceSpec::new(name, "demo:v1");
    spec.instances = 2;
    Service {
        spec,
        current_release: release,
        latest_release: release.unwrap_or(0),
        latest_deployment: 1,
        pruned_below: 0,
        pinned_releases: Default::default(),
        secrets: Default::default(),
        created_at: at(1_000),
        updated_at: at(1_000),
        revision: 4,
    }
}

pub fn instance(id: &str, release: u64, slot: u32, state: InstanceState) -> Instance {
    Instance {
        id: id.into(),
        service: "web".into(),
        release,
        slot,
        host: "h1".into(),
        address: Some(format!("172.17.0.{}:8080", slot + 2)),
        state,
        message: None,
        epoch: None,
        started_at: None,
    }
}

pub fn deployment(status: DeploymentStatus) -> Deployment {
    serde_json::from_value(json!({
        "id": "web-4", "service": "web", "sequence": 4, "release": 3,
        "previous_release": 2, "strategy": "rolling", "status": status,
        "trigger": {"kind": "deploy"}, "created_at": "1970-01-01T00:16:40Z",
        "started_at": "1970-01-01T00:16:41Z", "finished_at": "1970-01-01T00:16:44.200Z",
        "steps": [
            {"name": "deploying v3 (rolling)", "status": "succeeded"},
            {"name": format!("start v3 slot 0: {ID}"), "status": "succeeded"},
            {"name": "failed", "status": "failed", "message": "v3 slot 1 did not become healthy"},
        ],
        "error": "v3 slot 1 did not become healthy",
    }))
    .unwrap()
}

pub fn status(name: &str) -> ServiceStatus {
    ServiceStatus {
        service: service(name, Some(3)),
        deployment: Some(deployment(DeploymentStatus::Failed)),
        instances: vec![
            instance("b1", 2, 0, InstanceState::Healthy),
            instance(ID, 3, 0, InstanceState::Healthy),
            instance("c2", 3, 1, InstanceState::Failed),
        ],
        problems: vec!["v3 slot 1 keeps crashing".into()],
    }
}
