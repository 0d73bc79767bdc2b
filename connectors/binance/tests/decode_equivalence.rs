//! The decoder gives exactly what the decoder before its fast path gave (`reference/`, kept
//! verbatim): the same events, byte for byte on the wire (so the same event ids, which pinned
//! fingerprints depend on), and the same error for every frame it refuses, on every frame of the
//! real captures, on generated trades, and on damaged copies of all of them.

mod reference;

use std::path::{Path, PathBuf};

use auroraq_binance::{Decoder, MarketEvent};
use auroraq_schemas::AnyEvent;
use reference::ReferenceDecoder;

fn captures() -> Vec<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![here.join("../../tests/data/binance/cryptofeed/BINANCE.ws.1.0")];
    for name in ["BINANCE_US.ws.1.0", "BINANCE_FUTURES.ws.1.0"] {
        files.push(here.join("tests/data/cryptofeed").join(name));
    }
    files
}

/// Every frame of the captures (`<ts>: <frame>` lines; the `<url> <-> <ts>` line is no frame).
fn capture_frames() -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for f in captures() {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for line in text.lines() {
            let Some((ts, frame)) = line.split_once(": ") else {
                continue;
            };
            let ts = (ts.parse::<f64>().unwrap_or(0.0) * 1e6) as i64;
            out.push((frame.to_owned(), ts));
        }
    }
    out
}

/// Trades as the benchmark makes them, and the documentation's examples of the other kinds.
fn generated_frames() -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = (0..2_000u64)
        .map(|i| {
            let t = 1_700_000_000_000u64 + i;
            let frame = format!(
                r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{},"p":"{}.{:02}000000","q":"0.{:08}","T":{t},"m":{},"M":true}}}}"#,
                4_000_000_000u64 + i * 7_919,
                64_000 + i % 500,
                i % 100,
                1 + (i * 104_729) % 99_999_999,
                i % 2 == 0
            );
            (frame, i as i64)
        })
        .collect();
    for f in [
        r#"{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}"#,
        r#"{"stream":"bnbbtc@aggTrade","data":{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}}"#,
        r#"{"stream":"bnbbtc@kline_1m","data":{"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1672515780000,"T":1672515839999,"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500","B":"123456"}}}"#,
        r#"{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#,
        r#"{"data":{"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"},"stream":"bnbusdt@bookTicker"}"#,
        r#"{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}}"#,
        r#"{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}"#,
        r#"{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","r":"","T":0}}"#,
        r#"{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}"#,
        r#"{"stream":"bnbbtc@ticker","data":{"e":"24hrTicker"}}"#,
    ] {
        out.push((f.to_owned(), 42));
    }
    out
}

