//! Topic names: the one place that builds them.
//!
//! A topic is a dot-separated path of lower-case tokens, most general first, so that a consumer
//! can take a whole family with a wildcard (`market.trades.>`):
//!
//! | topic | events |
//! | --- | --- |
//! | `market.trades.<exchange>.<symbol>` | `TradeTick` |
//! | `market.klines.<exchange>.<symbol>` | `Kline` (the interval is a field) |
//! | `market.tickers.<exchange>.<symbol>` | `BookTicker` |
//! | `market.book.<exchange>.<symbol>` | `BookUpdate` |
//! | `market.mark_prices.<exchange>.<symbol>` | `MarkPrice` (futures mark price, index price, funding) |
//! | `market.liquidations.<exchange>.<symbol>` | `Liquidation` (futures forced liquidation orders) |
//! | `news.articles.<source>` | `Article` |
//! | `sentiment.scores` | `SentimentScore` |
//! | `sentiment.fused.<asset>` | `FusedSignal` |
//! | `agents.intents` | `OrderIntent` |
//! | `risk.decisions` | `RiskDecision` |
//! | `exec.orders` | `OrderUpdate` (every state change) |
//! | `exec.fills` | `OrderUpdate` (fills only) |
//! | `exec.portfolio` | `PortfolioSnapshot` |
//! | `alerts` | `Alert` |
//! | `dlq.<stage>` | `DeadLetter` from that stage |
//! | `feeds.status.<source>` | `FeedStatus`: connects, disconnects, gaps, resyncs, rate limits |
//! | `sentiment.late` | `DeadLetter`: scores that reached fusion after their window closed |
//!
//! Tokens are lower-cased and anything outside `[a-z0-9_-]` becomes `_`, so a symbol like
//! `BTC/USDT` or an exchange like `binance.us` cannot add levels to the path.
//! `*` matches one token and `>` (last) matches one or more, as in NATS.

/// The naming convention, for people: `(topic pattern, events)`. Tests check it against the
/// builders below.
pub const TABLE: &[(&str, &str)] = &[
    ("market.trades.<exchange>.<symbol>", "TradeTick"),
    ("market.klines.<exchange>.<symbol>", "Kline"),
    ("market.tickers.<exchange>.<symbol>", "BookTicker"),
    ("market.book.<exchange>.<symbol>", "BookUpdate"),
    ("market.mark_prices.<exchange>.<symbol>", "MarkPrice"),
    ("market.liquidations.<exchange>.<symbol>", "Liquidation"),
    ("news.articles.<source>", "Article"),
    ("sentiment.scores", "SentimentScore"),
    ("sentiment.fused.<asset>", "FusedSignal"),
    ("agents.intents", "OrderIntent"),
    ("risk.decisions", "RiskDecision"),
    ("exec.orders", "OrderUpdate (every state change)"),
    ("exec.fills", "OrderUpdate (fills only)"),
    ("exec.portfolio", "PortfolioSnapshot"),
    ("alerts", "Alert"),
    ("dlq.<stage>", "DeadLetter"),
    ("feeds.status.<source>", "FeedStatus"),
    (
        "sentiment.late",
        "DeadLetter (scores that reached fusion after their window closed)",
    ),
];

/// Lower-cases a name and replaces characters that are not `[a-z0-9_-]`, so it is one token.
pub fn token(s: &str) -> String {
    let t: String = s
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".to_owned()
    } else {
        t
    }
}

pub fn trades(exchange: &str, symbol: &str) -> String {
    format!("market.trades.{}.{}", token(exchange), token(symbol))
}

pub fn klines(exchange: &str, symbol: &str) -> String {
    format!("market.klines.{}.{}", token(exchange), token(symbol))
}

pub fn tickers(exchange: &str, symbol: &str) -> String {
    format!("market.tickers.{}.{}", token(exchange), token(symbol))
}

pub fn book(exchange: &str, symbol: &str) -> String {
    format!("market.book.{}.{}", token(exchange), token(symbol))
}

/// Futures mark prices (with index price and funding) of one contract.
pub fn mark_prices(exchange: &str, symbol: &str) -> String {
    format!("market.mark_prices.{}.{}", token(exchange), token(symbol))
}

/// Futures forced liquidation orders of one contract.
pub fn liquidations(exchange: &str, symbol: &str) -> String {
    format!("market.liquidations.{}.{}", token(exchange), token(symbol))
}

pub fn articles(source: &str) -> String {
    format!("news.articles.{}", token(source))
}

pub const SENTIMENT_SCORES: &str = "sentiment.scores";
/// Scores fusion received after their window had closed (as dead letters, reason `late`).
pub const SENTIMENT_LATE: &str = "sentiment.late";

pub fn fused(asset: &str) -> String {
    format!("sentiment.fused.{}", token(asset))
}

/// Where fusion announces its watermarks (on event time): a topic of the fused family that no
/// asset's signals use, so that a reader of `sentiment.fused.>` hears fusion's progress before
/// (and whatever) assets it has met. Only watermark messages go there.
pub const FUSED_PROGRESS: &str = "sentiment.fused.progress";

