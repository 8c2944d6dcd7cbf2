//! The service: what the user declares.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::{Error, FieldError, Result, ValidationErrors};
use crate::image::ImageRef;
use crate::names;

/// The most instances one service may ask for.
pub const MAX_INSTANCES: u32 = 1000;
/// The largest spec accepted, as JSON (environment, command and all): 256 KiB. Every release
/// keeps a copy, so one spec's size multiplies by the releases kept.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// A service as the user declares it. Unknown fields are rejected.
///
/// ```
/// let spec: paz_core::ServiceSpec = serde_json::from_str(
///     r#"{"name": "web", "image": "demo:v1", "instances": 2, "ports": [{"port": 8080}], "public": true}"#,
/// ).unwrap();
/// spec.validate().unwrap();
/// assert_eq!(spec.routed_port(), Some(8080));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceSpec {
    /// The service name: a DNS label (see [`crate::names`]).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)
    )]
    pub name: String,
    /// The image reference, e.g. `demo:v1` or `registry.local:5000/team/app@sha256:…`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::image))]
    pub image: String,
    /// How many instances to run (0 to 1000).
    #[serde(default = "default_instances")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000))]
    pub instances: u32,
    /// Container ports; the first `http` port is the one the router sends traffic to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Route `<name>.<cluster domain>` (and `domains`) from the public router.
    #[serde(default)]
    pub public: bool,
    /// Extra domains routed to this service (lowercase DNS names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::domains))]
    pub domains: Vec<String>,
    /// Redirect plain-HTTP requests for the service's host names to HTTPS (308) once the
    /// router has a certificate for them (the default); `false` serves them over plain HTTP
    /// as well as HTTPS (and without HSTS).
    #[serde(default = "default_https_redirect")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub https_redirect: bool,
    /// Environment variables of the containers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::env))]
    pub env: BTreeMap<String, String>,
    /// The command (overrides the image's); empty keeps the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::command))]
    pub command: Vec<String>,
    /// Volumes mounted into the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// The active health check; without one, an instance is healthy once its port accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Resources::is_unlimited")]
    pub resources: Resources,
    /// Where instances may run.
    #[serde(default, skip_serializing_if = "Placement::is_any")]
    pub placement: Placement,
    /// How deploys of this service proceed.
    #[serde(default)]
    pub deploy: DeploySettings,
}

fn default_instances() -> u32 {
    1
}

fn default_https_redirect() -> bool {
    true
}

/// The protocol of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Protocol {
    /// HTTP: routed by host name through the router.
    #[default]
    Http,
    /// Plain TCP.
    Tcp,
}

/// One container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortSpec {
    /// The port inside the container, 1 to 65535.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u32,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A volume mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeSpec {
    /// A named volume (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) or an absolute host path.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^(?:[a-zA-Z0-9][a-zA-Z0-9_.-]*|/[^\x00]*)$")
    )]
    pub source: String,
    /// The absolute path inside the container.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^/[^\x00]*$"))]
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// The kind of active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HealthKind {
    /// `GET <path>` must answer 2xx.
    #[default]
    Http,
    /// The port must accept a TCP connection.
    Tcp,
}

/// The active health check, run on the exact address and path the router uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheck {
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub kind: HealthKind,
    /// The HTTP path (must start with `/`); only for `http`.
    #[serde(default = "default_health_path")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^/[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub path: String,
    /// The port to check; defaults to the routed port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u32>,
    /// Time between checks.
    #[serde(default = "default_interval")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::positive_duration))]
    pub interval: HumanDuration,
    /// Time one check may take.
    #[serde(default = "default_timeout")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::positive_duration))]
    pub timeout: HumanDuration,
    /// Consecutive failures before an instance counts as unhealthy (1 to 100).
    #[serde(default = "default_retries")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub retries: u32,
    /// Grace time after start during which failures do not count.
    #[serde(default)]
    pub start_period: HumanDuration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: HealthKind::Http,
            path: default_health_path(),
            port: None,
            interval: default_interval(),
            timeout: default_timeout(),
            retries: default_retries(),
            start_period: HumanDuration::default(),
        }
    }
}

fn default_health_path() -> String {
    "/".into()
}
fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_retries() -> u32 {
    3
}

/// Resource limits of each instance.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Memory limit in MiB (at least 6, Docker's minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 6, maximum = 16777216))]
    pub memory_mb: Option<u64>,
    /// CPU limit in cores, e.g. `0.5` (above 0, at most 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1024))]
    pub cpus: Option<f64>,
}

