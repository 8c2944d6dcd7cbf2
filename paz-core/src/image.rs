//! Parsing of Docker image references (`[registry/]path[:tag][@digest]`).
//!
//! The grammar is the one of the distribution project's `reference` package:
//! path components are `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`; the first
//! component is a registry when it contains `.` or `:` or is `localhost`; tags are
//! `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; digests are `algorithm:hex` (sha256 has 64 hex digits).

use std::fmt;
use std::str::FromStr;

/// The longest image name (registry and path), as in Docker.
pub const MAX_NAME_LEN: usize = 255;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry host (and port), when the reference names one.
    pub registry: Option<String>,
    /// The repository path, e.g. `library/nginx` or `demo`.
    pub repository: String,
    /// The tag, when given.
    pub tag: Option<String>,
    /// The digest (`sha256:…`), when given.
    pub digest: Option<String>,
}

/// Why an image reference is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ImageRef {
    /// Parses a reference such as `demo:v1`, `registry.local:5000/team/app@sha256:…`.
    pub fn parse(reference: &str) -> Result<Self, ImageRefError> {
        let fail = |reason: &str| ImageRefError {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        if reference.is_empty() {
            return Err(fail("it is empty"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|r| fail(&r))?;
                (rest, Some(digest.to_owned()))
            }
            None => (reference, None),
        };
        // A tag follows the last ':' when no '/' comes after it (else the ':' is a registry port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| fail(&r))?;
        }
        if name.is_empty() {
            return Err(fail("the repository name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(fail(&format!(
                "the name is longer than {MAX_NAME_LEN} characters"
            )));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_registry(first).map_err(|r| fail(&r))?;
                (Some(first.to_owned()), path)
            }
            _ => (None, name),
        };
        for component in path.split('/') {
            check_path_component(component).map_err(|r| fail(&r))?;
        }
        Ok(ImageRef {
            registry,
            repository: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The reference with its tag defaulted to `latest` when it has neither tag nor digest,
    /// which is what Docker pulls.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The name without tag or digest: `[registry/]repository`.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.repository),
            None => self.repository.clone(),
        }
    }
}

fn check_registry(host: &str) -> Result<(), String> {
    let (hostname, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if hostname.is_empty() || !hostname.split('.').all(label_ok) {
        return Err(format!(
            "registry host {hostname:?} is not a valid host name"
        ));
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("registry port {port:?} is not a number"));
    }
    Ok(())
}

fn check_path_component(component: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bad = || {
        Err(format!(
            "path component {component:?} must be lowercase letters and digits, \
             separated by '.', '_', '__' or '-'"
        ))
    };
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or one or more '-'.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return bad(),
        }
        if i == start || i >= bytes.len() || !alnum(bytes[i]) {
            return bad();
        }
    }
    Ok(())
}

/// Checks a tag: 1 to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || tag.len() > 128
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "tag {tag:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// The longest digest algorithm name accepted (`sha256`, `sha512`, `blake3`, …).
const MAX_DIGEST_ALGORITHM: usize = 32;
/// The most hex digits a digest may have (sha512 has 128).
const MAX_DIGEST_HEX: usize = 128;

/// Checks a digest: `algorithm:hex` (sha256 has 64 hex digits).
pub fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} must look like sha256:<hex>"));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.as_bytes()[0].is_ascii_alphabetic()
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'));
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    if !algorithm_ok || !hex_ok {
        return Err(format!("digest {digest:?} must look like sha256:<hex>"));
    }
    if algorithm == "sha256" && hex.len() != 64 {
        return Err(format!("sha256 digest {digest:?} must have 64 hex digits"));
    }
    if algorithm.len() > MAX_DIGEST_ALGORITHM || hex.len() > MAX_DIGEST_HEX {
        return Err(format!(
            "digest {digest:?} is too long: at most {MAX_DIGEST_ALGORITHM} characters of algorithm and {MAX_DIGEST_HEX} hex digits"
        ));
    }
    Ok(())
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_references() {
        let r = ImageRef::parse("demo:v1").unwrap();
        assert_eq!(
            (r.registry, r.repository.as_str(), r.tag.as_deref()),
            (None, "demo", Some("v1"))
        );
        let r = ImageRef::parse("localhost:5000/team/app").unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_latest(), "latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/app:1.2@{digest}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        // Other algorithms up to the limits.
        assert!(ImageRef::parse(&format!("demo@sha512:{}", "b".repeat(128))).is_ok());
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert!(ImageRef::parse("library/nginx").unwrap().registry.is_none());
        assert!(ImageRef::parse("my_app__x.y-z").is_ok());
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Demo:v1",
            "demo:",
            "demo:.v1",
            ":v1",
            "demo@sha256:abc",
            "demo//x",
            "demo/",
            "-demo",
            "demo_",
            "de___mo",
            "demo:v1:v2",
            "host:abc/app",
            "with space",
            &format!("demo@sha512:{}", "a".repeat(129)),
            &format!("demo@{}:{}", "a".repeat(33), "a".repeat(64)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(ImageRef::parse(&format!("demo:{}", "a".repeat(129))).is_err());
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}((\\.|_|__|-{1,2})[a-z0-9]{1,5}){0,2}"
    }

    fn image_ref() -> impl Strategy<Value = ImageRef> {
        (
            proptest::option::of("[a-z][a-z0-9]{0,5}\\.[a-z]{2,3}(:[0-9]{1,5})?"),
            // A first component with a '.' would read as a registry host, as in Docker.
            "[a-z0-9]{1,5}((_|__|-{1,2})[a-z0-9]{1,5}){0,2}",
            proptest::collection::vec(component(), 0..3),
            proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            proptest::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(registry, first, rest, tag, digest)| ImageRef {
                registry,
                repository: std::iter::once(first)
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join("/"),
                tag,
                digest: digest.map(|d| format!("sha256:{d}")),
            })
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(image in image_ref()) {
            let text = image.to_string();
            prop_assert_eq!(ImageRef::parse(&text).unwrap(), image);
        }

        #[test]
        fn parse_never_panics_and_round_trips(text in "\\PC{0,80}") {
            if let Ok(image) = ImageRef::parse(&text) {
                prop_assert_eq!(image.to_string(), text);
            }
        }
    }
}
