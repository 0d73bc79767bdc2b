//! `GET /api/v1/status`: what the status page shows first (then it follows `/ws/status`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::live::Headline;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    pub model_version: String,
    pub uptime_secs: f64,
    pub ws_clients: usize,
    /// By asset: the latest fused signal and `history` as `[[window end µs, score], ...]`.
    #[schema(value_type = Object)]
    pub fused: BTreeMap<String, Value>,
    /// Newest first.
    pub headlines: Vec<Headline>,
    /// By account: the latest portfolio snapshot.
    #[schema(value_type = Object)]
    pub portfolios: BTreeMap<String, Value>,
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Value>,
}

/// The live view now.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, body = StatusResponse)),
    security(("api_key" = []), ("bearer" = [])), tag = "status")]
pub async fn snapshot(State(st): State<Arc<AppState>>) -> Json<StatusResponse> {
    let fused = st
        .live
        .all_fused()
        .into_iter()
        .map(|(asset, a)| {
            let v = json!({
                "fused_score": a.fused_score,
                "confidence": a.confidence,
                "trend": a.trend,
                "scores_used": a.scores_used,
                "window_start": a.window_start,
                "window_end": a.window_end,
                "weights_used": a.weights_used,
                "history": a.history.iter().map(|&(t, v)| json!([t, v])).collect::<Vec<_>>(),
            });
            (asset, v)
        })
        .collect();
    Json(StatusResponse {
        model_version: st.model_version.clone(),
        uptime_secs: st.started.elapsed().as_secs_f64(),
        ws_clients: st.live.clients(),
        fused,
        headlines: st.live.headlines(None, 50),
        portfolios: st.live.portfolios(),
        alerts: st.live.alerts(20),
    })
}
