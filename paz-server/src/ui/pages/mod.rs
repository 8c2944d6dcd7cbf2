//! The pages. Each one renders its live parts as named fragments ([`Rendered`]), which the
//! page handler lays out and the live stream ([`super::live`]) renders again on change.

mod dashboard;
mod deployment;
mod hosts;
mod login;
mod service;
mod services;

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use maud::{Markup, html};
use paz_core::{Deployment, DeploymentStatus, Instance, InstanceState, Service};

pub(crate) use dashboard::{dashboard, fragments as dashboard_fragments};
pub(crate) use deployment::{deployment, fragments as deployment_fragments};
pub(crate) use hosts::{fragments as hosts_fragments, hosts};
pub(crate) use login::login;
pub(crate) use service::{
    abort, delete, delete_page, deploy, fragments as service_fragments, promote, rollback,
    rollback_page, scale, service,
};
pub(crate) use services::{
    Filter, create, edit_service, fragments as services_fragments, new_service, services, update,
};

use super::PageError;
use super::layout::{self, Ctx};
use super::session::SessionView;
use crate::AppState;

/// What a page's live parts render to: the fragments by id, and the services they show
/// (the live stream watches their instances).
pub(crate) struct Rendered {
    pub fragments: Vec<(&'static str, Markup)>,
    pub services: Vec<String>,
}

impl Rendered {
    /// The fragment `id`, or nothing.
    fn take(&mut self, id: &str) -> Markup {
        match self.fragments.iter().position(|(f, _)| *f == id) {
            Some(i) => self.fragments.swap_remove(i).1,
            None => html! {},
        }
    }
}

/// The render context of a page for `session`.
pub(crate) fn ctx(session: &SessionView) -> Ctx {
    Ctx {
        csrf: session.csrf.clone(),
        flash: session.flash.clone(),
        now: jiff::Timestamp::now(),
        live: false,
    }
}

/// A path segment (a service name, a deployment id); malformed ones are a 400 page.
pub(crate) struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Segment(value))
            .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "The address is not valid"))
    }
}

/// How a service is doing, at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Health {
    /// No healthy instance while some are wanted.
    Failing,
    /// Fewer healthy instances than wanted.
    Degraded,
    /// A deployment is in progress.
    Deploying,
    /// All wanted instances of the current release are healthy.
    Healthy,
    /// No instance is wanted.
    Stopped,
    /// The server runs no scheduler, so nobody knows.
    Unknown,
}

impl Health {
    fn badge(self) -> Markup {
        match self {
            Health::Healthy => layout::badge("ok", "●", "healthy"),
            Health::Deploying => layout::badge("warn", "◐", "deploying"),
            Health::Degraded => layout::badge("warn", "▲", "degraded"),
            Health::Failing => layout::badge("bad", "✕", "failing"),
            Health::Stopped => layout::badge("muted", "■", "stopped"),
            Health::Unknown => layout::badge("muted", "?", "unknown"),
        }
    }

    fn needs_attention(self) -> bool {
        matches!(self, Health::Failing | Health::Degraded)
    }
}

/// A service's instances, counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub health: Health,
    /// Healthy instances of any release (those serving).
    pub healthy: usize,
    /// Instances that exist.
    pub total: usize,
    /// Instances wanted.
    pub wanted: u32,
}

/// How `service` is doing from its instances (`None` without a scheduler) and its latest
/// deployment.
pub(crate) fn summarize(
    service: &Service,
    instances: Option<&[Instance]>,
    latest: Option<&Deployment>,
) -> Summary {
    let wanted = service.spec.instances;
    let Some(instances) = instances else {
        return Summary {
            health: if wanted == 0 {
                Health::Stopped
            } else {
                Health::Unknown
            },
            healthy: 0,
            total: 0,
            wanted,
        };
    };
    let live: Vec<&Instance> = instances
        .iter()
        .filter(|i| !matches!(i.state, InstanceState::Stopped))
        .collect();
    let healthy = live
        .iter()
        .filter(|i| i.state == InstanceState::Healthy)
        .count();
    let current = live
        .iter()
        .filter(|i| i.state == InstanceState::Healthy && Some(i.release) == service.current_release)
        .count();
    let deploying = latest.is_some_and(|d| !d.status.is_final());
    let health = if deploying {
        Health::Deploying
    } else if wanted == 0 {
        Health::Stopped
    } else if current >= wanted as usize {
        Health::Healthy
    } else if healthy == 0 {
        Health::Failing
    } else {
        Health::Degraded
    };
    Summary {
        health,
        healthy,
        total: live.len(),
        wanted,
    }
}

/// The instances of every service, when the server runs a scheduler (one lock of the
/// runtime's state for the whole page).
pub(crate) fn instances_of(
    state: &AppState,
    _services: &[Service],
) -> Option<BTreeMap<String, Vec<Instance>>> {
    state.all_instances()
}

/// Where a public service answers through the router.
pub(crate) fn service_url(state: &AppState, service: &Service) -> Option<String> {
    if !service.spec.public {
        return None;
    }
    let domain = &state.paz.config().domain;
    let port = match state.router_port {
        Some(80) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    Some(format!("http://{}.{domain}{port}/", service.spec.name))
}

/// "v3", or "—".
pub(crate) fn release_text(release: Option<u64>) -> String {
    release.map_or_else(|| "—".to_owned(), |r| format!("v{r}"))
}

/// What caused a deployment or release, in a word or two.
pub(crate) fn trigger_text(trigger: &paz_core::Trigger) -> String {
    let kind = match trigger.kind {
        paz_core::TriggerKind::Create => "create",
        paz_core::TriggerKind::Update => "update",
        paz_core::TriggerKind::Deploy => "deploy",
        paz_core::TriggerKind::Rollback => "rollback",
        paz_core::TriggerKind::Apply => "apply",
        paz_core::TriggerKind::Webhook => "webhook",
    };
    match &trigger.by {
        Some(by) => format!("{kind} by {by}"),
        None => kind.to_owned(),
    }
}

/// A table of deployments (newest first).
pub(crate) fn deployments_table(
    ctx: &Ctx,
    deployments: &[&Deployment],
    with_service: bool,
) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Deployment" }
                    @if with_service { th scope="col" { "Service" } }
                    th scope="col" { "Release" }
                    th scope="col" { "Status" }
                    th scope="col" { "Trigger" }
                    th scope="col" { "Started" }
                } }
                tbody {
                    @for d in deployments {
                        tr {
                            td { a href={"/deployments/" (d.id)} { (d.id) } }
                            @if with_service { td { a href={"/services/" (d.service)} { (d.service) } } }
                            td.num { "v" (d.release) }
                            td { (layout::deployment_status(d.status)) }
                            td { (trigger_text(&d.trigger)) }
                            td { (layout::ago(ctx, d.started_at.unwrap_or(d.created_at))) }
                        }
                    }
                }
            }
        }
    }
}

/// Whether a deployment is in progress.
pub(crate) fn running(status: DeploymentStatus) -> bool {
    !status.is_final()
}
