//! The fusion stage's configuration: windows, lateness, weights, outliers, trend, symbols and how
//! it joins the bus. Every field has a default ([`FusionConfig::default`]); [`FusionConfig::validate`]
//! checks a config before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FusionError;

/// One family of event-time windows: `[k·slide, k·slide + size)` for every integer `k`, aligned to
/// the Unix epoch. `slide == size` is a tumbling window; `slide < size` a sliding (hopping) one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub size_secs: u64,
    pub slide_secs: u64,
}

impl WindowSpec {
    /// A tumbling window of `secs` seconds.
    pub fn tumbling(secs: u64) -> Self {
        WindowSpec {
            size_secs: secs,
            slide_secs: secs,
        }
    }

    /// A window of `size_secs` that advances every `slide_secs`.
    pub fn sliding(size_secs: u64, slide_secs: u64) -> Self {
        WindowSpec {
            size_secs,
            slide_secs,
        }
    }
}

/// How market symbols become assets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SymbolConfig {
    /// Exact renames, applied to whole symbols (`XBTUSD` → `BTC`) and to the assets named by scores
    /// (`XBT` → `BTC`). Keys are matched case-insensitively.
    pub aliases: BTreeMap<String, String>,
    /// Quote currencies stripped from the end of a symbol (`BTCUSDT` → `BTC`); the longest match
    /// wins, and a symbol that is only a quote (`USDT`) stays as it is.
    pub quote_suffixes: Vec<String>,
}

impl Default for SymbolConfig {
    fn default() -> Self {
        SymbolConfig {
            aliases: BTreeMap::new(),
            quote_suffixes: [
                "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "UST", "USD", "EUR", "GBP", "TRY",
                "BRL", "JPY", "AUD", "BTC", "ETH", "BNB",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        }
    }
}

/// Configuration of the fusion stage. Durations are in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionConfig {
    /// Stage name: the `source` of fused signals and late dead letters, and the `dlq.<name>` topic.
    pub name: String,
    /// Durable consumer group on the bus.
    pub group: String,
    /// Timely worker threads (state is partitioned by asset hash across them).
    pub workers: usize,
    /// Window families; every one emits its own fused signals.
    pub windows: Vec<WindowSpec>,
    /// A window `[s, e)` of an asset closes once that asset's market clock (the latest market
    /// event time seen for it) reaches `e + grace_secs`. A score whose earliest window has already
    /// closed is late.
    pub grace_secs: u64,
    /// Recency decay: a score `half_life_secs` older than its window's end weighs half as much.
    pub half_life_secs: f64,
    /// Reliability weight per article source (publisher, else feed, else connector), matched
    /// case-insensitively.
    pub source_weights: BTreeMap<String, f64>,
    /// Weight of a source missing from `source_weights`.
    pub default_source_weight: f64,
    /// Source name used when a score's article is not known.
    pub unknown_source: String,
    /// Hampel filter: a score is an outlier if `|x − median| > outlier_k · 1.4826 · MAD`.
    pub outlier_k: f64,
    /// Floor on the MAD, so that a window of near-identical scores does not reject every
    /// slight deviation.
    pub outlier_min_mad: f64,
    /// Outlier rejection applies only to windows with at least this many (de-duplicated) scores.
    pub outlier_min_scores: usize,
    /// Trend: rising if the fused score exceeds the mean of the last `trend_lookback` windows of
    /// the same asset and window family by more than `trend_threshold`, falling if it is below by
    /// more, stable otherwise (and with no history).
    pub trend_threshold: f64,
    pub trend_lookback: usize,
    /// Confidence grows with the effective number of scores `n` as `1 − exp(−n / evidence_scale)`.
    pub evidence_scale: f64,
    /// Normalized titles with fewer words than this are not used to detect syndicated copies.
    pub dedup_min_title_words: usize,
    /// Normalized texts with fewer words than this are not used to detect syndicated copies.
    pub dedup_min_text_words: usize,
    pub symbols: SymbolConfig,
    /// Consume `news.articles.>` to learn each score's source and content hash (the score itself
    /// carries neither). Without it every score's source is `unknown_source` and only copies of the
    /// same article are merged.
    pub join_articles: bool,
    /// How long (in market time, against the latest market event of any asset) article
    /// metadata is kept; default `2 × largest window + grace`.
    pub article_retention_secs: Option<u64>,
    /// Where late scores go, as dead letters with reason `late`.
    pub late_topic: String,
    /// At the end of the input (`fuse_batch`; on the bus, merged inputs that have all ended),
    /// close every window still open (as if the market clock ran on). `false` leaves them open,
    /// as a live run would.
    pub close_at_end: bool,
    /// Most inputs fed to the dataflow as one epoch.
    pub batch_max: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    pub batch_wait_ms: u64,
    /// This process's share of the assets when several fusion processes run: it fuses the
    /// assets whose hash modulo `members` is `member`, in its own consumer group.
    pub member: u32,
    pub members: u32,
    /// Most unacked score deliveries (scores stay unacked until their windows close).
    pub max_in_flight_scores: usize,
    pub max_in_flight_market: usize,
    pub max_in_flight_articles: usize,
    /// Redelivery timeout of held scores and articles; default: largest window + grace +
    /// article retention + 10 minutes.
    pub hold_ack_wait_secs: Option<u64>,
    /// At start, market data is taken only after this delay, so that redelivered scores of
    /// windows left open by a previous run arrive before the market clock closes them.
    pub startup_delay_ms: u64,
    /// Stamp fused signals at their window's close (end + grace, event time) instead of the wall
    /// clock: for recorded data replayed through the live stage, as a backtest stamps them.
    pub stamp_window_close: bool,
    /// Read the inputs merged in event-time order by their watermarks (always so with
    /// `stamp_window_close`) and announce fusion's own on `sentiment.fused.progress`.
    pub merge_inputs: bool,
}

