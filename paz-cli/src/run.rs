//! Carrying out the commands with the SDK client.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use futures_util::StreamExt as _;
use paz::{Client, ServiceStatus};
use paz_core::manifest::{Change, Manifest};
use serde_json::{Value, json};

use crate::args::{ApplyArgs, Cli, Command, LogsArgs, ServiceCommand};
use crate::failure::{self, EXIT_FAILURE, Reported, UsageError};
use crate::follow::follow;
use crate::output::{self, Output, Site};
use crate::spec;

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output::new(cli.output);
    if let Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "paz", &mut script);
        return out.text(&String::from_utf8(script)?);
    }
    let mut client = connect(&cli.server, cli.token)?;
    if let Some(path) = &cli.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| UsageError(format!("cannot read the CA file {}: {e}", path.display())))?;
        client = client
            .with_root_certificates(&pem)
            .with_context(|| format!("the CA file {}", path.display()))?;
    }
    match cli.command {
        Command::Service(command) => service(&client, command, &out).await,
        Command::Deploy(args) => {
            let deployment = client.deploy(&args.name, args.image).await?;
            follow(&client, deployment, &args.follow, &out).await
        }
        Command::Rollback(args) => {
            let deployment = client.rollback(&args.name, args.to).await?;
            follow(&client, deployment, &args.follow, &out).await
        }
        Command::Promote { name } => {
            let deployment = client.promote(&name).await?;
            match deployment.steps.last() {
                Some(step) if step.name.starts_with("promoted") => {
                    eprintln!("{}: {}", deployment.id, step.name);
                }
                _ => eprintln!("promoted {}", deployment.id),
            }
            out.deployment(&deployment)
        }
        Command::Abort { name } => {
            let deployment = client.abort(&name).await?;
            let serving = deployment
                .previous_release
                .map(|v| format!("; release v{v} keeps serving"))
                .unwrap_or_default();
            eprintln!("aborted {}{serving}", deployment.id);
            out.deployment(&deployment)
        }
        Command::Status {
            name: Some(name), ..
        } => out.status(&client.status(&name).await?),
        Command::Status {
            name: None,
            cluster: true,
        } => out.cluster(&client.cluster().await?),
        Command::Status {
            name: None,
            cluster: false,
        } => {
            out.statuses(&all_statuses(&client).await?)?;
            if let Ok(health) = client.health().await
                && let Some(proxy) = &health.proxy
                && !out.is_json()
            {
                out.proxy_summary(proxy)?;
            }
            // A replica of a cluster: which one leads, and the store's health.
            match client.cluster().await {
                Ok(cluster) if !out.is_json() && !cluster.replicas.is_empty() => {
                    out.cluster_summary(&cluster)
                }
                _ => Ok(()),
            }
        }
        Command::Logs(args) => logs(&client, &args, &out).await,
        Command::Events { service } => events(&client, service.as_deref(), &out).await,
        Command::Scale { name, instances } => {
            let service = client.scale(&name, instances).await?;
            eprintln!("scaled {name} to {instances} instances");
            out.service_at(&service, &site(&client).await)
        }
        Command::Releases { name } => out.releases(&client.releases(&name).await?),
        Command::History { name } => out.deployments(&client.deployments(&name).await?),
        Command::Hosts => out.hosts(&client.hosts().await?),
        Command::Apply(args) => apply(&client, &args, &out).await,
        Command::Secret(command) => crate::access::secret(&client, command, &out).await,
        Command::Token(command) => crate::access::token(&client, command, &out).await,
        Command::Hook(command) => crate::access::hook(&client, command, &out).await,
        Command::Deliveries { name } => out.deliveries(&client.deliveries(&name).await?),
        Command::Admin(command) => crate::admin::admin(&client, command, &out).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

/// Where the server serves services: its cluster domain and router port, as it reports them
/// (an older server that does not gets host names on the default domain, without a port).
async fn site(client: &Client) -> Site {
    client.health().await.map(Site::from).unwrap_or_default()
}

async fn service(client: &Client, command: ServiceCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            let service = client.create_service(&spec::create_spec(&args)).await?;
            eprintln!(
                "created service {} (release {}); see its first deployment with `paz status {}`",
                service.spec.name,
                service
                    .current_release
                    .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
                service.spec.name
            );
            out.service_at(&service, &site(client).await)
        }
        ServiceCommand::List => out.services(&client.services().await?),
        ServiceCommand::Show { name } => {
            let service = client.service(&name).await?;
            out.service_at(&service, &site(client).await)
        }
        ServiceCommand::Update(args) => {
            let patch = spec::update_patch(&args)?;
            let service = client.patch_service(&args.name, &patch, None).await?;
            eprintln!("updated service {}", service.spec.name);
            out.service_at(&service, &site(client).await)
        }
        ServiceCommand::Delete { name } => {
            client.delete_service(&name, None).await?;
            eprintln!("deleted service {name}");
            Ok(())
        }
    }
}