pub const ORDER_INTENTS: &str = "agents.intents";
pub const RISK_DECISIONS: &str = "risk.decisions";
pub const EXEC_ORDERS: &str = "exec.orders";
pub const EXEC_FILLS: &str = "exec.fills";
pub const PORTFOLIO: &str = "exec.portfolio";
pub const ALERTS: &str = "alerts";

/// Connection, gap and resync events of one source (see `FeedStatus`).
pub fn feed_status(source: &str) -> String {
    format!("feeds.status.{}", token(source))
}

pub fn dlq(stage: &str) -> String {
    format!("dlq.{}", token(stage))
}

/// Every market-data topic.
pub const ALL_MARKET: &str = "market.>";
/// Every article topic.
pub const ALL_ARTICLES: &str = "news.articles.>";
/// Every fused-signal topic.
pub const ALL_FUSED: &str = "sentiment.fused.>";
/// Every dead-letter topic.
pub const ALL_DLQ: &str = "dlq.>";

/// Checks that `topic` is a concrete topic (no wildcards, no empty tokens).
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("empty topic".into());
    }
    for t in topic.split('.') {
        if t.is_empty() {
            return Err(format!("topic {topic:?} has an empty token"));
        }
        if !t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(format!("topic {topic:?}: token {t:?} must be [a-z0-9_-]"));
        }
    }
    Ok(())
}

/// Checks a subscription filter: tokens as in a topic, or `*`, or a final `>`.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => return Err(format!("filter {filter:?}: '>' must be the last token")),
            _ => validate_topic(t).map_err(|e| format!("filter {filter:?}: {e}"))?,
        }
    }
    Ok(())
}

/// Whether `topic` matches `filter` (`*` one token, final `>` one or more).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('.');
    let mut t = topic.split('.');
    loop {
        match (f.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_names() {
        assert_eq!(trades("Binance", "BTCUSDT"), "market.trades.binance.btcusdt");
        assert_eq!(
            trades("binance.us", "BTC/USDT"),
            "market.trades.binance_us.btc_usdt"
        );
        assert_eq!(fused("BTC"), "sentiment.fused.btc");
        assert_eq!(
            mark_prices("binance_futures", "BTCUSDT"),
            "market.mark_prices.binance_futures.btcusdt"
        );
        assert_eq!(
            liquidations("binance_futures", "BTCUSDT"),
            "market.liquidations.binance_futures.btcusdt"
        );
        assert!(matches(ALL_MARKET, &mark_prices("x", "y")));
        assert!(matches(ALL_MARKET, &liquidations("x", "y")));
        assert_eq!(dlq("sentiment"), "dlq.sentiment");
        assert_eq!(articles(""), "news.articles._");
        for t in [
            trades("a", "b"),
            klines("a", "b"),
            tickers("a", "b"),
            book("a", "b"),
            mark_prices("a", "b"),
            liquidations("a", "b"),
            articles("x"),
        ] {
            validate_topic(&t).unwrap();
        }
    }

    #[test]
    fn table_matches_builders() {
        let built = [
            trades("E", "S"),
            klines("E", "S"),
            tickers("E", "S"),
            book("E", "S"),
            mark_prices("E", "S"),
            liquidations("E", "S"),
            articles("E"),
            SENTIMENT_SCORES.to_owned(),
            fused("E"),
            ORDER_INTENTS.to_owned(),
            RISK_DECISIONS.to_owned(),
            EXEC_ORDERS.to_owned(),
            EXEC_FILLS.to_owned(),
            PORTFOLIO.to_owned(),
            ALERTS.to_owned(),
            dlq("E"),
            feed_status("E"),
            SENTIMENT_LATE.to_owned(),
        ];
        assert_eq!(built.len(), TABLE.len());
        for ((pattern, _), b) in TABLE.iter().zip(built) {
            let generic: Vec<&str> = pattern.split('.').collect();
            let concrete: Vec<&str> = b.split('.').collect();
            assert_eq!(generic.len(), concrete.len(), "{pattern} vs {b}");
            for (g, c) in generic.iter().zip(concrete) {
                assert!(g.starts_with('<') || *g == c, "{pattern} vs {b}");
            }
        }
    }

    #[test]
    fn wildcards() {
        assert!(matches("market.>", "market.trades.binance.btcusdt"));
        assert!(!matches("market.>", "market"));
        assert!(matches(
            "market.*.binance.btcusdt",
            "market.trades.binance.btcusdt"
        ));
        assert!(!matches("market.*.binance", "market.trades.binance.btcusdt"));
        assert!(matches("alerts", "alerts"));
        assert!(!matches("alerts", "alerts.x"));
        assert!(validate_filter("market.>").is_ok());
        assert!(validate_filter("market.>.x").is_err());
        assert!(validate_topic("Market.x").is_err());
        assert!(validate_topic("a..b").is_err());
    }
}
