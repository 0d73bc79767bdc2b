//! Execution configuration, with defaults (every field may be left out of a config file).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The paper execution stage's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Stage name: source of its events, consumer group, `dlq.<name>`. Default `execution`.
    pub name: String,
    /// The `venue` of its order updates. Default `paper`.
    pub venue: String,
    /// The `account` of its portfolio snapshots. Default `paper`.
    pub account: String,
    /// Starting cash, in quote currency. Default 100000.
    pub initial_cash: Decimal,
    /// Fee per fill, basis points of the fill's notional. Default 10 (0.10%).
    pub fee_bps: Decimal,
    /// Slippage, basis points: buys fill at `price * (1 + bps/1e4)`, sells at `price * (1 -
    /// bps/1e4)`. Default 5.
    pub slippage_bps: Decimal,
    /// The asset fees are paid in (the quote currency). Default `USD`.
    pub fee_asset: String,
    /// Partial fills: a fill takes at most the trade's quantity (the quote's size at the
    /// touch, the bar's volume), shared by the orders it fills. `false`: orders fill in full
    /// on the first eligible price. Default true.
    pub use_market_size: bool,
    /// Which market data fills orders: trades, book tickers (ask for buys, bid for sells),
    /// closed bars (their open). Default all three.
    pub fill_on_trades: bool,
    pub fill_on_tickers: bool,
    pub fill_on_klines: bool,
    /// Only market data from this exchange fills orders (and marks the portfolio). Default
    /// any.
    pub exchange: Option<String>,
    /// Allow sells beyond the position (short positions). Default true; `false` rejects them.
    pub allow_short: bool,
    /// Cancel orders still open this many seconds after they were accepted (market clock).
    /// Default none: an order waits for a price for as long as it takes.
    pub order_ttl_secs: Option<i64>,
    /// Equity-curve sampling interval on the market clock, seconds: the first market event
    /// of each new interval records a point and publishes a snapshot. 0 samples every
    /// market event. Default 3600.
    pub snapshot_interval_secs: i64,
    /// Also publish a snapshot after each market event that filled something. Default true.
    pub snapshot_on_fill: bool,
    /// Equity samples per year, to annualise. Default: 365.25 days / the sampling interval
    /// (set it, e.g. 252 for daily stock bars, or when `snapshot_interval_secs` is 0).
    pub periods_per_year: Option<f64>,
    /// Annual risk-free rate for Sharpe and Sortino. Default 0.
    pub risk_free_rate: f64,
    /// Client order ids remembered after their order is done (duplicate protection).
    /// Default 100000.
    pub remember: usize,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            name: "execution".to_owned(),
            venue: "paper".to_owned(),
            account: "paper".to_owned(),
            initial_cash: Decimal::from(100_000),
            fee_bps: Decimal::from(10),
            slippage_bps: Decimal::from(5),
            fee_asset: "USD".to_owned(),
            use_market_size: true,
            fill_on_trades: true,
            fill_on_tickers: true,
            fill_on_klines: true,
            exchange: None,
            allow_short: true,
            order_ttl_secs: None,
            snapshot_interval_secs: 3600,
            snapshot_on_fill: true,
            periods_per_year: None,
            risk_free_rate: 0.0,
            remember: 100_000,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("execution config: {0}")]
    Invalid(String),
}

impl ExecutionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.name.trim().is_empty() || self.venue.trim().is_empty() || self.account.trim().is_empty() {
            return bad("name, venue and account must not be empty");
        }
        if self.fee_bps < Decimal::ZERO || self.slippage_bps < Decimal::ZERO {
            return bad("fee_bps and slippage_bps must be >= 0");
        }
        if self.slippage_bps >= Decimal::from(10_000) {
            return bad("slippage_bps must be < 10000");
        }
        if self.snapshot_interval_secs < 0 {
            return bad("snapshot_interval_secs must be >= 0");
        }
        if self.order_ttl_secs.is_some_and(|t| t <= 0) {
            return bad("order_ttl_secs must be > 0");
        }
        if self.periods_per_year.is_some_and(|p| !(p > 0.0 && p.is_finite())) {
            return bad("periods_per_year must be > 0");
        }
        if self.periods_per_year.is_none() && self.snapshot_interval_secs == 0 {
            return bad("set periods_per_year when snapshot_interval_secs is 0");
        }
        if !self.risk_free_rate.is_finite() {
            return bad("risk_free_rate must be finite");
        }
        Ok(())
    }

    /// Equity samples per year.
    pub fn periods_per_year(&self) -> f64 {
        self.periods_per_year
            .unwrap_or_else(|| 365.25 * 86_400.0 / self.snapshot_interval_secs.max(1) as f64)
    }
}
