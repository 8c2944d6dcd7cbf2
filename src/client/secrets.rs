//! Secrets: set (write-only), list (names only) and remove them.

use paz_core::Deployment;
use paz_core::secret::{SecretInfo, SetSecretRequest};
use reqwest::Method;

use super::request::{Json, NoBody};
use super::{Client, Error};

impl Client {
    /// `PUT /v1/services/{name}/secrets/{secret}`: sets a secret (given to the instances as
    /// the environment variable `secret`; never shown again) and starts deploying the
    /// release it makes.
    pub async fn set_secret(
        &self,
        name: &str,
        secret: &str,
        value: &str,
    ) -> Result<Deployment, Error> {
        self.call(
            Method::PUT,
            &["v1", "services", name, "secrets", secret],
            Json(&SetSecretRequest {
                value: value.to_owned(),
            }),
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/secrets`: the names of a service's secrets and when each was
    /// set.
    pub async fn secrets(&self, name: &str) -> Result<Vec<SecretInfo>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "secrets"],
            NoBody,
            None,
        )
        .await
    }

    /// `DELETE /v1/services/{name}/secrets/{secret}`: removes a secret and starts deploying
    /// the release without it.
    pub async fn remove_secret(&self, name: &str, secret: &str) -> Result<Deployment, Error> {
        self.call(
            Method::DELETE,
            &["v1", "services", name, "secrets", secret],
            NoBody,
            None,
        )
        .await
    }
}
