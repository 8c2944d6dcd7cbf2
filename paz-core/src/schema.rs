//! OpenAPI schemas for fields whose rules the derive cannot state with attributes alone
//! (item patterns, map keys, shared patterns). Each pattern is the validator's rule written
//! as an ECMA-262 regular expression; `paz-server`'s tests check them against the validators.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};

/// A Docker image reference as [`crate::ImageRef::parse`] accepts it, except two limits a
/// regular expression states badly: the name (registry and path) is at most 255 characters
/// (the schemas bound the whole reference instead), and a `sha256` digest has exactly 64 hex
/// digits.
pub const IMAGE_PATTERN: &str = concat!(
    "^(?:",
    // A registry host: has a '.' or a port, or is `localhost`; then the path.
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+(?::[0-9]{1,5})?",
    r"|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?:[0-9]{1,5}|localhost)/",
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
    // No registry: a first component without '.' (else it reads as a host), then the rest.
    r"|[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+",
    // A single component.
    r"|[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*",
    r")(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
    r"(?:@[A-Za-z][A-Za-z0-9+._-]{0,31}:[0-9A-Fa-f]{32,128})?$",
);

/// A lowercase DNS name as [`crate::names::check_domain`] accepts it (at most 253 characters).
pub const DOMAIN_PATTERN: &str =
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$";

/// An environment variable name ([`crate::names::check_env_key`]).
pub const ENV_KEY_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// Text without NUL bytes.
pub const NO_NUL_PATTERN: &str = r"^[^\x00]*$";

/// A placement constraint `label==value` or `label!=value` with a label and a value that are
/// not blank. Stricter than [`crate::service::Constraint::parse`]: the label has no `=` or `!`
/// and the value no `=`, so the separator is never ambiguous.
pub const CONSTRAINT_PATTERN: &str = concat!(
    r"^[^=!]*[^=!\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^=!]*",
    r"(?:==|!=)",
    r"[^=]*[^=\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^=]*$",
);

// Durations: below 10^19 ms, so that parsing never overflows and the server's own spelling
// (one part in the largest unit that divides it) matches the pattern again. One part is a
// number of ms (up to 19 digits), s (16), m (up to 166666666666666) or h (up to
// 2777777777777); two to four parts have up to 11 digits each. Leading zeros are free.

/// A duration: `0s`, `1500ms`, `1m30s`… (a subset of what [`crate::HumanDuration`] parses:
/// below 10^19 ms, without surrounding spaces).
pub const DURATION_PATTERN: &str = concat!(
    r"^(?:0*(?:0|[1-9][0-9]{0,18})ms|0*(?:0|[1-9][0-9]{0,15})s",
    r"|0*(?:0|(?:[1-9][0-9]{0,13}|1[0-5][0-9]{13}|16[0-5][0-9]{12}|166[0-5][0-9]{11}|1666[0-5][0-9]{10}|16666[0-5][0-9]{9}|166666[0-5][0-9]{8}|1666666[0-5][0-9]{7}|16666666[0-5][0-9]{6}|166666666[0-5][0-9]{5}|1666666666[0-5][0-9]{4}|16666666666[0-5][0-9]{3}|166666666666[0-5][0-9]{2}|1666666666666[0-5][0-9]|16666666666666[0-5]|166666666666666))m",
    r"|0*(?:0|(?:[1-9][0-9]{0,11}|1[0-9]{12}|2[0-6][0-9]{11}|27[0-6][0-9]{10}|277[0-6][0-9]{9}|2777[0-6][0-9]{8}|27777[0-6][0-9]{7}|277777[0-6][0-9]{6}|2777777[0-6][0-9]{5}|27777777[0-6][0-9]{4}|277777777[0-6][0-9]{3}|2777777777[0-6][0-9]{2}|27777777777[0-6][0-9]|277777777777[0-6]|2777777777777))h",
    r"|(?:0*[0-9]{1,11}(?:ms|s|m|h)){2,4})$",
);

