//! Rendering data on stdout: tables for people, JSON for programs.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use comfy_table::{Cell, Table, presets};
use jiff::Timestamp;
use paz::ServiceStatus;
use paz_core::manifest::Change;
use paz_core::scheduler::LogLine;
use paz_core::{
    Deployment, DeploymentStatus, DeploymentStep, Host, HostStatus, Instance, InstanceState,
    PortSpec, Protocol, Release, Service, ServiceSpec, StepStatus, Strategy, Trigger, TriggerKind,
};
use serde_json::{Value, json};

use crate::args::OutputFormat;

/// Where and how data is printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Table or JSON.
    pub format: OutputFormat,
    /// Whether stdout is a terminal (tables get borders).
    pub tty: bool,
}

impl Output {
    /// Output in `format` to the process's stdout.
    pub fn new(format: OutputFormat) -> Self {
        Output {
            format,
            tty: std::io::stdout().is_terminal(),
        }
    }

    /// Whether data is printed as JSON.
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Writes text (and a final newline) to stdout. A closed pipe (`paz … | head`) is not an
    /// error.
    pub fn text(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let result = stdout.write_all(text.as_bytes()).and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                stdout.write_all(b"\n")
            }
        });
        match result.and_then(|()| stdout.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Writes a value as pretty JSON.
    pub fn json<T: serde::Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        self.text(&serde_json::to_string_pretty(value)?)
    }

    /// Prints services (JSON array or table).
    pub fn services(&self, services: &[Service]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(services);
        }
        if services.is_empty() {
            eprintln!("no services yet; create one with `paz service create NAME --image IMAGE`");
            return Ok(());
        }
        self.text(&services_table(services, self.tty, Timestamp::now()))
    }

    /// Prints one service (JSON or a field/value table).
    pub fn service(&self, service: &Service) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(service);
        }
        self.text(&service_detail(service, self.tty))
    }

    /// Prints one deployment (JSON or a field/value table).
    pub fn deployment(&self, deployment: &Deployment) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(deployment);
        }
        self.text(&deployment_detail(deployment, self.tty))
    }

    /// Prints the releases of a service.
    pub fn releases(&self, releases: &[Release]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(releases);
        }
        let now = Timestamp::now();
        let mut table = self.table(&["VERSION", "IMAGE", "INSTANCES", "TRIGGER", "CREATED"]);
        for release in releases {
            table.add_row(vec![
                format!("v{}", release.version),
                release.spec.image.clone(),
                release.spec.instances.to_string(),
                trigger_text(&release.trigger),
                ago(release.created_at, now),
            ]);
        }
        self.text(&render(table, self.tty))
    }

    /// Prints the deploy history of a service.
    pub fn deployments(&self, deployments: &[Deployment]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(deployments);
        }
        self.text(&deployments_table(deployments, self.tty, Timestamp::now()))
    }

    /// Prints the hosts.
    pub fn hosts(&self, hosts: &[Host]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(hosts);
        }
        let mut table = self.table(&["ID", "NAME", "ADDRESS", "STATUS", "LABELS", "VERSION"]);
        for host in hosts {
            let labels: Vec<String> = host
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            table.add_row(vec![
                host.id.clone(),
                host.name.clone(),
                host.address.clone(),
                host_status_text(host.status).to_owned(),
                or_dash(labels.join(",")),
                host.version.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        self.text(&render(table, self.tty))
    }

    /// Prints the status of every service: one row each.
    pub fn statuses(&self, statuses: &[ServiceStatus]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(statuses);
        }
        if statuses.is_empty() {
            eprintln!("no services yet; create one with `paz service create NAME --image IMAGE`");
            return Ok(());
        }
        self.text(&status_table(statuses, self.tty))
    }

    /// Prints the status of one service: summary, latest deployment, instances, problems.
    pub fn status(&self, status: &ServiceStatus) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(status);
        }
        self.text(&status_detail(
            status,
            self.tty,
            colour_for(self.tty),
            Timestamp::now(),
        ))
    }

    /// Prints one log line as it arrives: `<instance> | <line>`, or one JSON object per line.
    /// Returns `false` once stdout is closed (`paz logs -f web | head`).
    pub fn log_line(&self, line: &LogLine) -> anyhow::Result<bool> {
        let mut text = if self.is_json() {
            serde_json::to_string(line)?
        } else {
            log_line_text(line)
        };
        text.push('\n');
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn table(&self, header: &[&str]) -> Table {
        new_table(header, self.tty)
    }
}

