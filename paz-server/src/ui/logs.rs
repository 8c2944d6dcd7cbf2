//! Logs: what the instances print. The page shows the last lines (it reads fine without
//! JavaScript, with a server-side search); the script follows `/logs/stream`, an SSE stream
//! of new lines, never a poll. Between the scheduler and a slow browser sits a bounded
//! buffer ([`BUFFER`] lines): when it is full, lines are dropped and the stream says how
//! many, so a chatty service can neither grow the server's memory nor freeze the page.
//!
//! A line is shown as a terminal would show it: each `\r` returns to the line's start, so a
//! progress bar written as `10%\r20%\r30%` reads `30%`; colour escapes are dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use maud::html;
use paz_core::scheduler::{LogLine, LogOptions, LogStream, LogStreamKind};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::layout::{self, Nav, Page};
use super::pages::{Segment, ctx};
use super::session::SessionView;
use super::{PageError, stopped};
use crate::AppState;

/// Lines the page shows, and the stream starts with.
const PAGE_TAIL: usize = 200;
/// Lines a download holds by default.
const DOWNLOAD_TAIL: usize = 10_000;
/// The most lines anything reads.
const MAX_TAIL: usize = 100_000;
/// Lines held for one browser that reads slower than the service prints.
pub(crate) const BUFFER: usize = 1024;
/// How long the page waits for the past lines.
const READ_DEADLINE: Duration = Duration::from_secs(3);

/// The logs' options.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LogsQuery {
    /// Only the last N lines of each instance.
    tail: Option<usize>,
    /// One instance (its id or the start of it).
    instance: Option<String>,
    /// Only lines containing this (the page without JavaScript).
    q: Option<String>,
}

impl LogsQuery {
    fn tail(&self, default: usize) -> usize {
        self.tail.unwrap_or(default).min(MAX_TAIL)
    }
}

/// A line as a terminal would show it: `\r` goes back to the start and what follows
/// overwrites; escape sequences (colours, cursor moves) are dropped.
pub(crate) fn terminal_text(line: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(line.len());
    let mut column = 0usize;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => column = 0,
            '\u{1b}' => {
                // CSI: ESC [ parameters… final byte in @..~; other escapes: one more char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c if c.is_control() && c != '\t' => {}
            c => {
                if column < out.len() {
                    out[column] = c;
                } else {
                    out.push(c);
                }
                column += 1;
            }
        }
    }
    out.into_iter().collect()
}

/// The merged output of the service's instances (or one of them).
async fn open(
    state: &AppState,
    name: &str,
    query: &LogsQuery,
    follow: bool,
    tail: usize,
) -> Result<LogStream, PageError> {
    state.paz.service(name).await?;
    let Some(scheduler) = state.reconciler().as_ref().map(|r| r.scheduler().clone()) else {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "This server runs no scheduler (--scheduler none), so there are no logs.",
        ));
    };
    let options = LogOptions {
        follow,
        tail: Some(tail),
    };
    let mut streams = Vec::new();
    for instance in scheduler.list(Some(name)).await? {
        if let Some(wanted) = &query.instance
            && !instance.id.starts_with(wanted.as_str())
        {
            continue;
        }
        match scheduler.logs(&instance.id, options.clone()).await {
            Ok(stream) => streams.push(stream),
            Err(error) => tracing::debug!(id = %instance.id, %error, "no logs for instance"),
        }
    }
    Ok(Box::pin(futures_util::stream::select_all(streams)))
}

