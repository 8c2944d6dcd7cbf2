//! `paz secret list`, `paz token list`, `paz hook list` and `paz deliveries`.

use jiff::Timestamp;
use paz_core::hook::{Delivery, HookInfo};
use paz_core::secret::SecretInfo;
use paz_core::token::TokenInfo;

use super::table::{new_table, render};
use super::text::{ago, or_dash, timestamp_text};

/// The secrets table: names and when set, never values.
pub(super) fn secrets_table(secrets: &[SecretInfo], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(&["NAME", "SET", "RELEASE"], tty);
    for secret in secrets {
        table.add_row(vec![
            secret.name.clone(),
            ago(secret.set_at, now),
            format!("v{}", secret.release),
        ]);
    }
    render(table, tty)
}

/// The tokens table.
pub(super) fn tokens_table(tokens: &[TokenInfo], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &["NAME", "ID", "SCOPE", "SERVICES", "CREATED", "EXPIRES"],
        tty,
    );
    for token in tokens {
        let expires = match token.expires_at {
            Some(at) if at <= now => "expired".to_owned(),
            Some(at) => timestamp_text(at),
            None => "never".to_owned(),
        };
        table.add_row(vec![
            token.name.clone(),
            token.id.clone(),
            token.scope.to_string(),
            or_dash(token.services.join(",")),
            ago(token.created_at, now),
            expires,
        ]);
    }
    render(table, tty)
}

/// The hooks table: never their secrets.
pub(super) fn hooks_table(hooks: &[HookInfo], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(&["SOURCE", "ID", "TAGS", "CREATED", "ROTATED"], tty);
    for hook in hooks {
        table.add_row(vec![
            hook.source.to_string(),
            hook.id.clone(),
            hook.tag.clone().unwrap_or_else(|| "*".into()),
            ago(hook.created_at, now),
            hook.rotated_at
                .map_or_else(|| "-".into(), |at| ago(at, now)),
        ]);
    }
    render(table, tty)
}

/// The delivery log: what came, what became of it, and why.
pub(super) fn deliveries_table(deliveries: &[Delivery], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &[
            "ID",
            "RECEIVED",
            "SOURCE",
            "VERDICT",
            "CODE",
            "TAG",
            "DEPLOYMENT",
            "REASON",
        ],
        tty,
    );
    for delivery in deliveries {
        let mut reason = delivery.reason.clone();
        if let Some(callback) = &delivery.callback {
            reason.push_str(&format!(" [callback: {callback}]"));
        }
        table.add_row(vec![
            delivery.id.clone(),
            ago(delivery.received_at, now),
            delivery.source.to_string(),
            delivery.verdict.to_string(),
            delivery.code.clone(),
            or_dash(delivery.tag.clone().unwrap_or_default()),
            or_dash(delivery.deployment.clone().unwrap_or_default()),
            reason,
        ]);
    }
    render(table, tty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::token::Scope;

    #[test]
    fn tables_show_names_and_scopes() {
        let now = Timestamp::now();
        let secrets = [SecretInfo {
            name: "DB_PASSWORD".into(),
            set_at: now,
            release: 4,
        }];
        let text = secrets_table(&secrets, false, now);
        assert!(
            text.contains("DB_PASSWORD") && text.contains("v4"),
            "{text}"
        );
        let tokens = [TokenInfo {
            id: "0123456789ab".into(),
            name: "ci".into(),
            scope: Scope::Deploy,
            services: vec!["web".into(), "api".into()],
            created_at: now,
            expires_at: None,
        }];
        let hooks = [HookInfo {
            service: "web".into(),
            source: paz_core::hook::HookSource::Registry,
            id: "0123456789ab".into(),
            tag: Some("v*".into()),
            created_at: now,
            rotated_at: None,
        }];
        let text = hooks_table(&hooks, false, now);
        assert!(text.contains("registry") && text.contains("v*"), "{text}");
        let deliveries = [Delivery {
            id: "web-d3".into(),
            service: Some("web".into()),
            source: paz_core::hook::HookSource::Dockerhub,
            received_at: now,
            verdict: paz_core::hook::Verdict::Deployed,
            status: 202,
            code: "DEPLOYED".into(),
            reason: "Docker Hub push of acme/web:v2".into(),
            tag: Some("v2".into()),
            image: Some("acme/web:v2".into()),
            digest: None,
            deployment: Some("web-4".into()),
            key: None,
            callback: Some("success sent (HTTP 200)".into()),
            stored: true,
        }];
        let text = deliveries_table(&deliveries, false, now);
        assert!(
            text.contains("deployed")
                && text.contains("web-4")
                && text.contains("callback: success"),
            "{text}"
        );
        let text = tokens_table(&tokens, false, now);
        assert!(
            text.contains("deploy") && text.contains("web,api") && text.contains("never"),
            "{text}"
        );
    }
}
