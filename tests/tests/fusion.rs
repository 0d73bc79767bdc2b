//! The fusion stage: windows on the market clock, lateness, outliers, syndication, weights,
//! trend, arrival-order independence, multi-worker equivalence, and end to end on NATS.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auroraq_bus::{Bus, SubscribeOptions, Subscription};
use auroraq_fusion::{
    fuse_baseline, fuse_batch, synth, FusionConfig, FusionError, FusionMetrics, FusionOutput, FusionStage,
    FusionStats, WindowSpec,
};
use auroraq_schemas::{AnyEvent, Article, DeadLetter, EventKind, FusedSignal, Meta, SentimentScore, Trend};
use auroraq_stage::publish_events;
use auroraq_tests::{nats_bus, wait_until};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const S: i64 = 1_000_000;
/// Aligned to 60 s, 300 s and 600 s.
const T0: i64 = 1_700_000_400 * S;

fn article(id: &str, origin: &str, ts: i64) -> Article {
    synth::article(
        "feedly",
        "feed/crypto",
        Some(origin),
        id,
        ts,
        &format!("{id} headline about crypto markets moving today"),
        &format!("{id} body text long enough to be hashed for syndicated copy detection here"),
    )
}

fn score(a: &Article, assets: &[&str], value: f64, confidence: f64) -> SentimentScore {
    synth::score(a, assets, value, confidence, a.meta.ts_event + S)
}

/// The same article scored by another model: another score id, the same parent.
fn rescored(a: &Article, assets: &[&str], value: f64, model: &str) -> SentimentScore {
    let mut s = score(a, assets, value, 0.9);
    s.meta = Meta::derived(
        EventKind::SentimentScore,
        "sentiment",
        &[&a.meta],
        model,
        a.meta.ts_event,
        a.meta.ts_event + S,
    );
    s.model_id = model.to_owned();
    s
}

fn tick(symbol: &str, seq: u64, ts: i64) -> AnyEvent {
    AnyEvent::TradeTick(synth::trade("binance", symbol, seq, ts))
}

/// Trades of `symbol` every `step` from `from` to `to` inclusive.
fn ticks(symbol: &str, from: i64, to: i64, step: i64) -> Vec<AnyEvent> {
    let mut out = Vec::new();
    let mut t = from;
    let mut seq = (from / S) as u64 * 10;
    while t <= to {
        out.push(tick(symbol, seq, t));
        seq += 1;
        t += step;
    }
    out
}

fn tumbling(secs: u64) -> FusionConfig {
    FusionConfig {
        windows: vec![WindowSpec::tumbling(secs)],
        grace_secs: 60,
        ..FusionConfig::default()
    }
}

fn ev_a(a: &Article) -> AnyEvent {
    AnyEvent::Article(a.clone())
}

fn ev_s(s: &SentimentScore) -> AnyEvent {
    AnyEvent::SentimentScore(s.clone())
}

