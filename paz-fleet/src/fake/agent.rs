//! The fake's agent when it really runs units (`run_units: true`): `ExecStartPre`,
//! `ExecStart` and `ExecStop` as child processes, systemd states from their lives.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::api::UnitOption;
use crate::unit::split_command;

use super::Shared;
use super::engine::{StartOrder, StopMode};

/// How long one `ExecStartPre`/`ExecStop` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// systemd's default `TimeoutStopSec`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// A command line of `[Service]`: its argv, and whether a failure is ignored (`-` prefix).
fn parse_exec(line: &str, unit: &str) -> Result<(bool, Vec<String>), String> {
    let mut rest = line.trim_start();
    let mut ignore = false;
    // systemd's prefixes: `-` ignores failure; `@`, `+`, `!`, `:` change how it runs.
    while let Some(c) = rest.chars().next().filter(|c| "-@+!:".contains(*c)) {
        ignore |= c == '-';
        rest = &rest[1..];
    }
    let argv = split_command(rest, unit)?;
    if argv.is_empty() {
        return Err(format!("empty command line {line:?}"));
    }
    Ok((ignore, argv))
}

fn values<'a>(options: &'a [UnitOption], name: &str) -> Vec<&'a str> {
    options
        .iter()
        .filter(|o| o.section == "Service" && o.name == name)
        .map(|o| o.value.as_str())
        .collect()
}

/// The container a `docker run … --name X …` command starts: `(docker, X)`.
fn docker_container(argv: &[String]) -> Option<(String, String)> {
    let docker = argv.first()?;
    if !docker.ends_with("docker") || argv.get(1).map(String::as_str) != Some("run") {
        return None;
    }
    let mut words = argv.iter().skip(2);
    while let Some(word) = words.next() {
        if word == "--name" {
            return Some((docker.clone(), words.next()?.clone()));
        }
        if let Some(name) = word.strip_prefix("--name=") {
            return Some((docker.clone(), name.to_owned()));
        }
    }
    None
}

