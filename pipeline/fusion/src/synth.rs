//! Builders of the events fusion consumes, shaped as the connectors and the sentiment stage
//! make them; and the benchmark's synthetic workload.

use std::collections::BTreeMap;

use auroraq_schemas::{
    AnyEvent, Article, BookTicker, Dec, EventKind, Meta, Micros, SentimentScore, Side, TradeTick,
};

/// An article as a news connector publishes it (`source` is the connector, `feed` the feed,
/// `origin` the publisher).
pub fn article(
    source: &str,
    feed: &str,
    origin: Option<&str>,
    native_id: &str,
    ts: Micros,
    title: &str,
    text: &str,
) -> Article {
    Article {
        meta: Meta::raw(EventKind::Article, source, native_id, ts, ts),
        article_id: native_id.to_owned(),
        feed: feed.to_owned(),
        title: Some(title.to_owned()),
        text: text.to_owned(),
        url: None,
        origin: origin.map(str::to_owned),
        keywords: Vec::new(),
        tickers: Vec::new(),
        ts_crawled: None,
    }
}

/// The score the sentiment stage derives from `article`: its time is the article's publication
/// time, its parent the article.
pub fn score(
    article: &Article,
    assets: &[&str],
    value: f64,
    confidence: f64,
    ts_scored: Micros,
) -> SentimentScore {
    let p_pos = value.clamp(0.0, 1.0);
    let probabilities: BTreeMap<String, f64> = [
        ("negative".to_owned(), 1.0 - p_pos),
        ("positive".to_owned(), p_pos),
    ]
    .into_iter()
    .collect();
    SentimentScore {
        meta: Meta::derived(
            EventKind::SentimentScore,
            "sentiment",
            &[&article.meta],
            "synth-model",
            article.meta.ts_event,
            ts_scored,
        ),
        article_id: article.article_id.clone(),
        assets: assets.iter().map(|a| (*a).to_owned()).collect(),
        label: if value >= 0.5 { "positive" } else { "negative" }.to_owned(),
        probabilities,
        sentiment_score: value,
        confidence,
        model_id: "synth-model".to_owned(),
        model_sha256: String::new(),
        tokenizer_sha256: String::new(),
        truncated: false,
    }
}

/// A trade on `exchange` at event time `ts`.
pub fn trade(exchange: &str, symbol: &str, seq: u64, ts: Micros) -> TradeTick {
    TradeTick {
        meta: Meta::raw(EventKind::TradeTick, exchange, &format!("{symbol}:{seq}"), ts, ts),
        exchange: exchange.to_owned(),
        symbol: symbol.to_owned(),
        trade_id: seq.to_string(),
        price: Dec::new(6_412_345, 2),
        quantity: Dec::new(150, 5),
        aggressor: Side::Buy,
        aggregated: false,
    }
}

/// A best bid/ask update at event time `ts`.
pub fn ticker(exchange: &str, symbol: &str, seq: u64, ts: Micros) -> BookTicker {
    BookTicker {
        meta: Meta::raw(
            EventKind::BookTicker,
            exchange,
            &format!("{symbol}:{seq}"),
            ts,
            ts,
        ),
        exchange: exchange.to_owned(),
        symbol: symbol.to_owned(),
        update_id: Some(seq as i64),
        bid_price: Dec::new(6_412_300, 2),
        bid_qty: Dec::new(100, 3),
        ask_price: Dec::new(6_412_400, 2),
        ask_qty: Dec::new(100, 3),
    }
}

/// xorshift64*: a small deterministic generator for the workload.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A synthetic, time-ordered input: `scores` scores over `assets` assets (one score in ten
/// names two), one article per story (one story in ten syndicated by a second publisher, one
/// score in fifty an outlier), `ticks_per_score` trades per score, spread so that a score comes
/// every `score_gap_secs` of market time, each arriving up to 20 s after its publication.
pub fn workload(
    assets: usize,
    scores: usize,
    ticks_per_score: usize,
    score_gap_secs: f64,
    seed: u64,
) -> Vec<AnyEvent> {
    const T0: Micros = 1_700_000_000_000_000;
    let assets = assets.max(1);
    let names: Vec<String> = (0..assets).map(|i| format!("A{i}")).collect();
    let publishers = ["reuters", "bloomberg", "coindesk", "theblock", "decrypt", "blog"];
    let mut rng = Rng::new(seed);
    let gap = (score_gap_secs * 1e6) as i64;
    let tick_gap = (gap / ticks_per_score.max(1) as i64).max(1);
    let mut out = Vec::with_capacity(scores * (ticks_per_score + 3));
    let mut tick_seq = 0u64;
    let mut delayed: Vec<(Micros, AnyEvent)> = Vec::new();
    for i in 0..scores {
        let published = T0 + i as i64 * gap;
        // Trades up to this score's publication, round-robin over assets.
        for t in 0..ticks_per_score {
            let ts = published - gap + (t as i64 + 1) * tick_gap;
            let a = &names[(tick_seq as usize) % assets];
            tick_seq += 1;
            out.push(AnyEvent::TradeTick(trade(
                "binance",
                &format!("{a}USDT"),
                tick_seq,
                ts,
            )));
        }
        // Scores arriving by now.
        delayed.sort_by_key(|(at, _)| *at);
        let due = delayed.iter().take_while(|(at, _)| *at <= published).count();
        out.extend(delayed.drain(..due).map(|(_, e)| e));

        let story = i as u64;
        let a1 = names[rng.below(assets as u64) as usize].clone();
        let mut assets_named = vec![a1.clone()];
        if rng.below(10) == 0 {
            let a2 = names[rng.below(assets as u64) as usize].clone();
            if a2 != a1 {
                assets_named.push(a2);
            }
        }
        let refs: Vec<&str> = assets_named.iter().map(String::as_str).collect();
        let value = if rng.below(50) == 0 {
            rng.f64() * 0.05
        } else {
            0.45 + 0.2 * rng.f64()
        };
        let publisher = publishers[rng.below(publishers.len() as u64) as usize];
        let title = format!("story {story} about {} moves markets today", a1.to_lowercase());
        let text = format!("full text of story {story} with enough words to hash for syndication checks");
        let art = article(
            "feedly",
            "feed/crypto",
            Some(publisher),
            &format!("s{story}"),
            published,
            &title,
            &text,
        );
        let sc = score(&art, &refs, value, 0.5 + 0.5 * rng.f64(), published + 1_000_000);
        let arrive = published + rng.below(20_000_000) as i64;
        out.push(AnyEvent::Article(art.clone()));
        delayed.push((arrive, AnyEvent::SentimentScore(sc)));
        if rng.below(10) == 0 {
            let copy = article(
                "feedly",
                "feed/crypto",
                Some("syndicator"),
                &format!("s{story}-copy"),
                published + 60_000_000,
                &title,
                &text,
            );
            let sc = score(&copy, &refs, value, 0.9, published + 61_000_000);
            out.push(AnyEvent::Article(copy));
            delayed.push((arrive + 60_000_000, AnyEvent::SentimentScore(sc)));
        }
    }
    delayed.sort_by_key(|(at, _)| *at);
    out.extend(delayed.into_iter().map(|(_, e)| e));
    // Trades past the end, so that the last windows close on the market clock.
    let end = T0 + scores as i64 * gap + 2 * 3_600_000_000;
    for (k, a) in names.iter().enumerate() {
        out.push(AnyEvent::TradeTick(trade(
            "binance",
            &format!("{a}USDT"),
            tick_seq + 1 + k as u64,
            end,
        )));
    }
    out
}