impl Resources {
    /// No limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.memory_mb.is_none() && self.cpus.is_none()
    }
}

/// Placement rules on host labels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placement {
    /// Constraints `label==value` or `label!=value`; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::constraints))]
    pub constraints: Vec<String>,
    /// Spread instances evenly over the values of this host label (e.g. `zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub spread: Option<String>,
}

impl Placement {
    /// No rule is set.
    pub fn is_any(&self) -> bool {
        self.constraints.is_empty() && self.spread.is_none()
    }
}

/// A parsed placement constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The host label.
    pub label: String,
    /// `true` for `==`, `false` for `!=`.
    pub equal: bool,
    /// The value compared.
    pub value: String,
}

impl Constraint {
    /// Parses `label==value` or `label!=value`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (label, value, equal) = if let Some((l, v)) = text.split_once("==") {
            (l, v, true)
        } else if let Some((l, v)) = text.split_once("!=") {
            (l, v, false)
        } else {
            return Err(format!(
                "constraint {text:?} must look like label==value or label!=value"
            ));
        };
        let label = label.trim();
        let value = value.trim();
        if label.is_empty() || value.is_empty() {
            return Err(format!("constraint {text:?} needs a label and a value"));
        }
        Ok(Constraint {
            label: label.to_owned(),
            equal,
            value: value.to_owned(),
        })
    }

    /// Whether a host with these labels satisfies the constraint.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        (labels.get(&self.label).map(String::as_str) == Some(self.value.as_str())) == self.equal
    }
}

/// The deploy strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Strategy {
    /// Start new instances first, `max_surge` at a time, then drain and stop old ones.
    #[default]
    Rolling,
    /// Stop all old instances, then start new ones (for single-writer apps).
    Recreate,
    /// Start all new instances, then switch all traffic at once.
    BlueGreen,
    /// Shift traffic to the new release in weighted steps.
    Canary,
}

/// How deploys proceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploySettings {
    /// The strategy (default `rolling`).
    #[serde(default)]
    pub strategy: Strategy,
    /// New instances started at once by a rolling deploy (1 to 100).
    #[serde(default = "default_max_surge")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_surge: u32,
    /// How long old instances may finish in-flight requests before they are stopped.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// How long new instances have to pass their health check.
    #[serde(default = "default_health_timeout")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::positive_duration))]
    pub health_timeout: HumanDuration,
    /// Canary traffic percentages, strictly increasing, ending at 100.
    #[serde(default = "default_canary_steps")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::canary_steps))]
    pub canary_steps: Vec<u32>,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            strategy: Strategy::default(),
            max_surge: default_max_surge(),
            drain_timeout: default_drain_timeout(),
            health_timeout: default_health_timeout(),
            canary_steps: default_canary_steps(),
        }
    }
}

fn default_max_surge() -> u32 {
    1
}
fn default_drain_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_health_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_canary_steps() -> Vec<u32> {
    vec![10, 50, 100]
}

