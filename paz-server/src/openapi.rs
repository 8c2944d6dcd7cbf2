//! The OpenAPI document, generated from the handlers and the core types.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{handlers, hooks};

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
        handlers::cluster,
        handlers::set_secret,
        handlers::secrets,
        handlers::delete_secret,
        handlers::create_token,
        handlers::list_tokens,
        handlers::revoke_token,
        handlers::events,
        crate::admin::export_state,
        crate::admin::import_state,
        hooks::create_hook,
        hooks::list_hooks,
        hooks::update_hook,
        hooks::rotate_hook,
        hooks::delete_hook,
        hooks::deliveries,
        hooks::unmatched_deliveries,
        hooks::dockerhub,
        hooks::registry,
        hooks::ci,
    ),
    modifiers(
        &BearerAuth,
        &SpecRules,
        &ParameterRules,
        &ErrorAnswers,
        &EventStream,
        &Links
    ),
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
        // A registry hook's secret, sent by the registry as a static bearer header.
        components.add_security_scheme(
            "hook",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A registry hook's secret (`hook_<id>_<secret>`)"))
                    .build(),
            ),
        );
    }
}

/// The name of a service, as `paz_core::names::check_service_name` accepts it.
pub const SERVICE_NAME_PATTERN: &str = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$";

/// A token's name, or its id (12 hex digits, also a valid name).
pub const TOKEN_NAME_PATTERN: &str = r"^[a-z0-9._-]{1,64}$";
/// A deployment id: `<service>-<sequence>`.
pub const DEPLOYMENT_ID_PATTERN: &str = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?-[0-9]{1,19}$";

/// A hook's secret: `hook_<12 hex id>_<64 hex secret>`.
pub const HOOK_SECRET_PATTERN: &str = r"^hook_[0-9a-f]{12}_[0-9a-f]{64}$";
/// `X-Paz-Signature`: `sha256=` and 64 hex digits.
pub const SIGNATURE_PATTERN: &str = r"^sha256=[0-9a-f]{64}$";

/// `If-Match`: a revision, bare or as a (weak) ETag such as `"12"` or `W/"12"`.
pub const IF_MATCH_PATTERN: &str = r#"^(?:W/)?"?[0-9]{1,19}"?$"#;

/// Every operation of the document.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    methods(openapi).map(|(_, operation)| operation)
}

/// Every operation of the document with its method.
fn methods(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ]
        .into_iter()
        .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
    })
}

/// The rules of `ServiceSpec::validate` that tie fields together, in JSON Schema terms that
/// utoipa has no builder for (`if`/`then`, `contains`): they go in as the object's
/// `allOf` through its extensions map, which is written out flat. Also the body of a merge
/// patch: any subset of a spec's fields but the name (which cannot change).
struct SpecRules;

impl Modify for SpecRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(spec))) = components.schemas.get_mut("ServiceSpec") else {
            return;
        };
        let rules = serde_json::json!([
            {
                "description": "A public service, or one with domains, needs an http port.",
                "if": {"anyOf": [
                    {"properties": {"public": {"const": true}}, "required": ["public"]},
                    {"properties": {"domains": {"minItems": 1}}, "required": ["domains"]},
                ]},
                "then": {
                    "properties": {"ports": {"contains": {"properties": {"protocol": {"const": "http"}}}}},
                    "required": ["ports"],
                },
            },
            {
                "description": "A health check without a port checks a declared port.",
                "if": {
                    "properties": {"health": {
                        "type": "object",
                        "not": {"properties": {"port": {"type": "integer"}}, "required": ["port"]},
                    }},
                    "required": ["health"],
                },
                "then": {"properties": {"ports": {"minItems": 1}}, "required": ["ports"]},
            },
        ]);
        spec.extensions
            .get_or_insert_with(Default::default)
            .insert("allOf".to_owned(), rules);
        let mut patch = spec.clone();
        if let Some(RefOr::T(Schema::Object(token))) =
            components.schemas.get_mut("CreateTokenRequest")
        {
            let rules = serde_json::json!([{
                "description": "A deploy token names its services (at least one); a read or admin token none.",
                "if": {"properties": {"scope": {"const": "deploy"}}, "required": ["scope"]},
                "then": {"properties": {"services": {"minItems": 1}}, "required": ["services"]},
                "else": {"properties": {"services": {"maxItems": 0}}},
            }]);
            token
                .extensions
                .get_or_insert_with(Default::default)
                .insert("allOf".to_owned(), rules);
        }
        patch.description = Some(
            "A JSON merge patch (RFC 7396) of a service's spec: the fields to change, `null` \
             to remove one; the patched spec must pass the same rules as a full one."
                .to_owned(),
        );
        // In a merge patch `null` removes a member: an optional field goes back to its
        // default, and an unknown one stays absent.
        let required = std::mem::take(&mut patch.required);
        patch.properties.remove("name");
        for (field, schema) in patch.properties.iter_mut() {
            // (`health` is already `null` or a check.)
            let nullable = matches!(schema, RefOr::T(Schema::OneOf(_)));
            if !required.contains(field) && !nullable {
                let null = ObjectBuilder::new().schema_type(Type::Null).build();
                let either = utoipa::openapi::OneOfBuilder::new()
                    .item(null)
                    .item(schema.clone())
                    .build();
                *schema = Schema::OneOf(either).into();
            }
        }
        patch.additional_properties = Some(Box::new(
            ObjectBuilder::new().schema_type(Type::Null).into(),
        ));
        patch.extensions = None;
        components
            .schemas
            .insert("ServiceSpecPatch".to_owned(), Schema::Object(patch).into());
        for item in openapi.paths.paths.values_mut() {
            let Some(body) = item.patch.as_mut().and_then(|o| o.request_body.as_mut()) else {
                continue;
            };
            for content in body.content.values_mut() {
                content.schema = Some(Ref::from_schema_name("ServiceSpecPatch").into());
            }
        }
    }
}

