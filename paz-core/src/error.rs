//! The error type of `paz-core`.

use std::fmt;

/// One failed validation rule: which field, a stable machine code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field path, e.g. `ports[1].port`.
    pub field: String,
    /// A stable code, e.g. `INVALID_PORT`.
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All the validation failures of one object; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The first failure (the one reported as the error's code).
    pub fn first(&self) -> &FieldError {
        &self.0[0]
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.first();
        write!(f, "{first}")?;
        if self.0.len() > 1 {
            write!(f, " (and {} more)", self.0.len() - 1)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in the core: validation, lookups, conflicts and store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input broke one or more validation rules.
    #[error("invalid input: {0}")]
    Validation(ValidationErrors),
    /// A named object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What kind of object: `service`, `release`, `deployment`.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// An object with that name already exists.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// What kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A domain is already routed to another service.
    #[error("domain {domain:?} is already used by service {service:?}")]
    DomainConflict {
        /// The contested domain.
        domain: String,
        /// The service that holds it.
        service: String,
    },
    /// The caller's expected revision is not the stored one (optimistic concurrency).
    #[error("{kind} {name:?} changed: expected revision {expected}, found {actual}")]
    RevisionMismatch {
        /// What kind of object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The revision the caller expected.
        expected: u64,
        /// The stored revision.
        actual: u64,
    },
    /// The request is well-formed but not allowed in the object's current state.
    #[error("{0}")]
    InvalidState(String),
    /// A store compare-and-swap failed: the key changed since it was read.
    #[error("store conflict on key {key:?}")]
    Conflict {
        /// The key whose condition failed.
        key: String,
    },
    /// A watch asked for a revision that has been compacted away; re-list and watch again.
    #[error("revision {requested} has been compacted (oldest available is {compact_revision})")]
    Compacted {
        /// The revision that was asked for.
        requested: u64,
        /// Watches may start after this revision.
        compact_revision: u64,
    },
    /// A lease does not exist (expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(u64),
    /// A stored value could not be decoded.
    #[error("corrupt value at key {key:?}: {message}")]
    Corrupt {
        /// The key that holds the bad value.
        key: String,
        /// What failed.
        message: String,
    },
    /// The store backend failed (IO, network, database).
    #[error("store: {0}")]
    Store(#[source] PortError),
    /// A scheduler backend failed.
    #[error("scheduler: {0}")]
    Scheduler(#[source] PortError),
    /// A proxy backend failed.
    #[error("proxy: {0}")]
    Proxy(#[source] PortError),
    /// Secrets cannot be sealed or opened: no key is configured, or a value was sealed with
    /// another key.
    #[error("secrets unavailable: {0}")]
    SecretsUnavailable(String),
    /// A change kept losing its compare-and-swap race to concurrent writers and gave up.
    #[error("{kind} {name:?} is changing too fast; gave up after {attempts} attempts")]
    TooManyConflicts {
        /// What kind of object.
        kind: &'static str,
        /// Its name or id.
        name: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An import into a store that already holds state, without `replace`.
    #[error(
        "the target store is not empty: it holds {keys} keys under /paz/ (services, releases…); \
         import into an empty store, or replace its state (`paz admin import --replace`, \
         `?replace=true`)"
    )]
    StoreNotEmpty {
        /// How many keys it holds (leased keys and the cluster id aside).
        keys: usize,
    },
    /// An import whose sealed values the target's secret key does not open.
    #[error(
        "the export's sealed values do not open with this server's secret key ({key}: {message}); \
         start the target with the source's key (<data dir>/secret-key or PAZ_SECRET_KEY)"
    )]
    SecretKeyMismatch {
        /// A key whose sealed value did not open.
        key: String,
        /// Why.
        message: String,
    },
    /// An import failed part-way and putting the previous state back failed too: the store
    /// holds part of the import.
    #[error(
        "the import failed ({cause}) and restoring the previous state failed too ({restore}); \
         the store holds part of the import: import again with replace, or from a backup"
    )]
    ImportIncomplete {
        /// Why the import failed.
        cause: Box<Error>,
        /// Why restoring failed.
        restore: Box<Error>,
    },
}

/// What kind of failure a backend (store, scheduler, proxy) reported, so callers can tell
/// "retry later" from "this will never work".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortErrorKind {
    /// The backend cannot be reached or is not ready (daemon down, network): retry later.
    Unavailable,
    /// The image is not available and cannot be pulled: retrying will not help until it is.
    ImageUnavailable,
    /// The backend does not know the object.
    NotFound,
    /// The backend refused the change because of its current state.
    Conflict,
    /// The backend refused the request as invalid (bad setting, unschedulable placement).
    Invalid,
    /// The backend did not answer in time.
    Timeout,
    /// Anything else: the backend failed.
    Internal,
}

