//! The page chrome and the small pieces every page uses: state badges (a colour *and* a
//! word), times (relative, the exact time on hover), live fragments, CSRF fields.

use std::hash::{Hash, Hasher};

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use paz_core::{DeploymentStatus, InstanceState, StepStatus};

use super::assets;

/// What every render needs: the session's CSRF token and message, the time, and whether
/// the markup goes to the live stream (then times are left for the script to word).
pub(crate) struct Ctx {
    /// The session's CSRF token.
    pub csrf: String,
    /// A message for the top of the page.
    pub flash: Option<String>,
    /// Now.
    pub now: jiff::Timestamp,
    /// Rendering for the live stream.
    pub live: bool,
}

/// Which section of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Dashboard,
    Services,
    Hosts,
}

/// A whole page.
pub(crate) struct Page<'a> {
    pub title: &'a str,
    pub nav: Nav,
    /// The live stream this page follows (`/ui/live?...`), if any.
    pub live: Option<String>,
    pub body: Markup,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Paz" }
            link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%230b7a75'/%3E%3C/svg%3E";
            link rel="stylesheet" href=(assets::url(&assets::STYLE));
            script src=(assets::url(&assets::SCRIPT)) defer {}
        }
    }
}

/// A page with the navigation, the session's message and a sign-out button.
pub(crate) fn page(ctx: &Ctx, page: Page<'_>) -> Markup {
    let link = |nav: Nav, href: &str, text: &str| {
        html! {
            a href=(href) aria-current=[(page.nav == nav).then_some("page")] { (text) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(page.title))
            body data-live=[page.live.as_deref()] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { span.logo aria-hidden="true" {} "Paz" }
                        (link(Nav::Dashboard, "/", "Dashboard"))
                        (link(Nav::Services, "/services", "Services"))
                        (link(Nav::Hosts, "/hosts", "Hosts"))
                    }
                    span #live-state .live-state role="status" aria-live="polite" {}
                    form.signout method="post" action="/logout" {
                        (csrf(ctx))
                        button.link type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some(flash) = &ctx.flash {
                        p.flash role="status" { (flash) }
                    }
                    (page.body)
                }
            }
        }
    }
}

/// A page outside the session: the sign-in form and errors.
pub(crate) fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// An error page.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    bare_page(
        title,
        html! {
            section.card.narrow {
                h1 { (status.as_u16()) " " (title) }
                p.error-text { (message) }
                p { a href="/" { "Back to the dashboard" } " · " a href="/login" { "Sign in" } }
            }
        },
    )
}

/// The session's CSRF token as a hidden field.
pub(crate) fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// A part of a page the live stream may replace: `id`, and `data-v`, a hash of its content
/// (the script skips a fragment it already shows).
pub(crate) fn fragment(id: &str, body: Markup) -> Markup {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.0.hash(&mut hasher);
    let version = format!("{:x}", hasher.finish());
    html! { div id=(id) data-v=(version) { (body) } }
}

/// The version `fragment` gives this markup (the live stream compares them).
pub(crate) fn version_of(fragment: &Markup) -> Option<&str> {
    let rest = fragment.0.split_once("data-v=\"")?.1;
    rest.split_once('"').map(|(v, _)| v)
}

