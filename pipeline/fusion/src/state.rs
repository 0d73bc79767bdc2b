//! The keyed state of fusion: per asset, its market clock, the scores of its open windows, and
//! the closing of windows as the clock passes them. One [`Fuser`] runs inside each timely worker
//! (over the assets routed to it); the benchmark's baseline runs one over all assets directly.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use auroraq_bus::topics;
use auroraq_schemas::{now_micros, DeadLetter, EventKind, FusedSignal, Meta, Micros, SentimentScore};

use crate::fuse::{fuse_window, ScoreView};
use crate::model::{add, key_of, ArticleInfo, Control, Item, Out, Settings, Stamp, ARTICLE_NS};
use crate::FusionMetrics;

/// Article metadata known to a worker.
#[derive(Default)]
struct ArticleStore {
    by_event: HashMap<String, ArticleInfo>,
    by_time: BTreeSet<(Micros, String)>,
}

impl ArticleStore {
    fn insert(&mut self, a: ArticleInfo) {
        self.by_time.insert((a.ts, a.event_id.clone()));
        self.by_event.insert(a.event_id.clone(), a);
    }

    fn prune(&mut self, before: Micros) {
        let keep = self.by_time.split_off(&(before, String::new()));
        for (_, id) in std::mem::replace(&mut self.by_time, keep) {
            self.by_event.remove(&id);
        }
    }

    /// The article a score was derived from (its first parent).
    fn of(&self, score: &SentimentScore) -> Option<&ArticleInfo> {
        score
            .meta
            .derived_from
            .first()
            .and_then(|id| self.by_event.get(id))
    }
}

struct Stored {
    score: SentimentScore,
    /// Window families the score is on time for (bit j: `Settings::specs[j]`).
    mask: u64,
    /// Story key of its own article.
    key: u64,
}

/// One asset's state.
#[derive(Default)]
struct AssetState {
    /// Latest market event time seen.
    clock: Option<Micros>,
    /// Per window family: every window below this index is closed. `None` before the first tick.
    next: Vec<Option<i64>>,
    history: Vec<VecDeque<f64>>,
    /// Scores of open windows, in canonical order.
    scores: BTreeMap<(Micros, String), Stored>,
    /// Ids stored or released recently, with their event time.
    ids: HashMap<String, Micros>,
}

/// The state of one worker.
pub(crate) struct Fuser {
    s: Arc<Settings>,
    metrics: Arc<FusionMetrics>,
    assets: HashMap<String, AssetState>,
    articles: ArticleStore,
}

struct Ctx<'a> {
    s: &'a Settings,
    metrics: &'a FusionMetrics,
    articles: &'a ArticleStore,
}

impl Fuser {
    pub(crate) fn new(s: Arc<Settings>, metrics: Arc<FusionMetrics>) -> Self {
        Fuser {
            s,
            metrics,
            assets: HashMap::new(),
            articles: ArticleStore::default(),
        }
    }

    pub(crate) fn control(&mut self, c: Control, out: &mut dyn FnMut(Out)) {
        match c {
            Control::Article(a) => self.articles.insert(a),
            Control::Prune(before) => self.articles.prune(before),
            Control::Flush => {
                let ctx = Ctx {
                    s: &self.s,
                    metrics: &self.metrics,
                    articles: &self.articles,
                };
                let mut names: Vec<&String> = self.assets.keys().collect();
                names.sort();
                let names: Vec<String> = names.into_iter().cloned().collect();
                for name in names {
                    if let Some(st) = self.assets.get_mut(&name) {
                        st.flush(&name, &ctx, out);
                    }
                }
            }
        }
    }

    pub(crate) fn item(&mut self, i: Item, out: &mut dyn FnMut(Out)) {
        let ctx = Ctx {
            s: &self.s,
            metrics: &self.metrics,
            articles: &self.articles,
        };
        match i {
            Item::Tick { asset, ts } => match self.assets.get_mut(&asset) {
                Some(st) => st.on_tick(&asset, ts, &ctx, out),
                None => {
                    let mut st = AssetState::new(ctx.s);
                    st.on_tick(&asset, ts, &ctx, out);
                    self.assets.insert(asset, st);
                }
            },
            Item::Score { asset, score } => {
                let st = self
                    .assets
                    .entry(asset.clone())
                    .or_insert_with(|| AssetState::new(ctx.s));
                st.on_score(&asset, *score, &ctx, out);
            }
        }
    }
}

fn stamp(s: &Settings, window_close: Micros) -> Micros {
    match s.stamp {
        Stamp::Wall => now_micros(),
        Stamp::WindowClose => window_close,
    }
}

/// The story key of a score's own article: its first parent (the article event), else its
/// article id.
fn article_key(score: &SentimentScore) -> u64 {
    match score.meta.derived_from.first() {
        Some(parent) => key_of(ARTICLE_NS, parent),
        None => key_of(ARTICLE_NS, &format!("id:{}", score.article_id)),
    }
}

