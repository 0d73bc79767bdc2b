//! The status page: static files compiled into the binary (no build step, no CDN). They hold no
//! data; the page asks for an API key and then reads `/api/v1/status` and `/ws/status`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::ApiPath;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// Headers every page answer carries: no caching surprises, no framing, a strict policy.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'",
    ),
];

pub async fn index() -> Response {
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX,
    )
        .into_response()
}

pub async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    (SECURITY, [(header::CONTENT_TYPE, ty)], body).into_response()
}