/// "3 min" for a span of seconds.
pub(crate) fn span_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn exact(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time as "3 min ago" with the exact time on hover; the script keeps the words current.
pub(crate) fn ago(ctx: &Ctx, ts: jiff::Timestamp) -> Markup {
    let text = if ctx.live {
        // Stable, so a fragment's hash changes only with its data; the script words it.
        exact(ts)
    } else {
        let seconds = ctx.now.as_second() - ts.as_second();
        if seconds < 0 {
            format!("in {}", span_text(-seconds))
        } else {
            format!("{} ago", span_text(seconds))
        }
    };
    html! { time datetime=(ts.to_string()) title=(exact(ts)) data-rel="ago" { (text) } }
}

/// How long since `ts` ("3 min"), for ages.
pub(crate) fn age(ctx: &Ctx, ts: jiff::Timestamp) -> Markup {
    let text = if ctx.live {
        exact(ts)
    } else {
        span_text(ctx.now.as_second() - ts.as_second())
    };
    html! { time datetime=(ts.to_string()) title=(exact(ts)) data-rel="age" { (text) } }
}

/// A coloured badge with an icon and a word.
pub(crate) fn badge(class: &str, icon: &str, word: &str) -> Markup {
    html! { span class={"badge " (class)} { span.icon aria-hidden="true" { (icon) } (word) } }
}

/// An instance's state.
pub(crate) fn instance_state(state: InstanceState) -> Markup {
    match state {
        InstanceState::Healthy => badge("ok", "●", "healthy"),
        InstanceState::Starting => badge("warn", "◐", "starting"),
        InstanceState::Draining => badge("info", "◑", "draining"),
        InstanceState::Stopped => badge("muted", "■", "stopped"),
        InstanceState::Failed => badge("bad", "✕", "failed"),
    }
}

/// A deployment's status.
pub(crate) fn deployment_status(status: DeploymentStatus) -> Markup {
    match status {
        DeploymentStatus::Pending => badge("info", "○", "pending"),
        DeploymentStatus::Running => badge("warn", "◐", "running"),
        DeploymentStatus::Succeeded => badge("ok", "●", "succeeded"),
        DeploymentStatus::Failed => badge("bad", "✕", "failed"),
        DeploymentStatus::Cancelled => badge("muted", "■", "cancelled"),
    }
}

/// A deployment step's status.
pub(crate) fn step_status(status: StepStatus) -> Markup {
    match status {
        StepStatus::Pending => badge("muted", "○", "pending"),
        StepStatus::Running => badge("warn", "◐", "running"),
        StepStatus::Succeeded => badge("ok", "✓", "done"),
        StepStatus::Failed => badge("bad", "✕", "failed"),
        StepStatus::Skipped => badge("muted", "–", "skipped"),
    }
}

/// One dot per instance, coloured by its state, with the counts in words for screen
/// readers (and on hover).
pub(crate) fn dots(instances: &[paz_core::Instance]) -> Markup {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for instance in instances {
        let word = state_word(instance.state);
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    let words = counts
        .iter()
        .map(|(w, n)| format!("{n} {w}"))
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        span.dots title=(words) {
            @for instance in instances {
                span class={"dot " (state_class(instance.state))} aria-hidden="true" {}
            }
            span.visually-hidden { (words) }
        }
    }
}

fn state_word(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Healthy => "healthy",
        InstanceState::Starting => "starting",
        InstanceState::Draining => "draining",
        InstanceState::Stopped => "stopped",
        InstanceState::Failed => "failed",
    }
}

fn state_class(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Healthy => "ok",
        InstanceState::Starting => "warn",
        InstanceState::Draining => "info",
        InstanceState::Stopped => "muted",
        InstanceState::Failed => "bad",
    }
}

/// `text` with every container id (64 hex digits) cut to its first 12, as `docker ps`
/// shows them.
pub(crate) fn short_ids(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let hex = word.trim_end_matches([',', ':', ')']);
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                format!("{}{}", &hex[..12], &word[64..])
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first 12 characters of a container id.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Inline markup that is already safe (the SVG charts, built from numbers).
pub(crate) fn trusted(markup: String) -> Markup {
    PreEscaped(markup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_people_write_them() {
        assert_eq!(span_text(0), "0 s");
        assert_eq!(span_text(59), "59 s");
        assert_eq!(span_text(61), "1 min");
        assert_eq!(span_text(7200), "2 h");
        assert_eq!(span_text(200_000), "2 d");
        assert_eq!(span_text(-5), "0 s");
    }

    #[test]
    fn container_ids_are_shortened_in_text() {
        let id = "e89ac509e2221956edfba7444b12623ba690d502dcdc53fdc4f187e58bc4bcd3";
        assert_eq!(
            short_ids(&format!("start v2 slot 0: {id}")),
            "start v2 slot 0: e89ac509e222"
        );
        assert_eq!(
            short_ids(&format!("drain {id}, then")),
            "drain e89ac509e222, then"
        );
        assert_eq!(
            short_ids("deploying v2 (rolling)"),
            "deploying v2 (rolling)"
        );
    }

    #[test]
    fn fragments_carry_a_version_of_their_content() {
        let a = fragment("x", html! { p { "one" } });
        let b = fragment("x", html! { p { "two" } });
        assert_ne!(version_of(&a), version_of(&b));
        assert_eq!(
            version_of(&a),
            version_of(&fragment("x", html! { p { "one" } }))
        );
        assert!(a.0.starts_with("<div id=\"x\" data-v=\""));
    }
}
