//! fleet's v1 wire format: the JSON entities, page tokens and unit-name rules, shared by the
//! client and the fake server so that both read the reference the same way.
//!
//! Every field is `omitempty` on the wire (§3.3): a missing field is empty, and an empty
//! field is not sent.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The base path of the API (§3.1: `http://<ListenStream>/fleet/v1`).
pub const BASE_PATH: &str = "/fleet/v1";
/// The legacy prefix every route also exists under (§3.1).
pub const LEGACY_BASE_PATH: &str = "/v1-alpha";

/// One line of a unit file (§3.3 *UnitOption*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitOption {
    /// The section, e.g. `Service` or `X-Fleet`.
    #[serde(default)]
    pub section: String,
    /// The option name, e.g. `ExecStart`.
    #[serde(default)]
    pub name: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

impl UnitOption {
    /// An option `name=value` of `[section]`.
    pub fn new(section: &str, name: &str, value: impl Into<String>) -> Self {
        UnitOption {
            section: section.to_owned(),
            name: name.to_owned(),
            value: value.into(),
        }
    }
}

/// A unit (§3.3 *Unit*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// The unit name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The unit file, one option per line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<UnitOption>,
    /// The target state: `inactive`, `loaded` or `launched`.
    #[serde(
        default,
        rename = "desiredState",
        skip_serializing_if = "String::is_empty"
    )]
    pub desired_state: String,
    /// The state the engine last reported for the scheduled unit.
    #[serde(
        default,
        rename = "currentState",
        skip_serializing_if = "String::is_empty"
    )]
    pub current_state: String,
    /// The machine the unit is scheduled to (absent for unscheduled and global units).
    #[serde(
        default,
        rename = "machineID",
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
}

/// What systemd on one machine reports for one unit (§3.3 *UnitState*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    /// The unit name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// SHA1 of the unit file contents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// The machine reporting.
    #[serde(
        default,
        rename = "machineID",
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
    /// e.g. `loaded`.
    #[serde(
        default,
        rename = "systemdLoadState",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_load_state: String,
    /// e.g. `active`, `failed`.
    #[serde(
        default,
        rename = "systemdActiveState",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_active_state: String,
    /// e.g. `running`, `dead`.
    #[serde(
        default,
        rename = "systemdSubState",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_sub_state: String,
}

/// A machine of the cluster (§3.3 *Machine*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The systemd machine id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The address other machines reach it on.
    #[serde(
        default,
        rename = "primaryIP",
        skip_serializing_if = "String::is_empty"
    )]
    pub primary_ip: String,
    /// Its metadata (`fleet.conf` `metadata=`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A page of units (§3.3 *UnitPage*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPage {
    /// The units (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
    /// Present only when there might be more (§3.6).
    #[serde(
        default,
        rename = "nextPageToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

/// A page of unit states (§3.3 *UnitStatePage*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatePage {
    /// The states (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<UnitState>,
    /// Present only when there might be more (§3.6).
    #[serde(
        default,
        rename = "nextPageToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

/// A page of machines (§3.3 *MachinePage*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachinePage {
    /// The machines (absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<Machine>,
    /// Present only when there might be more (§3.6).
    #[serde(
        default,
        rename = "nextPageToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_page_token: Option<String>,
}

/// The body of a 400/500-level answer (§3.3 *Error*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status.
    #[serde(default)]
    pub code: u16,
    /// The text (may be empty).
    #[serde(default)]
    pub message: String,
}

/// A page token (§3.6): "URL-safe base64 (with `=` padding) of 4 bytes: little-endian
/// uint16 `Limit` then uint16 `Page`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// The server's page size (`token_limit`).
    pub limit: u16,
    /// The 1-based page.
    pub page: u16,
}

impl PageToken {
    /// The token's text, e.g. `ZAACAA==` for limit 100, page 2.
    pub fn encode(self) -> String {
        let mut bytes = [0u8; 4];
        bytes[..2].copy_from_slice(&self.limit.to_le_bytes());
        bytes[2..].copy_from_slice(&self.page.to_le_bytes());
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    }

    /// Parses a token's text (no check of its limit or page).
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(text)
            .map_err(|e| format!("invalid page token {text:?}: {e}"))?;
        let bytes: [u8; 4] = bytes
            .try_into()
            .map_err(|_| format!("invalid page token {text:?}: not 4 bytes"))?;
        Ok(PageToken {
            limit: u16::from_le_bytes([bytes[0], bytes[1]]),
            page: u16::from_le_bytes([bytes[2], bytes[3]]),
        })
    }
}

