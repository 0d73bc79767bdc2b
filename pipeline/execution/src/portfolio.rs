//! One account's positions, cash and PnL, in exact decimals.

use std::collections::BTreeMap;

pub use auroraq_schemas::Holding;
use auroraq_schemas::{Dec, OrderSide, Position};
use rust_decimal::Decimal;
use serde::Serialize;

/// A decimal for the wire: at most 8 decimal places, and fewer if the mantissa would not fit
/// the 64 bits of the Avro decimal.
pub fn wire(d: Decimal) -> Dec {
    Dec::fit(d)
}

/// The result of one fill on the portfolio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillEffect {
    /// Realised PnL net of the fee, when the fill reduced a position; `None` when it only
    /// opened or added.
    pub realized: Option<Decimal>,
}

/// Cash, positions, realised PnL (net of fees) and the last price of every symbol.
///
/// Identities (exact): `cash = initial - sum(buys) + sum(sells) - fees`;
/// `equity = cash + sum(quantity * price) = initial + realized + unrealized`.
#[derive(Clone, Debug, Serialize)]
pub struct Portfolio {
    pub initial_cash: Decimal,
    pub cash: Decimal,
    pub positions: BTreeMap<String, Holding>,
    pub prices: BTreeMap<String, Decimal>,
    /// Realised PnL net of fees.
    pub realized_pnl: Decimal,
    pub fees: Decimal,
    /// Sum of the absolute notional of all fills.
    pub traded_notional: Decimal,
}

impl Portfolio {
    pub fn new(initial_cash: Decimal) -> Self {
        Portfolio {
            initial_cash,
            cash: initial_cash,
            positions: BTreeMap::new(),
            prices: BTreeMap::new(),
            realized_pnl: Decimal::ZERO,
            fees: Decimal::ZERO,
            traded_notional: Decimal::ZERO,
        }
    }

    pub fn quantity(&self, symbol: &str) -> Decimal {
        self.positions.get(symbol).map(|h| h.quantity).unwrap_or_default()
    }

    /// Records the last price of `symbol` (marks the portfolio).
    pub fn mark(&mut self, symbol: &str, price: Decimal) {
        if price > Decimal::ZERO {
            match self.prices.get_mut(symbol) {
                Some(p) => *p = price,
                None => {
                    self.prices.insert(symbol.to_owned(), price);
                }
            }
        }
    }

    /// A fill of `qty` at `price` with `fee` (quote currency).
    pub fn fill(
        &mut self,
        symbol: &str,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
    ) -> FillEffect {
        let signed = match side {
            OrderSide::Buy => qty,
            OrderSide::Sell => -qty,
        };
        let h = self.positions.entry(symbol.to_owned()).or_default();
        let before = h.quantity;
        let gross = h.apply(signed, price);
        let reduced = !before.is_zero() && before.is_sign_positive() != signed.is_sign_positive();
        if h.quantity.is_zero() {
            self.positions.remove(symbol);
        }
        self.cash -= signed * price + fee;
        self.fees += fee;
        self.realized_pnl += gross - fee;
        self.traded_notional += qty * price;
        self.prices.entry(symbol.to_owned()).or_insert(price);
        FillEffect {
            realized: reduced.then_some(gross - fee),
        }
    }

    fn price_of(&self, symbol: &str, h: &Holding) -> Decimal {
        self.prices.get(symbol).copied().unwrap_or(h.avg_price)
    }

    pub fn unrealized_pnl(&self) -> Decimal {
        self.positions
            .iter()
            .map(|(s, h)| h.quantity * (self.price_of(s, h) - h.avg_price))
            .sum()
    }

    /// Sum of `|quantity| * price`.
    pub fn gross_exposure(&self) -> Decimal {
        self.positions
            .iter()
            .map(|(s, h)| h.quantity.abs() * self.price_of(s, h))
            .sum()
    }

    /// `cash + sum(quantity * price)`.
    pub fn equity(&self) -> Decimal {
        self.cash
            + self
                .positions
                .iter()
                .map(|(s, h)| h.quantity * self.price_of(s, h))
                .sum::<Decimal>()
    }

    /// The positions as snapshot records, by symbol.
    pub fn snapshot_positions(&self) -> Vec<Position> {
        self.positions
            .iter()
            .map(|(s, h)| {
                let p = self.price_of(s, h);
                Position {
                    symbol: s.clone(),
                    quantity: wire(h.quantity),
                    avg_price: wire(h.avg_price),
                    market_price: wire(p),
                    unrealized_pnl: wire(h.quantity * (p - h.avg_price)),
                }
            })
            .collect()
    }
}
