//! One service: what runs now, what ran before, how it is doing; and its actions (deploy,
//! scale, roll back, promote or abort a canary, delete).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use paz_core::{Deployment, InstanceState, Release, Strategy, TriggerKind};
use serde::Deserialize;

use super::services::ui_trigger;
use super::{
    Rendered, Segment, ctx, deployments_table, release_text, running, service_url, summarize,
    trigger_text,
};
use crate::AppState;
use crate::ui::charts::{self, Line};
use crate::ui::form::field_for;
use crate::ui::layout::{self, Ctx, Nav, Page};
use crate::ui::session::{Csrf, NoFields, SessionView};
use crate::ui::{PageError, no_store};

/// How many deployments the service page lists.
const HISTORY: usize = 10;

/// Makes the service due at once (its engine event does too; this saves the hop).
pub(crate) fn wake(state: &AppState, name: &str) {
    if let Some(reconciler) = &state.reconciler() {
        reconciler.wake(name);
    }
}

/// What the action forms show: the values sent and the errors next to them.
#[derive(Default)]
struct Actions {
    image: Option<String>,
    image_error: Option<String>,
    instances: Option<String>,
    instances_error: Option<String>,
}

fn canary_controls(ctx: &Ctx, deployment: &Deployment, release: Option<&Release>) -> Markup {
    let steps = release
        .map(|r| r.spec.deploy.canary_steps.clone())
        .unwrap_or_default();
    let percent = steps.get(deployment.canary_step as usize).copied();
    let last = deployment.canary_step as usize + 1 >= steps.len();
    let service = &deployment.service;
    html! {
        div.controls {
            @if deployment.strategy == Strategy::Canary {
                p { "Canary: " strong { (percent.map_or_else(|| "?".into(), |p| format!("{p}%"))) }
                    " of traffic goes to v" (deployment.release) "." }
                @if !last {
                    form.inline method="post" action={"/services/" (service) "/promote"} {
                        (layout::csrf(ctx))
                        button.primary type="submit" {
                            "Promote to " (steps.get(deployment.canary_step as usize + 1).map_or_else(|| "the next step".into(), |p| format!("{p}%")))
                        }
                    }
                }
            }
            form.inline method="post" action={"/services/" (service) "/abort"}
                data-confirm={"Abort deployment " (deployment.id) "? The previous release keeps serving."} {
                (layout::csrf(ctx))
                button.danger type="submit" { "Abort " (deployment.id) }
            }
        }
    }
}

