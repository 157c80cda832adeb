//! The operator console: a page and a few plain JavaScript and CSS files
//! served from the binary (embedded at compile time from `console/`), so
//! `cargo build` alone makes it and the page fetches nothing from anywhere
//! but this server. The page logs in through `POST /api/auth/login` and
//! talks to the operator API with the token it gets (see the README's
//! "Operator console").

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::hash::{Hash, Hasher};

use crate::state::AppState;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Versioned files (the vendored library, its version in the name)
    /// never change under their name and are cached for a year; the rest
    /// are revalidated with their ETag on every load.
    immutable: bool,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/console.css"),
        immutable: false,
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/app.js"),
        immutable: false,
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/views.js"),
        immutable: false,
    },
    Asset {
        name: "lib.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/lib.js"),
        immutable: false,
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/favicon.svg"),
        immutable: false,
    },
    Asset {
        name: "vendor/uPlot-1.6.32.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/vendor/uPlot-1.6.32.iife.min.js"),
        immutable: true,
    },
    Asset {
        name: "vendor/uPlot-1.6.32.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/vendor/uPlot-1.6.32.min.css"),
        immutable: true,
    },
];

const INDEX: &[u8] = include_bytes!("../../console/index.html");

/// Everything the page may load comes from this server; no inline script or
/// style, no framing (clickjacking), no referrer leaving the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(utoipa::OpenApi)]
#[openapi(paths(index))]
pub(crate) struct Doc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(asset))
}

fn etag(body: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// Answers `body` with its type and caching headers, or 304 when the
/// browser's copy (`If-None-Match`) is this one.
fn serve(
    headers: &HeaderMap,
    content_type: &'static str,
    body: &'static [u8],
    immutable: bool,
) -> Response {
    let tag = etag(body);
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, tag);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /`: the console's page (its login form until someone logs in).
#[utoipa::path(get, path = "/", operation_id = "getConsole", tag = "pages",
    responses((status = 200, description = "The operator console (HTML); it signs in with an admin's email and password", content_type = "text/html", body = String),
        (status = 304, description = "Not modified (ETag)")))]
async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(&headers, "text/html; charset=utf-8", INDEX, false);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /console/{file}`: the page's scripts, styles and vendored library.
async fn asset(headers: HeaderMap, Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(&headers, a.content_type, a.body, a.immutable),
        None => super::error::ApiError::not_found("No such file").into_response(),
    }
}
