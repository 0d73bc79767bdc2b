//! Which table each event goes to, its columns, and its rows in PostgreSQL's binary COPY format.
//!
//! The column lists here must match `sql/common/tables.sql` (a test compares them with the
//! database after migrating).

use std::borrow::Cow;
use std::collections::HashSet;
use std::pin::Pin;

use auroraq_schemas::*;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::pgtypes::{clean, clean_all, clean_opt, Jsonb, Ts};

/// The tables the sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Trades,
    Klines,
    BookTickers,
    BookUpdates,
    Articles,
    SentimentScores,
    SentimentAssetScores,
    FusedSignals,
    OrderIntents,
    RiskDecisions,
    Orders,
    Fills,
    PortfolioSnapshots,
    Alerts,
    DeadLetters,
    FeedStatuses,
    MarkPrices,
    Liquidations,
}

const META_COLUMNS: [&str; 8] = [
    "ts",
    "event_id",
    "source",
    "ts_ingest",
    "ts_processed",
    "derived_from",
    "traceparent",
    "tracestate",
];

macro_rules! meta_types {
    ($($t:ident),* $(,)?) => {
        &[
            Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ,
            Type::TEXT_ARRAY, Type::TEXT, Type::TEXT,
            $(Type::$t),*
        ]
    };
}

const TRADES: &[Type] = meta_types!(TEXT, TEXT, TEXT, NUMERIC, NUMERIC, TEXT, BOOL);
const KLINES: &[Type] = meta_types!(
    TEXT,
    TEXT,
    TEXT,
    TIMESTAMPTZ,
    TIMESTAMPTZ,
    NUMERIC,
    NUMERIC,
    NUMERIC,
    NUMERIC,
    NUMERIC,
    NUMERIC,
    INT8,
    BOOL
);
const BOOK_TICKERS: &[Type] = meta_types!(TEXT, TEXT, INT8, NUMERIC, NUMERIC, NUMERIC, NUMERIC);
const BOOK_UPDATES: &[Type] = meta_types!(TEXT, TEXT, INT8, INT8, BOOL, JSONB, JSONB);
const ARTICLES: &[Type] = meta_types!(
    TEXT,
    TEXT,
    TEXT,
    TEXT,
    TEXT,
    TEXT,
    TEXT_ARRAY,
    TEXT_ARRAY,
    TIMESTAMPTZ
);
const SENTIMENT_SCORES: &[Type] =
    meta_types!(TEXT, TEXT_ARRAY, TEXT, JSONB, FLOAT8, FLOAT8, TEXT, TEXT, TEXT, BOOL);
const SENTIMENT_ASSET_SCORES: &[Type] = &[
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
];
const FUSED_SIGNALS: &[Type] = meta_types!(
    TEXT,
    TIMESTAMPTZ,
    TIMESTAMPTZ,
    FLOAT8,
    FLOAT8,
    INT4,
    INT4,
    INT4,
    JSONB,
    TEXT
);
const ORDER_INTENTS: &[Type] = meta_types!(TEXT, TEXT, TEXT, TEXT, NUMERIC, NUMERIC, NUMERIC, TEXT);
const RISK_DECISIONS: &[Type] = meta_types!(TEXT, TEXT, TEXT, TEXT, TEXT, NUMERIC, TEXT, JSONB);
const ORDERS: &[Type] = meta_types!(
    TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, NUMERIC, NUMERIC, NUMERIC, NUMERIC, NUMERIC, TEXT, TEXT
);
const FILLS: &[Type] = &[
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::TEXT,
];
const PORTFOLIO_SNAPSHOTS: &[Type] = meta_types!(TEXT, JSONB, NUMERIC, NUMERIC, NUMERIC, NUMERIC, JSONB);
const ALERTS: &[Type] = meta_types!(TEXT, TEXT, TEXT, TEXT, JSONB);
const DEAD_LETTERS: &[Type] = meta_types!(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, BYTEA, INT4);
const FEED_STATUSES: &[Type] = meta_types!(TEXT, TEXT, TEXT, TEXT, TEXT, JSONB);
const MARK_PRICES: &[Type] = meta_types!(TEXT, TEXT, NUMERIC, NUMERIC, NUMERIC, NUMERIC, TIMESTAMPTZ);
const LIQUIDATIONS: &[Type] = meta_types!(
    TEXT,
    TEXT,
    TEXT,
    TEXT,
    TEXT,
    NUMERIC,
    NUMERIC,
    NUMERIC,
    TEXT,
    NUMERIC,
    NUMERIC,
    TIMESTAMPTZ
);

