//! The service form: its fields as text, to a [`ServiceSpec`] and back. Reading a field
//! that is not even a number fails here, in the words of the API; everything else is the
//! engine's validation (`ServiceSpec::validate`, run by `create_service` and
//! `update_service`), whose field paths ([`field_for`]) put each error next to its input.

use std::collections::BTreeMap;

use paz_core::error::FieldError;
use paz_core::{
    DeploySettings, HealthCheck, HealthKind, HumanDuration, Placement, PortSpec, Protocol,
    Resources, ServiceSpec, Strategy, VolumeSpec,
};
use serde::Deserialize;

/// The form's fields, as the browser sends them. Checkboxes are absent when unchecked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ServiceForm {
    pub name: String,
    pub image: String,
    pub instances: String,
    pub ports: String,
    pub public: Option<String>,
    pub https_redirect: Option<String>,
    pub domains: String,
    pub env: String,
    pub command: String,
    pub volumes: String,
    pub health_kind: String,
    pub health_path: String,
    pub health_port: String,
    pub health_interval: String,
    pub health_timeout: String,
    pub health_retries: String,
    pub health_start_period: String,
    pub memory_mb: String,
    pub cpus: String,
    pub constraints: String,
    pub spread: String,
    pub strategy: String,
    pub max_surge: String,
    pub drain_timeout: String,
    pub deploy_health_timeout: String,
    pub canary_steps: String,
    /// The service's revision when the edit form was shown (`If-Match`).
    pub revision: String,
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

impl ServiceForm {
    /// The form for a new service, with the defaults of the spec.
    pub fn new_service() -> ServiceForm {
        let mut form = ServiceForm::from_spec(&ServiceSpec::new("", ""));
        form.ports = "8080".into();
        form.public = Some("on".into());
        form.health_kind = "http".into();
        form.health_path = "/".into();
        form
    }

