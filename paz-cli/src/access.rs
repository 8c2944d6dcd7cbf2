//! `paz secret …` and `paz token …`.

use std::io::{IsTerminal as _, Read as _};

use paz::Client;
use paz_core::token::CreateTokenRequest;

use crate::args::{SecretCommand, SecretSetArgs, TokenCommand};
use crate::failure::UsageError;
use crate::follow::follow;
use crate::output::Output;

/// Carries out `paz secret …`.
pub async fn secret(client: &Client, command: SecretCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set(args) => {
            let value = read_value(&args)?;
            let deployment = client.set_secret(&args.name, &args.secret, &value).await?;
            eprintln!(
                "set secret {} of {} (release v{})",
                args.secret, args.name, deployment.release
            );
            follow(client, deployment, &args.follow, out).await
        }
        SecretCommand::List { name } => out.secrets(&client.secrets(&name).await?),
        SecretCommand::Remove {
            name,
            secret,
            follow: how,
        } => {
            let deployment = client.remove_secret(&name, &secret).await?;
            eprintln!(
                "removed secret {secret} of {name} (release v{})",
                deployment.release
            );
            follow(client, deployment, &how, out).await
        }
    }
}

/// The value of `paz secret set`: the file's, or stdin's, without one trailing newline.
fn read_value(args: &SecretSetArgs) -> anyhow::Result<String> {
    let mut value = match &args.from_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            UsageError(format!(
                "cannot read the value from {}: {e}",
                path.display()
            ))
        })?,
        None => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "Type the value of {}, then press Enter and Ctrl-D (or pipe it in):",
                    args.secret
                );
            }
            let mut value = String::new();
            stdin
                .read_to_string(&mut value)
                .map_err(|e| UsageError(format!("cannot read the value from stdin: {e}")))?;
            value
        }
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(UsageError(format!(
            "the value of {} is empty; give it on stdin or with --from-file",
            args.secret
        ))
        .into());
    }
    Ok(value)
}

/// Carries out `paz token …`.
pub async fn token(client: &Client, command: TokenCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let created = client
                .create_token(&CreateTokenRequest {
                    name: args.name,
                    scope: args.scope.into(),
                    services: args.services,
                    expires_in: args.expires,
                })
                .await?;
            let info = &created.info;
            let services = if info.services.is_empty() {
                String::new()
            } else {
                format!(" for {}", info.services.join(", "))
            };
            let expiry = info
                .expires_at
                .map(|at| format!(", expires {at}"))
                .unwrap_or_default();
            eprintln!(
                "created token {} (scope {}{services}{expiry}); it is shown once, below: keep it in your CI's secrets",
                info.name, info.scope
            );
            if out.is_json() {
                out.json(&created)
            } else {
                out.text(&format!("{}\n", created.token))
            }
        }
        TokenCommand::List => out.tokens(&client.tokens().await?),
        TokenCommand::Revoke { name } => {
            let info = client.revoke_token(&name).await?;
            eprintln!("revoked token {} ({})", info.name, info.id);
            Ok(())
        }
    }
}
