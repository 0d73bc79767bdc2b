//! `auroraq bench decode`: Binance frames decoded per second on one core, beside baselines run
//! on the same frames in the same run.
//!
//! The decoder's figure includes everything the connector does per frame before publishing:
//! the typed parse, exact decimals for every price and quantity, and the event header with its
//! SHA-256 event id, into owned events. The baseline is the least any exact decoder must do: a
//! typed, borrowed serde parse of the frame, [`Dec::parse`] of each price and quantity, and (for
//! trades) the SHA-256 of the event id (over the same bytes), into nothing owned. A `serde_json::Value`
//! parse is shown beside them for scale. Depth frames are the real `depth@100ms` frames of a
//! recorded capture.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use auroraq_binance::{Decoder, MarketEvent};
use auroraq_schemas::Dec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Serialize)]
pub struct DecodeFigure {
    pub frames: String,
    pub path: String,
    pub per_s: f64,
    /// Price levels per second (depth frames).
    pub levels_per_s: Option<f64>,
    pub rounds: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct DecodeBench {
    pub trade_frame_bytes: usize,
    pub depth_frames: usize,
    pub depth_levels_per_frame: f64,
    pub figures: Vec<DecodeFigure>,
    /// The decoder against the typed baseline (the target: 0.96 or more, 2.5M trade frames/s).
    pub trade_vs_typed: f64,
    pub depth_vs_typed: f64,
    pub trade_vs_value: f64,
    pub depth_vs_value: f64,
}

/// The baseline's trade frame: borrowed, typed, only the fields an event needs.
#[derive(Deserialize)]
struct TypedTradeFrame<'a> {
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: TypedTrade<'a>,
}

#[derive(Deserialize)]
struct TypedTrade<'a> {
    s: &'a str,
    t: i64,
    p: &'a str,
    q: &'a str,
    #[serde(rename = "T")]
    time: i64,
    m: bool,
}

#[derive(Deserialize)]
struct TypedDepthFrame<'a> {
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: TypedDepth<'a>,
}

#[derive(Deserialize)]
struct TypedDepth<'a> {
    s: &'a str,
    #[serde(rename = "E")]
    time: i64,
    #[serde(rename = "U")]
    first: i64,
    u: i64,
    #[serde(borrow)]
    b: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    a: Vec<[&'a str; 2]>,
}

/// The typed baseline of a trade frame: parse, two exact decimals, and a SHA-256 over the bytes
/// an event id hashes ([`auroraq_schemas::event_id`]: the kind, the source and the native id
/// `BTCUSDT:t4000000000`, each after its length; 60 bytes, two compression blocks), written on
/// the stack.
fn typed_trade(fr: &str) -> usize {
    let Ok(f) = serde_json::from_str::<TypedTradeFrame<'_>>(fr) else {
        return 0;
    };
    let (Ok(p), Ok(q)) = (Dec::parse(f.data.p), Dec::parse(f.data.q)) else {
        return 0;
    };
    let mut native = [0u8; 64];
    let sym = f.data.s.as_bytes();
    if sym.len() + 22 > native.len() {
        return 0;
    }
    native[..sym.len()].copy_from_slice(sym);
    native[sym.len()..sym.len() + 2].copy_from_slice(b":t");
    let n = sym.len() + 2 + digits(f.data.t, &mut native[sym.len() + 2..]);
    let mut h = Sha256::new();
    for part in [&b"TradeTick"[..], b"binance", &native[..n]] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    black_box((f.stream, p, q, f.data.time, f.data.m, h.finalize()));
    1
}

/// The typed baseline of a depth frame: parse, an exact decimal per price and quantity.
fn typed_depth(fr: &str) -> usize {
    let Ok(f) = serde_json::from_str::<TypedDepthFrame<'_>>(fr) else {
        return 0;
    };
    let mut n = 0;
    for [p, q] in f.data.b.iter().chain(&f.data.a) {
        let (Ok(p), Ok(q)) = (Dec::parse(p), Dec::parse(q)) else {
            return 0;
        };
        black_box((p, q));
        n += 1;
    }
    black_box((f.stream, f.data.s, f.data.time, f.data.first, f.data.u));
    n.max(1)
}

/// Writes an integer's digits at the start of `out` (20 bytes or more), returns how many.
fn digits(v: i64, out: &mut [u8]) -> usize {
    let d = auroraq_util::IntDigits::new(v);
    out[..d.as_bytes().len()].copy_from_slice(d.as_bytes());
    d.as_bytes().len()
}

/// `n` distinct trade frames as Binance sends them on a combined stream.
pub fn trade_frames(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let t = 1_700_000_000_000u64 + i as u64;
            format!(
                r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{},"p":"{}.{:02}000000","q":"0.{:08}","T":{t},"m":{},"M":true}}}}"#,
                4_000_000_000u64 + i as u64,
                64_000 + i % 500,
                i % 100,
                1 + i % 99_999_999,
                i % 2 == 0
            )
        })
        .collect()
}

/// The depth frames of a cryptofeed capture (`<ts>: <frame>` lines).
pub fn depth_frames(capture: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(capture).with_context(|| format!("reading capture {}", capture.display()))?;
    let frames: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f))
        .filter(|f| f.contains("@depth"))
        .map(str::to_owned)
        .collect();
    if frames.is_empty() {
        bail!("{}: no depth frames", capture.display());
    }
    Ok(frames)
}

