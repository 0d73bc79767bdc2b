//! One realistic event of each kind, for tests, benchmarks and documentation.

use std::collections::BTreeMap;

use crate::codec::EventKind;
use crate::decimal::Dec;
use crate::events::*;
use crate::meta::Meta;
use crate::AnyEvent;

fn d(s: &str) -> Dec {
    // Literals below are valid decimals; a typo here is a test failure, not a runtime path.
    Dec::parse(s).unwrap_or_else(|e| panic!("sample decimal: {e}"))
}

/// A trade as Binance reports one for BTCUSDT.
pub fn trade(seq: u64) -> TradeTick {
    let ts = 1_700_000_000_000_000 + seq as i64 * 1000;
    TradeTick {
        meta: Meta::raw(
            EventKind::TradeTick,
            "binance",
            &format!("BTCUSDT:{seq}"),
            ts,
            ts + 350,
        ),
        exchange: "binance".into(),
        symbol: "BTCUSDT".into(),
        trade_id: seq.to_string(),
        price: d("64123.45000000"),
        quantity: d("0.00150000"),
        aggressor: Side::Buy,
        aggregated: false,
    }
}

/// A mark price as Binance's USDⓈ-M futures documentation shows one ("Mark Price Stream").
pub fn mark_price() -> MarkPrice {
    MarkPrice {
        meta: Meta::raw(
            EventKind::MarkPrice,
            "binance_futures",
            "BTCUSDT:1562305380000",
            1_562_305_380_000_000,
            1_562_305_380_000_350,
        ),
        exchange: "binance_futures".into(),
        symbol: "BTCUSDT".into(),
        mark_price: d("11794.15000000"),
        index_price: Some(d("11784.62659091")),
        estimated_settle_price: Some(d("11784.25641265")),
        funding_rate: Some(d("0.00038167")),
        next_funding_time: Some(1_562_306_400_000_000),
    }
}

/// A liquidation as Binance's USDⓈ-M futures documentation shows one ("Liquidation Order Streams").
pub fn liquidation() -> Liquidation {
    Liquidation {
        meta: Meta::raw(
            EventKind::Liquidation,
            "binance_futures",
            "BTCUSDT:1568014460893:1568014460893",
            1_568_014_460_893_000,
            1_568_014_460_893_420,
        ),
        exchange: "binance_futures".into(),
        symbol: "BTCUSDT".into(),
        side: OrderSide::Sell,
        order_type: "LIMIT".into(),
        time_in_force: "IOC".into(),
        quantity: d("0.014"),
        price: d("9910"),
        average_price: d("9910"),
        status: "FILLED".into(),
        last_filled_quantity: d("0.014"),
        filled_quantity: d("0.014"),
        trade_time: 1_568_014_460_893_000,
    }
}