fn of_asset<'a>(out: &'a FusionOutput, asset: &str, size_secs: i64) -> Vec<&'a FusedSignal> {
    out.signals
        .iter()
        .filter(|s| s.asset == asset && s.window_end - s.window_start == size_secs * S)
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn windows_close_on_the_market_clock_with_sparse_news() {
    let btc = article("n1", "reuters", T0 + 10 * S);
    let eth = article("n2", "reuters", T0 + 20 * S);
    let (sb, se) = (score(&btc, &["BTC"], 0.8, 0.9), score(&eth, &["eth"], 0.3, 0.9));
    let news = vec![ev_a(&btc), ev_a(&eth), ev_s(&sb), ev_s(&se)];
    let cfg = FusionConfig {
        close_at_end: false,
        ..FusionConfig::default() // 5 min tumbling + 1 h sliding by 5 min, grace 60 s
    };

    // Twenty minutes of BTC trades (the only market data): one news item, yet BTC's windows close.
    let mut input = news.clone();
    input.extend(ticks("BTCUSDT", T0, T0 + 1200 * S, 10 * S));
    let out = fuse_batch(&cfg, input).expect("fuse");
    let five = of_asset(&out, "BTC", 300);
    assert_eq!(five.len(), 1, "{:?}", out.signals);
    assert_eq!((five[0].window_start, five[0].window_end), (T0, T0 + 300 * S));
    assert_eq!(five[0].meta.derived_from, vec![sb.meta.event_id.clone()]);
    assert!(close(five[0].fused_score, 0.8));
    // 1 h windows ending at +5, +10 and +15 min are closed (end + 60 s ≤ +20 min); +20 min is not.
    let hour: Vec<i64> = of_asset(&out, "BTC", 3600).iter().map(|s| s.window_end).collect();
    assert_eq!(hour, vec![T0 + 300 * S, T0 + 600 * S, T0 + 900 * S]);
    // ETH has no market data: BTC's clock does not close its windows.
    assert!(of_asset(&out, "ETH", 300).is_empty() && of_asset(&out, "ETH", 3600).is_empty());

    // Before the grace period has passed on the market clock, nothing closes.
    let mut input = news.clone();
    input.extend(ticks("BTCUSDT", T0, T0 + 359 * S, S));
    assert!(fuse_batch(&cfg, input).expect("fuse").signals.is_empty());
    // One microsecond of market time later it does.
    let mut input = news.clone();
    input.extend(ticks("BTCUSDT", T0, T0 + 359 * S, S));
    input.push(tick("BTCUSDT", 1, T0 + 360 * S));
    let ends: Vec<(i64, i64)> = fuse_batch(&cfg, input)
        .expect("fuse")
        .signals
        .iter()
        .map(|s| (s.window_start, s.window_end))
        .collect();
    assert_eq!(
        ends,
        vec![(T0, T0 + 300 * S), (T0 - 3300 * S, T0 + 300 * S)],
        "the 5 min and the first 1 h window"
    );

    // ETH's own market data (a book ticker on another exchange) closes ETH's windows.
    let mut input = news.clone();
    input.push(AnyEvent::BookTicker(synth::ticker(
        "kraken",
        "ETH/USD",
        1,
        T0 + 400 * S,
    )));
    let out = fuse_batch(&cfg, input).expect("fuse");
    assert_eq!(of_asset(&out, "ETH", 300).len(), 1);
    assert!(of_asset(&out, "BTC", 300).is_empty());

    // At the end of a backtest every window closes: 1 + 12 windows per asset.
    let out = fuse_batch(&FusionConfig::default(), news).expect("fuse");
    assert_eq!(out.signals.len(), 2 * 13);
}

#[test]
fn late_scores_are_counted_and_dead_lettered() {
    let a1 = article("a1", "reuters", T0 + 10 * S);
    let a2 = article("a2", "reuters", T0 + 20 * S);
    let a4 = article("a4", "reuters", T0 + 30 * S);
    let a3 = article("a3", "reuters", T0 + 330 * S);
    let s1 = score(&a1, &["BTC"], 0.7, 0.9);
    let s2 = score(&a2, &["BTC"], 0.1, 0.9);
    let s4 = score(&a4, &["BTC"], 0.6, 0.9);
    let s3 = score(&a3, &["BTC"], 0.5, 0.9);
    let mut input = vec![ev_a(&a1), ev_a(&a2), ev_a(&a3), ev_a(&a4), ev_s(&s1)];
    input.extend(ticks("BTCUSDT", T0, T0 + 359 * S, 10 * S));
    input.push(tick("BTCUSDT", 1, T0 + 359 * S));
    input.push(ev_s(&s4)); // window [T0, T0+300s) closes at T0+360s: still on time
    input.push(tick("BTCUSDT", 2, T0 + 360 * S));
    input.push(ev_s(&s2)); // now late
    input.push(ev_s(&s3)); // next window: on time
    input.extend(ticks("BTCUSDT", T0 + 370 * S, T0 + 700 * S, 10 * S));
    let cfg = FusionConfig {
        close_at_end: false,
        ..tumbling(300)
    };
    let out = fuse_batch(&cfg, input).expect("fuse");
    assert_eq!(out.stats.late, 1);
    assert_eq!(out.late.len(), 1);
    let dl: &DeadLetter = &out.late[0];
    assert_eq!(dl.reason, "late");
    assert_eq!(dl.stage, "fusion");
    assert_eq!(dl.original_id.as_deref(), Some(s2.meta.event_id.as_str()));
    assert_eq!(dl.original_topic, "sentiment.scores");
    assert_eq!(dl.meta.derived_from, vec![s2.meta.event_id.clone()]);
    let back: SentimentScore = auroraq_schemas::decode(&dl.original_bytes).expect("original bytes decode");
    assert_eq!(back, s2);
    assert_eq!(out.signals.len(), 2);
    assert_eq!(
        out.signals[0].meta.derived_from,
        vec![s1.meta.event_id.clone(), s4.meta.event_id.clone()]
    );
    assert_eq!(out.signals[1].meta.derived_from, vec![s3.meta.event_id.clone()]);
    assert!(out
        .signals
        .iter()
        .all(|s| !s.meta.derived_from.contains(&s2.meta.event_id)));
}

