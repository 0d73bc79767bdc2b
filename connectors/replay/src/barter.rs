//! Normalised Binance market data as barter-data writes it (`barter_recorded/`).
//!
//! Either JSON lines or one JSON array of items:
//! `{"Item":{"Ok":{"time_exchange":..,"time_received":..,"exchange":"binance_spot","instrument":0,
//! "kind":{"Trade":{"id":"..","price":87232.01,"amount":0.00012,"side":"Buy"}}}}}`
//! (with or without the `Ok` wrapper), `"kind":{"OrderBookL1":{"best_bid":{"price":"..","amount":".."},
//! "best_ask":{..}}}`, and `{"Reconnecting":"binance_spot"}` when barter lost the connection.
//! Instruments are indexes into the list the recording was made with (`instruments`). Numbers
//! are read from their JSON text, exactly; trades get the same ids as the live connector gives
//! Binance trades, so a recording and a live run de-duplicate against each other.

use std::collections::BTreeMap;
use std::path::Path;

use auroraq_schemas::{
    AnyEvent, BookTicker, Dec, EventKind, FeedState, FeedStatus, Meta, Micros, Side, TradeTick,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::recorded::{fit, letter, ReadError};
use crate::time::parse_timestamp;

/// The instruments of barter's Binance example recordings, in index order.
pub const DEFAULT_INSTRUMENTS: &[&str] = &["BTCUSDT", "ETHUSDT", "SOLUSDT"];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "Item", borrow, default)]
    item: Option<&'a RawValue>,
    #[serde(rename = "Reconnecting", default)]
    reconnecting: Option<String>,
}

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(rename = "Ok", borrow)]
    ok: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item<'a> {
    time_exchange: &'a str,
    time_received: &'a str,
    exchange: &'a str,
    instrument: usize,
    #[serde(borrow)]
    kind: Kind<'a>,
}

#[derive(Deserialize)]
enum Kind<'a> {
    Trade {
        id: &'a str,
        #[serde(borrow)]
        price: &'a RawValue,
        #[serde(borrow)]
        amount: &'a RawValue,
        side: &'a str,
    },
    OrderBookL1 {
        #[serde(borrow)]
        best_bid: Quote<'a>,
        #[serde(borrow)]
        best_ask: Quote<'a>,
    },
}

#[derive(Deserialize)]
struct Quote<'a> {
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    amount: &'a RawValue,
}

/// A JSON number or numeric string, exactly (`6e-05` included).
fn number(raw: &RawValue) -> Option<Dec> {
    let s = raw.get().trim().trim_matches('"');
    if s.contains(['e', 'E']) {
        rust_decimal::Decimal::from_scientific(s).ok().map(Dec)
    } else {
        Dec::parse(s).ok()
    }
}

fn exchange_name(barter: &str) -> String {
    // barter names venues by market (binance_spot); AuroraQ by exchange.
    barter.strip_suffix("_spot").unwrap_or(barter).to_owned()
}

/// Reads one barter recording. `instruments` maps indexes to symbols.
pub fn read_barter(path: &Path, instruments: &[String]) -> Result<Vec<AnyEvent>, ReadError> {
    let mut out = Vec::new();
    stream_barter(path, instruments, &mut |ev| {
        out.push(ev);
        Ok(())
    })?;
    Ok(out)
}

/// [`read_barter`], each event to `emit` as it is read: JSON lines one line at a time; a JSON
/// array (one document) is read whole.
pub fn stream_barter(
    path: &Path,
    instruments: &[String],
    emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let origin = path.display().to_string();
    let io = |source| ReadError::Io {
        path: origin.clone(),
        source,
    };
    // The first non-blank byte tells an array from JSON lines.
    let mut head = [0u8; 4096];
    let n = std::io::Read::read(&mut std::fs::File::open(path).map_err(io)?, &mut head).map_err(io)?;
    let head = String::from_utf8_lossy(&head[..n]);
    let head = head.trim_start();
    // (A head of blanks only decides nothing: the whole text does, as it always did.)
    if head.starts_with('[') || head.is_empty() {
        let text = std::fs::read_to_string(path).map_err(io)?;
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|source| ReadError::Json {
                path: origin.clone(),
                source,
            })?;
            for (i, item) in items.iter().enumerate() {
                read_item(item.get(), &origin, i as u64 + 1, instruments, emit)?;
            }
            return Ok(());
        }
    }
    for l in crate::stream::lines(path)? {
        let (n, line) = l.map_err(io)?;
        if !line.trim().is_empty() {
            read_item(&line, &origin, n, instruments, emit)?;
        }
    }
    Ok(())
}

fn read_item(
    text: &str,
    origin: &str,
    line: u64,
    instruments: &[String],
    emit: &mut dyn FnMut(AnyEvent) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    match item(text, origin, line, instruments) {
        Ok(Some(ev)) => emit(fit(ev, origin, line, text.as_bytes())),
        Ok(None) => Ok(()),
        Err((reason, error, ts)) => emit(AnyEvent::DeadLetter(letter(
            origin,
            line,
            reason,
            &error,
            text.as_bytes(),
            ts,
        ))),
    }
}

