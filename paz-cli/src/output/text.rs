//! Small text forms shared by the tables: ids, durations, ages, releases, triggers, ports.

use jiff::Timestamp;
use paz_core::scheduler::LogLine;
use paz_core::{PortSpec, Protocol, Strategy, Trigger, TriggerKind};

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

/// One event for people: `<time> <type> <service> <details>`.
pub fn event_line_text(event: &paz::Event) -> String {
    use paz::EventKind as K;
    let details = match &event.kind {
        K::ServiceCreated { .. } | K::ServiceUpdated { .. } | K::ServiceDeleted { .. } => {
            String::new()
        }
        K::ReleaseCreated { version, .. } => format!("v{version}"),
        K::DeploymentChanged {
            id,
            release,
            status,
            ..
        } => format!("{id} v{release} {status}"),
        K::DeploymentStep {
            id,
            name,
            status,
            message,
            ..
        } => {
            let status = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            match message {
                Some(message) => format!("{id} {status}: {name}: {message}"),
                None => format!("{id} {status}: {name}"),
            }
        }
        K::InstanceStarted {
            instance, release, ..
        }
        | K::InstanceHealthy {
            instance, release, ..
        }
        | K::InstanceStopped {
            instance, release, ..
        } => format!("{} v{release}", short_id(instance)),
        K::InstanceUnhealthy {
            instance,
            release,
            detail,
            ..
        } => format!("{} v{release}: {detail}", short_id(instance)),
        K::DeliveryRecorded { id, verdict, .. } => format!("{id} {verdict}"),
    };
    let at = event.at.strftime("%H:%M:%S");
    format!(
        "{at} {:<19} {} {details}",
        event.kind.name(),
        event.kind.service()
    )
    .trim_end()
    .to_owned()
}

pub(super) fn ports_text(ports: &[PortSpec]) -> String {
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

pub(super) fn shell_words(words: &[String]) -> String {
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

pub(super) fn or_dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

pub(super) fn release_text(release: Option<u64>) -> String {
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

pub(super) fn trigger_text(trigger: &Trigger) -> String {
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

pub(super) fn timestamp_text(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub(super) fn ago(at: Timestamp, now: Timestamp) -> String {
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
    use crate::output::fixtures::{ID, at};

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
}
