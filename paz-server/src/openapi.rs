//! The OpenAPI document, generated from the handlers and the core types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::handlers;

/// The OpenAPI description of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Paz", description = "The REST API of paz-server, a self-hosted Docker PaaS."),
    paths(
        handlers::health,
        handlers::list_services,
        handlers::create_service,
        handlers::get_service,
        handlers::put_service,
        handlers::patch_service,
        handlers::delete_service,
        handlers::deploy,
        handlers::scale,
        handlers::rollback,
        handlers::promote,
        handlers::abort,
        handlers::instances,
        handlers::status,
        handlers::logs,
        handlers::releases,
        handlers::release,
        handlers::deployments,
        handlers::deployment,
        handlers::hosts,
        handlers::set_secret,
        handlers::secrets,
        handlers::delete_secret,
        handlers::create_token,
        handlers::list_tokens,
        handlers::revoke_token,
        handlers::events,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON, as served at `/openapi.json` and kept in `openapi.json`.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut text = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