    /// The form showing `spec`.
    pub fn from_spec(spec: &ServiceSpec) -> ServiceForm {
        let health = spec.health.clone();
        let shown = health.clone().unwrap_or_default();
        let deploy = &spec.deploy;
        ServiceForm {
            name: spec.name.clone(),
            image: spec.image.clone(),
            instances: spec.instances.to_string(),
            ports: spec
                .ports
                .iter()
                .map(|p| match p.protocol {
                    Protocol::Http => p.port.to_string(),
                    Protocol::Tcp => format!("{}/tcp", p.port),
                })
                .collect::<Vec<_>>()
                .join(", "),
            public: spec.public.then(|| "on".into()),
            https_redirect: spec.https_redirect.then(|| "on".into()),
            domains: spec.domains.join("\n"),
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            command: spec.command.join("\n"),
            volumes: spec
                .volumes
                .iter()
                .map(|v| {
                    format!(
                        "{}:{}{}",
                        v.source,
                        v.target,
                        if v.read_only { ":ro" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            health_kind: match &health {
                None => "none".into(),
                Some(h) if h.kind == HealthKind::Tcp => "tcp".into(),
                Some(_) => "http".into(),
            },
            health_path: shown.path.clone(),
            health_port: shown.port.map(|p| p.to_string()).unwrap_or_default(),
            health_interval: shown.interval.to_string(),
            health_timeout: shown.timeout.to_string(),
            health_retries: shown.retries.to_string(),
            health_start_period: shown.start_period.to_string(),
            memory_mb: spec
                .resources
                .memory_mb
                .map(|m| m.to_string())
                .unwrap_or_default(),
            cpus: spec
                .resources
                .cpus
                .map(|c| c.to_string())
                .unwrap_or_default(),
            constraints: spec.placement.constraints.join("\n"),
            spread: spec.placement.spread.clone().unwrap_or_default(),
            strategy: strategy_name(deploy.strategy).into(),
            max_surge: deploy.max_surge.to_string(),
            drain_timeout: deploy.drain_timeout.to_string(),
            deploy_health_timeout: deploy.health_timeout.to_string(),
            canary_steps: deploy
                .canary_steps
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            revision: String::new(),
        }
    }

    /// The spec the form describes, or every field that could not even be read.
    pub fn to_spec(&self) -> Result<ServiceSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let e = &mut errors;
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut spec = ServiceSpec::new(self.name.trim(), self.image.trim());
        if let Some(n) = whole(
            e,
            "instances",
            "INVALID_INSTANCES",
            &self.instances,
            "instances",
        ) {
            spec.instances = small(n);
        }
        for (i, item) in items(&self.ports).enumerate() {
            let (port, protocol) = match item.split_once('/') {
                Some((port, "tcp")) => (port, Protocol::Tcp),
                Some((port, "http")) => (port, Protocol::Http),
                Some(_) => {
                    e.push(FieldError::new(
                        format!("ports[{i}].protocol"),
                        "INVALID_PORT",
                        format!(
                            "port {item:?}: the protocol must be http or tcp, as in 8080 or 9000/tcp"
                        ),
                    ));
                    continue;
                }
                None => (item, Protocol::Http),
            };
            if let Some(port) = whole(e, &format!("ports[{i}].port"), "INVALID_PORT", port, "port")
            {
                spec.ports.push(PortSpec {
                    port: small(port),
                    protocol,
                });
            }
        }
        spec.public = self.public.is_some();
        spec.https_redirect = self.https_redirect.is_some();
        spec.domains = items(&self.domains).map(str::to_owned).collect();
        for line in lines(&self.env) {
            match line.split_once('=') {
                Some((key, value)) => {
                    spec.env.insert(key.trim().to_owned(), value.to_owned());
                }
                None => e.push(FieldError::new(
                    format!("env.{line}"),
                    "INVALID_ENV",
                    format!("{line:?} must look like NAME=value"),
                )),
            }
        }
        spec.command = self
            .command
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .filter(|l| !l.trim().is_empty())
            .collect();
        for (i, line) in lines(&self.volumes).enumerate() {
            let (rest, read_only) = match line.strip_suffix(":ro") {
                Some(rest) => (rest, true),
                None => (line.strip_suffix(":rw").unwrap_or(line), false),
            };
            match rest.split_once(':') {
                Some((source, target)) => spec.volumes.push(VolumeSpec {
                    source: source.trim().to_owned(),
                    target: target.trim().to_owned(),
                    read_only,
                }),
                None => e.push(FieldError::new(
                    format!("volumes[{i}].target"),
                    "INVALID_VOLUME",
                    format!(
                        "{line:?} must look like source:/path/in/container (add :ro for read-only)"
                    ),
                )),
            }
        }
        spec.health = match self.health_kind.as_str() {
            "" | "none" => None,
            kind => {
                let mut health = HealthCheck {
                    kind: if kind == "tcp" {
                        HealthKind::Tcp
                    } else {
                        HealthKind::Http
                    },
                    ..HealthCheck::default()
                };
                if !self.health_path.trim().is_empty() {
                    health.path = self.health_path.trim().to_owned();
                }
                if let Some(d) = duration(
                    e,
                    "health.interval",
                    "INVALID_HEALTH",
                    &self.health_interval,
                ) {
                    health.interval = d;
                }
                if let Some(d) =
                    duration(e, "health.timeout", "INVALID_HEALTH", &self.health_timeout)
                {
                    health.timeout = d;
                }
                if let Some(d) = duration(
                    e,
                    "health.start_period",
                    "INVALID_HEALTH",
                    &self.health_start_period,
                ) {
                    health.start_period = d;
                }
                if let Some(port) =
                    whole(e, "health.port", "INVALID_PORT", &self.health_port, "port")
                {
                    health.port = Some(small(port));
                }
                if let Some(n) = whole(
                    e,
                    "health.retries",
                    "INVALID_HEALTH",
                    &self.health_retries,
                    "retries",
                ) {
                    health.retries = small(n);
                }
                Some(health)
            }
        };
        spec.resources = Resources {
            memory_mb: whole(
                e,
                "resources.memory_mb",
                "INVALID_RESOURCES",
                &self.memory_mb,
                "memory_mb",
            ),
            cpus: None,
        };
        if !self.cpus.trim().is_empty() {
            match self.cpus.trim().parse::<f64>() {
                Ok(cpus) if cpus.is_finite() => spec.resources.cpus = Some(cpus),
                _ => e.push(FieldError::new(
                    "resources.cpus",
                    "INVALID_RESOURCES",
                    format!(
                        "cpus {:?} is not a number such as 0.5 or 2",
                        self.cpus.trim()
                    ),
                )),
            }
        }
        spec.placement = Placement {
            constraints: lines(&self.constraints).map(str::to_owned).collect(),
            spread: Some(self.spread.trim().to_owned()).filter(|s| !s.is_empty()),
        };
        let strategy = match self.strategy.as_str() {
            "" | "rolling" => Strategy::Rolling,
            "recreate" => Strategy::Recreate,
            "blue-green" => Strategy::BlueGreen,
            "canary" => Strategy::Canary,
            other => {
                e.push(FieldError::new(
                    "deploy.strategy",
                    "INVALID_DEPLOY",
                    format!(
                        "strategy {other:?} is not one of rolling, recreate, blue-green, canary"
                    ),
                ));
                Strategy::Rolling
            }
        };
        let mut deploy = DeploySettings {
            strategy,
            ..DeploySettings::default()
        };
        if let Some(n) = whole(
            e,
            "deploy.max_surge",
            "INVALID_DEPLOY",
            &self.max_surge,
            "max_surge",
        ) {
            deploy.max_surge = small(n);
        }
        if let Some(d) = duration(
            e,
            "deploy.drain_timeout",
            "INVALID_DEPLOY",
            &self.drain_timeout,
        ) {
            deploy.drain_timeout = d;
        }
        if let Some(d) = duration(
            e,
            "deploy.health_timeout",
            "INVALID_DEPLOY",
            &self.deploy_health_timeout,
        ) {
            deploy.health_timeout = d;
        }
        let mut steps = Vec::new();
        for step in items(&self.canary_steps) {
            match whole(
                e,
                "deploy.canary_steps",
                "INVALID_DEPLOY",
                step.trim_end_matches('%'),
                "canary step",
            ) {
                Some(n) => steps.push(small(n)),
                None => break,
            }
        }
        if !steps.is_empty() {
            deploy.canary_steps = steps;
        }
        spec.deploy = deploy;
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }

    /// The revision the edit form was opened at.
    pub fn expected_revision(&self) -> Option<u64> {
        self.revision.trim().parse().ok()
    }
}

/// A whole number, or `None` for an empty field (the default); an error otherwise.
fn whole(
    errors: &mut Vec<FieldError>,
    field: &str,
    code: &str,
    text: &str,
    what: &str,
) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse::<u64>()
        .map_err(|_| {
            errors.push(FieldError::new(
                field,
                code,
                format!("{what} {text:?} is not a whole number"),
            ));
        })
        .ok()
}

/// A duration such as `5s`, or `None` for an empty field; an error otherwise.
fn duration(
    errors: &mut Vec<FieldError>,
    field: &str,
    code: &str,
    text: &str,
) -> Option<HumanDuration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse::<HumanDuration>()
        .map_err(|message| errors.push(FieldError::new(field, code, message)))
        .ok()
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Rolling => "rolling",
        Strategy::Recreate => "recreate",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary => "canary",
    }
}

