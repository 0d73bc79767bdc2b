//! The analyst's report: what a backtest of prices and news did and what the news said, as one
//! self-contained HTML page (inline SVG, no script, nothing fetched) and the CSV/JSON behind every
//! figure and table.
//!
//! Sections: price with the fills; the fused sentiment of the traded asset per window, with its
//! article counts; equity against buy-and-hold and cash; drawdown; the event study
//! ([`crate::event_study`]); sources; the most positive and negative headlines; labels per week;
//! the run's settings, model, data files and fingerprint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use auroraq_schemas::Micros;
use serde::Serialize;

use crate::event_study::{event_study, EventStudy};
use crate::report::{date, escape, Summary, Trade};

/// A fused signal of the traded asset.
#[derive(Clone, Debug, Serialize)]
pub struct SignalPoint {
    /// When the agent could act on it.
    pub at: Micros,
    pub window_start: Micros,
    pub window_end: Micros,
    pub score: f64,
    pub confidence: f64,
    /// Scores fused (after de-duplication and outlier rejection).
    pub scores_used: i32,
}

/// One scored article.
#[derive(Clone, Debug, Serialize)]
pub struct ArticlePoint {
    /// When it was scored (its receive time).
    pub at: Micros,
    /// Publisher (else feed).
    pub source: String,
    pub headline: String,
    pub score: f64,
    pub label: String,
    pub assets: Vec<String>,
}

/// What the report shows beside the run's own events.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// The traded symbol and the asset its signals name.
    pub symbol: String,
    pub asset: String,
    /// Bar closes of the symbol: (close time, close), in time order.
    pub prices: Vec<(Micros, f64)>,
    /// Fused signals of the asset, in time order.
    pub signals: Vec<SignalPoint>,
    pub articles: Vec<ArticlePoint>,
    /// Articles that named no configured asset.
    pub unlinked: u64,
    /// Settings shown in the report (key, value).
    pub settings: Vec<(String, String)>,
    /// Data files and their SHA-256.
    pub files: Vec<(String, String)>,
    /// Model id and SHA-256 (model, tokenizer).
    pub model: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceRow {
    pub source: String,
    pub articles: u64,
    pub mean_score: f64,
    pub labels: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeekRow {
    /// Monday 00:00 UTC.
    pub week: Micros,
    pub labels: BTreeMap<String, u64>,
}

/// Everything computed for the report.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Equity had the starting equity bought the symbol at the first snapshot and held it.
    pub buy_and_hold: Vec<(Micros, f64)>,
    pub buy_and_hold_return: Option<f64>,
    pub cash: Option<f64>,
    pub event_study: EventStudy,
    pub sources: Vec<SourceRow>,
    pub weeks: Vec<WeekRow>,
    pub labels: Vec<String>,
    /// Indexes into `extras.articles`: the 10 most positive, the 10 most negative.
    pub top: Vec<usize>,
    pub bottom: Vec<usize>,
}

fn price_at(prices: &[(Micros, f64)], t: Micros) -> Option<f64> {
    let i = prices.partition_point(|p| p.0 <= t);
    (i > 0).then(|| prices[i - 1].1)
}

/// Monday 00:00 UTC of the week of `t`.
pub fn week_start(t: Micros) -> Micros {
    let day = t.div_euclid(86_400_000_000);
    // 1970-01-01 was a Thursday.
    (day - (day + 3).rem_euclid(7)) * 86_400_000_000
}

