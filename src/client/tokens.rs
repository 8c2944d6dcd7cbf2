//! Scoped tokens: create (the token is shown once), list and revoke them.

use paz_core::token::{CreateTokenRequest, CreatedToken, TokenInfo};
use reqwest::Method;

use super::request::{Json, NoBody};
use super::{Client, Error};

impl Client {
    /// `POST /v1/tokens`: makes a scoped token; the answer holds the token, which cannot be
    /// read again (the server keeps only its hash).
    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<CreatedToken, Error> {
        self.call(Method::POST, &["v1", "tokens"], Json(request), None)
            .await
    }

    /// `GET /v1/tokens`: the scoped tokens (never the tokens themselves).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        self.call(Method::GET, &["v1", "tokens"], NoBody, None)
            .await
    }

    /// `DELETE /v1/tokens/{token}`: revokes a token by name or id; it stops working at once.
    pub async fn revoke_token(&self, name_or_id: &str) -> Result<TokenInfo, Error> {
        self.call(Method::DELETE, &["v1", "tokens", name_or_id], NoBody, None)
            .await
    }
}