/// One of each event kind.
pub fn all() -> Vec<AnyEvent> {
    let t = trade(1);
    let art_meta = Meta::raw(
        EventKind::Article,
        "feedly",
        "feed/1/entry/9",
        1_700_000_000_000_000,
        1_700_000_001_000_000,
    );
    let score_meta = Meta::derived(
        EventKind::SentimentScore,
        "sentiment",
        &[&art_meta],
        "",
        art_meta.ts_event,
        art_meta.ts_ingest + 9000,
    );
    let fused_meta = Meta::derived(
        EventKind::FusedSignal,
        "fusion",
        &[&score_meta],
        "BTC",
        1_700_000_300_000_000,
        1_700_000_300_100_000,
    );
    let intent_meta = Meta::derived(
        EventKind::OrderIntent,
        "agent.auroraq",
        &[&fused_meta],
        "",
        fused_meta.ts_event,
        fused_meta.ts_event + 10,
    );
    let risk_meta = Meta::derived(
        EventKind::RiskDecision,
        "risk",
        &[&intent_meta],
        "",
        intent_meta.ts_event,
        intent_meta.ts_event + 20,
    );
    let order_meta = Meta::derived(
        EventKind::OrderUpdate,
        "execution.paper",
        &[&risk_meta],
        "filled",
        risk_meta.ts_event,
        risk_meta.ts_event + 30,
    );
    let mut probs = BTreeMap::new();
    probs.insert("positive".to_string(), 0.81);
    probs.insert("negative".to_string(), 0.04);
    probs.insert("neutral".to_string(), 0.15);
    let mut weights = BTreeMap::new();
    weights.insert("feedly".to_string(), 1.0);
    vec![
        AnyEvent::TradeTick(t.clone()),
        AnyEvent::Kline(Kline {
            meta: Meta::raw(
                EventKind::Kline,
                "binance",
                "BTCUSDT:1m:1700000000000",
                1_700_000_059_999_000,
                1_700_000_060_000_000,
            ),
            exchange: "binance".into(),
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time: 1_700_000_000_000_000,
            close_time: 1_700_000_059_999_000,
            open: d("64100.00"),
            high: d("64150.10"),
            low: d("64090.00"),
            close: d("64123.45"),
            volume: d("12.345"),
            quote_volume: Some(d("791234.5678")),
            trades: Some(1234),
            closed: true,
        }),
        AnyEvent::BookTicker(BookTicker {
            meta: Meta::raw(
                EventKind::BookTicker,
                "binance",
                "BTCUSDT:400900217",
                t.meta.ts_event,
                t.meta.ts_ingest,
            ),
            exchange: "binance".into(),
            symbol: "BTCUSDT".into(),
            update_id: Some(400_900_217),
            bid_price: d("64123.44"),
            bid_qty: d("1.5"),
            ask_price: d("64123.45"),
            ask_qty: d("0.25"),
        }),
        AnyEvent::BookUpdate(BookUpdate {
            meta: Meta::raw(
                EventKind::BookUpdate,
                "binance",
                "BTCUSDT:157:160",
                t.meta.ts_event,
                t.meta.ts_ingest,
            ),
            exchange: "binance".into(),
            symbol: "BTCUSDT".into(),
            first_update_id: 157,
            final_update_id: 160,
            snapshot: false,
            bids: vec![Level {
                price: d("0.0024"),
                quantity: d("10"),
            }],
            asks: vec![Level {
                price: d("0.0026"),
                quantity: d("0"),
            }],
        }),
        AnyEvent::MarkPrice(mark_price()),
        AnyEvent::Liquidation(liquidation()),
        AnyEvent::Article(Article {
            meta: art_meta.clone(),
            article_id: "feed/1/entry/9".into(),
            feed: "feed/1".into(),
            title: Some("Bitcoin rallies as ETF inflows surge".into()),
            text: "Bitcoin rose 5% on Tuesday as inflows into spot ETFs hit a record.".into(),
            url: Some("https://example.com/btc".into()),
            origin: Some("Example News".into()),
            keywords: vec!["crypto".into()],
            tickers: vec!["BTC".into()],
            ts_crawled: Some(1_700_000_000_500_000),
        }),
        AnyEvent::SentimentScore(SentimentScore {
            meta: score_meta.clone(),
            article_id: "feed/1/entry/9".into(),
            assets: vec!["BTC".into()],
            label: "positive".into(),
            probabilities: probs,
            sentiment_score: 0.885,
            confidence: 0.81,
            model_id: "auroraq-minilm-fpb".into(),
            model_sha256: "0".repeat(64),
            tokenizer_sha256: "1".repeat(64),
            truncated: false,
        }),
        AnyEvent::FusedSignal(FusedSignal {
            meta: fused_meta,
            asset: "BTC".into(),
            window_start: 1_700_000_000_000_000,
            window_end: 1_700_000_300_000_000,
            fused_score: 0.8,
            confidence: 0.9,
            scores_used: 3,
            scores_rejected: 1,
            sources_used: 2,
            weights_used: weights,
            trend: Trend::Rising,
        }),
        AnyEvent::OrderIntent(OrderIntent {
            meta: intent_meta,
            intent_id: "i-1".into(),
            agent: "auroraq".into(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            quantity: Some(d("0.01")),
            notional: None,
            limit_price: None,
            reason: "fused 0.80 > 0.70".into(),
        }),
        AnyEvent::RiskDecision(RiskDecision {
            meta: risk_meta,
            intent_id: "i-1".into(),
            agent: "auroraq".into(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            verdict: Verdict::Resized,
            approved_quantity: Some(d("0.005")),
            reason: "max notional".into(),
            checks: BTreeMap::from([("max_notional".to_string(), "resized".to_string())]),
        }),
        AnyEvent::OrderUpdate(OrderUpdate {
            meta: order_meta.clone(),
            client_order_id: "aq-1".into(),
            venue_order_id: Some("p-1".into()),
            venue: "paper".into(),
            agent: "auroraq".into(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Buy,
            status: OrderStatus::Filled,
            quantity: d("0.005"),
            filled_quantity: d("0.005"),
            last_fill_price: Some(d("64123.45")),
            last_fill_quantity: Some(d("0.005")),
            fee: Some(d("0.32061725")),
            fee_asset: Some("USDT".into()),
            reason: None,
        }),
        AnyEvent::PortfolioSnapshot(PortfolioSnapshot {
            meta: Meta::derived(
                EventKind::PortfolioSnapshot,
                "execution.paper",
                &[&order_meta],
                "",
                order_meta.ts_event,
                order_meta.ts_event + 1,
            ),
            account: "auroraq".into(),
            positions: vec![Position {
                symbol: "BTCUSDT".into(),
                quantity: d("0.005"),
                avg_price: d("64123.45"),
                market_price: d("64130.00"),
                unrealized_pnl: d("0.03275"),
            }],
            cash: d("99679.06"),
            equity: d("100000.00"),
            realized_pnl: d("0"),
            unrealized_pnl: d("0.03275"),
            performance: BTreeMap::from([("sharpe".to_string(), 1.2)]),
        }),
        AnyEvent::Alert(Alert {
            meta: Meta::derived(
                EventKind::Alert,
                "risk",
                &[&order_meta],
                "drawdown",
                order_meta.ts_event,
                order_meta.ts_event + 2,
            ),
            severity: Severity::Warning,
            kind: "limit_breach".into(),
            subject: Some("auroraq".into()),
            message: "drawdown 9.5% is near the 10% limit".into(),
            attributes: BTreeMap::new(),
        }),
        AnyEvent::FeedStatus(FeedStatus {
            meta: Meta::raw(
                EventKind::FeedStatus,
                "binance",
                "btcusdt@depth:gap:1027024",
                1_700_000_000_500_000,
                1_700_000_000_500_000,
            ),
            feed: "binance".into(),
            stream: "btcusdt@depth@100ms".into(),
            symbol: Some("BTCUSDT".into()),
            status: FeedState::Gap,
            detail: "depth update 1027026 follows 1027024: 1 update missed; resyncing".into(),
            attributes: BTreeMap::from([
                ("expected".to_string(), "1027025".to_string()),
                ("received".to_string(), "1027026".to_string()),
            ]),
        }),
        AnyEvent::DeadLetter(DeadLetter {
            meta: Meta::derived(EventKind::DeadLetter, "sentiment", &[], "x", 1, 2),
            stage: "sentiment".into(),
            reason: "decode_error".into(),
            error: "bad magic bytes".into(),
            original_topic: "news.articles.feedly".into(),
            original_key: None,
            original_id: Some("abc".into()),
            original_bytes: vec![0, 159, 146, 150, 255],
            attempts: 1,
        }),
    ]
}
