//! Binance market-data frames into AuroraQ events.
//!
//! A combined-stream frame is `{"stream":"<symbol>@<kind>","data":{...}}`. [`Decoder::frame`]
//! reads it in one pass: the `stream` name picks the payload type, and `data` is deserialized
//! straight into a borrowed struct of that type (prices stay `&str` until [`Dec::parse`] makes
//! them exact decimals). Fields Binance adds later are ignored; fields it drops are not needed
//! (the `trade` event lost `b`/`a`). A frame that does not parse, has an unknown stream kind, or
//! carries a price that is not a finite decimal is an error, never a panic.
//!
//! Trade, aggregated-trade and depth frames, the most frequent, first go through a one-pass reader
//! over the frame's bytes (`fast_frame`) that takes only the plain form Binance sends and leaves
//! anything else to serde; prices go through a one-pass decimal reader with [`Dec::parse`]'s
//! result; event ids are hashed from a stack buffer, without building their native id. The
//! events and errors are byte for byte those of the plain serde path
//! (`tests/decode_equivalence.rs`).
//!
//! The same decoder reads spot (Binance, Binance.US) and USDⓈ-M futures frames: futures depth
//! diffs carry `pu` ([`DepthDiff::prev_final_update_id`]); futures `markPrice` and `forceOrder`
//! frames decode into the [`MarkPrice`] and [`Liquidation`] events, which the connector and the
//! replay publish like trades and tickers.

use auroraq_util::IntDigits;
use std::fmt;

use auroraq_schemas::{
    BookTicker, Dec, EventKind, Kline, Level, Liquidation, MarkPrice, Meta, Micros, OrderSide, Side,
    TraceContext, TradeTick,
};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("frame has no \"stream\" field")]
    NoStream,
    #[error("frame has no \"data\" field")]
    NoData,
    #[error("unknown stream kind in {0:?}")]
    UnknownStream(String),
    #[error("field {field}: {value:?} is not a finite decimal")]
    BadDecimal { field: &'static str, value: String },
    #[error("field {field}: {value} is out of range")]
    OutOfRange { field: &'static str, value: i64 },
    #[error("field {field}: {value:?} is not one of {expected}")]
    BadValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A depth diff (`depthUpdate`) before the order-book sync rules decide what to do with it.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthDiff {
    pub symbol: String,
    /// `U`: first update id in the event.
    pub first_update_id: i64,
    /// `u`: final update id in the event.
    pub final_update_id: i64,
    /// `pu`: the final update id of the stream's previous diff (USDⓈ-M futures only; spot diffs
    /// have none).
    pub prev_final_update_id: Option<i64>,
    /// `E`, in microseconds.
    pub event_time: Micros,
    /// When AuroraQ received it.
    pub ts_ingest: Micros,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// A depth snapshot (REST `/api/v3/depth` or `/fapi/v1/depth`, or a partial-depth stream payload).
#[derive(Clone, Debug, PartialEq)]
pub struct DepthSnapshot {
    pub symbol: String,
    pub last_update_id: i64,
    /// When it was received.
    pub ts_ingest: Micros,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum MarketEvent {
    Trade(TradeTick),
    Kline(Kline),
    Ticker(BookTicker),
    /// Goes through [`crate::book::BookSync`] before it becomes a `BookUpdate`.
    Depth(DepthDiff),
    /// A USDⓈ-M futures mark price (`<symbol>@markPrice`, `markPriceUpdate`): mark, index and
    /// estimated settle price, funding rate (`r` empty: `None`) and next funding time (`T` 0:
    /// `None`). Its id comes from the symbol and the event time `E`.
    MarkPrice(MarkPrice),
    /// A USDⓈ-M futures liquidation order (`<symbol>@forceOrder`, `forceOrder`; Binance pushes
    /// the latest one per symbol per second at most). Its id comes from the symbol, the order's
    /// trade time `T` and the event time `E`.
    Liquidation(Liquidation),
    /// A stream kind AuroraQ reads but does not publish (24hr tickers and the like).
    Ignored(&'static str),
}

/// Stream kinds the decoder knows, from the part of the stream name after `@`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    Trade,
    AggTrade,
    Kline,
    BookTicker,
    Depth,
    MarkPrice,
    ForceOrder,
    Other(&'static str),
}

fn stream_kind(stream: &str) -> Option<StreamKind> {
    let (_, rest) = stream.split_once('@')?;
    let kind = rest.split('@').next().unwrap_or(rest);
    Some(match kind {
        "trade" => StreamKind::Trade,
        "aggTrade" => StreamKind::AggTrade,
        "bookTicker" => StreamKind::BookTicker,
        "depth" => StreamKind::Depth,
        "markPrice" => StreamKind::MarkPrice,
        "forceOrder" => StreamKind::ForceOrder,
        k if k.starts_with("kline_") => StreamKind::Kline,
        "ticker" => StreamKind::Other("24hrTicker"),
        "miniTicker" => StreamKind::Other("24hrMiniTicker"),
        k if k.starts_with("depth5") || k.starts_with("depth10") || k.starts_with("depth20") => {
            StreamKind::Other("partialDepth")
        }
        _ => return None,
    })
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "t")]
    id: i64,
    #[serde(rename = "p")]
    price: &'a str,
    #[serde(rename = "q")]
    qty: &'a str,
    #[serde(rename = "T")]
    time: i64,
    #[serde(rename = "m")]
    buyer_is_maker: bool,
}

#[derive(Deserialize)]
struct RawAggTrade<'a> {
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "a")]
    id: i64,
    #[serde(rename = "p")]
    price: &'a str,
    #[serde(rename = "q")]
    qty: &'a str,
    #[serde(rename = "T")]
    time: i64,
    #[serde(rename = "m")]
    buyer_is_maker: bool,
}

#[derive(Deserialize)]
struct RawKlineFrame<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "k", borrow)]
    k: RawKline<'a>,
}

#[derive(Deserialize)]
struct RawKline<'a> {
    #[serde(rename = "t")]
    open_time: i64,
    #[serde(rename = "T")]
    close_time: i64,
    #[serde(rename = "i")]
    interval: &'a str,
    #[serde(rename = "o")]
    open: &'a str,
    #[serde(rename = "h")]
    high: &'a str,
    #[serde(rename = "l")]
    low: &'a str,
    #[serde(rename = "c")]
    close: &'a str,
    #[serde(rename = "v")]
    volume: &'a str,
    #[serde(rename = "q")]
    quote_volume: Option<&'a str>,
    #[serde(rename = "n")]
    trades: Option<i64>,
    #[serde(rename = "x")]
    closed: bool,
}