impl ServiceSpec {
    /// A spec with defaults for everything but the name and image.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            instances: default_instances(),
            ports: Vec::new(),
            public: false,
            domains: Vec::new(),
            https_redirect: default_https_redirect(),
            env: BTreeMap::new(),
            command: Vec::new(),
            volumes: Vec::new(),
            health: None,
            resources: Resources::default(),
            placement: Placement::default(),
            deploy: DeploySettings::default(),
        }
    }

    /// The parsed image reference (call [`ServiceSpec::validate`] first for a clear error).
    pub fn image_ref(&self) -> Result<ImageRef> {
        ImageRef::parse(&self.image)
            .map_err(|e| Error::invalid("image", "INVALID_IMAGE", e.to_string()))
    }

    /// The container port the router sends traffic to: the first `http` port.
    pub fn routed_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == Protocol::Http)
            .and_then(|p| u16::try_from(p.port).ok())
    }

    /// The host names that route to this service: `<name>.<domain>` when public, plus `domains`.
    pub fn hostnames(&self, cluster_domain: &str) -> Vec<String> {
        let mut hosts = Vec::new();
        if self.public {
            hosts.push(format!("{}.{cluster_domain}", self.name));
        }
        for domain in &self.domains {
            if !hosts.contains(domain) {
                hosts.push(domain.clone());
            }
        }
        hosts
    }

    /// Checks every rule and reports all failures at once.
    pub fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        let mut fail = |field: String, code: &str, message: String| {
            errors.push(FieldError::new(field, code, message));
        };
        if let Err(m) = names::check_service_name(&self.name) {
            fail("name".into(), "INVALID_NAME", m);
        }
        if let Err(e) = ImageRef::parse(&self.image) {
            fail("image".into(), "INVALID_IMAGE", e.to_string());
        }
        if self.instances > MAX_INSTANCES {
            fail(
                "instances".into(),
                "INVALID_INSTANCES",
                format!(
                    "instances is {}; it must be 0 to {MAX_INSTANCES}",
                    self.instances
                ),
            );
        }
        let mut seen_ports = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            if !(1..=65535).contains(&port.port) {
                fail(
                    format!("ports[{i}].port"),
                    "INVALID_PORT",
                    format!("port {} is outside 1..65535", port.port),
                );
            } else if !seen_ports.insert(port.port) {
                fail(
                    format!("ports[{i}].port"),
                    "DUPLICATE_PORT",
                    format!("port {} is listed more than once", port.port),
                );
            }
        }
        if (self.public || !self.domains.is_empty()) && self.routed_port().is_none() {
            fail(
                "ports".into(),
                "MISSING_HTTP_PORT",
                "a public service or one with domains needs an http port to route to".into(),
            );
        }
        let mut seen_domains = BTreeSet::new();
        for (i, domain) in self.domains.iter().enumerate() {
            if let Err(m) = names::check_domain(domain) {
                fail(format!("domains[{i}]"), "INVALID_DOMAIN", m);
            } else if domain == "paz" || domain.ends_with(crate::route::INTERNAL_SUFFIX) {
                // `<service>.paz` is how services reach each other inside Paz; a public
                // domain there would shadow (or impersonate) a service's internal name.
                fail(
                    format!("domains[{i}]"),
                    "RESERVED_DOMAIN",
                    format!(
                        "domain {domain:?} ends in .paz, which is reserved for the internal names of services"
                    ),
                );
            } else if !seen_domains.insert(domain) {
                fail(
                    format!("domains[{i}]"),
                    "DUPLICATE_DOMAIN",
                    format!("domain {domain:?} is listed more than once"),
                );
            }
        }
        for (key, value) in &self.env {
            if let Err(m) = names::check_env_key(key) {
                fail(format!("env.{key}"), "INVALID_ENV", m);
            } else if value.contains('\0') {
                fail(
                    format!("env.{key}"),
                    "INVALID_ENV",
                    "environment values must not contain NUL bytes".into(),
                );
            }
        }
        for (i, arg) in self.command.iter().enumerate() {
            if arg.contains('\0') {
                fail(
                    format!("command[{i}]"),
                    "INVALID_COMMAND",
                    "command arguments must not contain NUL bytes".into(),
                );
            }
        }
        let mut seen_targets = BTreeSet::new();
        for (i, volume) in self.volumes.iter().enumerate() {
            let named = {
                let mut chars = volume.source.chars();
                matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
                    && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            };
            if !(named || volume.source.starts_with('/')) || volume.source.contains('\0') {
                fail(
                    format!("volumes[{i}].source"),
                    "INVALID_VOLUME",
                    format!(
                        "volume source {:?} must be a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*) or an absolute path",
                        volume.source
                    ),
                );
            }
            if !volume.target.starts_with('/') || volume.target.contains('\0') {
                fail(
                    format!("volumes[{i}].target"),
                    "INVALID_VOLUME",
                    format!("volume target {:?} must be an absolute path", volume.target),
                );
            } else if !seen_targets.insert(&volume.target) {
                fail(
                    format!("volumes[{i}].target"),
                    "INVALID_VOLUME",
                    format!(
                        "volume target {:?} is mounted more than once",
                        volume.target
                    ),
                );
            }
        }
        if let Some(health) = &self.health {
            if health.kind == HealthKind::Http && !health.path.starts_with('/') {
                fail(
                    "health.path".into(),
                    "INVALID_HEALTH",
                    format!("health path {:?} must start with '/'", health.path),
                );
            }
            if health
                .path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                fail(
                    "health.path".into(),
                    "INVALID_HEALTH",
                    format!(
                        "health path {:?} must not contain spaces or control characters",
                        health.path
                    ),
                );
            }
            match health.port {
                Some(p) if !(1..=65535).contains(&p) => fail(
                    "health.port".into(),
                    "INVALID_PORT",
                    format!("health port {p} is outside 1..65535"),
                ),
                None if self.ports.is_empty() => fail(
                    "health.port".into(),
                    "INVALID_HEALTH",
                    "a health check needs a port: set health.port or declare a port".into(),
                ),
                _ => {}
            }
            if health.interval.get().is_zero() || health.timeout.get().is_zero() {
                fail(
                    "health".into(),
                    "INVALID_HEALTH",
                    "health interval and timeout must be above zero".into(),
                );
            }
            if !(1..=100).contains(&health.retries) {
                fail(
                    "health.retries".into(),
                    "INVALID_HEALTH",
                    format!("health retries is {}; it must be 1 to 100", health.retries),
                );
            }
        }
        if let Some(memory) = self.resources.memory_mb
            && !(6..=16 * 1024 * 1024).contains(&memory)
        {
            fail(
                "resources.memory_mb".into(),
                "INVALID_RESOURCES",
                format!("memory_mb is {memory}; it must be 6 to 16777216 (16 TiB)"),
            );
        }
        if let Some(cpus) = self.resources.cpus
            && !(cpus > 0.0 && cpus <= 1024.0)
        {
            fail(
                "resources.cpus".into(),
                "INVALID_RESOURCES",
                format!("cpus is {cpus}; it must be above 0 and at most 1024"),
            );
        }
        for (i, constraint) in self.placement.constraints.iter().enumerate() {
            if let Err(m) = Constraint::parse(constraint) {
                fail(
                    format!("placement.constraints[{i}]"),
                    "INVALID_PLACEMENT",
                    m,
                );
            }
        }
        if let Some(spread) = &self.placement.spread
            && spread.trim().is_empty()
        {
            fail(
                "placement.spread".into(),
                "INVALID_PLACEMENT",
                "spread must name a host label".into(),
            );
        }
        let deploy = &self.deploy;
        if !(1..=100).contains(&deploy.max_surge) {
            fail(
                "deploy.max_surge".into(),
                "INVALID_DEPLOY",
                format!("max_surge is {}; it must be 1 to 100", deploy.max_surge),
            );
        }
        if deploy.health_timeout.get().is_zero() {
            fail(
                "deploy.health_timeout".into(),
                "INVALID_DEPLOY",
                "health_timeout must be above zero".into(),
            );
        }
        let steps = &deploy.canary_steps;
        let increasing = steps.windows(2).all(|w| w[0] < w[1]);
        if steps.is_empty() || !increasing || steps[0] == 0 || steps.last() != Some(&100) {
            fail(
                "deploy.canary_steps".into(),
                "INVALID_DEPLOY",
                format!(
                    "canary_steps {steps:?} must be strictly increasing percentages from 1, ending at 100"
                ),
            );
        }
        let size = serde_json::to_vec(self).map_or(usize::MAX, |json| json.len());
        if size > MAX_SPEC_BYTES {
            fail(
                "spec".into(),
                "SPEC_TOO_LARGE",
                format!(
                    "the spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES} (256 KiB) are accepted (large files belong in a volume or the image)"
                ),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(ValidationErrors(errors)))
        }
    }

    /// Refuses bind mounts that make the service root on its host (see
    /// [`host_root_mount`]), unless `allowed`.
    pub fn check_host_mounts(&self, allowed: bool) -> Result<()> {
        if allowed {
            return Ok(());
        }
        let errors: Vec<FieldError> = self
            .volumes
            .iter()
            .enumerate()
            .filter_map(|(i, volume)| {
                host_root_mount(&volume.source).map(|why| {
                    FieldError::new(
                        format!("volumes[{i}].source"),
                        "HOST_MOUNT_REFUSED",
                        format!(
                            "mounting {:?} {why}, which makes the service root on its host; the server refuses it unless started with --allow-host-mounts",
                            volume.source
                        ),
                    )
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(ValidationErrors(errors)))
        }
    }

    /// Whether two specs differ in anything but the instance count (which a scale changes
    /// without a new release).
    pub fn differs_beyond_instances(&self, other: &ServiceSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
    }
}

/// Why a bind mount of the host path `source` hands its container the host, or `None` for a
/// named volume or an ordinary path: `/` itself, the Docker socket or a directory holding
/// it, Docker's own state, and the system's trees (`/etc`, `/usr`, `/proc`, `/root`…). The path
/// is normalized first (`//`, `.` and `..`), so `/var/./run/../run/docker.sock` is caught.
pub fn host_root_mount(source: &str) -> Option<&'static str> {
    if !source.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let path = format!("/{}", parts.join("/"));
    const SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];
    if path == "/" {
        return Some("(the host's root)");
    }
    if SOCKETS
        .iter()
        .any(|socket| *socket == path || socket.starts_with(&format!("{path}/")))
    {
        return Some("(the Docker socket, or a directory holding it)");
    }
    const TREES: [&str; 14] = [
        "/var/lib/docker",
        "/var/lib/containerd",
        "/etc",
        "/proc",
        "/sys",
        "/dev",
        "/boot",
        "/root",
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/home",
    ];
    if TREES
        .iter()
        .any(|tree| path == *tree || path.starts_with(&format!("{tree}/")))
    {
        return Some("(a host system directory)");
    }
    None
}

