//! Performance figures from an equity curve and the trades, for snapshots and backtest reports.
//!
//! Definitions (`E_1..E_n` the equity samples at times `t_1..t_n`, `r_i = E_i / E_{i-1} - 1`
//! for `i = 2..n`, `P` samples per year, `rf` the annual risk-free rate, `rf_p = rf / P`):
//!
//! | figure | definition |
//! | --- | --- |
//! | `total_return` | `E_n / E_1 - 1` |
//! | `cagr` | `(E_n / E_1)^(1 / years) - 1`, `years = (t_n - t_1) / 365.25 days` |
//! | `annual_volatility` | `sd(r) * sqrt(P)` (sample deviation, `n - 1`) |
//! | `sharpe` | `(mean(r) - rf_p) / sd(r) * sqrt(P)` |
//! | `sortino` | `(mean(r) - rf_p) / dd * sqrt(P)`, `dd = sqrt(sum(min(0, r - rf_p)^2) / count(r))` |
//! | `max_drawdown` | `max_i (1 - E_i / max_{j <= i} E_j)`, a positive fraction |
//! | `calmar` | `cagr / max_drawdown` |
//! | `win_rate` | closing trades with realised PnL > 0 / closing trades |
//! | `turnover` | sum of fill notionals / mean equity |
//! | `exposure` | mean of gross exposure / equity over the samples |
//! | `time_in_market` | share of samples with a non-zero gross exposure |
//! | `trades`, `closing_trades`, `samples` | counts |
//!
//! A figure that is undefined (too few samples, zero deviation, no drawdown, no closing
//! trades) is `None` and left out of the snapshot's map. [`performance`] and the stage's running
//! [`PerformanceTracker`] share one implementation, so a backtest report and the last snapshot
//! agree exactly.

use std::collections::BTreeMap;

use auroraq_schemas::{Micros, OrderSide};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

const YEAR_MICROS: f64 = 365.25 * 86_400.0 * 1e6;

/// One sample of the equity curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EquityPoint {
    pub ts: Micros,
    pub equity: f64,
    /// Gross position value (sum of `|quantity| * price`) at that time.
    pub exposure: f64,
}

/// One fill, as the performance figures need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TradeRecord {
    pub ts: Micros,
    pub client_order_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub quantity: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
    /// Realised PnL net of the fee, when the fill reduced a position.
    pub realized_pnl: Option<Decimal>,
}

impl TradeRecord {
    pub fn notional(&self) -> Decimal {
        self.quantity.abs() * self.price
    }
}

/// Annualisation and the risk-free rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerformanceConfig {
    /// Equity samples per year (e.g. 8766 for hourly samples around the clock, 252 for
    /// trading days).
    pub periods_per_year: f64,
    /// Annual risk-free rate (fraction). Default 0.
    pub risk_free_rate: f64,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            periods_per_year: 365.25 * 24.0,
            risk_free_rate: 0.0,
        }
    }
}

/// The figures (see the module documentation for definitions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub total_return: Option<f64>,
    pub cagr: Option<f64>,
    pub annual_volatility: Option<f64>,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub calmar: Option<f64>,
    pub win_rate: Option<f64>,
    pub turnover: Option<f64>,
    pub exposure: Option<f64>,
    pub time_in_market: Option<f64>,
    pub trades: usize,
    pub closing_trades: usize,
    pub samples: usize,
}

impl Performance {
    /// The defined figures by name, for `PortfolioSnapshot.performance`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("total_return", self.total_return),
            ("cagr", self.cagr),
            ("annual_volatility", self.annual_volatility),
            ("sharpe", self.sharpe),
            ("sortino", self.sortino),
            ("max_drawdown", self.max_drawdown),
            ("calmar", self.calmar),
            ("win_rate", self.win_rate),
            ("turnover", self.turnover),
            ("exposure", self.exposure),
            ("time_in_market", self.time_in_market),
        ] {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.insert(k.to_owned(), v);
            }
        }
        m.insert("trades".to_owned(), self.trades as f64);
        m.insert("closing_trades".to_owned(), self.closing_trades as f64);
        m.insert("samples".to_owned(), self.samples as f64);
        m
    }
}

/// Performance figures of an equity curve (samples in time order) and its trades.
pub fn performance(equity: &[EquityPoint], trades: &[TradeRecord], cfg: &PerformanceConfig) -> Performance {
    let mut t = PerformanceTracker::new(*cfg);
    for p in equity {
        t.add_point(*p);
    }
    for tr in trades {
        t.add_trade(tr);
    }
    t.performance()
}

/// The same figures, kept up to date one sample and one trade at a time (O(1) each).
#[derive(Clone, Debug)]
pub struct PerformanceTracker {
    cfg: PerformanceConfig,
    first: Option<EquityPoint>,
    last: Option<EquityPoint>,
    samples: usize,
    equity_sum: f64,
    exposure_ratio_sum: f64,
    exposure_ratio_n: usize,
    in_market: usize,
    peak: f64,
    max_drawdown: f64,
    // Welford over the returns.
    n_returns: usize,
    mean: f64,
    m2: f64,
    downside_sq: f64,
    trades: usize,
    closing: usize,
    wins: usize,
    traded_notional: f64,
}