#[derive(Deserialize)]
struct RawBookTicker<'a> {
    #[serde(rename = "u")]
    update_id: Option<i64>,
    /// Futures only (spot book tickers carry no time).
    #[serde(rename = "E")]
    event_time: Option<i64>,
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "b")]
    bid: &'a str,
    #[serde(rename = "B")]
    bid_qty: &'a str,
    #[serde(rename = "a")]
    ask: &'a str,
    #[serde(rename = "A")]
    ask_qty: &'a str,
}

#[derive(Deserialize)]
struct RawDepth<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "U")]
    first: i64,
    #[serde(rename = "u")]
    last: i64,
    #[serde(rename = "pu")]
    prev: Option<i64>,
    #[serde(rename = "b", borrow)]
    bids: Levels<'a>,
    #[serde(rename = "a", borrow)]
    asks: Levels<'a>,
}

/// Price levels (`[["price","qty"],...]`) parsed into exact decimals as they are read, with no
/// list of strings in between. A level that is not two finite decimals does not fail the parse:
/// the first one is kept (`bad`) and reported after it, in the order the fields are checked, so
/// a frame with several faults gives the same error it always gave.
#[derive(Default)]
struct Levels<'a> {
    levels: Vec<Level>,
    bad: Option<&'a str>,
}

impl<'a> Levels<'a> {
    fn into_levels(self, field: &'static str) -> Result<Vec<Level>, DecodeError> {
        match self.bad {
            Some(v) => Err(bad_decimal(field, v)),
            None => Ok(self.levels),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Levels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Levels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Levels<'a>, A::Error> {
                let mut out = Levels {
                    levels: Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024)),
                    bad: None,
                };
                while let Some([p, q]) = seq.next_element::<[&'de str; 2]>()? {
                    if out.bad.is_some() {
                        continue;
                    }
                    match (parse_dec(p), parse_dec(q)) {
                        (Some(price), Some(quantity)) => out.levels.push(Level { price, quantity }),
                        (None, _) => out.bad = Some(p),
                        (_, None) => out.bad = Some(q),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawMarkPrice<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "p")]
    mark: &'a str,
    #[serde(rename = "i")]
    index: Option<&'a str>,
    #[serde(rename = "P")]
    settle: Option<&'a str>,
    #[serde(rename = "r")]
    funding_rate: Option<&'a str>,
    #[serde(rename = "T")]
    next_funding: Option<i64>,
}

#[derive(Deserialize)]
struct RawForceOrderFrame<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "o", borrow)]
    o: RawForceOrder<'a>,
}

#[derive(Deserialize)]
struct RawForceOrder<'a> {
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "S")]
    side: &'a str,
    #[serde(rename = "o")]
    order_type: &'a str,
    #[serde(rename = "f")]
    time_in_force: &'a str,
    #[serde(rename = "q")]
    qty: &'a str,
    #[serde(rename = "p")]
    price: &'a str,
    #[serde(rename = "ap")]
    avg_price: &'a str,
    #[serde(rename = "X")]
    status: &'a str,
    #[serde(rename = "l")]
    last_filled: &'a str,
    #[serde(rename = "z")]
    filled: &'a str,
    #[serde(rename = "T")]
    trade_time: i64,
}

#[derive(Deserialize)]
struct RawSnapshot<'a> {
    #[serde(rename = "lastUpdateId")]
    last_update_id: i64,
    #[serde(borrow)]
    bids: Levels<'a>,
    #[serde(borrow)]
    asks: Levels<'a>,
}

