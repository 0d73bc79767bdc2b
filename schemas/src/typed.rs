//! The typed Avro codec: bodies written with an event kind's current schema read straight into
//! its struct, in one pass, with no `apache_avro::types::Value` tree and no serde, and structs
//! written straight to bytes.
//!
//! Each event's fields are listed once below, in schema order (`records!`); their Rust types
//! say how each reads and writes ([`Field`]). The list is written for one schema of
//! `schemas/avro/` and keyed by that schema's fingerprint ([`FINGERPRINTS`]); it is used only
//! while that is still the kind's current fingerprint ([`fast_fingerprint`]), so a schema changed
//! without its list falls back to the generic path ([`crate::codec::decode_generic`],
//! [`crate::codec::encode_generic`]). The generic path also reads every other (older or newer)
//! registered writer schema, resolving it against the current one (schema evolution).
//!
//! The writer writes what apache-avro's serde writer writes, byte for byte.
//!
//! The readers refuse exactly what [`crate::strict`] refuses, with the same [`Malformed`] errors
//! at the same offsets (truncation, varints over 64 bits or not in their shortest form, ints past
//! 32 bits, negative lengths and lengths past the end, block counts that cannot fit the bytes
//! left, sized blocks whose size is wrong, union and enum indexes out of range, booleans other
//! than 0 or 1, non-UTF-8 strings), then trailing bytes, then values the typed structs cannot
//! hold (a decimal scale outside 0..=28), in that order, as the generic path does: the
//! differential tests in `schemas/tests/typed.rs` hold the two paths to the same answers.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::codec::{CodecError, EventKind};
use crate::decimal::Dec;
use crate::events::*;
use crate::meta::Meta;
use crate::strict::{Malformed, MAX_EMPTY_ITEMS};

/// The fingerprints of the schemas the typed readers were written for, by [`EventKind`] index.
/// A test checks them against the bundled schemas: a schema change must update its reader here.
pub const FINGERPRINTS: [(EventKind, u64); 16] = [
    (EventKind::TradeTick, 0xcaa9_2b21_d1df_95d4),
    (EventKind::Kline, 0x90a6_d70a_e6dd_cc9f),
    (EventKind::BookTicker, 0x5955_d773_b076_e6fc),
    (EventKind::BookUpdate, 0x77f2_6c43_5ef1_cccc),
    (EventKind::MarkPrice, 0x4c5a_5a08_caf8_c236),
    (EventKind::Liquidation, 0x0ebf_41fc_b618_8922),
    (EventKind::Article, 0x1ae8_cca0_cd1a_31b2),
    (EventKind::SentimentScore, 0x146a_85eb_580e_515b),
    (EventKind::FusedSignal, 0x57d6_9ae2_9c2a_dd87),
    (EventKind::OrderIntent, 0xed4d_523f_586e_2f84),
    (EventKind::RiskDecision, 0xd118_ace6_afbb_2a49),
    (EventKind::OrderUpdate, 0xb924_374f_7f0c_3372),
    (EventKind::PortfolioSnapshot, 0x86b4_d67d_5e19_913b),
    (EventKind::Alert, 0xd9ea_e636_c3d6_5b53),
    (EventKind::DeadLetter, 0xbb5f_c094_26d1_d524),
    (EventKind::FeedStatus, 0x3806_c92d_6baa_a901),
];

/// The fingerprints the typed path takes, by [`EventKind`] index: a reader's fingerprint where
/// it is still its kind's current one, else `None` (that kind decodes on the generic path).
fn fast_table() -> &'static [Option<u64>; 16] {
    static TABLE: OnceLock<[Option<u64>; 16]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [None; 16];
        for (kind, fp) in FINGERPRINTS {
            if let Some(slot) = t.get_mut(kind as usize) {
                *slot = (kind.fingerprint() == fp).then_some(fp);
            }
        }
        t
    })
}

/// The fingerprint `kind`'s typed reader takes, if it has one for its current schema.
pub fn fast_fingerprint(kind: EventKind) -> Option<u64> {
    fast_table().get(kind as usize).copied().flatten()
}