impl Table {
    pub const ALL: [Table; 18] = [
        Table::Trades,
        Table::Klines,
        Table::BookTickers,
        Table::BookUpdates,
        Table::Articles,
        Table::SentimentScores,
        Table::SentimentAssetScores,
        Table::FusedSignals,
        Table::OrderIntents,
        Table::RiskDecisions,
        Table::Orders,
        Table::Fills,
        Table::PortfolioSnapshots,
        Table::Alerts,
        Table::DeadLetters,
        Table::FeedStatuses,
        Table::MarkPrices,
        Table::Liquidations,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Trades => "trades",
            Table::Klines => "klines",
            Table::BookTickers => "book_tickers",
            Table::BookUpdates => "book_updates",
            Table::Articles => "articles",
            Table::SentimentScores => "sentiment_scores",
            Table::SentimentAssetScores => "sentiment_asset_scores",
            Table::FusedSignals => "fused_signals",
            Table::OrderIntents => "order_intents",
            Table::RiskDecisions => "risk_decisions",
            Table::Orders => "orders",
            Table::Fills => "fills",
            Table::PortfolioSnapshots => "portfolio_snapshots",
            Table::Alerts => "alerts",
            Table::DeadLetters => "dead_letters",
            Table::FeedStatuses => "feed_statuses",
            Table::MarkPrices => "mark_prices",
            Table::Liquidations => "liquidations",
        }
    }

    /// The table an event kind goes to (order updates also go to `fills` when they carry one,
    /// sentiment scores to `sentiment_asset_scores`, once per asset).
    pub fn of(kind: EventKind) -> Table {
        match kind {
            EventKind::TradeTick => Table::Trades,
            EventKind::Kline => Table::Klines,
            EventKind::BookTicker => Table::BookTickers,
            EventKind::BookUpdate => Table::BookUpdates,
            EventKind::Article => Table::Articles,
            EventKind::SentimentScore => Table::SentimentScores,
            EventKind::FusedSignal => Table::FusedSignals,
            EventKind::OrderIntent => Table::OrderIntents,
            EventKind::RiskDecision => Table::RiskDecisions,
            EventKind::OrderUpdate => Table::Orders,
            EventKind::PortfolioSnapshot => Table::PortfolioSnapshots,
            EventKind::Alert => Table::Alerts,
            EventKind::DeadLetter => Table::DeadLetters,
            EventKind::FeedStatus => Table::FeedStatuses,
            EventKind::MarkPrice => Table::MarkPrices,
            EventKind::Liquidation => Table::Liquidations,
        }
    }

    /// The columns the sink writes, in order (every column but `inserted_at`).
    pub fn columns(self) -> Vec<&'static str> {
        let own: &[&str] = match self {
            Table::Trades => &[
                "exchange",
                "symbol",
                "trade_id",
                "price",
                "quantity",
                "aggressor",
                "aggregated",
            ],
            Table::Klines => &[
                "exchange",
                "symbol",
                "interval",
                "open_time",
                "close_time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_volume",
                "trades",
                "closed",
            ],
            Table::BookTickers => &[
                "exchange",
                "symbol",
                "update_id",
                "bid_price",
                "bid_qty",
                "ask_price",
                "ask_qty",
            ],
            Table::BookUpdates => &[
                "exchange",
                "symbol",
                "first_update_id",
                "final_update_id",
                "snapshot",
                "bids",
                "asks",
            ],
            Table::Articles => &[
                "article_id",
                "feed",
                "title",
                "text",
                "url",
                "origin",
                "keywords",
                "tickers",
                "ts_crawled",
            ],
            Table::SentimentScores => &[
                "article_id",
                "assets",
                "label",
                "probabilities",
                "sentiment_score",
                "confidence",
                "model_id",
                "model_sha256",
                "tokenizer_sha256",
                "truncated",
            ],
            Table::SentimentAssetScores => {
                return vec![
                    "ts",
                    "event_id",
                    "asset",
                    "source",
                    "ts_ingest",
                    "article_id",
                    "label",
                    "sentiment_score",
                    "confidence",
                    "model_id",
                ]
            }
            Table::FusedSignals => &[
                "asset",
                "window_start",
                "window_end",
                "fused_score",
                "confidence",
                "scores_used",
                "scores_rejected",
                "sources_used",
                "weights_used",
                "trend",
            ],
            Table::OrderIntents => &[
                "intent_id",
                "agent",
                "symbol",
                "side",
                "quantity",
                "notional",
                "limit_price",
                "reason",
            ],
            Table::RiskDecisions => &[
                "intent_id",
                "agent",
                "symbol",
                "side",
                "verdict",
                "approved_quantity",
                "reason",
                "checks",
            ],
            Table::Orders => &[
                "client_order_id",
                "venue_order_id",
                "venue",
                "agent",
                "symbol",
                "side",
                "status",
                "quantity",
                "filled_quantity",
                "last_fill_price",
                "last_fill_quantity",
                "fee",
                "fee_asset",
                "reason",
            ],
            Table::Fills => {
                return vec![
                    "ts",
                    "event_id",
                    "source",
                    "ts_ingest",
                    "client_order_id",
                    "venue_order_id",
                    "venue",
                    "agent",
                    "symbol",
                    "side",
                    "status",
                    "price",
                    "quantity",
                    "filled_quantity",
                    "fee",
                    "fee_asset",
                ]
            }
            Table::PortfolioSnapshots => &[
                "account",
                "positions",
                "cash",
                "equity",
                "realized_pnl",
                "unrealized_pnl",
                "performance",
            ],
            Table::Alerts => &["severity", "kind", "subject", "message", "attributes"],
            Table::DeadLetters => &[
                "stage",
                "reason",
                "error",
                "original_topic",
                "original_key",
                "original_id",
                "original_bytes",
                "attempts",
            ],
            Table::FeedStatuses => &["feed", "stream", "symbol", "status", "detail", "attributes"],
            Table::MarkPrices => &[
                "exchange",
                "symbol",
                "mark_price",
                "index_price",
                "estimated_settle_price",
                "funding_rate",
                "next_funding_time",
            ],
            Table::Liquidations => &[
                "exchange",
                "symbol",
                "side",
                "order_type",
                "time_in_force",
                "quantity",
                "price",
                "average_price",
                "status",
                "last_filled_quantity",
                "filled_quantity",
                "trade_time",
            ],
        };
        META_COLUMNS.iter().chain(own).copied().collect()
    }

    /// The columns' types, in the order of [`Table::columns`].
    pub fn types(self) -> &'static [Type] {
        match self {
            Table::Trades => TRADES,
            Table::Klines => KLINES,
            Table::BookTickers => BOOK_TICKERS,
            Table::BookUpdates => BOOK_UPDATES,
            Table::Articles => ARTICLES,
            Table::SentimentScores => SENTIMENT_SCORES,
            Table::SentimentAssetScores => SENTIMENT_ASSET_SCORES,
            Table::FusedSignals => FUSED_SIGNALS,
            Table::OrderIntents => ORDER_INTENTS,
            Table::RiskDecisions => RISK_DECISIONS,
            Table::Orders => ORDERS,
            Table::Fills => FILLS,
            Table::PortfolioSnapshots => PORTFOLIO_SNAPSHOTS,
            Table::Alerts => ALERTS,
            Table::DeadLetters => DEAD_LETTERS,
            Table::FeedStatuses => FEED_STATUSES,
            Table::MarkPrices => MARK_PRICES,
            Table::Liquidations => LIQUIDATIONS,
        }
    }

    /// The column list, quoted, for SQL.
    pub fn column_list(self) -> String {
        self.columns()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// PostgreSQL's earliest `timestamptz` (4714-11-24 BC), in epoch microseconds. Its latest is
/// beyond `i64` microseconds.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

fn ts_ok(t: Micros) -> bool {
    t >= PG_MIN_MICROS
}

/// Checks what PostgreSQL would reject in an event, so that one bad event becomes a dead letter
/// instead of failing its batch: timestamps out of `timestamptz`'s range.
pub fn check(ev: &AnyEvent) -> Result<(), String> {
    let m = ev.meta();
    let mut times = vec![("ts_event", m.ts_event), ("ts_ingest", m.ts_ingest)];
    if let Some(p) = m.ts_processed {
        times.push(("ts_processed", p));
    }
    match ev {
        AnyEvent::Kline(k) => {
            times.push(("open_time", k.open_time));
            times.push(("close_time", k.close_time));
        }
        AnyEvent::Article(a) => {
            if let Some(c) = a.ts_crawled {
                times.push(("ts_crawled", c));
            }
        }
        AnyEvent::FusedSignal(f) => {
            times.push(("window_start", f.window_start));
            times.push(("window_end", f.window_end));
        }
        AnyEvent::MarkPrice(m) => {
            if let Some(t) = m.next_funding_time {
                times.push(("next_funding_time", t));
            }
        }
        AnyEvent::Liquidation(l) => times.push(("trade_time", l.trade_time)),
        _ => {}
    }
    for (name, t) in times {
        if !ts_ok(t) {
            return Err(format!("{name} {t} µs is before PostgreSQL's earliest timestamp"));
        }
    }
    Ok(())
}

/// A batch's events by table, each event once (by key) however often the batch holds it.
#[derive(Default)]
pub struct Grouped<'a> {
    pub trades: Vec<&'a TradeTick>,
    pub klines: Vec<&'a Kline>,
    pub book_tickers: Vec<&'a BookTicker>,
    pub book_updates: Vec<&'a BookUpdate>,
    pub articles: Vec<&'a Article>,
    pub sentiment_scores: Vec<&'a SentimentScore>,
    pub fused_signals: Vec<&'a FusedSignal>,
    pub order_intents: Vec<&'a OrderIntent>,
    pub risk_decisions: Vec<&'a RiskDecision>,
    pub orders: Vec<&'a OrderUpdate>,
    pub portfolio_snapshots: Vec<&'a PortfolioSnapshot>,
    pub alerts: Vec<&'a Alert>,
    pub dead_letters: Vec<&'a DeadLetter>,
    pub feed_statuses: Vec<&'a FeedStatus>,
    pub mark_prices: Vec<&'a MarkPrice>,
    pub liquidations: Vec<&'a Liquidation>,
    /// Events left out as repeats within the batch.
    pub repeats: usize,
    /// Order updates with a last fill quantity but no price ([`FillClass::Priceless`]): in `orders`,
    /// left out of `fills` (and logged).
    pub priceless_fills: usize,
}

