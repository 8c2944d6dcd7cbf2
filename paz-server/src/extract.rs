//! Request extractors that turn every malformed request into a JSON error with a stable code.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; malformed JSON, unknown fields, wrong types (an array for an object too), a
/// wrong content type, oversized bodies and bodies that arrive too slowly each get their own
/// code.
///
/// A number with a zero fraction, such as `2.0`, is the integer `2`: JSON Schema (and so the
/// OpenAPI document) counts it as an integer, and some encoders write integers that way.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) => return Err(json_rejection(rejection.into())),
        };
        // Every body of the API is an object; serde would also read a struct from an array
        // of its fields in order (`["web", "demo:v1"]`).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "the body does not match the schema: it must be a JSON object, not an array",
            ));
        }
        let normalized = whole_numbers_as_integers(&bytes);
        match axum::Json::<T>::from_bytes(normalized.as_deref().unwrap_or(&bytes)) {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Whether the content type is JSON: `application/json` or `application/<something>+json`
/// (as axum's `Json` decides).
pub(crate) fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// The body again with every whole number written as an integer, when it has a number such
/// as `2.0` (up to 2^53, where floats stop being exact); `None` when it has none, is not
/// JSON or repeats a key (left to the typed parse, which reports it).
fn whole_numbers_as_integers(body: &[u8]) -> Option<Vec<u8>> {
    let Whole { value, changed } = serde_json::from_slice(body).ok()?;
    if !changed {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// A JSON value with whole floats made integers, and whether any was.
struct Whole {
    value: serde_json::Value,
    changed: bool,
}

impl<'de> serde::Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeVisitor)
    }
}

struct WholeVisitor;

impl<'de> serde::de::Visitor<'de> for WholeVisitor {
    type Value = Whole;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Whole, E> {
        Ok(same(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Whole, E> {
        Ok(same(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Whole, E> {
        Ok(same(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Whole, E> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if v.fract() == 0.0 && v.abs() <= EXACT {
            #[allow(clippy::cast_possible_truncation)]
            let integer = v as i64;
            return Ok(Whole {
                value: integer.into(),
                changed: true,
            });
        }
        Ok(same(
            serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Whole, E> {
        Ok(same(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Whole, E> {
        Ok(same(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Whole, E> {
        Ok(same(serde_json::Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Whole, A::Error> {
        let mut items = Vec::new();
        let mut changed = false;
        while let Some(item) = seq.next_element::<Whole>()? {
            changed |= item.changed;
            items.push(item.value);
        }
        Ok(Whole {
            value: items.into(),
            changed,
        })
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Whole, A::Error> {
        let mut object = serde_json::Map::new();
        let mut changed = false;
        while let Some(key) = map.next_key::<String>()? {
            let item = map.next_value::<Whole>()?;
            changed |= item.changed;
            if object.insert(key, item.value).is_some() {
                return Err(serde::de::Error::custom("a key is repeated"));
            }
        }
        Ok(Whole {
            value: object.into(),
            changed,
        })
    }
}

fn same(value: serde_json::Value) -> Whole {
    Whole {
        value,
        changed: false,
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

/// The error answer of a raw body that could not be read (too large, too slow).
pub(crate) fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    json_rejection(rejection.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str) -> Option<String> {
        whole_numbers_as_integers(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn whole_floats_become_integers_and_nothing_else_changes() {
        let body = rewritten(r#"{"instances":2.0,"ports":[{"port":80.0}],"cpus":0.5,"n":-3.0}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body.unwrap()).unwrap(),
            serde_json::json!({"instances": 2, "ports": [{"port": 80}], "cpus": 0.5, "n": -3})
        );
        // Nothing to rewrite, not JSON, a repeated key, or beyond 2^53: left to the typed parse.
        assert_eq!(rewritten(r#"{"instances":2,"cpus":0.5}"#), None);
        assert_eq!(rewritten(r#"{"instances":2.0"#), None);
        assert_eq!(
            rewritten(r#"{"name":"a","name":"b","instances":2.0}"#),
            None
        );
        assert_eq!(rewritten("1e300"), None);
    }
}