/// `GET /services/{name}/logs`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(name): Segment,
    Query(query): Query<LogsQuery>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let tail = query.tail(PAGE_TAIL);
    let mut lines = Vec::new();
    let mut note = None;
    match open(&state, &name, &query, false, tail).await {
        Ok(stream) => {
            let mut stream = stream.take(MAX_TAIL);
            let deadline = tokio::time::sleep(READ_DEADLINE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    line = stream.next() => match line {
                        Some(Ok(line)) => lines.push(line),
                        Some(Err(_)) => continue,
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
        }
        Err(error) if error.status == StatusCode::CONFLICT => note = Some(error.message),
        Err(error) => return Err(error),
    }
    let needle = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let shown: Vec<(&LogLine, String)> = lines
        .iter()
        .map(|l| (l, terminal_text(&l.line)))
        .filter(|(_, text)| {
            needle
                .as_ref()
                .is_none_or(|n| text.to_lowercase().contains(n))
        })
        .collect();
    let mut stream_query = vec![("tail", tail.to_string())];
    if let Some(instance) = &query.instance {
        stream_query.push(("instance", instance.clone()));
    }
    let stream_url = format!(
        "/services/{name}/logs/stream?{}",
        serde_urlencoded::to_string(&stream_query).unwrap_or_default()
    );
    let download = format!(
        "/services/{name}/logs.txt?{}",
        serde_urlencoded::to_string(
            query
                .instance
                .iter()
                .map(|i| ("instance", i.as_str()))
                .collect::<Vec<_>>()
        )
        .unwrap_or_default()
    );
    let body = html! {
        div.heading {
            h1 { "Logs of " a href={"/services/" (name)} { (name) } }
            div.actions { a.button href=(download) download { "Download" } }
        }
        @if let Some(instance) = &query.instance {
            p { "Instance " code { (layout::short_id(instance)) } " only · "
                a href={"/services/" (name) "/logs"} { "all instances" } }
        }
        form.filter.logbar method="get" action={"/services/" (name) "/logs"} role="search" {
            @if let Some(instance) = &query.instance { input type="hidden" name="instance" value=(instance); }
            label for="log-q" { "Search" }
            input #log-q type="search" name="q" value=(query.q.as_deref().unwrap_or("")) autocomplete="off";
            button type="submit" data-nojs { "Search" }
            span.live-only {
                label.inline-check { input #log-follow type="checkbox" checked; " Follow" }
                button #log-pause type="button" aria-pressed="false" { "Pause" }
                span #log-status role="status" aria-live="polite" {}
            }
        }
        @if let Some(note) = &note { p.muted { (note) } }
        div #log .log data-stream=(stream_url) tabindex="0" role="log" aria-label={"Output of " (name)} {
            @for (line, text) in &shown {
                div class=(if line.stream == LogStreamKind::Stderr { "line err" } else { "line" }) {
                    span.inst { (layout::short_id(&line.instance)) } span.text { (text) }
                }
            }
            @if shown.is_empty() && note.is_none() { p.muted.empty { "No output yet." } }
        }
    };
    let mut response = layout::page(
        &ctx,
        Page {
            title: &format!("Logs of {name}"),
            nav: Nav::Services,
            live: None,
            body,
        },
    )
    .into_response();
    super::no_store(&mut response);
    Ok(response)
}

#[derive(serde::Serialize)]
struct Line<'a> {
    /// The instance, shortened.
    i: &'a str,
    /// From stderr.
    e: bool,
    /// The text as a terminal shows it.
    t: String,
}

fn line_event(line: &LogLine) -> SseEvent {
    let payload = Line {
        i: layout::short_id(&line.instance),
        e: line.stream == LogStreamKind::Stderr,
        t: terminal_text(&line.line),
    };
    SseEvent::default()
        .event("line")
        .json_data(&payload)
        .unwrap_or_else(|_| SseEvent::default().event("line").data("{}"))
}

/// `GET /services/{name}/logs/stream`: the last lines, then new ones as they come.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(name): Segment,
    Query(query): Query<LogsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let tail = query.tail(PAGE_TAIL);
    let mut lines = open(&state, &name, &query, true, tail).await?;
    let (tx, rx) = mpsc::channel::<LogLine>(BUFFER);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let mut shutdown = state.shutdown.clone();
    let ui = state.ui.clone();
    tokio::spawn(async move {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = stopped(&mut shutdown) => return,
                // Signing out ends the stream too.
                _ = check.tick() => if !ui.inner.sessions.is_live(&session.key) {
                    return;
                },
                line = lines.next() => match line {
                    Some(Ok(line)) => match tx.try_send(line) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    },
                    Some(Err(error)) => tracing::debug!(%error, "a log line could not be read"),
                    None => return,
                },
            }
        }
    });
    let lines = futures_util::stream::unfold(
        (rx, dropped, None::<LogLine>),
        |(mut rx, dropped, pending)| async move {
            let line = match pending {
                Some(line) => line,
                None => rx.recv().await?,
            };
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                let event = SseEvent::default().event("dropped").data(lost.to_string());
                return Some((event, (rx, dropped, Some(line))));
            }
            Some((line_event(&line), (rx, dropped, None)))
        },
    );
    // The instances stopped (or the server): tell the page, so it does not reconnect.
    let end = futures_util::stream::once(async { SseEvent::default().event("end").data("{}") });
    let events = lines.chain(end).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `GET /services/{name}/logs.txt`: the last lines (10,000 by default) as a text file.
pub(crate) async fn download(
    State(state): State<AppState>,
    Segment(name): Segment,
    Query(query): Query<LogsQuery>,
) -> Result<Response, PageError> {
    let tail = query.tail(DOWNLOAD_TAIL);
    let lines = open(&state, &name, &query, false, tail).await?;
    let mut shutdown = state.shutdown.clone();
    let body = lines
        .filter_map(|line| async move { line.ok() })
        .map(|line| {
            let stream = match line.stream {
                LogStreamKind::Stdout => "out",
                LogStreamKind::Stderr => "err",
            };
            Ok::<_, Infallible>(axum::body::Bytes::from(format!(
                "{} {stream} {}\n",
                layout::short_id(&line.instance),
                terminal_text(&line.line)
            )))
        })
        .take_until(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}-logs.txt\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_returns_overwrite_like_a_terminal() {
        assert_eq!(terminal_text("plain"), "plain");
        assert_eq!(terminal_text("10%\r20%\r30%"), "30%");
        assert_eq!(terminal_text("loading.....\rdone"), "doneing.....");
        assert_eq!(terminal_text("50%\r"), "50%");
        assert_eq!(terminal_text("\u{1b}[32mgreen\u{1b}[0m text"), "green text");
        assert_eq!(terminal_text("a\tb\u{7}"), "a\tb");
    }
}
