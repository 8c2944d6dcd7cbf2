//! A duration written the way people write it: `500ms`, `5s`, `2m`, `1h`, `1m30s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration with millisecond precision that (de)serializes as text such as `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        HumanDuration(Duration::from_millis(millis))
    }

    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "duration {text:?} must be a number with a unit, e.g. 500ms, 5s, 2m, 1h or 1m30s"
            )
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total_ms = value
                .checked_mul(factor)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(HumanDuration::from_millis(total_ms))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            f.write_str("0s")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for HumanDuration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A duration such as 500ms, 5s, 2m, 1h or 1m30s"))
            .pattern(Some(crate::schema::DURATION_PATTERN))
            .examples(["30s"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for HumanDuration {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            "1m30s".parse::<HumanDuration>().unwrap(),
            HumanDuration::from_secs(90)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().to_string(),
            "250ms"
        );
        assert_eq!(HumanDuration::from_secs(120).to_string(), "2m");
        for bad in ["", "5", "s", "5x", "-5s", "1.5s"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in 0u64..10_000_000_000) {
            let d = HumanDuration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }
    }
}
