//! Throughput of the fusion dataflow against a plain per-asset loop over the same input.

use std::time::Instant;

use auroraq_schemas::AnyEvent;
use serde::Serialize;

use crate::batch::{fuse_baseline, fuse_batch, FusionOutput};
use crate::config::FusionConfig;
use crate::synth::workload;
use crate::FusionError;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Fusion settings (windows, weights...); `workers` is overridden per run.
    pub config: FusionConfig,
    pub assets: usize,
    pub scores: usize,
    /// Market events per score (the dense clock).
    pub ticks_per_score: usize,
    /// Market time between scores, in seconds.
    pub score_gap_secs: f64,
    /// Worker counts to measure the dataflow with.
    pub workers: Vec<usize>,
    /// Runs of each variant; the fastest counts.
    pub rounds: usize,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            config: FusionConfig::default(),
            assets: 16,
            scores: 50_000,
            ticks_per_score: 20,
            score_gap_secs: 2.0,
            workers: vec![1, 2],
            rounds: 3,
            seed: 7,
        }
    }
}

/// One measured variant.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRun {
    /// `baseline` (a HashMap of per-asset windows, no timely) or `dataflow`.
    pub variant: String,
    pub workers: usize,
    pub secs: f64,
    pub events_per_sec: f64,
    pub events_per_sec_per_core: f64,
    /// This run's throughput over the baseline's.
    pub ratio_to_baseline: f64,
    pub signals: usize,
    /// Same signals, field for field, as the baseline.
    pub identical_to_baseline: bool,
}

/// The figures of one benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub events: usize,
    pub scores: usize,
    pub market_events: usize,
    pub articles: usize,
    pub assets: usize,
    pub windows: Vec<String>,
    pub late: usize,
    pub runs: Vec<BenchRun>,
}

fn timed(
    rounds: usize,
    input: &[AnyEvent],
    mut f: impl FnMut(Vec<AnyEvent>) -> Result<FusionOutput, FusionError>,
) -> Result<(f64, FusionOutput), FusionError> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let events = input.to_vec();
        let t = Instant::now();
        let out = f(events)?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    Ok((best, last.unwrap_or_default()))
}

/// Generates a synthetic workload ([`crate::synth::workload`]) and fuses it with the plain loop
/// and with the dataflow at each worker count, in this one call. Events are every input event
/// (scores, market events, articles); per core divides by the worker count (the baseline is one
/// core).
pub fn bench(opts: &BenchOptions) -> Result<BenchReport, FusionError> {
    opts.config.validate()?;
    let input = workload(
        opts.assets,
        opts.scores,
        opts.ticks_per_score,
        opts.score_gap_secs,
        opts.seed,
    );
    let count = |p: fn(&AnyEvent) -> bool| input.iter().filter(|e| p(e)).count();
    let scores = count(|e| matches!(e, AnyEvent::SentimentScore(_)));
    let articles = count(|e| matches!(e, AnyEvent::Article(_)));
    let events = input.len();
    let base_cfg = FusionConfig {
        workers: 1,
        ..opts.config.clone()
    };
    let (base_secs, base) = timed(opts.rounds, &input, |ev| fuse_baseline(&base_cfg, ev))?;
    let base_rate = events as f64 / base_secs;
    let mut runs = vec![BenchRun {
        variant: "baseline".into(),
        workers: 1,
        secs: base_secs,
        events_per_sec: base_rate,
        events_per_sec_per_core: base_rate,
        ratio_to_baseline: 1.0,
        signals: base.signals.len(),
        identical_to_baseline: true,
    }];
    for &w in &opts.workers {
        let cfg = FusionConfig {
            workers: w.max(1),
            ..opts.config.clone()
        };
        let (secs, out) = timed(opts.rounds, &input, |ev| fuse_batch(&cfg, ev))?;
        let rate = events as f64 / secs;
        runs.push(BenchRun {
            variant: "dataflow".into(),
            workers: cfg.workers,
            secs,
            events_per_sec: rate,
            events_per_sec_per_core: rate / cfg.workers as f64,
            ratio_to_baseline: rate / base_rate,
            signals: out.signals.len(),
            identical_to_baseline: out.signals == base.signals && out.late == base.late,
        });
    }
    Ok(BenchReport {
        events,
        scores,
        market_events: events - scores - articles,
        articles,
        assets: opts.assets,
        windows: opts
            .config
            .windows
            .iter()
            .map(|w| format!("{}s/{}s", w.size_secs, w.slide_secs))
            .collect(),
        late: base.late.len(),
        runs,
    })
}
