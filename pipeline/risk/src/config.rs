//! Risk configuration, with defaults (every field may be left out of a config file).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::stats::VarMethod;

/// Everything the risk stage is told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Stage name: source of its events, consumer group, `dlq.<name>`. Default `risk`.
    pub name: String,
    /// Return interval in seconds (bucket of the return grid). Default 3600 (hourly); 86400
    /// for daily bars.
    pub return_interval_secs: i64,
    /// Returns kept per asset (the estimation window). Default 720 (30 days of hours).
    pub lookback: usize,
    /// Returns needed before VaR or volatility is estimated. Default 30.
    pub min_observations: usize,
    /// VaR / ES confidence. Default 0.99.
    pub confidence: f64,
    /// VaR horizon in seconds, scaled by sqrt(horizon / return interval). Default 86400 (1 day).
    pub horizon_secs: i64,
    /// Return periods per year, to annualise volatility. Default: 365.25 days / return interval
    /// (markets that trade every day); use 252 for daily stock bars.
    pub periods_per_year: Option<f64>,
    /// The VaR that limits are checked against. Default historical.
    pub var_method: VarMethod,
    /// An agent's portfolio VaR (at `confidence` and horizon) above this fraction of its equity
    /// raises `var_breach` and rejects risk-increasing intents. Default 0.05; `None` disables.
    pub max_portfolio_var: Option<f64>,
    /// Each agent's starting equity (its capital), in quote currency. Default 100000.
    pub initial_equity: Decimal,
    /// Starting equity of named agents (overrides `initial_equity`).
    pub agent_equity: BTreeMap<String, Decimal>,
    pub sizing: SizingConfig,
    /// Limits of every agent...
    pub limits: Limits,
    /// ...unless overridden here, field by field.
    pub agent_limits: BTreeMap<String, LimitOverrides>,
    /// While halted (drawdown) or blocked (daily loss), still approve intents that only reduce
    /// a position (never beyond flat). Default true.
    pub allow_reducing_when_blocked: bool,
    /// Decisions remembered for idempotency (a redelivered intent gets its first decision back).
    /// Default 100000.
    pub remember: usize,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            name: "risk".to_owned(),
            return_interval_secs: 3600,
            lookback: 720,
            min_observations: 30,
            confidence: 0.99,
            horizon_secs: 86_400,
            periods_per_year: None,
            var_method: VarMethod::Historical,
            max_portfolio_var: Some(0.05),
            initial_equity: Decimal::from(100_000),
            agent_equity: BTreeMap::new(),
            sizing: SizingConfig::default(),
            limits: Limits::default(),
            agent_limits: BTreeMap::new(),
            allow_reducing_when_blocked: true,
            remember: 100_000,
        }
    }
}

/// Position sizing by volatility targeting, for intents that give neither quantity nor notional:
/// the target position is `notional = equity * target_annual_vol / asset_annual_vol`, capped at
/// `equity * max_position_fraction`, `quantity = notional / price`, rounded down to `lot_size`,
/// capped at `max_quantity`, on the intent's side; the order is what is missing to get there
/// from the current position (with approved, unfilled orders), so a sell while long closes the
/// long and opens the short; nothing missing, or less than `min_quantity`, rejects the intent. `lot_size`,
/// `min_quantity` and `max_quantity` apply to every approved quantity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizingConfig {
    /// Target annualised volatility of one position, as a fraction of equity. Default 0.20.
    pub target_annual_vol: f64,
    /// Largest position notional as a fraction of equity. Default 0.10.
    pub max_position_fraction: f64,
    /// Default 0 (any positive multiple of the lot).
    pub min_quantity: Decimal,
    /// Default none.
    pub max_quantity: Option<Decimal>,
    /// Quantities are rounded down to a multiple of this. Default 0.00000001.
    pub lot_size: Decimal,
    /// Per-symbol lot sizes (override `lot_size`).
    pub lot_sizes: BTreeMap<String, Decimal>,
    /// Annual volatility assumed while an asset has fewer than `min_observations` returns;
    /// default none (such intents are rejected: `no volatility estimate`).
    pub fallback_annual_vol: Option<f64>,
}

impl Default for SizingConfig {
    fn default() -> Self {
        SizingConfig {
            target_annual_vol: 0.20,
            max_position_fraction: 0.10,
            min_quantity: Decimal::ZERO,
            max_quantity: None,
            lot_size: Decimal::new(1, 8),
            lot_sizes: BTreeMap::new(),
            fallback_annual_vol: None,
        }
    }
}

/// One agent's limits. Position limits are per symbol; money is in quote currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest absolute position (base quantity). Default none.
    pub max_position_qty: Option<Decimal>,
    /// Largest absolute position value at the current price. Default 50000.
    pub max_position_notional: Option<Decimal>,
    /// Largest single order value; larger intents are rejected. Default 25000.
    pub max_order_notional: Option<Decimal>,
    /// Loss since the start of the UTC day (equity then minus equity now) that blocks new risk
    /// for the rest of the day. Default 5000.
    pub max_daily_loss: Option<Decimal>,
    /// Drawdown from the agent's peak equity (fraction) that halts the agent until reset.
    /// Default 0.20.
    pub max_drawdown: Option<f64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_position_qty: None,
            max_position_notional: Some(Decimal::from(50_000)),
            max_order_notional: Some(Decimal::from(25_000)),
            max_daily_loss: Some(Decimal::from(5_000)),
            max_drawdown: Some(0.20),
        }
    }
}

