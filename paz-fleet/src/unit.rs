//! Rendering one systemd unit per instance, and reading Paz's metadata back from a listed
//! unit. Pure: no IO.
//!
//! A unit is named `paz-<service>-v<release>-<slot>-<6 random base-36 chars>.service` and runs
//! `docker run --rm --name <unit name without .service> …` (the container carries the same
//! `paz.*` labels as the Docker backend's). The `[X-Paz]` section (systemd ignores `X-`
//! sections) carries what Paz reads back: cluster, service, release, slot, ports and epoch.
//!
//! Command lines are written with [`quote_word`] and read with [`split_command`], which
//! follow systemd's rules for `ExecStart=`: words are separated by whitespace, double quotes
//! group a word, C escapes (`\"`, `\\`, `\n`…) apply inside quotes, `%%` stands for `%`
//! (specifiers are expanded first) and `$$` for `$` (environment variables are expanded
//! next).

use std::collections::BTreeMap;
use std::time::Duration;

use paz_core::scheduler::InstanceSpec;
use paz_core::service::Constraint;

use crate::api::UnitOption;
use crate::error::Error;

/// The section Paz keeps its metadata in.
pub const PAZ_SECTION: &str = "X-Paz";
/// Every unit name Paz creates starts with this.
pub const UNIT_PREFIX: &str = "paz-";

/// Characters that need no quoting in a command word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:=@,+-".contains(c)
}

/// One word of an `ExecStart=` line, quoted so that systemd hands it to the program exactly.
pub fn quote_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            // systemd expands specifiers (`%n`…) and then variables (`$FOO`) before it
            // splits words: `%%` and `$$` are their escapes.
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A command line of words, each quoted by [`quote_word`].
pub fn join_command<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits an `ExecStart=` value into words by systemd's rules (see the module docs),
/// resolving the specifiers `%n` (`unit`), `%N`, `%p` and `%i`. A `$VAR` reference is an
/// error: Paz never writes one, and this parser has no environment to expand it from.
pub fn split_command(line: &str, unit: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    Some('%') => word.push('%'),
                    Some(spec) => word.push_str(&specifier(spec, unit)?),
                    None => return Err(format!("{line:?} ends with a lone '%'")),
                },
                '$' => match chars.peek() {
                    Some('$') => {
                        chars.next();
                        word.push('$');
                    }
                    _ => {
                        return Err(format!(
                            "{line:?} references an environment variable; write $$ for '$'"
                        ));
                    }
                },
                '\\' => match chars.next() {
                    Some(e) => word.push(unescape(e, &mut chars, line)?),
                    None => return Err(format!("{line:?} ends with a lone '\\'")),
                },
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c if quote.is_none() && c.is_whitespace() => break,
                c => word.push(c),
            }
        }
        if quote.is_some() {
            return Err(format!("{line:?} has an unterminated quote"));
        }
        words.push(word);
    }
}

fn specifier(spec: char, unit: &str) -> Result<String, String> {
    let stem = unit.rfind('.').map_or(unit, |dot| &unit[..dot]);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    match spec {
        'n' | 'N' => Ok(if spec == 'n' {
            unit.to_owned()
        } else {
            stem.to_owned()
        }),
        'p' => Ok(prefix.to_owned()),
        'i' => Ok(instance.to_owned()),
        other => Err(format!("unsupported specifier %{other}")),
    }
}

fn unescape(
    e: char,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &str,
) -> Result<char, String> {
    Ok(match e {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'v' => '\x0b',
        's' => ' ',
        'x' => {
            let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
            u8::from_str_radix(&hex, 16)
                .map(char::from)
                .map_err(|_| format!("{line:?} has a bad \\x escape"))?
        }
        '\\' | '"' | '\'' | ' ' => e,
        other => return Err(format!("{line:?} has an unknown escape \\{other}")),
    })
}

/// Paz's metadata of a unit, from its `[X-Paz]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PazMeta {
    /// The cluster that owns the unit.
    pub cluster: String,
    /// The service.
    pub service: String,
    /// The release.
    pub release: u64,
    /// The slot.
    pub slot: u32,
    /// The routed container port, if any.
    pub port: Option<u16>,
    /// The host port the routed port is published on, if any.
    pub host_port: Option<u16>,
    /// The epoch, if recorded.
    pub epoch: Option<String>,
}

