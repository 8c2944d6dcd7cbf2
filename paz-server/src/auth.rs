//! Who is calling and what they may do: the admin token, or a scoped token
//! (`paz_<id>_<secret>`, stored as the SHA-256 of its secret), checked against what the
//! request needs ([`access_for`]).

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use paz_core::token::{Access, TokenInfo, TokenRecord};

use crate::AppState;
use crate::error::ApiError;
use crate::token;

/// The caller of a request, put in its extensions by [`require_token`].
#[derive(Debug, Clone)]
pub enum Caller {
    /// The admin token.
    Admin,
    /// A scoped token.
    Token(TokenInfo),
}

impl Caller {
    /// Whether an event about `service` may be shown to this caller.
    pub fn sees_service(&self, service: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Token(info) => info.allows(&Access::ReadService(service.to_owned())),
        }
    }
}

/// A new scoped token: the token to hand out (once), its id and the hash to store.
pub struct NewToken {
    /// `paz_<id>_<secret>`.
    pub token: String,
    /// The id (12 hex digits).
    pub id: String,
    /// The SHA-256 of the secret, as hex.
    pub hash: String,
}

/// Generates a scoped token.
pub fn generate() -> Result<NewToken, ApiError> {
    let mut bytes = [0u8; 38];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("no random bytes for a token: {e}"),
        )
    })?;
    let (id, secret) = bytes.split_at(6);
    let (id, secret) = (hex(id), hex(secret));
    Ok(NewToken {
        token: format!("paz_{id}_{secret}"),
        hash: hash(&secret),
        id,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a token's secret part, as hex.
fn hash(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// The id and secret of a scoped token, if it looks like one.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("paz_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

/// What a request needs, from its method and path.
pub fn access_for(method: &Method, path: &str) -> Access {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let service = |name: &str| name.to_owned();
    match (method, segments.as_slice()) {
        (&Method::GET, ["v1", "events"]) => Access::Events,
        (&Method::GET, ["v1", "tokens" | "admin", ..]) => Access::Admin,
        (&Method::GET, ["v1", "services", name])
        | (
            &Method::GET,
            [
                "v1",
                "services",
                name,
                "status" | "releases" | "deployments" | "instances" | "deliveries",
            ],
        )
        | (&Method::GET, ["v1", "services", name, "releases", _]) => {
            Access::ReadService(service(name))
        }
        (&Method::GET, ["v1", "deployments", id]) => match id.rsplit_once('-') {
            Some((name, _)) => Access::ReadService(service(name)),
            None => Access::Read,
        },
        (&Method::GET | &Method::HEAD, _) => Access::Read,
        (
            &Method::POST,
            [
                "v1",
                "services",
                name,
                "deploy" | "rollback" | "promote" | "abort",
            ],
        ) => Access::Deploy(service(name)),
        _ => Access::Admin,
    }
}

fn unauthorized(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Finds who sent `token`: the admin, a scoped token, or nobody.
async fn identify(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if token::matches(token, &state.token) {
        return Ok(Caller::Admin);
    }
    let invalid = || unauthorized("INVALID_TOKEN", "the token is not valid");
    let (id, secret) = parse(token).ok_or_else(invalid)?;
    let record: TokenRecord = state.paz.token_record(id).await?.ok_or_else(invalid)?;
    if !token::matches(&hash(secret), &record.hash) {
        return Err(invalid());
    }
    if record.info.expired(jiff::Timestamp::now()) {
        return Err(unauthorized(
            "TOKEN_EXPIRED",
            &format!(
                "token {:?} has expired; ask for a new one",
                record.info.name
            ),
        ));
    }
    Ok(Caller::Token(record.info))
}

/// The bearer token of a request, or why there is none.
pub fn bearer(request: &Request) -> Result<String, ApiError> {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("").trim().to_owned())
        .ok_or_else(|| {
            unauthorized(
                "UNAUTHORIZED",
                "send a token as 'Authorization: Bearer <token>'",
            )
        })?;
    given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| {
            unauthorized(
                "UNAUTHORIZED",
                "the Authorization header must be 'Bearer <token>'",
            )
        })
}

/// Lets a request through when its token may do what the request needs; puts the
/// [`Caller`] in its extensions.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&request)?;
    let caller = identify(&state, &token).await?;
    if let Caller::Token(info) = &caller {
        let access = access_for(request.method(), request.uri().path());
        if !info.allows(&access) {
            let what = match info.scope {
                paz_core::token::Scope::Deploy => {
                    format!("deploy {}", info.services.join(", "))
                }
                scope => scope.to_string(),
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "token {:?} may only {what}; this request needs more",
                    info.name
                ),
            ));
        }
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_form() {
        let new = generate().unwrap();
        let (id, secret) = parse(&new.token).unwrap();
        assert_eq!(id, new.id);
        assert_eq!(hash(secret), new.hash);
        assert_ne!(generate().unwrap().token, new.token);
        for bad in [
            "",
            "paz_",
            "paz__",
            "paz_abc_def",
            &new.token[..new.token.len() - 1],
            &format!("{}0", new.token),
            &new.token.replace("paz_", "pax_"),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn requests_map_to_what_they_need() {
        use Access::*;
        let get = |p: &str| access_for(&Method::GET, p);
        let post = |p: &str| access_for(&Method::POST, p);
        assert_eq!(get("/v1/services/web"), ReadService("web".into()));
        assert_eq!(get("/v1/services/web/status"), ReadService("web".into()));
        assert_eq!(
            get("/v1/services/web/releases/3"),
            ReadService("web".into())
        );
        assert_eq!(
            get("/v1/deployments/web-api-7"),
            ReadService("web-api".into())
        );
        assert_eq!(
            get("/v1/services/web/deliveries"),
            ReadService("web".into())
        );
        assert_eq!(get("/v1/services/web/hooks"), Read);
        assert_eq!(post("/v1/services/web/hooks"), Admin);
        assert_eq!(post("/v1/services/web/hooks/ci/rotate"), Admin);
        assert_eq!(get("/v1/services/web/logs"), Read);
        assert_eq!(get("/v1/services/web/secrets"), Read);
        assert_eq!(get("/v1/services"), Read);
        assert_eq!(get("/v1/events"), Events);
        assert_eq!(get("/v1/tokens"), Admin);
        assert_eq!(
            get("/v1/admin/export"),
            Admin,
            "the export holds every secret"
        );
        assert_eq!(post("/v1/admin/import"), Admin);
        assert_eq!(post("/v1/services/web/deploy"), Deploy("web".into()));
        assert_eq!(post("/v1/services/web/rollback"), Deploy("web".into()));
        assert_eq!(post("/v1/services/web/scale"), Admin);
        assert_eq!(post("/v1/services"), Admin);
        assert_eq!(
            access_for(&Method::PUT, "/v1/services/web/secrets/A"),
            Admin
        );
        assert_eq!(access_for(&Method::DELETE, "/v1/services/web"), Admin);
        assert_eq!(post("/v1/tokens"), Admin);
    }
}