/// How many status requests `paz status` sends at once.
const STATUS_CONCURRENCY: usize = 8;

/// The status of every service, in the order of the service list (a service deleted in the
/// meantime is left out).
async fn all_statuses(client: &Client) -> anyhow::Result<Vec<ServiceStatus>> {
    let services = client.services().await?;
    let answers: Vec<_> = futures_util::stream::iter(&services)
        .map(|service| client.status(&service.spec.name))
        .buffered(STATUS_CONCURRENCY)
        .collect()
        .await;
    let mut statuses = Vec::with_capacity(answers.len());
    for (service, answer) in services.iter().zip(answers) {
        match answer {
            Ok(status) => statuses.push(status),
            Err(e) if e.code() == Some("SERVICE_NOT_FOUND") => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the status of {}", service.spec.name));
            }
        }
    }
    Ok(statuses)
}

/// `paz logs`: prints lines as they arrive until the server ends the stream (or, with
/// `--follow`, until interrupted or stdout is closed).
async fn logs(client: &Client, args: &LogsArgs, out: &Output) -> anyhow::Result<()> {
    let mut lines = client.logs(&args.name, args.follow, args.tail).await?;
    let mut printed = 0u64;
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => {
                if !out.log_line(&line)? {
                    return Ok(()); // stdout was closed (`paz logs -f web | head`)
                }
                printed += 1;
            }
            Err(e @ paz::Error::Decode { .. }) => {
                eprintln!("warning: skipped {}", failure::message_of(&e));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading the logs of {}", args.name));
            }
        }
    }
    if printed == 0 {
        eprintln!(
            "no output from the instances of {} (see `paz status {}`)",
            args.name, args.name
        );
    }
    Ok(())
}

/// How many times in a row `paz events` reconnects before it gives up.
const EVENT_RECONNECTS: u32 = 30;