/// Reads Paz's metadata back from a unit's options; `None` when it is not a Paz unit.
pub fn read_meta(options: &[UnitOption]) -> Option<PazMeta> {
    let get = |name: &str| {
        options
            .iter()
            .find(|o| o.section == PAZ_SECTION && o.name == name)
            .map(|o| o.value.clone())
    };
    Some(PazMeta {
        cluster: get("Cluster")?,
        service: get("Service")?,
        release: get("Release")?.parse().ok()?,
        slot: get("Slot")?.parse().ok()?,
        port: get("Port").and_then(|p| p.parse().ok()),
        host_port: get("HostPort").and_then(|p| p.parse().ok()),
        epoch: get("Epoch"),
    })
}

/// Whether `service` is a DNS label (what Paz allows as a service name).
fn is_dns_label(service: &str) -> bool {
    !service.is_empty()
        && service.len() <= 63
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !service.starts_with('-')
        && !service.ends_with('-')
}

/// The unit name of an instance: `paz-<service>-v<release>-<slot>-<suffix>.service`.
pub fn unit_name(service: &str, release: u64, slot: u32, suffix: &str) -> Result<String, Error> {
    if !is_dns_label(service) {
        return Err(Error::InvalidSpec(format!(
            "service name {service:?} is not a DNS label ([a-z0-9-], at most 63 characters)"
        )));
    }
    let name = format!("{UNIT_PREFIX}{service}-v{release}-{slot}-{suffix}.service");
    crate::api::validate_unit_name(&name)
        .map_err(|e| Error::InvalidSpec(format!("unit name {name:?}: {e}")))?;
    Ok(name)
}

/// The glob of every unit of one release (what `Conflicts=` spreads over).
pub fn release_glob(service: &str, release: u64) -> String {
    format!("{UNIT_PREFIX}{service}-v{release}-*.service")
}

/// The container name of a unit: the unit name without `.service`.
pub fn container_name(unit: &str) -> &str {
    unit.strip_suffix(".service").unwrap_or(unit)
}

/// The `MachineMetadata` pairs the constraints ask for, as `(label, value)`, sorted and
/// deduplicated. A `!=` constraint is an error: fleet v1 has no negated metadata (§3.7).
pub fn metadata_requirements(constraints: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut pairs = Vec::new();
    for text in constraints {
        let constraint = Constraint::parse(text).map_err(Error::InvalidSpec)?;
        if !constraint.equal {
            return Err(Error::NegatedConstraint {
                constraint: text.clone(),
            });
        }
        let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"');
        if bad(&constraint.label) || bad(&constraint.value) || constraint.label.contains('=') {
            return Err(Error::InvalidSpec(format!(
                "constraint {text:?} cannot be written as fleet MachineMetadata \
                 (no spaces, quotes, or '=' in the label)"
            )));
        }
        pairs.push((constraint.label, constraint.value));
    }
    pairs.sort();
    pairs.dedup();
    Ok(pairs)
}

/// Whether a machine's metadata satisfies all the requirements (Paz's constraints all hold).
pub fn machine_matches(metadata: &BTreeMap<String, String>, pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .all(|(label, value)| metadata.get(label) == Some(value))
}

/// What [`render`] needs besides the spec.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    /// The instance.
    pub spec: &'a InstanceSpec,
    /// The unit name (from [`unit_name`]).
    pub name: &'a str,
    /// The owning cluster.
    pub cluster: &'a str,
    /// The docker binary on the machines.
    pub docker: &'a str,
    /// The host port the routed port is published on (`None` without an http port).
    pub host_port: Option<u16>,
    /// Spread the release with `Conflicts=` (only when there are machines enough).
    pub conflicts: bool,
    /// `docker stop -t` grace.
    pub stop_grace: Duration,
    /// The instance's name servers (`--dns`).
    pub dns: &'a [std::net::IpAddr],
}