/// The longest unit name fleet accepts (§3.7).
pub const UNIT_NAME_MAX: usize = 256;

/// §3.7: "Suffix ∈ automount, busname, device, mount, path, scope, service, slice, snapshot,
/// socket, swap, target, timer".
const UNIT_TYPES: [&str; 13] = [
    "automount",
    "busname",
    "device",
    "mount",
    "path",
    "scope",
    "service",
    "slice",
    "snapshot",
    "socket",
    "swap",
    "target",
    "timer",
];
/// §3.7: "templates only for path, service, socket, target, timer".
const TEMPLATE_TYPES: [&str; 5] = ["path", "service", "socket", "target", "timer"];

/// Checks a unit name by the rules of §3.7, with fleet's messages.
pub fn validate_unit_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("unit name cannot be empty".into());
    }
    // §3.7: "max 256 chars".
    if name.len() > UNIT_NAME_MAX {
        return Err(format!(
            "unit name exceeds maximum length ({UNIT_NAME_MAX})"
        ));
    }
    // §3.7: "`string.suffix` or `string@instance.suffix`".
    let Some(dot) = name.rfind('.') else {
        return Err(r#"unit name must be of the form "string.suffix""#.into());
    };
    if dot == name.len() - 1 {
        return Err("unit name cannot end in '.'".into());
    }
    let suffix = &name[dot + 1..];
    if !UNIT_TYPES.contains(&suffix) {
        return Err(format!("invalid unit type: {suffix:?}"));
    }
    // §3.7: "characters `[A-Za-z0-9:_.@-]`".
    if let Some(c) = name[..dot]
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":_.@-".contains(*c)))
    {
        return Err(format!("invalid character {c:?} in unit name"));
    }
    // §3.7: "not starting with `@`".
    if name.starts_with('@') {
        return Err("unit name cannot start in '@'".into());
    }
    if is_template(name) && !TEMPLATE_TYPES.contains(&suffix) {
        return Err(format!("unit type {suffix:?} cannot be a template"));
    }
    Ok(())
}

/// Whether `name` is a template (`foo@.service`): an `@` with no instance before the suffix.
pub fn is_template(name: &str) -> bool {
    let stem = name.rfind('.').map_or(name, |dot| &name[..dot]);
    stem.find('@').is_some_and(|at| at == stem.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_match_the_reference() {
        // §3.6: "limit 100, page 2 → `ZAACAA==`; page 3 → `ZAADAA==`".
        assert_eq!(
            PageToken {
                limit: 100,
                page: 2
            }
            .encode(),
            "ZAACAA=="
        );
        assert_eq!(
            PageToken {
                limit: 100,
                page: 3
            }
            .encode(),
            "ZAADAA=="
        );
        assert_eq!(
            PageToken::decode("ZAACAA=="),
            Ok(PageToken {
                limit: 100,
                page: 2
            })
        );
        assert!(PageToken::decode("ZAACAA").is_err(), "padding is required");
        assert!(PageToken::decode("ZAACAAAA").is_err(), "4 bytes exactly");
        assert!(PageToken::decode("!!!!").is_err());
    }

    #[test]
    fn unit_names_follow_the_rules() {
        for ok in [
            "web.service",
            "web@1.service",
            "web@.service",
            "a:b_c-d.e.socket",
        ] {
            assert_eq!(validate_unit_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "web",
            "web.",
            "web.exe",
            "@web.service",
            "we b.service",
            "web/x.service",
            "dev@.device",
        ] {
            assert!(validate_unit_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_unit_name(&format!("{}.service", "a".repeat(250))).is_err());
        assert!(is_template("web@.service"));
        assert!(!is_template("web@1.service"));
        assert!(!is_template("web.service"));
    }

    #[test]
    fn empty_fields_are_omitted() {
        assert_eq!(serde_json::to_string(&UnitPage::default()).unwrap(), "{}");
        assert_eq!(
            serde_json::to_string(&MachinePage::default()).unwrap(),
            "{}"
        );
        let unit: Unit = serde_json::from_str(r#"{"desiredState":"launched"}"#).unwrap();
        assert_eq!(unit.desired_state, "launched");
        assert_eq!(
            serde_json::to_string(&unit).unwrap(),
            r#"{"desiredState":"launched"}"#
        );
    }
}