impl Default for FusionConfig {
    fn default() -> Self {
        FusionConfig {
            name: "fusion".to_owned(),
            group: "fusion".to_owned(),
            workers: 1,
            windows: vec![WindowSpec::tumbling(300), WindowSpec::sliding(3600, 300)],
            grace_secs: 60,
            half_life_secs: 1800.0,
            source_weights: BTreeMap::new(),
            default_source_weight: 1.0,
            unknown_source: "unknown".to_owned(),
            outlier_k: 3.0,
            outlier_min_mad: 0.05,
            outlier_min_scores: 3,
            trend_threshold: 0.05,
            trend_lookback: 3,
            evidence_scale: 3.0,
            dedup_min_title_words: 4,
            dedup_min_text_words: 8,
            symbols: SymbolConfig::default(),
            join_articles: true,
            article_retention_secs: None,
            late_topic: auroraq_bus::topics::SENTIMENT_LATE.to_owned(),
            close_at_end: true,
            batch_max: 4096,
            batch_wait_ms: 20,
            member: 0,
            members: 1,
            max_in_flight_scores: 65_536,
            max_in_flight_market: 4096,
            max_in_flight_articles: 65_536,
            hold_ack_wait_secs: None,
            startup_delay_ms: 1000,
            stamp_window_close: false,
            merge_inputs: false,
        }
    }
}

