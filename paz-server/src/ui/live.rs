//! Live pages: `GET /ui/live?view=…` is an SSE stream of HTML fragments. It renders the
//! page's live parts (the same functions the page used) when something they show changes,
//! and sends each fragment whose content changed; the script swaps it in by id.
//!
//! What makes it render: an engine event about the page's services (a deployment's steps,
//! a release, a scale), and instance health, which the runtime keeps in memory (not an
//! engine event yet): once a second the stream hashes the instances and problems of the
//! services it shows, the chart generation and (for the hosts) the host list, and renders
//! only when that changes. Bursts of events are folded into one render. The browser never
//! polls; an idle page costs the server one in-memory hash a second.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::layout::{self, Ctx};
use super::pages::{self, Rendered};
use super::session::SessionView;
use super::{PageError, stopped};
use crate::AppState;

/// How often instance health is looked at.
const TICK: Duration = Duration::from_secs(1);
/// How long a burst of events may last before the render.
const SETTLE: Duration = Duration::from_millis(150);

/// Which page a stream follows.
#[derive(Debug, Deserialize)]
pub(crate) struct LiveQuery {
    view: String,
    name: Option<String>,
    id: Option<String>,
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
}

enum View {
    Dashboard,
    Services(pages::Filter),
    Service(String),
    Deployment(String),
    Hosts,
}

impl View {
    fn parse(query: LiveQuery) -> Result<View, PageError> {
        let missing = |what: &str| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("the live view needs {what}"),
            )
        };
        Ok(match query.view.as_str() {
            "dashboard" => View::Dashboard,
            "services" => View::Services(pages::Filter {
                q: query.q,
                state: query.state,
            }),
            "service" => View::Service(query.name.ok_or_else(|| missing("a name"))?),
            "deployment" => View::Deployment(query.id.ok_or_else(|| missing("an id"))?),
            "hosts" => View::Hosts,
            other => {
                return Err(PageError::new(
                    StatusCode::BAD_REQUEST,
                    format!("there is no live view {other:?}"),
                ));
            }
        })
    }

    /// Whether an engine event may change what the view shows.
    fn concerns(&self, event: &paz_core::Event) -> bool {
        match self {
            View::Service(name) => event.kind.service() == name,
            View::Deployment(id) => paz_core::Deployment::parse_id(id)
                .is_some_and(|(service, _)| service == event.kind.service()),
            View::Dashboard | View::Services(_) | View::Hosts => true,
        }
    }

    async fn render(&self, state: &AppState, ctx: &Ctx) -> Result<Rendered, PageError> {
        match self {
            View::Dashboard => pages::dashboard_fragments(state, ctx).await,
            View::Services(filter) => pages::services_fragments(state, ctx, filter).await,
            View::Service(name) => pages::service_fragments(state, ctx, name).await,
            View::Deployment(id) => pages::deployment_fragments(state, ctx, id).await,
            View::Hosts => pages::hosts_fragments(state, ctx).await,
        }
    }
}

/// What the view shows that changes without an engine event, hashed.
async fn fingerprint(state: &AppState, view: &View, services: &[String]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let Some(reconciler) = &state.reconciler() {
        let mut hash = |instances: &[paz_core::Instance]| {
            for instance in instances {
                instance.id.hash(&mut hasher);
                instance.state.hash(&mut hasher);
                instance.address.hash(&mut hasher);
                instance.message.hash(&mut hasher);
            }
        };
        match view {
            View::Service(_) | View::Deployment(_) => {
                for name in services {
                    hash(&reconciler.instances(name));
                }
                for name in services {
                    reconciler.problems(name).hash(&mut hasher);
                }
            }
            // One lock for the lot (a crash loop shows in the instances' states).
            _ => {
                for instances in reconciler.all_instances().values() {
                    hash(instances);
                }
            }
        }
    }
    if matches!(view, View::Service(_) | View::Services(_) | View::Dashboard) {
        state.ui.inner.charts.generation().hash(&mut hasher);
    }
    if matches!(view, View::Hosts | View::Dashboard)
        && let Ok(hosts) = state.paz.hosts().await
    {
        for host in hosts {
            host.id.hash(&mut hasher);
            host.address.hash(&mut hasher);
            format!("{:?}", host.status).hash(&mut hasher);
        }
    }
    hasher.finish()
}

#[derive(serde::Serialize)]
struct Fragment<'a> {
    id: &'a str,
    v: &'a str,
    html: &'a str,
}

/// `GET /ui/live`: the fragments of one page, as they change.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Query(query): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let view = View::parse(query)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(follow(state, session, view, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Renders `view` at once and again on every change, until the client goes, the session
/// ends, the page's object is deleted or the server stops.
async fn follow(state: AppState, session: SessionView, view: View, tx: mpsc::Sender<SseEvent>) {
    let mut events = state.paz.subscribe();
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: HashMap<&'static str, String> = HashMap::new();
    let mut services: Vec<String> = Vec::new();
    let mut seen = 0u64;
    let mut first = true;
    loop {
        if !first {
            let changed = tokio::select! {
                () = tx.closed() => return,
                () = stopped(&mut shutdown) => return,
                event = events.recv() => match event {
                    Ok(event) => view.concerns(&event),
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if !state.ui.inner.sessions.is_live(&session.key) {
                        let _ = tx.send(SseEvent::default().event("signed_out").data("{}")).await;
                        return;
                    }
                    fingerprint(&state, &view, &services).await != seen
                }
            };
            if !changed {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            while events.try_recv().is_ok() {}
        }
        first = false;
        let ctx = Ctx {
            csrf: session.csrf.clone(),
            flash: None,
            now: jiff::Timestamp::now(),
            live: true,
        };
        match view.render(&state, &ctx).await {
            Ok(rendered) => {
                services = rendered.services;
                seen = fingerprint(&state, &view, &services).await;
                for (id, html) in rendered.fragments {
                    let version = layout::version_of(&html).unwrap_or_default().to_owned();
                    if sent.get(id) == Some(&version) {
                        continue;
                    }
                    let fragment = Fragment {
                        id,
                        v: &version,
                        html: &html.0,
                    };
                    let Ok(event) = SseEvent::default().event("fragment").json_data(&fragment)
                    else {
                        continue;
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    sent.insert(id, version);
                }
            }
            Err(error) if error.status == StatusCode::NOT_FOUND => {
                let event = SseEvent::default()
                    .event("gone")
                    .json_data(serde_json::json!({ "message": error.message }));
                if let Ok(event) = event {
                    let _ = tx.send(event).await;
                }
                return;
            }
            Err(error) => {
                tracing::debug!(message = %error.message, "live view not rendered; trying on the next change");
            }
        }
    }
}