/// The live parts of a service's page.
pub(crate) async fn fragments(
    state: &AppState,
    ctx: &Ctx,
    name: &str,
) -> Result<Rendered, PageError> {
    let service = state.paz.service(name).await?;
    let releases = state.paz.releases(name).await?;
    let history = state.paz.deployments(name).await?;
    let latest = history.last();
    let instances = state.instances(name);
    let mut problems = state
        .reconciler()
        .as_ref()
        .map(|r| r.problems(name))
        .unwrap_or_default();
    if let Some(certificates) = &state.certificates {
        problems.extend(certificates.problems(&service.spec.hostnames(&state.paz.config().domain)));
    }
    let summary = summarize(&service, instances.as_deref(), latest);
    let current = releases
        .iter()
        .find(|r| Some(r.version) == service.current_release);
    let summary_html = html! {
        dl.facts {
            div { dt { "State" } dd { (summary.health.badge()) } }
            div { dt { "Instances" } dd.num {
                @if instances.is_some() { (summary.healthy) " healthy of " (summary.wanted) }
                @else { (summary.wanted) " wanted (no scheduler)" }
            } }
            div { dt { "URL" } dd {
                @if let Some(url) = service_url(state, &service) { a href=(url) { (url) } }
                @else { span.muted { "internal only: http://" (name) ".paz/" } }
            } }
            div { dt { "Release" } dd { (release_text(service.current_release)) } }
            div { dt { "Image" } dd.mono { (service.spec.image) } }
            @if let Some(digest) = current.and_then(|r| r.image_digest.as_deref()) {
                div { dt { "Digest" } dd.mono.clip title=(digest) { (digest) } }
            }
        }
        @for problem in &problems {
            p.notice.bad role="alert" { (problem) }
        }
    };
    let mut sorted = instances.clone().unwrap_or_default();
    sorted.sort_by(|a, b| b.release.cmp(&a.release).then(a.slot.cmp(&b.slot)));
    let instances_html = html! {
        @match &instances {
            None => p.muted { "This server runs no scheduler (--scheduler none): no instances." },
            Some(_) if sorted.is_empty() => p.muted { "No instances." },
            Some(_) => div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Instance" } th scope="col" class="num" { "Release" }
                    th scope="col" { "State" } th scope="col" { "Host" } th scope="col" { "Address" }
                    th scope="col" class="num" { "Age" } th scope="col" { span.visually-hidden { "Logs" } }
                } }
                tbody {
                    @for i in &sorted {
                        tr.instance data-state=(format!("{:?}", i.state).to_lowercase()) {
                            td.mono title=(i.id) { (layout::short_id(&i.id)) " " span.muted { "#" (i.slot) } }
                            td.num { "v" (i.release) }
                            td { (layout::instance_state(i.state))
                                @if let Some(m) = &i.message { " " span.muted { (m) } } }
                            td { (i.host) }
                            td.mono { (i.address.as_deref().unwrap_or("—")) }
                            td.num { @if let Some(t) = i.started_at { (layout::age(ctx, t)) } @else { "—" } }
                            td { @if i.state != InstanceState::Stopped {
                                a href={"/services/" (name) "/logs?instance=" (i.id)} { "logs" } } }
                        }
                    }
                }
            } },
        }
    };
    let deployment_html = html! {
        @match latest {
            None => p.muted { "No deployment yet." },
            Some(d) => {
                p {
                    a href={"/deployments/" (d.id)} { (d.id) } " "
                    (layout::deployment_status(d.status))
                    " of v" (d.release)
                    @if let Some(p) = d.previous_release { " (from v" (p) ")" }
                    ", " (trigger_text(&d.trigger)) ", " (layout::ago(ctx, d.created_at))
                }
                @if let Some(step) = d.steps.last() {
                    p.muted { "Last step: " (layout::short_ids(&step.name)) @if let Some(m) = &step.message { ": " (layout::short_ids(m)) } }
                }
                @if let Some(error) = &d.error { p.notice.bad { (error) } }
                @if running(d.status) {
                    (canary_controls(ctx, d, releases.iter().find(|r| r.version == d.release)))
                }
            }
        }
    };
    let releases_html = html! {
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Release" } th scope="col" { "Image" } th scope="col" { "Trigger" }
                th scope="col" { "Made" } th scope="col" { span.visually-hidden { "Action" } }
            } }
            tbody {
                @for r in releases.iter().rev() {
                    tr {
                        td.num { "v" (r.version) }
                        td.mono.clip title=(r.image_digest.as_deref().unwrap_or(&r.spec.image)) { (r.spec.image) }
                        td { (trigger_text(&r.trigger)) }
                        td { (layout::ago(ctx, r.created_at)) }
                        td {
                            @if Some(r.version) == service.current_release {
                                (layout::badge("ok", "●", "current"))
                            } @else {
                                a.button.small href={"/services/" (name) "/rollback?to=" (r.version)}
                                    aria-label={"Roll back " (name) " to v" (r.version)} { "Roll back to v" (r.version) }
                            }
                        }
                    }
                }
            }
        } }
        @if service.pruned_below > 1 {
            p.muted { "Releases before v" (service.pruned_below) " were pruned (the newest are kept)." }
        }
    };
    let recent: Vec<&Deployment> = history.iter().rev().take(HISTORY).collect();
    let history_html = html! {
        @if recent.is_empty() { p.muted { "None yet." } }
        @else { (deployments_table(ctx, &recent, false)) }
    };
    let charts_html = charts_of(state, ctx, name);
    Ok(Rendered {
        fragments: vec![
            ("svc-summary", layout::fragment("svc-summary", summary_html)),
            (
                "svc-deployment",
                layout::fragment("svc-deployment", deployment_html),
            ),
            (
                "svc-instances",
                layout::fragment("svc-instances", instances_html),
            ),
            ("svc-charts", layout::fragment("svc-charts", charts_html)),
            (
                "svc-releases",
                layout::fragment("svc-releases", releases_html),
            ),
            ("svc-history", layout::fragment("svc-history", history_html)),
        ],
        services: vec![name.to_owned()],
    })
}