impl<'a> Grouped<'a> {
    pub fn of(events: impl IntoIterator<Item = &'a AnyEvent>) -> Grouped<'a> {
        let mut g = Grouped::default();
        let mut seen: HashSet<(i64, &str), foldhash::fast::RandomState> = HashSet::default();
        for ev in events {
            let m = ev.meta();
            if !seen.insert((m.ts_event, m.event_id.as_str())) {
                g.repeats += 1;
                continue;
            }
            match ev {
                AnyEvent::TradeTick(e) => g.trades.push(e),
                AnyEvent::Kline(e) => g.klines.push(e),
                AnyEvent::BookTicker(e) => g.book_tickers.push(e),
                AnyEvent::BookUpdate(e) => g.book_updates.push(e),
                AnyEvent::Article(e) => g.articles.push(e),
                AnyEvent::SentimentScore(e) => g.sentiment_scores.push(e),
                AnyEvent::FusedSignal(e) => g.fused_signals.push(e),
                AnyEvent::OrderIntent(e) => g.order_intents.push(e),
                AnyEvent::RiskDecision(e) => g.risk_decisions.push(e),
                AnyEvent::OrderUpdate(e) => {
                    if e.fill_class() == FillClass::Priceless {
                        g.priceless_fills += 1;
                        tracing::warn!(
                            event_id = %e.meta.event_id,
                            client_order_id = %e.client_order_id,
                            quantity = ?e.last_fill_quantity.map(|q| q.to_string()),
                            price = ?e.last_fill_price.map(|p| p.to_string()),
                            "order update with a fill quantity but no price: written to orders, not to fills"
                        );
                    }
                    g.orders.push(e)
                }
                AnyEvent::PortfolioSnapshot(e) => g.portfolio_snapshots.push(e),
                AnyEvent::Alert(e) => g.alerts.push(e),
                AnyEvent::DeadLetter(e) => g.dead_letters.push(e),
                AnyEvent::FeedStatus(e) => g.feed_statuses.push(e),
                AnyEvent::MarkPrice(e) => g.mark_prices.push(e),
                AnyEvent::Liquidation(e) => g.liquidations.push(e),
            }
        }
        g
    }

    /// The `ts` of every row `table` gets from this batch.
    pub fn times(&self, table: Table) -> Box<dyn Iterator<Item = Micros> + '_> {
        fn ts<'b, E: Event + 'b>(v: &'b [&'b E]) -> Box<dyn Iterator<Item = Micros> + 'b> {
            Box::new(v.iter().map(|e| e.meta().ts_event))
        }
        match table {
            Table::Trades => ts(&self.trades),
            Table::Klines => ts(&self.klines),
            Table::BookTickers => ts(&self.book_tickers),
            Table::BookUpdates => ts(&self.book_updates),
            Table::Articles => ts(&self.articles),
            Table::SentimentScores => ts(&self.sentiment_scores),
            Table::SentimentAssetScores => Box::new(
                self.sentiment_scores
                    .iter()
                    .filter(|s| !s.assets.is_empty())
                    .map(|s| s.meta.ts_event),
            ),
            Table::FusedSignals => ts(&self.fused_signals),
            Table::OrderIntents => ts(&self.order_intents),
            Table::RiskDecisions => ts(&self.risk_decisions),
            Table::Orders => ts(&self.orders),
            Table::Fills => Box::new(
                self.orders
                    .iter()
                    .filter(|o| o.is_fill())
                    .map(|o| o.meta.ts_event),
            ),
            Table::PortfolioSnapshots => ts(&self.portfolio_snapshots),
            Table::Alerts => ts(&self.alerts),
            Table::DeadLetters => ts(&self.dead_letters),
            Table::FeedStatuses => ts(&self.feed_statuses),
            Table::MarkPrices => ts(&self.mark_prices),
            Table::Liquidations => ts(&self.liquidations),
        }
    }

    /// Rows `table` gets from this batch.
    pub fn rows(&self, table: Table) -> usize {
        match table {
            Table::Trades => self.trades.len(),
            Table::Klines => self.klines.len(),
            Table::BookTickers => self.book_tickers.len(),
            Table::BookUpdates => self.book_updates.len(),
            Table::Articles => self.articles.len(),
            Table::SentimentScores => self.sentiment_scores.len(),
            Table::SentimentAssetScores => self
                .sentiment_scores
                .iter()
                .map(|s| distinct_assets(s).len())
                .sum(),
            Table::FusedSignals => self.fused_signals.len(),
            Table::OrderIntents => self.order_intents.len(),
            Table::RiskDecisions => self.risk_decisions.len(),
            Table::Orders => self.orders.len(),
            Table::Fills => self.orders.iter().filter(|o| o.is_fill()).count(),
            Table::PortfolioSnapshots => self.portfolio_snapshots.len(),
            Table::Alerts => self.alerts.len(),
            Table::DeadLetters => self.dead_letters.len(),
            Table::FeedStatuses => self.feed_statuses.len(),
            Table::MarkPrices => self.mark_prices.len(),
            Table::Liquidations => self.liquidations.len(),
        }
    }
}