/// Per-agent overrides of [`Limits`]: a field that is set replaces the default. To lift a
/// default limit for one agent, set it very high.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    pub max_position_qty: Option<Decimal>,
    pub max_position_notional: Option<Decimal>,
    pub max_order_notional: Option<Decimal>,
    pub max_daily_loss: Option<Decimal>,
    pub max_drawdown: Option<f64>,
}

impl Limits {
    /// These limits with `o`'s fields applied.
    pub fn with(&self, o: &LimitOverrides) -> Limits {
        Limits {
            max_position_qty: o.max_position_qty.or(self.max_position_qty),
            max_position_notional: o.max_position_notional.or(self.max_position_notional),
            max_order_notional: o.max_order_notional.or(self.max_order_notional),
            max_daily_loss: o.max_daily_loss.or(self.max_daily_loss),
            max_drawdown: o.max_drawdown.or(self.max_drawdown),
        }
    }

    /// No limits at all.
    pub fn none() -> Limits {
        Limits {
            max_position_qty: None,
            max_position_notional: None,
            max_order_notional: None,
            max_daily_loss: None,
            max_drawdown: None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("risk config: {0}")]
    Invalid(String),
}

impl RiskConfig {
    /// Checks ranges; [`crate::RiskProcessor::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.name.trim().is_empty() {
            return bad("name must not be empty".into());
        }
        if self.return_interval_secs <= 0 {
            return bad(format!(
                "return_interval_secs must be > 0, not {}",
                self.return_interval_secs
            ));
        }
        if self.horizon_secs <= 0 {
            return bad(format!("horizon_secs must be > 0, not {}", self.horizon_secs));
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return bad(format!("confidence must be in (0.5, 1), not {}", self.confidence));
        }
        if self.lookback < 2 || self.min_observations < 2 || self.min_observations > self.lookback {
            return bad(format!(
                "need 2 <= min_observations ({}) <= lookback ({})",
                self.min_observations, self.lookback
            ));
        }
        if self.periods_per_year.is_some_and(|p| !(p > 0.0 && p.is_finite())) {
            return bad("periods_per_year must be > 0".into());
        }
        if self.max_portfolio_var.is_some_and(|v| v.is_nan() || v <= 0.0) {
            return bad("max_portfolio_var must be > 0".into());
        }
        let s = &self.sizing;
        if !(s.target_annual_vol > 0.0 && s.target_annual_vol.is_finite()) {
            return bad("sizing.target_annual_vol must be > 0".into());
        }
        if !(s.max_position_fraction > 0.0 && s.max_position_fraction.is_finite()) {
            return bad("sizing.max_position_fraction must be > 0".into());
        }
        if s.lot_size <= Decimal::ZERO || s.lot_sizes.values().any(|l| *l <= Decimal::ZERO) {
            return bad("lot sizes must be > 0".into());
        }
        if s.min_quantity < Decimal::ZERO || s.max_quantity.is_some_and(|m| m <= s.min_quantity) {
            return bad("need 0 <= sizing.min_quantity < sizing.max_quantity".into());
        }
        if s.fallback_annual_vol.is_some_and(|v| v.is_nan() || v <= 0.0) {
            return bad("sizing.fallback_annual_vol must be > 0".into());
        }
        if self.limits.max_drawdown.is_some_and(|d| !(d > 0.0 && d < 1.0)) {
            return bad("limits.max_drawdown must be in (0, 1)".into());
        }
        for (a, o) in &self.agent_limits {
            if o.max_drawdown.is_some_and(|d| !(d > 0.0 && d < 1.0)) {
                return bad(format!("limits of {a}: max_drawdown must be in (0, 1)"));
            }
        }
        Ok(())
    }

    /// The limits of `agent`.
    pub fn limits_for(&self, agent: &str) -> Limits {
        match self.agent_limits.get(agent) {
            Some(o) => self.limits.with(o),
            None => self.limits.clone(),
        }
    }

    /// The starting equity of `agent`.
    pub fn equity_for(&self, agent: &str) -> Decimal {
        self.agent_equity
            .get(agent)
            .copied()
            .unwrap_or(self.initial_equity)
    }

    /// The lot size of `symbol`.
    pub fn lot_for(&self, symbol: &str) -> Decimal {
        self.sizing
            .lot_sizes
            .get(symbol)
            .copied()
            .unwrap_or(self.sizing.lot_size)
    }

    /// Return periods per year.
    pub fn periods_per_year(&self) -> f64 {
        self.periods_per_year
            .unwrap_or(365.25 * 86_400.0 / self.return_interval_secs as f64)
    }

    /// The VaR horizon in return periods.
    pub fn horizon_periods(&self) -> f64 {
        self.horizon_secs as f64 / self.return_interval_secs as f64
    }
}