type ItemError = (&'static str, String, Micros);

fn item(text: &str, origin: &str, line: u64, instruments: &[String]) -> Result<Option<AnyEvent>, ItemError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| ("bad_record", e.to_string(), 0))?;
    if let Some(ex) = env.reconnecting {
        let feed = exchange_name(&ex);
        // No time on the record: the line number keeps the id unique and stable.
        return Ok(Some(AnyEvent::FeedStatus(FeedStatus {
            meta: Meta::raw(
                EventKind::FeedStatus,
                &feed,
                &format!("{origin}:{line}:reconnecting"),
                0,
                0,
            ),
            feed,
            stream: ex,
            symbol: None,
            status: FeedState::Disconnected,
            detail: "the recorder lost its connection and reconnected: data may be missing here".into(),
            attributes: BTreeMap::new(),
        })));
    }
    let Some(raw) = env.item else {
        return Err(("bad_record", "neither Item nor Reconnecting".into(), 0));
    };
    let raw = match serde_json::from_str::<Wrapped<'_>>(raw.get()) {
        Ok(Wrapped { ok: Some(inner) }) => inner,
        _ => raw,
    };
    let it: Item<'_> = serde_json::from_str(raw.get()).map_err(|e| ("bad_record", e.to_string(), 0))?;
    let ts_event = parse_timestamp(it.time_exchange).ok_or_else(|| {
        (
            "bad_record",
            format!("bad time_exchange {:?}", it.time_exchange),
            0,
        )
    })?;
    let ts_ingest = parse_timestamp(it.time_received).ok_or_else(|| {
        (
            "bad_record",
            format!("bad time_received {:?}", it.time_received),
            ts_event,
        )
    })?;
    let symbol = instruments.get(it.instrument).ok_or_else(|| {
        (
            "unknown_instrument",
            format!(
                "instrument {} is not in the list given ({})",
                it.instrument,
                instruments.join(",")
            ),
            ts_event,
        )
    })?;
    let exchange = exchange_name(it.exchange);
    let bad = |field: &str, v: &RawValue| {
        (
            "bad_record",
            format!("{field} {} is not a decimal", v.get()),
            ts_event,
        )
    };
    Ok(Some(match it.kind {
        Kind::Trade {
            id,
            price,
            amount,
            side,
        } => AnyEvent::TradeTick(TradeTick {
            meta: Meta::raw(
                EventKind::TradeTick,
                &exchange,
                &format!("{symbol}:t{id}"),
                ts_event,
                ts_ingest,
            ),
            exchange,
            symbol: symbol.clone(),
            trade_id: id.to_owned(),
            price: number(price).ok_or_else(|| bad("price", price))?,
            quantity: number(amount).ok_or_else(|| bad("amount", amount))?,
            aggressor: match side {
                "Buy" | "buy" => Side::Buy,
                "Sell" | "sell" => Side::Sell,
                _ => Side::Unknown,
            },
            aggregated: false,
        }),
        Kind::OrderBookL1 { best_bid, best_ask } => {
            let bid = number(best_bid.price).ok_or_else(|| bad("best_bid.price", best_bid.price))?;
            let ask = number(best_ask.price).ok_or_else(|| bad("best_ask.price", best_ask.price))?;
            let native = format!("{symbol}:l1:{ts_event}:{bid}:{ask}");
            AnyEvent::BookTicker(BookTicker {
                meta: Meta::raw(EventKind::BookTicker, &exchange, &native, ts_event, ts_ingest),
                exchange,
                symbol: symbol.clone(),
                update_id: None,
                bid_price: bid,
                bid_qty: number(best_bid.amount).ok_or_else(|| bad("best_bid.amount", best_bid.amount))?,
                ask_price: ask,
                ask_qty: number(best_ask.amount).ok_or_else(|| bad("best_ask.amount", best_ask.amount))?,
            })
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Vec<String> {
        DEFAULT_INSTRUMENTS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn trade_numbers_are_exact() {
        let t = r#"{"Item":{"Ok":{"time_exchange":"2024-12-20T19:05:18.175Z","time_received":"2024-12-20T19:05:18.319581890Z","exchange":"binance_spot","instrument":0,"kind":{"Trade":{"id":"4314349047","price":96962.51,"amount":6e-05,"side":"Buy"}}}}}"#;
        let Ok(Some(AnyEvent::TradeTick(tr))) = item(t, "f", 1, &inst()) else {
            panic!("trade")
        };
        assert_eq!(tr.price.to_string(), "96962.51");
        assert_eq!(tr.quantity.0, rust_decimal::Decimal::new(6, 5));
        assert_eq!(tr.symbol, "BTCUSDT");
        assert_eq!(tr.exchange, "binance");
        assert_eq!(tr.meta.ts_ingest - tr.meta.ts_event, 144_581);
    }

    #[test]
    fn unknown_instruments_and_garbage_are_letters() {
        let t = r#"{"Item":{"time_exchange":"2025-03-25T23:07:00.715Z","time_received":"2025-03-25T23:07:00.847021081Z","exchange":"binance_spot","instrument":7,"kind":{"Trade":{"id":"1","price":1.0,"amount":1.0,"side":"Sell"}}}}"#;
        assert!(matches!(
            item(t, "f", 1, &inst()),
            Err(("unknown_instrument", _, _))
        ));
        assert!(matches!(
            item("{\"Item\":", "f", 2, &inst()),
            Err(("bad_record", _, _))
        ));
        assert!(matches!(item("{}", "f", 3, &inst()), Err(("bad_record", _, _))));
    }
}
