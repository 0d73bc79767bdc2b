//! Exact decimals for prices, quantities and money.
//!
//! On the wire a [`Dec`] is the Avro record `auroraq.types.Decimal { unscaled: long, scale: int }`,
//! so its value is `unscaled * 10^-scale`. In Rust it is a [`rust_decimal::Decimal`], so arithmetic
//! is exact too. Nothing here goes through `f64`, except [`to_f64`] for statistics.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// An exact decimal number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dec(pub Decimal);

/// A string that is not a decimal number, or one too large for the wire format.
#[derive(Debug, thiserror::Error)]
#[error("invalid decimal {input:?}: {why}")]
pub struct DecError {
    input: String,
    why: String,
}

impl Dec {
    pub const ZERO: Dec = Dec(Decimal::ZERO);

    /// Exact value from a mantissa and a scale: `Dec::new(12345, 2)` is 123.45.
    pub fn new(unscaled: i64, scale: u32) -> Self {
        Dec(Decimal::new(unscaled, scale))
    }

    /// Parses a decimal string such as Binance's `"0.00123400"` exactly, keeping its scale.
    /// Rejects floats in scientific notation, NaN and infinities.
    pub fn parse(s: &str) -> Result<Self, DecError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(DecError {
                input: s.to_owned(),
                why: "empty".into(),
            });
        }
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        let plain = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && digits.bytes().filter(|&b| b == b'.').count() <= 1
            && digits.bytes().any(|b| b.is_ascii_digit());
        if !plain {
            return Err(DecError {
                input: s.to_owned(),
                why: "not a plain decimal number".into(),
            });
        }
        Decimal::from_str(t).map(Dec).map_err(|e| DecError {
            input: s.to_owned(),
            why: e.to_string(),
        })
    }

    /// The wire form: `(unscaled, scale)`, with trailing zeros kept as the source gave them.
    pub fn to_parts(self) -> Result<(i64, i32), DecError> {
        let m = self.0.mantissa();
        let unscaled = i64::try_from(m).map_err(|_| DecError {
            input: self.0.to_string(),
            why: "mantissa does not fit in 64 bits".into(),
        })?;
        Ok((unscaled, self.0.scale() as i32))
    }

    /// Inverse of [`Dec::to_parts`].
    pub fn from_parts(unscaled: i64, scale: i32) -> Result<Self, DecError> {
        if !(0..=28).contains(&scale) {
            return Err(DecError {
                input: format!("{unscaled}e-{scale}"),
                why: "scale must be in 0..=28".into(),
            });
        }
        Ok(Dec(Decimal::new(unscaled, scale as u32)))
    }

    /// `d` as a decimal that fits the wire (an Avro decimal with a 64-bit unscaled value): at most
    /// 8 decimal places, and fewer if the mantissa would not fit.
    pub fn fit(d: Decimal) -> Dec {
        let mut dp = 8;
        loop {
            let r = d.round_dp(dp).normalize();
            if i64::try_from(r.mantissa()).is_ok() || dp == 0 {
                return Dec(r);
            }
            dp -= 1;
        }
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Dec {
    type Err = DecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dec::parse(s)
    }
}

impl From<Decimal> for Dec {
    fn from(d: Decimal) -> Self {
        Dec(d)
    }
}

impl Serialize for Dec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (unscaled, scale) = self.to_parts().map_err(serde::ser::Error::custom)?;
        let mut st = serializer.serialize_struct("Decimal", 2)?;
        st.serialize_field("unscaled", &unscaled)?;
        st.serialize_field("scale", &scale)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Decimal record {unscaled, scale}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dec, A::Error> {
                let mut unscaled: Option<i64> = None;
                let mut scale: Option<i32> = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "unscaled" => unscaled = Some(map.next_value()?),
                        "scale" => scale = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let unscaled = unscaled.ok_or_else(|| de::Error::missing_field("unscaled"))?;
                let scale = scale.ok_or_else(|| de::Error::missing_field("scale"))?;
                Dec::from_parts(unscaled, scale).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_struct("Decimal", &["unscaled", "scale"], V)
    }
}

/// `d.to_f64()` (rust_decimal's `Decimal::as_f64`), bit for bit, with 64-bit instead of 128-bit
/// integer arithmetic when the mantissa fits 64 bits and the scale is 1 to 19 (prices,
/// quantities and money: what stages turn into floats on every event).
pub fn to_f64(d: Decimal) -> f64 {
    let scale = d.scale();
    let Ok(m) = u64::try_from(d.mantissa().unsigned_abs()) else {
        return d.as_f64();
    };
    if scale == 0 || scale > 19 {
        return d.as_f64();
    }
    // The same steps as `as_f64`: integral and fractional parts, then rounding to `scale` places.
    let precision = 10_u64.pow(scale);
    let frac = (m % precision) as f64 / precision as f64;
    let integral = (m / precision) as f64;
    let neg = d.is_sign_negative();
    if frac == 0.0 {
        return if neg { -integral } else { integral };
    }
    let round_to = 10f64.powi(scale as i32);
    let rounded = ((integral + frac) * round_to).round() / round_to;
    if neg {
        -rounded
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_f64_is_rust_decimals_bit_for_bit() {
        use rust_decimal::prelude::ToPrimitive;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let m = match i % 4 {
                0 => (x % 10_000_000) as i64,
                1 => (x % 100_000_000_000_000) as i64,
                2 => x as i64,
                _ => (x >> (x % 64)) as i64,
            };
            let m = if i % 3 == 0 { -m } else { m };
            let d = Decimal::new(m, (i % 29) as u32);
            let want = d.to_f64().unwrap_or(f64::NAN);
            assert_eq!(to_f64(d).to_bits(), want.to_bits(), "{d}");
        }
        for d in [
            Decimal::ZERO,
            Decimal::NEGATIVE_ONE,
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(-0, 3),
        ] {
            assert_eq!(
                to_f64(d).to_bits(),
                d.to_f64().unwrap_or(f64::NAN).to_bits(),
                "{d}"
            );
        }
        // Products keep more places and may pass 64 bits.
        let p = Decimal::new(300_012_345, 2) * Decimal::new(123_456_789, 8);
        assert_eq!(to_f64(p).to_bits(), p.to_f64().unwrap_or(f64::NAN).to_bits());
    }

    #[test]
    fn parses_exchange_strings_exactly() {
        let d = Dec::parse("0.00123400").unwrap();
        assert_eq!(d.to_parts().unwrap(), (123400, 8));
        assert_eq!(d.to_string(), "0.00123400");
        let p = Dec::parse("64123.45").unwrap();
        assert_eq!(Dec::from_parts(6412345, 2).unwrap(), p);
    }

    #[test]
    fn rejects_non_numbers() {
        for bad in ["", "NaN", "inf", "1e5", "abc", "1.2.3"] {
            assert!(Dec::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn rejects_out_of_range_scale() {
        assert!(Dec::from_parts(1, -1).is_err());
        assert!(Dec::from_parts(1, 29).is_err());
    }
}