#[test]
fn outliers_are_rejected() {
    let vals = [0.60, 0.62, 0.58, 0.61, 0.05];
    let mut input = Vec::new();
    let mut ids = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        let a = article(&format!("o{i}"), "reuters", T0 + (10 + i as i64) * S);
        let s = score(&a, &["BTC"], *v, 1.0);
        ids.push(s.meta.event_id.clone());
        input.push(ev_a(&a));
        input.push(ev_s(&s));
    }
    // No recency decay here, so the fused score is the plain mean of the scores kept.
    let cfg = FusionConfig {
        half_life_secs: 1e12,
        ..tumbling(300)
    };
    let out = fuse_batch(&cfg, input).expect("fuse");
    assert_eq!(out.signals.len(), 1);
    let s = &out.signals[0];
    assert_eq!((s.scores_used, s.scores_rejected), (4, 1));
    assert_eq!(
        s.meta.derived_from,
        ids[..4].to_vec(),
        "the 0.05 score is not a parent"
    );
    assert!(
        close(s.fused_score, (0.60 + 0.62 + 0.58 + 0.61) / 4.0),
        "{}",
        s.fused_score
    );
    assert_eq!(out.stats.outliers, 1);

    // A tighter threshold also rejects the mild deviations; a looser one keeps the outlier.
    let loose = FusionConfig {
        outlier_k: 20.0,
        ..tumbling(300)
    };
    let mut input2 = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        let a = article(&format!("o{i}"), "reuters", T0 + (10 + i as i64) * S);
        input2.push(ev_a(&a));
        input2.push(ev_s(&score(&a, &["BTC"], *v, 1.0)));
    }
    let out = fuse_batch(&loose, input2).expect("fuse");
    assert_eq!(out.signals[0].scores_used, 5);
}

