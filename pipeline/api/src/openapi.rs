//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' request and
//! response types (utoipa).

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{market, orders, risk, sentiment, status};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key or JWT (HS256/RS256, exp required)")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "AuroraQ API", description = "Sentiment, market data, news, risk and orders over AuroraQ's streaming pipeline. \
        Every endpoint needs an API key or a JWT except /health, /ready and /metrics. Errors are {\"error\": {\"code\", \"message\"}}."),
    paths(
        sentiment::analyze, sentiment::batch, sentiment::realtime, sentiment::fusion,
        market::ohlcv, market::multiple, market::news_latest,
        risk::calculate, risk::validate_order, risk::limits, risk::metrics,
        orders::place, orders::history, orders::portfolio, orders::performance,
        status::snapshot,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The document.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