/// A score's assets, each once, in order.
fn distinct_assets(s: &SentimentScore) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::with_capacity(s.assets.len());
    for a in &s.assets {
        if !out.contains(&a.as_str()) {
            out.push(a);
        }
    }
    out
}

/// The header columns of one row.
struct MetaRow<'a> {
    ts: Ts,
    event_id: Cow<'a, str>,
    source: Cow<'a, str>,
    ts_ingest: Ts,
    ts_processed: Option<Ts>,
    derived_from: Cow<'a, [String]>,
    traceparent: Option<Cow<'a, str>>,
    tracestate: Option<Cow<'a, str>>,
}

impl<'a> MetaRow<'a> {
    fn of(m: &'a Meta) -> Self {
        MetaRow {
            ts: Ts(m.ts_event),
            event_id: clean(&m.event_id),
            source: clean(&m.source),
            ts_ingest: Ts(m.ts_ingest),
            ts_processed: m.ts_processed.map(Ts),
            derived_from: clean_all(&m.derived_from),
            traceparent: clean_opt(&m.traceparent),
            tracestate: clean_opt(&m.tracestate),
        }
    }
}

/// Writes one row: the header columns, then the event's own.
macro_rules! row {
    ($w:expr, $m:expr; $($v:expr),* $(,)?) => {{
        let m = &$m;
        let derived: &[String] = &m.derived_from;
        $w.as_mut()
            .write(&[
                &m.ts, &m.event_id, &m.source, &m.ts_ingest, &m.ts_processed, &derived,
                &m.traceparent, &m.tracestate,
                $($v),*
            ])
            .await
    }};
}

