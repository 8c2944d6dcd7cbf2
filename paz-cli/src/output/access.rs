//! `paz secret list` and `paz token list`.

use jiff::Timestamp;
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
        let text = tokens_table(&tokens, false, now);
        assert!(
            text.contains("deploy") && text.contains("web,api") && text.contains("never"),
            "{text}"
        );
    }
}