/// Renders the unit file of one instance (see the module docs).
pub fn render(input: &RenderInput<'_>) -> Result<Vec<UnitOption>, Error> {
    let spec = input.spec;
    let metadata = metadata_requirements(&spec.constraints)?;
    let container = container_name(input.name);
    let grace = input.stop_grace.as_secs().max(1);
    let port = spec.routed_port();

    let mut run: Vec<String> = vec![
        input.docker.into(),
        "run".into(),
        "--rm".into(),
        "--name".into(),
        container.into(),
    ];
    if let (Some(host_port), Some(port)) = (input.host_port, port) {
        run.extend(["-p".into(), format!("{host_port}:{port}")]);
    }
    for server in input.dns {
        run.extend(["--dns".into(), server.to_string()]);
    }
    let mut labels = vec![
        ("paz.managed", "true".to_owned()),
        ("paz.cluster", input.cluster.to_owned()),
        ("paz.service", spec.service.clone()),
        ("paz.release", spec.release.to_string()),
        ("paz.instance", spec.slot.to_string()),
    ];
    if let Some(port) = port {
        labels.push(("paz.port", port.to_string()));
    }
    if let Some(epoch) = &spec.epoch {
        labels.push(("paz.epoch", epoch.clone()));
    }
    for (key, value) in labels {
        run.extend(["--label".into(), format!("{key}={value}")]);
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            return Err(Error::InvalidSpec(format!(
                "environment variable name {key:?} is empty or contains '='"
            )));
        }
        run.extend(["-e".into(), format!("{key}={value}")]);
    }
    for volume in &spec.volumes {
        let mut mount = format!("{}:{}", volume.source, volume.target);
        if volume.read_only {
            mount.push_str(":ro");
        }
        run.extend(["-v".into(), mount]);
    }
    if let Some(memory) = spec.resources.memory_mb {
        run.extend(["--memory".into(), format!("{memory}m")]);
    }
    if let Some(cpus) = spec.resources.cpus {
        run.extend(["--cpus".into(), cpus.to_string()]);
    }
    if spec.image.is_empty() || spec.image.starts_with('-') {
        return Err(Error::InvalidSpec(format!(
            "image {:?} is not an image reference",
            spec.image
        )));
    }
    run.push(spec.image.clone());
    run.extend(spec.command.iter().cloned());

    let docker = input.docker;
    let mut options = vec![
        UnitOption::new(
            "Unit",
            "Description",
            format!(
                "Paz {} release {} slot {} ({})",
                spec.service, spec.release, spec.slot, input.cluster
            ),
        ),
        UnitOption::new("Unit", "After", "docker.service"),
        UnitOption::new("Unit", "Requires", "docker.service"),
        UnitOption::new(
            "Service",
            "ExecStartPre",
            format!("-{}", join_command(&[docker, "rm", "-f", container])),
        ),
        UnitOption::new("Service", "ExecStart", join_command(&run)),
        UnitOption::new(
            "Service",
            "ExecStop",
            join_command(&[docker, "stop", "-t", &grace.to_string(), container]),
        ),
        // Paz replaces failed instances itself.
        UnitOption::new("Service", "Restart", "no"),
        // `docker run` exits 143/137 when its container is stopped.
        UnitOption::new("Service", "SuccessExitStatus", "137 143"),
        UnitOption::new("Service", "TimeoutStopSec", (grace + 10).to_string()),
        UnitOption::new(PAZ_SECTION, "Cluster", input.cluster),
        UnitOption::new(PAZ_SECTION, "Service", spec.service.as_str()),
        UnitOption::new(PAZ_SECTION, "Release", spec.release.to_string()),
        UnitOption::new(PAZ_SECTION, "Slot", spec.slot.to_string()),
    ];
    if let Some(port) = port {
        options.push(UnitOption::new(PAZ_SECTION, "Port", port.to_string()));
    }
    if let Some(host_port) = input.host_port.filter(|_| port.is_some()) {
        options.push(UnitOption::new(
            PAZ_SECTION,
            "HostPort",
            host_port.to_string(),
        ));
    }
    if let Some(epoch) = &spec.epoch {
        options.push(UnitOption::new(PAZ_SECTION, "Epoch", epoch.as_str()));
    }
    for (label, value) in metadata {
        options.push(UnitOption::new(
            "X-Fleet",
            "MachineMetadata",
            format!("{label}={value}"),
        ));
    }
    if input.conflicts {
        options.push(UnitOption::new(
            "X-Fleet",
            "Conflicts",
            release_glob(&spec.service, spec.release),
        ));
    }
    if let Some(bad) = options.iter().find(|o| o.value.contains(['\n', '\r'])) {
        return Err(Error::InvalidSpec(format!(
            "unit option {}={:?} cannot hold a line break",
            bad.name, bad.value
        )));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::service::{PortSpec, Protocol, Resources, VolumeSpec};

    fn spec() -> InstanceSpec {
        InstanceSpec {
            service: "web".into(),
            release: 3,
            slot: 1,
            image: "paz-demo:v1".into(),
            env: BTreeMap::new(),
            command: Vec::new(),
            ports: vec![PortSpec {
                port: 8080,
                protocol: Protocol::Http,
            }],
            volumes: Vec::new(),
            resources: Resources::default(),
            constraints: Vec::new(),
            replicas: 2,
            epoch: Some("e1".into()),
            health_port: None,
        }
    }

    fn input<'a>(spec: &'a InstanceSpec, name: &'a str) -> RenderInput<'a> {
        RenderInput {
            spec,
            name,
            cluster: "c1",
            docker: "/usr/bin/docker",
            host_port: Some(20001),
            conflicts: true,
            stop_grace: Duration::from_secs(7),
            dns: &[],
        }
    }

    fn option<'a>(options: &'a [UnitOption], section: &str, name: &str) -> Vec<&'a str> {
        options
            .iter()
            .filter(|o| o.section == section && o.name == name)
            .map(|o| o.value.as_str())
            .collect()
    }

    #[test]
    fn quoting_round_trips_adversarial_words() {
        let words = [
            "plain",
            "",
            "two words",
            "quote\"inside",
            "single'quote",
            "back\\slash",
            "trailing\\",
            "100%",
            "%n%%",
            "$HOME",
            "$$",
            "${X}",
            ";",
            "tab\there",
            "new\nline",
            "ünïcødé ✓",
            "K=a b \"c\" $d %e \\f",
        ];
        let line = join_command(&words);
        assert!(!line.contains('\n'), "{line}");
        let back = split_command(&line, "x.service").expect("parses");
        assert_eq!(back, words);
        // Every % and $ is doubled: systemd would expand a lone one.
        assert!(line.contains("100%%") && line.contains("$$HOME"), "{line}");
    }

    #[test]
    fn the_parser_follows_systemd() {
        let w = split_command(r#"/bin/echo 'a b' "c\"d" e\ f %n %p %i"#, "web@1.service").unwrap();
        assert_eq!(
            w,
            [
                "/bin/echo",
                "a b",
                "c\"d",
                "e f",
                "web@1.service",
                "web",
                "1"
            ]
        );
        assert!(split_command("echo $HOME", "x.service").is_err());
        assert!(split_command("echo \"open", "x.service").is_err());
        assert!(split_command("echo %z", "x.service").is_err());
        assert_eq!(
            split_command("  ", "x.service").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn names_are_valid_fleet_names() {
        let name = unit_name("web", 3, 1, "a1b2c3").unwrap();
        assert_eq!(name, "paz-web-v3-1-a1b2c3.service");
        assert!(crate::api::validate_unit_name(&name).is_ok());
        assert!(unit_name("Web_1", 1, 0, "aaaaaa").is_err());
        assert!(unit_name("-web", 1, 0, "aaaaaa").is_err());
        assert_eq!(container_name(&name), "paz-web-v3-1-a1b2c3");
    }

    #[test]
    fn renders_the_unit_and_reads_its_metadata_back() {
        let mut spec = spec();
        spec.env
            .insert("GREETING".into(), "hello \"world\" $USER 50%".into());
        spec.command = vec!["--flag".into(), "two words".into()];
        spec.volumes.push(VolumeSpec {
            source: "data".into(),
            target: "/data".into(),
            read_only: true,
        });
        spec.resources = Resources {
            memory_mb: Some(64),
            cpus: Some(0.5),
        };
        spec.constraints = vec!["zone==a".into(), "disk==ssd".into(), "zone==a".into()];
        let name = "paz-web-v3-1-a1b2c3.service";
        let dns = ["172.17.0.1".parse().unwrap()];
        let options = render(&RenderInput {
            dns: &dns,
            ..input(&spec, name)
        })
        .unwrap();

        assert_eq!(option(&options, "Unit", "After"), ["docker.service"]);
        assert_eq!(option(&options, "Unit", "Requires"), ["docker.service"]);
        assert_eq!(option(&options, "Service", "Restart"), ["no"]);
        assert_eq!(
            option(&options, "Service", "ExecStartPre"),
            ["-/usr/bin/docker rm -f paz-web-v3-1-a1b2c3"]
        );
        assert_eq!(
            option(&options, "Service", "ExecStop"),
            ["/usr/bin/docker stop -t 7 paz-web-v3-1-a1b2c3"]
        );
        let start = option(&options, "Service", "ExecStart")[0];
        let argv = split_command(start, name).unwrap();
        let expected: Vec<&str> = vec![
            "/usr/bin/docker",
            "run",
            "--rm",
            "--name",
            "paz-web-v3-1-a1b2c3",
            "-p",
            "20001:8080",
            "--dns",
            "172.17.0.1",
            "--label",
            "paz.managed=true",
            "--label",
            "paz.cluster=c1",
            "--label",
            "paz.service=web",
            "--label",
            "paz.release=3",
            "--label",
            "paz.instance=1",
            "--label",
            "paz.port=8080",
            "--label",
            "paz.epoch=e1",
            "-e",
            "GREETING=hello \"world\" $USER 50%",
            "-v",
            "data:/data:ro",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "paz-demo:v1",
            "--flag",
            "two words",
        ];
        assert_eq!(argv, expected);
        assert_eq!(
            option(&options, "X-Fleet", "MachineMetadata"),
            ["disk=ssd", "zone=a"]
        );
        assert_eq!(
            option(&options, "X-Fleet", "Conflicts"),
            ["paz-web-v3-*.service"]
        );
        assert_eq!(
            read_meta(&options),
            Some(PazMeta {
                cluster: "c1".into(),
                service: "web".into(),
                release: 3,
                slot: 1,
                port: Some(8080),
                host_port: Some(20001),
                epoch: Some("e1".into()),
            })
        );
    }

    #[test]
    fn no_conflicts_and_no_port_when_not_asked() {
        let mut spec = spec();
        spec.ports.clear();
        let name = "paz-web-v3-1-a1b2c3.service";
        let mut input = input(&spec, name);
        input.conflicts = false;
        input.host_port = None;
        let options = render(&input).unwrap();
        assert!(option(&options, "X-Fleet", "Conflicts").is_empty());
        assert!(!option(&options, "Service", "ExecStart")[0].contains("-p "));
        let meta = read_meta(&options).unwrap();
        assert_eq!((meta.port, meta.host_port), (None, None));
    }

    #[test]
    fn negated_and_unwritable_constraints_are_invalid() {
        let mut spec = spec();
        spec.constraints = vec!["zone!=a".into()];
        let err = render(&input(&spec, "paz-web-v3-1-a1b2c3.service")).unwrap_err();
        assert!(matches!(err, Error::NegatedConstraint { .. }), "{err}");
        assert!(err.to_string().contains("zone!=a"), "{err}");
        spec.constraints = vec!["zone==a b".into()];
        assert!(render(&input(&spec, "paz-web-v3-1-a1b2c3.service")).is_err());
        spec.constraints.clear();
        spec.env.insert("BAD".into(), "line\nbreak".into());
        // Newlines inside a quoted word are escaped (\n), so the unit file stays one line.
        let options = render(&input(&spec, "paz-web-v3-1-a1b2c3.service")).unwrap();
        let start = option(&options, "Service", "ExecStart")[0];
        assert!(
            split_command(start, "x.service")
                .unwrap()
                .contains(&"BAD=line\nbreak".to_owned())
        );
    }

    #[test]
    fn metadata_matching_is_and() {
        let pairs = metadata_requirements(&["zone==a".into(), "disk==ssd".into()]).unwrap();
        let mut m = BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
        assert!(!machine_matches(&m, &pairs));
        m.insert("disk".into(), "ssd".into());
        assert!(machine_matches(&m, &pairs));
        assert!(machine_matches(&m, &[]));
    }
}