/// The kind whose typed reader takes writer fingerprint `fp`, if any.
pub fn fast_kind(fp: u64) -> Option<EventKind> {
    let t = fast_table();
    EventKind::ALL
        .iter()
        .zip(t.iter())
        .find(|(_, f)| **f == Some(fp))
        .map(|(k, _)| *k)
}

type R<T> = Result<T, Malformed>;

/// What reads an Avro body through a [`Reader`]: the reader itself, or the strict check that
/// walks a schema with one.
pub(crate) trait Cursor<'b> {
    fn reader(&mut self) -> &mut Reader<'b>;
}

impl<'b> Cursor<'b> for Reader<'b> {
    fn reader(&mut self) -> &mut Reader<'b> {
        self
    }
}

/// Array or map blocks (the typed reader's and the strict check's): a count (negative: followed by the
/// block's size in bytes), that many items, until a count of 0. `item_min` is the fewest
/// bytes an item takes.
pub(crate) fn blocks<'b, C: Cursor<'b>>(
    c: &mut C,
    item_min: u64,
    mut item: impl FnMut(&mut C, usize) -> R<()>,
) -> R<()> {
    let mut empty_items = 0u64;
    loop {
        let at = c.reader().pos;
        let count = c.reader().long()?;
        if count == 0 {
            return Ok(());
        }
        let sized = if count < 0 {
            let size_at = c.reader().pos;
            let size = c.reader().long()?;
            let left = c.reader().left();
            if size < 0 {
                return Err(Malformed::NegativeLength {
                    at: size_at,
                    len: size,
                });
            }
            if usize::try_from(size).map_or(true, |s| s > left) {
                return Err(Malformed::LengthPastEnd {
                    at: size_at,
                    len: size,
                    left,
                });
            }
            Some((size_at, size))
        } else {
            None
        };
        let n = count.unsigned_abs();
        let left = c.reader().left();
        let fits = if item_min == 0 {
            empty_items = empty_items.saturating_add(n);
            empty_items <= MAX_EMPTY_ITEMS
        } else {
            n.saturating_mul(item_min) <= left as u64
        };
        if !fits {
            return Err(Malformed::BlockCount { at, count, left });
        }
        let start = c.reader().pos;
        // `n` items fit the bytes left (or the cap on empty items), so this is bounded.
        let n = n as usize;
        for _ in 0..n {
            item(c, n)?;
        }
        if let Some((size_at, size)) = sized {
            let actual = c.reader().pos - start;
            if actual as u64 != size as u64 {
                return Err(Malformed::BlockSize {
                    at: size_at,
                    size,
                    actual,
                });
            }
        }
    }
}

