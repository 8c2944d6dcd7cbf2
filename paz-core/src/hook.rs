//! Deploy hooks: Docker Hub, a registry (CNCF distribution) or a CI system tells Paz that an
//! image was pushed, and Paz deploys it.
//!
//! What lives here is pure: the hook and delivery records, the payloads of the three sources,
//! and the checks on them (tag filters, repositories, manifest media types, timestamps). The
//! server checks the credentials (a SHA-256 for the secret URL and the registry's bearer
//! token, an HMAC for CI), the engine stores hooks and deliveries (`engine::hooks`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::image::ImageRef;

/// Where a hook's deliveries come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HookSource {
    /// Docker Hub's webhook (post-push payload) on a secret URL,
    /// `POST /v1/hooks/dockerhub/{secret}`.
    Dockerhub,
    /// A registry's notifications (CNCF distribution) with a bearer token,
    /// `POST /v1/hooks/registry`.
    Registry,
    /// A CI job's signed request (HMAC-SHA256 of the body), `POST /v1/hooks/deploy`.
    Ci,
}

impl HookSource {
    /// Every source.
    pub const ALL: [HookSource; 3] = [HookSource::Dockerhub, HookSource::Registry, HookSource::Ci];

    /// Its name, as in paths and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HookSource::Dockerhub => "dockerhub",
            HookSource::Registry => "registry",
            HookSource::Ci => "ci",
        }
    }

    /// The source named `name`.
    pub fn parse(name: &str) -> Option<HookSource> {
        HookSource::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for HookSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HookInfo {
    /// The service it deploys.
    pub service: String,
    /// Where its deliveries come from (a service has at most one hook per source).
    pub source: HookSource,
    /// Its id: the part of its secret after `hook_` (changes at each rotation).
    pub id: String,
    /// Which pushed tags deploy: exact (`main`) or a glob (`v*`, `1.?`); absent: every tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// When it was made.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: jiff::Timestamp,
    /// When its secret was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub rotated_at: Option<jiff::Timestamp>,
}

/// How a hook's secret is kept: never in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HookSecret {
    /// The SHA-256 of the secret part, as hex (Docker Hub, registry: the secret is presented
    /// and compared).
    Sha256 {
        /// The hash.
        hash: String,
    },
    /// The secret sealed with the secrets key, as hex (CI: the server needs the secret itself
    /// to check an HMAC).
    Sealed {
        /// The sealed secret.
        value: String,
    },
}

/// A stored hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRecord {
    /// What people see of it.
    pub info: HookInfo,
    /// The life of the service it was made for (its `created_at`): a service deleted and
    /// made again does not inherit the old one's hooks.
    pub service_created_at: jiff::Timestamp,
    /// Its secret, hashed or sealed.
    pub secret: HookSecret,
}

/// `POST /v1/services/{name}/hooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateHookRequest {
    /// Where its deliveries come from.
    pub source: HookSource,
    /// Which pushed tags deploy: exact or a glob of `*` and `?` (1 to 128 of
    /// `[A-Za-z0-9_.-*?]`); absent: every tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9_.*?-]{1,128}$", max_length = 128)
    )]
    pub tag: Option<String>,
}

/// `PUT /v1/services/{name}/hooks/{source}`: the hook's settings (its secret stays).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateHookRequest {
    /// The tag filter; absent: every tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9_.*?-]{1,128}$", max_length = 128)
    )]
    pub tag: Option<String>,
}

/// The answer to creating or rotating a hook: its secret, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedHook {
    /// The secret (`hook_<id>_<secret>`). Docker Hub: part of the URL; registry: the bearer
    /// token of its notifications; CI: the HMAC-SHA256 key. It cannot be shown again (only
    /// rotated).
    pub secret: String,
    /// The path to send deliveries to, on the API's address (for Docker Hub it holds the
    /// secret).
    pub path: String,
    /// The hook.
    pub info: HookInfo,
}

impl fmt::Debug for CreatedHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedHook")
            .field("secret", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// A delivery key seen (a registry event's id, a CI request's idempotency key): a second
/// delivery with it is not deployed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryKey {
    /// The key as given.
    pub key: String,
    /// The SHA-256 of the body it came with (CI), to tell a retry from a reused key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// When it was first seen.
    pub at: jiff::Timestamp,
    /// The delivery that used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// The deployment it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Verdict {
    /// A deployment was made (its outcome is the deployment's).
    Deployed,
    /// Accepted, but there was nothing to deploy (a blob, a filtered tag from a registry,
    /// a digest already deployed, an event seen before).
    Ignored,
    /// Refused with a 4xx: a failed check (credential, signature, timestamp, replay, tag
    /// filter, repository) or a malformed payload.
    Rejected,
    /// Accepted but the deploy could not be made (the service's state, the store).
    Failed,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Deployed => "deployed",
            Verdict::Ignored => "ignored",
            Verdict::Rejected => "rejected",
            Verdict::Failed => "failed",
        })
    }
}

