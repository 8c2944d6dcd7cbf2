//! Why connecting to a backend failed ([`ConnectError`]), for the pool and `Upstream` alike.

use std::io;

/// Why no connection could be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Io(io::Error),
    Timeout,
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Handshake(e) => write!(f, "handshake: {e}"),
        }
    }
}
