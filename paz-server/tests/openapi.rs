//! The OpenAPI document states the rules the API enforces: its patterns accept what the
//! validators accept (checked both ways where the pattern is exact), and a create links to the
//! operations on the service.

use std::sync::LazyLock;

use paz_core::names::{check_domain, check_env_key, check_service_name};
use paz_core::service::Constraint;
use paz_core::{Deployment, HumanDuration, ImageRef};
use proptest::prelude::*;
use regex::Regex;
use serde_json::Value;

static DOC: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(&paz_server::openapi::document()).unwrap());

/// The value at a JSON pointer of the document.
fn at(pointer: &str) -> &'static Value {
    DOC.pointer(pointer)
        .unwrap_or_else(|| panic!("the document has {pointer}"))
}

/// The pattern at a JSON pointer, compiled.
fn pattern(pointer: &str) -> Regex {
    Regex::new(at(pointer).as_str().expect("a pattern is a string")).unwrap()
}

/// A strategy for strings matching an anchored pattern.
fn matching(pointer: &str) -> impl Strategy<Value = String> {
    let text = at(pointer).as_str().unwrap();
    let inner = text.strip_prefix('^').unwrap().strip_suffix('$').unwrap();
    proptest::string::string_regex(inner).unwrap()
}

const SPEC: &str = "/components/schemas/ServiceSpec/properties";
const NAME: &str = "/components/schemas/ServiceSpec/properties/name/pattern";
const IMAGE: &str = "/components/schemas/ServiceSpec/properties/image/pattern";
const DOMAIN: &str = "/components/schemas/ServiceSpec/properties/domains/items/pattern";
const ENV_KEY: &str = "/components/schemas/ServiceSpec/properties/env/propertyNames/pattern";
const HEALTH_PATH: &str = "/components/schemas/HealthCheck/properties/path/pattern";
const CONSTRAINT: &str = "/components/schemas/Placement/properties/constraints/items/pattern";
const DURATION: &str = "/components/schemas/HumanDuration/pattern";
const POSITIVE_DURATION: &str = "/components/schemas/HealthCheck/properties/interval/pattern";

static NAME_RE: LazyLock<Regex> = LazyLock::new(|| pattern(NAME));
static IMAGE_RE: LazyLock<Regex> = LazyLock::new(|| pattern(IMAGE));
static DOMAIN_RE: LazyLock<Regex> = LazyLock::new(|| pattern(DOMAIN));
static ENV_KEY_RE: LazyLock<Regex> = LazyLock::new(|| pattern(ENV_KEY));
static HEALTH_PATH_RE: LazyLock<Regex> = LazyLock::new(|| pattern(HEALTH_PATH));
static DURATION_RE: LazyLock<Regex> = LazyLock::new(|| pattern(DURATION));
static POSITIVE_DURATION_RE: LazyLock<Regex> = LazyLock::new(|| pattern(POSITIVE_DURATION));

#[test]
fn the_document_states_ranges_lengths_and_parameters() {
    let spec = at(SPEC);
    assert_eq!(spec["name"]["maxLength"], 63);
    assert_eq!(spec["instances"]["minimum"], 0);
    assert_eq!(
        spec["instances"]["maximum"],
        paz_core::service::MAX_INSTANCES
    );
    assert_eq!(spec["image"]["maxLength"], 255);
    let port = at("/components/schemas/PortSpec/properties/port");
    assert_eq!(
        (&port["minimum"], &port["maximum"]),
        (&1.into(), &65535.into())
    );
    assert_eq!(
        at("/components/schemas/ScaleRequest/properties/instances/maximum"),
        1000
    );
    assert_eq!(
        at("/components/schemas/DeploySettings/properties/canary_steps/items/maximum"),
        100
    );
    // Path parameters carry the same rules as the fields they name.
    let get = at("/paths/~1v1~1services~1{name}/get/parameters/0");
    assert_eq!(get["name"], "name");
    assert_eq!(get["schema"]["pattern"], at(NAME).clone());
    let release = at("/paths/~1v1~1services~1{name}~1releases~1{version}/get/parameters/1");
    assert_eq!(release["schema"]["minimum"], 1);
    // Every operation behind the token documents 401; the health check does not need one.
    assert!(
        DOC.pointer("/paths/~1v1~1services/get/responses/401")
            .is_some()
    );
    assert!(
        DOC.pointer("/paths/~1v1~1health/get/responses/401")
            .is_none()
    );
    // The merge patch has its own schema, without the name.
    let patch = at("/components/schemas/ServiceSpecPatch");
    assert!(patch["properties"].get("name").is_none() && patch.get("required").is_none());
}