/// The rules the extractors and handlers apply to parameters, by parameter name: the same
/// `{name}`, `{id}` and `If-Match` are checked the same way by every operation.
struct ParameterRules;

impl Modify for ParameterRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let string = |pattern: &str, max_length: Option<usize>| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .max_length(max_length)
                .build()
        };
        for operation in operations(openapi) {
            for parameter in operation.parameters.iter_mut().flatten() {
                let schema = match (&parameter.parameter_in, parameter.name.as_str()) {
                    (ParameterIn::Path, "name") => {
                        string(SERVICE_NAME_PATTERN, Some(paz_core::names::MAX_NAME_LEN))
                    }
                    (ParameterIn::Path, "id") => string(DEPLOYMENT_ID_PATTERN, None),
                    (ParameterIn::Path, "secret") => {
                        string(paz_core::schema::ENV_KEY_PATTERN, None)
                    }
                    (ParameterIn::Path, "token") => string(TOKEN_NAME_PATTERN, Some(64)),
                    (ParameterIn::Path, "version") => ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        )))
                        .minimum(Some(1))
                        .build(),
                    (ParameterIn::Header, "If-Match") => string(IF_MATCH_PATTERN, None),
                    (ParameterIn::Path, "hook_secret") => string(HOOK_SECRET_PATTERN, Some(82)),
                    (ParameterIn::Header, "X-Paz-Signature") => string(SIGNATURE_PATTERN, Some(71)),
                    (ParameterIn::Query, "tail") => ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .maximum(Some(u64::MAX))
                        .build(),
                    _ => continue,
                };
                parameter.schema = Some(schema.into());
            }
        }
    }
}

/// The error answers every operation can give besides its own: 401 without a valid token,
/// 400 for a malformed path, query, header or body, 413 and 415 for bodies, 409 when a change
/// loses to concurrent ones or takes a domain in use, 503 when the store does not answer.
struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build()
                .into()
        };
        for (method, operation) in methods(openapi) {
            let open = operation.security.as_ref().is_some_and(|requirements| {
                requirements
                    .iter()
                    .any(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
            });
            // The event stream reads no store and takes no input.
            let stream = operation.operation_id.as_deref() == Some("events");
            let has_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
                || operation.request_body.is_some();
            let has_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            if !open {
                add(
                    "401",
                    "No token, or not a valid one (`UNAUTHORIZED`, `INVALID_TOKEN`).",
                );
            }
            if has_input {
                add(
                    "400",
                    "The path, query, a header or the body is malformed (`INVALID_PATH`, \
                     `INVALID_QUERY`, `INVALID_IF_MATCH`, `INVALID_JSON`, `INVALID_BODY`…).",
                );
            }
            if has_body {
                add("413", "The body is larger than 1 MiB (`BODY_TOO_LARGE`).");
                add(
                    "415",
                    "The body is not sent as JSON (`UNSUPPORTED_MEDIA_TYPE`).",
                );
            }
            if method != "get" {
                add(
                    "409",
                    "The change conflicts with the service's state or another service's \
                     (`DOMAIN_CONFLICT`, `CONCURRENT_CHANGES`…).",
                );
            }
            if !stream {
                add("503", "The store does not answer (`STORE_UNAVAILABLE`).");
            }
        }
    }
}