impl AssetState {
    fn new(s: &Settings) -> Self {
        AssetState {
            clock: None,
            next: vec![None; s.specs.len()],
            history: vec![VecDeque::new(); s.specs.len()],
            scores: BTreeMap::new(),
            ids: HashMap::new(),
        }
    }

    fn on_score(&mut self, asset: &str, score: SentimentScore, ctx: &Ctx, out: &mut dyn FnMut(Out)) {
        let id = score.meta.event_id.clone();
        let ts = score.meta.ts_event;
        if self.ids.contains_key(&id) {
            add(&ctx.metrics.duplicates, 1);
            out(Out::Release(id));
            return;
        }
        let mut mask = 0u64;
        for (j, spec) in ctx.s.specs.iter().enumerate() {
            let first = spec.first_index(ts);
            match self.next[j] {
                Some(next) if first < next => {
                    add(&ctx.metrics.late, 1);
                    metrics::counter!("auroraq_fusion_late_scores_total", "asset" => asset.to_owned())
                        .increment(1);
                    out(Out::Late(late_letter(ctx, asset, &score, j, first, self.clock)));
                }
                _ => mask |= 1 << j,
            }
        }
        self.ids.insert(id.clone(), ts);
        if mask == 0 {
            out(Out::Release(id));
            return;
        }
        let key = article_key(&score);
        self.scores.insert((ts, id), Stored { score, mask, key });
        self.report_open(asset, ctx);
    }

    /// The `auroraq_fusion_windows_open{asset}` gauge: windows (of every family) that hold a score
    /// and have not closed yet. Updated when a score arrives and when windows close (not per tick).
    fn report_open(&self, asset: &str, ctx: &Ctx) {
        let mut windows = std::collections::BTreeSet::new();
        for (j, spec) in ctx.s.specs.iter().enumerate() {
            let bit = 1u64 << j;
            let closed_below = self.next.get(j).copied().flatten().unwrap_or(i64::MIN);
            for ((t, _), st) in &self.scores {
                if st.mask & bit == 0 {
                    continue;
                }
                let mut k = spec.first_index(*t).max(closed_below);
                while spec.start(k) <= *t && windows.len() < 1_000_000 {
                    windows.insert((j, k));
                    k += 1;
                }
            }
        }
        let open = windows.len();
        metrics::gauge!("auroraq_fusion_windows_open", "asset" => asset.to_owned()).set(open as f64);
    }

    fn on_tick(&mut self, asset: &str, ts: Micros, ctx: &Ctx, out: &mut dyn FnMut(Out)) {
        if self.clock.is_some_and(|c| c >= ts) {
            return;
        }
        self.clock = Some(ts);
        let held = self.scores.len();
        let next = (held > 0).then(|| self.next.clone());
        for (j, spec) in ctx.s.specs.iter().enumerate() {
            self.close_until(asset, j, spec.last_closed(ts, ctx.s.grace), ctx, out);
        }
        self.prune(ctx, out);
        if next.is_some_and(|n| self.scores.len() != held || self.next != n) {
            self.report_open(asset, ctx);
        }
    }

    /// Closes, in order, every window of family `j` up to index `last` that holds a score.
    fn close_until(&mut self, asset: &str, j: usize, last: i64, ctx: &Ctx, out: &mut dyn FnMut(Out)) {
        let spec = ctx.s.specs[j];
        let bit = 1u64 << j;
        loop {
            let lower = self.next[j].unwrap_or(i64::MIN);
            let from = self.next[j].map_or(i64::MIN, |k| spec.start(k));
            let first = self
                .scores
                .range((from, String::new())..)
                .find(|(_, st)| st.mask & bit != 0)
                .map(|((t, _), _)| *t);
            let Some(t) = first else {
                self.next[j] = Some(lower.max(last.saturating_add(1)));
                return;
            };
            let k = lower.max(spec.first_index(t));
            if k > last {
                self.next[j] = Some(lower.max(last.saturating_add(1)));
                return;
            }
            self.close_window(asset, j, k, ctx, out);
            self.next[j] = Some(k + 1);
        }
    }

