//! `/api/v1/orders/...`, `/portfolio/...`, `/performance/...`. An order placed here is an
//! `OrderIntent` published on the bus: it passes the risk stage like any agent's, never around it,
//! and execution acts only on risk's decision. The answer carries the intent id and, when it
//! arrives in time, risk's decision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auroraq_util::time::rfc3339;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ErrorBody, HttpError};
use crate::http::{ApiJson, ApiPath, ApiQuery};
use crate::live::event_json;
use crate::routes::market::check_symbol;
use crate::routes::risk::{check_agent, intent, OrderRequest};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct PlaceResponse {
    pub intent_id: String,
    /// `decided` (risk answered in time) or `pending` (it will; follow `/ws/status` or the
    /// order history).
    pub status: String,
    /// Risk's decision, when it arrived in time.
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
}

fn new_intent_id(agent: &str, now: i64) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut h = Sha256::new();
    h.update(format!("{agent}|{now}|{n}|{}", std::process::id()).as_bytes());
    let hex: String = h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("api-{hex}")
}

/// Places an order: publishes an `OrderIntent` on `agents.intents` and waits up to
/// `api.order_decision_timeout_ms` for risk's decision (`200`), else answers `202` pending.
#[utoipa::path(post, path = "/api/v1/orders/place", request_body = OrderRequest,
    responses((status = 200, body = PlaceResponse), (status = 202, body = PlaceResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "orders")]