/// One delivery to a hook endpoint (for a registry: one event of its envelope), with what
/// Paz did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// `<service>-d<sequence>` when stored; `m<n>` for one kept in the server's memory only.
    pub id: String,
    /// The service it named or whose hook it used, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The endpoint it came to.
    pub source: HookSource,
    /// When it arrived.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub received_at: jiff::Timestamp,
    /// What became of it.
    pub verdict: Verdict,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// A stable code: `DEPLOYED`, `TAG_FILTERED`, `SIGNATURE_INVALID`…
    pub code: String,
    /// Why, for people.
    pub reason: String,
    /// The pushed tag, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The image it would deploy (or deployed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's digest, when the delivery named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The deployment it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The registry event's id, or the CI request's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// For Docker Hub: what became of the result reported to its `callback_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Whether it is in the store. Rejections before a credential matched are kept in the
    /// memory of the server that got them only (the newest 1,000), so anonymous requests
    /// never write to disk.
    pub stored: bool,
}

/// The answer of a hook endpoint about one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HookAnswer {
    /// The delivery's id (see `GET /v1/services/{name}/deliveries`).
    pub delivery: String,
    /// What became of it.
    pub verdict: Verdict,
    /// A stable code.
    pub code: String,
    /// For people.
    pub message: String,
    /// The deployment it made: follow it at `GET /v1/deployments/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The release that deployment rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<u64>,
}

/// The answer of `POST /v1/hooks/registry`: one entry per manifest push of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryAnswer {
    /// The manifest pushes, in the envelope's order.
    pub deliveries: Vec<HookAnswer>,
    /// How many events were not manifest pushes for this service (blobs, pulls, other
    /// repositories) and were skipped.
    pub skipped: usize,
}

// ---------------------------------------------------------------------------------------
// Payloads.

/// Docker Hub's post-push webhook payload (the fields Paz reads; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DockerHubPayload {
    /// Where to report the result (`{"state": "success"|"failure", "description": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The push.
    pub push_data: DockerHubPush,
    /// The repository pushed to.
    pub repository: DockerHubRepository,
}

/// `push_data` of a Docker Hub payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DockerHubPush {
    /// The tag pushed.
    pub tag: String,
}

/// `repository` of a Docker Hub payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DockerHubRepository {
    /// `namespace/name`, e.g. `acme/web` (`library/nginx` for official images).
    pub repo_name: String,
}

/// The media type of the event envelopes of docker-registry 2.x.
pub const REGISTRY_EVENTS_V1: &str = "application/vnd.docker.distribution.events.v1+json";
/// The media type of the event envelopes of distribution 3.
pub const REGISTRY_EVENTS_V2: &str = "application/vnd.docker.distribution.events.v2+json";

/// A registry's notification envelope (`events.v1+json` and `events.v2+json` have the same
/// fields for what Paz reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryEnvelope {
    /// The events; not necessarily related to each other.
    #[serde(default)]
    pub events: Vec<RegistryEvent>,
}

/// One registry event (the fields Paz reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryEvent {
    /// A unique id: a redelivered event has the same.
    #[serde(default)]
    pub id: String,
    /// `push`, `pull`, `mount`, `delete`.
    #[serde(default)]
    pub action: String,
    /// What it is about.
    #[serde(default)]
    pub target: RegistryTarget,
}

/// The target of a registry event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryTarget {
    /// The media type of the blob or manifest.
    #[serde(default, rename = "mediaType")]
    pub media_type: String,
    /// Its digest.
    #[serde(default)]
    pub digest: String,
    /// The repository, e.g. `team/web`.
    #[serde(default)]
    pub repository: String,
    /// The tag, for a manifest pushed by tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The manifest media types whose pushes count (image manifests and indexes, Docker's and
/// OCI's); blobs and layers never deploy.
pub const MANIFEST_MEDIA_TYPES: [&str; 6] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

impl RegistryEvent {
    /// Whether it is the push of a manifest (the only events that deploy).
    pub fn is_manifest_push(&self) -> bool {
        self.action == "push" && MANIFEST_MEDIA_TYPES.contains(&self.target.media_type.as_str())
    }
}

