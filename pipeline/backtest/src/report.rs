//! The backtest report: equity curve and drawdown (SVG), trades, performance figures, in one
//! self-contained HTML page, and a JSON summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use auroraq_schemas::{AnyEvent, EventKind, Micros, OrderStatus};
use serde::Serialize;

use crate::engine::RunOutput;

/// One fill.
#[derive(Clone, Debug, Serialize)]
pub struct Trade {
    pub ts: Micros,
    pub agent: String,
    pub symbol: String,
    pub side: String,
    pub quantity: String,
    pub price: String,
    pub fee: Option<String>,
    pub client_order_id: String,
}

/// The JSON summary (the command's last line).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub fingerprint: String,
    /// Input events replayed.
    pub events: u64,
    /// Events the stages emitted.
    pub emitted: u64,
    pub trades: u64,
    pub total_return: f64,
    pub sharpe: f64,
    pub max_drawdown: f64,
    /// Every figure of the last portfolio snapshot.
    pub performance: BTreeMap<String, f64>,
    /// Emitted events by kind, keyed by the kinds' names.
    pub emitted_by_kind: BTreeMap<EventKind, u64>,
    pub start: Option<Micros>,
    pub end: Option<Micros>,
    pub report: Option<PathBuf>,
    /// Articles scored, and those that named no configured asset (scored, kept, used by no
    /// asset's fusion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub articles: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub articles_unlinked: Option<u64>,
    /// Buy-and-hold return of the traded symbol over the same span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buy_and_hold_return: Option<f64>,
    /// Forward returns after signals by signal quintile (see [`crate::event_study`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_study: Option<crate::event_study::EventStudy>,
}

/// Equity over time from the kept portfolio snapshots (one account: the first seen).
pub fn equity_curve(out: &RunOutput) -> Vec<(Micros, f64)> {
    let mut account: Option<&str> = None;
    out.kept
        .iter()
        .filter_map(|e| match e {
            AnyEvent::PortfolioSnapshot(p) => {
                let acc = *account.get_or_insert(p.account.as_str());
                (acc == p.account).then(|| {
                    (
                        p.meta.ts_event,
                        p.equity.0.to_string().parse::<f64>().unwrap_or(f64::NAN),
                    )
                })
            }
            _ => None,
        })
        .filter(|(_, e)| e.is_finite())
        .collect()
}

/// The fills among the kept order updates (see [`auroraq_schemas::OrderUpdate::is_fill`]).
pub fn trades(out: &RunOutput) -> Vec<Trade> {
    out.kept
        .iter()
        .filter_map(|e| match e {
            AnyEvent::OrderUpdate(u)
                if matches!(u.status, OrderStatus::Filled | OrderStatus::PartiallyFilled) && u.is_fill() =>
            {
                Some(Trade {
                    ts: u.meta.ts_event,
                    agent: u.agent.clone(),
                    symbol: u.symbol.clone(),
                    side: u.side.as_str().to_owned(),
                    quantity: u.last_fill_quantity.map(|q| q.to_string()).unwrap_or_default(),
                    price: u.last_fill_price.map(|p| p.to_string()).unwrap_or_default(),
                    fee: u.fee.map(|f| f.to_string()),
                    client_order_id: u.client_order_id.clone(),
                })
            }
            _ => None,
        })
        .collect()
}

