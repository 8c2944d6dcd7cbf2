//! From flags to API bodies: the spec of `service create` and the merge patch of
//! `service update`. (The flag value parsers are in [`crate::parse`].)

use paz_core::{HealthCheck, HealthKind, ServiceSpec, Strategy};
use serde_json::{Map, Value, json};

use crate::args::{CreateArgs, SpecFlags, UpdateArgs};
use crate::failure::UsageError;

/// The spec `paz service create` sends: the defaults of [`ServiceSpec::new`] plus the flags.
pub fn create_spec(args: &CreateArgs) -> ServiceSpec {
    let mut spec = ServiceSpec::new(&args.name, &args.image);
    let flags = &args.flags;
    if let Some(instances) = flags.instances {
        spec.instances = instances;
    }
    spec.ports.clone_from(&flags.ports);
    spec.public = flags.public.unwrap_or(false);
    if let Some(https_redirect) = flags.https_redirect {
        spec.https_redirect = https_redirect;
    }
    spec.domains.clone_from(&flags.domains);
    spec.env = flags.env.iter().cloned().collect();
    spec.command.clone_from(&args.command);
    spec.volumes.clone_from(&flags.volumes);
    if let Some(path) = &flags.health_path {
        spec.health = Some(HealthCheck {
            kind: HealthKind::Http,
            path: path.clone(),
            ..HealthCheck::default()
        });
    }
    spec.resources.memory_mb = flags.memory_mb;
    spec.resources.cpus = flags.cpus;
    if let Some(strategy) = flags.strategy {
        spec.deploy.strategy = strategy.into();
    }
    if let Some(max_surge) = flags.max_surge {
        spec.deploy.max_surge = max_surge;
    }
    spec
}