/// `GET /v1/events`: each event of the stream, as OpenAPI 3.2 describes Server-Sent Events
/// (the fields of one event; `data` holds JSON). utoipa has no builder for `contentSchema`,
/// so it goes in through the extensions map.
struct EventStream;

impl Modify for EventStream {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let data = string("The event as JSON; for `resync`, `{}` or why (`reason`).")
            .content_media_type("application/json")
            .extensions(Some(
                [(
                    "contentSchema",
                    serde_json::json!({"anyOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {
                            "type": "object",
                            "properties": {"reason": {"type": "string"}},
                            "additionalProperties": false,
                        },
                    ]}),
                )]
                .into_iter()
                .collect(),
            ));
        let event = ObjectBuilder::new()
            .property("event", string("The event type, or `resync`."))
            .property("id", string("The store revision of the event."))
            .property("data", data)
            .required("data")
            .build();
        for operation in operations(openapi) {
            if operation.operation_id.as_deref() != Some("events") {
                continue;
            }
            let Some(RefOr::T(response)) = operation.responses.responses.get_mut("200") else {
                continue;
            };
            if let Some(content) = response.content.get_mut("text/event-stream") {
                content.schema = Some(event.clone().into());
            }
        }
    }
}

/// Links from the answers that name a service or a deployment to the operations on it, so
/// that clients (and fuzzers) can follow a create to everything else.
///
/// They are written as JSON into the response's extensions map (flattened into the response
/// object): utoipa 5.5's `Link` serializes `operation_id` instead of `operationId`.
struct Links;

impl Links {
    /// The operations on one service, by operation id (all take `{name}`).
    const SERVICE_OPERATIONS: [&str; 18] = [
        "get_service",
        "put_service",
        "patch_service",
        "delete_service",
        "deploy",
        "scale",
        "rollback",
        "promote",
        "abort",
        "status",
        "instances",
        "releases",
        "deployments",
        "logs",
        "secrets",
        "create_hook",
        "list_hooks",
        "deliveries",
    ];
}

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let link = |target: &str, parameters: serde_json::Value| serde_json::json!({"operationId": target, "parameters": parameters});
        for operation in operations(openapi) {
            let (status, links) = match operation.operation_id.as_deref() {
                // A created service: everything on it, and its first release.
                Some("create_service") => {
                    let name = "$response.body#/spec/name";
                    let mut links: serde_json::Map<_, _> = Self::SERVICE_OPERATIONS
                        .iter()
                        .map(|target| {
                            let parameters = serde_json::json!({"name": name});
                            ((*target).to_owned(), link(target, parameters))
                        })
                        .collect();
                    let parameters = serde_json::json!({
                        "name": name,
                        "version": "$response.body#/current_release",
                    });
                    links.insert("release".to_owned(), link("release", parameters));
                    ("201", links)
                }
                // A deployment: itself and the release it rolls out.
                Some(id @ ("deploy" | "rollback" | "promote" | "abort")) => {
                    let status = if matches!(id, "deploy" | "rollback") {
                        "202"
                    } else {
                        "200"
                    };
                    let mut links = serde_json::Map::new();
                    let parameters = serde_json::json!({"id": "$response.body#/id"});
                    links.insert("deployment".to_owned(), link("deployment", parameters));
                    let parameters = serde_json::json!({
                        "name": "$response.body#/service",
                        "version": "$response.body#/release",
                    });
                    links.insert("release".to_owned(), link("release", parameters));
                    (status, links)
                }
                // A hook: changing, rotating and deleting it.
                Some(id @ ("create_hook" | "rotate_hook")) => {
                    let status = if id == "create_hook" { "201" } else { "200" };
                    let parameters = serde_json::json!({
                        "name": "$response.body#/info/service",
                        "source": "$response.body#/info/source",
                    });
                    let links: serde_json::Map<_, _> =
                        ["update_hook", "rotate_hook", "delete_hook"]
                            .iter()
                            .map(|target| ((*target).to_owned(), link(target, parameters.clone())))
                            .collect();
                    (status, links)
                }
                // A token: revoking it (by id, the part of the token after `paz_`).
                Some("create_token") => {
                    let mut links = serde_json::Map::new();
                    let parameters = serde_json::json!({"token": "$response.body#/info/id"});
                    links.insert("revoke".to_owned(), link("revoke_token", parameters));
                    ("201", links)
                }
                _ => continue,
            };
            if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) {
                response
                    .extensions
                    .get_or_insert_with(Default::default)
                    .insert("links".to_owned(), links.into());
            }
        }
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
