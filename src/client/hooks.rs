//! Deploy hooks: create (the secret is shown once), list, change, rotate and delete them,
//! and read a service's delivery log. The hook endpoints themselves are called by Docker
//! Hub, a registry or CI, not through this client.

use paz_core::hook::{
    CreateHookRequest, CreatedHook, Delivery, HookInfo, HookSource, UpdateHookRequest,
};
use reqwest::Method;

use super::request::{Json, NoBody};
use super::{Client, Error};

impl Client {
    /// `POST /v1/services/{name}/hooks`: makes a hook; the answer holds its secret, which
    /// cannot be read again (only rotated).
    pub async fn create_hook(
        &self,
        name: &str,
        source: HookSource,
        tag: Option<String>,
    ) -> Result<CreatedHook, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "hooks"],
            Json(&CreateHookRequest { source, tag }),
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/hooks`: a service's hooks (never their secrets).
    pub async fn hooks(&self, name: &str) -> Result<Vec<HookInfo>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "hooks"],
            NoBody,
            None,
        )
        .await
    }

    /// `PUT /v1/services/{name}/hooks/{source}`: sets a hook's tag filter (`None`: every
    /// tag).
    pub async fn update_hook(
        &self,
        name: &str,
        source: HookSource,
        tag: Option<String>,
    ) -> Result<HookInfo, Error> {
        self.call(
            Method::PUT,
            &["v1", "services", name, "hooks", source.as_str()],
            Json(&UpdateHookRequest { tag }),
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/hooks/{source}/rotate`: a new secret (shown once); the
    /// old one stops working at once.
    pub async fn rotate_hook(&self, name: &str, source: HookSource) -> Result<CreatedHook, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "hooks", source.as_str(), "rotate"],
            NoBody,
            None,
        )
        .await
    }

    /// `DELETE /v1/services/{name}/hooks/{source}`: deletes a hook; its secret stops
    /// working at once.
    pub async fn delete_hook(&self, name: &str, source: HookSource) -> Result<HookInfo, Error> {
        self.call(
            Method::DELETE,
            &["v1", "services", name, "hooks", source.as_str()],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/deliveries`: what the service's hooks were sent and what
    /// became of it, oldest first.
    pub async fn deliveries(&self, name: &str) -> Result<Vec<Delivery>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "deliveries"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/deliveries`: the rejections the server keeps in memory (before a hook's
    /// credential matched), whatever service they named.
    pub async fn unmatched_deliveries(&self) -> Result<Vec<Delivery>, Error> {
        self.call(Method::GET, &["v1", "deliveries"], NoBody, None)
            .await
    }
}