fn dec(d: Dec) -> Decimal {
    d.0
}

fn opt_dec(d: Option<Dec>) -> Option<Decimal> {
    d.map(|d| d.0)
}

fn json_strings(m: &std::collections::BTreeMap<String, String>) -> Jsonb {
    let o: Map<String, Value> = m
        .iter()
        .map(|(k, v)| (clean(k).into_owned(), Value::String(clean(v).into_owned())))
        .collect();
    Jsonb::of(&Value::Object(o))
}

fn json_numbers(m: &std::collections::BTreeMap<String, f64>) -> Jsonb {
    let o: Map<String, Value> = m
        .iter()
        .map(|(k, v)| {
            let n = serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number);
            (clean(k).into_owned(), n)
        })
        .collect();
    Jsonb::of(&Value::Object(o))
}

fn json_levels(levels: &[Level]) -> Jsonb {
    Jsonb::of(&Value::Array(
        levels
            .iter()
            .map(|l| json!({"price": l.price.to_string(), "quantity": l.quantity.to_string()}))
            .collect(),
    ))
}

fn json_positions(positions: &[Position]) -> Jsonb {
    Jsonb::of(&Value::Array(
        positions
            .iter()
            .map(|p| {
                json!({
                    "symbol": clean(&p.symbol),
                    "quantity": p.quantity.to_string(),
                    "avg_price": p.avg_price.to_string(),
                    "market_price": p.market_price.to_string(),
                    "unrealized_pnl": p.unrealized_pnl.to_string(),
                })
            })
            .collect(),
    ))
}

