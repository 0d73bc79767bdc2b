//! Routing rules that depend only on an event's fields, kept here so that every stage and sink
//! that applies them applies the same one.
//!
//! # Fills
//!
//! An [`OrderUpdate`] is a **fill** when it reports a trade at the venue:
//!
//! - `last_fill_quantity` is present and `> 0`, **and**
//! - `last_fill_price` is present and `> 0`.
//!
//! Every order update goes to `exec.orders` (and the sink's `orders` table); fills also go to
//! `exec.fills` (`auroraq_stage::fill_copy`), to the sink's `fills` table, and into the backtest
//! report's trades. All of them ask [`OrderUpdate::is_fill`].
//!
//! An update with a positive last fill quantity but **no price** (missing, zero or negative) is
//! [`FillClass::Priceless`]: it is **not** a fill. A fill row or a trade needs its price (the `fills`
//! table's price is `NOT NULL`, and P&L is computed from it), and guessing one would be wrong, so
//! it stays an order update only: it is on `exec.orders` and in `orders`, not on `exec.fills` nor in
//! `fills`. Where a consumer drops it from its fills (the TimescaleDB sink), it counts and logs it,
//! since it means a venue or the execution stage reported a fill it could not price.

use rust_decimal::Decimal;

use crate::events::OrderUpdate;

/// What an order update is, for routing its fill (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillClass {
    /// No fill: no last fill quantity, or one `<= 0`.
    NoFill,
    /// A fill: a last fill quantity `> 0` at a last fill price `> 0`.
    Fill,
    /// A last fill quantity `> 0` without a price `> 0`: not a fill; counted and logged where dropped.
    Priceless,
}

impl OrderUpdate {
    /// Whether this update is a fill, a priceless fill, or no fill (see the [module docs](crate::routing)).
    pub fn fill_class(&self) -> FillClass {
        match self.last_fill_quantity {
            Some(q) if q.0 > Decimal::ZERO => match self.last_fill_price {
                Some(p) if p.0 > Decimal::ZERO => FillClass::Fill,
                _ => FillClass::Priceless,
            },
            _ => FillClass::NoFill,
        }
    }

    /// A fill: `last_fill_quantity > 0` at a `last_fill_price > 0` (see the [module docs](crate::routing)).
    pub fn is_fill(&self) -> bool {
        self.fill_class() == FillClass::Fill
    }
}

/// Order updates that exercise the fill rule's edges, built from `base`: each with the class it must
/// have. For tests of every consumer of the rule (see `auroraq_stage` and the TimescaleDB sink).
#[cfg(any(test, feature = "samples"))]
pub fn fill_edge_cases(base: &OrderUpdate) -> Vec<(OrderUpdate, FillClass)> {
    use crate::decimal::Dec;
    let d = |s: &str| Some(Dec::parse(s).expect("a decimal"));
    let cases: [(Option<Dec>, Option<Dec>, FillClass); 11] = [
        (d("64123.45"), d("0.005"), FillClass::Fill),
        (d("0.00000001"), d("0.00000001"), FillClass::Fill),
        (None, None, FillClass::NoFill),
        (d("64123.45"), None, FillClass::NoFill),
        (d("64123.45"), d("0"), FillClass::NoFill),
        (d("64123.45"), d("0.000"), FillClass::NoFill),
        (d("64123.45"), d("-0.005"), FillClass::NoFill),
        (None, d("0.005"), FillClass::Priceless),
        (d("0"), d("0.005"), FillClass::Priceless),
        (d("0.00"), d("0.005"), FillClass::Priceless),
        (d("-1"), d("0.005"), FillClass::Priceless),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (price, qty, class))| {
            let mut u = base.clone();
            u.meta.event_id = format!("{}-fill-edge-{i}", base.meta.event_id);
            u.last_fill_price = price;
            u.last_fill_quantity = qty;
            (u, class)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{samples, AnyEvent};

    #[test]
    fn the_fill_rule() {
        let base = samples::all()
            .into_iter()
            .find_map(|e| match e {
                AnyEvent::OrderUpdate(u) => Some(u),
                _ => None,
            })
            .expect("an order update sample");
        assert!(base.is_fill(), "the sample is a fill");
        for (u, class) in fill_edge_cases(&base) {
            assert_eq!(
                u.fill_class(),
                class,
                "{:?} at {:?}",
                u.last_fill_quantity,
                u.last_fill_price
            );
            assert_eq!(u.is_fill(), class == FillClass::Fill);
        }
    }
}