/// `paz events`: follows the event stream, resuming after the last event seen when the
/// connection drops (at most [`EVENT_RECONNECTS`] times in a row, a second apart).
async fn events(client: &Client, service: Option<&str>, out: &Output) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    loop {
        match client.events_after(last_id.as_deref()).await {
            Ok(mut stream) => {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(event) => {
                            failures = 0;
                            last_id = Some(event.id.clone());
                            if service.is_some_and(|s| s != event.kind.service()) {
                                continue;
                            }
                            if !out.event_line(&event)? {
                                return Ok(()); // stdout was closed
                            }
                        }
                        Err(e @ paz::Error::EventsMissed { .. }) => {
                            eprintln!("warning: {}", failure::message_of(&e));
                        }
                        Err(e @ paz::Error::Decode { .. }) => {
                            eprintln!("warning: skipped {}", failure::message_of(&e));
                        }
                        Err(e) => {
                            eprintln!(
                                "warning: the event stream broke ({}); resuming",
                                failure::message_of(&e)
                            );
                            break;
                        }
                    }
                }
            }
            Err(e) if e.status().is_some() => return Err(e).context("following the events"),
            Err(e) => eprintln!(
                "warning: cannot reach the server ({}); retrying",
                failure::message_of(&e)
            ),
        }
        failures += 1;
        if failures > EVENT_RECONNECTS {
            anyhow::bail!("the event stream kept failing; giving up");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `paz apply`: plan against the current services, print the plan, then create and update
/// (each update guarded by the revision the plan saw).
async fn apply(client: &Client, args: &ApplyArgs, out: &Output) -> anyhow::Result<()> {
    let manifest = read_manifest(&args.file)?;
    let services = client.services().await?;
    let plan = manifest.plan(&services);
    if !out.is_json() {
        out.text(&output::plan_text(&plan))?;
    }
    let pending = plan
        .iter()
        .filter(|c| !matches!(c, Change::Unchanged { .. }))
        .count();
    if args.dry_run || pending == 0 {
        if out.is_json() {
            let changes: Vec<Value> = plan.iter().map(|c| output::change_json(c, None)).collect();
            out.json(&json!({"dry_run": args.dry_run, "changes": changes}))?;
        }
        if pending == 0 {
            eprintln!("nothing to apply: every service is as declared");
        } else {
            eprintln!("dry run: {pending} change(s) not applied");
        }
        return Ok(());
    }
    let mut changes = Vec::new();
    let mut failed = 0;
    for change in &plan {
        let outcome = match change {
            Change::Create { spec } => Some((
                spec.name.as_str(),
                "created",
                client.create_service(spec).await,
            )),
            Change::Update { revision, spec, .. } => Some((
                spec.name.as_str(),
                "updated",
                client
                    .update_service(&spec.name, spec, Some(*revision))
                    .await,
            )),
            Change::Unchanged { .. } => None,
        };
        let result = outcome.map(|(name, done, result)| match result {
            Ok(service) => {
                eprintln!("{done} {name}");
                json!({"ok": true, "service": service})
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {name}: {}", failure::message_of(&e));
                if let paz::Error::Api { details, .. } = &e {
                    failure::print_details(details);
                }
                if e.code() == Some("REVISION_MISMATCH") {
                    eprintln!("hint: {name} changed since the plan was made; run `paz apply` again to see the new plan");
                }
                json!({"ok": false, "error": error_json(&e)})
            }
        });
        changes.push(output::change_json(change, result));
    }
    if out.is_json() {
        out.json(&json!({"dry_run": false, "changes": changes}))?;
    }
    if failed > 0 {
        eprintln!("error: {failed} of {pending} change(s) failed");
        return Err(Reported(EXIT_FAILURE).into());
    }
    Ok(())
}

fn error_json(error: &paz::Error) -> Value {
    match error {
        paz::Error::Api {
            status,
            code,
            message,
            details,
        } => json!({"status": status, "code": code, "message": message, "details": details}),
        other => json!({"message": failure::message_of(other)}),
    }
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError(format!("cannot read the manifest from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read the manifest {shown}: {e}")))?
    };
    Manifest::parse(&text).map_err(|e| {
        if let paz_core::Error::Validation(errors) = &e {
            eprintln!("error: the manifest {shown} is invalid:");
            failure::print_details(&errors.0);
            Reported(failure::EXIT_USAGE).into()
        } else {
            anyhow::Error::new(UsageError(format!("the manifest {shown} is invalid: {e}")))
        }
    })
}

/// The client for `--server`, with `--token`, or else the admin token a local server wrote to
/// `<PAZ_DATA_DIR or ./paz-data>/admin-token` (used only for a server on this machine, so the
/// admin token never travels elsewhere).
fn connect(server: &str, token: Option<String>) -> anyhow::Result<Client> {
    let client = Client::new(server, token.clone())?;
    if token.is_some() || !is_loopback(client.base_url()) {
        return Ok(client);
    }
    let data_dir = std::env::var_os("PAZ_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("paz-data"), PathBuf::from);
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(client
            .with_token(Some(text.trim().to_owned()))
            .with_context(|| format!("the token in {}", path.display()))?),
        Ok(_) => Ok(client),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(client),
        Err(e) => {
            eprintln!(
                "warning: cannot read the token file {}: {e}; continuing without a token",
                path.display()
            );
            Ok(client)
        }
    }
}

/// Whether a URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognized() {
        for local in [
            "http://127.0.0.1:7700/",
            "http://localhost:7700/",
            "http://[::1]:7700/",
            "http://127.1.2.3/",
            "https://paz.localhost/",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "http://10.0.0.1:7700/",
            "https://paz.example.com/",
            "http://[2001:db8::1]:7700/",
            "http://localhost.example.com/",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn bad_manifests_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let missing = read_manifest(&dir.join("missing.toml")).unwrap_err();
        assert!(missing.downcast_ref::<UsageError>().is_some());
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "[services.web]\nimage = \"demo\"\nports = [{ port = 0 }]\n",
        )
        .unwrap();
        let err = read_manifest(&bad).unwrap_err();
        assert!(matches!(err.downcast_ref::<Reported>(), Some(Reported(2))));
    }
}
