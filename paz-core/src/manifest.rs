//! The declarative manifest (`paz.toml`) and the plan that applies it.
//!
//! ```toml
//! [services.web]
//! image = "demo:v1"
//! instances = 2
//! ports = [{ port = 8080 }]
//! public = true
//! ```
//!
//! Each table under `services` is a [`ServiceSpec`] whose `name` is the table's key.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, FieldError, Result, ValidationErrors};
use crate::service::{Service, ServiceSpec};

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The services it declares, by name.
    pub services: BTreeMap<String, ServiceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    services: BTreeMap<String, toml::Table>,
}

impl Manifest {
    /// Parses and validates a manifest; reports every invalid service at once.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| Error::invalid("manifest", "INVALID_MANIFEST", e.to_string()))?;
        let mut services = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, mut table) in raw.services {
            match table.get("name") {
                Some(toml::Value::String(given)) if *given != name => errors.push(FieldError::new(
                    format!("services.{name}.name"),
                    "NAME_MISMATCH",
                    format!("the table is services.{name} but its name is {given:?}"),
                )),
                _ => {}
            }
            table.insert("name".into(), toml::Value::String(name.clone()));
            match ServiceSpec::deserialize(table) {
                Ok(spec) => {
                    if let Err(Error::Validation(v)) = spec.validate() {
                        errors.extend(v.0.into_iter().map(|e| FieldError {
                            field: format!("services.{name}.{}", e.field),
                            ..e
                        }));
                    }
                    services.insert(name, spec);
                }
                Err(e) => errors.push(FieldError::new(
                    format!("services.{name}"),
                    "INVALID_MANIFEST",
                    e.to_string(),
                )),
            }
        }
        if errors.is_empty() {
            Ok(Manifest { services })
        } else {
            Err(Error::Validation(ValidationErrors(errors)))
        }
    }

    /// What applying the manifest to the current services would do, by service name.
    /// Services not in the manifest are left alone.
    pub fn plan(&self, current: &[Service]) -> Vec<Change> {
        let current: BTreeMap<&str, &Service> =
            current.iter().map(|s| (s.spec.name.as_str(), s)).collect();
        self.services
            .iter()
            .map(|(name, spec)| match current.get(name.as_str()) {
                None => Change::Create { spec: spec.clone() },
                Some(service) if service.spec == *spec => Change::Unchanged { name: name.clone() },
                Some(service) => Change::Update {
                    revision: service.revision,
                    fields: field_diff(&service.spec, spec),
                    spec: spec.clone(),
                },
            })
            .collect()
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The service is new.
    Create {
        /// Its spec.
        spec: ServiceSpec,
    },
    /// The service exists and differs.
    Update {
        /// The revision the plan was made against (so the update fails if it moved).
        revision: u64,
        /// What differs.
        fields: Vec<FieldChange>,
        /// The new spec.
        spec: ServiceSpec,
    },
    /// The service exists as declared.
    Unchanged {
        /// Its name.
        name: String,
    },
}

/// One differing field: its path and old and new values as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field path, e.g. `deploy.max_surge`.
    pub field: String,
    /// The current value (`null` when unset).
    pub old: String,
    /// The declared value (`null` when unset).
    pub new: String,
}

/// The fields that differ between two specs, by dotted path.
pub fn field_diff(old: &ServiceSpec, new: &ServiceSpec) -> Vec<FieldChange> {
    let old = serde_json::to_value(old).expect("specs serialize");
    let new = serde_json::to_value(new).expect("specs serialize");
    let mut changes = Vec::new();
    diff_values("", &old, &new, &mut changes);
    changes
}

fn diff_values(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<FieldChange>,
) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_values(
                    &child,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            field: path.to_owned(),
            old: a.to_string(),
            new: b.to_string(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        [services.web]
        image = "demo:v1"
        instances = 2
        ports = [{ port = 8080 }]
        public = true

        [services.worker]
        image = "demo:v1"
    "#;

    #[test]
    fn parses_and_plans() {
        let manifest = Manifest::parse(TEXT).unwrap();
        assert_eq!(manifest.services["web"].instances, 2);
        let mut existing_spec = manifest.services["web"].clone();
        existing_spec.image = "demo:v0".into();
        let existing = Service {
            spec: existing_spec,
            current_release: Some(1),
            latest_release: 1,
            latest_deployment: 1,
            pruned_below: 0,
            pinned_releases: Default::default(),
            secrets: Default::default(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            revision: 7,
        };
        let plan = manifest.plan(&[existing]);
        match &plan[0] {
            Change::Update {
                revision, fields, ..
            } => {
                assert_eq!(*revision, 7);
                assert_eq!(
                    fields,
                    &[FieldChange {
                        field: "image".into(),
                        old: "\"demo:v0\"".into(),
                        new: "\"demo:v1\"".into()
                    }]
                );
            }
            other => panic!("expected an update, got {other:?}"),
        }
        assert!(matches!(&plan[1], Change::Create { spec } if spec.name == "worker"));
    }

    #[test]
    fn reports_every_bad_service() {
        let err = Manifest::parse("[services.Bad]\nimage = \"demo\"\n[services.ok]\nimage = \"demo\"\nports = [{ port = 0 }]\n")
            .unwrap_err();
        let Error::Validation(v) = err else { panic!() };
        let fields: Vec<_> = v.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["services.Bad.name", "services.ok.ports[0].port"]);
        assert!(
            Manifest::parse("[servics.web]").is_err(),
            "unknown top-level keys are rejected"
        );
        assert!(Manifest::parse("[services.web]\nimage = \"demo\"\nreplicas = 2").is_err());
    }
}
