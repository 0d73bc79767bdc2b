//! What flows into and out of the dataflow, and the settings its operators run with.

use std::sync::atomic::{AtomicU64, Ordering};

use auroraq_schemas::{Article, DeadLetter, FusedSignal, Micros, SentimentScore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::FusionConfig;
use crate::fuse::FuseParams;
use crate::symbols::fnv1a;

pub(crate) const MICROS: i64 = 1_000_000;

/// One input record of the keyed part of the dataflow: routed to the worker that owns `asset`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Item {
    /// A score, once per asset it names.
    Score {
        asset: String,
        score: Box<SentimentScore>,
    },
    /// The market clock of an asset moved to `ts` (event time of a trade, ticker, bar or book
    /// update).
    Tick { asset: String, ts: Micros },
}

impl Item {
    pub(crate) fn asset(&self) -> &str {
        match self {
            Item::Score { asset, .. } | Item::Tick { asset, .. } => asset,
        }
    }

    /// The routing hash: every record of one asset goes to the same worker.
    pub(crate) fn route(&self) -> u64 {
        fnv1a(self.asset())
    }
}

/// Broadcast records: every worker sees all of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Control {
    Article(ArticleInfo),
    /// Forget article metadata older than this market time.
    Prune(Micros),
    /// End of input: close every window.
    Flush,
}

/// What fusion keeps of an article: its source and the hashes of its normalized title and text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ArticleInfo {
    pub event_id: String,
    pub article_id: String,
    pub source: String,
    pub ts: Micros,
    pub title_key: Option<u64>,
    pub text_key: Option<u64>,
}

/// Lower-cases, keeps letters and digits, and collapses everything else to single spaces.
pub(crate) fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        } else {
            space = true;
        }
    }
    out
}

/// A 64-bit key from a namespace and a string (SHA-256, so it is stable everywhere).
pub(crate) fn key_of(namespace: &str, s: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(namespace.as_bytes());
    h.update([0u8]);
    h.update(s.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

impl ArticleInfo {
    /// The source is the publisher (`origin`), else the feed, else the connector; lower-cased.
    pub(crate) fn from_article(a: &Article, cfg: &FusionConfig) -> Self {
        let source = [
            a.origin.as_deref(),
            Some(a.feed.as_str()),
            Some(a.meta.source.as_str()),
        ]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(&cfg.unknown_source)
        .to_lowercase();
        let key = |ns: &str, text: &str, min_words: usize| {
            let n = normalize_text(text);
            (n.split(' ').filter(|w| !w.is_empty()).count() >= min_words.max(1)).then(|| key_of(ns, &n))
        };
        ArticleInfo {
            event_id: a.meta.event_id.clone(),
            article_id: a.article_id.clone(),
            source,
            ts: a.meta.ts_event,
            title_key: a
                .title
                .as_deref()
                .and_then(|t| key(TITLE_NS, t, cfg.dedup_min_title_words)),
            text_key: key(TEXT_NS, &a.text, cfg.dedup_min_text_words),
        }
    }
}

pub(crate) const TITLE_NS: &str = "title";
pub(crate) const TEXT_NS: &str = "text";
pub(crate) const ARTICLE_NS: &str = "article";

/// What the dataflow reports back.
#[derive(Debug)]
pub(crate) enum Out {
    Signal(FusedSignal),
    Late(DeadLetter),
    /// One per (score, asset) fed: that asset no longer needs the score (its windows closed, it
    /// was late, or it was a duplicate).
    Release(String),
    /// A worker finished the current epoch.
    Done,
}

/// How `ts_processed` of outputs is stamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// The wall clock (a live run).
    Wall,
    /// The market time at which the output was produced: for a signal, the time of the market
    /// event that moved the asset's clock past `window_end + grace` (never before that), as a live
    /// run emits it (a backtest or a replay, where the wall clock means nothing and outputs must
    /// repeat).
    WindowClose,
}

/// One window family in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub size: i64,
    pub slide: i64,
}

impl Spec {
    pub(crate) fn start(&self, k: i64) -> i64 {
        k.saturating_mul(self.slide)
    }
    pub(crate) fn end(&self, k: i64) -> i64 {
        self.start(k).saturating_add(self.size)
    }
    /// The first window that contains `t`: the least `k` with `k·slide + size > t`.
    pub(crate) fn first_index(&self, t: i64) -> i64 {
        (t - self.size).div_euclid(self.slide) + 1
    }
    /// The last window that contains `t`.
    pub(crate) fn last_index(&self, t: i64) -> i64 {
        t.div_euclid(self.slide)
    }
    /// The last window that is closed at market time `clock`: `end + grace ≤ clock`.
    pub(crate) fn last_closed(&self, clock: i64, grace: i64) -> i64 {
        (clock - grace - self.size).div_euclid(self.slide)
    }
}