/// The payload of one frame, borrowed from the frame's text.
enum Payload<'a> {
    Trade(RawTrade<'a>),
    AggTrade(RawAggTrade<'a>),
    Kline(RawKlineFrame<'a>),
    Ticker(RawBookTicker<'a>),
    Depth(RawDepth<'a>),
    MarkPrice(RawMarkPrice<'a>),
    ForceOrder(RawForceOrderFrame<'a>),
    Other(&'static str),
}

/// `data` deserialized by the kind its stream name gave.
struct PayloadSeed(StreamKind);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Payload<'de>, D::Error> {
        Ok(match self.0 {
            StreamKind::Trade => Payload::Trade(RawTrade::deserialize(d)?),
            StreamKind::AggTrade => Payload::AggTrade(RawAggTrade::deserialize(d)?),
            StreamKind::Kline => Payload::Kline(RawKlineFrame::deserialize(d)?),
            StreamKind::BookTicker => Payload::Ticker(RawBookTicker::deserialize(d)?),
            StreamKind::Depth => Payload::Depth(RawDepth::deserialize(d)?),
            StreamKind::MarkPrice => Payload::MarkPrice(RawMarkPrice::deserialize(d)?),
            StreamKind::ForceOrder => Payload::ForceOrder(RawForceOrderFrame::deserialize(d)?),
            StreamKind::Other(name) => {
                IgnoredAny::deserialize(d)?;
                Payload::Other(name)
            }
        })
    }
}

/// A combined-stream frame, read in one pass when `stream` comes before `data` (as Binance
/// sends it); otherwise `data` is kept raw and read once `stream` is known.
struct Frame<'a> {
    stream: &'a str,
    payload: Payload<'a>,
}

impl<'de> Deserialize<'de> for Frame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Frame<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a combined-stream frame {\"stream\":..,\"data\":{..}}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame<'de>, A::Error> {
                let mut stream: Option<&'de str> = None;
                let mut payload: Option<Payload<'de>> = None;
                let mut raw: Option<&'de RawValue> = None;
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "stream" => stream = Some(map.next_value()?),
                        "data" => match stream {
                            Some(s) => {
                                let kind = stream_kind(s).ok_or_else(|| {
                                    de::Error::custom(format!("unknown stream kind in {s:?}"))
                                })?;
                                payload = Some(map.next_value_seed(PayloadSeed(kind))?);
                            }
                            None => raw = Some(map.next_value()?),
                        },
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let stream = stream.ok_or_else(|| de::Error::missing_field("stream"))?;
                let payload = match (payload, raw) {
                    (Some(p), _) => p,
                    (None, Some(raw)) => {
                        let kind = stream_kind(stream)
                            .ok_or_else(|| de::Error::custom(format!("unknown stream kind in {stream:?}")))?;
                        let mut de = serde_json::Deserializer::from_str(raw.get());
                        PayloadSeed(kind)
                            .deserialize(&mut de)
                            .map_err(de::Error::custom)?
                    }
                    (None, None) => return Err(de::Error::missing_field("data")),
                };
                Ok(Frame { stream, payload })
            }
        }
        d.deserialize_map(V)
    }
}

fn bad_decimal(field: &'static str, s: &str) -> DecodeError {
    DecodeError::BadDecimal {
        field,
        value: s.chars().take(64).collect(),
    }
}

fn dec(field: &'static str, s: &str) -> Result<Dec, DecodeError> {
    parse_dec(s).ok_or_else(|| bad_decimal(field, s))
}

/// [`Dec::parse`], with a fast path for what Binance sends: plain digits with at most one `.`
/// inside, 19 digits or fewer, read in one pass into the same mantissa and scale
/// (`"0.00123400"` is 123400 at scale 8, trailing zeros kept). Anything else (signs, spaces,
/// `1.`, `.5`, longer numbers, garbage) goes to [`Dec::parse`], which decides.
fn parse_dec(s: &str) -> Option<Dec> {
    let b = s.as_bytes();
    let (mut m, mut digits, mut scale, mut dot) = (0u64, 0u32, 0u32, false);
    for &c in b {
        match c {
            b'0'..=b'9' => {
                if digits == 19 {
                    return Dec::parse(s).ok();
                }
                m = m * 10 + u64::from(c - b'0');
                digits += 1;
                scale += u32::from(dot);
            }
            b'.' if !dot && digits > 0 => dot = true,
            _ => return Dec::parse(s).ok(),
        }
    }
    if digits == 0 || (dot && scale == 0) {
        return Dec::parse(s).ok();
    }
    Some(Dec(rust_decimal::Decimal::from_i128_with_scale(
        i128::from(m),
        scale,
    )))
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The first 16 bytes of the SHA-256 of `head` then `tail` concatenated, when that fits two
/// blocks with its padding (119 bytes or fewer; `None` otherwise). The message is written
/// straight into the padded blocks on the stack and compressed once: no hasher's buffer to copy
/// through, no finalisation. The same digest as [`Sha256::digest`] (tested at every length
/// around the block boundaries).
fn short_sha256(head: &[&[u8]], tail: &[&str]) -> Option<[u8; 16]> {
    type Block = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;
    let len = head.iter().map(|p| p.len()).sum::<usize>() + tail.iter().map(|p| p.len()).sum::<usize>();
    if len > 119 {
        return None;
    }
    let mut blocks = [Block::default(), Block::default()];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for (k, block) in blocks.iter_mut().enumerate() {
            let (from, to) = (n.max(64 * k), (n + bytes.len()).min(64 * (k + 1)));
            if from < to {
                block[from - 64 * k..to - 64 * k].copy_from_slice(&bytes[from - n..to - n]);
            }
        }
        n += bytes.len();
    };
    for p in head {
        put(p);
    }
    for p in tail {
        put(p.as_bytes());
    }
    put(&[0x80]);
    let used = if len + 9 <= 64 { 1 } else { 2 };
    let last = &mut blocks[used - 1];
    last[56..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    let mut state = SHA256_H0;
    sha2::compress256(&mut state, &blocks[..used]);
    let mut digest = [0u8; 16];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    Some(digest)
}

/// [`Meta::raw`] for the native id made of `native` concatenated, without building it: the
/// SHA-256 input ([`auroraq_schemas::event_id`]'s length-prefixed kind, source and native id)
/// is written into SHA-256's padded blocks on the stack and compressed once ([`short_sha256`]).
/// The same id and trace context as `Meta::raw(kind, source, &native.concat(), ..)`, byte for
/// byte (tested).
fn raw_meta(kind: EventKind, source: &str, native: &[&str], ts_event: Micros, ts_ingest: Micros) -> Meta {
    let kind = kind.as_str();
    let native_len: usize = native.iter().map(|p| p.len()).sum();
    let parts = [
        &(kind.len() as u64).to_le_bytes()[..],
        kind.as_bytes(),
        &(source.len() as u64).to_le_bytes()[..],
        source.as_bytes(),
        &(native_len as u64).to_le_bytes()[..],
    ];
    let digest = match short_sha256(&parts, native) {
        Some(d) => d,
        None => {
            let mut h = Sha256::new();
            for p in parts {
                h.update(p);
            }
            for p in native {
                h.update(p.as_bytes());
            }
            let mut d = [0u8; 16];
            d.copy_from_slice(&h.finalize()[..16]);
            d
        }
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, b) in digest.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    let id = std::str::from_utf8(&hex).unwrap_or_default();
    // `TraceContext::root_traceparent`: the id is the trace id and its second half the span id,
    // unless that half is all zeros (an invalid span id), which the function itself handles.
    let traceparent = if hex[16..].iter().any(|&c| c != b'0') {
        let mut tp = String::with_capacity(55);
        tp.push_str("00-");
        tp.push_str(id);
        tp.push('-');
        tp.push_str(&id[16..]);
        tp.push_str("-01");
        tp
    } else {
        TraceContext::root_traceparent(id)
    };
    Meta {
        traceparent: Some(traceparent),
        event_id: id.to_owned(),
        source: source.to_owned(),
        ts_event,
        ts_ingest,
        ..Meta::default()
    }
}

/// Milliseconds (Binance) to microseconds (AuroraQ), refusing values that would overflow.
fn ms(field: &'static str, v: i64) -> Result<Micros, DecodeError> {
    v.checked_mul(1000)
        .ok_or(DecodeError::OutOfRange { field, value: v })
}

/// Decodes frames for one exchange name (`binance`, `binance.us`, `binance-testnet`, ...),
/// which becomes the events' `exchange` and `source`.
#[derive(Clone, Debug)]
pub struct Decoder {
    exchange: String,
}

impl Decoder {
    pub fn new(exchange: &str) -> Self {
        Decoder {
            exchange: exchange.to_owned(),
        }
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Decodes one combined-stream text frame received at `ts_ingest` (µs).
    pub fn frame(&self, text: &str, ts_ingest: Micros) -> Result<MarketEvent, DecodeError> {
        match fast_frame(text) {
            Some((_, Fast::Trade(t))) => {
                return trade_tick(
                    &self.exchange,
                    if t.aggregated { ":a" } else { ":t" },
                    t.symbol,
                    t.id,
                    t.price,
                    t.qty,
                    t.time,
                    t.buyer_is_maker,
                    t.aggregated,
                    ts_ingest,
                )
            }
            Some((stream, Fast::Depth(d))) => return self.payload(stream, Payload::Depth(d), ts_ingest),
            None => {}
        }
        let frame: Frame<'_> = serde_json::from_str(text).map_err(|e| classify(e, text))?;
        self.payload(frame.stream, frame.payload, ts_ingest)
    }

    fn payload(&self, stream: &str, p: Payload<'_>, ts_ingest: Micros) -> Result<MarketEvent, DecodeError> {
        let ex = self.exchange.as_str();
        Ok(match p {
            Payload::Trade(t) => {
                return trade_tick(
                    ex,
                    ":t",
                    t.symbol,
                    IntDigits::new(t.id).as_str(),
                    t.price,
                    t.qty,
                    t.time,
                    t.buyer_is_maker,
                    false,
                    ts_ingest,
                )
            }
            Payload::AggTrade(t) => {
                return trade_tick(
                    ex,
                    ":a",
                    t.symbol,
                    IntDigits::new(t.id).as_str(),
                    t.price,
                    t.qty,
                    t.time,
                    t.buyer_is_maker,
                    true,
                    ts_ingest,
                )
            }
            Payload::Kline(f) => {
                let k = f.k;
                let ts = ms("E", f.event_time)?;
                let (open, event) = (IntDigits::new(k.open_time), IntDigits::new(f.event_time));
                let native = [f.symbol, ":", k.interval, ":", open.as_str(), ":", event.as_str()];
                MarketEvent::Kline(Kline {
                    meta: raw_meta(EventKind::Kline, ex, &native, ts, ts_ingest),
                    exchange: ex.to_owned(),
                    symbol: f.symbol.to_owned(),
                    interval: k.interval.to_owned(),
                    open_time: ms("t", k.open_time)?,
                    close_time: ms("T", k.close_time)?,
                    open: dec("o", k.open)?,
                    high: dec("h", k.high)?,
                    low: dec("l", k.low)?,
                    close: dec("c", k.close)?,
                    volume: dec("v", k.volume)?,
                    quote_volume: k.quote_volume.map(|q| dec("q", q)).transpose()?,
                    trades: k.trades,
                    closed: k.closed,
                })
            }
            Payload::Ticker(t) => {
                // A spot bookTicker carries no event time: the receive time stands in for it.
                let ts = match t.event_time {
                    Some(e) => ms("E", e)?,
                    None => ts_ingest,
                };
                let meta = match t.update_id {
                    Some(u) => raw_meta(
                        EventKind::BookTicker,
                        ex,
                        &[t.symbol, ":u", IntDigits::new(u).as_str()],
                        ts,
                        ts_ingest,
                    ),
                    None => raw_meta(
                        EventKind::BookTicker,
                        ex,
                        &[
                            t.symbol,
                            ":r",
                            IntDigits::new(ts_ingest).as_str(),
                            ":",
                            t.bid,
                            ":",
                            t.ask,
                        ],
                        ts,
                        ts_ingest,
                    ),
                };
                MarketEvent::Ticker(BookTicker {
                    meta,
                    exchange: ex.to_owned(),
                    symbol: t.symbol.to_owned(),
                    update_id: t.update_id,
                    bid_price: dec("b", t.bid)?,
                    bid_qty: dec("B", t.bid_qty)?,
                    ask_price: dec("a", t.ask)?,
                    ask_qty: dec("A", t.ask_qty)?,
                })
            }
            Payload::Depth(d) => MarketEvent::Depth(DepthDiff {
                symbol: d.symbol.to_owned(),
                first_update_id: d.first,
                final_update_id: d.last,
                prev_final_update_id: d.prev,
                event_time: ms("E", d.event_time)?,
                ts_ingest,
                bids: d.bids.into_levels("b")?,
                asks: d.asks.into_levels("a")?,
            }),
            Payload::MarkPrice(m) => {
                let ts = ms("E", m.event_time)?;
                let event = IntDigits::new(m.event_time);
                let native = [m.symbol, ":", event.as_str()];
                MarketEvent::MarkPrice(MarkPrice {
                    meta: raw_meta(EventKind::MarkPrice, ex, &native, ts, ts_ingest),
                    exchange: ex.to_owned(),
                    symbol: m.symbol.to_owned(),
                    mark_price: dec("p", m.mark)?,
                    index_price: m.index.map(|v| dec("i", v)).transpose()?,
                    estimated_settle_price: m.settle.map(|v| dec("P", v)).transpose()?,
                    funding_rate: m
                        .funding_rate
                        .filter(|r| !r.is_empty())
                        .map(|v| dec("r", v))
                        .transpose()?,
                    next_funding_time: m
                        .next_funding
                        .filter(|t| *t > 0)
                        .map(|t| ms("T", t))
                        .transpose()?,
                })
            }
            Payload::ForceOrder(f) => {
                let o = f.o;
                let ts = ms("E", f.event_time)?;
                let (trade, event) = (IntDigits::new(o.trade_time), IntDigits::new(f.event_time));
                let native = [o.symbol, ":", trade.as_str(), ":", event.as_str()];
                MarketEvent::Liquidation(Liquidation {
                    meta: raw_meta(EventKind::Liquidation, ex, &native, ts, ts_ingest),
                    exchange: ex.to_owned(),
                    symbol: o.symbol.to_owned(),
                    side: match o.side {
                        "BUY" => OrderSide::Buy,
                        "SELL" => OrderSide::Sell,
                        other => {
                            return Err(DecodeError::BadValue {
                                field: "S",
                                value: other.chars().take(64).collect(),
                                expected: "BUY, SELL",
                            })
                        }
                    },
                    order_type: o.order_type.to_owned(),
                    time_in_force: o.time_in_force.to_owned(),
                    quantity: dec("q", o.qty)?,
                    price: dec("p", o.price)?,
                    average_price: dec("ap", o.avg_price)?,
                    status: o.status.to_owned(),
                    last_filled_quantity: dec("l", o.last_filled)?,
                    filled_quantity: dec("z", o.filled)?,
                    trade_time: ms("T", o.trade_time)?,
                })
            }
            Payload::Other(name) => {
                let _ = stream;
                MarketEvent::Ignored(name)
            }
        })
    }
}

/// The fields of a trade or aggregated-trade frame, as [`fast_frame`] found them.
struct FastTrade<'a> {
    aggregated: bool,
    symbol: &'a str,
    /// The id's digits as the frame has them.
    id: &'a str,
    price: &'a str,
    qty: &'a str,
    time: i64,
    buyer_is_maker: bool,
}

/// A cursor over a frame's bytes for [`fast_frame`]. Every method returns `None` for anything
/// it does not read exactly as serde_json would: the frame then goes the general way.
struct Scan<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        let b = self.text.as_bytes();
        while self.i < b.len() && matches!(b[self.i], b' ' | b'\n' | b'\t' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.text.as_bytes().get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// A string with no escapes and no control characters (serde_json refuses those raw).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let b = self.text.as_bytes();
        let start = self.i;
        while let Some(&c) = b.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    return self.text.get(start..self.i - 1);
                }
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        None
    }

    /// An integer of at most 18 digits without leading zeros (surely an `i64`), with its text
    /// (which is then the integer's decimal form, as `i64::to_string` writes it).
    fn int(&mut self) -> Option<(i64, &'a str)> {
        self.ws();
        let b = self.text.as_bytes();
        let neg = b.get(self.i) == Some(&b'-');
        let start = self.i + usize::from(neg);
        let mut j = start;
        let mut v: i64 = 0;
        while let Some(&c) = b.get(j) {
            if !c.is_ascii_digit() {
                break;
            }
            if j - start == 18 {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
            j += 1;
        }
        let n = j - start;
        if n == 0 || (n > 1 && b[start] == b'0') || (neg && v == 0) {
            return None;
        }
        // A fraction or exponent makes it a float.
        if matches!(b.get(j), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let text = self.text.get(self.i..j)?;
        self.i = j;
        Some((if neg { -v } else { v }, text))
    }

    fn bool(&mut self) -> Option<bool> {
        self.ws();
        let rest = self.text.as_bytes().get(self.i..)?;
        if rest.starts_with(b"true") {
            self.i += 4;
            Some(true)
        } else if rest.starts_with(b"false") {
            self.i += 5;
            Some(false)
        } else {
            None
        }
    }

    /// `[["price","qty"],...]` into levels, as [`Levels`]' serde reading does.
    fn levels(&mut self) -> Option<Levels<'a>> {
        self.eat(b'[')?;
        let mut out = Levels::default();
        self.ws();
        if self.text.as_bytes().get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(out);
        }
        loop {
            self.eat(b'[')?;
            let p = self.string()?;
            self.eat(b',')?;
            let q = self.string()?;
            self.eat(b']')?;
            if out.bad.is_none() {
                match (parse_dec(p), parse_dec(q)) {
                    (Some(price), Some(quantity)) => out.levels.push(Level { price, quantity }),
                    (None, _) => out.bad = Some(p),
                    (_, None) => out.bad = Some(q),
                }
            }
            self.ws();
            let c = *self.text.as_bytes().get(self.i)?;
            self.i += 1;
            match c {
                b',' => {}
                b']' => return Some(out),
                _ => return None,
            }
        }
    }

    /// A string, integer or boolean value that is not wanted.
    fn skip_scalar(&mut self) -> Option<()> {
        self.ws();
        match self.text.as_bytes().get(self.i)? {
            b'"' => self.string().map(|_| ()),
            b't' | b'f' => self.bool().map(|_| ()),
            _ => self.int().map(|_| ()),
        }
    }
}