impl FusionConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FusionError> {
        let bad = |why: String| Err(FusionError::Config(why));
        if self.name.trim().is_empty() {
            return bad("name must not be empty".into());
        }
        if self.group.is_empty()
            || !self
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(format!("group {:?} must be [A-Za-z0-9_-]+", self.group));
        }
        if self.workers == 0 || self.workers > 256 {
            return bad(format!("workers must be 1..=256, not {}", self.workers));
        }
        if self.windows.is_empty() || self.windows.len() > 64 {
            return bad(format!(
                "windows must list 1 to 64 window families, not {}",
                self.windows.len()
            ));
        }
        for w in &self.windows {
            if w.size_secs == 0 || w.slide_secs == 0 || w.slide_secs > w.size_secs {
                return bad(format!(
                    "window {w:?}: size and slide must be positive and slide at most size"
                ));
            }
            if w.size_secs > 366 * 86_400 {
                return bad(format!("window {w:?}: size is over a year"));
            }
        }
        if self.grace_secs > 366 * 86_400 {
            return bad("grace_secs is over a year".into());
        }
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(FusionError::Config(format!(
                    "{name} must be a positive number, not {v}"
                )))
            }
        };
        positive("half_life_secs", self.half_life_secs)?;
        positive("outlier_k", self.outlier_k)?;
        positive("evidence_scale", self.evidence_scale)?;
        let non_negative = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(FusionError::Config(format!(
                    "{name} must be a number ≥ 0, not {v}"
                )))
            }
        };
        non_negative("default_source_weight", self.default_source_weight)?;
        non_negative("outlier_min_mad", self.outlier_min_mad)?;
        non_negative("trend_threshold", self.trend_threshold)?;
        for (source, w) in &self.source_weights {
            non_negative(&format!("source_weights.{source}"), *w)?;
        }
        if self.members == 0 || self.member >= self.members {
            return bad(format!(
                "member {} of {} is out of range",
                self.member, self.members
            ));
        }
        if self.batch_max == 0 {
            return bad("batch_max must be at least 1".into());
        }
        if self.max_in_flight_scores == 0
            || self.max_in_flight_market == 0
            || self.max_in_flight_articles == 0
        {
            return bad("max_in_flight_* must be at least 1".into());
        }
        if self.late_topic.is_empty() || self.late_topic.contains(['*', '>', ' ']) {
            return bad(format!(
                "late_topic {:?} must be a concrete topic",
                self.late_topic
            ));
        }
        Ok(())
    }

    /// The largest window size, in seconds.
    pub fn max_window_secs(&self) -> u64 {
        self.windows.iter().map(|w| w.size_secs).max().unwrap_or(0)
    }

    /// How long article metadata is kept, in seconds.
    pub fn article_retention(&self) -> u64 {
        self.article_retention_secs
            .unwrap_or(2 * self.max_window_secs() + self.grace_secs)
    }

    /// The redelivery timeout of held scores and articles, in seconds.
    pub fn hold_ack_wait(&self) -> u64 {
        self.hold_ack_wait_secs
            .unwrap_or(self.max_window_secs() + self.grace_secs + self.article_retention() + 600)
    }

    /// Whether the bus stage reads its inputs merged by watermarks (see `merge_inputs`).
    pub fn merged(&self) -> bool {
        self.stamp_window_close || self.merge_inputs
    }

    /// The consumer group this process joins: `group`, or `group-<member>of<members>` when the
    /// assets are split between several processes (each then reads every message).
    pub fn group_name(&self) -> String {
        if self.members <= 1 {
            self.group.clone()
        } else {
            format!("{}-{}of{}", self.group, self.member, self.members)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        FusionConfig::default().validate().expect("defaults are valid");
        let c = FusionConfig {
            windows: vec![WindowSpec::sliding(60, 120)],
            ..FusionConfig::default()
        };
        assert!(c.validate().is_err(), "slide over size");
        let c = FusionConfig {
            half_life_secs: 0.0,
            ..FusionConfig::default()
        };
        assert!(c.validate().is_err());
        let mut c = FusionConfig::default();
        c.source_weights.insert("x".into(), f64::NAN);
        assert!(c.validate().is_err());
        let c = FusionConfig {
            member: 2,
            members: 2,
            ..FusionConfig::default()
        };
        assert!(c.validate().is_err());
        let c = FusionConfig {
            workers: 0,
            ..FusionConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn derived_durations_and_group() {
        let c = FusionConfig::default();
        assert_eq!(c.max_window_secs(), 3600);
        assert_eq!(c.article_retention(), 2 * 3600 + 60);
        assert_eq!(c.hold_ack_wait(), 3600 + 60 + 7260 + 600);
        assert_eq!(c.group_name(), "fusion");
        let c = FusionConfig {
            member: 1,
            members: 3,
            ..FusionConfig::default()
        };
        assert_eq!(c.group_name(), "fusion-1of3");
    }
}
