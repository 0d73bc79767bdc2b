//! What risk knows of one agent: positions and PnL from its fills, orders approved but not yet
//! filled, equity, peak, the day's starting equity, and whether it is halted or blocked.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

pub use auroraq_schemas::Holding;

/// One agent's book.
#[derive(Clone, Debug, Serialize)]
pub struct AgentBook {
    pub initial_equity: Decimal,
    pub positions: BTreeMap<String, Holding>,
    /// Signed quantity approved by risk and not yet filled, cancelled or rejected.
    pub pending: BTreeMap<String, Decimal>,
    /// Realised PnL net of fees.
    pub realized_pnl: Decimal,
    pub fees: Decimal,
    pub peak_equity: Decimal,
    /// Equity at the last mark.
    pub last_equity: Decimal,
    /// UTC day (days since the epoch) of the last mark, and the equity when it began.
    pub day: Option<i64>,
    pub day_start_equity: Decimal,
    /// Why the agent is halted (drawdown), until an explicit reset.
    pub halted: Option<String>,
    /// Blocked for the rest of the UTC day (daily loss).
    pub daily_blocked: bool,
    /// In `var_breach` (alerted once per episode).
    pub var_breached: bool,
}

impl AgentBook {
    pub fn new(initial_equity: Decimal) -> Self {
        AgentBook {
            initial_equity,
            positions: BTreeMap::new(),
            pending: BTreeMap::new(),
            realized_pnl: Decimal::ZERO,
            fees: Decimal::ZERO,
            peak_equity: initial_equity,
            last_equity: initial_equity,
            day: None,
            day_start_equity: initial_equity,
            halted: None,
            daily_blocked: false,
            var_breached: false,
        }
    }

    pub fn held(&self, symbol: &str) -> Decimal {
        self.positions.get(symbol).map(|h| h.quantity).unwrap_or_default()
    }

    pub fn pending(&self, symbol: &str) -> Decimal {
        self.pending.get(symbol).copied().unwrap_or_default()
    }

    /// Unrealised PnL at `prices` (a symbol without a price is marked at its average price).
    pub fn unrealized(&self, prices: &BTreeMap<String, Decimal>) -> Decimal {
        self.positions
            .iter()
            .map(|(s, h)| {
                let p = prices.get(s).copied().unwrap_or(h.avg_price);
                h.quantity * (p - h.avg_price)
            })
            .sum()
    }

    /// Equity: starting equity + realised (net of fees) + unrealised.
    pub fn equity(&self, prices: &BTreeMap<String, Decimal>) -> Decimal {
        self.initial_equity + self.realized_pnl + self.unrealized(prices)
    }

    /// Applies a fill; returns the realised PnL of it, net of `fee`.
    pub fn fill(&mut self, symbol: &str, signed_qty: Decimal, price: Decimal, fee: Decimal) -> Decimal {
        let h = self.positions.entry(symbol.to_owned()).or_default();
        let gross = h.apply(signed_qty, price);
        if h.quantity.is_zero() {
            self.positions.remove(symbol);
        }
        self.realized_pnl += gross - fee;
        self.fees += fee;
        gross - fee
    }

    /// Moves pending quantity towards zero by `signed_qty` (never past it).
    pub fn release(&mut self, symbol: &str, signed_qty: Decimal) {
        let p = self.pending(symbol);
        let mut n = p - signed_qty;
        if p.is_zero() || n.is_zero() || n.is_sign_positive() != p.is_sign_positive() {
            n = Decimal::ZERO;
        }
        if n.is_zero() {
            self.pending.remove(symbol);
        } else {
            self.pending.insert(symbol.to_owned(), n);
        }
    }

    /// Drawdown from the peak, as a fraction.
    pub fn drawdown(&self) -> Decimal {
        if self.peak_equity <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        (Decimal::ONE - self.last_equity / self.peak_equity).max(Decimal::ZERO)
    }

    /// The day's loss so far (positive = loss).
    pub fn daily_loss(&self) -> Decimal {
        self.day_start_equity - self.last_equity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn average_price_and_realised_pnl() {
        let mut h = Holding::default();
        assert_eq!(h.apply(d("2"), d("100")), d("0"));
        assert_eq!(h.apply(d("2"), d("110")), d("0"));
        assert_eq!(h.avg_price, d("105"));
        // sell 3 at 120: realise 3 * 15 = 45
        assert_eq!(h.apply(d("-3"), d("120")), d("45"));
        assert_eq!((h.quantity, h.avg_price), (d("1"), d("105")));
        // sell 3 at 100: close 1 (-5), open short 2 at 100
        assert_eq!(h.apply(d("-3"), d("100")), d("-5"));
        assert_eq!((h.quantity, h.avg_price), (d("-2"), d("100")));
        // buy back 2 at 90: short gains 20
        assert_eq!(h.apply(d("2"), d("90")), d("20"));
        assert_eq!(h.quantity, d("0"));
    }

    #[test]
    fn pending_never_crosses_zero() {
        let mut b = AgentBook::new(d("1000"));
        b.pending.insert("X".into(), d("5"));
        b.release("X", d("2"));
        assert_eq!(b.pending("X"), d("3"));
        b.release("X", d("7"));
        assert_eq!(b.pending("X"), d("0"));
        b.release("X", d("-1"));
        assert_eq!(b.pending("X"), d("0"));
    }
}