/// Fills `slot` once: serde refuses a duplicate field, so a second one is `None` here too.
fn once<T>(slot: &mut Option<T>, v: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v?);
    Some(())
}

/// A frame [`fast_frame`] read.
enum Fast<'a> {
    Trade(FastTrade<'a>),
    Depth(RawDepth<'a>),
}

/// A `trade`, `aggTrade` or `depth` frame read in one pass over its bytes, when it is in the
/// plain form Binance sends: `{"stream":..,"data":{..}}` in that order, a payload of strings
/// without escapes, integers, booleans and (depth) lists of `[price, quantity]` string pairs,
/// each needed field once. Anything else (`None`) is read by serde as before, which also gives
/// every error. What this accepts, serde reads to the same values, so the event is the same
/// (`tests/decode_equivalence.rs` checks it on the real captures and on damaged copies of them).
fn fast_frame(text: &str) -> Option<(&str, Fast<'_>)> {
    let mut sc = Scan { text, i: 0 };
    sc.eat(b'{')?;
    if sc.string()? != "stream" {
        return None;
    }
    sc.eat(b':')?;
    let stream = sc.string()?;
    let kind = stream_kind(stream)?;
    sc.eat(b',')?;
    if sc.string()? != "data" {
        return None;
    }
    sc.eat(b':')?;
    sc.eat(b'{')?;
    let fast = match kind {
        StreamKind::Trade => Fast::Trade(trade_body(&mut sc, false)?),
        StreamKind::AggTrade => Fast::Trade(trade_body(&mut sc, true)?),
        StreamKind::Depth => Fast::Depth(depth_body(&mut sc)?),
        _ => return None,
    };
    sc.eat(b'}')?;
    sc.ws();
    if sc.i != text.len() {
        return None;
    }
    Some((stream, fast))
}

/// After a payload's field: `,` (more follow, `true`) or its closing `}` (`false`).
fn more(sc: &mut Scan<'_>) -> Option<bool> {
    sc.ws();
    let c = *sc.text.as_bytes().get(sc.i)?;
    sc.i += 1;
    match c {
        b',' => Some(true),
        b'}' => Some(false),
        _ => None,
    }
}

fn trade_body<'a>(sc: &mut Scan<'a>, aggregated: bool) -> Option<FastTrade<'a>> {
    let id_key = if aggregated { "a" } else { "t" };
    let (mut symbol, mut id, mut price, mut qty, mut time, mut maker) = (None, None, None, None, None, None);
    loop {
        let key = sc.string()?;
        sc.eat(b':')?;
        match key {
            "s" => once(&mut symbol, sc.string())?,
            "p" => once(&mut price, sc.string())?,
            "q" => once(&mut qty, sc.string())?,
            "T" => once(&mut time, sc.int().map(|(v, _)| v))?,
            "m" => once(&mut maker, sc.bool())?,
            k if k == id_key => once(&mut id, sc.int().map(|(_, text)| text))?,
            _ => sc.skip_scalar()?,
        }
        if !more(sc)? {
            break;
        }
    }
    Some(FastTrade {
        aggregated,
        symbol: symbol?,
        id: id?,
        price: price?,
        qty: qty?,
        time: time?,
        buyer_is_maker: maker?,
    })
}