#[test]
fn a_create_links_to_the_operations_on_its_service() {
    let links = at("/paths/~1v1~1services/post/responses/201/links")
        .as_object()
        .unwrap();
    let operation_ids: Vec<&str> = DOC["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    for target in [
        "get_service",
        "put_service",
        "patch_service",
        "delete_service",
        "deploy",
        "scale",
        "rollback",
        "status",
        "instances",
        "releases",
        "deployments",
        "logs",
    ] {
        let link = &links[target];
        assert_eq!(link["operationId"], target);
        assert_eq!(link["parameters"]["name"], "$response.body#/spec/name");
    }
    for link in links.values() {
        let target = link["operationId"].as_str().unwrap();
        assert!(operation_ids.contains(&target), "{target} is an operation");
    }
    let deployment =
        at("/paths/~1v1~1services~1{name}~1deploy/post/responses/202/links/deployment");
    assert_eq!(deployment["parameters"]["id"], "$response.body#/id");
}

#[test]
fn patterns_agree_with_the_validators_on_examples() {
    for name in ["web", "a", "api-v2", &"a".repeat(63)] {
        assert!(NAME_RE.is_match(name), "{name}");
    }
    for name in ["", "Web", "1web", "web-", "we.b", "wéb", &"a".repeat(64)] {
        assert!(!NAME_RE.is_match(name), "{name}");
    }
    let digest = format!("sha256:{}", "a".repeat(64));
    for image in [
        "demo:v1".to_owned(),
        "localhost:5000/team/app".to_owned(),
        "localhost:5000".to_owned(),
        "ghcr.io/o/app:1.2".to_owned(),
        format!("ghcr.io/o/app:1.2@{digest}"),
        "my_app__x.y-z".to_owned(),
        "Registry.Example:80/a".to_owned(),
    ] {
        assert!(ImageRef::parse(&image).is_ok(), "{image}");
        assert!(IMAGE_RE.is_match(&image), "{image}");
    }
    for image in [
        "",
        "Demo:v1",
        "demo:",
        ":v1",
        "demo//x",
        "-demo",
        "de___mo",
        "demo:v1:v2",
        "host:abc/app",
        "a_b.c/d",
        "with space",
    ] {
        assert!(ImageRef::parse(image).is_err(), "{image}");
        assert!(!IMAGE_RE.is_match(image), "{image}");
    }
    for (text, ok) in [
        ("0s", true),
        ("1m30s", true),
        ("250ms", true),
        ("5", false),
        ("1.5s", false),
    ] {
        assert_eq!(DURATION_RE.is_match(text), ok, "{text}");
        assert_eq!(text.parse::<HumanDuration>().is_ok(), ok, "{text}");
    }
    assert!(!POSITIVE_DURATION_RE.is_match("0s") && !POSITIVE_DURATION_RE.is_match("0m0s"));
    assert!(POSITIVE_DURATION_RE.is_match("0m1s") && POSITIVE_DURATION_RE.is_match("1ms"));
}

/// Characters near the edges of the rules, mixed with anything printable.
fn near_names() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,70}",
        "[a-zA-Z0-9_.-]{0,12}",
        "\\PC{0,20}",
        "[ \\t\\x00-\\x1f/a\\u{85}\\u{a0}\\u{2028}\\u{3000}\\u{feff}]{0,6}",
    ]
}