type W<'w> = Pin<&'w mut BinaryCopyInWriter>;
type PgResult = Result<(), tokio_postgres::Error>;

/// Writes the rows `table` gets from `g` into a COPY of `table`'s columns.
pub async fn copy_rows(mut w: W<'_>, table: Table, g: &Grouped<'_>) -> PgResult {
    match table {
        Table::Trades => {
            for e in &g.trades {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.exchange), &clean(&e.symbol), &clean(&e.trade_id), &dec(e.price),
                    &dec(e.quantity), &e.aggressor.as_str(), &e.aggregated)?;
            }
        }
        Table::Klines => {
            for e in &g.klines {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.exchange), &clean(&e.symbol), &clean(&e.interval), &Ts(e.open_time),
                    &Ts(e.close_time), &dec(e.open), &dec(e.high), &dec(e.low), &dec(e.close),
                    &dec(e.volume), &opt_dec(e.quote_volume), &e.trades, &e.closed)?;
            }
        }
        Table::BookTickers => {
            for e in &g.book_tickers {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.exchange), &clean(&e.symbol), &e.update_id, &dec(e.bid_price),
                    &dec(e.bid_qty), &dec(e.ask_price), &dec(e.ask_qty))?;
            }
        }
        Table::BookUpdates => {
            for e in &g.book_updates {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.exchange), &clean(&e.symbol), &e.first_update_id, &e.final_update_id,
                    &e.snapshot, &json_levels(&e.bids), &json_levels(&e.asks))?;
            }
        }
        Table::Articles => {
            for e in &g.articles {
                let keywords: &[String] = &clean_all(&e.keywords);
                let tickers: &[String] = &clean_all(&e.tickers);
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.article_id), &clean(&e.feed), &clean_opt(&e.title), &clean(&e.text),
                    &clean_opt(&e.url), &clean_opt(&e.origin), &keywords, &tickers,
                    &e.ts_crawled.map(Ts))?;
            }
        }
        Table::SentimentScores => {
            for e in &g.sentiment_scores {
                let assets: &[String] = &clean_all(&e.assets);
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.article_id), &assets, &clean(&e.label), &json_numbers(&e.probabilities),
                    &e.sentiment_score, &e.confidence, &clean(&e.model_id), &clean(&e.model_sha256),
                    &clean(&e.tokenizer_sha256), &e.truncated)?;
            }
        }
        Table::SentimentAssetScores => {
            for e in &g.sentiment_scores {
                for asset in distinct_assets(e) {
                    w.as_mut()
                        .write(&[
                            &Ts(e.meta.ts_event),
                            &clean(&e.meta.event_id),
                            &clean(asset),
                            &clean(&e.meta.source),
                            &Ts(e.meta.ts_ingest),
                            &clean(&e.article_id),
                            &clean(&e.label),
                            &e.sentiment_score,
                            &e.confidence,
                            &clean(&e.model_id),
                        ])
                        .await?;
                }
            }
        }
        Table::FusedSignals => {
            for e in &g.fused_signals {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.asset), &Ts(e.window_start), &Ts(e.window_end), &e.fused_score,
                    &e.confidence, &e.scores_used, &e.scores_rejected, &e.sources_used,
                    &json_numbers(&e.weights_used), &e.trend.as_str())?;
            }
        }
        Table::OrderIntents => {
            for e in &g.order_intents {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.intent_id), &clean(&e.agent), &clean(&e.symbol), &e.side.as_str(),
                    &opt_dec(e.quantity), &opt_dec(e.notional), &opt_dec(e.limit_price), &clean(&e.reason))?;
            }
        }
        Table::RiskDecisions => {
            for e in &g.risk_decisions {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.intent_id), &clean(&e.agent), &clean(&e.symbol), &e.side.as_str(),
                    &e.verdict.as_str(), &opt_dec(e.approved_quantity), &clean(&e.reason),
                    &json_strings(&e.checks))?;
            }
        }
        Table::Orders => {
            for e in &g.orders {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.client_order_id), &clean_opt(&e.venue_order_id), &clean(&e.venue),
                    &clean(&e.agent), &clean(&e.symbol), &e.side.as_str(), &e.status.as_str(),
                    &dec(e.quantity), &dec(e.filled_quantity), &opt_dec(e.last_fill_price),
                    &opt_dec(e.last_fill_quantity), &opt_dec(e.fee), &clean_opt(&e.fee_asset),
                    &clean_opt(&e.reason))?;
            }
        }
        Table::Fills => {
            // Fills by the rule of `auroraq_schemas::routing` (the one `exec.fills` follows);
            // priceless ones were counted and logged by `Grouped::of`.
            for e in g.orders.iter().filter(|o| o.is_fill()) {
                let (Some(price), Some(qty)) = (e.last_fill_price, e.last_fill_quantity) else {
                    continue;
                };
                w.as_mut()
                    .write(&[
                        &Ts(e.meta.ts_event),
                        &clean(&e.meta.event_id),
                        &clean(&e.meta.source),
                        &Ts(e.meta.ts_ingest),
                        &clean(&e.client_order_id),
                        &clean_opt(&e.venue_order_id),
                        &clean(&e.venue),
                        &clean(&e.agent),
                        &clean(&e.symbol),
                        &e.side.as_str(),
                        &e.status.as_str(),
                        &dec(price),
                        &dec(qty),
                        &dec(e.filled_quantity),
                        &opt_dec(e.fee),
                        &clean_opt(&e.fee_asset),
                    ])
                    .await?;
            }
        }
        Table::PortfolioSnapshots => {
            for e in &g.portfolio_snapshots {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.account), &json_positions(&e.positions), &dec(e.cash), &dec(e.equity),
                    &dec(e.realized_pnl), &dec(e.unrealized_pnl), &json_numbers(&e.performance))?;
            }
        }
        Table::Alerts => {
            for e in &g.alerts {
                row!(w, MetaRow::of(&e.meta);
                    &e.severity.as_str(), &clean(&e.kind), &clean_opt(&e.subject),
                    &clean(&e.message), &json_strings(&e.attributes))?;
            }
        }
        Table::DeadLetters => {
            for e in &g.dead_letters {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.stage), &clean(&e.reason), &clean(&e.error), &clean(&e.original_topic),
                    &clean_opt(&e.original_key), &clean_opt(&e.original_id), &e.original_bytes.as_slice(),
                    &e.attempts)?;
            }
        }
        Table::FeedStatuses => {
            for e in &g.feed_statuses {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.feed), &clean(&e.stream), &clean_opt(&e.symbol), &e.status.as_str(),
                    &clean(&e.detail), &json_strings(&e.attributes))?;
            }
        }
        Table::MarkPrices => {
            for e in &g.mark_prices {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.exchange), &clean(&e.symbol), &dec(e.mark_price), &opt_dec(e.index_price),
                    &opt_dec(e.estimated_settle_price), &opt_dec(e.funding_rate),
                    &e.next_funding_time.map(Ts))?;
            }
        }
        Table::Liquidations => {
            for e in &g.liquidations {
                row!(w, MetaRow::of(&e.meta);
                    &clean(&e.exchange), &clean(&e.symbol), &e.side.as_str(), &clean(&e.order_type),
                    &clean(&e.time_in_force), &dec(e.quantity), &dec(e.price), &dec(e.average_price),
                    &clean(&e.status), &dec(e.last_filled_quantity), &dec(e.filled_quantity),
                    &Ts(e.trade_time))?;
            }
        }
    }
    Ok(())
}

