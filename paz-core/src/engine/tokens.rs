//! Scoped API tokens, stored hashed (see [`crate::token`]): create, list, look up, revoke.

use super::{Paz, decode, encode};
use crate::error::{Error, Result};
use crate::store::{Condition, Txn};
use crate::token::{Scope, TokenInfo, TokenRecord, check_token_name};

const TOKENS: &str = "/paz/tokens/";
const TOKEN_NAMES: &str = "/paz/token-names/";

impl Paz {
    /// Stores a new token (its hash). Names are unique; a `deploy` token names at least one
    /// service.
    pub async fn create_token(&self, record: TokenRecord) -> Result<TokenInfo> {
        let info = &record.info;
        check_token_name(&info.name)
            .map_err(|m| Error::invalid("name", "INVALID_TOKEN_NAME", m))?;
        match info.scope {
            Scope::Deploy if info.services.is_empty() => {
                return Err(Error::invalid(
                    "services",
                    "INVALID_SCOPE",
                    "a deploy token names the services it may deploy (at least one)",
                ));
            }
            Scope::Read | Scope::Admin if !info.services.is_empty() => {
                return Err(Error::invalid(
                    "services",
                    "INVALID_SCOPE",
                    format!(
                        "a {} token applies to every service; services are only for deploy tokens",
                        info.scope
                    ),
                ));
            }
            _ => {}
        }
        for (i, service) in info.services.iter().enumerate() {
            crate::names::check_service_name(service)
                .map_err(|m| Error::invalid(format!("services[{i}]"), "INVALID_NAME", m))?;
        }
        let id_key = format!("{TOKENS}{}", info.id);
        let name_key = format!("{TOKEN_NAMES}{}", info.name);
        let txn = Txn::new()
            .when(id_key.clone(), Condition::Absent)
            .when(name_key.clone(), Condition::Absent)
            .put(id_key, encode(&record))
            .put(name_key, info.id.as_bytes().to_vec());
        match self.store.commit(txn).await {
            Ok(_) => Ok(record.info),
            Err(Error::Conflict { .. }) => Err(Error::AlreadyExists {
                kind: "token",
                name: record.info.name,
            }),
            Err(e) => Err(e),
        }
    }

    /// Every token, by id (never the tokens themselves).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let listing = self.store.list(TOKENS).await?;
        listing
            .items
            .iter()
            .map(|kv| decode::<TokenRecord>(kv).map(|r| r.info))
            .collect()
    }

    /// The stored token with this id, for checking a presented token.
    pub async fn token_record(&self, id: &str) -> Result<Option<TokenRecord>> {
        match self.store.get(&format!("{TOKENS}{id}")).await? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// Revokes the token with this name or id: it stops working at once.
    pub async fn revoke_token(&self, name_or_id: &str) -> Result<TokenInfo> {
        let id = match self
            .store
            .get(&format!("{TOKEN_NAMES}{name_or_id}"))
            .await?
        {
            Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
            None => name_or_id.to_owned(),
        };
        let record = self
            .token_record(&id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "token",
                name: name_or_id.to_owned(),
            })?;
        let txn = Txn::new()
            .delete(format!("{TOKENS}{id}"))
            .delete(format!("{TOKEN_NAMES}{}", record.info.name));
        self.store.commit(txn).await?;
        Ok(record.info)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::paz;
    use super::*;

    fn record(id: &str, name: &str, scope: Scope, services: &[&str]) -> TokenRecord {
        TokenRecord {
            info: TokenInfo {
                id: id.into(),
                name: name.into(),
                scope,
                services: services.iter().map(|s| s.to_string()).collect(),
                created_at: jiff::Timestamp::now(),
                expires_at: None,
            },
            hash: "00".repeat(32),
        }
    }

    #[tokio::test]
    async fn create_list_look_up_and_revoke() {
        let paz = paz();
        paz.create_token(record("a1", "ci", Scope::Deploy, &["web"]))
            .await
            .unwrap();
        paz.create_token(record("b2", "dash", Scope::Read, &[]))
            .await
            .unwrap();
        let code = |e: Error| e.code().to_owned();
        assert_eq!(
            code(
                paz.create_token(record("c3", "ci", Scope::Read, &[]))
                    .await
                    .unwrap_err()
            ),
            "TOKEN_EXISTS"
        );
        assert_eq!(
            code(
                paz.create_token(record("c3", "x", Scope::Deploy, &[]))
                    .await
                    .unwrap_err()
            ),
            "INVALID_SCOPE"
        );
        assert_eq!(
            code(
                paz.create_token(record("c3", "x", Scope::Read, &["web"]))
                    .await
                    .unwrap_err()
            ),
            "INVALID_SCOPE"
        );
        assert_eq!(
            code(
                paz.create_token(record("c3", "x", Scope::Deploy, &["Bad_Name"]))
                    .await
                    .unwrap_err()
            ),
            "INVALID_NAME"
        );
        assert_eq!(
            code(
                paz.create_token(record("c3", "Bad Name", Scope::Read, &[]))
                    .await
                    .unwrap_err()
            ),
            "INVALID_TOKEN_NAME"
        );
        let names: Vec<String> = paz
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["ci", "dash"]);
        assert_eq!(
            paz.token_record("a1").await.unwrap().unwrap().info.name,
            "ci"
        );
        assert_eq!(paz.revoke_token("ci").await.unwrap().id, "a1");
        assert_eq!(paz.revoke_token("b2").await.unwrap().name, "dash");
        assert!(paz.token_record("a1").await.unwrap().is_none());
        assert_eq!(
            code(paz.revoke_token("ci").await.unwrap_err()),
            "TOKEN_NOT_FOUND"
        );
        paz.create_token(record("d4", "ci", Scope::Read, &[]))
            .await
            .expect("a revoked token's name is free again");
    }
}