/// A cursor over an Avro body that checks as [`crate::strict`] does while it reads.
pub(crate) struct Reader<'b> {
    buf: &'b [u8],
    pub(crate) pos: usize,
    /// The first value the typed structs cannot hold (reported after the body proved whole,
    /// as the generic path reports it after its strict pass).
    invalid: Option<String>,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(buf: &'b [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            invalid: None,
        }
    }

    #[inline]
    pub(crate) fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> R<&'b [u8]> {
        match self.buf.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(Malformed::Truncated {
                at: self.buf.len(),
                what,
            }),
        }
    }

    /// A varint of at most 64 bits, in its shortest form.
    #[inline]
    fn varint(&mut self) -> R<u64> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> R<u64> {
        let at = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(Malformed::Truncated {
                    at: self.buf.len(),
                    what: "a varint",
                });
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only.
            if i == 9 && b > 1 {
                return Err(Malformed::VarintOverflow { at });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(Malformed::OverlongVarint { at });
                }
                return Ok(v);
            }
        }
        Err(Malformed::VarintOverflow { at })
    }

    #[inline]
    pub(crate) fn long(&mut self) -> R<i64> {
        let z = self.varint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    #[inline]
    pub(crate) fn int(&mut self) -> R<i32> {
        let at = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| Malformed::IntRange { at, value: v })
    }

    /// A length prefix, checked against the bytes left.
    #[inline]
    pub(crate) fn len(&mut self) -> R<usize> {
        let at = self.pos;
        let len = self.long()?;
        if len < 0 {
            return Err(Malformed::NegativeLength { at, len });
        }
        let left = self.left();
        match usize::try_from(len) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(Malformed::LengthPastEnd { at, len, left }),
        }
    }

    fn bytes(&mut self) -> R<Vec<u8>> {
        let n = self.len()?;
        Ok(self.take(n, "bytes")?.to_vec())
    }

    #[inline]
    fn string(&mut self) -> R<String> {
        self.str_ref().map(str::to_owned)
    }

    /// A string, borrowed from the body (checked UTF-8).
    #[inline]
    pub(crate) fn str_ref(&mut self) -> R<&'b str> {
        let n = self.len()?;
        let at = self.pos;
        let s = self.take(n, "a string")?;
        std::str::from_utf8(s).map_err(|_| Malformed::Utf8 { at })
    }

    #[inline]
    fn boolean(&mut self) -> R<bool> {
        let at = self.pos;
        let b = self.take(1, "a boolean")?[0];
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed::Boolean { at, byte: b }),
        }
    }

    fn double(&mut self) -> R<f64> {
        let s = self.take(8, "a double")?;
        let mut le = [0u8; 8];
        le.copy_from_slice(s);
        Ok(f64::from_le_bytes(le))
    }

    /// A union's branch index, `< variants`.
    #[inline]
    fn union(&mut self, variants: usize) -> R<usize> {
        let at = self.pos;
        let index = self.long()?;
        match usize::try_from(index) {
            Ok(i) if i < variants => Ok(i),
            _ => Err(Malformed::UnionIndex { at, index, variants }),
        }
    }

    /// `["null", T]`.
    #[inline]
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> R<T>) -> R<Option<T>> {
        match self.union(2)? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    /// An enum's symbol, from a table of the schema's symbols in order.
    #[inline]
    fn symbol<T: Copy>(&mut self, symbols: &[T]) -> R<T> {
        let at = self.pos;
        let index = i64::from(self.int()?);
        match usize::try_from(index).ok().and_then(|i| symbols.get(i)) {
            Some(s) => Ok(*s),
            None => Err(Malformed::EnumIndex {
                at,
                index,
                symbols: symbols.len(),
            }),
        }
    }

    fn blocks(&mut self, item_min: u64, item: impl FnMut(&mut Self, usize) -> R<()>) -> R<()> {
        blocks(self, item_min, item)
    }

    fn array<T>(&mut self, item_min: u64, mut read: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let mut out = Vec::new();
        self.blocks(item_min, |r, n| {
            if out.len() == out.capacity() {
                out.reserve(n.min(1024));
            }
            out.push(read(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// A map; a key met twice keeps its last value (as the generic path does).
    fn map<V>(&mut self, value_min: u64, mut read: impl FnMut(&mut Self) -> R<V>) -> R<BTreeMap<String, V>> {
        let mut out = BTreeMap::new();
        self.blocks(1 + value_min, |r, _| {
            let k = r.string()?;
            let v = read(r)?;
            out.insert(k, v);
            Ok(())
        })?;
        Ok(out)
    }
}

/// A writer of Avro bodies, the inverse of [`Reader`]: what apache-avro's serde writer writes for
/// the same schema, byte for byte (arrays and maps as one block and the end marker).
pub(crate) struct Writer<'o> {
    out: &'o mut Vec<u8>,
    /// The first value the schema cannot hold (a decimal whose mantissa passes 64 bits).
    invalid: Option<String>,
}

impl Writer<'_> {
    #[inline]
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.out.push(z as u8 | 0x80);
            z >>= 7;
        }
        self.out.push(z as u8);
    }

    #[inline]
    fn len(&mut self, n: usize) {
        // A length that passes i64 cannot be in memory.
        self.long(n as i64);
    }

    #[inline]
    fn raw(&mut self, b: &[u8]) {
        self.len(b.len());
        self.out.extend_from_slice(b);
    }

    fn blocks<T>(&mut self, items: impl ExactSizeIterator<Item = T>, mut write: impl FnMut(&mut Self, T)) {
        if items.len() > 0 {
            self.len(items.len());
            for it in items {
                write(self, it);
            }
        }
        self.out.push(0);
    }
}

/// A Rust type as one Avro type of the event schemas: how it reads, how it writes, and the
/// fewest bytes it takes (what [`crate::strict`]'s block-count check counts).
pub(crate) trait Field: Sized {
    const MIN: u64;
    fn read(r: &mut Reader<'_>) -> R<Self>;
    fn write(&self, w: &mut Writer<'_>);
}

impl Field for String {
    const MIN: u64 = 1;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.string()
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        w.raw(self.as_bytes());
    }
}

/// `long` (and `timestamp-micros`).
impl Field for i64 {
    const MIN: u64 = 1;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.long()
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        w.long(*self);
    }
}

impl Field for i32 {
    const MIN: u64 = 1;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.int()
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        w.long(i64::from(*self));
    }
}

