//! Validation rules for names: service names, domains, environment variable keys.
//!
//! **Service names** are DNS labels so that `<name>.<domain>` and `<name>.paz` are valid host
//! names: 1 to 63 characters of lowercase ASCII letters, digits and `-`, starting with a letter
//! and not ending with `-` (RFC 1123 labels, restricted to start with a letter as in RFC 1035
//! so that a name is never mistaken for a number or an address).

/// The longest service name (one DNS label).
pub const MAX_NAME_LEN: usize = 63;
/// The longest domain name.
pub const MAX_DOMAIN_LEN: usize = 253;

/// Checks a service name; returns a message for people when it is not a valid DNS label.
pub fn check_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {name:?} is {} characters long; at most {MAX_NAME_LEN} are allowed (one DNS label)",
            name.len()
        ));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(format!(
            "name {name:?} must start with a lowercase letter (a-z)"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "name {name:?} contains {bad:?}; only lowercase letters, digits and '-' are allowed (a DNS label)"
        ));
    }
    if name.ends_with('-') {
        return Err(format!("name {name:?} must not end with '-'"));
    }
    Ok(())
}

/// Checks one label of a domain name: 1-63 of `a-z0-9-`, not starting or ending with `-`.
fn check_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks a (lowercase) domain name such as `example.com` or `web.localhost`.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return Err(format!(
            "domain {domain:?} must be 1 to {MAX_DOMAIN_LEN} characters long"
        ));
    }
    if domain.split('.').all(check_domain_label) {
        Ok(())
    } else {
        Err(format!(
            "domain {domain:?} is not a valid lowercase DNS name (labels of a-z, 0-9 and '-', separated by '.')"
        ))
    }
}

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let valid = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "environment variable name {key:?} must match [A-Za-z_][A-Za-z0-9_]*"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        for ok in ["web", "a", "api-v2", "x1", &"a".repeat(63)] {
            assert!(check_service_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "web_1",
            "1web",
            "-web",
            "web-",
            "we.b",
            "wéb",
            &"a".repeat(64),
        ] {
            assert!(check_service_name(bad).is_err(), "{bad}");
        }
        assert!(check_domain("web.example.com").is_ok());
        assert!(check_domain("Web.example.com").is_err());
        assert!(check_domain("web..com").is_err());
        assert!(check_env_key("PATH_2").is_ok());
        assert!(check_env_key("2PATH").is_err());
        assert!(check_env_key("A=B").is_err());
    }

    proptest! {
        #[test]
        fn generated_labels_are_accepted(name in "[a-z]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assert!(check_service_name(&name).is_ok());
            let domain = format!("{}.localhost", name);
            prop_assert!(check_domain(&domain).is_ok());
        }

        #[test]
        fn accepted_names_are_dns_labels(name in "\\PC{0,70}") {
            if check_service_name(&name).is_ok() {
                prop_assert!(name.len() <= 63 && !name.is_empty());
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(name.as_bytes()[0].is_ascii_lowercase());
                prop_assert!(!name.ends_with('-'));
            }
        }
    }
}