fn depth_body<'a>(sc: &mut Scan<'a>) -> Option<RawDepth<'a>> {
    let (mut event_time, mut symbol, mut first, mut last, mut prev, mut bids, mut asks) =
        (None, None, None, None, None, None, None);
    loop {
        let key = sc.string()?;
        sc.eat(b':')?;
        match key {
            "E" => once(&mut event_time, sc.int().map(|(v, _)| v))?,
            "s" => once(&mut symbol, sc.string())?,
            "U" => once(&mut first, sc.int().map(|(v, _)| v))?,
            "u" => once(&mut last, sc.int().map(|(v, _)| v))?,
            "pu" => once(&mut prev, sc.int().map(|(v, _)| v))?,
            "b" => once(&mut bids, sc.levels())?,
            "a" => once(&mut asks, sc.levels())?,
            _ => sc.skip_scalar()?,
        }
        if !more(sc)? {
            break;
        }
    }
    Some(RawDepth {
        event_time: event_time?,
        symbol: symbol?,
        first: first?,
        last: last?,
        prev,
        bids: bids?,
        asks: asks?,
    })
}

/// A trade or aggregated trade (`tag` `:t` or `:a` keeps their ids apart) as a
/// [`MarketEvent::Trade`].
#[allow(clippy::too_many_arguments)]
fn trade_tick(
    ex: &str,
    tag: &str,
    symbol: &str,
    id: &str,
    price: &str,
    qty: &str,
    time: i64,
    buyer_is_maker: bool,
    aggregated: bool,
    ts_ingest: Micros,
) -> Result<MarketEvent, DecodeError> {
    // What can fail first, in the order the errors have always come; then the event is built
    // in the returned value (a `?` after building it would move it once more).
    let ts = ms("T", time)?;
    let price = dec("p", price)?;
    let quantity = dec("q", qty)?;
    Ok(MarketEvent::Trade(TradeTick {
        meta: raw_meta(EventKind::TradeTick, ex, &[symbol, tag, id], ts, ts_ingest),
        exchange: ex.to_owned(),
        symbol: symbol.to_owned(),
        trade_id: id.to_owned(),
        price,
        quantity,
        aggressor: aggressor(buyer_is_maker),
        aggregated,
    }))
}