impl Field for bool {
    const MIN: u64 = 1;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.boolean()
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        w.out.push(u8::from(*self));
    }
}

impl Field for f64 {
    const MIN: u64 = 8;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.double()
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        w.out.extend_from_slice(&self.to_le_bytes());
    }
}

/// `["null", T]`.
impl<T: Field> Field for Option<T> {
    const MIN: u64 = 1;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.opt(T::read)
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        match self {
            None => w.out.push(0),
            Some(v) => {
                w.out.push(2);
                v.write(w);
            }
        }
    }
}

/// An array (not `bytes`: `u8` is no field).
impl<T: Field> Field for Vec<T> {
    const MIN: u64 = 1;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.array(T::MIN, T::read)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.blocks(self.iter(), |w, v| v.write(w));
    }
}

/// A map; a key met twice keeps its last value (as the generic path does).
impl<V: Field> Field for BTreeMap<String, V> {
    const MIN: u64 = 1;
    fn read(r: &mut Reader<'_>) -> R<Self> {
        r.map(V::MIN, V::read)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.blocks(self.iter(), |w, (k, v)| {
            w.raw(k.as_bytes());
            v.write(w);
        });
    }
}

/// `auroraq.types.Decimal { unscaled: long, scale: int }`.
impl Field for Dec {
    const MIN: u64 = 2;
    #[inline]
    fn read(r: &mut Reader<'_>) -> R<Self> {
        let unscaled = r.long()?;
        let scale = r.int()?;
        match Dec::from_parts(unscaled, scale) {
            Ok(d) => Ok(d),
            Err(e) => {
                if r.invalid.is_none() {
                    r.invalid = Some(e.to_string());
                }
                Ok(Dec::ZERO)
            }
        }
    }
    #[inline]
    fn write(&self, w: &mut Writer<'_>) {
        match self.to_parts() {
            Ok((unscaled, scale)) => {
                w.long(unscaled);
                w.long(i64::from(scale));
            }
            Err(e) => {
                if w.invalid.is_none() {
                    w.invalid = Some(e.to_string());
                }
            }
        }
    }
}

/// Enums, by their schema's symbols in order.
macro_rules! symbols {
    ($($ty:ident [$($variant:ident),+ $(,)?])+) => {
        $(impl $ty {
            const SYMBOLS: &'static [$ty] = &[$($ty::$variant),+];
        }
        impl Field for $ty {
            const MIN: u64 = 1;
            #[inline]
            fn read(r: &mut Reader<'_>) -> R<Self> {
                r.symbol(Self::SYMBOLS)
            }
            #[inline]
            fn write(&self, w: &mut Writer<'_>) {
                match Self::SYMBOLS.iter().position(|s| s == self) {
                    Some(i) => w.len(i),
                    None => {
                        if w.invalid.is_none() {
                            w.invalid = Some(format!("{self:?} is not among the schema's symbols"));
                        }
                    }
                }
            }
        })+
    };
}

symbols! {
    Side [Buy, Sell, Unknown]
    OrderSide [Buy, Sell]
    Trend [Rising, Falling, Stable]
    Verdict [Approved, Resized, Rejected]
    OrderStatus [New, Accepted, PartiallyFilled, Filled, Cancelled, Rejected]
    FeedState [Connected, Disconnected, Gap, Resynced, Rolled, RateLimited, Unknown]
    Severity [Info, Warning, Critical]
}

