//! `auroraq bench decode`: Binance frames decoded per second on one core, beside a plain
//! `serde_json::Value` parse of the same frames in the same run.
//!
//! The decoder's figure includes everything the connector does per frame before publishing:
//! the typed parse, exact decimals for every price and quantity, and the event header with its
//! SHA-256 event id. Depth frames are the real `depth@100ms` frames of a recorded capture.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use auroraq_binance::{Decoder, MarketEvent};
use serde::Serialize;

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
    pub trade_vs_value: f64,
    pub depth_vs_value: f64,
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
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let per_frame_units = units as f64 / total.max(1) as f64;
    (sorted[sorted.len() / 2], all, per_frame_units)
}

/// Runs both decoders over both frame kinds, `total` frames a round, median of `rounds`.
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

    let (t_dec, t_dec_r, _) = rate(&trades, total, rounds, decode);
    let (t_val, t_val_r, _) = rate(&trades, total, rounds, value);
    let (d_dec, d_dec_r, levels) = rate(&depths, total, rounds, decode);
    let (d_val, d_val_r, _) = rate(&depths, total, rounds, value);
    let fig = |frames: &str, path: &str, per_s: f64, rounds: Vec<f64>, lv: Option<f64>| DecodeFigure {
        frames: frames.into(),
        path: path.into(),
        per_s,
        levels_per_s: lv.map(|l| l * per_s),
        rounds,
    };
    figures.push(fig("trade", "auroraq decoder -> TradeTick", t_dec, t_dec_r, None));
    figures.push(fig("trade", "serde_json::Value", t_val, t_val_r, None));
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
        trade_vs_value: t_dec / t_val,
        depth_vs_value: d_dec / d_val,
    })
}

impl DecodeBench {
    /// One human line per path on stderr.
    pub fn print(&self) {
        for f in &self.figures {
            eprintln!(
                "{:<6} {:<32} {:>12.0} frames/s{}",
                f.frames,
                f.path,
                f.per_s,
                f.levels_per_s
                    .map(|l| format!(" {l:>12.0} levels/s"))
                    .unwrap_or_default()
            );
        }
    }
}
