//! [`Error`]: everything that can go wrong, and how error answers become errors.

use std::time::Duration;

use paz_core::api::ErrorResponse;
use paz_core::{Deployment, FieldError};
use reqwest::{Response, StatusCode};

use super::decode::{MAX_LOG_LINE, MAX_SSE_LINE};

/// How much of an unexpected (non-JSON) body an error keeps.
const MAX_BODY_IN_ERROR: usize = 512;

/// Everything that can go wrong talking to a `paz-server`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL given to [`Client::new`](crate::Client::new) is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with an error (`{"error": {"code": …, "message": …}}`).
    #[error("{message} ({code})")]
    Api {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The stable machine-readable code, e.g. `SERVICE_NOT_FOUND`.
        code: String,
        /// What went wrong, for people.
        message: String,
        /// Every failed validation rule, when there are several.
        details: Vec<FieldError>,
    },
    /// The request could not be sent or its answer not received (connection refused, DNS,
    /// TLS, timeout, a stream cut off).
    #[error("{}", describe_http(.0))]
    Http(#[source] reqwest::Error),
    /// The server answered with a status and body that are not the Paz API's (e.g. a proxy's
    /// error page).
    #[error("unexpected answer from the server: HTTP {status}: {body}")]
    UnexpectedResponse {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer's JSON body does not have the expected shape (a client/server version skew?).
    #[error("cannot decode the server's answer to {what}")]
    Decode {
        /// What was being read, e.g. `GET /v1/services`.
        what: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The token cannot be sent in an HTTP header (it has control characters or non-ASCII).
    #[error("the token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// The event stream sent a line longer than the client accepts.
    #[error("the event stream sent a line longer than {MAX_SSE_LINE} bytes")]
    EventTooLarge,
    /// The log stream sent a line longer than the client accepts.
    #[error("the log stream sent a line longer than {MAX_LOG_LINE} bytes")]
    LogLineTooLarge,
    /// The event stream said some events were missed (`resync`: the client fell behind, or
    /// its `Last-Event-ID` is too old or from before a restart): read the state again.
    #[error("some events were missed ({reason}): read the state again")]
    EventsMissed {
        /// The server's reason.
        reason: String,
    },
    /// The server kept closing the event stream that [`Client::wait_for_deployment`](crate::Client::wait_for_deployment) watches
    /// (it is shutting down, or a proxy cuts long-lived answers).
    #[error("the server closed the event stream")]
    EventStreamClosed,
    /// [`Client::wait_for_deployment`](crate::Client::wait_for_deployment) gave up: the deployment was not over in time. It goes
    /// on on the server.
    #[error("deployment {} is still {} after {after:?}", deployment.id, deployment.status)]
    WaitTimedOut {
        /// The deployment as last seen.
        deployment: Box<Deployment>,
        /// How long the client waited.
        after: Duration,
    },
}

impl Error {
    /// The stable code of an [`Error::Api`] error (e.g. `SERVICE_NOT_FOUND`,
    /// `REVISION_MISMATCH`); `None` for errors that did not come from the API.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of an answer the server gave, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedResponse { status, .. } => Some(*status),
            Error::Http(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether the server could not be reached at all (nothing listens, DNS, TLS handshake).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Http(e) if e.is_connect())
    }
}

fn describe_http(error: &reqwest::Error) -> String {
    let url = error
        .url()
        .map(|u| u.to_string())
        .unwrap_or_else(|| "the server".into());
    if error.is_connect() {
        format!("cannot connect to {url}")
    } else if error.is_timeout() {
        format!("request to {url} timed out")
    } else if error.is_builder() {
        "cannot build the HTTP client or request".into()
    } else if error.is_body() || error.is_decode() {
        format!("reading the answer from {url} failed")
    } else {
        format!("request to {url} failed")
    }
}

/// Passes a success through; turns an error answer into [`Error::Api`] (or
/// [`Error::UnexpectedResponse`] when its body is not the API's error shape).
pub(super) async fn check(response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let bytes = response.bytes().await.map_err(Error::Http)?;
    Err(error_from_body(status, &bytes))
}

pub(super) fn error_from_body(status: StatusCode, bytes: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorResponse>(bytes) {
        Ok(ErrorResponse { error }) => Error::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            details: error.details,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            let mut body: String = text.chars().take(MAX_BODY_IN_ERROR).collect();
            if body.len() < text.len() {
                body.push('…');
            }
            if body.is_empty() {
                body = status.canonical_reason().unwrap_or("no body").to_owned();
            }
            Error::UnexpectedResponse {
                status: status.as_u16(),
                body,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::client::testing::runtime;
    use std::net::TcpListener;

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"code":"INVALID_PORT","message":"bad","details":[{"field":"ports[0].port","code":"INVALID_PORT","message":"port 0 is outside 1..65535"}]}}"#;
        let err = error_from_body(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(err.code(), Some("INVALID_PORT"));
        assert_eq!(err.status(), Some(422));
        assert_eq!(err.to_string(), "bad (INVALID_PORT)");
        let Error::Api { details, .. } = err else {
            panic!()
        };
        assert_eq!(details[0].field, "ports[0].port");
        let err = error_from_body(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(err.code(), None);
        assert_eq!(
            err.to_string(),
            "unexpected answer from the server: HTTP 502: <html>bad gateway</html>"
        );
    }

    #[test]
    fn connection_refused_is_a_clear_http_error() {
        // Bind then drop to get a port where nothing listens.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = runtime().block_on(client.services()).unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot connect to http://127.0.0.1:{port}/v1/services"
            )),
            "{err}"
        );
    }
}