#[test]
fn syndicated_copies_count_once() {
    let title = "Bitcoin ETF approved by regulators in a landmark decision";
    let text = "The regulator approved the first spot bitcoin exchange traded fund on Wednesday after years of refusals";
    let orig = synth::article(
        "feedly",
        "feed/wire",
        Some("Reuters"),
        "r-1",
        T0 + 10 * S,
        title,
        text,
    );
    // Another publisher's copy: other id, same story (title differs in case and punctuation).
    let copy = synth::article(
        "feedly",
        "feed/portal",
        Some("Yahoo Finance"),
        "y-77",
        T0 + 70 * S,
        "BITCOIN ETF approved by regulators, in a landmark decision!",
        "something else entirely but the title matches this copy to the original story here",
    );
    // Two unrelated stories whose titles are one word: too short to match on.
    let b = synth::article(
        "feedly",
        "feed/x",
        Some("CoinDesk"),
        "c-1",
        T0 + 20 * S,
        "Bitcoin",
        "miners sell as the hash rate climbs to a new record high this month",
    );
    let c = synth::article(
        "feedly",
        "feed/y",
        Some("The Block"),
        "b-1",
        T0 + 30 * S,
        "Bitcoin",
        "options open interest hits a record before the quarterly expiry on friday",
    );
    let s_orig = score(&orig, &["BTC"], 0.9, 0.9);
    let s_copy = score(&copy, &["BTC"], 0.9, 0.9);
    let s_again = rescored(&orig, &["BTC"], 0.85, "model-2");
    let s_b = score(&b, &["BTC"], 0.4, 0.9);
    let s_c = score(&c, &["BTC"], 0.5, 0.9);
    let input = vec![
        ev_a(&orig),
        ev_a(&copy),
        ev_a(&b),
        ev_a(&c),
        ev_s(&s_copy),
        ev_s(&s_orig),
        ev_s(&s_again),
        ev_s(&s_b),
        ev_s(&s_c),
        ev_s(&s_orig), // the same score id again: a redelivery, not a story
    ];
    let out = fuse_batch(&tumbling(300), input).expect("fuse");
    assert_eq!(out.signals.len(), 1);
    let s = &out.signals[0];
    assert_eq!((s.scores_used, s.scores_rejected), (3, 2), "{s:?}");
    assert_eq!(
        s.meta.derived_from,
        vec![
            s_orig.meta.event_id.clone(),
            s_b.meta.event_id.clone(),
            s_c.meta.event_id.clone()
        ]
    );
    assert_eq!(s.sources_used, 3);
    assert!(s.weights_used.contains_key("reuters") && !s.weights_used.contains_key("yahoo finance"));
    assert_eq!(out.stats.syndicated, 2);
    assert_eq!(out.stats.duplicates, 1);
}

#[test]
fn weights_and_decay_by_hand() {
    let cfg = FusionConfig {
        windows: vec![WindowSpec::tumbling(600)],
        half_life_secs: 300.0,
        source_weights: [("Reuters".to_owned(), 2.0), ("blog".to_owned(), 0.5)]
            .into_iter()
            .collect(),
        ..FusionConfig::default()
    };
    // Window [T0, T0+600s). Reuters at +300 s: age 300 s, decay 0.5, weight 2.0 × 0.8 × 0.5 = 0.8.
    // Blog at +0 s: age 600 s, decay 0.25, weight 0.5 × 1.0 × 0.25 = 0.125.
    let r = article("w1", "Reuters", T0 + 300 * S);
    let b = article("w2", "blog", T0);
    let input = vec![
        ev_a(&r),
        ev_a(&b),
        ev_s(&score(&r, &["BTC"], 0.9, 0.8)),
        ev_s(&score(&b, &["BTC"], 0.2, 1.0)),
    ];
    let out = fuse_batch(&cfg, input).expect("fuse");
    assert_eq!(out.signals.len(), 1);
    let s = &out.signals[0];
    // fused = (0.8 × 0.9 + 0.125 × 0.2) / 0.925 = 0.745 / 0.925
    assert!(close(s.fused_score, 0.745 / 0.925), "{}", s.fused_score);
    assert!(close(s.fused_score, 0.805_405_405_405), "{}", s.fused_score);
    assert!(close(s.weights_used["reuters"], 0.8 / 0.925));
    assert!(close(s.weights_used["blog"], 0.125 / 0.925));
    // confidence = weighted mean confidence × (1 − e^(−n_eff/3)) × (1 − 2σ)
    let f: f64 = 0.745 / 0.925;
    let mean_conf: f64 = (0.8 * 0.8 + 0.125 * 1.0) / 0.925;
    let n_eff: f64 = 0.925 * 0.925 / (0.8 * 0.8 + 0.125 * 0.125);
    let sigma: f64 = ((0.8 * (0.9 - f) * (0.9 - f) + 0.125 * (0.2 - f) * (0.2 - f)) / 0.925).sqrt();
    let expected = mean_conf * (1.0 - (-n_eff / 3.0).exp()) * (1.0 - 2.0 * sigma);
    assert!(close(s.confidence, expected), "{} vs {expected}", s.confidence);
    assert!((s.confidence - 0.1524).abs() < 1e-3, "{}", s.confidence);
    assert_eq!((s.scores_used, s.sources_used), (2, 2));

    // Without the article join the sources are unknown and weigh the default 1.0:
    // weights 0.8 × 0.5 = 0.4 and 1.0 × 0.25 = 0.25.
    let cfg = FusionConfig {
        join_articles: false,
        ..cfg
    };
    let input = vec![
        ev_a(&r),
        ev_s(&score(&r, &["BTC"], 0.9, 0.8)),
        ev_s(&score(&b, &["BTC"], 0.2, 1.0)),
    ];
    let s = &fuse_batch(&cfg, input).expect("fuse").signals[0];
    assert!(
        close(s.fused_score, (0.4 * 0.9 + 0.25 * 0.2) / 0.65),
        "{}",
        s.fused_score
    );
    assert_eq!(s.weights_used.keys().collect::<Vec<_>>(), vec!["unknown"]);
}

