//! One deployment: what it is doing right now, step by step, and if it failed, why.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use paz_core::InstanceState;

use super::{Rendered, Segment, ctx, running, trigger_text};
use crate::AppState;
use crate::ui::layout::{self, Ctx, Nav, Page};
use crate::ui::session::SessionView;
use crate::ui::{PageError, no_store};

/// The live part of a deployment's page.
pub(crate) async fn fragments(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
) -> Result<Rendered, PageError> {
    let deployment = state.paz.deployment(id).await?;
    let name = deployment.service.clone();
    let release = state.paz.release(&name, deployment.release).await.ok();
    let instances = state.instances(&name).map(|all| {
        let mut list: Vec<_> = all
            .into_iter()
            .filter(|i| i.release == deployment.release && i.state != InstanceState::Stopped)
            .collect();
        list.sort_by_key(|i| i.slot);
        list
    });
    let took = deployment
        .finished_at
        .zip(deployment.started_at)
        .map(|(end, start)| end.as_millisecond() - start.as_millisecond());
    let body = html! {
        dl.facts {
            div { dt { "Status" } dd { (layout::deployment_status(deployment.status)) } }
            div { dt { "Service" } dd { a href={"/services/" (name)} { (name) } } }
            div { dt { "Release" } dd { "v" (deployment.release)
                @if let Some(p) = deployment.previous_release { " (from v" (p) ")" } } }
            @if let Some(release) = &release {
                div { dt { "Image" } dd.mono { (release.spec.image) } }
            }
            div { dt { "Strategy" } dd { (format!("{:?}", deployment.strategy).to_lowercase()) } }
            div { dt { "Trigger" } dd { (trigger_text(&deployment.trigger)) } }
            div { dt { "Recorded" } dd { (layout::ago(ctx, deployment.created_at)) } }
            @if let Some(ms) = took {
                div { dt { "Took" } dd { (format!("{:.1} s", ms as f64 / 1000.0)) } }
            }
        }
        @if let Some(error) = &deployment.error {
            p.notice.bad role="alert" { strong { "Why it failed: " } (error) }
        }
        @if running(deployment.status) {
            p.running { span.spinner aria-hidden="true" {} "In progress: steps appear here as they happen." }
            form.inline method="post" action={"/services/" (name) "/abort"}
                data-confirm={"Abort " (deployment.id) "? The previous release keeps serving."} {
                (layout::csrf(ctx))
                button.danger type="submit" { "Abort" }
            }
        }
        h2 { "Steps" }
        @if deployment.steps.is_empty() {
            p.muted { "No step yet: waiting for the runtime." }
        } @else {
            ol.steps {
                @for step in &deployment.steps {
                    li {
                        (layout::step_status(step.status)) " "
                        span.step-name title=(step.name) { (layout::short_ids(&step.name)) }
                        @if let Some(m) = &step.message { " " span.muted { (layout::short_ids(m)) } }
                        @if let Some(t) = step.started_at { " " span.when { (layout::ago(ctx, t)) } }
                    }
                }
            }
        }
        h2 { "Instances of v" (deployment.release) }
        @match &instances {
            None => p.muted { "This server runs no scheduler." },
            Some(list) if list.is_empty() => p.muted { "None running." },
            Some(list) => ul.instances {
                @for i in list {
                    li {
                        span.mono { (layout::short_id(&i.id)) } " #" (i.slot) " "
                        (layout::instance_state(i.state))
                        @if let Some(m) = &i.message { " " span.muted { (m) } }
                        " " a href={"/services/" (name) "/logs?instance=" (i.id)} { "logs" }
                    }
                }
            },
        }
    };
    Ok(Rendered {
        fragments: vec![("deployment", layout::fragment("deployment", body))],
        services: vec![name],
    })
}

/// `GET /deployments/{id}`.
pub(crate) async fn deployment(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(id): Segment,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let mut rendered = fragments(&state, &ctx, &id).await?;
    let service = rendered.services.first().cloned().unwrap_or_default();
    let body = html! {
        div.heading {
            h1 { "Deployment " (id) }
            div.actions {
                a.button href={"/services/" (service)} { "Service" }
                a.button href={"/services/" (service) "/logs"} { "Logs" }
            }
        }
        (rendered.take("deployment"))
    };
    let live = serde_urlencoded::to_string([("view", "deployment"), ("id", id.as_str())])
        .unwrap_or_default();
    let mut response = layout::page(
        &ctx,
        Page {
            title: &format!("Deployment {id}"),
            nav: Nav::Services,
            live: Some(format!("/ui/live?{live}")),
            body,
        },
    )
    .into_response();
    no_store(&mut response);
    Ok(response)
}
