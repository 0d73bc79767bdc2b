//! Position accounting shared by the stages that track positions from fills (risk, execution,
//! agents): one definition of how a fill moves a position, its average price and realised PnL.

use rust_decimal::Decimal;
use serde::Serialize;

/// A position: signed base quantity and average entry price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Holding {
    pub quantity: Decimal,
    pub avg_price: Decimal,
}

impl Holding {
    /// Applies a fill of `signed_qty` (buy > 0) at `price`; returns the realised PnL (gross of
    /// fees). Adding to a position moves the average price (size-weighted); reducing realises
    /// `closed * (price - avg)` (sign of the position); a fill through zero opens the rest at
    /// `price`.
    pub fn apply(&mut self, signed_qty: Decimal, price: Decimal) -> Decimal {
        let q = self.quantity;
        if signed_qty.is_zero() {
            return Decimal::ZERO;
        }
        if q.is_zero() || q.is_sign_positive() == signed_qty.is_sign_positive() {
            let new = q + signed_qty;
            self.avg_price = ((q.abs() * self.avg_price + signed_qty.abs() * price) / new.abs()).round_dp(12);
            self.quantity = new;
            return Decimal::ZERO;
        }
        let closed = signed_qty.abs().min(q.abs());
        let dir = if q.is_sign_positive() {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        let realised = closed * (price - self.avg_price) * dir;
        let new = q + signed_qty;
        if new.is_zero() {
            self.avg_price = Decimal::ZERO;
        } else if new.is_sign_positive() != q.is_sign_positive() {
            self.avg_price = price;
        }
        self.quantity = new;
        realised
    }
}
