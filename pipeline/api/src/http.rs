//! The HTTP server: the router, the guard every request passes, the JSON/query/path extractors
//! that answer in the API's error shape, and `/health`, `/ready`, `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::{info_span, Instrument};

use crate::auth::credential;
use crate::error::HttpError;
use crate::state::AppState;
use crate::{openapi, page, routes, ws};

/// Paths served without credentials: liveness, readiness, metrics, and the status page's static
/// files (which hold no data; the page asks for a key before it loads any).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics" | "/") || path.starts_with("/assets/")
}

/// Every route.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/sentiment/analyze", post(routes::sentiment::analyze))
        .route("/sentiment/batch", post(routes::sentiment::batch))
        .route("/sentiment/fusion", post(routes::sentiment::fusion))
        .route("/sentiment/{asset}/realtime", get(routes::sentiment::realtime))
        .route("/market/multiple", get(routes::market::multiple))
        .route("/market/{symbol}/ohlcv", get(routes::market::ohlcv))
        .route("/news/{asset}/latest", get(routes::market::news_latest))
        .route("/risk/calculate", post(routes::risk::calculate))
        .route("/risk/validate-order", post(routes::risk::validate_order))
        .route("/risk/limits/{agent}", get(routes::risk::limits))
        .route("/risk/metrics", get(routes::risk::metrics))
        .route("/orders/place", post(routes::orders::place))
        .route("/orders/history", get(routes::orders::history))
        .route("/portfolio/{agent}", get(routes::orders::portfolio))
        .route("/performance/metrics", get(routes::orders::performance))
        .route("/status", get(routes::status::snapshot));
    let mut app = Router::new()
        .nest("/api/v1", v1)
        .route("/ws/market/{symbol}", get(ws::market))
        .route("/ws/sentiment/{asset}", get(ws::sentiment))
        .route("/ws/status", get(ws::status))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes));
    if let Some(cors) = cors(&state.cfg.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(layer.allow_origin(AllowOrigin::list(list)))
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// A request id: the client's `X-Request-Id` when it is short and printable, else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
            format!("{:08x}-{n:08x}", std::process::id())
        })
}

/// The guard, in order: request id and span, metrics, load shedding (in-flight limit), rate limit
/// per client IP, authentication, rate limit per credential, timeout.
pub async fn guard(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "-".into());
    let span = info_span!("request", request_id = %id, %method, %route, client = %ip, caller = tracing::field::Empty);
    let t0 = Instant::now();
    let st2 = st.clone();
    let path = req.uri().path().to_owned();
    let mut resp = async move {
        let st = st2;
        let _permit = match st.permit() {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        let public = is_public(&path);
        // WebSockets may carry it in the query: browsers cannot set headers on them.
        let cred = credential(req.headers()).or_else(|| {
            path.starts_with("/ws/")
                .then(|| query_param(req.uri(), "access_token"))
                .flatten()
        });
        match st.admit(&ip, cred.as_deref(), public) {
            Ok(who) if !public => {
                tracing::Span::current().record("caller", who.id());
                req.extensions_mut().insert(who);
            }
            Ok(_) => {}
            Err(e) => return e.into_response(),
        }
        let timeout = Duration::from_secs(st.cfg.request_timeout_secs);
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => HttpError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("the request took longer than {}s", timeout.as_secs()),
            )
            .into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("auroraq_api_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("auroraq_api_request_seconds", "route" => route).record(t0.elapsed().as_secs_f64());
    metrics::gauge!("auroraq_api_in_flight").set(st.in_flight_now() as f64);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    resp
}

/// One query parameter of a URI, decoded.
pub fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.get(name).cloned())
}

async fn not_found() -> HttpError {
    HttpError::not_found("no such endpoint; see /openapi.json")
}

async fn health() -> &'static str {
    "ok\n"
}

/// Ready when the bus and every configured store answer (the model, when there is one, is
/// loaded before the server starts).
async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let mut failing = Vec::new();
    match tokio::time::timeout(Duration::from_secs(3), st.backends.bus.health()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => failing.push(format!("bus: {e}")),
        Err(_) => failing.push("bus: no answer in 3 s".into()),
    }
    if let Some(pg) = &st.backends.postgres {
        if let Err(e) = pg.ping().await {
            failing.push(format!("postgres: {}", e.message));
        }
    }
    if let Some(r) = &st.backends.redis {
        if let Err(e) = r.ping().await {
            failing.push(format!("redis: {}", e.message));
        }
    }
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "model_version": st.model_version})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failing": failing})),
        )
            .into_response()
    }
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    metrics::gauge!("auroraq_api_ws_clients").set(st.live.clients() as f64);
    if let Some(s) = &st.backends.scorer {
        metrics::gauge!("auroraq_api_scorer_queue_depth").set(s.queue_depth() as f64);
    }
    match &st.backends.metrics {
        Some(render) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => HttpError::not_found("metrics are not enabled in this process").into_response(),
    }
}

/// `axum::Json` answering in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// `axum::extract::Query` answering in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(ApiQuery(q.0)),
            Err(r) => Err(r.into()),
        }
    }
}

/// `axum::extract::Path` answering in the API's error shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(ApiPath(p.0)),
            Err(r) => Err(r.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().expect("uri");
        assert_eq!(
            query_param(&uri("/ws?a=1&access_token=k%2Bx+y"), "access_token").as_deref(),
            Some("k+x y")
        );
        assert_eq!(query_param(&uri("/ws?a=1"), "access_token"), None);
        assert_eq!(query_param(&uri("/ws"), "access_token"), None);
        assert_eq!(query_param(&uri("/ws?t=%zz%"), "t").as_deref(), Some("%zz%"));
    }

    #[test]
    fn public_paths() {
        assert!(is_public("/health") && is_public("/assets/app.js") && is_public("/"));
        assert!(!is_public("/api/v1/status") && !is_public("/openapi.json") && !is_public("/ws/status"));
    }
}
