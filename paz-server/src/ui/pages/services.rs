//! The services list, and the form that creates or edits one.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use paz_core::error::FieldError;
use paz_core::{Trigger, TriggerKind};
use serde::Deserialize;

use super::{Health, Rendered, Segment, ctx, instances_of, release_text, service_url, summarize};
use crate::AppState;
use crate::ui::form::{ServiceForm, by_field};
use crate::ui::layout::{self, Ctx, Nav, Page};
use crate::ui::session::{Csrf, SessionView};
use crate::ui::{PageError, no_store};

/// The trigger of a change made in the UI.
pub(crate) fn ui_trigger(kind: TriggerKind) -> Trigger {
    Trigger {
        kind,
        by: Some("web UI".into()),
        message: None,
    }
}

/// The services page's filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Filter {
    /// Part of a name or an image.
    pub q: String,
    /// `attention`: only services that are failing or degraded.
    pub state: String,
}

/// The services list's live part.
pub(crate) async fn fragments(
    state: &AppState,
    ctx: &Ctx,
    filter: &Filter,
) -> Result<Rendered, PageError> {
    let services = state.paz.services().await?;
    let instances = instances_of(state, &services);
    let latest = state.ui.inner.recent.latest(&state.paz, &services).await?;
    let q = filter.q.trim().to_lowercase();
    let only_attention = filter.state == "attention";
    let shown: Vec<_> = services
        .iter()
        .map(|service| {
            let name = &service.spec.name;
            let own = instances
                .as_ref()
                .map(|all| all.get(name).map_or(&[][..], Vec::as_slice));
            let deployment = latest.of(name);
            (service, summarize(service, own, deployment), deployment)
        })
        .filter(|(service, summary, _)| {
            (q.is_empty()
                || service.spec.name.contains(&q)
                || service.spec.image.to_lowercase().contains(&q))
                && (!only_attention || summary.health.needs_attention())
        })
        .collect();
    let rows = html! {
        @for (service, summary, deployment) in &shown {
            @let name = &service.spec.name;
            tr data-search={(name) " " (service.spec.image.to_lowercase())} {
                td { a href={"/services/" (name)} { (name) } }
                td { (summary.health.badge()) }
                td.num {
                    @if summary.health == Health::Unknown { "—" }
                    @else { (summary.healthy) " / " (summary.wanted) }
                }
                td.num { (release_text(service.current_release)) }
                td.mono.clip title=(service.spec.image) { (service.spec.image) }
                td { @if let Some(url) = service_url(state, service) { a href=(url) { (url) } } @else { span.muted { "internal" } } }
                td.num { (state.ui.inner.charts.rate(name).map(crate::ui::charts::trim_number).unwrap_or_else(|| "—".into())) }
                td { @if let Some(d) = deployment {
                    a href={"/deployments/" (d.id)} { (layout::deployment_status(d.status)) }
                    " " (layout::ago(ctx, d.created_at))
                } }
            }
        }
    };
    let body = html! {
        @if services.is_empty() {
            p.muted { "No services yet. " a href="/services/new" { "Create the first one" } "." }
        } @else {
            p.muted.count { (shown.len()) " of " (services.len()) " services" }
            div.table-wrap { table #services-table {
                thead { tr {
                    th scope="col" { "Service" } th scope="col" { "State" }
                    th scope="col" class="num" { "Healthy" } th scope="col" class="num" { "Release" }
                    th scope="col" { "Image" } th scope="col" { "URL" }
                    th scope="col" class="num" { "Req/s" } th scope="col" { "Last deployment" }
                } }
                tbody { (rows) }
            } }
        }
    };
    Ok(Rendered {
        fragments: vec![("services", layout::fragment("services", body))],
        services: services.into_iter().map(|s| s.spec.name).collect(),
    })
}