/// Whether to colour text for a terminal: only on a terminal, and not when `NO_COLOR` is
/// set (<https://no-color.org>).
pub fn colour_for(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn new_table(header: &[&str], tty: bool) -> Table {
    let mut table = Table::new();
    table.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::NOTHING
    });
    table.set_header(header.iter().map(Cell::new));
    table
}

/// Renders a table; without borders, columns are separated by two spaces and lines carry no
/// leading or trailing blanks (easy to `awk`).
fn render(mut table: Table, tty: bool) -> String {
    if tty {
        return table.to_string();
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn services_table(services: &[Service], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &["NAME", "IMAGE", "INSTANCES", "PUBLIC", "RELEASE", "UPDATED"],
        tty,
    );
    for service in services {
        table.add_row(vec![
            service.spec.name.clone(),
            service.spec.image.clone(),
            service.spec.instances.to_string(),
            if service.spec.public { "yes" } else { "no" }.to_owned(),
            release_text(service.current_release),
            ago(service.updated_at, now),
        ]);
    }
    render(table, tty)
}

fn deployments_table(deployments: &[Deployment], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &["ID", "RELEASE", "STATUS", "TRIGGER", "CREATED", "DURATION"],
        tty,
    );
    for deployment in deployments {
        table.add_row(vec![
            deployment.id.clone(),
            release_text(Some(deployment.release)),
            deployment.status.to_string(),
            trigger_text(&deployment.trigger),
            ago(deployment.created_at, now),
            deployment_duration(deployment, now),
        ]);
    }
    render(table, tty)
}

fn detail_table(rows: Vec<(&str, String)>, tty: bool) -> String {
    let mut table = Table::new();
    table.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::NOTHING
    });
    for (key, value) in rows {
        table.add_row(vec![key.to_owned(), value]);
    }
    render(table, tty)
}