#[test]
fn trend_against_earlier_windows() {
    let cfg = FusionConfig {
        trend_lookback: 1,
        trend_threshold: 0.05,
        ..tumbling(300)
    };
    let mut input = Vec::new();
    for (i, v) in [0.5, 0.7, 0.4, 0.42, 0.9].iter().enumerate() {
        let a = article(&format!("t{i}"), "reuters", T0 + (i as i64 * 300 + 5) * S);
        input.push(ev_a(&a));
        input.push(ev_s(&score(&a, &["BTC"], *v, 0.9)));
    }
    let out = fuse_batch(&cfg, input).expect("fuse");
    let trends: Vec<Trend> = out.signals.iter().map(|s| s.trend).collect();
    assert_eq!(
        trends,
        vec![
            Trend::Stable,
            Trend::Rising,
            Trend::Falling,
            Trend::Stable,
            Trend::Rising
        ]
    );
    // A threshold above every change makes every window stable.
    let flat = FusionConfig {
        trend_threshold: 0.6,
        ..cfg
    };
    let mut input = Vec::new();
    for (i, v) in [0.5, 0.7, 0.4].iter().enumerate() {
        let a = article(&format!("t{i}"), "reuters", T0 + (i as i64 * 300 + 5) * S);
        input.push(ev_s(&score(&a, &["BTC"], *v, 0.9)));
    }
    assert!(fuse_batch(&flat, input)
        .expect("fuse")
        .signals
        .iter()
        .all(|s| s.trend == Trend::Stable));
}

#[test]
fn multi_worker_gives_the_same_output_as_one_worker_and_the_plain_loop() {
    let input = synth::workload(8, 3000, 4, 2.0, 11);
    let one = fuse_batch(&FusionConfig::default(), input.clone()).expect("1 worker");
    let four = fuse_batch(
        &FusionConfig {
            workers: 4,
            ..FusionConfig::default()
        },
        input.clone(),
    )
    .expect("4 workers");
    let plain = fuse_baseline(&FusionConfig::default(), input).expect("plain loop");
    assert!(one.signals.len() > 100, "{}", one.signals.len());
    assert!(
        one.stats.syndicated > 0 && one.stats.outliers > 0,
        "{:?}",
        one.stats
    );
    assert_eq!(one.signals, four.signals);
    assert_eq!(one.late, four.late);
    assert_eq!(one.signals, plain.signals);
    assert_eq!(one.stats.signals, four.stats.signals);
}

#[test]
fn bench_reports_the_ratio_and_equal_outputs() {
    let report = auroraq_fusion::bench(&auroraq_fusion::BenchOptions {
        scores: 500,
        rounds: 1,
        ..auroraq_fusion::BenchOptions::default()
    })
    .expect("bench");
    assert_eq!(report.runs.len(), 3);
    assert!(report
        .runs
        .iter()
        .all(|r| r.identical_to_baseline && r.events_per_sec > 0.0));
    assert!(report.runs[1].ratio_to_baseline > 0.0);
}

/// A scenario for the arrival-order property: `(story, asset, value, confidence, model,
/// delay_secs, tiebreak)` per score.
type Draw = (u8, u8, f64, f64, u8, u8, u64);