/// A declared service as stored: the spec plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Service {
    /// What the user declared.
    pub spec: ServiceSpec,
    /// The release the service should run (the last one deployed), if any.
    pub current_release: Option<u64>,
    /// The highest release number given out so far.
    pub latest_release: u64,
    /// The highest deployment sequence number given out so far.
    pub latest_deployment: u64,
    /// Every release below this number was deleted by retention, but the `pinned` ones.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub pruned_below: u64,
    /// Releases older than the retention window kept because a deployment or a rollback
    /// still needs them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub pinned_releases: std::collections::BTreeSet<u64>,
    /// The secrets it has, by name (never their values; see [`crate::secret`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, crate::secret::SecretRef>,
    /// When the service was created.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: jiff::Timestamp,
    /// When the service was last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: jiff::Timestamp,
    /// The store revision of this record; pass it back as `If-Match` to update safely.
    #[serde(default)]
    pub revision: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_root_mounts_are_caught_after_normalizing() {
        for path in [
            "/",
            "//",
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run",
            "/run/",
            "/var",
            "/var/./run/../run/docker.sock",
            "/srv/../etc",
            "/etc/ssl",
            "/proc",
            "/var/lib/docker/volumes",
            "/root/.ssh",
        ] {
            assert!(host_root_mount(path).is_some(), "{path}");
        }
        for path in [
            "/srv/data",
            "/var/lib/app",
            "/tmp/x",
            "data",
            "/etcetera",
            "/running",
        ] {
            assert_eq!(host_root_mount(path), None, "{path}");
        }
        let mut spec = web();
        spec.volumes.push(VolumeSpec {
            source: "/var/run/docker.sock".into(),
            target: "/var/run/docker.sock".into(),
            read_only: true,
        });
        let err = spec.check_host_mounts(false).unwrap_err();
        assert_eq!(err.code(), "HOST_MOUNT_REFUSED");
        assert!(err.to_string().contains("--allow-host-mounts"), "{err}");
        assert!(spec.check_host_mounts(true).is_ok());
    }

    #[test]
    fn a_spec_over_256_kib_is_refused() {
        let mut spec = web();
        spec.env.insert("BIG".into(), "x".repeat(MAX_SPEC_BYTES));
        assert_eq!(codes(&spec), ["SPEC_TOO_LARGE"]);
        spec.env
            .insert("BIG".into(), "x".repeat(MAX_SPEC_BYTES - 1024));
        assert!(codes(&spec).is_empty());
    }

    fn codes(spec: &ServiceSpec) -> Vec<String> {
        match spec.validate() {
            Ok(()) => vec![],
            Err(Error::Validation(v)) => v.0.into_iter().map(|e| e.code).collect(),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn web() -> ServiceSpec {
        let mut s = ServiceSpec::new("web", "demo:v1");
        s.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        s.public = true;
        s
    }

    #[test]
    fn the_https_redirect_is_on_unless_turned_off_and_old_specs_load_with_it_on() {
        // A spec stored before the field existed.
        let old: ServiceSpec =
            serde_json::from_str(r#"{"name": "web", "image": "demo:v1", "public": true}"#).unwrap();
        assert!(old.https_redirect);
        assert!(ServiceSpec::new("web", "demo:v1").https_redirect);
        let off: ServiceSpec =
            serde_json::from_str(r#"{"name": "web", "image": "demo:v1", "https_redirect": false}"#)
                .unwrap();
        assert!(!off.https_redirect);
        let json = serde_json::to_value(&off).unwrap();
        assert_eq!(json["https_redirect"], false);
        assert_eq!(serde_json::from_value::<ServiceSpec>(json).unwrap(), off);
    }

    #[test]
    fn valid_spec_passes() {
        assert!(codes(&web()).is_empty());
    }

    #[test]
    fn each_rule_has_its_code() {
        let mut s = web();
        s.name = "Web_1".into();
        assert_eq!(codes(&s), ["INVALID_NAME"]);
        let mut s = web();
        s.image = "Bad Image".into();
        assert_eq!(codes(&s), ["INVALID_IMAGE"]);
        let mut s = web();
        s.ports.push(PortSpec {
            port: 70000,
            protocol: Protocol::Tcp,
        });
        s.ports.push(PortSpec {
            port: 0,
            protocol: Protocol::Tcp,
        });
        s.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Tcp,
        });
        assert_eq!(
            codes(&s),
            ["INVALID_PORT", "INVALID_PORT", "DUPLICATE_PORT"]
        );
        let mut s = web();
        s.instances = MAX_INSTANCES + 1;
        assert_eq!(codes(&s), ["INVALID_INSTANCES"]);
        let mut s = web();
        s.ports.clear();
        assert_eq!(codes(&s), ["MISSING_HTTP_PORT"]);
        let mut s = web();
        s.env.insert("1X".into(), "v".into());
        assert_eq!(codes(&s), ["INVALID_ENV"]);
        let mut s = web();
        s.volumes.push(VolumeSpec {
            source: "data".into(),
            target: "rel".into(),
            read_only: false,
        });
        assert_eq!(codes(&s), ["INVALID_VOLUME"]);
        let mut s = web();
        s.health = Some(HealthCheck {
            path: "health".into(),
            ..HealthCheck::default()
        });
        assert_eq!(codes(&s), ["INVALID_HEALTH"]);
        let mut s = web();
        s.deploy.canary_steps = vec![50, 10, 100];
        assert_eq!(codes(&s), ["INVALID_DEPLOY"]);
        let mut s = web();
        s.placement.constraints.push("zone".into());
        assert_eq!(codes(&s), ["INVALID_PLACEMENT"]);
        let mut s = web();
        s.resources.cpus = Some(0.0);
        assert_eq!(codes(&s), ["INVALID_RESOURCES"]);
        let mut s = web();
        s.domains = vec!["a.example.com".into(), "a.example.com".into()];
        assert_eq!(codes(&s), ["DUPLICATE_DOMAIN"]);
        let mut s = web();
        s.domains = vec!["api.paz".into(), "paz".into(), "paz.example.com".into()];
        assert_eq!(codes(&s), ["RESERVED_DOMAIN", "RESERVED_DOMAIN"]);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            serde_json::from_str::<ServiceSpec>(r#"{"name":"web","image":"demo","replicas":2}"#)
                .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `replicas`"),
            "{err}"
        );
        let err = serde_json::from_str::<ServiceSpec>(
            r#"{"name":"web","image":"demo","deploy":{"stratgy":"rolling"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `stratgy`"), "{err}");
    }

    #[test]
    fn constraints_match_labels() {
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        assert!(Constraint::parse("zone==a").unwrap().matches(&labels));
        assert!(!Constraint::parse("zone!=a").unwrap().matches(&labels));
        assert!(Constraint::parse("disk!=ssd").unwrap().matches(&labels));
    }

    proptest! {
        #[test]
        fn port_rule_matches_range(port in 0u32..200_000) {
            let mut s = web();
            s.ports = vec![PortSpec { port, protocol: Protocol::Http }];
            let ok = s.validate().is_ok();
            prop_assert_eq!(ok, (1..=65535).contains(&port));
        }

        #[test]
        fn instances_rule_matches_range(n in 0u32..5000) {
            let mut s = web();
            s.instances = n;
            prop_assert_eq!(s.validate().is_ok(), n <= MAX_INSTANCES);
        }

        #[test]
        fn json_round_trip_keeps_valid_specs(name in "[a-z][a-z0-9-]{0,20}[a-z0-9]", n in 0u32..10, port in 1u32..65536) {
            let mut s = web();
            s.name = name;
            s.instances = n;
            s.ports = vec![PortSpec { port, protocol: Protocol::Http }];
            let back: ServiceSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