/// The JSON merge patch (RFC 7396) `paz service update` sends: only the given fields. Lists
/// (ports, domains, volumes, command) are replaced; `--env` merges keys into the current
/// environment and `--unset-env` removes keys.
pub fn update_patch(args: &UpdateArgs) -> Result<Value, UsageError> {
    let mut patch = Map::new();
    let SpecFlags {
        instances,
        ports,
        public,
        https_redirect,
        domains,
        env,
        health_path,
        volumes,
        memory_mb,
        cpus,
        strategy,
        max_surge,
    } = &args.flags;
    if let Some(image) = &args.image {
        patch.insert("image".into(), json!(image));
    }
    if let Some(instances) = instances {
        patch.insert("instances".into(), json!(instances));
    }
    if !ports.is_empty() {
        patch.insert("ports".into(), to_value(ports));
    }
    if let Some(public) = public {
        patch.insert("public".into(), json!(public));
    }
    if let Some(https_redirect) = https_redirect {
        patch.insert("https_redirect".into(), json!(https_redirect));
    }
    if !domains.is_empty() {
        patch.insert("domains".into(), json!(domains));
    }
    if !env.is_empty() || !args.unset_env.is_empty() {
        let mut vars = Map::new();
        for (key, value) in env {
            vars.insert(key.clone(), json!(value));
        }
        for key in &args.unset_env {
            if vars.contains_key(key) {
                return Err(UsageError(format!(
                    "--env {key}=… and --unset-env {key} contradict each other"
                )));
            }
            vars.insert(key.clone(), Value::Null);
        }
        patch.insert("env".into(), Value::Object(vars));
    }
    if !args.command.is_empty() {
        patch.insert("command".into(), json!(args.command));
    }
    if !volumes.is_empty() {
        patch.insert("volumes".into(), to_value(volumes));
    }
    if let Some(path) = health_path {
        patch.insert(
            "health".into(),
            json!({ "kind": HealthKind::Http, "path": path }),
        );
    }
    let mut resources = Map::new();
    if let Some(memory_mb) = memory_mb {
        resources.insert("memory_mb".into(), json!(memory_mb));
    }
    if let Some(cpus) = cpus {
        resources.insert("cpus".into(), json!(cpus));
    }
    if !resources.is_empty() {
        patch.insert("resources".into(), Value::Object(resources));
    }
    let mut deploy = Map::new();
    if let Some(strategy) = strategy {
        deploy.insert("strategy".into(), to_value(&Strategy::from(*strategy)));
    }
    if let Some(max_surge) = max_surge {
        deploy.insert("max_surge".into(), json!(max_surge));
    }
    if !deploy.is_empty() {
        patch.insert("deploy".into(), Value::Object(deploy));
    }
    if patch.is_empty() {
        return Err(UsageError(format!(
            "nothing to update: give at least one flag, e.g. `paz service update {} --image IMAGE` (see --help)",
            args.name
        )));
    }
    Ok(Value::Object(patch))
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("spec parts serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, ServiceCommand};
    use crate::parse::parse_port;
    use clap::Parser;
    use paz_core::engine::merge_patch;

    fn create(args: &[&str]) -> ServiceSpec {
        let cli = Cli::try_parse_from(["paz", "service", "create"].iter().chain(args)).unwrap();
        let Command::Service(ServiceCommand::Create(create)) = cli.command else {
            panic!()
        };
        create_spec(&create)
    }

    fn update(args: &[&str]) -> Result<Value, UsageError> {
        let cli = Cli::try_parse_from(["paz", "service", "update"].iter().chain(args)).unwrap();
        let Command::Service(ServiceCommand::Update(update)) = cli.command else {
            panic!()
        };
        update_patch(&update)
    }

    #[test]
    fn create_builds_a_full_spec() {
        let spec = create(&[
            "web",
            "--image",
            "demo:v1",
            "--instances",
            "3",
            "--port",
            "8080",
            "--port",
            "9000/tcp",
            "--public",
            "--domain",
            "www.example.com",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--health-path",
            "/healthz",
            "--volume",
            "data:/data",
            "--memory-mb",
            "256",
            "--cpus",
            "0.5",
            "--strategy",
            "blue-green",
            "--max-surge",
            "2",
            "--",
            "demo",
            "--listen",
            ":8080",
        ]);
        assert_eq!(spec.name, "web");
        assert_eq!(spec.instances, 3);
        assert_eq!(spec.ports.len(), 2);
        assert_eq!(spec.routed_port(), Some(8080));
        assert!(spec.public);
        assert!(spec.https_redirect, "on by default");
        assert_eq!(spec.env["B"], "x=y");
        assert_eq!(spec.health.as_ref().unwrap().path, "/healthz");
        assert_eq!(spec.resources.cpus, Some(0.5));
        assert_eq!(spec.deploy.strategy, Strategy::BlueGreen);
        assert_eq!(spec.deploy.max_surge, 2);
        assert_eq!(spec.command, ["demo", "--listen", ":8080"]);
        spec.validate().unwrap();

        let minimal = create(&["web", "--image", "demo:v1"]);
        assert_eq!(minimal, ServiceSpec::new("web", "demo:v1"));
        let plain = create(&["web", "--image", "demo:v1", "--https-redirect=false"]);
        assert!(!plain.https_redirect);
    }

    #[test]
    fn update_sends_only_the_given_fields() {
        assert_eq!(
            update(&["web", "--image", "demo:v2"]).unwrap(),
            json!({"image": "demo:v2"})
        );
        assert_eq!(
            update(&[
                "web",
                "--env",
                "A=1",
                "--unset-env",
                "B",
                "--port",
                "80/tcp",
                "--public=false",
                "--https-redirect=false",
                "--cpus",
                "2",
                "--strategy",
                "canary"
            ])
            .unwrap(),
            json!({
                "env": {"A": "1", "B": null},
                "ports": [{"port": 80, "protocol": "tcp"}],
                "public": false,
                "https_redirect": false,
                "resources": {"cpus": 2.0},
                "deploy": {"strategy": "canary"},
            })
        );
        assert!(
            update(&["web"])
                .unwrap_err()
                .0
                .contains("nothing to update")
        );
        assert!(
            update(&["web", "--env", "A=1", "--unset-env", "A"])
                .unwrap_err()
                .0
                .contains("contradict")
        );
    }

    #[test]
    fn update_patches_apply_as_intended() {
        let mut current = ServiceSpec::new("web", "demo:v1");
        current.env.insert("KEEP".into(), "1".into());
        current.env.insert("DROP".into(), "1".into());
        current.ports = vec![parse_port("8080").unwrap()];
        current.deploy.max_surge = 3;
        let patch = update(&[
            "web",
            "--env",
            "NEW=2",
            "--unset-env",
            "DROP",
            "--port",
            "9090",
            "--health-path",
            "/up",
            "--strategy",
            "recreate",
        ])
        .unwrap();
        let mut document = serde_json::to_value(&current).unwrap();
        merge_patch(&mut document, &patch);
        let patched: ServiceSpec = serde_json::from_value(document).unwrap();
        patched.validate().unwrap();
        assert_eq!(
            patched.env.keys().collect::<Vec<_>>(),
            ["KEEP", "NEW"],
            "env merges"
        );
        assert_eq!(
            patched.ports,
            [parse_port("9090").unwrap()],
            "ports replace"
        );
        assert_eq!(patched.health.unwrap().path, "/up");
        assert_eq!(patched.deploy.strategy, Strategy::Recreate);
        assert_eq!(patched.deploy.max_surge, 3, "other deploy settings stay");
    }
}