fn service_detail(service: &Service, tty: bool) -> String {
    let spec = &service.spec;
    let mut rows = vec![
        ("name", spec.name.clone()),
        ("image", spec.image.clone()),
        ("instances", spec.instances.to_string()),
        ("ports", or_dash(ports_text(&spec.ports))),
        ("public", if spec.public { "yes" } else { "no" }.to_owned()),
        ("domains", or_dash(spec.domains.join(", "))),
        (
            "env",
            or_dash(
                spec.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ),
        ("command", or_dash(shell_words(&spec.command))),
        (
            "volumes",
            or_dash(
                spec.volumes
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
            ),
        ),
        (
            "health",
            match &spec.health {
                None => "port accepts connections".to_owned(),
                Some(h) => {
                    let target = match h.kind {
                        paz_core::HealthKind::Http => format!("GET {}", h.path),
                        paz_core::HealthKind::Tcp => "tcp connect".to_owned(),
                    };
                    let port = h.port.map(|p| format!(" on port {p}")).unwrap_or_default();
                    format!(
                        "{target}{port} every {}, timeout {}, {} retries",
                        h.interval, h.timeout, h.retries
                    )
                }
            },
        ),
    ];
    let mut limits = Vec::new();
    if let Some(memory) = spec.resources.memory_mb {
        limits.push(format!("{memory} MiB"));
    }
    if let Some(cpus) = spec.resources.cpus {
        limits.push(format!("{cpus} cpus"));
    }
    rows.push(("resources", or_dash(limits.join(", "))));
    let mut placement = spec.placement.constraints.clone();
    if let Some(spread) = &spec.placement.spread {
        placement.push(format!("spread over {spread}"));
    }
    rows.push(("placement", or_dash(placement.join(", "))));
    let deploy = &spec.deploy;
    let mut deploy_text = format!(
        "{}, max surge {}, drain {}, health timeout {}",
        strategy_text(deploy.strategy),
        deploy.max_surge,
        deploy.drain_timeout,
        deploy.health_timeout
    );
    if deploy.strategy == Strategy::Canary {
        let steps: Vec<String> = deploy
            .canary_steps
            .iter()
            .map(|s| format!("{s}%"))
            .collect();
        let _ = write!(deploy_text, ", steps {}", steps.join(" "));
    }
    rows.push(("deploy", deploy_text));
    rows.push((
        "release",
        format!(
            "{} (latest v{})",
            release_text(service.current_release),
            service.latest_release
        ),
    ));
    rows.push(("created", timestamp_text(service.created_at)));
    rows.push(("updated", timestamp_text(service.updated_at)));
    rows.push(("revision", service.revision.to_string()));
    detail_table(rows, tty)
}

fn deployment_detail(deployment: &Deployment, tty: bool) -> String {
    let mut rows = vec![
        ("id", deployment.id.clone()),
        ("service", deployment.service.clone()),
        (
            "release",
            match deployment.previous_release {
                Some(previous) => format!("v{} (from v{previous})", deployment.release),
                None => format!("v{}", deployment.release),
            },
        ),
        ("strategy", strategy_text(deployment.strategy).to_owned()),
        ("status", deployment.status.to_string()),
        ("trigger", trigger_text(&deployment.trigger)),
        ("created", timestamp_text(deployment.created_at)),
    ];
    if deployment.started_at.is_some() {
        rows.push((
            "duration",
            deployment_duration(deployment, Timestamp::now()),
        ));
    }
    if let Some(error) = &deployment.error {
        rows.push(("error", error.clone()));
    }
    if !deployment.steps.is_empty() {
        let steps: Vec<String> = deployment
            .steps
            .iter()
            .map(|step| step_text(step, false))
            .collect();
        rows.push(("steps", steps.join("\n")));
    }
    detail_table(rows, tty)
}

/// One step of a deployment: `✓ start v2 slot 0: 3f2a9b1c2d3e`, with long container ids
/// shortened and the step's message after a colon. `colour` paints the mark.
pub fn step_text(step: &DeploymentStep, colour: bool) -> String {
    let mark = step_mark(step.status);
    let mark = match (colour, step.status) {
        (true, StepStatus::Succeeded) => format!("\x1b[32m{mark}\x1b[0m"),
        (true, StepStatus::Failed) => format!("\x1b[31m{mark}\x1b[0m"),
        _ => mark.to_owned(),
    };
    let mut line = format!("{mark} {}", shorten_ids(&step.name));
    if let Some(message) = &step.message {
        let _ = write!(line, ": {}", shorten_ids(message));
    }
    line
}

/// The mark of a step's state.
fn step_mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "·",
        StepStatus::Running => "…",
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Skipped => "-",
    }
}

/// How many characters of a container id are shown (as `docker ps` does).
const SHORT_ID: usize = 12;

/// A long hex id (a container id) cut to its first 12 characters; other ids unchanged.
pub fn short_id(id: &str) -> &str {
    if id.len() > SHORT_ID && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..SHORT_ID]
    } else {
        id
    }
}

/// The text with every hex word of 32 characters or more (a container id) cut to its
/// short form.
pub fn shorten_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if word.len() >= 32 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str(&word[..SHORT_ID]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One log line for people: `<instance short id> | <line>`.
pub fn log_line_text(line: &LogLine) -> String {
    format!("{} | {}", short_id(&line.instance), line.line)
}

/// How many instances of the release the service should run are healthy.
fn healthy_count(status: &ServiceStatus) -> usize {
    status
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Healthy)
        .filter(|i| {
            status
                .service
                .current_release
                .is_none_or(|release| i.release == release)
        })
        .count()
}

fn status_table(statuses: &[ServiceStatus], tty: bool) -> String {
    let mut table = new_table(
        &[
            "NAME",
            "RELEASE",
            "INSTANCES",
            "LAST DEPLOYMENT",
            "PROBLEMS",
        ],
        tty,
    );
    for status in statuses {
        table.add_row(vec![
            status.service.spec.name.clone(),
            release_text(status.service.current_release),
            format!(
                "{}/{}",
                healthy_count(status),
                status.service.spec.instances
            ),
            status
                .deployment
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| format!("{} {}", d.id, d.status)),
            status.problems.len().to_string(),
        ]);
    }
    render(table, tty)
}

