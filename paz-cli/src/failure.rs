//! How failures are reported on stderr and which exit code they give.

use std::fmt;

/// Exit code of a failure: API error, network, failed deployment.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad usage or bad input (clap uses it for its own errors too).
pub const EXIT_USAGE: u8 = 2;

/// Bad input detected locally: exits with [`EXIT_USAGE`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A failure whose messages were already printed: only sets the exit code.
#[derive(Debug)]
pub struct Reported(pub u8);

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed (exit code {})", self.0)
    }
}

impl std::error::Error for Reported {}

/// Prints `err` to stderr (`error: …`, then details and hints) and returns the exit code.
pub fn report(err: &anyhow::Error, server: &str) -> u8 {
    if let Some(Reported(code)) = err.downcast_ref() {
        return *code;
    }
    eprintln!("error: {}", message(err));
    let api = err.chain().find_map(|e| e.downcast_ref::<paz::Error>());
    match api {
        Some(paz::Error::Api {
            status, details, ..
        }) => {
            print_details(details);
            if *status == 403 {
                eprintln!(
                    "hint: this token's scope does not allow it; use a token with more rights (see `paz token list`)"
                );
            }
            if *status == 401 {
                eprintln!(
                    "hint: pass the API token with --token or PAZ_TOKEN (a local server writes it to <data dir>/admin-token)"
                );
            }
        }
        Some(e) if e.is_connect() => eprintln!(
            "hint: is paz-server running at {server}? Set --server or PAZ_SERVER to reach another one."
        ),
        _ => {}
    }
    let usage = err.downcast_ref::<UsageError>().is_some()
        || matches!(
            api,
            Some(paz::Error::InvalidUrl { .. } | paz::Error::InvalidToken)
        );
    if usage { EXIT_USAGE } else { EXIT_FAILURE }
}

/// Prints every failed rule of a validation error.
pub fn print_details(details: &[paz_core::FieldError]) {
    for detail in details {
        eprintln!("  {}: {} ({})", detail.field, detail.message, detail.code);
    }
}

/// The error and its causes on one line (see [`message_of`]).
pub fn message(err: &anyhow::Error) -> String {
    message_of(err.as_ref())
}

/// The error and its causes on one line. For a network error, the client's own summary and the
/// root cause (e.g. "Connection refused") stand for the transport's layers of wrapping.
pub fn message_of(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(e @ paz::Error::Http(_)) = cause.downcast_ref::<paz::Error>() {
            parts.push(e.to_string());
            let mut root: &dyn std::error::Error = e;
            while let Some(source) = root.source() {
                root = source;
            }
            let root = root.to_string();
            if !parts.contains(&root) {
                parts.push(root);
            }
            break;
        }
        parts.push(cause.to_string());
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_api_errors_exit_1() {
        let usage = anyhow::Error::new(UsageError("bad flag".into()));
        assert_eq!(report(&usage, "http://x"), EXIT_USAGE);
        let api = anyhow::Error::new(paz::Error::Api {
            status: 404,
            code: "SERVICE_NOT_FOUND".into(),
            message: "service \"web\" not found".into(),
            details: vec![],
        });
        assert_eq!(
            message(&api),
            "service \"web\" not found (SERVICE_NOT_FOUND)"
        );
        assert_eq!(report(&api, "http://x"), EXIT_FAILURE);
        let bad_url = anyhow::Error::new(paz::Client::new("nope", None).unwrap_err());
        assert_eq!(report(&bad_url, "nope"), EXIT_USAGE);
        assert_eq!(report(&anyhow::Error::new(Reported(7)), "x"), 7);
    }
}