/// `GET /services`.
pub(crate) async fn services(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Query(filter): Query<Filter>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let mut rendered = fragments(&state, &ctx, &filter).await?;
    let live = serde_urlencoded::to_string([
        ("view", "services"),
        ("q", filter.q.as_str()),
        ("state", filter.state.as_str()),
    ])
    .unwrap_or_default();
    let body = html! {
        div.heading {
            h1 { "Services" }
            a.button.primary href="/services/new" { "New service" }
        }
        form.filter method="get" action="/services" role="search" {
            label for="q" { "Filter" }
            input #q type="search" name="q" value=(filter.q) placeholder="name or image" autocomplete="off";
            label for="state" class="visually-hidden" { "Show" }
            select #state name="state" {
                option value="" selected[filter.state != "attention"] { "All services" }
                option value="attention" selected[filter.state == "attention"] { "Needing attention" }
            }
            button type="submit" { "Filter" }
        }
        (rendered.take("services"))
    };
    let mut response = layout::page(
        &ctx,
        Page {
            title: "Services",
            nav: Nav::Services,
            live: Some(format!("/ui/live?{live}")),
            body,
        },
    )
    .into_response();
    no_store(&mut response);
    Ok(response)
}

/// Which form: a new service, or the edit of one.
enum Mode<'a> {
    New,
    Edit(&'a str),
}

fn errors_of<'a>(
    errors: &'a BTreeMap<&'static str, Vec<String>>,
    name: &str,
) -> Option<&'a Vec<String>> {
    errors.get(name).filter(|e| !e.is_empty())
}

fn described(name: &str, hint: bool, error: bool) -> Option<String> {
    let ids: Vec<String> = [
        hint.then(|| format!("hint-{name}")),
        error.then(|| format!("err-{name}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!ids.is_empty()).then(|| ids.join(" "))
}

fn messages(name: &str, errors: Option<&Vec<String>>) -> Markup {
    html! {
        @if let Some(errors) = errors {
            p.error id={"err-" (name)} { @for (i, e) in errors.iter().enumerate() { @if i > 0 { br; } (e) } }
        }
    }
}

fn hint_of(name: &str, hint: Option<&str>) -> Markup {
    html! { @if let Some(hint) = hint { p.hint id={"hint-" (name)} { (hint) } } }
}

#[allow(clippy::too_many_arguments)]
fn text(
    errors: &BTreeMap<&'static str, Vec<String>>,
    name: &'static str,
    label: &str,
    hint: Option<&str>,
    value: &str,
    kind: &str,
    placeholder: Option<&str>,
    readonly: bool,
) -> Markup {
    let error = errors_of(errors, name);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(name) { (label) }
            input id=(name) name=(name) type=(kind) value=(value) placeholder=[placeholder]
                readonly[readonly] spellcheck="false" autocomplete="off"
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[described(name, hint.is_some(), error.is_some())];
            (hint_of(name, hint))
            (messages(name, error))
        }
    }
}

fn area(
    errors: &BTreeMap<&'static str, Vec<String>>,
    name: &'static str,
    label: &str,
    hint: Option<&str>,
    value: &str,
    rows: u32,
) -> Markup {
    let error = errors_of(errors, name);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(name) { (label) }
            textarea id=(name) name=(name) rows=(rows) spellcheck="false"
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[described(name, hint.is_some(), error.is_some())] { (value) }
            (hint_of(name, hint))
            (messages(name, error))
        }
    }
}

fn check(
    errors: &BTreeMap<&'static str, Vec<String>>,
    name: &'static str,
    label: &str,
    hint: Option<&str>,
    checked: bool,
) -> Markup {
    let error = errors_of(errors, name);
    html! {
        div.field.check.invalid[error.is_some()] {
            input id=(name) name=(name) type="checkbox" value="on" checked[checked]
                aria-describedby=[described(name, hint.is_some(), error.is_some())];
            label for=(name) { (label) }
            (hint_of(name, hint))
            (messages(name, error))
        }
    }
}

