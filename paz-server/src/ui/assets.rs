//! The UI's only static files: one stylesheet and one script, compiled into the binary and
//! served under names that carry a hash of their content (`paz.<hash>.css`), so browsers
//! may keep them for a year (`immutable`) and a new build is fetched at once. An `ETag`
//! answers revalidations with 304.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/paz.css");
const JS: &str = include_str!("assets/paz.js");

/// One asset: its file name (with the hash), ETag and content.
pub(crate) struct Asset {
    pub name: String,
    etag: String,
    body: &'static str,
    content_type: &'static str,
}

fn asset(stem: &str, extension: &str, body: &'static str, content_type: &'static str) -> Asset {
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let hash: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Asset {
        name: format!("{stem}.{hash}.{extension}"),
        etag: format!("\"{hash}\""),
        body,
        content_type,
    }
}

/// The stylesheet.
pub(crate) static STYLE: LazyLock<Asset> =
    LazyLock::new(|| asset("paz", "css", CSS, "text/css; charset=utf-8"));
/// The script.
pub(crate) static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| asset("paz", "js", JS, "text/javascript; charset=utf-8"));

/// The URL of an asset.
pub(crate) fn url(asset: &Asset) -> String {
    format!("/ui/assets/{}", asset.name)
}

/// `GET /ui/assets/{file}`.
pub(crate) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = [&*STYLE, &*SCRIPT].into_iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_stay_small_and_are_named_by_their_content() {
        assert!(
            CSS.len() + JS.len() < 100 * 1024,
            "the UI's CSS + JS must stay under 100 KB: {} bytes",
            CSS.len() + JS.len()
        );
        assert!(STYLE.name.starts_with("paz.") && STYLE.name.ends_with(".css"));
        assert!(SCRIPT.name.ends_with(".js"));
        assert_ne!(STYLE.name, SCRIPT.name);
    }
}