impl PortErrorKind {
    /// Whether the backend is out of reach (down, not answering in time), so the same call
    /// may succeed later. Other failures (an image that cannot be pulled, a request the
    /// backend refuses or fails) are the request's own and fail what needed it.
    pub fn is_transient(self) -> bool {
        matches!(self, PortErrorKind::Unavailable | PortErrorKind::Timeout)
    }
}

/// A backend's failure: its kind, a message for people and the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// What kind of failure.
    pub kind: PortErrorKind,
    /// What failed, for people (includes the cause's text).
    pub message: String,
    /// The underlying error, when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PortError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: PortErrorKind, message: impl Into<String>) -> Self {
        PortError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// An [`Unavailable`](PortErrorKind::Unavailable) failure.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Unavailable, message)
    }

    /// An [`Internal`](PortErrorKind::Internal) failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Internal, message)
    }
}

impl Error {
    /// A single-field validation error.
    pub fn invalid(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Error::Validation(ValidationErrors(vec![FieldError::new(
            field, code, message,
        )]))
    }

    /// The kind of a backend failure (`None` for errors that are not a backend's).
    pub fn port_kind(&self) -> Option<PortErrorKind> {
        match self {
            Error::Store(e) | Error::Scheduler(e) | Error::Proxy(e) => Some(e.kind),
            _ => None,
        }
    }

    /// A store failure.
    pub fn store(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Error::Store(PortError::new(kind, message))
    }

    /// A scheduler failure.
    pub fn scheduler(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Error::Scheduler(PortError::new(kind, message))
    }

    /// A proxy failure.
    pub fn proxy(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Error::Proxy(PortError::new(kind, message))
    }

    /// The stable machine-readable code of this error, as the REST API reports it.
    pub fn code(&self) -> &str {
        match self {
            Error::Validation(errors) => &errors.first().code,
            Error::NotFound { kind, .. } => match *kind {
                "service" => "SERVICE_NOT_FOUND",
                "release" => "RELEASE_NOT_FOUND",
                "deployment" => "DEPLOYMENT_NOT_FOUND",
                "host" => "HOST_NOT_FOUND",
                "secret" => "SECRET_NOT_FOUND",
                "token" => "TOKEN_NOT_FOUND",
                "hook" => "HOOK_NOT_FOUND",
                _ => "NOT_FOUND",
            },
            Error::AlreadyExists { kind, .. } => match *kind {
                "token" => "TOKEN_EXISTS",
                "hook" => "HOOK_EXISTS",
                _ => "SERVICE_EXISTS",
            },
            Error::SecretsUnavailable(_) => "SECRETS_UNAVAILABLE",
            Error::DomainConflict { .. } => "DOMAIN_CONFLICT",
            Error::RevisionMismatch { .. } => "REVISION_MISMATCH",
            Error::InvalidState(_) => "INVALID_STATE",
            Error::Conflict { .. } => "CONFLICT",
            Error::Compacted { .. } => "COMPACTED",
            Error::LeaseNotFound(_) => "LEASE_NOT_FOUND",
            Error::Corrupt { .. } => "CORRUPT_DATA",
            Error::Store(e) if e.kind == PortErrorKind::Unavailable => "STORE_UNAVAILABLE",
            Error::Store(e) if e.kind == PortErrorKind::Timeout => "STORE_UNAVAILABLE",
            Error::Store(_) => "STORE_ERROR",
            Error::Scheduler(e) if e.kind == PortErrorKind::ImageUnavailable => "IMAGE_UNAVAILABLE",
            Error::Scheduler(e) if e.kind == PortErrorKind::Unavailable => "SCHEDULER_UNAVAILABLE",
            Error::Scheduler(_) => "SCHEDULER_ERROR",
            Error::Proxy(_) => "PROXY_ERROR",
            Error::TooManyConflicts { .. } => "CONCURRENT_CHANGES",
            Error::StoreNotEmpty { .. } => "STORE_NOT_EMPTY",
            Error::SecretKeyMismatch { .. } => "SECRET_KEY_MISMATCH",
            Error::ImportIncomplete { .. } => "IMPORT_INCOMPLETE",
        }
    }
}

/// The result type of `paz-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