fn choice(
    errors: &BTreeMap<&'static str, Vec<String>>,
    name: &'static str,
    label: &str,
    value: &str,
    options: &[(&str, &str)],
) -> Markup {
    let error = errors_of(errors, name);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(name) { (label) }
            select id=(name) name=(name) aria-invalid=[error.map(|_| "true")]
                aria-describedby=[described(name, false, error.is_some())] {
                @for (v, text) in options { option value=(v) selected[*v == value] { (text) } }
            }
            (messages(name, error))
        }
    }
}

/// The service form, with `errors` next to their fields.
fn form_page(
    state: &AppState,
    ctx: &Ctx,
    form: &ServiceForm,
    errors: &[FieldError],
    mode: Mode<'_>,
) -> Markup {
    let e = by_field(errors);
    let any = |names: &[&str]| names.iter().any(|n| e.contains_key(n));
    let domain = &state.paz.config().domain;
    let (title, action, submit) = match mode {
        Mode::New => (
            "New service".to_owned(),
            "/services".to_owned(),
            "Create service",
        ),
        Mode::Edit(name) => (
            format!("Edit {name}"),
            format!("/services/{name}/edit"),
            "Save (makes a release)",
        ),
    };
    let editing = matches!(mode, Mode::Edit(_));
    // A section opens when it holds an error or anything but the defaults.
    let defaults = ServiceForm::new_service();
    let changed = |pick: fn(&ServiceForm) -> &String| pick(form) != pick(&defaults);
    let body = html! {
        h1 { (title) }
        @if !errors.is_empty() {
            div.notice.bad role="alert" #form-errors tabindex="-1" {
                p { strong { @if errors.len() == 1 { "1 problem" } @else { (errors.len()) " problems" } } " to fix:" }
                ul {
                    @for error in errors {
                        li { @match crate::ui::form::field_for(&error.field) {
                            Some(field) => a href={"#" (field)} { (error.message) },
                            None => (error.message),
                        } }
                    }
                }
            }
        }
        form.service-form method="post" action=(action) novalidate {
            (layout::csrf(ctx))
            input type="hidden" name="revision" value=(form.revision);
            fieldset {
                legend { "Service" }
                (text(&e, "name", "Name", Some("A DNS label: lowercase letters, digits and -, starting with a letter."), &form.name, "text", Some("web"), editing))
                (text(&e, "image", "Image", Some("A reference such as registry:5000/team/app:1.4 or app@sha256:…"), &form.image, "text", Some("paz-demo:v1"), false))
                (text(&e, "instances", "Instances", None, &form.instances, "number", None, false))
                (text(&e, "ports", "Ports", Some("Container ports; the first http one gets the traffic: 8080, or 8080, 9000/tcp."), &form.ports, "text", Some("8080"), false))
                (check(&e, "public", "Public", Some(&format!("Route <name>.{domain} (and the domains below) from the router.")), form.public.is_some()))
                (area(&e, "domains", "Domains", Some("Extra host names, one per line."), &form.domains, 2))
                (check(&e, "https_redirect", "Redirect HTTP to HTTPS", Some("Once the router has a certificate for its names."), form.https_redirect.is_some()))
            }
            details open[any(&["env", "command"]) || !form.env.is_empty() || !form.command.is_empty()] {
                summary { "Environment and command" }
                (area(&e, "env", "Environment", Some("NAME=value, one per line. Secrets belong in paz secrets, not here."), &form.env, 4))
                (area(&e, "command", "Command", Some("One argument per line; empty keeps the image's."), &form.command, 2))
            }
            details open[any(&["health_path", "health_port", "health_interval", "health_timeout", "health_retries", "health_start_period"])
                || [changed(|f| &f.health_kind), changed(|f| &f.health_path), changed(|f| &f.health_port), changed(|f| &f.health_interval), changed(|f| &f.health_timeout), changed(|f| &f.health_retries)].contains(&true)] {
                summary { "Health check" }
                (choice(&e, "health_kind", "Check", &form.health_kind, &[("http", "HTTP GET (2xx is healthy)"), ("tcp", "TCP connect"), ("none", "None: healthy once the port accepts")]))
                div.row {
                    (text(&e, "health_path", "Path", None, &form.health_path, "text", Some("/health"), false))
                    (text(&e, "health_port", "Port", Some("Empty: the routed port."), &form.health_port, "text", None, false))
                }
                div.row {
                    (text(&e, "health_interval", "Interval", None, &form.health_interval, "text", Some("1s"), false))
                    (text(&e, "health_timeout", "Timeout", None, &form.health_timeout, "text", Some("2s"), false))
                    (text(&e, "health_retries", "Retries", None, &form.health_retries, "text", Some("3"), false))
                    (text(&e, "health_start_period", "Start period", None, &form.health_start_period, "text", Some("0s"), false))
                }
            }
            details open[any(&["strategy", "max_surge", "drain_timeout", "deploy_health_timeout", "canary_steps"])
                || [changed(|f| &f.strategy), changed(|f| &f.max_surge), changed(|f| &f.drain_timeout), changed(|f| &f.deploy_health_timeout), changed(|f| &f.canary_steps)].contains(&true)] {
                summary { "Deploys" }
                (choice(&e, "strategy", "Strategy", &form.strategy, &[("rolling", "Rolling (start new, then stop old)"), ("recreate", "Recreate (stop old first)"), ("blue-green", "Blue-green (switch at once)"), ("canary", "Canary (weighted steps)")]))
                div.row {
                    (text(&e, "max_surge", "Max surge", None, &form.max_surge, "text", Some("1"), false))
                    (text(&e, "deploy_health_timeout", "Health timeout", Some("A new instance must be healthy within it."), &form.deploy_health_timeout, "text", Some("60s"), false))
                    (text(&e, "drain_timeout", "Drain timeout", None, &form.drain_timeout, "text", Some("30s"), false))
                }
                (text(&e, "canary_steps", "Canary steps", Some("Percentages of traffic, ending at 100: 10, 50, 100."), &form.canary_steps, "text", None, false))
            }
            details open[any(&["memory_mb", "cpus", "constraints", "spread", "volumes"])
                || [changed(|f| &f.memory_mb), changed(|f| &f.cpus), changed(|f| &f.constraints), changed(|f| &f.spread), changed(|f| &f.volumes)].contains(&true)] {
                summary { "Resources, placement and volumes" }
                div.row {
                    (text(&e, "memory_mb", "Memory (MiB)", None, &form.memory_mb, "text", None, false))
                    (text(&e, "cpus", "CPUs", None, &form.cpus, "text", Some("0.5"), false))
                }
                (area(&e, "constraints", "Placement constraints", Some("label==value or label!=value, one per line."), &form.constraints, 2))
                (text(&e, "spread", "Spread over", Some("A host label to spread instances over, e.g. zone."), &form.spread, "text", None, false))
                (area(&e, "volumes", "Volumes", Some("source:/path/in/container, :ro for read-only; one per line."), &form.volumes, 2))
            }
            div.actions {
                button.primary type="submit" { (submit) }
                @match mode {
                    Mode::New => a href="/services" { "Cancel" },
                    Mode::Edit(name) => a href={"/services/" (name)} { "Cancel" },
                }
            }
        }
    };
    layout::page(
        ctx,
        Page {
            title: &title,
            nav: Nav::Services,
            live: None,
            body,
        },
    )
}

