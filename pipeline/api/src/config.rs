//! `[api]`: where the API listens, who may call it, and how much it takes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// A secret (an API key): its value is never printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Settings of the API role.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// REST, WebSockets, the status page, `/health`, `/ready`, `/metrics`: `host:port`.
    pub listen: String,
    /// gRPC `SentimentService`: `host:port`; empty: no gRPC server.
    pub grpc_listen: String,
    /// API keys (also `AURORAQ_API_KEYS`, comma-separated). Sent as `X-API-Key: <key>` or
    /// `Authorization: Bearer <key>`.
    pub keys: Vec<Secret>,
    /// Environment variable holding the HS256 secret of JWTs (empty variable: no HS256).
    pub jwt_secret_env: String,
    /// PEM file with the RSA public key of RS256 JWTs; empty: no RS256.
    pub jwt_public_key: String,
    /// Serve without authentication (local use only; logs a warning).
    pub insecure_no_auth: bool,
    /// Sustained requests per second per credential, and the burst above it.
    pub rate_per_key: f64,
    pub burst_per_key: f64,
    /// Sustained requests per second per client IP, and the burst above it.
    pub rate_per_ip: f64,
    pub burst_per_ip: f64,
    /// Requests handled at once; more get `503` with `Retry-After`.
    pub max_in_flight: usize,
    /// Largest request body, bytes; larger get `413`.
    pub max_body_bytes: usize,
    /// A request taking longer gets `504`.
    pub request_timeout_secs: u64,
    /// Origins allowed by CORS (`*`: any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// How long the first text of a request waits for others to share its model batch, ms. Short:
    /// under load batches fill while the model runs anyway, and an idle API should not add delay
    /// (the bus workers wait `sentiment.max_wait_ms`, 10 by default).
    pub batch_wait_ms: u64,
    /// Predictions kept in the in-process cache (by text hash and model sha); 0: no cache.
    pub cache_entries: usize,
    /// How long `POST /orders/place` waits for the risk decision before answering `pending`.
    pub order_decision_timeout_ms: u64,
    /// Messages buffered per WebSocket client; a client that falls this far behind is dropped.
    pub ws_buffer: usize,
    /// Agents whose orders the API may place (`*`: any).
    pub order_agents: Vec<String>,
    /// `[api.scenarios]`: the scenario taxonomy of `scenario_tag`, replacing the default one
    /// whole (see `auroraq_text::scenario`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenarios: Option<auroraq_text::scenario::TaxonomyConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8001".into(),
            grpc_listen: String::new(),
            keys: Vec::new(),
            jwt_secret_env: "AURORAQ_JWT_SECRET".into(),
            jwt_public_key: String::new(),
            insecure_no_auth: false,
            rate_per_key: 200.0,
            burst_per_key: 400.0,
            rate_per_ip: 400.0,
            burst_per_ip: 800.0,
            max_in_flight: 256,
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout_secs: 30,
            cors_origins: Vec::new(),
            batch_wait_ms: 2,
            cache_entries: 10_000,
            order_decision_timeout_ms: 3_000,
            ws_buffer: 256,
            order_agents: vec!["*".into()],
            scenarios: None,
        }
    }
}

impl ApiConfig {
    /// Checks every value; the error names the setting.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::Config(m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "api.listen {:?} is not host:port (e.g. 127.0.0.1:8001)",
                self.listen
            ));
        }
        if !self.grpc_listen.is_empty() && self.grpc_listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "api.grpc_listen {:?} is not host:port (e.g. 127.0.0.1:50051)",
                self.grpc_listen
            ));
        }
        for (name, v) in [
            ("rate_per_key", self.rate_per_key),
            ("burst_per_key", self.burst_per_key),
            ("rate_per_ip", self.rate_per_ip),
            ("burst_per_ip", self.burst_per_ip),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("api.{name} must be a positive number, not {v}"));
            }
        }
        if self.max_in_flight == 0 || self.max_body_bytes == 0 || self.request_timeout_secs == 0 {
            return bad(
                "api.max_in_flight, api.max_body_bytes and api.request_timeout_secs must be at least 1"
                    .into(),
            );
        }
        if self.ws_buffer == 0 {
            return bad("api.ws_buffer must be at least 1".into());
        }
        if let Some(t) = &self.scenarios {
            auroraq_text::scenario::Taxonomy::new(t.clone())
                .map_err(|e| ApiError::Config(format!("api.scenarios: {e}")))?;
        }
        if self.keys.iter().any(|k| k.0.trim().len() < 16) {
            return bad("api.keys: every key must have at least 16 characters".into());
        }
        Ok(())
    }
}
