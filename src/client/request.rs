//! Building and sending requests: URLs, the token, timeouts, bodies, decoding answers.

use reqwest::header::{ACCEPT, CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::check;
use super::{Client, Error};

impl Client {
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs can be a base (checked in Client::new)")
            .pop_if_empty()
            .extend(segments);
        url
    }

    pub(super) fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_url(method, self.url(segments))
    }

    pub(super) fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub(super) async fn send<B: Body>(
        &self,
        method: Method,
        segments: &[&str],
        body: B,
        if_match: Option<u64>,
    ) -> Result<Response, Error> {
        let mut builder = self
            .request(method, segments)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        if let Some(revision) = if_match {
            builder = builder.header(IF_MATCH, revision.to_string());
        }
        builder = body.attach(builder)?;
        builder.send().await.map_err(Error::Http)
    }

    pub(super) async fn call<T: DeserializeOwned, B: Body>(
        &self,
        method: Method,
        segments: &[&str],
        body: B,
        if_match: Option<u64>,
    ) -> Result<T, Error> {
        let what = format!("{method} /{}", segments.join("/"));
        let response = self.send(method, segments, body, if_match).await?;
        let response = check(response).await?;
        let bytes = response.bytes().await.map_err(Error::Http)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { what, source })
    }
}

/// A request body.
pub(super) trait Body {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error>;
}

pub(super) struct NoBody;

impl Body for NoBody {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error> {
        Ok(builder)
    }
}

pub(super) struct Json<'a, T: Serialize>(pub(super) &'a T);

impl<T: Serialize> Body for Json<'_, T> {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error> {
        Ok(builder.json(self.0))
    }
}

pub(super) struct MergePatch<'a>(pub(super) &'a serde_json::Value);

impl Body for MergePatch<'_> {
    fn attach(self, builder: RequestBuilder) -> Result<RequestBuilder, Error> {
        let bytes = serde_json::to_vec(self.0).map_err(|source| Error::Decode {
            what: "the merge patch".into(),
            source,
        })?;
        Ok(builder
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(bytes))
    }
}

#[cfg(test)]
mod tests {
    use crate::client::Client;
    use crate::client::testing::{one_shot_server, runtime};

    #[test]
    fn patch_sends_token_if_match_and_merge_patch_and_reads_api_errors() {
        let (url, requests) = one_shot_server(
            "412 Precondition Failed",
            r#"{"error":{"code":"REVISION_MISMATCH","message":"web changed"}}"#,
        );
        let client = Client::new(&url, Some("t0k".into())).unwrap();
        let err = runtime()
            .block_on(client.patch_service("web", &serde_json::json!({"instances": 3}), Some(7)))
            .unwrap_err();
        assert_eq!(err.code(), Some("REVISION_MISMATCH"), "{err:?}");
        assert_eq!(err.status(), Some(412));
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("patch /v1/services/web http/1.1"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer t0k"), "{request}");
        assert!(request.contains("if-match: 7"), "{request}");
        assert!(
            request.contains("content-type: application/merge-patch+json"),
            "{request}"
        );
        assert!(request.ends_with("{\"instances\":3}"), "{request}");
    }
}