fn form_response(status: StatusCode, page: Markup) -> Response {
    let mut response = (status, page).into_response();
    no_store(&mut response);
    response
}

/// The field errors an engine error means for the form, or the error itself when it is not
/// about the input.
fn field_errors(error: paz_core::Error) -> Result<(StatusCode, Vec<FieldError>), PageError> {
    use paz_core::Error as E;
    let status = |_: &E| StatusCode::CONFLICT;
    Ok(match error {
        E::Validation(errors) => (StatusCode::UNPROCESSABLE_ENTITY, errors.0),
        e @ E::AlreadyExists { .. } => (
            status(&e),
            vec![FieldError::new("name", "ALREADY_EXISTS", e.to_string())],
        ),
        e @ E::DomainConflict { .. } => (
            status(&e),
            vec![FieldError::new("domains", "DOMAIN_CONFLICT", e.to_string())],
        ),
        E::RevisionMismatch { name, .. } => (
            StatusCode::PRECONDITION_FAILED,
            vec![FieldError::new(
                "spec",
                "REVISION_MISMATCH",
                format!(
                    "{name} was changed by someone else since this form was opened: open the edit form again to see their change"
                ),
            )],
        ),
        e @ E::InvalidState(_) => (
            status(&e),
            vec![FieldError::new("spec", "INVALID_STATE", e.to_string())],
        ),
        other => return Err(other.into()),
    })
}