fn command(argv: &[String]) -> Command {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command to its end; whether it succeeded.
async fn run_to_end(argv: &[String]) -> bool {
    let Ok(mut child) = command(argv).spawn() else {
        return false;
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => {
            let _ = child.start_kill();
            false
        }
    }
}

/// `docker run` as it acts on its machine: the fake's machines share one engine, so a
/// published port (`-p <host port>:<port>`) binds the machine's own `primaryIP`, as `-p`
/// on a real machine binds that machine's addresses only. A lost machine's ports then stop
/// answering, and a unit fleet moved answers at its new machine only.
fn on_machine(mut argv: Vec<String>, machine_ip: &str) -> Vec<String> {
    if machine_ip.is_empty() || docker_container(&argv).is_none() {
        return argv;
    }
    let mut i = 0;
    while i + 1 < argv.len() {
        if argv[i] == "-p" && argv[i + 1].matches(':').count() == 1 {
            argv[i + 1] = format!("{machine_ip}:{}", argv[i + 1]);
        }
        i += 1;
    }
    argv
}

/// Removes a container the way a dead machine loses it.
pub(crate) async fn remove_container(docker: &str, name: &str) {
    let argv = [docker.to_owned(), "rm".into(), "-f".into(), name.to_owned()];
    run_to_end(&argv).await;
}

/// Runs one started unit until it exits or is stopped.
pub(crate) async fn run_unit(shared: Arc<Shared>, order: StartOrder) {
    let StartOrder {
        key,
        machine_ip,
        generation,
        options,
        mut stop,
    } = order;
    let unit = key.0.clone();
    let set = |active: &str, sub: &str| shared.set_systemd(&key, generation, active, sub);

    for line in values(&options, "ExecStartPre") {
        let (ignore, argv) = match parse_exec(line, &unit) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(unit, error, "fake fleet agent: bad ExecStartPre");
                set("failed", "failed");
                return;
            }
        };
        if !run_to_end(&argv).await && !ignore {
            set("failed", "failed");
            return;
        }
    }
    if let Ok(mode) = stop.try_recv() {
        set("inactive", "dead");
        if let StopMode::Kill(ack) = mode {
            let _ = ack.send(());
        }
        return;
    }
    // A `Type=simple` service has exactly one ExecStart (the last one counts).
    let Some(line) = values(&options, "ExecStart").last().copied() else {
        set("failed", "failed");
        return;
    };
    let argv = match parse_exec(line, &unit) {
        Ok((_, argv)) => on_machine(argv, &machine_ip),
        Err(error) => {
            tracing::warn!(unit, error, "fake fleet agent: bad ExecStart");
            set("failed", "failed");
            return;
        }
    };
    let mut child: Child = match command(&argv).spawn() {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(unit, %error, "fake fleet agent: cannot spawn ExecStart");
            set("failed", "failed");
            return;
        }
    };
    let container = docker_container(&argv);
    if let Some(container) = &container {
        shared.lock().containers.insert(container.clone());
    }
    set("active", "running");
    let stop_timeout = values(&options, "TimeoutStopSec")
        .last()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs);
    let success_codes: Vec<i32> = values(&options, "SuccessExitStatus")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .filter_map(|c| c.parse().ok())
        .collect();

    tokio::select! {
        status = child.wait() => {
            let ok = status.is_ok_and(|s| {
                s.success() || s.code().is_some_and(|c| success_codes.contains(&c))
            });
            // Restart=no: the unit stays where its process left it.
            if ok { set("inactive", "dead") } else { set("failed", "failed") }
        }
        mode = &mut stop => match mode {
            Ok(StopMode::Kill(ack)) => {
                let _ = child.start_kill();
                if let Some((docker, name)) = &container {
                    remove_container(docker, name).await;
                }
                let _ = child.wait().await;
                let _ = ack.send(());
            }
            // A stop, or the unit was unloaded (the sender dropped).
            Ok(StopMode::Graceful) | Err(_) => {
                set("deactivating", "stop-sigterm");
                for line in values(&options, "ExecStop") {
                    match parse_exec(line, &unit) {
                        Ok((_, argv)) => {
                            run_to_end(&argv).await;
                        }
                        Err(error) => tracing::warn!(unit, error, "fake fleet agent: bad ExecStop"),
                    }
                }
                if tokio::time::timeout(stop_timeout, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                set("inactive", "dead");
            }
        }
    }
    if let Some(container) = &container {
        shared.lock().containers.remove(container);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefixes_and_containers() {
        let (ignore, argv) = parse_exec("-/usr/bin/docker rm -f x", "x.service").unwrap();
        assert!(ignore);
        assert_eq!(argv, ["/usr/bin/docker", "rm", "-f", "x"]);
        let (ignore, argv) = parse_exec("/bin/docker run --rm --name c1 img", "x.service").unwrap();
        assert!(!ignore);
        assert_eq!(
            docker_container(&argv),
            Some(("/bin/docker".into(), "c1".into()))
        );
        assert_eq!(docker_container(&["/bin/sleep".into(), "1".into()]), None);
        let argv = on_machine(argv, "127.0.0.3");
        assert_eq!(argv, ["/bin/docker", "run", "--rm", "--name", "c1", "img"]);
        let run = |p: &str| -> Vec<String> {
            ["/bin/docker", "run", "--name", "c1", "-p", p, "img"]
                .map(String::from)
                .to_vec()
        };
        assert_eq!(
            on_machine(run("20001:8080"), "127.0.0.3")[5],
            "127.0.0.3:20001:8080"
        );
        assert_eq!(
            on_machine(run("1.2.3.4:20001:8080"), "127.0.0.3")[5],
            "1.2.3.4:20001:8080"
        );
        assert_eq!(on_machine(run("20001:8080"), "")[5], "20001:8080");
    }
}