fn order_scenario(draws: &[Draw], shuffled: bool, tick_ties: &[u64]) -> Vec<AnyEvent> {
    let assets = ["BTC", "ETH", "SOL"];
    let publishers = ["reuters", "bloomberg", "coindesk", "blog"];
    // (arrival time, tiebreak, event)
    let mut timed: Vec<(i64, u64, AnyEvent)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // A score id is a function of (story, model): repeats of a pair are redeliveries of the
    // first draw's score, with its content.
    let mut first: BTreeMap<(u8, u8), (u8, f64, f64)> = BTreeMap::new();
    for (i, &(story, asset, value, conf, model, delay, tie)) in draws.iter().enumerate() {
        let (asset, value, conf) = *first.entry((story, model)).or_insert((asset, value, conf));
        let published = T0 + story as i64 * 45 * S;
        // Every seventh story is a copy of the one before (same title and text).
        let base = if story % 7 == 0 && story > 0 {
            story - 1
        } else {
            story
        };
        let a = synth::article(
            "feedly",
            "feed/crypto",
            Some(publishers[story as usize % 4]),
            &format!("st{story}"),
            published,
            &format!("story {base} headline about the crypto markets today"),
            &format!("story {base} full text with plenty of words to hash for the check"),
        );
        if seen.insert(story) {
            timed.push((published, 0, AnyEvent::Article(a.clone())));
        }
        let mut s = score(&a, &[assets[asset as usize % 3]], value, conf);
        s.meta = Meta::derived(
            EventKind::SentimentScore,
            "sentiment",
            &[&a.meta],
            &format!("m{model}"),
            published,
            published + S,
        );
        let (at, tb) = if shuffled {
            (published + delay as i64 * S, tie)
        } else {
            (published, i as u64)
        };
        timed.push((at, tb, AnyEvent::SentimentScore(s)));
    }
    let last = T0 + 40 * 45 * S + 3600 * S + 400 * S;
    let mut k = 0usize;
    for sym in ["BTCUSDT", "ETHUSDT", "SOLUSDT"] {
        for (j, t) in ticks(sym, T0 - 600 * S, last, 10 * S).into_iter().enumerate() {
            let at = t.meta().ts_event;
            let tie = if shuffled {
                tick_ties[(j + k) % tick_ties.len()]
            } else {
                u64::MAX / 2
            };
            timed.push((at, tie, t));
        }
        k += 7;
    }
    timed.sort_by_key(|(at, tie, _)| (*at, *tie));
    timed.into_iter().map(|(_, _, e)| e).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any arrival order in which every score arrives within the grace period gives the same
    /// signals, field for field (ids included), on one worker or two.
    #[test]
    fn any_arrival_order_within_grace_gives_the_same_output(
        draws in prop::collection::vec(
            (0u8..40, 0u8..3, 0.0f64..1.0, 0.0f64..1.0, 0u8..3, 0u8..59, any::<u64>()),
            1..40,
        ),
        tick_ties in prop::collection::vec(any::<u64>(), 1..16),
    ) {
        let cfg = FusionConfig { close_at_end: false, ..FusionConfig::default() };
        let canonical = fuse_batch(&cfg, order_scenario(&draws, false, &tick_ties)).expect("fuse");
        let shuffled = fuse_batch(
            &FusionConfig { workers: 2, ..cfg.clone() },
            order_scenario(&draws, true, &tick_ties),
        ).expect("fuse");
        prop_assert!(!canonical.signals.is_empty());
        prop_assert!(canonical.late.is_empty() && shuffled.late.is_empty());
        prop_assert_eq!(&canonical.signals, &shuffled.signals);
    }
}

// ---------------------------------------------------------------------------------------------
// On the bus.

async fn start(
    bus: Arc<dyn Bus>,
    cfg: FusionConfig,
) -> (
    CancellationToken,
    Arc<FusionMetrics>,
    tokio::task::JoinHandle<Result<FusionStats, FusionError>>,
) {
    let stage = FusionStage::subscribe(bus, cfg).await.expect("fusion subscribes");
    let metrics = stage.metrics();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(stage.run(cancel.clone()));
    (cancel, metrics, handle)
}