/// The form input that shows errors of the spec's `path` (`ports[1].port` → `ports`), or
/// `None` for the form as a whole.
pub(crate) fn field_for(path: &str) -> Option<&'static str> {
    let base = path.split(['[', '.']).next().unwrap_or(path);
    let rest = path.strip_prefix(base).unwrap_or("");
    let sub = rest
        .trim_start_matches(|c: char| c == '[' || c.is_ascii_digit() || c == ']')
        .trim_start_matches('.');
    let sub = sub.split(['.', '[']).next().unwrap_or("");
    Some(match (base, sub) {
        ("name", _) => "name",
        ("image", _) => "image",
        ("instances", _) => "instances",
        ("ports", _) => "ports",
        ("public", _) => "public",
        ("domains", _) => "domains",
        ("https_redirect", _) => "https_redirect",
        ("env", _) => "env",
        ("command", _) => "command",
        ("volumes", _) => "volumes",
        ("health", "path") => "health_path",
        ("health", "port") => "health_port",
        ("health", "timeout") => "health_timeout",
        ("health", "retries") => "health_retries",
        ("health", "start_period") => "health_start_period",
        ("health", _) => "health_interval",
        ("resources", "cpus") => "cpus",
        ("resources", _) => "memory_mb",
        ("placement", "spread") => "spread",
        ("placement", _) => "constraints",
        ("deploy", "strategy") => "strategy",
        ("deploy", "max_surge") => "max_surge",
        ("deploy", "drain_timeout") => "drain_timeout",
        ("deploy", "health_timeout") => "deploy_health_timeout",
        ("deploy", _) => "canary_steps",
        _ => return None,
    })
}