/// Records: their fields in schema order (the types come from the structs). Events start with
/// their [`Meta`], whose fields come first in every schema.
macro_rules! records {
    ($($ty:ident { $($field:ident),+ $(,)? })+) => {
        $(impl Field for $ty {
            const MIN: u64 = 0 $(+ field_min(|v: &$ty| &v.$field))+;
            #[inline]
            fn read(r: &mut Reader<'_>) -> R<Self> {
                // Struct expressions evaluate their fields in the order written.
                Ok($ty { $($field: Field::read(r)?,)+ })
            }
            #[inline]
            fn write(&self, w: &mut Writer<'_>) {
                $(self.$field.write(w);)+
            }
        })+
    };
}

/// The [`Field::MIN`] of a field, by a projection (so the macro needs no field types).
const fn field_min<S, T: Field>(_: fn(&S) -> &T) -> u64 {
    T::MIN
}

records! {
    Meta { event_id, source, ts_event, ts_ingest, ts_processed, derived_from, traceparent, tracestate }
    Level { price, quantity }
    Position { symbol, quantity, avg_price, market_price, unrealized_pnl }
    TradeTick { meta, exchange, symbol, trade_id, price, quantity, aggressor, aggregated }
    Kline {
        meta, exchange, symbol, interval, open_time, close_time, open, high, low, close, volume,
        quote_volume, trades, closed,
    }
    BookTicker { meta, exchange, symbol, update_id, bid_price, bid_qty, ask_price, ask_qty }
    BookUpdate { meta, exchange, symbol, first_update_id, final_update_id, snapshot, bids, asks }
    MarkPrice {
        meta, exchange, symbol, mark_price, index_price, estimated_settle_price, funding_rate,
        next_funding_time,
    }
    Liquidation {
        meta, exchange, symbol, side, order_type, time_in_force, quantity, price, average_price,
        status, last_filled_quantity, filled_quantity, trade_time,
    }
    Article { meta, article_id, feed, title, text, url, origin, keywords, tickers, ts_crawled }
    SentimentScore {
        meta, article_id, assets, label, probabilities, sentiment_score, confidence, model_id,
        model_sha256, tokenizer_sha256, truncated,
    }
    FusedSignal {
        meta, asset, window_start, window_end, fused_score, confidence, scores_used,
        scores_rejected, sources_used, weights_used, trend,
    }
    OrderIntent { meta, intent_id, agent, symbol, side, quantity, notional, limit_price, reason }
    RiskDecision { meta, intent_id, agent, symbol, side, verdict, approved_quantity, reason, checks }
    OrderUpdate {
        meta, client_order_id, venue_order_id, venue, agent, symbol, side, status, quantity,
        filled_quantity, last_fill_price, last_fill_quantity, fee, fee_asset, reason,
    }
    PortfolioSnapshot { meta, account, positions, cash, equity, realized_pnl, unrealized_pnl, performance }
    Alert { meta, severity, kind, subject, message, attributes }
    FeedStatus { meta, feed, stream, symbol, status, detail, attributes }
}

/// `DeadLetter` by hand: its `original_bytes` is Avro `bytes`, not an array.
impl Field for DeadLetter {
    const MIN: u64 = 0;
    fn read(r: &mut Reader<'_>) -> R<Self> {
        Ok(DeadLetter {
            meta: Field::read(r)?,
            stage: Field::read(r)?,
            reason: Field::read(r)?,
            error: Field::read(r)?,
            original_topic: Field::read(r)?,
            original_key: Field::read(r)?,
            original_id: Field::read(r)?,
            original_bytes: r.bytes()?,
            attempts: Field::read(r)?,
        })
    }
    fn write(&self, w: &mut Writer<'_>) {
        self.meta.write(w);
        self.stage.write(w);
        self.reason.write(w);
        self.error.write(w);
        self.original_topic.write(w);
        self.original_key.write(w);
        self.original_id.write(w);
        w.raw(&self.original_bytes);
        self.attempts.write(w);
    }
}