fn last_performance(out: &RunOutput) -> BTreeMap<String, f64> {
    out.kept
        .iter()
        .rev()
        .find_map(|e| match e {
            AnyEvent::PortfolioSnapshot(p) => Some(p.performance.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Drawdown from the running peak, as a fraction (0 .. -1).
pub fn drawdowns(curve: &[(Micros, f64)]) -> Vec<(Micros, f64)> {
    let mut peak = f64::MIN;
    curve
        .iter()
        .map(|&(t, e)| {
            peak = peak.max(e);
            (t, if peak > 0.0 { e / peak - 1.0 } else { 0.0 })
        })
        .collect()
}

pub(crate) fn date(us: Micros) -> String {
    auroraq_util::time::date(us)
}

/// An SVG line chart of one or two series sharing the time axis (equity above, drawdown below).
pub fn svg(curve: &[(Micros, f64)], dd: &[(Micros, f64)], title: &str) -> String {
    let (w, h, pad) = (900.0, 420.0, 50.0);
    let top_h = 250.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{pad}" y="18" font-size="14">{}</text>"##,
        escape(title)
    );
    if curve.len() < 2 {
        s.push_str(r#"<text x="50" y="60">no portfolio snapshots: nothing to plot</text></svg>"#);
        return s;
    }
    let t0 = curve[0].0 as f64;
    let t1 = curve[curve.len() - 1].0.max(curve[0].0 + 1) as f64;
    let x = |t: Micros| pad + (t as f64 - t0) / (t1 - t0) * (w - 2.0 * pad);
    let (lo, hi) = curve
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(_, e)| (a.min(e), b.max(e)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = |e: f64| 30.0 + (1.0 - (e - lo) / span) * (top_h - 30.0);
    let pts: Vec<String> = curve
        .iter()
        .map(|&(t, e)| format!("{:.1},{:.1}", x(t), y(e)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{}"/><text x="4" y="{:.0}">{:.0}</text><text x="4" y="{:.0}">{:.0}</text>"##,
        pts.join(" "),
        y(hi) + 4.0,
        hi,
        y(lo) + 4.0,
        lo
    );
    let dd_lo = dd.iter().map(|&(_, d)| d).fold(0.0f64, f64::min).min(-1e-9);
    let (d_top, d_h) = (top_h + 30.0, h - top_h - 60.0);
    let yd = |d: f64| d_top + d / dd_lo * d_h;
    let mut area = format!("{:.1},{:.1} ", x(dd[0].0), d_top);
    for &(t, d) in dd {
        let _ = write!(area, "{:.1},{:.1} ", x(t), yd(d));
    }
    let _ = write!(area, "{:.1},{:.1}", x(dd[dd.len() - 1].0), d_top);
    let _ = write!(
        s,
        r##"<polygon fill="#f8514966" stroke="#cf222e" stroke-width="1" points="{area}"/><text x="4" y="{:.0}">0%</text><text x="4" y="{:.0}">{:.1}%</text><text x="{pad}" y="{:.0}">{}</text><text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><text x="{pad}" y="{:.0}" fill="#555">equity</text><text x="{pad}" y="{:.0}" fill="#555">drawdown</text></svg>"##,
        d_top + 4.0,
        d_top + d_h,
        dd_lo * 100.0,
        h - 8.0,
        date(curve[0].0),
        w - pad,
        h - 8.0,
        date(curve[curve.len() - 1].0),
        42.0,
        d_top - 6.0,
    );
    s
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Builds the summary and, when `dir` is given, writes `report.html`, `equity.svg`,
/// `trades.csv` and `summary.json` there.
pub fn report(out: &RunOutput, title: &str, notes: &str, dir: Option<&Path>) -> std::io::Result<Summary> {
    report_with(out, &crate::analysis::Extras::default(), title, notes, dir)
}

/// [`report`], with the analyst's sections when `extras` has prices (see [`crate::analysis`]).
pub fn report_with(
    out: &RunOutput,
    extras: &crate::analysis::Extras,
    title: &str,
    notes: &str,
    dir: Option<&Path>,
) -> std::io::Result<Summary> {
    let curve = equity_curve(out);
    let dd = drawdowns(&curve);
    let trades = trades(out);
    let performance = last_performance(out);
    let first = curve.first().map(|c| c.1);
    let last = curve.last().map(|c| c.1);
    let total_return = performance
        .get("total_return")
        .copied()
        .unwrap_or_else(|| match (first, last) {
            (Some(a), Some(b)) if a > 0.0 => b / a - 1.0,
            _ => 0.0,
        });
    let max_dd = performance
        .get("max_drawdown")
        .copied()
        .unwrap_or_else(|| dd.iter().map(|d| d.1).fold(0.0, f64::min).abs());
    let mut summary = Summary {
        fingerprint: out.fingerprint.clone(),
        events: out.inputs,
        emitted: out.emitted,
        trades: trades.len() as u64,
        total_return,
        sharpe: performance.get("sharpe").copied().unwrap_or(0.0),
        max_drawdown: max_dd,
        performance,
        emitted_by_kind: out.by_kind.clone(),
        start: out.started,
        end: out.ended,
        report: None,
        articles: None,
        articles_unlinked: None,
        buy_and_hold_return: None,
        event_study: None,
    };
    let analysis = (!extras.prices.is_empty()).then(|| crate::analysis::analyse(extras, &curve, &trades));
    if let Some(a) = &analysis {
        summary.articles = Some(extras.articles.len() as u64);
        summary.articles_unlinked = Some(extras.unlinked);
        summary.buy_and_hold_return = a.buy_and_hold_return;
        summary.event_study = Some(a.event_study.clone());
    }
    let Some(dir) = dir else { return Ok(summary) };
    std::fs::create_dir_all(dir)?;
    let chart = svg(&curve, &dd, title);
    std::fs::write(dir.join("equity.svg"), &chart)?;
    let mut csv = String::from("ts,date,agent,symbol,side,quantity,price,fee,client_order_id\n");
    for t in &trades {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{}",
            t.ts,
            date(t.ts),
            t.agent,
            t.symbol,
            t.side,
            t.quantity,
            t.price,
            t.fee.clone().unwrap_or_default(),
            t.client_order_id
        );
    }
    std::fs::write(dir.join("trades.csv"), csv)?;
    let mut rows = String::new();
    for (k, v) in &summary.performance {
        let _ = write!(rows, "<tr><td>{}</td><td>{v:.6}</td></tr>", escape(k));
    }
    let mut trade_rows = String::new();
    for t in trades.iter().take(500) {
        let _ = write!(
            trade_rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            date(t.ts),
            escape(&t.agent),
            escape(&t.symbol),
            t.side,
            t.quantity,
            t.price
        );
    }
    if let Some(a) = &analysis {
        let page = dir.join("report.html");
        crate::analysis::write(dir, extras, a, &summary, &curve, &dd, &trades, title, notes)?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )?;
        summary.report = Some(page);
        return Ok(summary);
    }
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>body{{font-family:sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}code{{font-size:12px}}</style></head><body><h1>{title}</h1><p>{notes}</p><p>fingerprint <code>{fp}</code> &middot; {events} events replayed &middot; {emitted} emitted &middot; {n} trades</p>{chart}<h2>Performance</h2><table>{rows}</table><h2>Trades{more}</h2><table><tr><th>date</th><th>agent</th><th>symbol</th><th>side</th><th>quantity</th><th>price</th></tr>{trade_rows}</table></body></html>"#,
        title = escape(title),
        notes = escape(notes),
        fp = summary.fingerprint,
        events = summary.events,
        emitted = summary.emitted,
        n = trades.len(),
        more = if trades.len() > 500 {
            " (first 500; all in trades.csv)"
        } else {
            ""
        },
    );
    let page = dir.join("report.html");
    std::fs::write(&page, html)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    summary.report = Some(page);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_drawdowns() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_571_302_800_000_000), "2019-10-17");
        let dd = drawdowns(&[(0, 100.0), (1, 120.0), (2, 90.0), (3, 130.0)]);
        assert_eq!(
            dd.iter()
                .map(|d| (d.1 * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            vec![0.0, 0.0, -0.25, 0.0]
        );
        let s = svg(
            &[(0, 100.0), (86_400_000_000, 90.0)],
            &[(0, 0.0), (86_400_000_000, -0.1)],
            "t<1>",
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>") && s.contains("t&lt;1&gt;"));
    }
}