fn aggressor(buyer_is_maker: bool) -> Side {
    // The buyer was the maker, so the seller took liquidity.
    if buyer_is_maker {
        Side::Sell
    } else {
        Side::Buy
    }
}

/// Turns serde's message for our custom errors back into the typed variants where it can.
fn classify(e: serde_json::Error, text: &str) -> DecodeError {
    let msg = e.to_string();
    if msg.starts_with("unknown stream kind in ") {
        let stream = msg
            .trim_start_matches("unknown stream kind in ")
            .split(" at line")
            .next()
            .unwrap_or("")
            .trim_matches('"')
            .to_owned();
        return DecodeError::UnknownStream(stream);
    }
    if msg.starts_with("missing field `stream`") && !text.is_empty() {
        return DecodeError::NoStream;
    }
    if msg.starts_with("missing field `data`") {
        return DecodeError::NoData;
    }
    DecodeError::Json(e)
}

/// Parses a REST `/api/v3/depth` body (or a partial-depth payload) for `symbol`.
pub fn snapshot(symbol: &str, body: &str, ts_ingest: Micros) -> Result<DepthSnapshot, DecodeError> {
    let raw: RawSnapshot<'_> = serde_json::from_str(body)?;
    Ok(DepthSnapshot {
        symbol: symbol.to_ascii_uppercase(),
        last_update_id: raw.last_update_id,
        ts_ingest,
        bids: raw.bids.into_levels("bids")?,
        asks: raw.asks.into_levels("asks")?,
    })
}

/// One row of REST `/api/v3/klines`: a 12-element array, prices as strings.
#[derive(Deserialize)]
struct RawRestKline<'a>(
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
    i64,
    IgnoredAny,
    IgnoredAny,
    IgnoredAny,
);