/// Damaged copies of a frame: each number-like string and each number changed to something else,
/// truncations, and text that is no frame.
fn damaged(frame: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Replace the n-th quoted value with odd decimals, and the n-th bare integer with odd ones.
    let quoted: Vec<(usize, usize)> = {
        let b = frame.as_bytes();
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'"' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    j += 1;
                }
                // A value (after ':' or inside an array), not a key.
                if j + 1 < b.len() && b[j + 1] != b':' {
                    v.push((start, j));
                }
                i = j + 1;
            } else {
                i += 1;
            }
        }
        v
    };
    for (k, &(s, e)) in quoted.iter().enumerate().take(12) {
        let odd = [
            "NaN",
            "-1.5",
            "1.",
            ".5",
            "",
            " 1",
            "1e5",
            "123456789012345678901234567890",
            "00012.3400",
            "x",
        ];
        let pick = odd[k % odd.len()];
        out.push(format!("{}{}{}", &frame[..s], pick, &frame[e..]));
        out.push(format!(
            "{}{}{}",
            &frame[..s],
            "99999999999999999999.5",
            &frame[e..]
        ));
    }
    for big in ["9223372036854775807", "-1", "1.5", "\"1\""] {
        if let Some(i) = frame.find("\"E\":") {
            let rest = &frame[i + 4..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            out.push(format!("{}{}{}", &frame[..i + 4], big, &rest[end..]));
        }
        if let Some(i) = frame.find("\"T\":") {
            let rest = &frame[i + 4..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            out.push(format!("{}{}{}", &frame[..i + 4], big, &rest[end..]));
        }
    }
    for cut in [
        0,
        1,
        frame.len() / 3,
        frame.len() / 2,
        frame.len().saturating_sub(1),
    ] {
        if let Some(t) = frame.get(..cut) {
            out.push(t.to_owned());
        }
    }
    // What the one-pass trade reader must leave to serde, or read as serde does.
    out.push(frame.replace(':', " :\t").replace(',', "\r\n, "));
    for extra in [
        r#""p":"1","#,
        r#""T":1,"#,
        r#""m":false,"#,
        r#""x":{"y":[1,{"z":2}]},"#,
        r#""x":1.5,"#,
        r#""x":null,"#,
        r#""x":-0,"#,
        r#""x":1e3,"#,
        r#""x":"A","#,
        r#""x":123456789012345678901,"#,
        r#""p":"2","#,
    ] {
        out.push(frame.replacen("\"data\":{", &format!("\"data\":{{{extra}"), 1));
    }
    out.push(frame.replacen("USDT\"", "US\\u0044T\"", 1));
    for (from, to) in [
        ("\"T\":1", "\"T\":01"),
        ("\"T\":1", "\"T\":-1"),
        ("\"t\":", "\"t\":-0"),
        ("\"a\":", "\"a\":0"),
    ] {
        out.push(frame.replacen(from, to, 1));
    }
    // Depth levels in forms the one-pass reader leaves to serde, or reads as serde does.
    for (from, to) in [
        ("\"b\":[", "\"b\":[[\"1\",\"2\",\"3\"],"),
        ("\"b\":[", "\"b\":[[1,\"2\"],"),
        ("\"b\":[", "\"b\":[[\"1\"],"),
        ("\"a\":[", "\"a\":[ [ \"1.5\" , \"2\" ] , "),
        ("\"a\":[", "\"a\":[[\"0.1\",\"x\"],[\"y\",\"1\"],"),
        ("\"b\":[", "\"b\":[],\"x\":["),
        ("\"U\":", "\"pu\":null,\"U\":"),
        ("\"U\":", "\"pu\":7,\"U\":"),
        ("\"U\":", "\"U\":1,\"U\":"),
    ] {
        out.push(frame.replacen(from, to, 1));
    }
    if let Some(i) = frame.find("\"b\":") {
        out.push(format!("{}{}", &frame[..i], &frame[i..].replacen("]]", "]", 1)));
    }
    out.push(format!("{frame} "));
    out.push(format!("{frame},"));
    out.push(format!(" {frame}"));
    out.push(frame.replacen("\"stream\"", "\"streem\"", 1));
    out.push(frame.replacen("\"data\"", "\"dada\"", 1));
    out.push(frame.replacen('@', "@weird", 1));
    out.push(frame.replace("\"m\":true", "\"m\":\"yes\""));
    out.push(frame.replace("\"S\":\"SELL\"", "\"S\":\"sideways\""));
    out.push(frame.replace("],[", "],[\"1\"],["));
    out
}

/// What a decode gave, compared exactly: events by their wire bytes (ids, decimals' scales and
/// all) and their debug form, errors by their message.
fn outcome(
    r: Result<MarketEvent, auroraq_binance::DecodeError>,
) -> (Option<Result<Vec<u8>, String>>, String) {
    match r {
        Ok(ev) => {
            let any = match &ev {
                MarketEvent::Trade(t) => Some(AnyEvent::TradeTick(t.clone())),
                MarketEvent::Kline(k) => Some(AnyEvent::Kline(k.clone())),
                MarketEvent::Ticker(t) => Some(AnyEvent::BookTicker(t.clone())),
                MarketEvent::MarkPrice(m) => Some(AnyEvent::MarkPrice(m.clone())),
                MarketEvent::Liquidation(l) => Some(AnyEvent::Liquidation(l.clone())),
                _ => None,
            };
            // (A decimal of more than 64 bits decodes but does not encode: the same for both.)
            let bytes = any.map(|a| a.encode().map_err(|e| e.to_string()));
            (bytes, format!("{ev:?}"))
        }
        Err(e) => (None, format!("error: {e}")),
    }
}

fn assert_same(frames: &[(String, i64)], with_damage: bool) -> (usize, usize) {
    let (new, old) = (Decoder::new("binance"), ReferenceDecoder::new("binance"));
    let (mut ok, mut errors) = (0, 0);
    for (frame, ts) in frames {
        let mut all = vec![frame.clone()];
        if with_damage {
            all.extend(damaged(frame));
        }
        for f in &all {
            let (a, b) = (outcome(new.frame(f, *ts)), outcome(old.frame(f, *ts)));
            assert_eq!(a, b, "frame {f}");
            if a.1.starts_with("error: ") {
                errors += 1;
            } else {
                ok += 1;
            }
        }
    }
    (ok, errors)
}

#[test]
fn every_frame_of_the_real_captures_decodes_to_the_same_bytes_as_before() {
    let frames = capture_frames();
    assert!(frames.len() > 2_200, "{} frames", frames.len());
    let (ok, errors) = assert_same(&frames, false);
    assert_eq!((ok, errors), (frames.len(), 0));
}

#[test]
fn generated_and_documented_frames_decode_to_the_same_bytes_as_before() {
    let frames = generated_frames();
    let (ok, _) = assert_same(&frames, false);
    assert_eq!(ok, frames.len());
}

#[test]
fn damaged_frames_give_the_same_events_or_the_same_errors_as_before() {
    let mut frames = capture_frames();
    // Every venue's kinds, without all 2,700 frames times their damage.
    frames = frames.into_iter().step_by(7).collect();
    frames.extend(generated_frames().into_iter().rev().take(40));
    let (ok, errors) = assert_same(&frames, true);
    assert!(ok > 1_000 && errors > 5_000, "{ok} decoded, {errors} refused");
}