/// A month as `year * 12 + month0`, from epoch microseconds (UTC).
pub fn month_index(micros: Micros) -> i64 {
    let days = micros.div_euclid(86_400_000_000);
    let (y, m, _) = civil_from_days(days);
    y * 12 + (m as i64 - 1)
}

/// `YYYY-MM-01` of a [`month_index`].
pub fn month_start(index: i64) -> String {
    let y = index.div_euclid(12);
    let m = index.rem_euclid(12) + 1;
    if y < 0 {
        // PostgreSQL spells years BC; such months only reach the default partition.
        format!("{:04}-{m:02}-01 BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-01")
    }
}

use auroraq_util::time::civil_from_days;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_one_type_per_column() {
        for t in Table::ALL {
            assert_eq!(t.columns().len(), t.types().len(), "{}", t.name());
        }
    }

    #[test]
    fn months_from_micros() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let nov_2023 = month_index(1_700_000_000_000_000);
        assert_eq!(month_start(nov_2023), "2023-11-01");
        assert_eq!(month_start(nov_2023 + 2), "2024-01-01");
        assert_eq!(month_start(month_index(0)), "1970-01-01");
        assert_eq!(month_start(month_index(-1)), "1969-12-01");
        // 2024-02-29 23:59:59.999999 is still February; the next microsecond is March.
        let mar_2024 = 1_709_251_200_000_000;
        assert_eq!(month_start(month_index(mar_2024 - 1)), "2024-02-01");
        assert_eq!(month_start(month_index(mar_2024)), "2024-03-01");
    }

    #[test]
    fn every_kind_has_a_table_and_samples_check() {
        for ev in samples::all() {
            let t = Table::of(ev.kind());
            assert!(Table::ALL.contains(&t));
            assert!(check(&ev).is_ok());
        }
        let mut t = samples::trade(1);
        t.meta.ts_event = i64::MIN;
        assert!(check(&AnyEvent::TradeTick(t)).is_err());
    }

    /// The `fills` table gets exactly the order updates the stage runner copies to `exec.fills`:
    /// every sample and every edge of the fill rule routes the same way in both.
    #[test]
    fn fill_rows_are_the_exec_fills_copies() {
        let mut evs = samples::all();
        for ev in samples::all() {
            if let AnyEvent::OrderUpdate(u) = ev {
                evs.extend(
                    routing::fill_edge_cases(&u)
                        .into_iter()
                        .map(|(u, _)| AnyEvent::OrderUpdate(u)),
                );
            }
        }
        let mut priceless = 0;
        for ev in &evs {
            let g = Grouped::of([ev]);
            let copied = auroraq_stage::fill_copy(ev).is_some();
            assert_eq!(g.rows(Table::Fills), usize::from(copied), "{ev:?}");
            assert_eq!(g.times(Table::Fills).count(), usize::from(copied), "{ev:?}");
            if let AnyEvent::OrderUpdate(u) = ev {
                assert_eq!(g.rows(Table::Orders), 1);
                assert_eq!(copied, u.is_fill());
                assert_eq!(
                    g.priceless_fills,
                    usize::from(u.fill_class() == FillClass::Priceless)
                );
                priceless += g.priceless_fills;
            }
        }
        assert!(priceless > 0, "the edge cases include priceless fills");
        let g = Grouped::of(&evs);
        let copies = evs
            .iter()
            .filter(|e| auroraq_stage::fill_copy(e).is_some())
            .count();
        assert_eq!(g.rows(Table::Fills), copies);
        assert_eq!(g.priceless_fills, priceless);
    }

    #[test]
    fn repeats_within_a_batch_are_left_out() {
        let evs: Vec<AnyEvent> = (0..3)
            .chain(0..3)
            .map(|i| AnyEvent::TradeTick(samples::trade(i)))
            .collect();
        let g = Grouped::of(&evs);
        assert_eq!(g.trades.len(), 3);
        assert_eq!(g.repeats, 3);
    }
}
