//! Secrets: values a service gets as environment variables that Paz never shows back.
//!
//! The engine keeps them sealed by a [`SecretCipher`] (the embedded default is a
//! ChaCha20-Poly1305 key file, `paz_store::SecretKey`), inside the release records that use
//! them, so a rollback restores the secrets of its release and retention drops old values
//! with their releases. Services and releases carry only names and when each was set
//! ([`SecretRef`]); the values are opened only to start an instance.

use serde::{Deserialize, Serialize};

/// The longest secret value accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The most secrets one service may have.
pub const MAX_SECRETS: usize = 100;

/// Seals and opens secret values. `context` names where a value belongs (service, name,
/// release): a sealed value opened under another context must fail, so values cannot be
/// moved between services or names in the store.
pub trait SecretCipher: Send + Sync + 'static {
    /// Encrypts and authenticates `plaintext` for `context`.
    fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError>;
    /// Decrypts a value sealed for `context`; fails when it was not (or the key differs).
    fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CipherError>;
}

/// A cipher failure, for people (never contains the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CipherError(pub String);

/// What Paz shows of a secret: its name and when it was set, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretRef {
    /// When the value was set.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub set_at: jiff::Timestamp,
    /// The release that set it.
    pub release: u64,
}

/// `GET /v1/services/{name}/secrets`: one secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    /// The environment variable it is given as.
    pub name: String,
    /// When the value was set.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub set_at: jiff::Timestamp,
    /// The release that set it.
    pub release: u64,
}

/// `PUT /v1/services/{name}/secrets/{secret}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetSecretRequest {
    /// The value (UTF-8, no NUL bytes, at most 64 KiB). Write-only: never shown again.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[^\x00]*$", max_length = 65536)
    )]
    pub value: String,
}

impl std::fmt::Debug for SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecretRequest { value: <redacted> }")
    }
}

/// Lower-case hex of `bytes` (how sealed values are kept in JSON records).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bytes of lower-case or upper-case hex; `None` for anything else.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001abff").unwrap(), bytes);
        assert_eq!(from_hex("0001ABFF").unwrap(), bytes);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }

    #[test]
    fn a_request_never_prints_its_value() {
        let request = SetSecretRequest {
            value: "hunter2".into(),
        };
        assert!(!format!("{request:?}").contains("hunter2"));
    }
}
