//! The hosts: which machines, what runs where, are they alive?

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use paz_core::{Host, HostStatus, InstanceState};

use super::{Rendered, ctx, instances_of};
use crate::AppState;
use crate::ui::layout::{self, Ctx, Nav, Page};
use crate::ui::session::SessionView;
use crate::ui::{PageError, no_store};

fn status(status: HostStatus) -> Markup {
    match status {
        HostStatus::Ready => layout::badge("ok", "●", "ready"),
        HostStatus::Drained => layout::badge("info", "◑", "drained"),
        HostStatus::Down => layout::badge("bad", "✕", "down"),
    }
}

/// A table of hosts.
pub(crate) fn table(hosts: &[Host]) -> Markup {
    html! {
        @if hosts.is_empty() {
            p.muted { "No host has registered." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Host" } th scope="col" { "State" } th scope="col" { "Address" }
                    th scope="col" { "Paz" } th scope="col" { "Labels" }
                } }
                tbody {
                    @for host in hosts {
                        tr {
                            td { (host.name) @if host.id != host.name { br; span.muted.mono { (host.id) } } }
                            td { (status(host.status)) }
                            td.mono { (host.address) }
                            td { (host.version.as_deref().unwrap_or("—")) }
                            td { @for (k, v) in &host.labels { code.label { (k) "=" (v) } " " } }
                        }
                    }
                }
            } }
        }
    }
}

/// The hosts page's live part.
pub(crate) async fn fragments(state: &AppState, _ctx: &Ctx) -> Result<Rendered, PageError> {
    let hosts = state.paz.hosts().await?;
    let services = state.paz.services().await?;
    let instances = instances_of(state, &services);
    // host -> service -> its instances there
    let mut placed: BTreeMap<String, BTreeMap<String, Vec<paz_core::Instance>>> = BTreeMap::new();
    for (service, list) in instances.iter().flatten() {
        for instance in list {
            if instance.state == InstanceState::Stopped {
                continue;
            }
            placed
                .entry(instance.host.clone())
                .or_default()
                .entry(service.clone())
                .or_default()
                .push(instance.clone());
        }
    }
    let body = html! {
        (table(&hosts))
        h2 { "What runs where" }
        @if instances.is_none() {
            p.muted { "This server runs no scheduler (--scheduler none): no instances." }
        } @else if placed.is_empty() {
            p.muted { "No instances are running." }
        } @else {
            @for (host, services) in &placed {
                section.card {
                    h3 { (host) }
                    ul.placed {
                        @for (service, list) in services {
                            @let healthy = list.iter().filter(|i| i.state == InstanceState::Healthy).count();
                            li {
                                a href={"/services/" (service)} { (service) } " "
                                (layout::dots(list)) " "
                                span.muted.num { (healthy) " of " (list.len()) " healthy" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Rendered {
        fragments: vec![("hosts", layout::fragment("hosts", body))],
        services: services.into_iter().map(|s| s.spec.name).collect(),
    })
}

/// `GET /hosts`.
pub(crate) async fn hosts(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let mut rendered = fragments(&state, &ctx).await?;
    let body = html! { h1 { "Hosts" } (rendered.take("hosts")) };
    let mut response = layout::page(
        &ctx,
        Page {
            title: "Hosts",
            nav: Nav::Hosts,
            live: Some("/ui/live?view=hosts".into()),
            body,
        },
    )
    .into_response();
    no_store(&mut response);
    Ok(response)
}