/// Parses a REST `/api/v3/klines` body into closed klines (a row whose close time is after
/// `now` is the open candle and is marked `closed: false`).
pub fn rest_klines(
    exchange: &str,
    symbol: &str,
    interval: &str,
    body: &str,
    now: Micros,
) -> Result<Vec<Kline>, DecodeError> {
    let rows: Vec<RawRestKline<'_>> = serde_json::from_str(body)?;
    let symbol = symbol.to_ascii_uppercase();
    rows.into_iter()
        .map(|r| {
            let open_time = ms("openTime", r.0)?;
            let close_time = ms("closeTime", r.6)?;
            // A backfilled bar's id is its symbol, interval and open time (and "final"), so a
            // re-run of the same range de-duplicates.
            let native = format!("{symbol}:{interval}:{}:final", r.0);
            Ok(Kline {
                meta: Meta::raw(EventKind::Kline, exchange, &native, close_time, now),
                exchange: exchange.to_owned(),
                symbol: symbol.clone(),
                interval: interval.to_owned(),
                open_time,
                close_time,
                open: dec("open", r.1)?,
                high: dec("high", r.2)?,
                low: dec("low", r.3)?,
                close: dec("close", r.4)?,
                volume: dec("volume", r.5)?,
                quote_volume: Some(dec("quoteVolume", r.7)?),
                trades: Some(r.8),
                closed: close_time < now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRADE: &str = r#"{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}"#;

    #[test]
    fn trade_frame() {
        let d = Decoder::new("binance");
        let MarketEvent::Trade(t) = d.frame(TRADE, 7).expect("decodes") else {
            panic!("not a trade")
        };
        assert_eq!(t.symbol, "BNBBTC");
        assert_eq!(t.trade_id, "12345");
        assert_eq!(t.price.to_string(), "0.001");
        assert_eq!(t.quantity.to_string(), "100");
        assert_eq!(t.aggressor, Side::Sell);
        assert_eq!(t.meta.ts_event, 1_672_515_782_136_000);
        assert_eq!(t.meta.ts_ingest, 7);
        assert_eq!(
            d.frame(TRADE, 9).expect("again").into_meta_id(),
            t.meta.event_id,
            "same trade, same id"
        );
    }

    #[test]
    fn data_before_stream_still_decodes() {
        let text = r#"{"data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"},"stream":"bnbusdt@bookTicker"}"#;
        let MarketEvent::Ticker(t) = Decoder::new("binance").frame(text, 1).expect("decodes") else {
            panic!("not a ticker")
        };
        assert_eq!(t.update_id, Some(400900217));
        assert_eq!(t.ask_price.to_string(), "25.36520000");
    }

    #[test]
    fn bad_frames_are_errors() {
        let d = Decoder::new("binance");
        assert!(matches!(d.frame("", 0), Err(DecodeError::Json(_))));
        assert!(matches!(d.frame(&TRADE[..40], 0), Err(DecodeError::Json(_))));
        assert!(matches!(d.frame(r#"{"data":{}}"#, 0), Err(DecodeError::NoStream)));
        assert!(matches!(
            d.frame(r#"{"stream":"x@trade"}"#, 0),
            Err(DecodeError::NoData)
        ));
        assert!(matches!(
            d.frame(r#"{"stream":"x@weird","data":{}}"#, 0),
            Err(DecodeError::UnknownStream(s)) if s == "x@weird"
        ));
        let nan = TRADE.replace("\"0.001\"", "\"NaN\"");
        assert!(matches!(
            d.frame(&nan, 0),
            Err(DecodeError::BadDecimal { field: "p", .. })
        ));
        let yes = TRADE.replace("\"m\":true", "\"m\":\"yes\"");
        assert!(matches!(d.frame(&yes, 0), Err(DecodeError::Json(_))));
        let huge = TRADE.replace("\"T\":1672515782136", "\"T\":9223372036854775807");
        assert!(matches!(d.frame(&huge, 0), Err(DecodeError::OutOfRange { .. })));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = TRADE.replace("\"M\":true", "\"M\":true,\"b\":88,\"a\":50,\"new\":{\"x\":[1,2]}");
        assert!(matches!(
            Decoder::new("binance").frame(&text, 0),
            Ok(MarketEvent::Trade(_))
        ));
    }

    #[test]
    fn rest_klines_parse() {
        let body = r#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]"#;
        let k = rest_klines("binance", "bnbbtc", "1d", body, 1_800_000_000_000_000).expect("parses");
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].symbol, "BNBBTC");
        assert_eq!(k[0].high.to_string(), "0.80000000");
        assert_eq!(k[0].trades, Some(308));
        assert!(k[0].closed);
    }

    /// A real USDⓈ-M futures frame (cryptofeed's `BINANCE_FUTURES.ws.1.0`, line 3).
    const FUTURES_DEPTH: &str = r#"{"stream":"akrousdt@depth@100ms","data":{"e":"depthUpdate","E":1626992741077,"T":1626992740974,"s":"AKROUSDT","U":600859599831,"u":600859599831,"pu":600859598737,"b":[],"a":[["0.01737","437848"]]}}"#;

    /// The response examples of Binance's USDⓈ-M futures documentation ("Mark Price Stream",
    /// "Liquidation Order Streams", developers.binance.com/docs/derivatives/usds-margined-futures/
    /// websocket-market-streams), comments removed, in a combined-stream frame.
    const MARK_PRICE: &str = r#"{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}"#;
    const FORCE_ORDER: &str = r#"{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}"#;

    #[test]
    fn futures_depth_keeps_pu_and_spot_depth_has_none() {
        let d = Decoder::new("binance_futures");
        let MarketEvent::Depth(x) = d.frame(FUTURES_DEPTH, 5).expect("decodes") else {
            panic!("not depth")
        };
        assert_eq!(
            (x.first_update_id, x.final_update_id, x.prev_final_update_id),
            (600859599831, 600859599831, Some(600859598737))
        );
        assert_eq!(x.event_time, 1_626_992_741_077_000);
        assert_eq!(x.asks[0].price.to_string(), "0.01737");
        let spot = r#"{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}}"#;
        let MarketEvent::Depth(x) = d.frame(spot, 5).expect("decodes") else {
            panic!("not depth")
        };
        assert_eq!(x.prev_final_update_id, None);
    }

    #[test]
    fn futures_mark_price_decodes_exactly() {
        let MarketEvent::MarkPrice(m) = Decoder::new("binance_futures")
            .frame(MARK_PRICE, 9)
            .expect("decodes")
        else {
            panic!("not a mark price")
        };
        assert_eq!(
            (m.exchange.as_str(), m.symbol.as_str()),
            ("binance_futures", "BTCUSDT")
        );
        assert_eq!(m.meta.source, "binance_futures");
        assert_eq!(m.meta.ts_event, 1_562_305_380_000_000);
        assert_eq!(m.meta.ts_ingest, 9);
        assert_eq!(
            m.meta,
            Meta::raw(
                EventKind::MarkPrice,
                "binance_futures",
                "BTCUSDT:1562305380000",
                1_562_305_380_000_000,
                9
            )
        );
        assert_eq!(m.mark_price.to_string(), "11794.15000000");
        assert_eq!(
            m.index_price.map(|d| d.to_string()).as_deref(),
            Some("11784.62659091")
        );
        assert_eq!(
            m.estimated_settle_price.map(|d| d.to_string()).as_deref(),
            Some("11784.25641265")
        );
        assert_eq!(
            m.funding_rate.map(|d| d.to_string()).as_deref(),
            Some("0.00038167")
        );
        assert_eq!(m.next_funding_time, Some(1_562_306_400_000_000));
        // A re-sent frame is the same event.
        let MarketEvent::MarkPrice(again) = Decoder::new("binance_futures")
            .frame(MARK_PRICE, 99)
            .expect("decodes")
        else {
            panic!("not a mark price")
        };
        assert_eq!(again.meta.event_id, m.meta.event_id);
        // A contract without funding: "r" empty, "T" 0 (as the coin-M docs show it).
        let none = MARK_PRICE
            .replace(r#""0.00038167""#, r#""""#)
            .replace(r#""T":1562306400000"#, r#""T":0"#);
        let MarketEvent::MarkPrice(m) = Decoder::new("x").frame(&none, 0).expect("decodes") else {
            panic!("not a mark price")
        };
        assert_eq!((m.funding_rate, m.next_funding_time), (None, None));
        let bad = MARK_PRICE.replace(r#""11794.15000000""#, r#""11794,15""#);
        assert!(matches!(
            Decoder::new("x").frame(&bad, 0),
            Err(DecodeError::BadDecimal { field: "p", .. })
        ));
    }

    #[test]
    fn futures_liquidation_decodes_exactly() {
        let MarketEvent::Liquidation(l) = Decoder::new("binance_futures")
            .frame(FORCE_ORDER, 3)
            .expect("decodes")
        else {
            panic!("not a liquidation")
        };
        assert_eq!(
            (l.exchange.as_str(), l.symbol.as_str()),
            ("binance_futures", "BTCUSDT")
        );
        assert_eq!(l.side, OrderSide::Sell);
        assert_eq!(
            (l.order_type.as_str(), l.time_in_force.as_str(), l.status.as_str()),
            ("LIMIT", "IOC", "FILLED")
        );
        assert_eq!(l.quantity.to_string(), "0.014");
        assert_eq!(l.price.to_string(), "9910");
        assert_eq!(l.average_price.to_string(), "9910");
        assert_eq!(l.last_filled_quantity.to_string(), "0.014");
        assert_eq!(l.filled_quantity.to_string(), "0.014");
        assert_eq!(
            (l.meta.ts_event, l.meta.ts_ingest, l.trade_time),
            (1_568_014_460_893_000, 3, 1_568_014_460_893_000)
        );
        assert_eq!(
            l.meta,
            Meta::raw(
                EventKind::Liquidation,
                "binance_futures",
                "BTCUSDT:1568014460893:1568014460893",
                1_568_014_460_893_000,
                3
            )
        );
        let buy = FORCE_ORDER.replace(r#""S":"SELL""#, r#""S":"BUY""#);
        let MarketEvent::Liquidation(b) = Decoder::new("x").frame(&buy, 0).expect("decodes") else {
            panic!("not a liquidation")
        };
        assert_eq!(b.side, OrderSide::Buy);
        let bad = FORCE_ORDER.replace(r#""S":"SELL""#, r#""S":"sideways""#);
        assert!(matches!(
            Decoder::new("x").frame(&bad, 0),
            Err(DecodeError::BadValue { field: "S", .. })
        ));
        let missing = FORCE_ORDER.replace(r#""ap":"9910","#, "");
        assert!(matches!(
            Decoder::new("x").frame(&missing, 0),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn futures_book_ticker_uses_its_event_time() {
        let text = r#"{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120","A":"297","T":1626992741012,"E":1626992741017}}"#;
        let MarketEvent::Ticker(t) = Decoder::new("binance_futures").frame(text, 77).expect("decodes") else {
            panic!("not a ticker")
        };
        assert_eq!((t.meta.ts_event, t.meta.ts_ingest), (1_626_992_741_017_000, 77));
    }

    #[test]
    fn ids_without_intermediate_strings_are_meta_raw_byte_for_byte() {
        let long = "x".repeat(300);
        for (kind, source, native) in [
            (
                EventKind::TradeTick,
                "binance",
                vec!["BTCUSDT", ":t", "4000000000"],
            ),
            (
                EventKind::Kline,
                "binance_us",
                vec!["BNBUSD", ":", "1m", ":", "1", ":", "2"],
            ),
            (EventKind::BookTicker, "", vec![]),
            (
                EventKind::BookTicker,
                "binance",
                vec!["SYM", ":r", "-5", ":", long.as_str()],
            ),
            // 128 bytes to hash (24 of lengths, 10, 7, 87): the stack buffer; one more: not.
            (EventKind::BookTicker, "binance", vec![&long[..87]]),
            (EventKind::BookTicker, "binance", vec![&long[..88]]),
        ] {
            let want = Meta::raw(kind, source, &native.concat(), 3, 4);
            assert_eq!(raw_meta(kind, source, &native, 3, 4), want, "{kind:?} {native:?}");
        }
    }

    #[test]
    fn the_short_sha256_is_sha256_at_every_length_around_the_blocks() {
        let bytes: Vec<u8> = (0..130u32).map(|i| (i * 37 + 11) as u8).collect();
        let text = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".repeat(3);
        for len in 0..=130 {
            // Split between the byte parts and the text parts at several places.
            for head_len in [0, len / 3, len.min(17), len] {
                let tail_len = len - head_len;
                if tail_len > text.len() {
                    continue;
                }
                let (h1, h2) = bytes[..head_len].split_at(head_len / 2);
                let (t1, t2) = text[..tail_len].split_at(tail_len / 3);
                let got = short_sha256(&[h1, h2], &[t1, t2]);
                if len > 119 {
                    assert_eq!(got, None, "{len} bytes do not fit two blocks");
                    continue;
                }
                let mut all = bytes[..head_len].to_vec();
                all.extend_from_slice(&text.as_bytes()[..tail_len]);
                let mut want = [0u8; 16];
                want.copy_from_slice(&Sha256::digest(&all)[..16]);
                assert_eq!(got, Some(want), "{len} bytes, {head_len} of them bytes");
            }
        }
    }

    #[test]
    fn the_fast_decimal_path_is_dec_parse_exactly() {
        let mut cases: Vec<String> = [
            "0",
            "00",
            "0.0",
            "0.00123400",
            "100",
            "64000.01000000",
            "1.",
            ".5",
            "-1.5",
            "+2",
            " 1",
            "1 ",
            "1..2",
            "1.2.3",
            "",
            ".",
            "NaN",
            "inf",
            "1e5",
            "1E5",
            "0x10",
            "١",
            "9999999999999999999",
            "99999999999999999999",
            "1234567890.123456789",
            "1234567890.1234567890",
            "0.0000000000000000001",
            "123456789012345678901234567890",
            "0.00000000000000000000000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every length around the 19-digit boundary, with the point everywhere.
        for n in 1..=22 {
            let digits: String = (0..n).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
            cases.push(digits.clone());
            for dot in 1..n {
                cases.push(format!("{}.{}", &digits[..dot], &digits[dot..]));
            }
        }
        for c in &cases {
            let fast = parse_dec(c).map(|d| (d.to_parts().ok(), d.0.is_sign_negative()));
            let slow = Dec::parse(c)
                .ok()
                .map(|d| (d.to_parts().ok(), d.0.is_sign_negative()));
            assert_eq!(fast, slow, "{c:?}");
        }
    }

    #[test]
    fn the_first_bad_level_is_the_error_after_the_time_checks() {
        let d = Decoder::new("binance");
        let frame = |b: &str, a: &str, e: &str| {
            format!(
                r#"{{"stream":"x@depth","data":{{"e":"depthUpdate","E":{e},"s":"X","U":1,"u":2,"b":{b},"a":{a}}}}}"#
            )
        };
        let bad = |f: &str| match d.frame(f, 0) {
            Err(DecodeError::BadDecimal { field, value }) => Some((field, value)),
            _ => None,
        };
        assert_eq!(
            bad(&frame(r#"[["1","x"],["y","1"]]"#, r#"[["z","1"]]"#, "1")),
            Some(("b", "x".to_string()))
        );
        assert_eq!(
            bad(&frame(r#"[["1","1"]]"#, r#"[["1","1"],["2","q"]]"#, "1")),
            Some(("a", "q".to_string()))
        );
        assert!(matches!(
            d.frame(&frame(r#"[["x","1"]]"#, "[]", "9223372036854775807"), 0),
            Err(DecodeError::OutOfRange { field: "E", .. })
        ));
        assert!(matches!(
            d.frame(&frame(r#"[["1"]]"#, "[]", "1"), 0),
            Err(DecodeError::Json(_))
        ));
    }

    impl MarketEvent {
        fn into_meta_id(self) -> String {
            match self {
                MarketEvent::Trade(t) => t.meta.event_id,
                _ => String::new(),
            }
        }
    }
}
