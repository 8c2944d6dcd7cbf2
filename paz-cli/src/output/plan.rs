//! The plan of `paz apply`: a diff for people, JSON for programs.

use std::fmt::Write as _;

use paz_core::ServiceSpec;
use paz_core::manifest::Change;
use serde_json::{Value, json};

/// The plan of `paz apply` as a diff for people.
pub fn plan_text(plan: &[Change]) -> String {
    let mut text = String::new();
    for change in plan {
        match change {
            Change::Create { spec } => {
                let _ = writeln!(text, "+ create {}", spec.name);
                for line in spec_summary(spec) {
                    let _ = writeln!(text, "    {line}");
                }
            }
            Change::Update { fields, spec, .. } => {
                let _ = writeln!(text, "~ update {}", spec.name);
                for field in fields {
                    let _ = writeln!(text, "    {}: {} -> {}", field.field, field.old, field.new);
                }
            }
            Change::Unchanged { name } => {
                let _ = writeln!(text, "= {name} unchanged");
            }
        }
    }
    text
}

/// What a new service declares: its image and instances, then every field that differs from
/// the defaults.
pub(super) fn spec_summary(spec: &ServiceSpec) -> Vec<String> {
    let mut lines = vec![
        format!("image: {}", Value::from(spec.image.as_str())),
        format!("instances: {}", spec.instances),
    ];
    let mut base = ServiceSpec::new(&spec.name, &spec.image);
    base.instances = spec.instances;
    for field in paz_core::manifest::field_diff(&base, spec) {
        lines.push(format!("{}: {}", field.field, field.new));
    }
    lines
}

/// One change of the plan as JSON, with its outcome when it was applied.
pub fn change_json(change: &Change, result: Option<Value>) -> Value {
    let mut value = match change {
        Change::Create { spec } => json!({"action": "create", "service": spec.name, "spec": spec}),
        Change::Update {
            revision,
            fields,
            spec,
        } => {
            let parse = |text: &str| {
                serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::from(text))
            };
            let fields: Vec<Value> = fields
                .iter()
                .map(|f| json!({"field": f.field, "old": parse(&f.old), "new": parse(&f.new)}))
                .collect();
            json!({"action": "update", "service": spec.name, "revision": revision, "fields": fields, "spec": spec})
        }
        Change::Unchanged { name } => json!({"action": "unchanged", "service": name}),
    };
    if let Some(result) = result {
        value["result"] = result;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::service;
    use paz_core::manifest::Manifest;
    use paz_core::{PortSpec, Protocol};

    #[test]
    fn plans_render_as_a_diff() {
        let manifest = Manifest::parse(
            "[services.web]\nimage = \"demo:v1\"\nports = [{ port = 8080 }]\npublic = true\n\
             [services.api]\nimage = \"demo:v1\"\n[services.db]\nimage = \"pg:16\"\n",
        )
        .unwrap();
        let mut web = service("web", Some(1));
        web.spec = manifest.services["web"].clone();
        web.spec.image = "demo:v0".into();
        let mut api = service("api", Some(1));
        api.spec = manifest.services["api"].clone();
        let plan = manifest.plan(&[web, api]);
        assert_eq!(
            plan_text(&plan),
            "= api unchanged\n\
             + create db\n    image: \"pg:16\"\n    instances: 1\n\
             ~ update web\n    image: \"demo:v0\" -> \"demo:v1\"\n"
        );
        let json = change_json(&plan[2], Some(json!({"ok": true})));
        assert_eq!(
            json["fields"][0],
            json!({"field": "image", "old": "demo:v0", "new": "demo:v1"})
        );
        assert_eq!(json["revision"], 4);
        assert_eq!(json["result"]["ok"], true);
    }

    #[test]
    fn create_summaries_list_non_default_fields() {
        let mut spec = ServiceSpec::new("web", "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        spec.public = true;
        assert_eq!(
            spec_summary(&spec),
            [
                "image: \"demo:v1\"",
                "instances: 1",
                "ports: [{\"port\":8080,\"protocol\":\"http\"}]",
                "public: true"
            ]
        );
    }
}
