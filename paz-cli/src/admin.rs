//! `paz admin export` and `paz admin import`: the whole state, as a versioned document.

use std::io::{Read as _, Write as _};
use std::path::Path;

use anyhow::Context as _;
use paz::Client;
use paz_core::backup::StateExport;

use crate::args::AdminCommand;
use crate::failure::UsageError;
use crate::output::Output;

/// Runs `paz admin …`.
pub async fn admin(client: &Client, command: AdminCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        AdminCommand::Export { file } => {
            let export = client.export_state().await?;
            let mut text = serde_json::to_string_pretty(&export)?;
            text.push('\n');
            let cluster = export
                .cluster
                .as_deref()
                .map(|c| format!(" of cluster {c}"))
                .unwrap_or_default();
            let summary = format!(
                "exported {} keys ({} services) at revision {}{cluster}",
                export.keys.len(),
                services(&export),
                export.revision
            );
            match file {
                Some(path) if path.as_os_str() != "-" => {
                    write_private(&path, text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "{summary} to {}; it holds token hashes and sealed secrets: keep it private",
                        path.display()
                    );
                    Ok(())
                }
                _ => {
                    eprintln!("{summary}");
                    out.text(&text)
                }
            }
        }
        AdminCommand::Import { file, replace } => {
            let bytes = read_input(&file)?;
            let export = StateExport::from_slice(&bytes)
                .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
            let report = client.import_state(&export, replace).await?;
            let replaced = if report.deleted > 0 {
                format!(", deleted {} keys of the previous state", report.deleted)
            } else {
                String::new()
            };
            eprintln!(
                "imported {} keys ({} services) from {}{replaced}",
                report.keys,
                report.services,
                file.display()
            );
            let sealed = export
                .keys
                .iter()
                .any(|k| k.key.starts_with("/paz/sealed/"));
            if sealed && !report.secret_key_checked {
                eprintln!(
                    "warning: the server could not check that its secret key opens the export's secrets (it has none?)"
                );
            }
            if report.cluster_changed {
                eprintln!(
                    "the cluster id is now {}: restart paz-server so its scheduler uses it",
                    report.cluster.as_deref().unwrap_or("-")
                );
            }
            if out.is_json() {
                out.json(&report)?;
            }
            Ok(())
        }
    }
}

fn services(export: &StateExport) -> usize {
    export
        .keys
        .iter()
        .filter(|k| k.key.starts_with("/paz/services/"))
        .count()
}

/// The bytes of `path`, or of stdin for `-`.
fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the export from stdin")?;
    } else {
        bytes = std::fs::read(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    }
    Ok(bytes)
}

/// Writes `bytes` to `path`, readable by its owner only (also when it existed).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}