/// A duration above zero (of two to four parts, the last is not zero).
pub const POSITIVE_DURATION_PATTERN: &str = concat!(
    r"^(?:0*[1-9][0-9]{0,18}ms|0*[1-9][0-9]{0,15}s",
    r"|0*(?:[1-9][0-9]{0,13}|1[0-5][0-9]{13}|16[0-5][0-9]{12}|166[0-5][0-9]{11}|1666[0-5][0-9]{10}|16666[0-5][0-9]{9}|166666[0-5][0-9]{8}|1666666[0-5][0-9]{7}|16666666[0-5][0-9]{6}|166666666[0-5][0-9]{5}|1666666666[0-5][0-9]{4}|16666666666[0-5][0-9]{3}|166666666666[0-5][0-9]{2}|1666666666666[0-5][0-9]|16666666666666[0-5]|166666666666666)m",
    r"|0*(?:[1-9][0-9]{0,11}|1[0-9]{12}|2[0-6][0-9]{11}|27[0-6][0-9]{10}|277[0-6][0-9]{9}|2777[0-6][0-9]{8}|27777[0-6][0-9]{7}|277777[0-6][0-9]{6}|2777777[0-6][0-9]{5}|27777777[0-6][0-9]{4}|277777777[0-6][0-9]{3}|2777777777[0-6][0-9]{2}|27777777777[0-6][0-9]|277777777777[0-6]|2777777777777)h",
    r"|(?:0*[0-9]{1,11}(?:ms|s|m|h)){1,3}0*[1-9][0-9]{0,10}(?:ms|s|m|h))$",
);

fn string(pattern: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
}

/// `ServiceSpec::image`.
pub fn image() -> Schema {
    string(
        IMAGE_PATTERN,
        "The image reference, e.g. `demo:v1` or `registry.local:5000/team/app@sha256:…` \
         (a sha256 digest has 64 hex digits).",
    )
    .max_length(Some(crate::image::MAX_NAME_LEN))
    .examples(["demo:v1"])
    .into()
}

/// `DeployRequest::image`: an image reference or nothing.
pub fn optional_image() -> Schema {
    string(
        IMAGE_PATTERN,
        "A new image; without it the current spec is released again.",
    )
    .max_length(Some(crate::image::MAX_NAME_LEN))
    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
        Type::String,
        Type::Null,
    ]))
    .into()
}

/// An image of the service's own repository in a CI hook request (`null`: none).
pub fn repository_image() -> Schema {
    string(
        IMAGE_PATTERN,
        "An image of the service's repository; with `@sha256:…` the release is pinned to it.",
    )
    .max_length(Some(crate::image::MAX_NAME_LEN))
    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
        Type::String,
        Type::Null,
    ]))
    .into()
}

/// `ServiceSpec::domains`.
pub fn domains() -> Schema {
    ArrayBuilder::new()
        .items(
            string(
                DOMAIN_PATTERN,
                "A lowercase DNS name, not `paz` or under `.paz`.",
            )
            .max_length(Some(crate::names::MAX_DOMAIN_LEN)),
        )
        .unique_items(true)
        .description(Some(
            "Extra domains routed to this service (lowercase DNS names, not under `.paz`, \
             which names services inside Paz); they need an `http` port.",
        ))
        .into()
}

/// `ServiceSpec::env`.
pub fn env() -> Schema {
    ObjectBuilder::new()
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(ENV_KEY_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NO_NUL_PATTERN)),
        ))
        .description(Some(
            "Environment variables of the containers: names match `[A-Za-z_][A-Za-z0-9_]*`, \
             values have no NUL byte.",
        ))
        .into()
}

/// `ServiceSpec::command`.
pub fn command() -> Schema {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NO_NUL_PATTERN)),
        )
        .description(Some(
            "The command (overrides the image's); empty keeps the image's. No NUL bytes.",
        ))
        .into()
}

/// `Placement::constraints`.
pub fn constraints() -> Schema {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(CONSTRAINT_PATTERN)),
        )
        .description(Some(
            "Constraints `label==value` or `label!=value`; all must hold.",
        ))
        .into()
}

/// `DeploySettings::canary_steps`.
pub fn canary_steps() -> Schema {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(1))
                .maximum(Some(100)),
        )
        .min_items(Some(1))
        .max_items(Some(100))
        .unique_items(true)
        .description(Some(
            "Canary traffic percentages, strictly increasing, ending at 100.",
        ))
        .examples([serde_json::json!([10, 50, 100])])
        .into()
}

/// An optional duration above zero (`null`: none).
pub fn optional_positive_duration() -> RefOr<Schema> {
    string(
        POSITIVE_DURATION_PATTERN,
        "A duration above zero, such as 500ms, 5s, 2m, 1h or 1m30s.",
    )
    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
        Type::String,
        Type::Null,
    ]))
    .examples(["720h"])
    .into()
}

/// A duration field that must be above zero.
pub fn positive_duration() -> RefOr<Schema> {
    string(
        POSITIVE_DURATION_PATTERN,
        "A duration above zero, such as 500ms, 5s, 2m, 1h or 1m30s.",
    )
    .examples(["5s"])
    .into()
}