/// The body of `POST /v1/hooks/deploy`, signed by the CI job with the hook's secret:
/// `X-Paz-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CiDeployRequest {
    /// The service.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)
    )]
    pub service: String,
    /// The tag to deploy, of the service's image repository (or give `image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", max_length = 128)
    )]
    pub tag: Option<String>,
    /// The image to deploy, in the service's image repository (a digest pins it:
    /// `repo:tag@sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::repository_image))]
    pub image: Option<String>,
    /// When the request was made, in Unix seconds: refused more than 5 minutes away from
    /// the server's clock (a captured request cannot be replayed later).
    pub timestamp: i64,
    /// A key unique to this deploy (a CI run id, say): a request with a key seen before is
    /// refused (409). Without it, the SHA-256 of the body is the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[!-~]{1,200}$", min_length = 1, max_length = 200)
    )]
    pub idempotency_key: Option<String>,
}

/// How far a CI request's timestamp may be from the server's clock, either way.
pub const TIMESTAMP_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether `timestamp` (Unix seconds) is within [`TIMESTAMP_WINDOW`] of `now`.
pub fn timestamp_fresh(timestamp: i64, now: jiff::Timestamp) -> bool {
    let window = TIMESTAMP_WINDOW.as_secs();
    now.as_second()
        .checked_sub(timestamp)
        .is_some_and(|d| d.unsigned_abs() <= window)
}

// ---------------------------------------------------------------------------------------
// Checks.

/// Checks a tag filter: 1 to 128 of the tag characters `[A-Za-z0-9_.-]` and the wildcards
/// `*` (any run) and `?` (any one character).
pub fn check_tag_filter(filter: &str) -> Result<(), String> {
    let ok = !filter.is_empty()
        && filter.len() <= 128
        && filter
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*' | b'?'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag filter {filter:?} must be 1 to 128 of A-Z a-z 0-9 _ . - and the wildcards * and ?"
        ))
    }
}

/// Whether `tag` matches `filter` (exact, or a glob of `*` and `?`); no filter matches
/// every tag.
pub fn tag_matches(filter: Option<&str>, tag: &str) -> bool {
    let Some(filter) = filter else {
        return true;
    };
    let (pattern, text) = (filter.as_bytes(), tag.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it was matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more character.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The registries that are Docker Hub.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The Docker Hub name (`namespace/name`, `library/x` for official images) of an image, or
/// `None` when it is not on Docker Hub.
pub fn docker_hub_name(image: &ImageRef) -> Option<String> {
    if image
        .registry
        .as_deref()
        .is_some_and(|r| !DOCKER_HUB.contains(&r))
    {
        return None;
    }
    Some(normalize_hub_name(&image.repository))
}

/// `nginx` → `library/nginx`; `acme/web` stays.
pub fn normalize_hub_name(name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("library/{name}")
    }
}

/// The image of `service_image`'s repository at `tag` (keeping how the service spells its
/// registry and repository).
pub fn image_at_tag(service_image: &ImageRef, tag: &str) -> String {
    format!("{}:{tag}", service_image.name())
}

/// The pinned reference of `service_image`'s repository at `digest`.
pub fn image_at_digest(service_image: &ImageRef, digest: &str) -> String {
    format!("{}@{digest}", service_image.name())
}

/// The digest part (`sha256:…`) of a pinned image reference or image id.
pub fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').map_or(pinned, |(_, d)| d)
}

