//! Values as PostgreSQL's binary format wants them: timestamps from epoch microseconds, `jsonb`
//! from JSON text, and text without NUL characters (which PostgreSQL's `text` cannot hold).

use std::borrow::Cow;
use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` from epoch microseconds (AuroraQ's [`auroraq_schemas::Micros`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub i64);

impl ToSql for Ts {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let v = self
            .0
            .checked_sub(PG_EPOCH_OFFSET_MICROS)
            .ok_or_else(|| format!("timestamp {} µs is out of range", self.0))?;
        out.put_i64(v);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ, TIMESTAMP);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Ts {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Ts, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "timestamp must be 8 bytes")?;
        let v = i64::from_be_bytes(bytes);
        v.checked_add(PG_EPOCH_OFFSET_MICROS)
            .map(Ts)
            .ok_or_else(|| "timestamp out of range".into())
    }

    accepts!(TIMESTAMPTZ, TIMESTAMP);
}

/// A `jsonb` value from JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct Jsonb(pub String);

impl Jsonb {
    /// A JSON value as `jsonb`. Strings in it must be [`clean`] already.
    pub fn of(v: &serde_json::Value) -> Jsonb {
        Jsonb(v.to_string())
    }
}

impl ToSql for Jsonb {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_u8(1); // jsonb binary format version
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSONB);
    to_sql_checked!();
}

/// The text without NUL characters (PostgreSQL rejects them in `text` and `jsonb`): each becomes
/// U+FFFD. Borrows when there is none, which is always in practice.
pub fn clean(s: &str) -> Cow<'_, str> {
    if s.as_bytes().contains(&0) {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// [`clean`] over a list.
pub fn clean_all(v: &[String]) -> Cow<'_, [String]> {
    if v.iter().any(|s| s.as_bytes().contains(&0)) {
        Cow::Owned(v.iter().map(|s| clean(s).into_owned()).collect())
    } else {
        Cow::Borrowed(v)
    }
}

/// [`clean`] over an optional string.
pub fn clean_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_reject_overflow() {
        let mut buf = BytesMut::new();
        let t = Ts(1_700_000_000_123_456);
        assert!(matches!(t.to_sql(&Type::TIMESTAMPTZ, &mut buf), Ok(IsNull::No)));
        assert_eq!(Ts::from_sql(&Type::TIMESTAMPTZ, &buf).ok(), Some(t));
        assert!(Ts(i64::MIN).to_sql(&Type::TIMESTAMPTZ, &mut buf).is_err());
    }

    #[test]
    fn nul_characters_are_replaced() {
        assert!(matches!(clean("plain"), Cow::Borrowed("plain")));
        assert_eq!(clean("a\0b"), "a\u{FFFD}b");
        let v = vec!["x".to_string(), "y\0".to_string()];
        assert_eq!(
            clean_all(&v).as_ref(),
            &["x".to_string(), "y\u{FFFD}".to_string()]
        );
    }
}