/// Decodes a body written with `kind`'s current schema (the caller checked the fingerprint):
/// refusals as the generic path gives them (malformed, then trailing bytes, then values the
/// struct cannot hold).
pub(crate) fn decode_body<T: Field>(kind: EventKind, body: &[u8]) -> Result<T, CodecError> {
    let mut r = Reader::new(body);
    let value = T::read(&mut r).map_err(|source| CodecError::Malformed {
        kind: kind.name(),
        source,
    })?;
    if r.pos < body.len() {
        return Err(CodecError::Trailing(body.len() - r.pos));
    }
    if let Some(why) = r.invalid {
        return Err(CodecError::Body {
            kind: kind.name(),
            source: Box::new(apache_avro::Error::new(
                apache_avro::error::Details::DeserializeValue(why),
            )),
        });
    }
    Ok(value)
}

/// Appends `event`'s body in `kind`'s current schema to `out`.
pub(crate) fn encode_body<T: Field>(kind: EventKind, event: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut w = Writer { out, invalid: None };
    event.write(&mut w);
    match w.invalid {
        None => Ok(()),
        Some(why) => Err(CodecError::Encode {
            kind: kind.name(),
            source: Box::new(apache_avro::Error::new(
                apache_avro::error::Details::SerializeValue(why),
            )),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(kind: EventKind, name: &str) -> Vec<String> {
        fn find(v: &serde_json::Value, name: &str) -> Option<Vec<String>> {
            match v {
                serde_json::Value::Object(m) => {
                    if m.get("type").and_then(|t| t.as_str()) == Some("enum")
                        && m.get("name").and_then(|t| t.as_str()) == Some(name)
                    {
                        let s = m.get("symbols")?.as_array()?;
                        return Some(s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect());
                    }
                    m.values().find_map(|x| find(x, name))
                }
                serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, name)),
                _ => None,
            }
        }
        let v: serde_json::Value = serde_json::from_str(kind.avsc()).expect("bundled schema is JSON");
        find(&v, name).unwrap_or_else(|| panic!("{kind}: no enum {name}"))
    }

    #[test]
    fn readers_are_written_for_the_current_schemas() {
        let mut seen = Vec::new();
        for (i, (kind, fp)) in FINGERPRINTS.iter().enumerate() {
            assert_eq!(*kind as usize, i, "FINGERPRINTS is in EventKind order");
            assert_eq!(
                kind.fingerprint(),
                *fp,
                "{kind}'s schema changed: update its typed reader in schemas/src/typed.rs (field order \
                 and types) and its fingerprint there to {:#018x}",
                kind.fingerprint()
            );
            assert_eq!(fast_fingerprint(*kind), Some(*fp));
            assert_eq!(fast_kind(*fp), Some(*kind));
            seen.push(*kind);
        }
        assert_eq!(seen, EventKind::ALL);
    }

    #[test]
    fn symbol_tables_follow_the_schemas() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let sides: Vec<&str> = Side::SYMBOLS.iter().map(|s| s.as_str()).collect();
        assert_eq!(symbols(EventKind::TradeTick, "Side"), names(&sides));
        let os: Vec<&str> = OrderSide::SYMBOLS.iter().map(|s| s.as_str()).collect();
        for k in [
            EventKind::OrderIntent,
            EventKind::RiskDecision,
            EventKind::OrderUpdate,
            EventKind::Liquidation,
        ] {
            assert_eq!(symbols(k, "OrderSide"), names(&os), "{k}");
        }
        let t: Vec<&str> = Trend::SYMBOLS.iter().map(|s| s.as_str()).collect();
        assert_eq!(symbols(EventKind::FusedSignal, "Trend"), names(&t));
        let v: Vec<&str> = Verdict::SYMBOLS.iter().map(|s| s.as_str()).collect();
        assert_eq!(symbols(EventKind::RiskDecision, "Verdict"), names(&v));
        let st: Vec<&str> = OrderStatus::SYMBOLS.iter().map(|s| s.as_str()).collect();
        assert_eq!(symbols(EventKind::OrderUpdate, "OrderStatus"), names(&st));
        let f: Vec<&str> = FeedState::SYMBOLS.iter().map(|s| s.as_str()).collect();
        assert_eq!(symbols(EventKind::FeedStatus, "FeedState"), names(&f));
        let sev: Vec<&str> = Severity::SYMBOLS.iter().map(|s| s.as_str()).collect();
        assert_eq!(symbols(EventKind::Alert, "Severity"), names(&sev));
    }
}