/// Checks a CI request's idempotency key: 1 to 200 printable ASCII characters, no spaces.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if !key.is_empty() && key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("idempotency_key must be 1 to 200 printable ASCII characters without spaces".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tag_filters_match_exactly_or_by_glob() {
        for (filter, tag, expected) in [
            ("main", "main", true),
            ("main", "mainline", false),
            ("v*", "v1.2.3", true),
            ("v*", "v", true),
            ("v*", "latest", false),
            ("*-rc?", "1.0-rc1", true),
            ("*-rc?", "1.0-rc12", false),
            ("1.?", "1.2", true),
            ("1.?", "1.", false),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "x", true),
        ] {
            assert_eq!(
                tag_matches(Some(filter), tag),
                expected,
                "{filter} vs {tag}"
            );
        }
        assert!(tag_matches(None, "whatever"));
        assert!(check_tag_filter("v*").is_ok() && check_tag_filter("release-?.x").is_ok());
        for bad in ["", "a b", "v/1", &"x".repeat(129), "é"] {
            assert!(check_tag_filter(bad).is_err(), "{bad:?}");
        }
    }

    fn glob_to_regex(filter: &str) -> regex::Regex {
        let mut re = String::from("^");
        for c in filter.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        regex::Regex::new(&re).unwrap()
    }

    proptest! {
        #[test]
        fn globs_match_as_a_regex_would(filter in "[ab*?]{0,8}", tag in "[ab]{0,10}") {
            prop_assume!(!filter.is_empty());
            prop_assert_eq!(tag_matches(Some(&filter), &tag), glob_to_regex(&filter).is_match(&tag));
        }
    }

    #[test]
    fn docker_hub_names_are_normalized() {
        let name = |image: &str| docker_hub_name(&ImageRef::parse(image).unwrap());
        assert_eq!(name("nginx:1").as_deref(), Some("library/nginx"));
        assert_eq!(name("docker.io/acme/web").as_deref(), Some("acme/web"));
        assert_eq!(name("acme/web:v1").as_deref(), Some("acme/web"));
        assert_eq!(name("127.0.0.1:5000/acme/web"), None);
        assert_eq!(normalize_hub_name("paz-demo"), "library/paz-demo");
        let image = ImageRef::parse("127.0.0.1:5000/paz-demo:v1").unwrap();
        assert_eq!(image_at_tag(&image, "v2"), "127.0.0.1:5000/paz-demo:v2");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = image_at_digest(&image, &digest);
        assert_eq!(pinned, format!("127.0.0.1:5000/paz-demo@{digest}"));
        assert_eq!(digest_of(&pinned), digest);
        assert_eq!(digest_of(&digest), digest);
    }

    #[test]
    fn only_manifest_pushes_count() {
        let event = |action: &str, media_type: &str| RegistryEvent {
            id: "1".into(),
            action: action.into(),
            target: RegistryTarget {
                media_type: media_type.into(),
                ..RegistryTarget::default()
            },
        };
        assert!(event("push", MANIFEST_MEDIA_TYPES[0]).is_manifest_push());
        assert!(event("push", "application/vnd.oci.image.index.v1+json").is_manifest_push());
        assert!(!event("pull", MANIFEST_MEDIA_TYPES[0]).is_manifest_push());
        assert!(!event("push", "application/octet-stream").is_manifest_push());
    }

    #[test]
    fn registry_envelopes_of_both_versions_parse() {
        // As docker-registry 2.8 sends it (trimmed), and a distribution 3 event with the
        // fields it adds.
        let v1 = r#"{"events":[{"id":"e1","timestamp":"2026-12-02T02:46:52.98Z","action":"push",
            "target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,
            "digest":"sha256:e2f8af01147b2a03372919eedb8326a13a9c265faf08d7ed7cff3142d0223090","length":527,
            "repository":"paz-demo","url":"http://127.0.0.1:5000/v2/paz-demo/manifests/sha256:e2f8","tag":"t1"},
            "request":{"id":"r","addr":"127.0.0.1:1","host":"127.0.0.1:5000","method":"PUT","useragent":"docker"},
            "actor":{},"source":{"addr":"vm:5000","instanceID":"i"}}]}"#;
        let v2 = r#"{"events":[{"id":"e2","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "digest":"sha256:e2f8af01147b2a03372919eedb8326a13a9c265faf08d7ed7cff3142d0223090","size":1,
            "annotations":{"a":"b"},"repository":"team/web","tag":"v2","references":[{"digest":"sha256:00"}]},
            "request":{"id":"r","method":"PUT","useragent":"x"},"actor":{},"source":{}}]}"#;
        let v1: RegistryEnvelope = serde_json::from_str(v1).unwrap();
        let v2: RegistryEnvelope = serde_json::from_str(v2).unwrap();
        assert!(v1.events[0].is_manifest_push() && v2.events[0].is_manifest_push());
        assert_eq!(v1.events[0].target.tag.as_deref(), Some("t1"));
        assert_eq!(v2.events[0].target.repository, "team/web");
    }

    #[test]
    fn timestamps_have_a_window_both_ways() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        assert!(timestamp_fresh(1_800_000_000, now));
        assert!(timestamp_fresh(1_800_000_000 - 300, now));
        assert!(timestamp_fresh(1_800_000_000 + 300, now));
        assert!(!timestamp_fresh(1_800_000_000 - 301, now));
        assert!(!timestamp_fresh(1_800_000_000 + 301, now));
        assert!(!timestamp_fresh(i64::MIN, now));
        assert!(!timestamp_fresh(i64::MAX, now));
    }

    #[test]
    fn a_created_hook_never_prints_its_secret() {
        let created = CreatedHook {
            secret: "hook_s3cret".into(),
            path: "/v1/hooks/dockerhub/hook_s3cret".into(),
            info: HookInfo {
                service: "web".into(),
                source: HookSource::Dockerhub,
                id: "0123456789ab".into(),
                tag: None,
                created_at: jiff::Timestamp::UNIX_EPOCH,
                rotated_at: None,
            },
        };
        assert!(!format!("{created:?}").contains("s3cret"));
    }
}