impl PerformanceTracker {
    pub fn new(cfg: PerformanceConfig) -> Self {
        PerformanceTracker {
            cfg,
            first: None,
            last: None,
            samples: 0,
            equity_sum: 0.0,
            exposure_ratio_sum: 0.0,
            exposure_ratio_n: 0,
            in_market: 0,
            peak: f64::NEG_INFINITY,
            max_drawdown: 0.0,
            n_returns: 0,
            mean: 0.0,
            m2: 0.0,
            downside_sq: 0.0,
            trades: 0,
            closing: 0,
            wins: 0,
            traded_notional: 0.0,
        }
    }

    /// The next sample of the equity curve.
    pub fn add_point(&mut self, p: EquityPoint) {
        if !p.equity.is_finite() {
            return;
        }
        if let Some(prev) = self.last {
            if prev.equity > 0.0 {
                let r = p.equity / prev.equity - 1.0;
                self.n_returns += 1;
                let d = r - self.mean;
                self.mean += d / self.n_returns as f64;
                self.m2 += d * (r - self.mean);
                let excess = r - self.cfg.risk_free_rate / self.cfg.periods_per_year;
                if excess < 0.0 {
                    self.downside_sq += excess * excess;
                }
            }
        }
        if self.first.is_none() {
            self.first = Some(p);
        }
        self.last = Some(p);
        self.samples += 1;
        self.equity_sum += p.equity;
        if p.equity > 0.0 {
            self.exposure_ratio_sum += p.exposure / p.equity;
            self.exposure_ratio_n += 1;
        }
        if p.exposure > 0.0 {
            self.in_market += 1;
        }
        if p.equity > self.peak {
            self.peak = p.equity;
        }
        if self.peak > 0.0 {
            self.max_drawdown = self.max_drawdown.max(1.0 - p.equity / self.peak);
        }
    }

    /// A fill.
    pub fn add_trade(&mut self, t: &TradeRecord) {
        self.trades += 1;
        self.traded_notional += t.notional().to_f64().unwrap_or(0.0);
        if let Some(r) = t.realized_pnl {
            self.closing += 1;
            if r > Decimal::ZERO {
                self.wins += 1;
            }
        }
    }

    /// The figures so far.
    pub fn performance(&self) -> Performance {
        let ppy = self.cfg.periods_per_year;
        let rf_p = self.cfg.risk_free_rate / ppy;
        let (first, last) = match (self.first, self.last) {
            (Some(f), Some(l)) => (Some(f), Some(l)),
            _ => (None, None),
        };
        let growth = match (first, last) {
            (Some(f), Some(l)) if f.equity > 0.0 => Some(l.equity / f.equity),
            _ => None,
        };
        let total_return = growth.map(|g| g - 1.0);
        let years = match (first, last) {
            (Some(f), Some(l)) => (l.ts - f.ts) as f64 / YEAR_MICROS,
            _ => 0.0,
        };
        let cagr = match growth {
            Some(g) if years > 0.0 && g > 0.0 => Some(g.powf(1.0 / years) - 1.0),
            Some(_) if years > 0.0 => Some(-1.0),
            _ => None,
        };
        let sd = (self.n_returns >= 2).then(|| (self.m2 / (self.n_returns - 1) as f64).max(0.0).sqrt());
        let annual_volatility = sd.map(|s| s * ppy.sqrt());
        let sharpe = sd
            .filter(|s| *s > 0.0)
            .map(|s| (self.mean - rf_p) / s * ppy.sqrt());
        let downside = (self.n_returns >= 1).then(|| (self.downside_sq / self.n_returns as f64).sqrt());
        let sortino = downside
            .filter(|d| *d > 0.0 && self.n_returns >= 2)
            .map(|d| (self.mean - rf_p) / d * ppy.sqrt());
        let max_drawdown = (self.samples > 0).then_some(self.max_drawdown);
        let calmar = match (cagr, max_drawdown) {
            (Some(c), Some(m)) if m > 0.0 => Some(c / m),
            _ => None,
        };
        let win_rate = (self.closing > 0).then(|| self.wins as f64 / self.closing as f64);
        let mean_equity = (self.samples > 0).then(|| self.equity_sum / self.samples as f64);
        let turnover = mean_equity.filter(|m| *m > 0.0).map(|m| self.traded_notional / m);
        let exposure =
            (self.exposure_ratio_n > 0).then(|| self.exposure_ratio_sum / self.exposure_ratio_n as f64);
        let time_in_market = (self.samples > 0).then(|| self.in_market as f64 / self.samples as f64);
        Performance {
            total_return,
            cagr,
            annual_volatility,
            sharpe,
            sortino,
            max_drawdown,
            calmar,
            win_rate,
            turnover,
            exposure,
            time_in_market,
            trades: self.trades,
            closing_trades: self.closing,
            samples: self.samples,
        }
    }
}
