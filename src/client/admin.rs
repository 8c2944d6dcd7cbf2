//! The whole state: export it (a backup, or to move to another store) and import it.

use std::time::Duration;

use paz_core::backup::{ImportReport, StateExport};
use reqwest::Method;

use super::error::check;
use super::{Client, Error};

/// How long an export or import may take at least, whatever [`Client::with_timeout`] says
/// (the document can be large).
const STATE_TIMEOUT: Duration = Duration::from_secs(300);

impl Client {
    /// `GET /v1/admin/export`: the whole state as a versioned document (admin token). It
    /// holds token hashes and sealed secrets: keep it private.
    pub async fn export_state(&self) -> Result<StateExport, Error> {
        let what = "GET /v1/admin/export".to_owned();
        let response = self
            .request(Method::GET, &["v1", "admin", "export"])
            .timeout(self.timeout.max(STATE_TIMEOUT))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(Error::Http)?;
        let bytes = check(response).await?.bytes().await.map_err(Error::Http)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { what, source })
    }

    /// `POST /v1/admin/import`: imports a state export, all or nothing (admin token). A
    /// server that holds state refuses it (`STORE_NOT_EMPTY`) unless `replace`.
    pub async fn import_state(
        &self,
        export: &StateExport,
        replace: bool,
    ) -> Result<ImportReport, Error> {
        let what = "POST /v1/admin/import".to_owned();
        let body = serde_json::to_vec(export).map_err(|source| Error::Decode {
            what: "the state export".into(),
            source,
        })?;
        let mut url = self.url(&["v1", "admin", "import"]);
        if replace {
            url.set_query(Some("replace=true"));
        }
        let response = self
            .request_url(Method::POST, url)
            .timeout(self.timeout.max(STATE_TIMEOUT))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(Error::Http)?;
        let bytes = check(response).await?.bytes().await.map_err(Error::Http)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { what, source })
    }
}
