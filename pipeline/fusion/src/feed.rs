//! Turns bus events into dataflow records: scores split per asset, market events reduced to
//! per-asset clock ticks (consecutive ticks of an asset coalesced), articles reduced to their
//! metadata.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use auroraq_schemas::{AnyEvent, Article, Micros, SentimentScore};

use crate::config::FusionConfig;
use crate::model::{add, ArticleInfo, Control, Item};
use crate::symbols::{fnv1a, SymbolMap};
use crate::FusionMetrics;

/// Event times fusion accepts: after the epoch, before 2100.
const MAX_TS: Micros = 4_102_444_800_000_000;

/// The event time and symbol of a market event, if it is one.
pub(crate) fn market_time(ev: &AnyEvent) -> Option<(&str, Micros)> {
    match ev {
        AnyEvent::TradeTick(e) => Some((&e.symbol, e.meta.ts_event)),
        AnyEvent::Kline(e) => Some((&e.symbol, e.meta.ts_event)),
        AnyEvent::BookTicker(e) => Some((&e.symbol, e.meta.ts_event)),
        AnyEvent::BookUpdate(e) => Some((&e.symbol, e.meta.ts_event)),
        _ => None,
    }
}

/// Checks the fields fusion relies on.
pub(crate) fn check_score(s: &SentimentScore) -> Result<(), String> {
    if !(s.sentiment_score.is_finite() && (0.0..=1.0).contains(&s.sentiment_score)) {
        return Err(format!("sentiment_score {} is not in [0, 1]", s.sentiment_score));
    }
    if !(s.meta.ts_event > 0 && s.meta.ts_event < MAX_TS) {
        return Err(format!("ts_event {} is out of range", s.meta.ts_event));
    }
    if s.meta.event_id.is_empty() {
        return Err("empty event_id".into());
    }
    Ok(())
}

pub(crate) struct Feeder {
    symbols: SymbolMap,
    member: u64,
    members: u64,
    join_articles: bool,
    cfg: FusionConfig,
    metrics: Arc<FusionMetrics>,
    items: Vec<Item>,
    control: Vec<Control>,
    /// Index in `items` of the last record of each asset in this batch.
    last: HashMap<String, usize>,
    /// Latest market event time over every asset.
    pub(crate) clock: Option<Micros>,
}

impl Feeder {
    pub(crate) fn new(cfg: &FusionConfig, metrics: Arc<FusionMetrics>) -> Self {
        Feeder {
            symbols: SymbolMap::new(&cfg.symbols),
            member: cfg.member as u64,
            members: cfg.members.max(1) as u64,
            join_articles: cfg.join_articles,
            cfg: cfg.clone(),
            metrics,
            items: Vec::new(),
            control: Vec::new(),
            last: HashMap::new(),
            clock: None,
        }
    }

    fn owns(&self, asset: &str) -> bool {
        self.members <= 1 || fnv1a(asset) % self.members == self.member
    }

    /// The assets of a score this process fuses, normalized, de-duplicated and sorted.
    pub(crate) fn assets_of(&self, s: &SentimentScore) -> Vec<String> {
        s.assets
            .iter()
            .filter_map(|a| self.symbols.asset_of_score(a))
            .filter(|a| self.owns(a))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Feeds a score for each of its assets; returns how many records it became, or why it is
    /// invalid.
    pub(crate) fn score(&mut self, s: SentimentScore) -> Result<usize, String> {
        check_score(&s)?;
        add(&self.metrics.scores_in, 1);
        let assets = self.assets_of(&s);
        if assets.is_empty() {
            add(&self.metrics.unassigned, 1);
            return Ok(0);
        }
        let n = assets.len();
        let mut score = Some(s);
        for (i, asset) in assets.into_iter().enumerate() {
            let s = if i + 1 == n { score.take() } else { score.clone() };
            if let Some(score) = s {
                self.last.insert(asset.clone(), self.items.len());
                self.items.push(Item::Score {
                    asset,
                    score: Box::new(score),
                });
            }
        }
        Ok(n)
    }

    /// Feeds a market event as a clock tick of its asset. Returns false if it is not market data
    /// this process uses.
    pub(crate) fn market(&mut self, ev: &AnyEvent) -> bool {
        let Some((symbol, ts)) = market_time(ev) else {
            add(&self.metrics.ignored, 1);
            return false;
        };
        if !(ts > 0 && ts < MAX_TS) {
            add(&self.metrics.ignored, 1);
            return false;
        }
        self.clock = Some(self.clock.map_or(ts, |c| c.max(ts)));
        let Some(asset) = self.symbols.asset_of_symbol(symbol) else {
            add(&self.metrics.ignored, 1);
            return false;
        };
        if !self.owns(&asset) {
            add(&self.metrics.ignored, 1);
            return false;
        }
        add(&self.metrics.ticks_in, 1);
        if let Some(&i) = self.last.get(&asset) {
            if let Some(Item::Tick { ts: t, .. }) = self.items.get_mut(i) {
                *t = (*t).max(ts);
                return true;
            }
        }
        self.last.insert(asset.clone(), self.items.len());
        self.items.push(Item::Tick { asset, ts });
        true
    }

    /// Feeds an article's metadata (broadcast to every worker). Returns false when articles are
    /// not joined.
    pub(crate) fn article(&mut self, a: &Article) -> bool {
        if !self.join_articles {
            add(&self.metrics.ignored, 1);
            return false;
        }
        add(&self.metrics.articles_in, 1);
        self.control
            .push(Control::Article(ArticleInfo::from_article(a, &self.cfg)));
        true
    }

    pub(crate) fn push_control(&mut self, c: Control) {
        self.control.push(c);
    }

    /// Records waiting for the next epoch.
    pub(crate) fn len(&self) -> usize {
        self.items.len() + self.control.len()
    }

    /// Takes the next epoch's records.
    pub(crate) fn take(&mut self) -> (Vec<Item>, Vec<Control>) {
        self.last.clear();
        (std::mem::take(&mut self.items), std::mem::take(&mut self.control))
    }
}
