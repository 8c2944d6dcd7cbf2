//! Scoped API tokens: beside the admin token, tokens that can only read, or only deploy
//! some services. The model and the rule of what each scope may do live here (pure); the
//! server generates, hashes and checks them, the engine stores them (hashed only).

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Read everything (services, status, logs, events, metrics); change nothing.
    Read,
    /// Deploy, roll back, promote and abort its services, and read their status; nothing
    /// else (what CI needs).
    Deploy,
    /// Everything the admin token can, tokens included.
    Admin,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        })
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Read anything (not tokens).
    Read,
    /// Read one service's record, status, releases, deployments and instances.
    ReadService(String),
    /// Deploy, roll back, promote or abort one service.
    Deploy(String),
    /// The event stream: a deploy token sees only its services' events.
    Events,
    /// Anything else: changes, tokens, secrets.
    Admin,
}

/// A stored token: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// What people see of it.
    pub info: TokenInfo,
    /// The SHA-256 of its secret part, as hex.
    pub hash: String,
}

/// A token as the API shows it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// Its id: the part after `paz_` in the token.
    pub id: String,
    /// Its name (unique), e.g. `ci`.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For `deploy`: the services it may deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// When it was made.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: jiff::Timestamp,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<jiff::Timestamp>,
}

impl TokenInfo {
    /// Whether the token may do what `access` needs.
    pub fn allows(&self, access: &Access) -> bool {
        match (self.scope, access) {
            (Scope::Admin, _) => true,
            (Scope::Read, Access::Read | Access::ReadService(_) | Access::Events) => true,
            (Scope::Deploy, Access::ReadService(s) | Access::Deploy(s)) => {
                self.services.iter().any(|own| own == s)
            }
            (Scope::Deploy, Access::Events) => true,
            _ => false,
        }
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: jiff::Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// A name for people (1 to 64 of `a-z 0-9 . _ -`), unique among tokens.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9._-]{1,64}$", max_length = 64)
    )]
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For `deploy` (required there, at least one): the services it may deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(
        inline,
        value_type = Vec<String>,
        pattern = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
    ))]
    pub services: Vec<String>,
    /// How long it works, above zero, e.g. `720h` (30 days); without it, until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(schema_with = crate::schema::optional_positive_duration)
    )]
    pub expires_in: Option<HumanDuration>,
}

/// The answer to `POST /v1/tokens`: the token, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The token (`paz_<id>_<secret>`): send it as `Authorization: Bearer <token>`. It is
    /// stored hashed and cannot be shown again.
    pub token: String,
    /// The token's details.
    pub info: TokenInfo,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// Checks a token name.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?} must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(scope: Scope, services: &[&str]) -> TokenInfo {
        TokenInfo {
            id: "abc".into(),
            name: "ci".into(),
            scope,
            services: services.iter().map(|s| s.to_string()).collect(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            expires_at: None,
        }
    }

    #[test]
    fn each_scope_does_only_its_own() {
        let web = || "web".to_owned();
        let api = || "api".to_owned();
        let deploy = token(Scope::Deploy, &["web"]);
        assert!(deploy.allows(&Access::Deploy(web())));
        assert!(deploy.allows(&Access::ReadService(web())));
        assert!(deploy.allows(&Access::Events));
        assert!(!deploy.allows(&Access::Deploy(api())));
        assert!(!deploy.allows(&Access::ReadService(api())));
        assert!(!deploy.allows(&Access::Read));
        assert!(!deploy.allows(&Access::Admin));
        let read = token(Scope::Read, &[]);
        assert!(read.allows(&Access::Read) && read.allows(&Access::ReadService(api())));
        assert!(!read.allows(&Access::Deploy(web())) && !read.allows(&Access::Admin));
        let admin = token(Scope::Admin, &[]);
        assert!(admin.allows(&Access::Admin) && admin.allows(&Access::Deploy(api())));
    }

    #[test]
    fn expiry_and_names() {
        let mut t = token(Scope::Read, &[]);
        let now = jiff::Timestamp::now();
        assert!(!t.expired(now));
        t.expires_at = Some(now);
        assert!(t.expired(now));
        assert!(check_token_name("ci-web.1_x").is_ok());
        for bad in ["", "CI", "a b", &"x".repeat(65)] {
            assert!(check_token_name(bad).is_err(), "{bad:?}");
        }
    }
}
