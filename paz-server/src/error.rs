//! Errors as the API shows them: a status, a stable code and a message. The full error
//! chain goes to the log, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paz_core::api::{ErrorBody, ErrorResponse};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
                details: Vec::new(),
            },
        }
    }
}

impl From<paz_core::Error> for ApiError {
    fn from(error: paz_core::Error) -> Self {
        use paz_core::Error as E;
        let status = match &error {
            E::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::AlreadyExists { .. }
            | E::DomainConflict { .. }
            | E::InvalidState(_)
            | E::Conflict { .. } => StatusCode::CONFLICT,
            E::RevisionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            E::Store(_) | E::SecretsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::TooManyConflicts { .. } | E::StoreNotEmpty { .. } | E::SecretKeyMismatch { .. } => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%error, code = error.code(), "request failed");
        }
        let (code, message) = match &error {
            E::Corrupt { .. } => (
                "INTERNAL".to_owned(),
                "the server's data is damaged; see its log".to_owned(),
            ),
            E::Validation(errors) => (error.code().to_owned(), errors.to_string()),
            other => (other.code().to_owned(), other.to_string()),
        };
        let details = match error {
            E::Validation(errors) => errors.0,
            _ => Vec::new(),
        };
        ApiError {
            status,
            body: ErrorBody {
                code,
                message,
                details,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response =
            (self.status, axum::Json(ErrorResponse { error: self.body })).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"paz\""),
            );
        }
        response
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_failures_and_lost_races_keep_their_own_codes() {
        let lost: ApiError = paz_core::Error::TooManyConflicts {
            kind: "service",
            name: "web".into(),
            attempts: 64,
        }
        .into();
        assert_eq!(lost.status, StatusCode::CONFLICT);
        assert_eq!(lost.body.code, "CONCURRENT_CHANGES");
        let down: ApiError =
            paz_core::Error::store(paz_core::PortErrorKind::Unavailable, "disk gone").into();
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.body.code, "STORE_UNAVAILABLE");
        let image: ApiError =
            paz_core::Error::scheduler(paz_core::PortErrorKind::ImageUnavailable, "no such image")
                .into();
        assert_eq!(image.body.code, "IMAGE_UNAVAILABLE");
    }
}
