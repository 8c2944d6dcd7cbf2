//! `paz secret …`, `paz token …` and `paz hook …`.

use std::io::{IsTerminal as _, Read as _};

use paz::Client;
use paz_core::token::CreateTokenRequest;

use crate::args::{HookCommand, SecretCommand, SecretSetArgs, TokenCommand};
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

/// Carries out `paz hook …`.
pub async fn hook(client: &Client, command: HookCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        HookCommand::Create(args) => {
            let created = client
                .create_hook(&args.name, args.source.into(), args.tag)
                .await?;
            shown_once(client, &created, "created", out)
        }
        HookCommand::List { name } => out.hooks(&client.hooks(&name).await?),
        HookCommand::Update(args) => {
            let tag = if args.any_tag { None } else { args.tag };
            let info = client
                .update_hook(&args.name, args.source.into(), tag)
                .await?;
            eprintln!(
                "hook {} of {} now deploys {}",
                info.source,
                info.service,
                tag_text(info.tag.as_deref())
            );
            Ok(())
        }
        HookCommand::Rotate(args) => {
            let created = client.rotate_hook(&args.name, args.source.into()).await?;
            shown_once(client, &created, "rotated", out)
        }
        HookCommand::Delete(args) => {
            let info = client.delete_hook(&args.name, args.source.into()).await?;
            eprintln!("deleted hook {} of {}", info.source, info.service);
            Ok(())
        }
    }
}

fn tag_text(tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("tags matching {tag:?}"),
        None => "every tag".to_owned(),
    }
}

/// Prints a new hook secret once: on stdout what to paste (Docker Hub: the URL; the others:
/// the secret), how to use it on stderr.
fn shown_once(
    client: &Client,
    created: &paz_core::hook::CreatedHook,
    what: &str,
    out: &Output,
) -> anyhow::Result<()> {
    use paz_core::hook::HookSource;
    let info = &created.info;
    let url = format!(
        "{}{}",
        client.base_url().trim_end_matches('/'),
        created.path
    );
    eprintln!(
        "{what} hook {} of {} (deploys {}); it is shown once, below: keep it secret",
        info.source,
        info.service,
        tag_text(info.tag.as_deref())
    );
    match info.source {
        HookSource::Dockerhub => eprintln!(
            "add this URL as a webhook of the Docker Hub repository (Paz must be reachable at it)"
        ),
        HookSource::Registry => eprintln!(
            "in the registry's config: notifications.endpoints: - url: {url}, headers: {{Authorization: [\"Bearer <this secret>\"]}}"
        ),
        HookSource::Ci => eprintln!(
            "POST {url} with the JSON {{\"service\", \"tag\", \"timestamp\", \"idempotency_key\"}} and the header X-Paz-Signature: sha256=<hex HMAC-SHA256 of the body with this secret>"
        ),
    }
    if out.is_json() {
        out.json(created)
    } else if info.source == HookSource::Dockerhub {
        out.text(&format!("{url}\n"))
    } else {
        out.text(&format!("{}\n", created.secret))
    }
}