fn charts_of(state: &AppState, ctx: &Ctx, name: &str) -> Markup {
    if state.metrics.is_none() {
        return html! { p.muted { "This server runs no router: no request metrics." } };
    }
    let points = state.ui.inner.charts.points(name);
    let Some(last) = points.last().copied() else {
        return html! { p.muted { "No requests through the router in the last hour." } };
    };
    let now = ctx.now.as_second();
    let series = |f: fn(&charts::Point) -> Option<f32>| -> Vec<(i64, Option<f32>)> {
        points.iter().map(|p| (p.at, f(p))).collect()
    };
    let ms = |v: Option<f32>| {
        v.map_or_else(
            || "—".to_owned(),
            |v| format!("{} ms", charts::trim_number(v)),
        )
    };
    let rate = charts::svg(
        &[Line {
            class: "main",
            values: series(|p| Some(p.rate)),
        }],
        now,
        &format!(
            "Requests per second over the last hour; now {}",
            charts::trim_number(last.rate)
        ),
    );
    let latency = charts::svg(
        &[
            Line {
                class: "p99",
                values: series(|p| p.p99),
            },
            Line {
                class: "p95",
                values: series(|p| p.p95),
            },
            Line {
                class: "main",
                values: series(|p| p.p50),
            },
        ],
        now,
        &format!(
            "Latency over the last hour; now p50 {}, p95 {}, p99 {}",
            ms(last.p50),
            ms(last.p95),
            ms(last.p99)
        ),
    );
    let errors = charts::svg(
        &[Line {
            class: "bad",
            values: series(|p| p.errors),
        }],
        now,
        &format!(
            "Share of 5xx answers over the last hour; now {} %",
            last.errors.map_or_else(|| "—".into(), charts::trim_number)
        ),
    );
    let chart = |(svg, top): (String, f32), unit: &str| {
        html! {
            div.chart-box {
                (layout::trusted(svg))
                span.scale aria-hidden="true" { (charts::trim_number(top)) " " (unit) }
            }
        }
    };
    html! {
        div.charts {
            figure {
                figcaption { "Requests " strong { (charts::trim_number(last.rate)) " /s" } }
                (chart(rate, "req/s"))
            }
            figure {
                figcaption { "Latency " strong { "p50 " (ms(last.p50)) } " · p95 " (ms(last.p95)) " · p99 " (ms(last.p99)) }
                (chart(latency, "ms"))
            }
            figure {
                figcaption { "Errors " strong { (last.errors.map_or_else(|| "—".into(), charts::trim_number)) " %" } }
                (chart(errors, "%"))
            }
        }
        p.muted.small { "From the router's own metrics, sampled every " (charts::SAMPLE_EVERY.as_secs()) " s"
            @if let Some(first) = points.first().and_then(|p| jiff::Timestamp::from_second(p.at).ok()) {
                ", since " (layout::ago(ctx, first))
            } "." }
    }
}