/// Errors sorted by the input they belong to; those of no input under `""`.
pub(crate) fn by_field(errors: &[FieldError]) -> BTreeMap<&'static str, Vec<String>> {
    let mut map: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for error in errors {
        map.entry(field_for(&error.field).unwrap_or(""))
            .or_default()
            .push(error.message.clone());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_form() {
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.instances = 3;
        spec.public = true;
        spec.ports = vec![
            PortSpec {
                port: 8080,
                protocol: Protocol::Http,
            },
            PortSpec {
                port: 9000,
                protocol: Protocol::Tcp,
            },
        ];
        spec.domains = vec!["example.com".into()];
        spec.env.insert("A".into(), "1=2".into());
        spec.command = vec!["serve".into(), "--port 8080".into()];
        spec.volumes = vec![VolumeSpec {
            source: "data".into(),
            target: "/data".into(),
            read_only: true,
        }];
        spec.health = Some(HealthCheck {
            path: "/health".into(),
            port: Some(8080),
            interval: HumanDuration::from_millis(500),
            ..HealthCheck::default()
        });
        spec.resources.memory_mb = Some(128);
        spec.resources.cpus = Some(0.5);
        spec.placement.constraints = vec!["zone==a".into()];
        spec.placement.spread = Some("zone".into());
        spec.deploy.strategy = Strategy::Canary;
        spec.deploy.canary_steps = vec![5, 100];
        spec.https_redirect = false;
        let form = ServiceForm::from_spec(&spec);
        assert_eq!(form.to_spec().unwrap(), spec);
        let new = ServiceForm::new_service().to_spec().unwrap();
        assert!(new.public && new.health.is_some() && new.https_redirect);
    }

    #[test]
    fn unreadable_fields_fail_with_the_apis_codes() {
        let form = ServiceForm {
            name: "web".into(),
            image: "demo:v1".into(),
            instances: "two".into(),
            ports: "80x, 9000/udp".into(),
            env: "NOEQUALS".into(),
            cpus: "lots".into(),
            health_kind: "http".into(),
            health_interval: "5 parsecs".into(),
            ..ServiceForm::default()
        };
        let errors = form.to_spec().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| field_for(&e.field)).collect();
        for expected in ["instances", "ports", "env", "cpus", "health_interval"] {
            assert!(fields.contains(&Some(expected)), "{expected}: {errors:?}");
        }
        assert!(errors.iter().any(|e| e.code == "INVALID_INSTANCES"));
    }

    #[test]
    fn spec_paths_map_to_inputs() {
        assert_eq!(field_for("ports[1].port"), Some("ports"));
        assert_eq!(field_for("env.FOO"), Some("env"));
        assert_eq!(field_for("domains[0]"), Some("domains"));
        assert_eq!(field_for("health.path"), Some("health_path"));
        assert_eq!(field_for("health"), Some("health_interval"));
        assert_eq!(field_for("placement.constraints[2]"), Some("constraints"));
        assert_eq!(field_for("deploy.canary_steps"), Some("canary_steps"));
        assert_eq!(
            field_for("deploy.health_timeout"),
            Some("deploy_health_timeout")
        );
        assert_eq!(field_for("spec"), None);
    }
}