pub async fn place(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<Response, HttpError> {
    let agent = check_agent(&req.agent)?;
    if !st.cfg.order_agents.iter().any(|a| a == "*" || *a == agent) {
        return Err(HttpError::forbidden(format!(
            "the API may not place orders for agent {agent:?} (api.order_agents)"
        )));
    }
    let now = auroraq_schemas::now_micros();
    let id = new_intent_id(&agent, now);
    let it = intent(&req, &id, now)?;
    // Listen before publishing, so a fast decision is not missed.
    let mut decisions = st.live.decisions();
    let ev = auroraq_schemas::AnyEvent::OrderIntent(it);
    let msg = auroraq_stage::to_message(&ev).map_err(|e| HttpError::internal(format!("encode: {e}")))?;
    st.backends
        .bus
        .publish(vec![msg])
        .await
        .map_err(|e| HttpError::unavailable(format!("cannot publish the order intent: {e}")))?;
    metrics::counter!("auroraq_api_orders_placed_total").increment(1);
    let wait = Duration::from_millis(st.cfg.order_decision_timeout_ms);
    let decided = tokio::time::timeout(wait, async {
        loop {
            match decisions.recv().await {
                Ok(d) if d.intent_id == id => return Some(d),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let (status, body) = match decided {
        Some(d) => (
            StatusCode::OK,
            PlaceResponse {
                intent_id: id,
                status: "decided".into(),
                decision: Some(event_json(&*d)),
            },
        ),
        None => (
            StatusCode::ACCEPTED,
            PlaceResponse {
                intent_id: id,
                status: "pending".into(),
                decision: None,
            },
        ),
    };
    Ok((status, Json(body)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub agent: Option<String>,
    pub symbol: Option<String>,
    /// Order updates, 1 to 1,000 (default 100), newest first.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderRow {
    pub ts: String,
    pub client_order_id: String,
    pub venue: String,
    pub agent: String,
    pub symbol: String,
    pub side: String,
    pub status: String,
    pub quantity: String,
    pub filled_quantity: String,
    pub last_fill_price: Option<String>,
    pub fee: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    pub orders: Vec<OrderRow>,
}

/// Order state changes from the `orders` table, newest first.
#[utoipa::path(get, path = "/api/v1/orders/history", params(HistoryQuery),
    responses((status = 200, body = HistoryResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "orders")]
pub async fn history(
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, HttpError> {
    let agent = q.agent.as_deref().map(check_agent).transpose()?;
    let symbol = q.symbol.as_deref().map(check_symbol).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::invalid("limit must be 1 to 1000"));
    }
    let Some(pg) = &st.backends.postgres else {
        return Err(HttpError::unavailable(
            "order history needs PostgreSQL (--postgres-url)",
        ));
    };
    let rows = pg
        .query(
            "SELECT (extract(epoch FROM ts) * 1000000)::bigint, client_order_id, venue, agent, symbol, side, status, \
                    quantity::text, filled_quantity::text, last_fill_price::text, fee::text, reason \
             FROM orders WHERE ($1::text IS NULL OR agent = $1) AND ($2::text IS NULL OR symbol = $2) \
             ORDER BY ts DESC, event_id LIMIT $3",
            &[&agent, &symbol, &limit],
        )
        .await?;
    let orders = rows
        .iter()
        .map(|r| OrderRow {
            ts: rfc3339(r.get::<_, i64>(0)),
            client_order_id: r.get(1),
            venue: r.get(2),
            agent: r.get(3),
            symbol: r.get(4),
            side: r.get(5),
            status: r.get(6),
            quantity: r.get(7),
            filled_quantity: r.get(8),
            last_fill_price: r.get(9),
            fee: r.get(10),
            reason: r.get(11),
        })
        .collect();
    Ok(Json(HistoryResponse { orders }))
}

/// The latest portfolio snapshot of each account: the live view, PostgreSQL behind it.
async fn snapshots(st: &AppState, account: Option<&str>) -> Result<BTreeMap<String, Value>, HttpError> {
    let mut out: BTreeMap<String, Value> = st
        .live
        .portfolios()
        .into_iter()
        .filter(|(a, _)| account.is_none_or(|x| x == a))
        .collect();
    if out.is_empty() {
        if let Some(pg) = &st.backends.postgres {
            let rows = pg
                .query(
                    "SELECT DISTINCT ON (account) account, (extract(epoch FROM ts) * 1000000)::bigint, positions::text, \
                            cash::text, equity::text, realized_pnl::text, unrealized_pnl::text, performance::text \
                     FROM portfolio_snapshots WHERE ($1::text IS NULL OR account = $1) ORDER BY account, ts DESC",
                    &[&account],
                )
                .await?;
            for r in rows {
                let account: String = r.get(0);
                let v = serde_json::json!({
                    "account": account,
                    "ts_event": r.get::<_, i64>(1),
                    "positions": serde_json::from_str::<Value>(&r.get::<_, String>(2)).unwrap_or(Value::Null),
                    "cash": r.get::<_, String>(3),
                    "equity": r.get::<_, String>(4),
                    "realized_pnl": r.get::<_, String>(5),
                    "unrealized_pnl": r.get::<_, String>(6),
                    "performance": serde_json::from_str::<Value>(&r.get::<_, String>(7)).unwrap_or(Value::Null),
                });
                out.insert(account, v);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortfolioResponse {
    pub agent: String,
    /// The latest portfolio snapshot (positions, cash, equity, P&L, performance).
    #[schema(value_type = Object)]
    pub portfolio: Value,
    /// As risk sees the agent now (pending orders, halts), when risk has heard of it.
    #[schema(value_type = Option<Object>)]
    pub risk: Option<Value>,
}

/// An agent's portfolio.
#[utoipa::path(get, path = "/api/v1/portfolio/{agent}", params(("agent" = String, Path)),
    responses((status = 200, body = PortfolioResponse), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "orders")]
pub async fn portfolio(
    State(st): State<Arc<AppState>>,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<PortfolioResponse>, HttpError> {
    let agent = check_agent(&agent)?;
    let risk = st
        .live
        .with_risk(|r| r.agent(&agent))
        .and_then(|s| serde_json::to_value(s).ok());
    let mut snaps = snapshots(&st, Some(&agent)).await?;
    let portfolio = match snaps.remove(&agent) {
        Some(p) => p,
        None if risk.is_some() => Value::Null,
        None => {
            return Err(HttpError::not_found(format!(
                "no portfolio of agent {agent:?} yet"
            )))
        }
    };
    Ok(Json(PortfolioResponse {
        agent,
        portfolio,
        risk,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PerformanceQuery {
    pub agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PerformanceResponse {
    /// By agent: the performance figures of its latest snapshot (return, Sharpe, drawdown, ...)
    /// with its equity and P&L.
    #[schema(value_type = Object)]
    pub agents: BTreeMap<String, Value>,
}

/// Performance of every agent (or one).
#[utoipa::path(get, path = "/api/v1/performance/metrics", params(PerformanceQuery),
    responses((status = 200, body = PerformanceResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "orders")]
pub async fn performance(
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<PerformanceQuery>,
) -> Result<Json<PerformanceResponse>, HttpError> {
    let agent = q.agent.as_deref().map(check_agent).transpose()?;
    let agents = snapshots(&st, agent.as_deref())
        .await?
        .into_iter()
        .map(|(a, v)| {
            let pick = serde_json::json!({
                "performance": v.get("performance").cloned().unwrap_or(Value::Null),
                "equity": v.get("equity").cloned().unwrap_or(Value::Null),
                "realized_pnl": v.get("realized_pnl").cloned().unwrap_or(Value::Null),
                "unrealized_pnl": v.get("unrealized_pnl").cloned().unwrap_or(Value::Null),
                "ts_event": v.get("ts_event").cloned().unwrap_or(Value::Null),
            });
            (a, pick)
        })
        .collect();
    Ok(Json(PerformanceResponse { agents }))
}