fn status_detail(status: &ServiceStatus, tty: bool, colour: bool, now: Timestamp) -> String {
    let service = &status.service;
    let spec = &service.spec;
    let summary = detail_table(
        vec![
            ("name", spec.name.clone()),
            ("image", spec.image.clone()),
            (
                "release",
                format!(
                    "{} (latest v{})",
                    release_text(service.current_release),
                    service.latest_release
                ),
            ),
            (
                "instances",
                format!("{}/{} healthy", healthy_count(status), spec.instances),
            ),
            ("updated", ago(service.updated_at, now)),
        ],
        tty,
    );
    let mut text = summary;
    text.push('\n');
    match &status.deployment {
        None => text.push_str("no deployment yet\n"),
        Some(deployment) => {
            let _ = writeln!(text, "deployment {}", deployment_summary(deployment, now));
            if let Some(error) = &deployment.error {
                let _ = writeln!(text, "  error: {error}");
            }
            for step in &deployment.steps {
                let _ = writeln!(text, "  {}", step_text(step, colour));
            }
        }
    }
    text.push('\n');
    if status.instances.is_empty() {
        text.push_str("no instances\n");
    } else {
        text.push_str(&instances_table(&status.instances, tty));
    }
    text.push('\n');
    if status.problems.is_empty() {
        text.push_str("no problems\n");
    } else {
        text.push_str("problems:\n");
        for problem in &status.problems {
            let _ = writeln!(text, "  - {}", shorten_ids(problem));
        }
    }
    text
}

/// `web-4: v2 (from v1), rolling, succeeded in 3.2s, 5m ago`.
fn deployment_summary(deployment: &Deployment, now: Timestamp) -> String {
    let mut text = format!("{}: v{}", deployment.id, deployment.release);
    if let Some(previous) = deployment.previous_release {
        let _ = write!(text, " (from v{previous})");
    }
    let _ = write!(
        text,
        ", {}, {}",
        strategy_text(deployment.strategy),
        deployment.status
    );
    match deployment.status {
        DeploymentStatus::Pending => {}
        DeploymentStatus::Running => {
            let _ = write!(text, " for {}", deployment_took(deployment, now));
        }
        _ => {
            let _ = write!(text, " in {}", deployment_took(deployment, now));
        }
    }
    let _ = write!(text, ", {}", ago(deployment.created_at, now));
    text
}

/// How long a deployment took (or has been going on): from its start (or creation) to its
/// end (or `now`).
pub fn deployment_took(deployment: &Deployment, now: Timestamp) -> String {
    let start = deployment.started_at.unwrap_or(deployment.created_at);
    let end = deployment.finished_at.unwrap_or(now);
    duration_text(end.duration_since(start).as_millis().max(0) as u64)
}

fn instances_table(instances: &[Instance], tty: bool) -> String {
    let mut table = new_table(
        &["ID", "RELEASE", "SLOT", "STATE", "ADDRESS", "MESSAGE"],
        tty,
    );
    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by(|a, b| (b.release, a.slot, &a.id).cmp(&(a.release, b.slot, &b.id)));
    for instance in sorted {
        table.add_row(vec![
            short_id(&instance.id).to_owned(),
            release_text(Some(instance.release)),
            instance.slot.to_string(),
            instance_state_text(instance.state).to_owned(),
            instance.address.clone().unwrap_or_else(|| "-".into()),
            or_dash(
                instance
                    .message
                    .as_deref()
                    .map(shorten_ids)
                    .unwrap_or_default(),
            ),
        ]);
    }
    render(table, tty)
}