/// Validated settings the operators use.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub name: String,
    pub specs: Vec<Spec>,
    pub grace: i64,
    pub params: FuseParams,
    pub unknown_source: String,
    /// How long ids of released scores are remembered to recognise redeliveries.
    pub dedup_horizon: i64,
    pub stamp: Stamp,
}

impl Settings {
    pub(crate) fn new(cfg: &FusionConfig, stamp: Stamp) -> Self {
        Settings {
            name: cfg.name.clone(),
            specs: cfg
                .windows
                .iter()
                .map(|w| Spec {
                    size: w.size_secs as i64 * MICROS,
                    slide: w.slide_secs as i64 * MICROS,
                })
                .collect(),
            grace: cfg.grace_secs as i64 * MICROS,
            params: FuseParams::from_config(cfg),
            unknown_source: cfg.unknown_source.trim().to_lowercase(),
            dedup_horizon: (cfg.max_window_secs() + cfg.grace_secs) as i64 * MICROS,
            stamp,
        }
    }
}

/// Live counters of a fusion run.
#[derive(Debug, Default)]
pub struct FusionMetrics {
    pub scores_in: AtomicU64,
    pub ticks_in: AtomicU64,
    pub articles_in: AtomicU64,
    /// Events of other kinds on the subscribed topics, and market data of assets this process
    /// does not own.
    pub ignored: AtomicU64,
    /// Scores that name no asset (this process owns).
    pub unassigned: AtomicU64,
    /// Scores with an out-of-range value or time (dead-lettered).
    pub invalid: AtomicU64,
    /// (score, asset, window family) triples rejected as late.
    pub late: AtomicU64,
    /// Scores seen again with the same id (redeliveries, replays).
    pub duplicates: AtomicU64,
    /// Scores merged into an earlier copy of the same story (counted per window).
    pub syndicated: AtomicU64,
    /// Scores rejected as outliers (counted per window).
    pub outliers: AtomicU64,
    pub signals: AtomicU64,
    pub epochs: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
}

/// A point-in-time copy of [`FusionMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FusionStats {
    pub scores_in: u64,
    pub ticks_in: u64,
    pub articles_in: u64,
    pub ignored: u64,
    pub unassigned: u64,
    pub invalid: u64,
    pub late: u64,
    pub duplicates: u64,
    pub syndicated: u64,
    pub outliers: u64,
    pub signals: u64,
    pub epochs: u64,
    pub published: u64,
    pub acked: u64,
}

impl FusionMetrics {
    pub fn snapshot(&self) -> FusionStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FusionStats {
            scores_in: g(&self.scores_in),
            ticks_in: g(&self.ticks_in),
            articles_in: g(&self.articles_in),
            ignored: g(&self.ignored),
            unassigned: g(&self.unassigned),
            invalid: g(&self.invalid),
            late: g(&self.late),
            duplicates: g(&self.duplicates),
            syndicated: g(&self.syndicated),
            outliers: g(&self.outliers),
            signals: g(&self.signals),
            epochs: g(&self.epochs),
            published: g(&self.published),
            acked: g(&self.acked),
        }
    }
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_index_math() {
        let s = Spec { size: 60, slide: 20 };
        // t = 50 lies in [0,60), [20,80), [40,100): k = 0, 1, 2
        assert_eq!(s.first_index(50), 0);
        assert_eq!(s.last_index(50), 2);
        // t = 60 lies in [20,80), [40,100), [60,120)
        assert_eq!(s.first_index(60), 1);
        assert_eq!(s.last_index(60), 3);
        // negative times floor correctly
        assert_eq!(s.first_index(-1), -3);
        assert_eq!(s.last_index(-1), -1);
        // with grace 5, at clock 65 window 0 ([0,60)) is closed, window 1 is not
        assert_eq!(s.last_closed(65, 5), 0);
        assert_eq!(s.last_closed(64, 5), -1);
    }

    #[test]
    fn normalization_ignores_case_and_punctuation() {
        assert_eq!(normalize_text("  Bitcoin  HITS $100k!! "), "bitcoin hits 100k");
        assert_eq!(
            key_of(TITLE_NS, &normalize_text("Bitcoin hits $100k")),
            key_of(TITLE_NS, &normalize_text("BITCOIN — hits 100K"))
        );
        assert_ne!(key_of(TITLE_NS, "a"), key_of(TEXT_NS, "a"));
    }
}
