//! Request extractors that turn every malformed request into a JSON error with a stable code.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; malformed JSON, unknown fields, wrong types, a wrong content type, oversized
/// bodies and bodies that arrive too slowly each get their own code.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            format!("the body does not match the schema: {}", e.body_text()),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!(
                "the body is larger than the limit of {} bytes",
                crate::BODY_LIMIT
            ),
        ),
        other if crate::serve::is_body_timeout(&other) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "BODY_TIMEOUT",
            "the request body did not arrive in time",
        ),
        other => ApiError::new(other.status(), "INVALID_BODY", other.body_text()),
    }
}

/// Path parameters; a segment that cannot be decoded (`/v1/services/%ff`) is a JSON
/// `INVALID_PATH` error, not axum's plain-text answer.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_PATH",
                format!("the path is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// Query parameters; unknown or malformed ones (`logs?tail=-1`) are a JSON `INVALID_QUERY`
/// error, not axum's plain-text answer.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
                format!("the query is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// The optional `If-Match: <revision>` header (the number may be quoted as an ETag).
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let bad = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_IF_MATCH",
                "If-Match must be the service revision, a number such as 12 or \"12\"",
            )
        };
        let text = value.to_str().map_err(|_| bad())?.trim();
        let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        text.parse()
            .map(|revision| IfMatch(Some(revision)))
            .map_err(|_| bad())
    }
}
