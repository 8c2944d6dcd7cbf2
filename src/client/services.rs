//! Services: declaring, changing, deleting and scaling them; their instances and status.

use paz_core::api::ScaleRequest;
use paz_core::{Instance, Service, ServiceSpec};
use reqwest::Method;

use super::error::check;
use super::request::{Json, MergePatch, NoBody};
use super::{Client, Error};

impl Client {
    /// `GET /v1/services`: every service.
    pub async fn services(&self) -> Result<Vec<Service>, Error> {
        self.call(Method::GET, &["v1", "services"], NoBody, None)
            .await
    }

    /// `GET /v1/services/{name}`: one service (`SERVICE_NOT_FOUND` when there is none).
    pub async fn service(&self, name: &str) -> Result<Service, Error> {
        self.call(Method::GET, &["v1", "services", name], NoBody, None)
            .await
    }

    /// `POST /v1/services`: declares a service; the server makes release v1 and deploys it.
    pub async fn create_service(&self, spec: &ServiceSpec) -> Result<Service, Error> {
        self.call(Method::POST, &["v1", "services"], Json(spec), None)
            .await
    }

    /// `PUT /v1/services/{name}`: replaces a service's spec. With `if_match`, the update
    /// fails with `REVISION_MISMATCH` (412) unless the service is still at that revision.
    pub async fn update_service(
        &self,
        name: &str,
        spec: &ServiceSpec,
        if_match: Option<u64>,
    ) -> Result<Service, Error> {
        self.call(Method::PUT, &["v1", "services", name], Json(spec), if_match)
            .await
    }

    /// `PATCH /v1/services/{name}`: applies a JSON merge patch (RFC 7396) to the spec:
    /// objects merge, `null` removes a key, anything else replaces. With `if_match`, as for
    /// [`Client::update_service`].
    pub async fn patch_service(
        &self,
        name: &str,
        patch: &serde_json::Value,
        if_match: Option<u64>,
    ) -> Result<Service, Error> {
        self.call(
            Method::PATCH,
            &["v1", "services", name],
            MergePatch(patch),
            if_match,
        )
        .await
    }

    /// `DELETE /v1/services/{name}`: deletes a service with its releases and deployments.
    pub async fn delete_service(&self, name: &str, if_match: Option<u64>) -> Result<(), Error> {
        let response = self
            .send(Method::DELETE, &["v1", "services", name], NoBody, if_match)
            .await?;
        check(response).await.map(drop)
    }

    /// `POST /v1/services/{name}/scale`: sets the instance count (no new release).
    pub async fn scale(&self, name: &str, instances: u32) -> Result<Service, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "scale"],
            Json(&ScaleRequest { instances }),
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/instances`: the service's instances (containers), with the
    /// state the server sees.
    pub async fn instances(&self, name: &str) -> Result<Vec<Instance>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "instances"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/status`: the service with its latest deployment, its
    /// instances and what is wrong with it.
    pub async fn status(&self, name: &str) -> Result<ServiceStatus, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "status"],
            NoBody,
            None,
        )
        .await
    }
}

/// A service's status, from [`Client::status`]: the one type the server, the runtime and
/// the client share.
pub use paz_core::api::ServiceStatus;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::{one_shot_server, runtime, service_json};

    #[test]
    fn status_reads_the_servers_status_response() {
        let body = format!(
            r#"{{"service":{},"deployment":null,"instances":[{{"id":"abc","service":"web","release":1,"slot":0,"host":"h1","state":"healthy","address":"10.0.0.2:8080"}}],"problems":["slot 1 keeps crashing"]}}"#,
            service_json()
        );
        let (url, requests) = one_shot_server("200 OK", &body);
        let client = Client::new(&url, None).unwrap();
        let status = runtime().block_on(client.status("web")).unwrap();
        assert_eq!(status.service.spec.name, "web");
        assert_eq!(status.deployment, None);
        assert_eq!(status.instances[0].state, paz_core::InstanceState::Healthy);
        assert_eq!(status.problems, ["slot 1 keeps crashing"]);
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /v1/services/web/status http/1.1"),
            "{request}"
        );
        // It serializes back to the same shape.
        let again: ServiceStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(again, status);
    }
}
