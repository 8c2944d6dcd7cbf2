//! The state export (`paz admin export` / `paz admin import`): every key Paz keeps under
//! `/paz/`, read at one store revision, as one versioned JSON document. It is the backup
//! format and the way to move a cluster between stores (embedded redb ↔ etcd).
//!
//! ```json
//! {"format": "paz-state", "version": 1, "paz_version": "0.1.0",
//!  "exported_at": "2026-11-02T10:00:00Z", "revision": 42, "cluster": "a1b2c3",
//!  "keys": [{"key": "/paz/services/web", "value": {"spec": {"name": "web"}}},
//!           {"key": "/paz/cluster", "base64": "YTFiMmMz"}]}
//! ```
//!
//! - **Key-level.** Each entry is one stored key and its value, byte for byte: a value that
//!   is JSON is embedded as that JSON text (readable, diffable), anything else as `base64`.
//!   Importing writes exactly those bytes back, whatever the store.
//! - **Not included:** keys attached to a lease (hosts, and anything else a running server
//!   re-creates on its own); they are ephemeral.
//! - **Secrets** (service secrets, CI hook secrets, certificate keys) are exported sealed,
//!   never opened: the target must have the same secret key (`<data dir>/secret-key` or
//!   `PAZ_SECRET_KEY`). Access tokens are stored hashed and exported as they are.
//! - **Versioning:** `format` is always `paz-state`; `version` grows when the document's
//!   shape or the meaning of its keys changes. A server refuses a newer version than it
//!   knows ([`VERSION`]) rather than guess.
//!
//! See [`crate::Paz::export_state`] and [`crate::Paz::import_state`].

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// The `format` of every state export.
pub const FORMAT: &str = "paz-state";
/// The newest `version` of the format this build writes and reads.
pub const VERSION: u32 = 1;
/// Where every key Paz keeps lives.
pub const PREFIX: &str = "/paz/";
/// Prefixes of keys that live on leases (a running server re-creates them): never exported,
/// refused on import.
pub const LEASED_PREFIXES: &[&str] = &[
    "/paz/hosts/",
    "/paz/leader",
    "/paz/replicas/",
    "/paz/announce/",
    "/paz/routers/",
];

/// A state export: every non-leased key under `/paz/` at one store revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateExport {
    /// Always `paz-state`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^paz-state$"))]
    pub format: String,
    /// The format version (1).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1))]
    pub version: u32,
    /// The version of Paz that wrote it.
    pub paz_version: String,
    /// When it was written (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub exported_at: jiff::Timestamp,
    /// The store revision the keys were read at.
    pub revision: u64,
    /// The cluster id of the exported store, if it had one (the value of `/paz/cluster`).
    pub cluster: Option<String>,
    /// The keys, in key order.
    pub keys: Vec<StateKey>,
}

/// One stored key: its value as JSON (`value`) when it is JSON, else as `base64`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateKey {
    /// The key, under `/paz/`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^/paz/"))]
    pub key: String,
    /// The value when it is JSON: exactly the stored text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub value: Option<Box<RawValue>>,
    /// The value when it is not JSON, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// A `value` that is present is kept, even `null` (a stored `null` is a value too).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl StateKey {
    /// The entry of a stored key: JSON as it is when the bytes are JSON text exactly
    /// (no surrounding whitespace), else base64.
    pub fn new(key: impl Into<String>, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        let json = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| RawValue::from_string(text.to_owned()).ok())
            .filter(|raw| raw.get().as_bytes() == bytes);
        match json {
            Some(raw) => StateKey {
                key: key.into(),
                value: Some(raw),
                base64: None,
            },
            None => StateKey {
                key: key.into(),
                value: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    /// The stored bytes; `Err` says what is wrong with the entry.
    pub fn bytes(&self) -> std::result::Result<Vec<u8>, String> {
        use base64::Engine as _;
        match (&self.value, &self.base64) {
            (Some(raw), None) => Ok(raw.get().as_bytes().to_vec()),
            (None, Some(text)) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("its base64 is not valid: {e}")),
            (Some(_), Some(_)) => Err("it has both value and base64; give one".into()),
            (None, None) => Err("it has neither value nor base64".into()),
        }
    }
}

/// How to import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Replace a target that already holds state: its keys under `/paz/` (except leased
    /// ones) are deleted, in the same all-or-nothing write. Without it a non-empty target
    /// is refused.
    pub replace: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReport {
    /// How many keys were written.
    pub keys: usize,
    /// How many services they hold.
    pub services: usize,
    /// How many keys of the target were deleted (with `replace`).
    pub deleted: usize,
    /// How many store transactions the write took (1 unless the store limits their size).
    pub transactions: usize,
    /// The cluster id after the import.
    pub cluster: Option<String>,
    /// Whether the import changed the cluster id: restart the server so its scheduler
    /// labels and adopts containers under the imported id.
    pub cluster_changed: bool,
    /// Whether a sealed value was opened with the target's secret key (false: there was
    /// none, or the target has no key).
    pub secret_key_checked: bool,
}

/// Just the fields that say which format a document is, read before the rest.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    format: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<serde_json::Value>,
}