fn instance_state_text(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Starting => "starting",
        InstanceState::Healthy => "healthy",
        InstanceState::Draining => "draining",
        InstanceState::Stopped => "stopped",
        InstanceState::Failed => "failed",
    }
}

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
fn spec_summary(spec: &ServiceSpec) -> Vec<String> {
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

fn ports_text(ports: &[PortSpec]) -> String {
    ports
        .iter()
        .map(|p| {
            let protocol = match p.protocol {
                Protocol::Http => "http",
                Protocol::Tcp => "tcp",
            };
            format!("{}/{protocol}", p.port)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn or_dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

fn release_text(release: Option<u64>) -> String {
    release.map_or_else(|| "-".into(), |v| format!("v{v}"))
}

/// The name of a strategy as in the API (`blue-green`).
pub fn strategy_text(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Rolling => "rolling",
        Strategy::Recreate => "recreate",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary => "canary",
    }
}

fn host_status_text(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Ready => "ready",
        HostStatus::Drained => "drained",
        HostStatus::Down => "down",
    }
}

fn trigger_text(trigger: &Trigger) -> String {
    let kind = match trigger.kind {
        TriggerKind::Create => "create",
        TriggerKind::Update => "update",
        TriggerKind::Deploy => "deploy",
        TriggerKind::Rollback => "rollback",
        TriggerKind::Apply => "apply",
        TriggerKind::Webhook => "webhook",
    };
    match &trigger.by {
        Some(by) => format!("{kind} by {by}"),
        None => kind.to_owned(),
    }
}

fn timestamp_text(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(at: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(at).as_secs();
    if secs < 0 {
        return "just now".into();
    }
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// How long a deployment ran (so far, while it runs); `-` before it started.
pub fn deployment_duration(deployment: &Deployment, now: Timestamp) -> String {
    let Some(started) = deployment.started_at else {
        return "-".into();
    };
    let end = match (deployment.finished_at, deployment.status) {
        (Some(end), _) => end,
        (None, DeploymentStatus::Pending | DeploymentStatus::Running) => now,
        (None, _) => return "-".into(),
    };
    duration_text(end.duration_since(started).as_millis().max(0) as u64)
}

/// `850ms`, `4.2s`, `1m05s`, `2h03m`.
pub fn duration_text(millis: u64) -> String {
    match millis {
        0..1_000 => format!("{millis}ms"),
        1_000..60_000 => format!("{:.1}s", millis as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", millis / 60_000, millis % 60_000 / 1000),
        _ => format!("{}h{:02}m", millis / 3_600_000, millis % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::manifest::Manifest;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn service(name: &str, release: Option<u64>) -> Service {
        let mut spec = ServiceSpec::new(name, "demo:v1");
        spec.instances = 2;
        Service {
            spec,
            current_release: release,
            latest_release: release.unwrap_or(0),
            latest_deployment: 1,
            created_at: at(1_000),
            updated_at: at(1_000),
            revision: 4,
        }
    }

    #[test]
    fn plain_tables_have_no_borders_or_trailing_blanks() {
        let text = services_table(
            &[service("web", Some(3)), service("worker", None)],
            false,
            at(1_090),
        );
        assert_eq!(
            text,
            "NAME    IMAGE    INSTANCES  PUBLIC  RELEASE  UPDATED\n\
             web     demo:v1  2          no      v3       1m ago\n\
             worker  demo:v1  2          no      -        1m ago\n"
        );
        assert!(services_table(&[service("web", Some(1))], true, at(0)).contains('│'));
    }

    #[test]
    fn durations_and_ages_read_well() {
        assert_eq!(duration_text(850), "850ms");
        assert_eq!(duration_text(4_200), "4.2s");
        assert_eq!(duration_text(65_000), "1m05s");
        assert_eq!(duration_text(7_380_000), "2h03m");
        assert_eq!(ago(at(0), at(59)), "59s ago");
        assert_eq!(ago(at(0), at(7_200)), "2h ago");
        assert_eq!(ago(at(10), at(0)), "just now");
    }

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

    #[test]
    fn commands_are_quoted_like_a_shell() {
        assert_eq!(
            shell_words(&[
                "demo".into(),
                "--greeting".into(),
                "hello world".into(),
                "it's".into()
            ]),
            r#"demo --greeting 'hello world' 'it'\''s'"#
        );
    }
    const ID: &str = "3f2a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";

    fn instance(id: &str, release: u64, slot: u32, state: InstanceState) -> Instance {
        Instance {
            id: id.into(),
            service: "web".into(),
            release,
            slot,
            host: "h1".into(),
            address: Some(format!("172.17.0.{}:8080", slot + 2)),
            state,
            message: None,
            epoch: None,
        }
    }

    fn deployment(status: DeploymentStatus) -> Deployment {
        serde_json::from_value(json!({
            "id": "web-4", "service": "web", "sequence": 4, "release": 3,
            "previous_release": 2, "strategy": "rolling", "status": status,
            "trigger": {"kind": "deploy"}, "created_at": "1970-01-01T00:16:40Z",
            "started_at": "1970-01-01T00:16:41Z", "finished_at": "1970-01-01T00:16:44.200Z",
            "steps": [
                {"name": "deploying v3 (rolling)", "status": "succeeded"},
                {"name": format!("start v3 slot 0: {ID}"), "status": "succeeded"},
                {"name": "failed", "status": "failed", "message": "v3 slot 1 did not become healthy"},
            ],
            "error": "v3 slot 1 did not become healthy",
        }))
        .unwrap()
    }

    fn status(name: &str) -> ServiceStatus {
        ServiceStatus {
            service: service(name, Some(3)),
            deployment: Some(deployment(DeploymentStatus::Failed)),
            instances: vec![
                instance("b1", 2, 0, InstanceState::Healthy),
                instance(ID, 3, 0, InstanceState::Healthy),
                instance("c2", 3, 1, InstanceState::Failed),
            ],
            problems: vec!["v3 slot 1 keeps crashing".into()],
        }
    }

    #[test]
    fn the_status_overview_has_one_row_per_service() {
        let mut idle = status("worker");
        idle.service.current_release = None;
        idle.deployment = None;
        idle.instances.clear();
        idle.problems.clear();
        assert_eq!(
            status_table(&[status("web"), idle], false),
            "NAME    RELEASE  INSTANCES  LAST DEPLOYMENT  PROBLEMS\n\
             web     v3       1/2        web-4 failed     1\n\
             worker  -        0/2        -                0\n"
        );
    }

    #[test]
    fn the_status_of_one_service_shows_deployment_instances_and_problems() {
        let mut web = status("web");
        web.instances[2].message = Some("exited with code 1".into());
        let text = status_detail(&web, false, false, at(1_090));
        assert_eq!(
            text,
            "name       web\n\
             image      demo:v1\n\
             release    v3 (latest v3)\n\
             instances  1/2 healthy\n\
             updated    1m ago\n\
             \n\
             deployment web-4: v3 (from v2), rolling, failed in 3.2s, 1m ago\n\
             \x20 error: v3 slot 1 did not become healthy\n\
             \x20 ✓ deploying v3 (rolling)\n\
             \x20 ✓ start v3 slot 0: 3f2a9b1c2d3e\n\
             \x20 ✗ failed: v3 slot 1 did not become healthy\n\
             \n\
             ID            RELEASE  SLOT  STATE    ADDRESS          MESSAGE\n\
             3f2a9b1c2d3e  v3       0     healthy  172.17.0.2:8080  -\n\
             c2            v3       1     failed   172.17.0.3:8080  exited with code 1\n\
             b1            v2       0     healthy  172.17.0.2:8080  -\n\
             \n\
             problems:\n\
             \x20 - v3 slot 1 keeps crashing\n"
        );
        let mut quiet = status("web");
        quiet.deployment = None;
        quiet.instances.clear();
        quiet.problems.clear();
        let text = status_detail(&quiet, false, false, at(1_090));
        assert!(
            text.ends_with("\nno deployment yet\n\nno instances\n\nno problems\n"),
            "{text}"
        );
    }

    #[test]
    fn running_deployments_show_how_long_so_far() {
        let mut running = deployment(DeploymentStatus::Running);
        running.finished_at = None;
        assert_eq!(
            deployment_summary(&running, at(1_006)),
            "web-4: v3 (from v2), rolling, running for 5.0s, 6s ago"
        );
    }

    #[test]
    fn container_ids_are_shortened() {
        assert_eq!(short_id(ID), "3f2a9b1c2d3e");
        assert_eq!(short_id("web-v1-0"), "web-v1-0");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(
            shorten_ids(&format!("drain {ID}, then start {ID}.")),
            "drain 3f2a9b1c2d3e, then start 3f2a9b1c2d3e."
        );
        // Short hex words and words that are not hex stay as they are.
        assert_eq!(
            shorten_ids("deadbeef v2 café-0123456789abcdef0123456789abcdefg"),
            "deadbeef v2 café-0123456789abcdef0123456789abcdefg"
        );
        let line = LogLine {
            instance: ID.into(),
            stream: paz_core::scheduler::LogStreamKind::Stderr,
            line: "panic: boom".into(),
        };
        assert_eq!(log_line_text(&line), "3f2a9b1c2d3e | panic: boom");
    }

    #[test]
    fn deployment_details_list_steps_with_marks() {
        let text = deployment_detail(&deployment(DeploymentStatus::Failed), false);
        assert!(
            text.contains("steps     ✓ deploying v3 (rolling)\n"),
            "{text}"
        );
        assert!(
            text.contains("✗ failed: v3 slot 1 did not become healthy"),
            "{text}"
        );
    }
}