pub fn analyse(x: &Extras, curve: &[(Micros, f64)], _trades: &[Trade]) -> Analysis {
    let (buy_and_hold, buy_and_hold_return, cash) = match curve.first() {
        Some(&(t0, e0)) => match price_at(&x.prices, t0) {
            Some(p0) if p0 > 0.0 => {
                let bh: Vec<(Micros, f64)> = curve
                    .iter()
                    .filter_map(|&(t, _)| price_at(&x.prices, t).map(|p| (t, e0 * p / p0)))
                    .collect();
                let r = bh.last().map(|l| l.1 / e0 - 1.0);
                (bh, r, Some(e0))
            }
            _ => (Vec::new(), None, Some(e0)),
        },
        None => (Vec::new(), None, None),
    };
    let fused: Vec<(Micros, f64)> = x.signals.iter().map(|s| (s.at, s.score)).collect();
    let linked: Vec<(Micros, f64)> = x
        .articles
        .iter()
        .filter(|a| a.assets.contains(&x.asset))
        .map(|a| (a.at, a.score))
        .collect();
    let study = event_study(&fused, &linked, &x.prices);

    let labels: Vec<String> = x
        .articles
        .iter()
        .map(|a| a.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_source: BTreeMap<&str, (u64, f64, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut by_week: BTreeMap<Micros, BTreeMap<String, u64>> = BTreeMap::new();
    for a in &x.articles {
        let e = by_source.entry(a.source.as_str()).or_default();
        e.0 += 1;
        e.1 += a.score;
        *e.2.entry(a.label.clone()).or_default() += 1;
        *by_week
            .entry(week_start(a.at))
            .or_default()
            .entry(a.label.clone())
            .or_default() += 1;
    }
    let mut sources: Vec<SourceRow> = by_source
        .into_iter()
        .map(|(s, (n, sum, labels))| SourceRow {
            source: s.to_owned(),
            articles: n,
            mean_score: sum / n as f64,
            labels,
        })
        .collect();
    sources.sort_by(|a, b| b.articles.cmp(&a.articles).then(a.source.cmp(&b.source)));
    let weeks = by_week
        .into_iter()
        .map(|(week, labels)| WeekRow { week, labels })
        .collect();
    let mut order: Vec<usize> = (0..x.articles.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&x.articles[a], &x.articles[b]);
        b.score.total_cmp(&a.score).then(a.at.cmp(&b.at))
    });
    let top = order.iter().take(10).copied().collect();
    let mut rev = order.clone();
    rev.reverse();
    let bottom = rev.into_iter().take(10).collect();
    Analysis {
        buy_and_hold,
        buy_and_hold_return,
        cash,
        event_study: study,
        sources,
        weeks,
        labels,
        top,
        bottom,
    }
}

// ---- SVG ----

const W: f64 = 960.0;
const PAD_L: f64 = 70.0;
const PAD_R: f64 = 20.0;