/// Takes `n` events off a subscription (acking them), failing after `timeout`.
async fn take(sub: &mut Box<dyn Subscription>, n: usize, timeout: Duration) -> Vec<AnyEvent> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.len() < n {
        let left = timeout.saturating_sub(t0.elapsed());
        assert!(!left.is_zero(), "got {} of {n} events: {out:?}", out.len());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(d))) => {
                out.push(AnyEvent::decode(d.payload()).expect("decodes"));
                d.ack().await.expect("ack");
            }
            Ok(other) => panic!("subscription ended: {other:?}"),
            Err(_) => panic!("got {} of {n} events: {out:?}", out.len()),
        }
    }
    out
}

fn bus_cfg() -> FusionConfig {
    FusionConfig {
        windows: vec![WindowSpec::tumbling(60)],
        grace_secs: 5,
        batch_wait_ms: 5,
        startup_delay_ms: 0,
        ..FusionConfig::default()
    }
}

/// Articles and scores of the bus scenario: window [T0, T0+60s) has three BTC scores (one of
/// them also about ETH) and one ETH score; [T0+60s, T0+120s) one BTC score.
fn bus_news() -> (Vec<AnyEvent>, usize) {
    let mut ev = Vec::new();
    let items: [(&str, &str, i64, &[&str], f64); 5] = [
        ("e1", "reuters", 5, &["BTC"], 0.8),
        ("e2", "coindesk", 15, &["BTC", "ETH"], 0.7),
        ("e3", "blog", 25, &["BTC"], 0.6),
        ("e4", "reuters", 35, &["ETH"], 0.3),
        ("e5", "reuters", 75, &["BTC"], 0.9),
    ];
    for (id, origin, at, assets, v) in items {
        let a = article(id, origin, T0 + at * S);
        ev.push(ev_s(&score(&a, assets, v, 0.9)));
        ev.insert(0, ev_a(&a));
    }
    (ev, items.len())
}

fn bus_ticks() -> Vec<AnyEvent> {
    let mut t = ticks("BTCUSDT", T0, T0 + 130 * S, 5 * S);
    t.extend(ticks("ETHUSDT", T0, T0 + 130 * S, 5 * S));
    t
}

fn late_score() -> (Vec<AnyEvent>, SentimentScore) {
    let a = article("late1", "reuters", T0 + 40 * S);
    let s = score(&a, &["BTC"], 0.1, 0.9);
    (vec![ev_a(&a), ev_s(&s)], s)
}

/// Also without the trace context: the stage on the bus continues the score's trace with a span of
/// its own (deterministic too), the batch API does not.
fn without_wall_time(mut s: Vec<FusedSignal>) -> Vec<FusedSignal> {
    for x in &mut s {
        x.meta.ts_processed = None;
        x.meta.traceparent = None;
    }
    s.sort_by(|a, b| (a.window_end, &a.asset).cmp(&(b.window_end, &b.asset)));
    s
}

