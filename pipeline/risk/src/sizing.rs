//! Position sizing by volatility targeting, with caps and lot rounding.

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::SizingConfig;

/// `q` rounded down (towards zero) to a multiple of `lot`.
pub fn floor_to_lot(q: Decimal, lot: Decimal) -> Decimal {
    if lot <= Decimal::ZERO {
        return q;
    }
    ((q / lot).trunc() * lot).normalize()
}

/// A sizing and how it came about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sizing {
    pub quantity: Decimal,
    /// The notional aimed at: `equity * target / vol`, capped.
    pub target_notional: f64,
    /// Which cap bound it, if any: `max_position_fraction` or `max_quantity`.
    pub capped_by: Option<&'static str>,
}

/// The quantity of a new position whose annualised volatility is `target_annual_vol` of
/// `equity`: `notional = equity * target / annual_vol`, capped at `equity *
/// max_position_fraction`; `quantity = notional / price` rounded down to `lot`, capped at
/// `max_quantity`. Errors (with the reason) when the inputs make no sense or the quantity is
/// below `min_quantity` or zero.
pub fn vol_target_quantity(
    equity: Decimal,
    price: Decimal,
    annual_vol: f64,
    cfg: &SizingConfig,
    lot: Decimal,
) -> Result<Sizing, String> {
    if price <= Decimal::ZERO {
        return Err(format!("price {price} must be > 0"));
    }
    if !(annual_vol > 0.0 && annual_vol.is_finite()) {
        return Err(format!("volatility {annual_vol} must be > 0"));
    }
    let eq = equity.to_f64().unwrap_or(0.0);
    if eq <= 0.0 {
        return Err(format!("equity {equity} must be > 0"));
    }
    let mut notional = eq * cfg.target_annual_vol / annual_vol;
    let mut capped_by = None;
    let cap = eq * cfg.max_position_fraction;
    if notional > cap {
        notional = cap;
        capped_by = Some("max_position_fraction");
    }
    let n = Decimal::from_f64(notional).ok_or_else(|| format!("notional {notional} out of range"))?;
    let mut q = floor_to_lot(n / price, lot);
    if let Some(mx) = cfg.max_quantity {
        if q > mx {
            q = floor_to_lot(mx, lot);
            capped_by = Some("max_quantity");
        }
    }
    if q <= Decimal::ZERO || q < cfg.min_quantity {
        return Err(format!(
            "sized quantity {q} is below the minimum {} (lot {lot})",
            cfg.min_quantity
        ));
    }
    Ok(Sizing {
        quantity: q,
        target_notional: notional,
        capped_by,
    })
}
