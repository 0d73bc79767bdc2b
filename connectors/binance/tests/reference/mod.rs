//! The decoder as it was before the fast path (commit cae0564), kept verbatim as the reference
//! the new decoder must match byte for byte (`decode_equivalence.rs`). Only the frame path: the
//! public types are the library's.
#![allow(dead_code)]

use std::fmt;

use auroraq_binance::decode::{DecodeError, DepthDiff, MarketEvent};
use auroraq_schemas::{
    BookTicker, Dec, EventKind, Kline, Level, Liquidation, MarkPrice, Meta, Micros, OrderSide, Side,
    TradeTick,
};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

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
    bids: Vec<[&'a str; 2]>,
    #[serde(rename = "a", borrow)]
    asks: Vec<[&'a str; 2]>,
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
    bids: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    asks: Vec<[&'a str; 2]>,
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

fn dec(field: &'static str, s: &str) -> Result<Dec, DecodeError> {
    Dec::parse(s).map_err(|_| DecodeError::BadDecimal {
        field,
        value: s.chars().take(64).collect(),
    })
}

fn levels(field: &'static str, raw: &[[&str; 2]]) -> Result<Vec<Level>, DecodeError> {
    raw.iter()
        .map(|[p, q]| {
            Ok(Level {
                price: dec(field, p)?,
                quantity: dec(field, q)?,
            })
        })
        .collect()
}

/// Milliseconds (Binance) to microseconds (AuroraQ), refusing values that would overflow.
fn ms(field: &'static str, v: i64) -> Result<Micros, DecodeError> {
    v.checked_mul(1000)
        .ok_or(DecodeError::OutOfRange { field, value: v })
}

/// Decodes frames for one exchange name (`binance`, `binance.us`, `binance-testnet`, ...),
/// which becomes the events' `exchange` and `source`.
#[derive(Clone, Debug)]
pub struct ReferenceDecoder {
    exchange: String,
}

impl ReferenceDecoder {
    pub fn new(exchange: &str) -> Self {
        ReferenceDecoder {
            exchange: exchange.to_owned(),
        }
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Decodes one combined-stream text frame received at `ts_ingest` (µs).
    pub fn frame(&self, text: &str, ts_ingest: Micros) -> Result<MarketEvent, DecodeError> {
        let frame: Frame<'_> = serde_json::from_str(text).map_err(|e| classify(e, text))?;
        self.payload(frame.stream, frame.payload, ts_ingest)
    }

    fn payload(&self, stream: &str, p: Payload<'_>, ts_ingest: Micros) -> Result<MarketEvent, DecodeError> {
        let ex = self.exchange.as_str();
        Ok(match p {
            Payload::Trade(t) => MarketEvent::Trade(trade_tick(
                ex,
                "t",
                t.symbol,
                t.id,
                t.price,
                t.qty,
                t.time,
                t.buyer_is_maker,
                false,
                ts_ingest,
            )?),
            Payload::AggTrade(t) => MarketEvent::Trade(trade_tick(
                ex,
                "a",
                t.symbol,
                t.id,
                t.price,
                t.qty,
                t.time,
                t.buyer_is_maker,
                true,
                ts_ingest,
            )?),
            Payload::Kline(f) => {
                let k = f.k;
                let ts = ms("E", f.event_time)?;
                let native = format!("{}:{}:{}:{}", f.symbol, k.interval, k.open_time, f.event_time);
                MarketEvent::Kline(Kline {
                    meta: Meta::raw(EventKind::Kline, ex, &native, ts, ts_ingest),
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
                let native = match t.update_id {
                    Some(u) => format!("{}:u{u}", t.symbol),
                    None => format!("{}:r{ts_ingest}:{}:{}", t.symbol, t.bid, t.ask),
                };
                MarketEvent::Ticker(BookTicker {
                    meta: Meta::raw(EventKind::BookTicker, ex, &native, ts, ts_ingest),
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
                bids: levels("b", &d.bids)?,
                asks: levels("a", &d.asks)?,
            }),
            Payload::MarkPrice(m) => {
                let ts = ms("E", m.event_time)?;
                let native = format!("{}:{}", m.symbol, m.event_time);
                MarketEvent::MarkPrice(MarkPrice {
                    meta: Meta::raw(EventKind::MarkPrice, ex, &native, ts, ts_ingest),
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
                let native = format!("{}:{}:{}", o.symbol, o.trade_time, f.event_time);
                MarketEvent::Liquidation(Liquidation {
                    meta: Meta::raw(EventKind::Liquidation, ex, &native, ts, ts_ingest),
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

/// A trade or aggregated trade (`tag` `t` or `a` keeps their ids apart) as a `TradeTick`.
#[allow(clippy::too_many_arguments)]
fn trade_tick(
    ex: &str,
    tag: &str,
    symbol: &str,
    id: i64,
    price: &str,
    qty: &str,
    time: i64,
    buyer_is_maker: bool,
    aggregated: bool,
    ts_ingest: Micros,
) -> Result<TradeTick, DecodeError> {
    let ts = ms("T", time)?;
    Ok(TradeTick {
        meta: Meta::raw(
            EventKind::TradeTick,
            ex,
            &format!("{symbol}:{tag}{id}"),
            ts,
            ts_ingest,
        ),
        exchange: ex.to_owned(),
        symbol: symbol.to_owned(),
        trade_id: id.to_string(),
        price: dec("p", price)?,
        quantity: dec("q", qty)?,
        aggressor: aggressor(buyer_is_maker),
        aggregated,
    })
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
