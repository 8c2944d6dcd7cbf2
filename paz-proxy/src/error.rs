//! The error type of `paz-proxy`.

use std::io;

/// Everything that can go wrong in the proxy backends' own API (request-time failures are
/// answered to the client as 4xx/5xx responses, never returned as errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend address of a route table is not `host:port`.
    #[error("backend address {address:?} of host {host:?} is not host:port")]
    InvalidBackend {
        /// The host name whose route holds the address.
        host: String,
        /// The address as given.
        address: String,
    },
    /// A listener could not be shared with the router's worker threads.
    #[error("cannot prepare the listener for the router workers")]
    Listener {
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// A certificate or its key cannot be used.
    #[error("the certificate for {names:?} cannot be used: {message}")]
    InvalidCertificate {
        /// The names it was given for.
        names: Vec<String>,
        /// What is wrong.
        message: String,
    },
    /// A worker thread or its runtime could not be started.
    #[error("cannot start router worker {index}")]
    Worker {
        /// The worker's index.
        index: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The limit on open files could not be raised.
    #[error("cannot raise the open files limit (RLIMIT_NOFILE)")]
    OpenFilesLimit {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The result type of `paz-proxy`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for paz_core::Error {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::InvalidBackend { .. } | Error::InvalidCertificate { .. } => {
                paz_core::PortErrorKind::Invalid
            }
            Error::Listener { .. } | Error::Worker { .. } | Error::OpenFilesLimit { .. } => {
                paz_core::PortErrorKind::Internal
            }
        };
        paz_core::Error::Proxy(paz_core::PortError::new(kind, error.to_string()).with_source(error))
    }
}
