//! The typed events. Each struct mirrors one `.avsc` file in `schemas/avro/` field for field;
//! the common header is [`Meta`], flattened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decimal::Dec;
use crate::meta::{Meta, Micros};

/// Taker side of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
    Unknown,
}

/// Side of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSide {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Rising,
    Falling,
    Stable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approved,
    Resized,
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    Accepted,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
}

/// What happened to a connector's link to its source (see [`FeedStatus`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedState {
    Connected,
    Disconnected,
    /// Data was missed, e.g. a depth update id skipped.
    Gap,
    /// A fresh snapshot restored a book after a gap.
    Resynced,
    /// A planned reconnect, e.g. before Binance's 24-hour cut.
    Rolled,
    /// The source asked us to slow down.
    RateLimited,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// The enums' names as the JSON (serde) form writes them: for sinks, logs and reasons.
macro_rules! names {
    ($($ty:ident { $($variant:ident => $name:literal),+ $(,)? })+) => {
        $(impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        })+
    };
}

names! {
    Side { Buy => "buy", Sell => "sell", Unknown => "unknown" }
    OrderSide { Buy => "buy", Sell => "sell" }
    Trend { Rising => "rising", Falling => "falling", Stable => "stable" }
    Verdict { Approved => "approved", Resized => "resized", Rejected => "rejected" }
    OrderStatus {
        New => "new",
        Accepted => "accepted",
        PartiallyFilled => "partially_filled",
        Filled => "filled",
        Cancelled => "cancelled",
        Rejected => "rejected",
    }
    FeedState {
        Connected => "connected",
        Disconnected => "disconnected",
        Gap => "gap",
        Resynced => "resynced",
        Rolled => "rolled",
        RateLimited => "rate_limited",
        Unknown => "unknown",
    }
    Severity { Info => "info", Warning => "warning", Critical => "critical" }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TradeTick {
    #[serde(flatten)]
    pub meta: Meta,
    pub exchange: String,
    pub symbol: String,
    pub trade_id: String,
    pub price: Dec,
    pub quantity: Dec,
    pub aggressor: Side,
    pub aggregated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kline {
    #[serde(flatten)]
    pub meta: Meta,
    pub exchange: String,
    pub symbol: String,
    pub interval: String,
    pub open_time: Micros,
    pub close_time: Micros,
    pub open: Dec,
    pub high: Dec,
    pub low: Dec,
    pub close: Dec,
    pub volume: Dec,
    pub quote_volume: Option<Dec>,
    pub trades: Option<i64>,
    pub closed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookTicker {
    #[serde(flatten)]
    pub meta: Meta,
    pub exchange: String,
    pub symbol: String,
    pub update_id: Option<i64>,
    pub bid_price: Dec,
    pub bid_qty: Dec,
    pub ask_price: Dec,
    pub ask_qty: Dec,
}

/// One price level of an order book.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub price: Dec,
    pub quantity: Dec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookUpdate {
    #[serde(flatten)]
    pub meta: Meta,
    pub exchange: String,
    pub symbol: String,
    pub first_update_id: i64,
    pub final_update_id: i64,
    pub snapshot: bool,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// A futures contract's mark price, index price and funding (`mark_price.avsc`; Binance USDⓈ-M
/// `<symbol>@markPrice`). `meta.ts_event` is the venue's event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkPrice {
    #[serde(flatten)]
    pub meta: Meta,
    pub exchange: String,
    pub symbol: String,
    pub mark_price: Dec,
    pub index_price: Option<Dec>,
    /// Only meaningful in the last hour before a settlement.
    pub estimated_settle_price: Option<Dec>,
    /// `None` for contracts without funding (delivery).
    pub funding_rate: Option<Dec>,
    /// `None` for contracts without funding (delivery).
    pub next_funding_time: Option<Micros>,
}

/// A forced liquidation order (`liquidation.avsc`; Binance USDⓈ-M `<symbol>@forceOrder`). Its
/// fills are also in the trade streams, so it is not a trade. `meta.ts_event` is the venue's
/// event time; the venue's order type, time in force and status are kept as it spells them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Liquidation {
    #[serde(flatten)]
    pub meta: Meta,
    pub exchange: String,
    pub symbol: String,
    pub side: OrderSide,
    pub order_type: String,
    pub time_in_force: String,
    /// Original order quantity.
    pub quantity: Dec,
    pub price: Dec,
    pub average_price: Dec,
    pub status: String,
    pub last_filled_quantity: Dec,
    /// Accumulated filled quantity.
    pub filled_quantity: Dec,
    pub trade_time: Micros,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Article {
    #[serde(flatten)]
    pub meta: Meta,
    pub article_id: String,
    pub feed: String,
    pub title: Option<String>,
    pub text: String,
    pub url: Option<String>,
    pub origin: Option<String>,
    pub keywords: Vec<String>,
    pub tickers: Vec<String>,
    pub ts_crawled: Option<Micros>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentimentScore {
    #[serde(flatten)]
    pub meta: Meta,
    pub article_id: String,
    pub assets: Vec<String>,
    pub label: String,
    pub probabilities: BTreeMap<String, f64>,
    pub sentiment_score: f64,
    pub confidence: f64,
    pub model_id: String,
    pub model_sha256: String,
    pub tokenizer_sha256: String,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusedSignal {
    #[serde(flatten)]
    pub meta: Meta,
    pub asset: String,
    pub window_start: Micros,
    pub window_end: Micros,
    pub fused_score: f64,
    pub confidence: f64,
    pub scores_used: i32,
    pub scores_rejected: i32,
    pub sources_used: i32,
    pub weights_used: BTreeMap<String, f64>,
    pub trend: Trend,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderIntent {
    #[serde(flatten)]
    pub meta: Meta,
    pub intent_id: String,
    pub agent: String,
    pub symbol: String,
    pub side: OrderSide,
    pub quantity: Option<Dec>,
    pub notional: Option<Dec>,
    pub limit_price: Option<Dec>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskDecision {
    #[serde(flatten)]
    pub meta: Meta,
    pub intent_id: String,
    pub agent: String,
    pub symbol: String,
    pub side: OrderSide,
    pub verdict: Verdict,
    pub approved_quantity: Option<Dec>,
    pub reason: String,
    pub checks: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderUpdate {
    #[serde(flatten)]
    pub meta: Meta,
    pub client_order_id: String,
    pub venue_order_id: Option<String>,
    pub venue: String,
    pub agent: String,
    pub symbol: String,
    pub side: OrderSide,
    pub status: OrderStatus,
    pub quantity: Dec,
    pub filled_quantity: Dec,
    pub last_fill_price: Option<Dec>,
    pub last_fill_quantity: Option<Dec>,
    pub fee: Option<Dec>,
    pub fee_asset: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: String,
    pub quantity: Dec,
    pub avg_price: Dec,
    pub market_price: Dec,
    pub unrealized_pnl: Dec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortfolioSnapshot {
    #[serde(flatten)]
    pub meta: Meta,
    pub account: String,
    pub positions: Vec<Position>,
    pub cash: Dec,
    pub equity: Dec,
    pub realized_pnl: Dec,
    pub unrealized_pnl: Dec,
    pub performance: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub meta: Meta,
    pub severity: Severity,
    pub kind: String,
    pub subject: Option<String>,
    pub message: String,
    pub attributes: BTreeMap<String, String>,
}

/// A change in a connector's link to its source, so consumers know where the data has holes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedStatus {
    #[serde(flatten)]
    pub meta: Meta,
    pub feed: String,
    pub stream: String,
    pub symbol: Option<String>,
    pub status: FeedState,
    pub detail: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub meta: Meta,
    pub stage: String,
    pub reason: String,
    pub error: String,
    pub original_topic: String,
    pub original_key: Option<String>,
    pub original_id: Option<String>,
    #[serde(with = "serde_bytes_compat")]
    pub original_bytes: Vec<u8>,
    pub attempts: i32,
}

/// `Vec<u8>` as Avro `bytes` (serde would otherwise write an array of ints).
mod serde_bytes_compat {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn enum_names_are_their_json_names() {
        for v in [Side::Buy, Side::Sell, Side::Unknown] {
            assert_eq!(v.as_str(), json_name(v));
        }
        for v in [OrderSide::Buy, OrderSide::Sell] {
            assert_eq!(v.as_str(), json_name(v));
        }
        for v in [Trend::Rising, Trend::Falling, Trend::Stable] {
            assert_eq!(v.as_str(), json_name(v));
        }
        for v in [Verdict::Approved, Verdict::Resized, Verdict::Rejected] {
            assert_eq!(v.as_str(), json_name(v));
        }
        for v in [
            OrderStatus::New,
            OrderStatus::Accepted,
            OrderStatus::PartiallyFilled,
            OrderStatus::Filled,
            OrderStatus::Cancelled,
            OrderStatus::Rejected,
        ] {
            assert_eq!(v.as_str(), json_name(v));
        }
        for v in [
            FeedState::Connected,
            FeedState::Disconnected,
            FeedState::Gap,
            FeedState::Resynced,
            FeedState::Rolled,
            FeedState::RateLimited,
            FeedState::Unknown,
        ] {
            assert_eq!(v.as_str(), json_name(v));
        }
        for v in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(v.as_str(), json_name(v));
        }
    }
}
