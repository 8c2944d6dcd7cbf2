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
    /// A route of a table cannot be given to HAProxy as it is.
    #[error("the route for host {host:?} cannot be served by HAProxy: {reason}")]
    InvalidRoute {
        /// The host name.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// The HAProxy executable cannot be run.
    #[error(
        "cannot run HAProxy ({binary:?}): install it (Debian: apt-get install haproxy) or give its path (--haproxy-bin)"
    )]
    HaproxyMissing {
        /// The executable as given.
        binary: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The HAProxy executable is older than 2.6.
    #[error("{binary:?} is HAProxy {found:?}; Paz needs HAProxy 2.6 or newer")]
    HaproxyVersion {
        /// The executable.
        binary: std::path::PathBuf,
        /// The version it reported.
        found: String,
    },
    /// `haproxy -c` rejected the rendered config; the previous config keeps serving.
    #[error("HAProxy rejects the new config (the previous one keeps serving): {message}")]
    HaproxyRejected {
        /// HAProxy's alerts, naming the file and line.
        message: String,
    },
    /// HAProxy did not start, or did not take a reload.
    #[error("{message}")]
    HaproxyStart {
        /// What happened, with HAProxy's last output.
        message: String,
    },
    /// A runtime-API command failed.
    #[error("HAProxy's runtime API refused {command:?}: {message}")]
    HaproxySocket {
        /// The command.
        command: String,
        /// HAProxy's answer or the socket error.
        message: String,
    },
    /// A file or directory of HAProxy's cannot be written.
    #[error("cannot prepare {path:?} for HAProxy")]
    HaproxyFiles {
        /// The path.
        path: std::path::PathBuf,
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
            Error::InvalidBackend { .. }
            | Error::InvalidCertificate { .. }
            | Error::InvalidRoute { .. }
            | Error::HaproxyRejected { .. } => paz_core::PortErrorKind::Invalid,
            Error::HaproxyStart { .. } | Error::HaproxySocket { .. } => {
                paz_core::PortErrorKind::Unavailable
            }
            Error::Listener { .. }
            | Error::Worker { .. }
            | Error::OpenFilesLimit { .. }
            | Error::HaproxyMissing { .. }
            | Error::HaproxyVersion { .. }
            | Error::HaproxyFiles { .. } => paz_core::PortErrorKind::Internal,
        };
        paz_core::Error::Proxy(paz_core::PortError::new(kind, error.to_string()).with_source(error))
    }
}