/// Runs the scenario on a fresh NATS stream; returns the fused signals and late dead letters.
async fn nats_scenario() -> (Vec<FusedSignal>, Vec<DeadLetter>, FusionStats) {
    let (nats, _guard) = nats_bus(4).await;
    let bus: Arc<dyn Bus> = nats;
    let mut fused = bus
        .subscribe(SubscribeOptions::new("tapfused", "sentiment.fused.>").transient())
        .await
        .expect("tap");
    let mut late = bus
        .subscribe(SubscribeOptions::new("taplate", "sentiment.late").transient())
        .await
        .expect("tap");
    let (cancel, metrics, handle) = start(bus.clone(), bus_cfg()).await;
    let (news, n) = bus_news();
    publish_events(&*bus, &news).await.expect("publish news");
    wait_until("scores to reach fusion", Duration::from_secs(20), || {
        metrics.scores_in.load(Ordering::Relaxed) as usize >= n
    })
    .await;
    publish_events(&*bus, &bus_ticks()).await.expect("publish ticks");
    let signals: Vec<FusedSignal> = take(&mut fused, 3, Duration::from_secs(30))
        .await
        .into_iter()
        .filter_map(|e| match e {
            AnyEvent::FusedSignal(s) => Some(s),
            _ => None,
        })
        .collect();
    // Once the first window has closed, a score for it is late.
    let (late_ev, late_s) = late_score();
    publish_events(&*bus, &late_ev).await.expect("publish late");
    let dls: Vec<DeadLetter> = take(&mut late, 1, Duration::from_secs(30))
        .await
        .into_iter()
        .filter_map(|e| match e {
            AnyEvent::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].reason, "late");
    assert_eq!(dls[0].original_id.as_deref(), Some(late_s.meta.event_id.as_str()));
    cancel.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("fusion stops")
        .expect("task")
        .expect("fusion ran");
    (signals, dls, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_nats_and_again_with_identical_signals() {
    let (first, late1, stats) = nats_scenario().await;
    assert_eq!(stats.late, 1);
    assert_eq!(stats.signals, 3);
    assert!(first
        .iter()
        .all(|s| s.meta.source == "fusion" && s.meta.ts_processed.is_some()));
    let first = without_wall_time(first);
    assert_eq!(
        first
            .iter()
            .map(|s| (s.asset.as_str(), s.window_start, s.scores_used))
            .collect::<Vec<_>>(),
        vec![("BTC", T0, 3), ("ETH", T0, 2), ("BTC", T0 + 60 * S, 1)]
    );

    // The same input through the batch API gives the same signals.
    let (news, _) = bus_news();
    let mut input = news;
    input.extend(bus_ticks());
    let batch_cfg = FusionConfig {
        close_at_end: false,
        ..bus_cfg()
    };
    let batch = fuse_batch(&batch_cfg, input).expect("fuse");
    assert_eq!(first, without_wall_time(batch.signals));

    // Running the same input again, on a fresh stream, gives identical signals and ids.
    let (second, late2, _) = nats_scenario().await;
    assert_eq!(first, without_wall_time(second));
    assert_eq!(late1[0].meta.event_id, late2[0].meta.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_scores_survive_a_restart_on_nats() {
    let (nats, _guard) = nats_bus(2).await;
    let bus: Arc<dyn Bus> = nats;
    let mut fused = bus
        .subscribe(SubscribeOptions::new("tapfused", "sentiment.fused.>").transient())
        .await
        .expect("tap");
    // On NATS, deliveries of a member that left come back after their ack wait: held scores
    // after `hold_ack_wait_secs`.
    let cfg = FusionConfig {
        hold_ack_wait_secs: Some(3),
        startup_delay_ms: 500,
        ..bus_cfg()
    };
    // First run: scores arrive, no market data, so no window closes; stop.
    let (cancel, metrics, handle) = start(bus.clone(), cfg.clone()).await;
    let (news, n) = bus_news();
    publish_events(&*bus, &news).await.expect("publish news");
    wait_until("scores", Duration::from_secs(20), || {
        metrics.scores_in.load(Ordering::Relaxed) as usize >= n
    })
    .await;
    cancel.cancel();
    let stats = handle.await.expect("task").expect("first run");
    assert_eq!(
        (stats.signals, stats.acked),
        (0, 0),
        "nothing closed, nothing acked: {stats:?}"
    );

    // Second run, same group: the unacked scores come back and the windows close.
    let (cancel, metrics, handle) = start(bus.clone(), cfg).await;
    wait_until("redelivered scores", Duration::from_secs(30), || {
        metrics.scores_in.load(Ordering::Relaxed) as usize >= n
    })
    .await;
    publish_events(&*bus, &bus_ticks()).await.expect("publish ticks");
    let signals = take(&mut fused, 3, Duration::from_secs(30)).await;
    let mut per_window: BTreeMap<(String, i64), i32> = BTreeMap::new();
    for e in signals {
        if let AnyEvent::FusedSignal(s) = e {
            per_window.insert((s.asset.clone(), s.window_start), s.scores_used);
        }
    }
    assert_eq!(
        per_window,
        [
            (("BTC".to_owned(), T0), 3),
            (("BTC".to_owned(), T0 + 60 * S), 1),
            (("ETH".to_owned(), T0), 2)
        ]
        .into_iter()
        .collect()
    );
    cancel.cancel();
    handle.await.expect("task").expect("second run");
}
