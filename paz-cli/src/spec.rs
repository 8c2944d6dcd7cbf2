//! From flags to API bodies: flag value parsers, the spec of `service create` and the merge
//! patch of `service update`.

use paz_core::{HealthCheck, HealthKind, PortSpec, Protocol, ServiceSpec, Strategy, VolumeSpec};
use serde_json::{Map, Value, json};

use crate::args::{CreateArgs, SpecFlags, UpdateArgs};
use crate::failure::UsageError;

/// Parses `--port`: `8080`, `8080/http` or `8080/tcp`.
pub fn parse_port(text: &str) -> Result<PortSpec, String> {
    let (number, protocol) = match text.split_once('/') {
        Some((number, "http")) => (number, Protocol::Http),
        Some((number, "tcp")) => (number, Protocol::Tcp),
        Some((_, other)) => {
            return Err(format!(
                "unknown protocol {other:?}; use PORT, PORT/http or PORT/tcp"
            ));
        }
        None => (text, Protocol::Http),
    };
    let port: u16 = number
        .trim()
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("port {number:?} must be a number from 1 to 65535"))?;
    Ok(PortSpec {
        port: u32::from(port),
        protocol,
    })
}

/// Parses `--env`: `KEY=VALUE` (the value may be empty and may contain `=`).
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "expected KEY=VALUE, e.g. --env RUST_LOG=info (got {text:?}, which has no '=')"
        ));
    };
    paz_core::names::check_env_key(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Parses `--volume`: `SOURCE:TARGET`, `SOURCE:TARGET:ro` or `SOURCE:TARGET:rw`.
pub fn parse_volume(text: &str) -> Result<VolumeSpec, String> {
    let (rest, read_only) = if let Some(rest) = text.strip_suffix(":ro") {
        (rest, true)
    } else if let Some(rest) = text.strip_suffix(":rw") {
        (rest, false)
    } else {
        (text, false)
    };
    match rest.split_once(':') {
        Some((source, target))
            if !source.is_empty() && target.starts_with('/') && !target.contains(':') =>
        {
            Ok(VolumeSpec {
                source: source.to_owned(),
                target: target.to_owned(),
                read_only,
            })
        }
        _ => Err(format!(
            "expected SOURCE:TARGET[:ro] with an absolute TARGET, e.g. data:/var/lib/app or /srv/conf:/etc/app:ro (got {text:?})"
        )),
    }
}

/// Parses a release number: `v3` or `3`.
pub fn parse_release(text: &str) -> Result<u64, String> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse::<u64>()
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("expected a release such as v3 or 3 (got {text:?})"))
}

/// The spec `paz service create` sends: the defaults of [`ServiceSpec::new`] plus the flags.
pub fn create_spec(args: &CreateArgs) -> ServiceSpec {
    let mut spec = ServiceSpec::new(&args.name, &args.image);
    let flags = &args.flags;
    if let Some(instances) = flags.instances {
        spec.instances = instances;
    }
    spec.ports.clone_from(&flags.ports);
    spec.public = flags.public.unwrap_or(false);
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
    fn ports_parse_with_optional_protocol() {
        assert_eq!(
            parse_port("8080").unwrap(),
            PortSpec {
                port: 8080,
                protocol: Protocol::Http
            }
        );
        assert_eq!(parse_port("8080/http").unwrap().protocol, Protocol::Http);
        assert_eq!(
            parse_port("5432/tcp").unwrap(),
            PortSpec {
                port: 5432,
                protocol: Protocol::Tcp
            }
        );
        for bad in ["0", "65536", "http", "80/udp", "", "/tcp", "-1"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_splits_at_the_first_equals() {
        assert_eq!(
            parse_env("K=V").unwrap(),
            ("K".to_string(), "V".to_string())
        );
        assert_eq!(
            parse_env("URL=a=b").unwrap(),
            ("URL".to_string(), "a=b".to_string())
        );
        assert_eq!(parse_env("EMPTY=").unwrap().1, "");
        assert!(parse_env("BAD").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_env("1X=v").is_err());
        assert!(parse_env("=v").is_err());
    }

    #[test]
    fn volumes_parse_source_target_and_mode() {
        assert_eq!(
            parse_volume("src:/dst:ro").unwrap(),
            VolumeSpec {
                source: "src".into(),
                target: "/dst".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_volume("/srv/data:/data").unwrap(),
            VolumeSpec {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: false
            }
        );
        assert!(!parse_volume("data:/data:rw").unwrap().read_only);
        for bad in ["data", "data:rel", ":/dst", "a:/b:c", "a:/b:xx"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn releases_parse_with_or_without_v() {
        assert_eq!(parse_release("v3"), Ok(3));
        assert_eq!(parse_release("12"), Ok(12));
        assert!(parse_release("v0").is_err());
        assert!(parse_release("three").is_err());
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
        assert_eq!(spec.env["B"], "x=y");
        assert_eq!(spec.health.as_ref().unwrap().path, "/healthz");
        assert_eq!(spec.resources.cpus, Some(0.5));
        assert_eq!(spec.deploy.strategy, Strategy::BlueGreen);
        assert_eq!(spec.deploy.max_surge, 2);
        assert_eq!(spec.command, ["demo", "--listen", ":8080"]);
        spec.validate().unwrap();

        let minimal = create(&["web", "--image", "demo:v1"]);
        assert_eq!(minimal, ServiceSpec::new("web", "demo:v1"));
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
