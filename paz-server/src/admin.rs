//! Admin operations on the whole state: export it (the backup, or the way to another store)
//! and import it (see `paz_core::backup`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use paz_core::api::ErrorResponse;
use paz_core::backup::{ImportOptions, ImportReport, StateExport};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, body_rejection, json_content_type};

/// The largest state export `POST /v1/admin/import` accepts, in bytes.
pub const IMPORT_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// Exports the whole state: every key under `/paz/` at one store revision, except
/// ephemeral leased keys (hosts). Sealed secrets stay sealed, tokens hashed — but treat the
/// document as secret. Admin only.
#[utoipa::path(get, path = "/v1/admin/export", tag = "admin",
    responses((status = 200, body = StateExport, description = "The state export (`paz-state` version 1)"),
        (status = 403, body = ErrorResponse, description = "The token is not an admin token (`FORBIDDEN`).")))]
pub async fn export_state(State(state): State<AppState>) -> ApiResult<Json<StateExport>> {
    Ok(Json(state.paz.export_state().await?))
}

/// Options of an import.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Replace the server's state: delete its services, releases, tokens… in the same
    /// all-or-nothing write. Without it a server that holds state refuses the import.
    #[serde(default)]
    pub replace: bool,
}

/// Imports a state export, all or nothing (up to 256 MiB). The server's secret key must be
/// the exporting server's when the export has sealed values. When the answer says
/// `cluster_changed`, restart the server so its scheduler uses the imported cluster id.
/// Admin only.
#[utoipa::path(post, path = "/v1/admin/import", tag = "admin", params(ImportQuery),
    request_body = StateExport,
    responses((status = 200, body = ImportReport, description = "Imported"),
        (status = 403, body = ErrorResponse, description = "The token is not an admin token (`FORBIDDEN`)."),
        (status = 409, body = ErrorResponse, description = "The server holds state and `replace` was not given \
            (`STORE_NOT_EMPTY`), its secret key does not open the export's sealed values \
            (`SECRET_KEY_MISMATCH`), or the state changed during the import (`CONFLICT`); nothing was written."),
        (status = 413, body = ErrorResponse, description = "The body is larger than 256 MiB (`BODY_TOO_LARGE`)."),
        (status = 422, body = ErrorResponse, description = "Not a state export this server reads \
            (`UNKNOWN_FORMAT`, `FORMAT_TOO_NEW`), or a bad key (`INVALID_KEY`, `DUPLICATE_KEY`, \
            `LEASED_KEY`, `INVALID_RECORD`); nothing was written."),
        (status = 500, body = ErrorResponse, description = "The import failed part-way and the previous \
            state could not be restored (`IMPORT_INCOMPLETE`).")))]
pub async fn import_state(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ImportQuery>,
    request: Request,
) -> ApiResult<Json<ImportReport>> {
    if !json_content_type(request.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BODY_TOO_LARGE",
                    format!("the export is larger than the limit of {IMPORT_BODY_LIMIT} bytes"),
                )
            } else {
                body_rejection(rejection)
            }
        })?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            format!("the body is not valid JSON: {e}"),
        ));
    }
    let export = StateExport::from_slice(&bytes).map_err(|e| match e.code() {
        // The shape is wrong: a bad body, as everywhere in the API.
        "INVALID_EXPORT" => ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            format!("the body does not match the schema: {e}"),
        ),
        _ => ApiError::from(e),
    })?;
    drop(bytes);
    let report = state
        .paz
        .import_state(
            &export,
            ImportOptions {
                replace: query.replace,
            },
        )
        .await?;
    tracing::info!(
        keys = report.keys,
        services = report.services,
        deleted = report.deleted,
        cluster_changed = report.cluster_changed,
        "imported a state export"
    );
    if let Some(reconciler) = &state.reconciler() {
        reconciler.resync_now();
    }
    Ok(Json(report))
}