async fn page(
    state: &AppState,
    ctx: &Ctx,
    name: &str,
    actions: &Actions,
    status: StatusCode,
) -> Result<Response, PageError> {
    let mut rendered = fragments(state, ctx, name).await?;
    let service = state.paz.service(name).await?;
    let secrets = state.paz.secrets(name).await.unwrap_or_default();
    let image_value = actions
        .image
        .clone()
        .unwrap_or_else(|| service.spec.image.clone());
    let instances_value = actions
        .instances
        .clone()
        .unwrap_or_else(|| service.spec.instances.to_string());
    let body = html! {
        div.heading {
            h1 { (name) }
            div.actions {
                a.button href={"/services/" (name) "/logs"} { "Logs" }
                a.button href={"/services/" (name) "/edit"} { "Edit" }
                a.button.danger href={"/services/" (name) "/delete"} { "Delete" }
            }
        }
        (rendered.take("svc-summary"))
        section aria-labelledby="instances-h" {
            h2 #instances-h { "Instances" }
            (rendered.take("svc-instances"))
        }
        section aria-labelledby="current-h" {
            h2 #current-h { "Current deployment" }
            (rendered.take("svc-deployment"))
        }
        section aria-labelledby="charts-h" {
            h2 #charts-h { "Traffic, last hour" }
            (rendered.take("svc-charts"))
        }
        section.card.act aria-labelledby="act-h" {
            h2 #act-h .visually-hidden { "Deploy and scale" }
            form method="post" action={"/services/" (name) "/deploy"} novalidate {
                (layout::csrf(ctx))
                div.field.invalid[actions.image_error.is_some()] {
                    label for="deploy-image" { "Deploy an image" }
                    div.inline-field {
                        input #deploy-image name="image" type="text" value=(image_value) spellcheck="false"
                            autocomplete="off"
                            aria-invalid=[actions.image_error.as_ref().map(|_| "true")]
                            aria-describedby="hint-deploy-image err-deploy-image";
                        button.primary type="submit" { "Deploy" }
                    }
                    p.hint #hint-deploy-image { "Makes a new release; the same image releases the spec again." }
                    @if let Some(error) = &actions.image_error { p.error #err-deploy-image { (error) } }
                }
            }
            form method="post" action={"/services/" (name) "/scale"} novalidate {
                (layout::csrf(ctx))
                div.field.invalid[actions.instances_error.is_some()] {
                    label for="scale-instances" { "Instances" }
                    div.inline-field {
                        input #scale-instances name="instances" type="number" min="0" max="1000"
                            value=(instances_value)
                            aria-invalid=[actions.instances_error.as_ref().map(|_| "true")]
                            aria-describedby="err-scale-instances";
                        button type="submit" { "Scale" }
                    }
                    @if let Some(error) = &actions.instances_error { p.error #err-scale-instances { (error) } }
                }
            }
        }
        section aria-labelledby="releases-h" {
            h2 #releases-h { "Releases" }
            (rendered.take("svc-releases"))
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "Deployments" }
            (rendered.take("svc-history"))
        }
        section aria-labelledby="secrets-h" {
            h2 #secrets-h { "Secrets" }
            @if secrets.is_empty() {
                p.muted { "None. Set them with " code { "paz secret set " (name) " NAME" } "; values are never shown." }
            } @else {
                ul.secrets { @for s in &secrets { li { code { (s.name) } " set " (layout::ago(ctx, s.set_at)) } } }
            }
        }
    };
    let live =
        serde_urlencoded::to_string([("view", "service"), ("name", name)]).unwrap_or_default();
    let mut response = (
        status,
        layout::page(
            ctx,
            Page {
                title: name,
                nav: Nav::Services,
                live: Some(format!("/ui/live?{live}")),
                body,
            },
        ),
    )
        .into_response();
    no_store(&mut response);
    Ok(response)
}

/// `GET /services/{name}`.
pub(crate) async fn service(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(name): Segment,
) -> Result<Response, PageError> {
    page(
        &state,
        &ctx(&session),
        &name,
        &Actions::default(),
        StatusCode::OK,
    )
    .await
}

/// The deploy form.
#[derive(Deserialize)]
pub(crate) struct DeployForm {
    #[serde(default)]
    image: String,
}

/// `POST /services/{name}/deploy`: a new release, then the deployment's page.
pub(crate) async fn deploy(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, form): Csrf<DeployForm>,
) -> Result<Response, PageError> {
    let image = Some(form.image.trim().to_owned()).filter(|i| !i.is_empty());
    match state
        .paz
        .deploy(&name, image.clone(), ui_trigger(TriggerKind::Deploy))
        .await
    {
        Ok(deployment) => {
            wake(&state, &name);
            Ok(Redirect::to(&format!("/deployments/{}", deployment.id)).into_response())
        }
        Err(paz_core::Error::Validation(errors)) => {
            let message = errors
                .0
                .iter()
                .filter(|e| field_for(&e.field) == Some("image"))
                .map(|e| e.message.clone())
                .next()
                .unwrap_or_else(|| errors.to_string());
            let actions = Actions {
                image: Some(form.image),
                image_error: Some(message),
                ..Actions::default()
            };
            page(
                &state,
                &ctx(&session),
                &name,
                &actions,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

/// The scale form.
#[derive(Deserialize)]
pub(crate) struct ScaleForm {
    #[serde(default)]
    instances: String,
}

/// `POST /services/{name}/scale`.
pub(crate) async fn scale(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, form): Csrf<ScaleForm>,
) -> Result<Response, PageError> {
    let text = form.instances.trim();
    let failed = |message: String| Actions {
        instances: Some(form.instances.clone()),
        instances_error: Some(message),
        ..Actions::default()
    };
    let Ok(instances) = text.parse::<u32>() else {
        let actions = failed(format!(
            "instances {text:?} is not a whole number from 0 to {}",
            paz_core::service::MAX_INSTANCES
        ));
        return page(
            &state,
            &ctx(&session),
            &name,
            &actions,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    match state.paz.scale(&name, instances).await {
        Ok(service) => {
            wake(&state, &name);
            state.ui.inner.sessions.flash(
                &session.key,
                format!("Scaled {name} to {} instances.", service.spec.instances),
            );
            Ok(Redirect::to(&format!("/services/{name}")).into_response())
        }
        Err(paz_core::Error::Validation(errors)) => {
            let actions = failed(errors.first().message.clone());
            page(
                &state,
                &ctx(&session),
                &name,
                &actions,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

/// `POST /services/{name}/promote`: the canary's next traffic step.
pub(crate) async fn promote(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, NoFields {}): Csrf<NoFields>,
) -> Result<Response, PageError> {
    let result = state.paz.promote(&name).await;
    finish_action(&state, &session, &name, result, "Promoted")
}

/// `POST /services/{name}/abort`: the running deployment fails; the previous release keeps
/// serving.
pub(crate) async fn abort(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, NoFields {}): Csrf<NoFields>,
) -> Result<Response, PageError> {
    let result = state.paz.abort(&name).await;
    finish_action(&state, &session, &name, result, "Aborted")
}

fn finish_action(
    state: &AppState,
    session: &SessionView,
    name: &str,
    result: paz_core::Result<Deployment>,
    done: &str,
) -> Result<Response, PageError> {
    match result {
        Ok(deployment) => {
            wake(state, name);
            state
                .ui
                .inner
                .sessions
                .flash(&session.key, format!("{done} {}.", deployment.id));
            Ok(Redirect::to(&format!("/deployments/{}", deployment.id)).into_response())
        }
        Err(paz_core::Error::InvalidState(message)) => {
            state.ui.inner.sessions.flash(&session.key, message);
            Ok(Redirect::to(&format!("/services/{name}")).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// `?to=` of the rollback page.
#[derive(Deserialize)]
pub(crate) struct RollbackQuery {
    to: Option<u64>,
}

/// The rollback form.
#[derive(Deserialize)]
pub(crate) struct RollbackForm {
    to: Option<u64>,
}

/// `GET /services/{name}/rollback?to=N`: says what the rollback will do and asks.
pub(crate) async fn rollback_page(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(name): Segment,
    Query(query): Query<RollbackQuery>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let service = state.paz.service(&name).await?;
    let releases = state.paz.releases(&name).await?;
    let current = service.current_release.unwrap_or(0);
    let target = match query.to {
        Some(to) => to,
        None => releases
            .iter()
            .rev()
            .map(|r| r.version)
            .find(|&v| v < current)
            .ok_or_else(|| {
                PageError::new(
                    StatusCode::CONFLICT,
                    format!("{name} has no release before v{current} to roll back to"),
                )
            })?,
    };
    let release = state.paz.release(&name, target).await?;
    let now = releases.iter().find(|r| r.version == current);
    let body = html! {
        section.card.narrow {
            h1 { "Roll back " (name) " to v" (target) "?" }
            p {
                "This deploys release v" (target) " (image " code { (release.spec.image) } ", made "
                (layout::ago(&ctx, release.created_at)) ")"
                @if let Some(now) = now { " in place of v" (now.version) " (" code { (now.spec.image) } ")" }
                ", with the " (release.spec.deploy.strategy_word()) " strategy. The service keeps its "
                (service.spec.instances) " instances; release v" (target) "'s settings and secrets come back."
            }
            form method="post" action={"/services/" (name) "/rollback"} {
                (layout::csrf(&ctx))
                input type="hidden" name="to" value=(target);
                div.actions {
                    button.primary type="submit" { "Roll back " (name) " to v" (target) }
                    a href={"/services/" (name)} { "Cancel" }
                }
            }
        }
    };
    let mut response = layout::page(
        &ctx,
        Page {
            title: &format!("Roll back {name}"),
            nav: Nav::Services,
            live: None,
            body,
        },
    )
    .into_response();
    no_store(&mut response);
    Ok(response)
}

/// `POST /services/{name}/rollback`.
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, form): Csrf<RollbackForm>,
) -> Result<Response, PageError> {
    let result = state
        .paz
        .rollback(&name, form.to, ui_trigger(TriggerKind::Rollback))
        .await;
    finish_action(&state, &session, &name, result, "Rolling back with")
}

/// `GET /services/{name}/delete`: says what deleting removes and asks for the name.
pub(crate) async fn delete_page(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(name): Segment,
) -> Result<Response, PageError> {
    delete_form(&state, &ctx(&session), &name, None, StatusCode::OK).await
}

async fn delete_form(
    state: &AppState,
    ctx: &Ctx,
    name: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let service = state.paz.service(name).await?;
    let instances = state.reconciler().as_ref().map_or(0, |r| {
        r.instances(name)
            .iter()
            .filter(|i| i.state != InstanceState::Stopped)
            .count()
    });
    let body = html! {
        section.card.narrow {
            h1 { "Delete " (name) "?" }
            p {
                "This stops and removes its " (instances) " running instances, and deletes its "
                (service.latest_release.saturating_sub(service.pruned_below.saturating_sub(1))) " releases, its deployment history and its secrets. "
                strong { "It cannot be undone." }
            }
            form method="post" action={"/services/" (name) "/delete"} novalidate {
                (layout::csrf(ctx))
                div.field.invalid[error.is_some()] {
                    label for="confirm" { "Type " strong { (name) } " to confirm" }
                    input #confirm name="confirm" type="text" autocomplete="off" spellcheck="false"
                        aria-invalid=[error.map(|_| "true")] aria-describedby="err-confirm";
                    @if let Some(error) = error { p.error #err-confirm { (error) } }
                }
                div.actions {
                    button.danger type="submit" { "Delete " (name) }
                    a href={"/services/" (name)} { "Cancel" }
                }
            }
        }
    };
    let mut response = (
        status,
        layout::page(
            ctx,
            Page {
                title: &format!("Delete {name}"),
                nav: Nav::Services,
                live: None,
                body,
            },
        ),
    )
        .into_response();
    no_store(&mut response);
    Ok(response)
}

/// The delete form.
#[derive(Deserialize)]
pub(crate) struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /services/{name}/delete`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, form): Csrf<DeleteForm>,
) -> Result<Response, PageError> {
    if form.confirm.trim() != name {
        return delete_form(
            &state,
            &ctx(&session),
            &name,
            Some(&format!("Type the name, {name}, exactly.")),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    state.paz.delete_service(&name, None).await?;
    wake(&state, &name);
    state
        .ui
        .inner
        .sessions
        .flash(&session.key, format!("Deleted {name}."));
    Ok(Redirect::to("/services").into_response())
}

trait StrategyWord {
    fn strategy_word(&self) -> &'static str;
}

impl StrategyWord for paz_core::DeploySettings {
    fn strategy_word(&self) -> &'static str {
        match self.strategy {
            Strategy::Rolling => "rolling",
            Strategy::Recreate => "recreate",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
        }
    }
}
