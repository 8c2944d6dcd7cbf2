//! The dashboard: is everything healthy, and what changed lately?

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use paz_core::HostStatus;

use super::{Health, Rendered, ctx, deployments_table, instances_of, summarize};
use crate::AppState;
use crate::ui::layout::{self, Ctx, Nav, Page};
use crate::ui::session::SessionView;
use crate::ui::{PageError, no_store};

/// How many recent deployments the dashboard lists.
const RECENT: usize = 8;
/// How many services needing attention it lists.
const ATTENTION: usize = 50;
/// How many services it shows with their instances.
const OVERVIEW: usize = 12;

/// The dashboard's live part.
pub(crate) async fn fragments(state: &AppState, ctx: &Ctx) -> Result<Rendered, PageError> {
    let services = state.paz.services().await?;
    let hosts = state.paz.hosts().await?;
    let instances = instances_of(state, &services);
    let latest = state.ui.inner.recent.latest(&state.paz, &services).await?;
    let mut counts = [0usize; 6];
    let (mut healthy_instances, mut all_instances) = (0, 0);
    let mut attention = Vec::new();
    let mut overview = Vec::new();
    for service in &services {
        let own = instances
            .as_ref()
            .map(|all| all.get(&service.spec.name).map_or(&[][..], Vec::as_slice));
        let summary = summarize(service, own, latest.of(&service.spec.name));
        counts[summary.health as usize] += 1;
        healthy_instances += summary.healthy;
        all_instances += summary.total;
        if let Some(own) = own {
            let rate = state.ui.inner.charts.rate(&service.spec.name);
            overview.push((service, summary, own, rate));
        }
        if summary.health.needs_attention() {
            let problem = state
                .reconciler()
                .as_ref()
                .and_then(|r| r.problems(&service.spec.name).into_iter().next());
            attention.push((service, summary, problem));
        }
    }
    attention.sort_by_key(|(s, summary, _)| (summary.health, s.spec.name.clone()));
    // Those needing attention first, then the busiest.
    overview.sort_by(|a, b| {
        a.1.health
            .cmp(&b.1.health)
            .then(b.3.unwrap_or(0.0).total_cmp(&a.3.unwrap_or(0.0)))
            .then(a.0.spec.name.cmp(&b.0.spec.name))
    });
    let mut recent: Vec<_> = latest.all().collect();
    recent.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let in_progress: Vec<_> = recent
        .iter()
        .copied()
        .filter(|d| super::running(d.status))
        .collect();
    recent.truncate(RECENT);
    let warnings = state
        .reconciler()
        .as_ref()
        .map(|r| r.warnings())
        .unwrap_or_default();
    let ready_hosts = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Ready)
        .count();
    let total_rate: f32 = overview.iter().filter_map(|o| o.3).sum();
    let count = |h: Health| counts[h as usize];
    let body = html! {
        section.stats aria-label="Summary" {
            div.stat {
                h2 { "Services" }
                p.big { (services.len()) }
                p {
                    @if instances.is_none() { "no scheduler: health unknown" } @else {
                        (count(Health::Healthy)) " healthy"
                        @if count(Health::Deploying) > 0 { " · " (count(Health::Deploying)) " deploying" }
                        @if count(Health::Degraded) > 0 { " · " span.warn-text { (count(Health::Degraded)) " degraded" } }
                        @if count(Health::Failing) > 0 { " · " span.bad-text { (count(Health::Failing)) " failing" } }
                        @if count(Health::Stopped) > 0 { " · " (count(Health::Stopped)) " stopped" }
                    }
                }
            }
            div.stat {
                h2 { "Instances" }
                p.big { (all_instances) }
                p { (healthy_instances) " healthy" }
            }
            div.stat {
                h2 { "Hosts" }
                p.big { (hosts.len()) }
                p { (ready_hosts) " ready" }
            }
            div.stat {
                h2 { "Requests" }
                p.big { (crate::ui::charts::trim_number(total_rate)) }
                p { "per second, through the router" }
            }
        }
        @for warning in &warnings {
            p.notice.bad role="alert" { (warning) }
        }
        section aria-labelledby="attention-h" {
            h2 #attention-h { "Needs attention" }
            @if attention.is_empty() {
                p.all-good { (layout::badge("ok", "●", "All good")) " "
                    @if services.is_empty() { "No services yet. " a href="/services/new" { "Create one" } "." }
                    @else { "Every service runs as declared." } }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Service" } th scope="col" { "State" }
                        th scope="col" class="num" { "Healthy" } th scope="col" { "Problem" } } }
                    tbody {
                        @for (service, summary, problem) in attention.iter().take(ATTENTION) {
                            tr {
                                td { a href={"/services/" (service.spec.name)} { (service.spec.name) } }
                                td { (summary.health.badge()) }
                                td.num { (summary.healthy) " / " (summary.wanted) }
                                td { (problem.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                } }
                @if attention.len() > ATTENTION {
                    p.muted { "and " (attention.len() - ATTENTION) " more: "
                        a href="/services?state=attention" { "see them all" } }
                }
            }
        }
        @if !overview.is_empty() {
            section aria-labelledby="services-h" {
                h2 #services-h { "Services" }
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Service" } th scope="col" { "State" }
                        th scope="col" { "Instances" } th scope="col" class="num" { "Healthy" }
                        th scope="col" class="num" { "Release" } th scope="col" class="num" { "Req/s" } } }
                    tbody {
                        @for (service, summary, own, rate) in overview.iter().take(OVERVIEW) {
                            @let live: Vec<_> = own.iter().filter(|i| i.state != paz_core::InstanceState::Stopped).cloned().collect();
                            tr {
                                td { a href={"/services/" (service.spec.name)} { (service.spec.name) } }
                                td { (summary.health.badge()) }
                                td { (layout::dots(&live)) }
                                td.num { (summary.healthy) " / " (summary.wanted) }
                                td.num { (super::release_text(service.current_release)) }
                                td.num { (rate.map(crate::ui::charts::trim_number).unwrap_or_else(|| "—".into())) }
                            }
                        }
                    }
                } }
                @if services.len() > OVERVIEW {
                    p.muted { a href="/services" { "All " (services.len()) " services" } }
                }
            }
        }
        @if !in_progress.is_empty() {
            section aria-labelledby="progress-h" {
                h2 #progress-h { "Deploying now" }
                (deployments_table(ctx, &in_progress, true))
            }
        }
        section aria-labelledby="recent-h" {
            h2 #recent-h { "Recent deployments" }
            @if recent.is_empty() { p.muted { "None yet." } }
            @else { (deployments_table(ctx, &recent, true)) }
        }
        section aria-labelledby="hosts-h" {
            h2 #hosts-h { "Hosts" }
            (super::hosts::table(&hosts))
        }
    };
    Ok(Rendered {
        fragments: vec![("dashboard", layout::fragment("dashboard", body))],
        services: services.into_iter().map(|s| s.spec.name).collect(),
    })
}

/// `GET /`.
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let mut rendered = fragments(&state, &ctx).await?;
    let body = html! {
        h1 { "Dashboard" }
        (rendered.take("dashboard"))
    };
    let mut response = layout::page(
        &ctx,
        Page {
            title: "Dashboard",
            nav: Nav::Dashboard,
            live: Some("/ui/live?view=dashboard".into()),
            body,
        },
    )
    .into_response();
    no_store(&mut response);
    Ok(response)
}
