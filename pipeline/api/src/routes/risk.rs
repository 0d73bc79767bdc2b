//! `/api/v1/risk/...`: VaR/ES of a position set, an order checked by the risk crate's own rules
//! (nothing placed), limits and the state of every agent, all from the API's shadow of the risk
//! stage (the same `RiskProcessor`, fed the same bus inputs).

use std::collections::BTreeMap;
use std::sync::Arc;

use auroraq_risk::{AgentStatus, Limits};
use auroraq_schemas::{decimal::to_f64, Dec, EventKind, Meta, OrderIntent, OrderSide};
use axum::extract::State;
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ErrorBody, HttpError};
use crate::http::{ApiJson, ApiPath};
use crate::routes::market::check_symbol;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PositionIn {
    pub symbol: String,
    /// Signed base quantity (negative: short), valued at the last price risk saw.
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Decimal>,
    /// Signed value in quote currency; used when `quantity` is absent.
    #[schema(value_type = Option<String>)]
    pub notional: Option<Decimal>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskCalcRequest {
    /// 1 to 100 positions.
    pub positions: Vec<PositionIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssetRisk {
    /// Exposure in quote currency.
    pub exposure: f64,
    /// VaR and ES as fractions of the position's value.
    pub var: f64,
    pub es: f64,
    pub observations: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RiskCalcResponse {
    pub confidence: f64,
    /// Horizon in return periods.
    pub horizon: f64,
    /// `historical` or `parametric`: the method risk's limits use.
    pub method: String,
    pub gross_exposure: f64,
    /// Portfolio VaR and ES in quote currency.
    pub var: f64,
    pub es: f64,
    pub historical_var: f64,
    pub historical_es: f64,
    pub parametric_var: f64,
    pub parametric_es: f64,
    pub observations: usize,
    pub assets: BTreeMap<String, AssetRisk>,
}

/// VaR and ES of a position set, from the return history risk keeps per symbol.
#[utoipa::path(post, path = "/api/v1/risk/calculate", request_body = RiskCalcRequest,
    responses((status = 200, body = RiskCalcResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "risk")]
pub async fn calculate(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RiskCalcRequest>,
) -> Result<Json<RiskCalcResponse>, HttpError> {
    if req.positions.is_empty() || req.positions.len() > 100 {
        return Err(HttpError::invalid("positions must hold 1 to 100 entries"));
    }
    st.live.with_risk(|risk| {
        let cfg = risk.config();
        let mut exposures = BTreeMap::new();
        let mut assets = BTreeMap::new();
        for p in &req.positions {
            let sym = check_symbol(&p.symbol)?;
            let exposure = match (p.quantity, p.notional) {
                (Some(q), _) => {
                    let price = risk.price(&sym).ok_or_else(|| {
                        HttpError::new(
                            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                            "no_price",
                            format!("no price of {sym} yet: give notional, or wait for market data"),
                        )
                    })?;
                    to_f64(q * price)
                }
                (None, Some(n)) => to_f64(n),
                (None, None) => return Err(HttpError::invalid(format!("{sym}: give quantity or notional"))),
            };
            let total = exposures.entry(sym.clone()).or_insert(0.0);
            *total += exposure;
            let total = *total;
            let v = risk.asset_var(&sym).ok_or_else(|| {
                HttpError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "no_history",
                    format!("not enough return history of {sym} yet for VaR"),
                )
            })?;
            assets.insert(
                sym,
                AssetRisk {
                    exposure: total,
                    var: v.var(cfg.var_method),
                    es: v.es(cfg.var_method),
                    observations: v.observations,
                },
            );
        }
        let pv = risk.portfolio_var_of(&exposures).ok_or_else(|| {
            HttpError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "no_history",
                "not enough aligned return history of these symbols yet for a portfolio VaR",
            )
        })?;
        let e = pv.estimate;
        Ok(Json(RiskCalcResponse {
            confidence: e.confidence,
            horizon: e.horizon,
            method: format!("{:?}", cfg.var_method).to_lowercase(),
            gross_exposure: pv.gross_exposure,
            var: e.var(cfg.var_method),
            es: e.es(cfg.var_method),
            historical_var: e.historical_var,
            historical_es: e.historical_es,
            parametric_var: e.parametric_var,
            parametric_es: e.parametric_es,
            observations: e.observations,
            assets,
        }))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub agent: String,
    pub symbol: String,
    /// `buy` or `sell`.
    #[schema(value_type = String)]
    pub side: OrderSide,
    /// Base quantity; or give `notional`; or neither, and risk sizes the order.
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub notional: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub limit_price: Option<Decimal>,
    /// Why (kept with the intent).
    #[serde(default)]
    pub reason: Option<String>,
}

/// An agent name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn check_agent(agent: &str) -> Result<String, HttpError> {
    let a = agent.trim();
    if a.is_empty()
        || a.len() > 64
        || !a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(HttpError::invalid(format!(
            "agent {agent:?} must be 1 to 64 letters, digits, '_' or '-'"
        )));
    }
    Ok(a.to_owned())
}

fn positive(d: Option<Decimal>, name: &str) -> Result<Option<Dec>, HttpError> {
    match d {
        None => Ok(None),
        Some(v) if v > Decimal::ZERO => Ok(Some(Dec::fit(v))),
        Some(v) => Err(HttpError::invalid(format!("{name} must be positive, not {v}"))),
    }
}

/// The intent an order request stands for, with a fresh id.
pub fn intent(req: &OrderRequest, intent_id: &str, now: i64) -> Result<OrderIntent, HttpError> {
    let agent = check_agent(&req.agent)?;
    let symbol = check_symbol(&req.symbol)?;
    let quantity = positive(req.quantity, "quantity")?;
    let notional = positive(req.notional, "notional")?;
    let limit_price = positive(req.limit_price, "limit_price")?;
    if quantity.is_some() && notional.is_some() {
        return Err(HttpError::invalid("give quantity or notional, not both"));
    }
    let reason = req.reason.clone().unwrap_or_else(|| "api".into());
    if reason.len() > 500 {
        return Err(HttpError::invalid("reason must be at most 500 bytes"));
    }
    Ok(OrderIntent {
        meta: Meta::raw(EventKind::OrderIntent, "api", intent_id, now, now),
        intent_id: intent_id.to_owned(),
        agent,
        symbol,
        side: req.side,
        quantity,
        notional,
        limit_price,
        reason,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResponse {
    /// `approved`, `resized` or `rejected`.
    pub verdict: String,
    /// The quantity risk would approve (exact decimal string); `null` when rejected.
    pub approved_quantity: Option<String>,
    pub reason: String,
    /// Each check's result by name.
    pub checks: BTreeMap<String, String>,
}

/// What risk would decide on an order now, by its own checks; nothing is placed or recorded.
#[utoipa::path(post, path = "/api/v1/risk/validate-order", request_body = OrderRequest,
    responses((status = 200, body = CheckResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "risk")]
pub async fn validate_order(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<Json<CheckResponse>, HttpError> {
    let now = auroraq_schemas::now_micros();
    let it = intent(&req, "validate", now)?;
    let c = st.live.with_risk_mut(|r| r.check(&it));
    Ok(Json(CheckResponse {
        verdict: c.verdict.as_str().to_owned(),
        approved_quantity: c.quantity.map(|q| q.normalize().to_string()),
        reason: c.reason,
        checks: c.checks,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsResponse {
    pub agent: String,
    #[schema(value_type = Object)]
    pub limits: Limits,
    #[schema(value_type = String)]
    pub initial_equity: Decimal,
    pub var_confidence: f64,
    /// Largest portfolio VaR as a fraction of equity, when limited.
    pub max_var_fraction: Option<f64>,
}

/// An agent's limits (the defaults with its overrides applied).
#[utoipa::path(get, path = "/api/v1/risk/limits/{agent}", params(("agent" = String, Path)),
    responses((status = 200, body = LimitsResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "risk")]
pub async fn limits(
    State(st): State<Arc<AppState>>,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<LimitsResponse>, HttpError> {
    let agent = check_agent(&agent)?;
    let cfg = &st.backends.risk;
    Ok(Json(LimitsResponse {
        limits: cfg.limits_for(&agent),
        initial_equity: cfg.equity_for(&agent),
        var_confidence: cfg.confidence,
        max_var_fraction: cfg.max_portfolio_var,
        agent,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentRisk {
    #[schema(value_type = Object)]
    pub status: AgentStatus,
    /// Portfolio VaR and ES of its filled positions, quote currency; `null` without history.
    pub var: Option<f64>,
    pub es: Option<f64>,
    pub gross_exposure: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RiskMetricsResponse {
    pub agents: BTreeMap<String, AgentRisk>,
    /// Symbols with a price, and their last price.
    #[schema(value_type = Object)]
    pub prices: BTreeMap<String, Decimal>,
}

/// Every agent as risk sees it now: equity, drawdown, positions, VaR.
#[utoipa::path(get, path = "/api/v1/risk/metrics",
    responses((status = 200, body = RiskMetricsResponse)),
    security(("api_key" = []), ("bearer" = [])), tag = "risk")]
pub async fn metrics(State(st): State<Arc<AppState>>) -> Json<RiskMetricsResponse> {
    st.live.with_risk(|r| {
        let method = r.config().var_method;
        let mut agents = BTreeMap::new();
        let mut prices = BTreeMap::new();
        for a in r.agents() {
            let Some(status) = r.agent(&a) else { continue };
            for s in status.positions.keys() {
                if let Some(p) = r.price(s) {
                    prices.insert(s.clone(), p);
                }
            }
            let v = r.agent_var(&a);
            agents.insert(
                a,
                AgentRisk {
                    status,
                    var: v.as_ref().map(|v| v.estimate.var(method)),
                    es: v.as_ref().map(|v| v.estimate.es(method)),
                    gross_exposure: v.map(|v| v.gross_exposure),
                },
            );
        }
        Json(RiskMetricsResponse { agents, prices })
    })
}
