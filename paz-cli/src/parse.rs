//! Flag value parsers (`--port`, `--env`, `--volume`, `--to`): a leaf module, used by the
//! command line definition ([`crate::args`]) and by the tests of [`crate::spec`].

use paz_core::{PortSpec, Protocol, VolumeSpec};

/// Parses `--port`: `8080`, `8080/http` or `8080/tcp`.
pub fn parse_port(text: &str) -> Result<PortSpec, String> {
    let (number, protocol) = match text.split_once('/') {
        Some((number, "http")) => (number, Protocol::Http),
        Some((number, "tcp")) => (number, Protocol::Tcp),
        Some((_, other)) => {
            return Err(format!(
                "unknown protocol {other:?}; use PORT, PORT/http or PORT/tcp"
            ));
        }
        None => (text, Protocol::Http),
    };
    let port: u16 = number
        .trim()
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("port {number:?} must be a number from 1 to 65535"))?;
    Ok(PortSpec {
        port: u32::from(port),
        protocol,
    })
}

/// Parses `--env`: `KEY=VALUE` (the value may be empty and may contain `=`).
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "expected KEY=VALUE, e.g. --env RUST_LOG=info (got {text:?}, which has no '=')"
        ));
    };
    paz_core::names::check_env_key(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Parses `--volume`: `SOURCE:TARGET`, `SOURCE:TARGET:ro` or `SOURCE:TARGET:rw`.
pub fn parse_volume(text: &str) -> Result<VolumeSpec, String> {
    let (rest, read_only) = if let Some(rest) = text.strip_suffix(":ro") {
        (rest, true)
    } else if let Some(rest) = text.strip_suffix(":rw") {
        (rest, false)
    } else {
        (text, false)
    };
    match rest.split_once(':') {
        Some((source, target))
            if !source.is_empty() && target.starts_with('/') && !target.contains(':') =>
        {
            Ok(VolumeSpec {
                source: source.to_owned(),
                target: target.to_owned(),
                read_only,
            })
        }
        _ => Err(format!(
            "expected SOURCE:TARGET[:ro] with an absolute TARGET, e.g. data:/var/lib/app or /srv/conf:/etc/app:ro (got {text:?})"
        )),
    }
}

/// Parses a release number: `v3` or `3`.
pub fn parse_release(text: &str) -> Result<u64, String> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse::<u64>()
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("expected a release such as v3 or 3 (got {text:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_optional_protocol() {
        assert_eq!(
            parse_port("8080").unwrap(),
            PortSpec {
                port: 8080,
                protocol: Protocol::Http
            }
        );
        assert_eq!(parse_port("8080/http").unwrap().protocol, Protocol::Http);
        assert_eq!(
            parse_port("5432/tcp").unwrap(),
            PortSpec {
                port: 5432,
                protocol: Protocol::Tcp
            }
        );
        for bad in ["0", "65536", "http", "80/udp", "", "/tcp", "-1"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_splits_at_the_first_equals() {
        assert_eq!(
            parse_env("K=V").unwrap(),
            ("K".to_string(), "V".to_string())
        );
        assert_eq!(
            parse_env("URL=a=b").unwrap(),
            ("URL".to_string(), "a=b".to_string())
        );
        assert_eq!(parse_env("EMPTY=").unwrap().1, "");
        assert!(parse_env("BAD").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_env("1X=v").is_err());
        assert!(parse_env("=v").is_err());
    }

    #[test]
    fn volumes_parse_source_target_and_mode() {
        assert_eq!(
            parse_volume("src:/dst:ro").unwrap(),
            VolumeSpec {
                source: "src".into(),
                target: "/dst".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_volume("/srv/data:/data").unwrap(),
            VolumeSpec {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: false
            }
        );
        assert!(!parse_volume("data:/data:rw").unwrap().read_only);
        for bad in ["data", "data:rel", ":/dst", "a:/b:c", "a:/b:xx"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn releases_parse_with_or_without_v() {
        assert_eq!(parse_release("v3"), Ok(3));
        assert_eq!(parse_release("12"), Ok(12));
        assert!(parse_release("v0").is_err());
        assert!(parse_release("three").is_err());
    }
}