    fn close_window(&mut self, asset: &str, j: usize, k: i64, ctx: &Ctx, out: &mut dyn FnMut(Out)) {
        let s = ctx.s;
        let spec = s.specs[j];
        let bit = 1u64 << j;
        let (start, end) = (spec.start(k), spec.end(k));
        let members: Vec<&Stored> = self
            .scores
            .range((start, String::new())..)
            .take_while(|((t, _), _)| *t < end)
            .filter(|(_, st)| st.mask & bit != 0)
            .map(|(_, st)| st)
            .collect();
        if members.is_empty() {
            return;
        }
        let views: Vec<ScoreView> = members
            .iter()
            .map(|st| {
                let art = ctx.articles.of(&st.score);
                let mut keys = vec![st.key];
                if let Some(a) = art {
                    keys.extend(a.title_key);
                    keys.extend(a.text_key);
                }
                ScoreView {
                    id: st.score.meta.event_id.clone(),
                    ts: st.score.meta.ts_event,
                    value: st.score.sentiment_score,
                    confidence: if st.score.confidence.is_finite() {
                        st.score.confidence.clamp(0.0, 1.0)
                    } else {
                        0.0
                    },
                    source: art.map_or_else(|| s.unknown_source.clone(), |a| a.source.clone()),
                    keys,
                }
            })
            .collect();
        let f = fuse_window(&s.params, end, &views, &mut self.history[j]);
        let used: HashSet<&str> = f.used.iter().map(String::as_str).collect();
        let parents: Vec<&Meta> = members
            .iter()
            .filter(|st| used.contains(st.score.meta.event_id.as_str()))
            .map(|st| &st.score.meta)
            .collect();
        let meta = Meta::derived(
            EventKind::FusedSignal,
            &s.name,
            &parents,
            &format!("{asset}|{}|{}|{start}", spec.size, spec.slide),
            end,
            // When the market clock passed the close: the tick that did it, not before end + grace.
            stamp(s, (end + s.grace).max(self.clock.unwrap_or(i64::MIN))),
        );
        add(&ctx.metrics.signals, 1);
        add(&ctx.metrics.outliers, f.outliers.len() as u64);
        add(&ctx.metrics.syndicated, f.copies.len() as u64);
        out(Out::Signal(FusedSignal {
            meta,
            asset: asset.to_owned(),
            window_start: start,
            window_end: end,
            fused_score: f.fused_score,
            confidence: f.confidence,
            scores_used: f.used.len() as i32,
            scores_rejected: (f.outliers.len() + f.copies.len()) as i32,
            sources_used: f.sources_used as i32,
            weights_used: f.weights_used,
            trend: f.trend,
        }));
    }

    /// Releases the scores whose every window (in every family) is closed.
    fn prune(&mut self, ctx: &Ctx, out: &mut dyn FnMut(Out)) {
        let starts: Option<Vec<i64>> = ctx
            .s
            .specs
            .iter()
            .zip(&self.next)
            .map(|(spec, next)| next.map(|k| spec.start(k)))
            .collect();
        let Some(min_start) = starts.and_then(|v| v.into_iter().min()) else {
            return;
        };
        if self
            .scores
            .first_key_value()
            .is_none_or(|((t, _), _)| *t >= min_start)
        {
            return;
        }
        let keep = self.scores.split_off(&(min_start, String::new()));
        for ((_, id), _) in std::mem::replace(&mut self.scores, keep) {
            out(Out::Release(id));
        }
        let horizon = min_start.saturating_sub(ctx.s.dedup_horizon);
        self.ids.retain(|_, ts| *ts >= horizon);
    }

    /// End of input: closes every window that holds a score and releases everything.
    fn flush(&mut self, asset: &str, ctx: &Ctx, out: &mut dyn FnMut(Out)) {
        for (j, spec) in ctx.s.specs.iter().enumerate() {
            let bit = 1u64 << j;
            let last = self
                .scores
                .iter()
                .rev()
                .find(|(_, st)| st.mask & bit != 0)
                .map(|((t, _), _)| *t);
            if let Some(t) = last {
                self.close_until(asset, j, spec.last_index(t), ctx, out);
            }
        }
        for ((_, id), _) in std::mem::take(&mut self.scores) {
            out(Out::Release(id));
        }
    }
}

/// The dead letter of a score that came after its earliest window of family `j` closed.
fn late_letter(
    ctx: &Ctx,
    asset: &str,
    score: &SentimentScore,
    j: usize,
    first: i64,
    clock: Option<Micros>,
) -> DeadLetter {
    let s = ctx.s;
    let spec = s.specs[j];
    let (start, end) = (spec.start(first), spec.end(first));
    let meta = Meta::derived(
        EventKind::DeadLetter,
        &s.name,
        &[&score.meta],
        &format!("late|{asset}|{}|{}", spec.size, spec.slide),
        score.meta.ts_event,
        stamp(s, end + s.grace),
    );
    DeadLetter {
        meta,
        stage: s.name.clone(),
        reason: "late".to_owned(),
        error: format!(
            "score at {} for {asset} is late for the {}s/{}s windows: window [{start}, {end}) closed at market time {} (clock {})",
            score.meta.ts_event,
            spec.size / 1_000_000,
            spec.slide / 1_000_000,
            end + s.grace,
            clock.unwrap_or_default(),
        ),
        original_topic: topics::SENTIMENT_SCORES.to_owned(),
        original_key: score.assets.first().cloned(),
        original_id: Some(score.meta.event_id.clone()),
        original_bytes: auroraq_schemas::encode(score).unwrap_or_default(),
        attempts: 1,
    }
}