impl StateExport {
    /// Refuses a document that is not a `paz-state` export, or one of a newer version
    /// (`UNKNOWN_FORMAT`, `FORMAT_TOO_NEW`).
    pub fn check_format(&self) -> Result<()> {
        check_header(Some(&self.format), Some(u64::from(self.version)))
    }

    /// Reads a document: first its `format` and `version` (so a newer version is refused
    /// as such, whatever its shape), then the rest. Errors are 422 validation errors with
    /// codes `INVALID_EXPORT`, `UNKNOWN_FORMAT` and `FORMAT_TOO_NEW`.
    pub fn from_slice(bytes: &[u8]) -> Result<StateExport> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::invalid(
                "export",
                "INVALID_EXPORT",
                "not a state export: it must be a JSON object",
            ));
        }
        let header: Header = serde_json::from_slice(bytes).map_err(|e| {
            Error::invalid(
                "export",
                "INVALID_EXPORT",
                format!("not a state export (a JSON object): {e}"),
            )
        })?;
        let format = header.format.as_ref().map(|f| f.as_str().unwrap_or("?"));
        let version = header
            .version
            .as_ref()
            .map(|v| v.as_u64().unwrap_or(u64::MAX));
        check_header(format, version)?;
        serde_json::from_slice(bytes).map_err(|e| {
            Error::invalid(
                "export",
                "INVALID_EXPORT",
                format!("not a valid paz-state version {VERSION} document: {e}"),
            )
        })
    }
}

fn check_header(format: Option<&str>, version: Option<u64>) -> Result<()> {
    if format != Some(FORMAT) {
        let found = format.map_or_else(|| "no format".to_owned(), |f| format!("format {f:?}"));
        return Err(Error::invalid(
            "format",
            "UNKNOWN_FORMAT",
            format!("this is not a Paz state export: {found}, expected {FORMAT:?}"),
        ));
    }
    match version {
        Some(v) if (1..=u64::from(VERSION)).contains(&v) => Ok(()),
        Some(v) if v > u64::from(VERSION) => Err(Error::invalid(
            "version",
            "FORMAT_TOO_NEW",
            format!(
                "the export is {FORMAT} version {v}, newer than this server reads \
                 (up to {VERSION}): import it with a newer Paz"
            ),
        )),
        _ => Err(Error::invalid(
            "version",
            "INVALID_EXPORT",
            format!("the export has no valid version (1 to {VERSION})"),
        )),
    }
}

/// Whether a key lives on a lease by its prefix (see [`LEASED_PREFIXES`]).
pub fn is_leased_key(key: &str) -> bool {
    LEASED_PREFIXES.iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_embedded_exactly_and_the_rest_is_base64() {
        for (bytes, json) in [
            (&br#"{"b":1,"a":[1.0,2]}"#[..], true),
            (b"null", true),
            (b"12345", true),
            (b"a1b2c3", false),
            (b" 1", false),
            (b"{\"a\": 1}\n", false),
            (b"\xff\x00", false),
            (b"", false),
        ] {
            let entry = StateKey::new("/paz/x", bytes);
            assert_eq!(entry.value.is_some(), json, "{bytes:?}");
            assert_eq!(entry.bytes().unwrap(), bytes);
            // Through the document's text and back.
            let text = serde_json::to_string_pretty(&entry).unwrap();
            let back: StateKey = serde_json::from_str(&text).unwrap();
            assert_eq!(back.bytes().unwrap(), bytes, "{text}");
        }
        let both: StateKey =
            serde_json::from_str(r#"{"key":"/paz/x","value":1,"base64":"AA=="}"#).unwrap();
        assert!(both.bytes().unwrap_err().contains("both"));
        let neither: StateKey = serde_json::from_str(r#"{"key":"/paz/x"}"#).unwrap();
        assert!(neither.bytes().unwrap_err().contains("neither"));
    }

    #[test]
    fn the_header_is_checked_before_the_shape() {
        let code = |text: &str| {
            StateExport::from_slice(text.as_bytes())
                .unwrap_err()
                .code()
                .to_owned()
        };
        assert_eq!(code("[1]"), "INVALID_EXPORT");
        assert_eq!(code("not json"), "INVALID_EXPORT");
        assert_eq!(code(r#"{"format":"tar","version":1}"#), "UNKNOWN_FORMAT");
        assert_eq!(code(r#"{"version":1}"#), "UNKNOWN_FORMAT");
        // A newer version is refused as such even though its shape is unknown.
        assert_eq!(
            code(r#"{"format":"paz-state","version":2,"entries":{}}"#),
            "FORMAT_TOO_NEW"
        );
        assert_eq!(
            code(r#"{"format":"paz-state","version":0}"#),
            "INVALID_EXPORT"
        );
        assert_eq!(
            code(r#"{"format":"paz-state","version":1}"#),
            "INVALID_EXPORT"
        );
        let ok = r#"{"format":"paz-state","version":1,"paz_version":"0.1.0",
            "exported_at":"2026-01-01T00:00:00Z","revision":3,"cluster":null,"keys":[]}"#;
        assert!(StateExport::from_slice(ok.as_bytes()).is_ok());
    }
}
