//! Fusion over a finite input: the same dataflow as on the bus, fed from memory.

use std::sync::Arc;

use auroraq_schemas::{AnyEvent, DeadLetter, FusedSignal};

use crate::config::FusionConfig;
use crate::dataflow::Engine;
use crate::feed::{market_time, Feeder};
use crate::model::{add, Control, Item, Out, Settings, Stamp};
use crate::state::Fuser;
use crate::{FusionError, FusionMetrics, FusionStats};

/// What a finite run produced, in a canonical order (signals by window end, asset, window size,
/// window start; late dead letters by score time and id), whatever the number of workers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FusionOutput {
    pub signals: Vec<FusedSignal>,
    /// Late scores, as the dead letters a live run sends to `late_topic`.
    pub late: Vec<DeadLetter>,
    pub stats: FusionStats,
}

enum Runner {
    Dataflow(Engine),
    Plain(Box<Fuser>),
}

impl Runner {
    fn epoch(
        &mut self,
        items: Vec<Item>,
        control: Vec<Control>,
        sink: &mut dyn FnMut(Out),
    ) -> Result<(), FusionError> {
        match self {
            Runner::Dataflow(engine) => {
                engine.submit(items, control)?;
                engine.collect_blocking(sink)
            }
            Runner::Plain(fuser) => {
                for c in control {
                    fuser.control(c, sink);
                }
                for i in items {
                    fuser.item(i, sink);
                }
                Ok(())
            }
        }
    }
}

/// Fuses a finite, ordered input with the timely dataflow (`cfg.workers` workers) and returns
/// the signals and late scores.
///
/// Events are taken in order: scores (`SentimentScore`), market data (`TradeTick`, `Kline`,
/// `BookTicker`, `BookUpdate`) and, with `join_articles`, articles (`Article`, all known before
/// the first window closes, as a backtest may); other kinds are counted as ignored, invalid
/// scores as invalid. At the end of the input every window still open is closed (unless
/// `close_at_end` is false). `ts_processed` of a signal is the market time at which its window
/// closed (the market event that moved the asset's clock past `window_end + grace`; at the end of
/// the input, `window_end + grace`), as a live run on event time stamps it, so that the same
/// input gives the same output, field for field.
pub fn fuse_batch<I>(cfg: &FusionConfig, events: I) -> Result<FusionOutput, FusionError>
where
    I: IntoIterator<Item = AnyEvent>,
{
    run_batch(cfg, events, true)
}

/// The same computation as [`fuse_batch`] without timely: one loop over a map of per-asset
/// window states. The benchmark's baseline, and a cross-check of the dataflow.
pub fn fuse_baseline<I>(cfg: &FusionConfig, events: I) -> Result<FusionOutput, FusionError>
where
    I: IntoIterator<Item = AnyEvent>,
{
    run_batch(cfg, events, false)
}

fn run_batch<I>(cfg: &FusionConfig, events: I, dataflow: bool) -> Result<FusionOutput, FusionError>
where
    I: IntoIterator<Item = AnyEvent>,
{
    cfg.validate()?;
    let settings = Arc::new(Settings::new(cfg, Stamp::WindowClose));
    let metrics = Arc::new(FusionMetrics::default());
    let mut runner = if dataflow {
        Runner::Dataflow(Engine::start(settings, cfg.workers, metrics.clone())?)
    } else {
        Runner::Plain(Box::new(Fuser::new(settings, metrics.clone())))
    };
    let events: Vec<AnyEvent> = events.into_iter().collect();
    let mut feeder = Feeder::new(cfg, metrics.clone());
    let mut out = FusionOutput::default();
    let mut sink = |o: Out| match o {
        Out::Signal(s) => out.signals.push(s),
        Out::Late(d) => out.late.push(d),
        Out::Release(_) | Out::Done => {}
    };
    // Article metadata first: a backtest knows every article of its input.
    for ev in &events {
        if let AnyEvent::Article(a) = ev {
            feeder.article(a);
        }
    }
    let mut epoch = |feeder: &mut Feeder, sink: &mut dyn FnMut(Out)| -> Result<(), FusionError> {
        let (items, control) = feeder.take();
        add(&metrics.epochs, 1);
        runner.epoch(items, control, sink)
    };
    if feeder.len() > 0 {
        epoch(&mut feeder, &mut sink)?;
    }
    // Market event times per asset: a signal is stamped at the first one that closed its window
    // (epochs here hold many ticks; a live run sees them one by one).
    let symbols = crate::SymbolMap::new(&cfg.symbols);
    let mut ticks: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for ev in events {
        match ev {
            AnyEvent::Article(_) => {}
            AnyEvent::SentimentScore(s) => {
                if feeder.score(s).is_err() {
                    add(&metrics.invalid, 1);
                }
            }
            other => {
                if let Some((symbol, ts)) = market_time(&other) {
                    if let Some(asset) = symbols.asset_of_symbol(symbol) {
                        ticks.entry(asset).or_default().push(ts);
                    }
                }
                feeder.market(&other);
            }
        }
        if feeder.len() >= cfg.batch_max {
            epoch(&mut feeder, &mut sink)?;
        }
    }
    if feeder.len() > 0 {
        epoch(&mut feeder, &mut sink)?;
    }
    if cfg.close_at_end {
        feeder.push_control(Control::Flush);
        epoch(&mut feeder, &mut sink)?;
    }
    if let Runner::Dataflow(engine) = runner {
        engine.finish()?;
    }
    let grace = cfg.grace_secs as i64 * 1_000_000;
    for t in ticks.values_mut() {
        t.sort_unstable();
    }
    for s in &mut out.signals {
        s.meta.ts_processed = Some(closed_by(&ticks, s, grace).unwrap_or(s.window_end + grace));
    }
    out.signals.sort_by(|a, b| {
        (
            a.window_end,
            &a.asset,
            a.window_end - a.window_start,
            a.window_start,
            &a.meta.event_id,
        )
            .cmp(&(
                b.window_end,
                &b.asset,
                b.window_end - b.window_start,
                b.window_start,
                &b.meta.event_id,
            ))
    });
    out.late
        .sort_by(|a, b| (a.meta.ts_event, &a.meta.event_id).cmp(&(b.meta.ts_event, &b.meta.event_id)));
    out.stats = metrics.snapshot();
    Ok(out)
}

/// The first of its asset's market times (`ticks`, sorted per asset) at or after a signal's
/// window close (`window_end + grace`): the market event that closed the window.
pub(crate) fn closed_by(
    ticks: &std::collections::HashMap<String, Vec<i64>>,
    s: &auroraq_schemas::FusedSignal,
    grace: i64,
) -> Option<i64> {
    let close = s.window_end + grace;
    ticks
        .get(&s.asset)
        .and_then(|t| t.get(t.partition_point(|&x| x < close)))
        .copied()
}