fn rate(
    frames: &[String],
    total: usize,
    rounds: usize,
    mut f: impl FnMut(&str) -> usize,
) -> (f64, Vec<f64>, f64) {
    let mut all = Vec::with_capacity(rounds);
    let mut units = 0usize;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut done = 0;
        units = 0;
        while done < total {
            for fr in frames {
                units += f(fr);
                done += 1;
            }
        }
        all.push(done as f64 / start.elapsed().as_secs_f64());
    }
    let per_frame_units = units as f64 / total.max(1) as f64;
    (median(&all), all, per_frame_units)
}

fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the decoder and its baselines over both frame kinds, `total` frames a round, median of
/// `rounds`.
pub fn run(capture: &Path, total: usize, rounds: usize) -> Result<DecodeBench> {
    let trades = trade_frames(10_000);
    let depths = depth_frames(capture)?;
    let d = Decoder::new("binance");
    let rounds = rounds.max(1);
    let mut figures = Vec::new();

    let decode = |fr: &str| -> usize {
        match d.frame(fr, 1) {
            Ok(MarketEvent::Depth(x)) => black_box(x.bids.len() + x.asks.len()),
            Ok(ev) => {
                black_box(ev);
                1
            }
            Err(_) => 0,
        }
    };
    let value = |fr: &str| -> usize {
        match serde_json::from_str::<serde_json::Value>(fr) {
            Ok(v) => {
                let n = v["data"]["b"].as_array().map_or(0, |a| a.len())
                    + v["data"]["a"].as_array().map_or(0, |a| a.len());
                black_box(v);
                n.max(1)
            }
            Err(_) => 0,
        }
    };
    // Every frame must decode, or the figure would measure error paths.
    for fr in trades.iter().chain(&depths) {
        d.frame(fr, 1)
            .with_context(|| format!("bench frame does not decode: {fr}"))?;
    }

    // The baselines must accept every frame too.
    for fr in &trades {
        if typed_trade(fr) == 0 {
            bail!("the typed baseline refuses a bench frame: {fr}");
        }
    }
    for fr in &depths {
        if typed_depth(fr) == 0 {
            bail!("the typed baseline refuses a bench frame: {fr}");
        }
    }

    // Each path's rounds alternate with its baseline's, so that a change of load on a shared
    // machine falls on both.
    let (mut t_dec_r, mut t_typ_r, mut d_dec_r, mut d_typ_r) = (vec![], vec![], vec![], vec![]);
    let mut levels = 0.0;
    for _ in 0..rounds {
        t_typ_r.extend(rate(&trades, total, 1, typed_trade).1);
        t_dec_r.extend(rate(&trades, total, 1, decode).1);
        d_typ_r.extend(rate(&depths, total, 1, typed_depth).1);
        let (_, r, lv) = rate(&depths, total, 1, decode);
        d_dec_r.extend(r);
        levels = lv;
    }
    let (t_val, t_val_r, _) = rate(&trades, total, rounds, value);
    let (d_val, d_val_r, _) = rate(&depths, total, rounds, value);
    let (t_dec, t_typ, d_dec, d_typ) = (
        median(&t_dec_r),
        median(&t_typ_r),
        median(&d_dec_r),
        median(&d_typ_r),
    );
    let fig = |frames: &str, path: &str, per_s: f64, rounds: Vec<f64>, lv: Option<f64>| DecodeFigure {
        frames: frames.into(),
        path: path.into(),
        per_s,
        levels_per_s: lv.map(|l| l * per_s),
        rounds,
    };
    figures.push(fig(
        "trade",
        "typed parse + 2 Dec::parse + SHA-256",
        t_typ,
        t_typ_r,
        None,
    ));
    figures.push(fig("trade", "auroraq decoder -> TradeTick", t_dec, t_dec_r, None));
    figures.push(fig("trade", "serde_json::Value", t_val, t_val_r, None));
    figures.push(fig(
        "depth",
        "typed parse + Dec::parse each",
        d_typ,
        d_typ_r,
        None,
    ));
    figures.push(fig(
        "depth",
        "auroraq decoder -> DepthDiff",
        d_dec,
        d_dec_r,
        Some(levels),
    ));
    figures.push(fig("depth", "serde_json::Value", d_val, d_val_r, None));
    Ok(DecodeBench {
        trade_frame_bytes: trades.iter().map(String::len).sum::<usize>() / trades.len(),
        depth_frames: depths.len(),
        depth_levels_per_frame: levels,
        figures,
        trade_vs_typed: t_dec / t_typ,
        depth_vs_typed: d_dec / d_typ,
        trade_vs_value: t_dec / t_val,
        depth_vs_value: d_dec / d_val,
    })
}

impl DecodeBench {
    /// One human line per path on stderr.
    pub fn print(&self) {
        for f in &self.figures {
            eprintln!(
                "{:<6} {:<38} {:>12.0} frames/s{}",
                f.frames,
                f.path,
                f.per_s,
                f.levels_per_s
                    .map(|l| format!(" {l:>12.0} levels/s"))
                    .unwrap_or_default()
            );
        }
        eprintln!(
            "decoder vs typed baseline: trade {:.2}x, depth {:.2}x",
            self.trade_vs_typed, self.depth_vs_typed
        );
    }
}