fn health_path_ok(path: &str) -> bool {
    let mut spec = paz_core::ServiceSpec::new("web", "demo:v1");
    spec.ports.push(paz_core::PortSpec {
        port: 80,
        protocol: paz_core::Protocol::Http,
    });
    spec.health = Some(paz_core::HealthCheck {
        path: path.to_owned(),
        ..paz_core::HealthCheck::default()
    });
    spec.validate().is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Exact patterns: the pattern matches exactly what the validator accepts.
    #[test]
    fn name_pattern_is_the_name_rule(text in near_names()) {
        prop_assert_eq!(NAME_RE.is_match(&text), check_service_name(&text).is_ok(), "{:?}", text);
    }

    #[test]
    fn env_key_pattern_is_the_env_key_rule(text in near_names()) {
        prop_assert_eq!(ENV_KEY_RE.is_match(&text), check_env_key(&text).is_ok(), "{:?}", text);
    }

    #[test]
    fn domain_pattern_is_the_domain_rule(text in prop_oneof!["[a-z0-9.-]{0,40}", near_names()]) {
        let schema = DOMAIN_RE.is_match(&text) && text.len() <= 253;
        prop_assert_eq!(schema, check_domain(&text).is_ok(), "{:?}", text);
    }

    #[test]
    fn health_path_pattern_is_the_health_path_rule(text in near_names()) {
        prop_assert_eq!(HEALTH_PATH_RE.is_match(&text), health_path_ok(&text), "{:?}", text);
    }

    #[test]
    fn image_pattern_is_the_image_grammar(
        text in prop_oneof!["[a-z0-9._/:@-]{0,30}", "[a-zA-Z0-9._/:-]{0,20}", near_names()],
    ) {
        prop_assert_eq!(IMAGE_RE.is_match(&text), ImageRef::parse(&text).is_ok(), "{:?}", text);
    }

    // Generated from the patterns: what the document calls valid, the API takes.
    #[test]
    fn generated_names_are_valid(text in matching(NAME)) {
        prop_assert!(check_service_name(&text).is_ok(), "{:?}", text);
    }

    #[test]
    fn generated_images_are_valid(text in matching(IMAGE)) {
        // Only the two limits the pattern leaves to prose may refuse it.
        if let Err(error) = ImageRef::parse(&text) {
            let allowed = error.reason.contains("longer than 255") || error.reason.contains("64 hex digits");
            prop_assert!(allowed, "{:?}: {}", text, error);
        }
    }

    #[test]
    fn generated_domains_are_valid(text in matching(DOMAIN)) {
        prop_assume!(text.len() <= 253);
        prop_assert!(check_domain(&text).is_ok(), "{:?}", text);
    }

    #[test]
    fn generated_constraints_are_valid(text in matching(CONSTRAINT)) {
        prop_assert!(Constraint::parse(&text).is_ok(), "{:?}", text);
    }

    #[test]
    fn generated_deployment_ids_parse(
        text in matching("/paths/~1v1~1deployments~1{id}/get/parameters/0/schema/pattern"),
    ) {
        prop_assert!(Deployment::parse_id(&text).is_some(), "{:?}", text);
    }

    #[test]
    fn generated_durations_parse_and_print_back_into_the_pattern(
        text in matching(DURATION),
        positive in matching(POSITIVE_DURATION),
    ) {
        let duration: HumanDuration = text.parse().unwrap();
        prop_assert!(DURATION_RE.is_match(&duration.to_string()), "{} from {:?}", duration, text);
        let duration: HumanDuration = positive.parse().unwrap();
        prop_assert!(!duration.get().is_zero(), "{:?}", positive);
        prop_assert!(DURATION_RE.is_match(&positive) && POSITIVE_DURATION_RE.is_match(&duration.to_string()));
    }

    // What the server writes back matches the pattern it publishes.
    #[test]
    fn printed_durations_match(ms in 0u64..10_000_000_000_000_000_000) {
        let text = HumanDuration::from_millis(ms).to_string();
        prop_assert!(DURATION_RE.is_match(&text), "{}", text);
        prop_assert_eq!(POSITIVE_DURATION_RE.is_match(&text), ms > 0, "{}", text);
    }
}