/// `GET /services/new`.
pub(crate) async fn new_service(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
) -> Response {
    let ctx = ctx(&session);
    form_response(
        StatusCode::OK,
        form_page(&state, &ctx, &ServiceForm::new_service(), &[], Mode::New),
    )
}

/// `POST /services`: creates the service (release v1 and its deployment).
pub(crate) async fn create(
    State(state): State<AppState>,
    Csrf(session, form): Csrf<ServiceForm>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let spec = match form.to_spec() {
        Ok(spec) => spec,
        Err(errors) => {
            return Ok(form_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                form_page(&state, &ctx, &form, &errors, Mode::New),
            ));
        }
    };
    match state
        .paz
        .create_service(spec, ui_trigger(TriggerKind::Create))
        .await
    {
        Ok(applied) => {
            let name = applied.service.spec.name;
            super::service::wake(&state, &name);
            state.ui.inner.sessions.flash(
                &session.key,
                format!("Created {name}: deploying release v1."),
            );
            Ok(Redirect::to(&format!("/services/{name}")).into_response())
        }
        Err(error) => {
            let (status, errors) = field_errors(error)?;
            Ok(form_response(
                status,
                form_page(&state, &ctx, &form, &errors, Mode::New),
            ))
        }
    }
}

/// `GET /services/{name}/edit`.
pub(crate) async fn edit_service(
    State(state): State<AppState>,
    Extension(session): Extension<SessionView>,
    Segment(name): Segment,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    let service = state.paz.service(&name).await?;
    let mut form = ServiceForm::from_spec(&service.spec);
    form.revision = service.revision.to_string();
    Ok(form_response(
        StatusCode::OK,
        form_page(&state, &ctx, &form, &[], Mode::Edit(&name)),
    ))
}

/// `POST /services/{name}/edit`: replaces the spec (guarded by the revision the form was
/// opened at), which makes a release and a deployment.
pub(crate) async fn update(
    State(state): State<AppState>,
    Segment(name): Segment,
    Csrf(session, mut form): Csrf<ServiceForm>,
) -> Result<Response, PageError> {
    let ctx = ctx(&session);
    // The name is not editable; whatever the form says, it is this service.
    form.name = name.clone();
    let spec = match form.to_spec() {
        Ok(spec) => spec,
        Err(errors) => {
            return Ok(form_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                form_page(&state, &ctx, &form, &errors, Mode::Edit(&name)),
            ));
        }
    };
    match state
        .paz
        .update_service(
            &name,
            spec,
            form.expected_revision(),
            ui_trigger(TriggerKind::Update),
        )
        .await
    {
        Ok(applied) => {
            super::service::wake(&state, &name);
            let message = match applied.service.current_release {
                Some(release) => format!("Saved {name}: release v{release}."),
                None => format!("Saved {name}."),
            };
            state.ui.inner.sessions.flash(&session.key, message);
            Ok(Redirect::to(&format!("/services/{name}")).into_response())
        }
        Err(error) => {
            let (status, errors) = field_errors(error)?;
            Ok(form_response(
                status,
                form_page(&state, &ctx, &form, &errors, Mode::Edit(&name)),
            ))
        }
    }
}