enum Layer<'a> {
    Line(&'a str, &'a str, &'a [(Micros, f64)]),
    /// Vertical bars from the axis, one per point.
    Bars(&'a str, &'a str, &'a [(Micros, f64)]),
    /// Markers: triangles up (true) or down.
    Marks(&'a str, &'a str, &'a [(Micros, f64)], bool),
    /// A horizontal reference line.
    Level(&'a str, f64),
}

fn points_of(l: &Layer) -> usize {
    match l {
        Layer::Line(_, _, p) | Layer::Bars(_, _, p) | Layer::Marks(_, _, p, _) => p.len(),
        Layer::Level(..) => 0,
    }
}

/// A chart over time: `layers` on one y scale from `lo` to `hi` (computed from the data when
/// `None`), the x axis from `t0` to `t1`, a legend, date ticks. The `<svg>` has class `chart`, the
/// chart's id and `data-points` (points drawn).
#[allow(clippy::too_many_arguments)]
fn time_chart(
    id: &str,
    title: &str,
    t0: Micros,
    t1: Micros,
    height: f64,
    range: Option<(f64, f64)>,
    fmt: &dyn Fn(f64) -> String,
    layers: &[Layer],
) -> String {
    let (top, bottom) = (28.0, height - 22.0);
    let n: usize = layers.iter().map(points_of).sum();
    let (lo, hi) = range.unwrap_or_else(|| {
        let vals = layers.iter().flat_map(|l| match l {
            Layer::Line(_, _, p) | Layer::Marks(_, _, p, _) => p.iter().map(|x| x.1).collect::<Vec<_>>(),
            Layer::Bars(_, _, p) => p.iter().map(|x| x.1).chain([0.0]).collect(),
            Layer::Level(_, v) => vec![*v],
        });
        let (lo, hi) = vals
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 1.0, hi + 1.0)
        } else {
            let m = (hi - lo) * 0.04;
            (lo - m, hi + m)
        }
    });
    let span_t = (t1 - t0).max(1) as f64;
    let x = |t: Micros| PAD_L + (t - t0) as f64 / span_t * (W - PAD_L - PAD_R);
    let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="chart" id="{id}" data-points="{n}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{PAD_L}" y="16" font-size="13" font-weight="bold">{}</text>"##,
        escape(title)
    );
    // Axes and ticks.
    let _ = write!(
        s,
        r##"<line x1="{PAD_L}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#999"/><line x1="{PAD_L}" y1="{top}" x2="{PAD_L}" y2="{bottom}" stroke="#999"/>"##,
        W - PAD_R
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{:.0}" y="{:.1}" text-anchor="end" fill="#555">{}</text><line x1="{PAD_L}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            PAD_L - 4.0,
            y(v) + 4.0,
            escape(&fmt(v)),
            y(v),
            W - PAD_R,
            y(v)
        );
    }
    for k in 0..=5 {
        let t = t0 + (t1 - t0) * k / 5;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.0}" text-anchor="middle" fill="#555">{}</text>"##,
            x(t),
            height - 6.0,
            date(t)
        );
    }
    let mut legend_x = PAD_L + 8.0 * title.len() as f64 + 20.0;
    for l in layers {
        let (name, color) = match l {
            Layer::Line(n, c, _) | Layer::Bars(n, c, _) | Layer::Marks(n, c, _, _) => (*n, *c),
            Layer::Level(..) => continue,
        };
        let _ = write!(
            s,
            r##"<rect x="{legend_x:.0}" y="7" width="10" height="10" fill="{color}"/><text x="{:.0}" y="16">{}</text>"##,
            legend_x + 14.0,
            escape(name)
        );
        legend_x += 24.0 + 7.0 * name.len() as f64;
    }
    for l in layers {
        match l {
            Layer::Line(_, color, pts) => {
                if pts.is_empty() {
                    continue;
                }
                let p: Vec<String> = pts
                    .iter()
                    .filter(|p| p.1.is_finite())
                    .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                    .collect();
                let _ = write!(
                    s,
                    r##"<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{}"/>"##,
                    p.join(" ")
                );
            }
            Layer::Bars(_, color, pts) => {
                let bw = (pts.len() as f64).recip().max(0.0) * (W - PAD_L - PAD_R);
                let bw = bw.clamp(0.6, 12.0);
                let _ = write!(s, r##"<g fill="{color}">"##);
                for &(t, v) in pts.iter() {
                    let (ya, yb) = (y(v.max(0.0)), y(0.0_f64.max(lo)));
                    let _ = write!(
                        s,
                        r##"<rect x="{:.1}" y="{ya:.1}" width="{bw:.1}" height="{:.1}"/>"##,
                        x(t) - bw / 2.0,
                        (yb - ya).max(0.0)
                    );
                }
                s.push_str("</g>");
            }
            Layer::Marks(_, color, pts, up) => {
                for &(t, v) in pts.iter() {
                    let (cx, cy) = (x(t), y(v));
                    let d = if *up {
                        format!("M{:.1},{:.1} l-5,9 h10 z", cx, cy + 2.0)
                    } else {
                        format!("M{:.1},{:.1} l-5,-9 h10 z", cx, cy - 2.0)
                    };
                    let _ = write!(
                        s,
                        r##"<path class="mark" d="{d}" fill="{color}" stroke="black" stroke-width="0.5"/>"##
                    );
                }
            }
            Layer::Level(color, v) => {
                let _ = write!(
                    s,
                    r##"<line x1="{PAD_L}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="{color}" stroke-dasharray="4 3"/>"##,
                    y(*v),
                    W - PAD_R,
                    y(*v)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// Mean forward return per quintile of the fused signal and of the article scores, per horizon,
/// with the bootstrap intervals as whiskers.
fn study_chart(st: &EventStudy) -> String {
    let height = 300.0;
    let (top, bottom) = (40.0, height - 40.0);
    let cells: Vec<&crate::event_study::Row> = st
        .rows
        .iter()
        .filter(|r| r.bucket.starts_with('Q') && r.bucket.len() == 2 && r.n > 0)
        .collect();
    let (lo, hi) = cells
        .iter()
        .fold((0.0f64, 0.0f64), |(a, b), r| (a.min(r.ci_lo), b.max(r.ci_hi)));
    let (lo, hi) = if hi - lo < 1e-9 {
        (-1.0, 1.0)
    } else {
        (lo * 1.1, hi * 1.1)
    };
    let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
    let mut s = format!(
        r##"<svg class="chart" id="event-study" data-points="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{PAD_L}" y="16" font-size="13" font-weight="bold">Mean forward return by signal quintile (Q1 most negative .. Q5 most positive), 95% bootstrap interval</text>"##,
        cells.len()
    );
    let _ = write!(
        s,
        r##"<line x1="{PAD_L}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#666"/><text x="{:.0}" y="{:.1}" text-anchor="end">0%</text><text x="{:.0}" y="{:.1}" text-anchor="end">{:+.2}%</text><text x="{:.0}" y="{:.1}" text-anchor="end">{:+.2}%</text>"##,
        y(0.0),
        W - PAD_R,
        y(0.0),
        PAD_L - 4.0,
        y(0.0) + 4.0,
        PAD_L - 4.0,
        y(hi) + 4.0,
        hi,
        PAD_L - 4.0,
        y(lo) + 4.0,
        lo
    );
    let groups: Vec<(String, u32)> = ["fused", "article"]
        .iter()
        .flat_map(|s| st.horizons_h.iter().map(move |h| (s.to_string(), *h)))
        .collect();
    let gw = (W - PAD_L - PAD_R) / groups.len().max(1) as f64;
    let colors = ["#cf222e", "#f0883e", "#bbbbbb", "#54aeff", "#1a7f37"];
    for (g, (sig, h)) in groups.iter().enumerate() {
        let gx = PAD_L + g as f64 * gw;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.0}" text-anchor="middle">{sig} {h} h</text>"##,
            gx + gw / 2.0,
            height - 22.0
        );
        for (q, color) in colors.iter().enumerate() {
            let Some(r) = cells
                .iter()
                .find(|r| &r.signal == sig && r.horizon_h == *h && r.bucket == format!("Q{}", q + 1))
            else {
                continue;
            };
            let bw = gw / 7.0;
            let bx = gx + bw * (q as f64 + 1.0);
            let (ya, yb) = (y(r.mean.max(0.0)), y(r.mean.min(0.0)));
            let _ = write!(
                s,
                r##"<rect class="bar" x="{bx:.1}" y="{ya:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{sig} {h} h {}: mean {:+.3}%, n {}</title></rect><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"##,
                bw * 0.9,
                (yb - ya).max(0.5),
                r.bucket,
                r.mean,
                r.n,
                bx + bw * 0.45,
                y(r.ci_lo),
                bx + bw * 0.45,
                y(r.ci_hi)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Articles per week, stacked by label.
fn weeks_chart(a: &Analysis) -> String {
    let height = 260.0;
    let (top, bottom) = (36.0, height - 24.0);
    let max = a
        .weeks
        .iter()
        .map(|w| w.labels.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let n = a.weeks.len().max(1) as f64;
    let bw = (W - PAD_L - PAD_R) / n;
    let color = |l: &str| match l {
        "positive" => "#1a7f37",
        "negative" => "#cf222e",
        "neutral" => "#bbbbbb",
        _ => "#54aeff",
    };
    let mut s = format!(
        r##"<svg class="chart" id="labels-weekly" data-points="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{PAD_L}" y="16" font-size="13" font-weight="bold">Articles per week by label</text>"##,
        a.weeks.len()
    );
    let mut lx = PAD_L + 220.0;
    for l in &a.labels {
        let _ = write!(
            s,
            r##"<rect x="{lx:.0}" y="7" width="10" height="10" fill="{}"/><text x="{:.0}" y="16">{}</text>"##,
            color(l),
            lx + 14.0,
            escape(l)
        );
        lx += 30.0 + 7.0 * l.len() as f64;
    }
    let _ = write!(
        s,
        r##"<text x="{:.0}" y="{top}" text-anchor="end">{max:.0}</text><text x="{:.0}" y="{bottom}" text-anchor="end">0</text>"##,
        PAD_L - 4.0,
        PAD_L - 4.0
    );
    for (i, w) in a.weeks.iter().enumerate() {
        let x = PAD_L + i as f64 * bw;
        let mut base = bottom;
        for l in &a.labels {
            let c = w.labels.get(l).copied().unwrap_or(0) as f64;
            let h = c / max * (bottom - top);
            let _ = write!(
                s,
                r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} {l}: {c}</title></rect>"##,
                x + 1.0,
                base - h,
                (bw - 2.0).max(0.5),
                color(l),
                date(w.week)
            );
            base -= h;
        }
        if i % 2 == 0 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.0}" text-anchor="middle" fill="#555" font-size="9">{}</text>"##,
                x + bw / 2.0,
                height - 8.0,
                &date(w.week)[5..]
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:+.3}%", v)
    } else {
        "–".into()
    }
}

/// Writes the report page and the data behind it into `dir`.
#[allow(clippy::too_many_arguments)]
pub fn write(
    dir: &Path,
    x: &Extras,
    a: &Analysis,
    summary: &Summary,
    curve: &[(Micros, f64)],
    dd: &[(Micros, f64)],
    trades: &[Trade],
    title: &str,
    notes: &str,
) -> std::io::Result<()> {
    let t0 = x.prices.first().map(|p| p.0).unwrap_or(0);
    let t1 = x.prices.last().map(|p| p.0).unwrap_or(1);
    // Data files.
    let mut f = String::from("ts,date,close\n");
    for (t, p) in &x.prices {
        let _ = writeln!(f, "{t},{},{p}", date(*t));
    }
    std::fs::write(dir.join("prices.csv"), f)?;
    let mut f = String::from("at,window_start,window_end,fused_score,confidence,articles\n");
    for s in &x.signals {
        let _ = writeln!(
            f,
            "{},{},{},{},{},{}",
            s.at, s.window_start, s.window_end, s.score, s.confidence, s.scores_used
        );
    }
    std::fs::write(dir.join("sentiment.csv"), f)?;
    let mut f = String::from("ts,date,equity,buy_and_hold,cash,drawdown\n");
    let bh: BTreeMap<Micros, f64> = a.buy_and_hold.iter().copied().collect();
    for ((t, e), (_, d)) in curve.iter().zip(dd) {
        let _ = writeln!(
            f,
            "{t},{},{e},{},{},{d}",
            date(*t),
            bh.get(t).map(|v| v.to_string()).unwrap_or_default(),
            a.cash.map(|v| v.to_string()).unwrap_or_default()
        );
    }
    std::fs::write(dir.join("equity.csv"), f)?;
    std::fs::write(
        dir.join("event_study.csv"),
        crate::event_study::to_csv(&a.event_study),
    )?;
    std::fs::write(
        dir.join("event_study.json"),
        serde_json::to_string_pretty(&a.event_study).unwrap_or_default(),
    )?;
    let mut f = format!("source,articles,mean_score,{}\n", a.labels.join(","));
    for r in &a.sources {
        let _ = write!(f, "{},{},{}", csv_field(&r.source), r.articles, r.mean_score);
        for l in &a.labels {
            let _ = write!(f, ",{}", r.labels.get(l).copied().unwrap_or(0));
        }
        f.push('\n');
    }
    std::fs::write(dir.join("sources.csv"), f)?;
    let mut f = String::from("kind,rank,at,date,source,score,label,headline\n");
    for (kind, idx) in [("most_positive", &a.top), ("most_negative", &a.bottom)] {
        for (rank, &i) in idx.iter().enumerate() {
            let r = &x.articles[i];
            let _ = writeln!(
                f,
                "{kind},{},{},{},{},{},{},{}",
                rank + 1,
                r.at,
                date(r.at),
                csv_field(&r.source),
                r.score,
                r.label,
                csv_field(&r.headline)
            );
        }
    }
    std::fs::write(dir.join("headlines.csv"), f)?;
    let mut f = format!("week,{}\n", a.labels.join(","));
    for w in &a.weeks {
        let _ = write!(f, "{}", date(w.week));
        for l in &a.labels {
            let _ = write!(f, ",{}", w.labels.get(l).copied().unwrap_or(0));
        }
        f.push('\n');
    }
    std::fs::write(dir.join("labels_weekly.csv"), f)?;
    let run = serde_json::json!({
        "fingerprint": summary.fingerprint,
        "settings": x.settings,
        "model": x.model,
        "files": x.files,
    });
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run).unwrap_or_default(),
    )?;

    // Charts.
    let buys: Vec<(Micros, f64)> = trades
        .iter()
        .filter(|t| t.side.eq_ignore_ascii_case("buy"))
        .filter_map(|t| t.price.parse().ok().map(|p| (t.ts, p)))
        .collect();
    let sells: Vec<(Micros, f64)> = trades
        .iter()
        .filter(|t| t.side.eq_ignore_ascii_case("sell"))
        .filter_map(|t| t.price.parse().ok().map(|p| (t.ts, p)))
        .collect();
    let money = |v: f64| format!("{v:.0}");
    let price_chart = time_chart(
        "price",
        &format!("{} close (hourly), buys and sells", x.symbol),
        t0,
        t1,
        300.0,
        None,
        &money,
        &[
            Layer::Line("close", "#1f6feb", &x.prices),
            Layer::Marks("buy", "#1a7f37", &buys, true),
            Layer::Marks("sell", "#cf222e", &sells, false),
        ],
    );
    let fused: Vec<(Micros, f64)> = x.signals.iter().map(|s| (s.window_start, s.score)).collect();
    let counts: Vec<(Micros, f64)> = x
        .signals
        .iter()
        .map(|s| (s.window_start, s.scores_used as f64))
        .collect();
    let two = |v: f64| format!("{v:.2}");
    let sentiment_chart = time_chart(
        "sentiment",
        &format!(
            "{} fused sentiment per window (0 negative .. 1 positive)",
            x.asset
        ),
        t0,
        t1,
        220.0,
        Some((0.0, 1.0)),
        &two,
        &[
            Layer::Level("#999", 0.5),
            Layer::Line("fused score", "#8250df", &fused),
        ],
    );
    let int = |v: f64| format!("{v:.0}");
    let counts_chart = time_chart(
        "article-counts",
        "Articles fused per window",
        t0,
        t1,
        150.0,
        None,
        &int,
        &[Layer::Bars("articles", "#8c959f", &counts)],
    );
    let cash: Vec<(Micros, f64)> = a
        .cash
        .map(|c| curve.iter().map(|&(t, _)| (t, c)).collect())
        .unwrap_or_default();
    let equity_chart = time_chart(
        "equity",
        "Equity: the agent, buy-and-hold, cash",
        t0,
        t1,
        280.0,
        None,
        &money,
        &[
            Layer::Line("agent", "#1f6feb", curve),
            Layer::Line(&format!("buy-and-hold {}", x.symbol), "#f0883e", &a.buy_and_hold),
            Layer::Line("cash", "#8c959f", &cash),
        ],
    );
    let dd_pct: Vec<(Micros, f64)> = dd.iter().map(|&(t, d)| (t, d * 100.0)).collect();
    let bh_dd: Vec<(Micros, f64)> = crate::report::drawdowns(&a.buy_and_hold)
        .into_iter()
        .map(|(t, d)| (t, d * 100.0))
        .collect();
    let pc = |v: f64| format!("{v:.1}%");
    let dd_chart = time_chart(
        "drawdown",
        "Drawdown from the running peak",
        t0,
        t1,
        200.0,
        None,
        &pc,
        &[
            Layer::Line("agent", "#cf222e", &dd_pct),
            Layer::Line("buy-and-hold", "#f0883e", &bh_dd),
        ],
    );

    // Tables.
    let mut study_rows = String::new();
    for r in &a.event_study.rows {
        let range = if r.lo.is_finite() {
            format!("{:.3} .. {:.3}", r.lo, r.hi)
        } else {
            String::new()
        };
        let strong = if r.bucket == "Q5-Q1" {
            " class=\"spread\""
        } else {
            ""
        };
        let _ = write!(
            study_rows,
            "<tr{strong}><td>{}</td><td>{}</td><td>{}</td><td>{range}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} .. {}</td></tr>",
            r.signal,
            r.horizon_h,
            r.bucket,
            r.n,
            pct(r.mean),
            pct(r.median),
            if r.hit_rate.is_finite() {
                format!("{:.1}%", r.hit_rate * 100.0)
            } else {
                "–".into()
            },
            pct(r.ci_lo),
            pct(r.ci_hi)
        );
    }
    let findings: String = a
        .event_study
        .findings
        .iter()
        .map(|f| format!("<li>{}</li>", escape(f)))
        .collect();
    let mut source_rows = String::new();
    for r in &a.sources {
        let mix: Vec<String> = a
            .labels
            .iter()
            .map(|l| {
                let c = r.labels.get(l).copied().unwrap_or(0);
                format!("{:.0}%", c as f64 * 100.0 / r.articles.max(1) as f64)
            })
            .collect();
        let _ = write!(
            source_rows,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
            escape(&r.source),
            r.articles,
            r.mean_score,
            mix.join(" / ")
        );
    }
    let headline_rows = |idx: &[usize]| {
        let mut s = String::new();
        for &i in idx {
            let r = &x.articles[i];
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=\"l\">{}</td><td>{:.3}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                date(r.at),
                escape(&r.source),
                r.score,
                escape(&r.label),
                escape(&r.headline)
            );
        }
        s
    };
    let kv = |rows: &[(String, String)]| {
        rows.iter()
            .map(|(k, v)| {
                format!(
                    "<tr><td class=\"l\">{}</td><td class=\"l\"><code>{}</code></td></tr>",
                    escape(k),
                    escape(v)
                )
            })
            .collect::<String>()
    };
    let perf: String = summary
        .performance
        .iter()
        .map(|(k, v)| format!("<tr><td class=\"l\">{}</td><td>{v:.6}</td></tr>", escape(k)))
        .collect();
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right;font-size:13px}}td.l{{text-align:left}}tr.spread{{font-weight:bold;background:#f6f8fa}}code{{font-size:12px}}svg.chart{{display:block;margin:0.6em 0}}</style></head><body>
<h1>{title}</h1><p>{notes}</p>
<table><tr><th class="l">trades</th><th>return</th><th>buy-and-hold {sym}</th><th>Sharpe</th><th>max drawdown</th><th>articles</th><th>linked to no asset</th></tr><tr><td>{trades}</td><td>{ret:+.2}%</td><td>{bh}</td><td>{sharpe:.2}</td><td>{mdd:.2}%</td><td>{articles}</td><td>{unlinked}</td></tr></table>
<p>fingerprint <code>{fp}</code> &middot; {events} events replayed &middot; {emitted} emitted. Every figure's data is beside this page: prices.csv, trades.csv, sentiment.csv, equity.csv, event_study.csv/json, sources.csv, headlines.csv, labels_weekly.csv, run.json, summary.json.</p>
<h2>Price and trades</h2>{price_chart}{sentiment_chart}{counts_chart}
<h2>Equity</h2>{equity_chart}{dd_chart}
<h2>Event study: does the sentiment say anything about the next hours?</h2>
<p>Forward {sym} returns after each fused {asset} signal (from when the agent could act on it) and after each article linked to {asset} (from when it was received), by quintile of the signal (Q1 most negative). Bootstrap intervals: {resamples} resamples, seed {seed}. Hourly observations with 4 h and 24 h horizons overlap, so they are not independent: the intervals are too narrow, and an interval that includes zero means no edge.</p>
<ul>{findings}</ul>{study_chart}
<table><tr><th>signal</th><th>horizon h</th><th>bucket</th><th>signal range</th><th>n</th><th>mean</th><th>median</th><th>hit rate</th><th>95% CI of the mean</th></tr>{study_rows}</table>
<h2>Sources</h2><table><tr><th class="l">source</th><th>articles</th><th>mean score</th><th>label mix ({labels})</th></tr>{source_rows}</table>
<h2>Most positive headlines</h2><table><tr><th>date</th><th class="l">source</th><th>score</th><th>label</th><th class="l">headline</th></tr>{top}</table>
<h2>Most negative headlines</h2><table><tr><th>date</th><th class="l">source</th><th>score</th><th>label</th><th class="l">headline</th></tr>{bottom}</table>
<h2>Labels per week</h2>{weeks_chart}
<h2>Performance</h2><table>{perf}</table>
<h2>Run</h2><table><tr><th class="l">setting</th><th class="l">value</th></tr>{settings}</table><table><tr><th class="l">model</th><th class="l">sha256</th></tr>{model}</table><table><tr><th class="l">data file</th><th class="l">sha256</th></tr>{files}</table><p>Headline text belongs to its publishers; see data/README.md.</p>
</body></html>"#,
        title = escape(title),
        notes = escape(notes),
        sym = escape(&x.symbol),
        asset = escape(&x.asset),
        trades = summary.trades,
        ret = summary.total_return * 100.0,
        bh = a
            .buy_and_hold_return
            .map(|r| format!("{:+.2}%", r * 100.0))
            .unwrap_or_else(|| "–".into()),
        sharpe = summary.sharpe,
        mdd = summary.max_drawdown * 100.0,
        articles = x.articles.len(),
        unlinked = x.unlinked,
        fp = summary.fingerprint,
        events = summary.events,
        emitted = summary.emitted,
        resamples = a.event_study.resamples,
        seed = a.event_study.seed,
        study_chart = study_chart(&a.event_study),
        labels = a.labels.join(" / "),
        top = headline_rows(&a.top),
        bottom = headline_rows(&a.bottom),
        weeks_chart = weeks_chart(a),
        settings = kv(&x.settings),
        model = kv(&x.model),
        files = kv(&x.files),
    );
    std::fs::write(dir.join("report.html"), html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RunOutput;

    const H: Micros = 3_600_000_000;

    fn extras() -> Extras {
        let t0 = 1_746_144_000_000_000; // 2025-05-02 00:00 UTC, a Friday
        let prices: Vec<(Micros, f64)> = (0..200)
            .map(|i| (t0 + i * H, 100.0 + (i as f64 / 7.0).sin() * 5.0 + i as f64 * 0.05))
            .collect();
        let articles: Vec<ArticlePoint> = (0..300)
            .map(|i| {
                let score = ((i * 37) % 100) as f64 / 100.0;
                ArticlePoint {
                    at: t0 + i * H / 2,
                    source: ["A", "B", "C"][i as usize % 3].into(),
                    headline: format!("headline <{i}>, \"quoted\""),
                    score,
                    label: if score > 0.6 {
                        "positive"
                    } else if score < 0.4 {
                        "negative"
                    } else {
                        "neutral"
                    }
                    .into(),
                    assets: if i % 5 == 0 { vec![] } else { vec!["BTC".into()] },
                }
            })
            .collect();
        let signals = (0..150)
            .map(|i| SignalPoint {
                at: t0 + (i + 1) * H,
                window_start: t0 + i * H,
                window_end: t0 + (i + 1) * H,
                score: ((i * 13) % 100) as f64 / 100.0,
                confidence: 0.9,
                scores_used: 2,
            })
            .collect();
        Extras {
            symbol: "BTCUSD".into(),
            asset: "BTC".into(),
            prices,
            signals,
            articles,
            unlinked: 60,
            settings: vec![("fusion.windows".into(), "1h".into())],
            files: vec![("data/x.csv".into(), "ab".repeat(32))],
            model: vec![("m".into(), "cd".repeat(32))],
        }
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2025-05-02 was a Friday; its week starts on Monday 2025-04-28.
        assert_eq!(date(week_start(1_746_144_000_000_000 + 5 * H)), "2025-04-28");
        assert_eq!(date(week_start(0)), "1969-12-29");
    }

    #[test]
    fn the_report_has_every_section_and_its_data() {
        let x = extras();
        let curve: Vec<(Micros, f64)> = x.prices.iter().map(|&(t, p)| (t, 1000.0 * p)).collect();
        let a = analyse(&x, &curve, &[]);
        // Equity that is the price times 1000 is buy-and-hold exactly.
        let last = a.buy_and_hold.last().unwrap().1;
        assert!((last - curve.last().unwrap().1).abs() < 1e-6);
        assert_eq!(a.sources.len(), 3);
        assert_eq!(a.sources.iter().map(|s| s.articles).sum::<u64>(), 300);
        assert_eq!(a.top.len(), 10);
        assert_eq!(x.articles[a.top[0]].score, 0.99);
        assert_eq!(x.articles[a.bottom[0]].score, 0.0);
        assert_eq!(
            a.weeks
                .iter()
                .map(|w| w.labels.values().sum::<u64>())
                .sum::<u64>(),
            300
        );

        let dir = tempfile::tempdir().unwrap();
        let out = RunOutput {
            fingerprint: "f".repeat(64),
            ..Default::default()
        };
        let s = crate::report::report_with(&out, &x, "T & T", "notes", Some(dir.path())).unwrap();
        assert_eq!(s.articles, Some(300));
        assert_eq!(s.articles_unlinked, Some(60));
        assert!(s.event_study.as_ref().is_some_and(|e| !e.rows.is_empty()));
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        for id in [
            "price",
            "sentiment",
            "article-counts",
            "event-study",
            "labels-weekly",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("T &amp; T") && html.contains("headline &lt;"));
        assert!(
            !html.contains("<script") && !html.contains("http://")
                || html.contains("xmlns=\"http://www.w3.org/2000/svg\"")
        );
        for f in [
            "prices.csv",
            "sentiment.csv",
            "equity.csv",
            "event_study.csv",
            "event_study.json",
            "sources.csv",
            "headlines.csv",
            "labels_weekly.csv",
            "run.json",
            "summary.json",
            "trades.csv",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let heads = std::fs::read_to_string(dir.path().join("headlines.csv")).unwrap();
        assert!(heads.contains("\"headline <"), "quoted CSV: {heads}");
        assert_eq!(heads.lines().count(), 21);
    }
}
