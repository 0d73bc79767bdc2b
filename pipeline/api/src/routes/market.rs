//! `/api/v1/market/...` and `/api/v1/news/...`: bars from PostgreSQL, latest prices from Redis
//! (the live view behind it), and the latest articles with their scores.

use std::collections::BTreeMap;
use std::sync::Arc;

use auroraq_util::time::rfc3339;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ErrorBody, HttpError};
use crate::http::{ApiPath, ApiQuery};
use crate::routes::sentiment::check_asset;
use crate::state::AppState;

/// A symbol: 1 to 32 of `[A-Za-z0-9_-]`, upper-cased (`BTCUSDT`).
pub fn check_symbol(symbol: &str) -> Result<String, HttpError> {
    check_asset(symbol)
        .map_err(|_| HttpError::invalid(format!("symbol {symbol:?} must be 1 to 32 letters or digits")))
}

/// Bar intervals the klines table holds.
const INTERVALS: &[&str] = &[
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OhlcvQuery {
    /// Bar interval, e.g. `1m`, `1h`, `1d` (default `1h`).
    pub interval: Option<String>,
    /// Earliest bar open time, RFC 3339.
    pub start: Option<String>,
    /// Latest bar open time, RFC 3339.
    pub end: Option<String>,
    /// Bars, 1 to 5,000 (default 500); the latest ones when more match.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Bar {
    pub open_time: String,
    pub close_time: String,
    /// Exact decimals, as strings.
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub exchange: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OhlcvResponse {
    pub symbol: String,
    pub interval: String,
    /// Oldest first.
    pub bars: Vec<Bar>,
}

fn check_time(t: &Option<String>, name: &str) -> Result<(), HttpError> {
    if let Some(t) = t {
        let ok = t.len() >= 10
            && t.len() <= 40
            && t.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-:.+ ".contains(&b));
        if !ok {
            return Err(HttpError::invalid(format!(
                "{name} must be an RFC 3339 time, e.g. 2025-05-01T00:00:00Z"
            )));
        }
    }
    Ok(())
}

/// Bars of a symbol from the `klines` table (closed bars only).
#[utoipa::path(get, path = "/api/v1/market/{symbol}/ohlcv", params(("symbol" = String, Path), OhlcvQuery),
    responses((status = 200, body = OhlcvResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "market")]
pub async fn ohlcv(
    State(st): State<Arc<AppState>>,
    ApiPath(symbol): ApiPath<String>,
    ApiQuery(q): ApiQuery<OhlcvQuery>,
) -> Result<Json<OhlcvResponse>, HttpError> {
    let symbol = check_symbol(&symbol)?;
    let interval = q.interval.unwrap_or_else(|| "1h".into());
    if !INTERVALS.contains(&interval.as_str()) {
        return Err(HttpError::invalid(format!(
            "interval must be one of {}",
            INTERVALS.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(HttpError::invalid("limit must be 1 to 5000"));
    }
    check_time(&q.start, "start")?;
    check_time(&q.end, "end")?;
    let Some(pg) = &st.backends.postgres else {
        return Err(HttpError::unavailable(
            "bar history needs PostgreSQL (--postgres-url)",
        ));
    };
    let sql = "SELECT * FROM (SELECT DISTINCT ON (open_time) (extract(epoch FROM open_time) * 1000000)::bigint AS o, \
                      (extract(epoch FROM close_time) * 1000000)::bigint, open::text, high::text, low::text, close::text, \
                      volume::text, exchange \
               FROM klines WHERE symbol = $1 AND \"interval\" = $2 AND closed \
                 AND ($3::text IS NULL OR open_time >= $3::timestamptz) AND ($4::text IS NULL OR open_time <= $4::timestamptz) \
               ORDER BY open_time DESC, ts DESC LIMIT $5) t ORDER BY o";
    let rows = pg
        .query(sql, &[&symbol, &interval, &q.start, &q.end, &limit])
        .await?;
    let bars = rows
        .iter()
        .map(|r| Bar {
            open_time: rfc3339(r.get::<_, i64>(0)),
            close_time: rfc3339(r.get::<_, i64>(1)),
            open: r.get(2),
            high: r.get(3),
            low: r.get(4),
            close: r.get(5),
            volume: r.get(6),
            exchange: r.get(7),
        })
        .collect();
    Ok(Json(OhlcvResponse {
        symbol,
        interval,
        bars,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MultipleQuery {
    /// Comma-separated symbols (1 to 50), e.g. `BTCUSDT,ETHUSDT`.
    pub symbols: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub symbol: String,
    pub exchange: Option<String>,
    /// Last trade or bar close, exact decimal string.
    pub price: Option<String>,
    pub bid: Option<String>,
    pub ask: Option<String>,
    /// Event time of the price, RFC 3339.
    pub ts: Option<String>,
    /// `redis` or `live`.
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MultipleResponse {
    /// By symbol; symbols with no known price are absent.
    pub prices: BTreeMap<String, PriceView>,
    /// Requested symbols with no known price.
    pub missing: Vec<String>,
}

/// Latest prices of several symbols: the Redis sink's latest state, else the API's live view.
#[utoipa::path(get, path = "/api/v1/market/multiple", params(MultipleQuery),
    responses((status = 200, body = MultipleResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "market")]
pub async fn multiple(
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<MultipleQuery>,
) -> Result<Json<MultipleResponse>, HttpError> {
    let symbols: Vec<String> = q
        .symbols
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(check_symbol)
        .collect::<Result<_, _>>()?;
    if symbols.is_empty() || symbols.len() > 50 {
        return Err(HttpError::invalid(
            "symbols must list 1 to 50 symbols, comma-separated",
        ));
    }
    let mut prices = BTreeMap::new();
    if let Some(redis) = &st.backends.redis {
        let pairs: Vec<String> = redis
            .cmd(redis::cmd("SMEMBERS").arg(format!("{}price:symbols", redis.prefix)))
            .await?;
        for sym in &symbols {
            let lower = sym.to_lowercase();
            let Some(pair) = pairs.iter().find(|p| {
                p.rsplit_once(':')
                    .is_some_and(|(_, s)| s.eq_ignore_ascii_case(sym) || s == lower)
            }) else {
                continue;
            };
            let price: BTreeMap<String, String> = redis
                .cmd(redis::cmd("HGETALL").arg(format!("{}price:latest:{pair}", redis.prefix)))
                .await?;
            let quote: BTreeMap<String, String> = redis
                .cmd(redis::cmd("HGETALL").arg(format!("{}quote:latest:{pair}", redis.prefix)))
                .await?;
            if price.is_empty() && quote.is_empty() {
                continue;
            }
            let ts = price
                .get("ts_event")
                .or_else(|| quote.get("ts_event"))
                .and_then(|t| t.parse::<i64>().ok())
                .map(rfc3339);
            prices.insert(
                sym.clone(),
                PriceView {
                    symbol: sym.clone(),
                    exchange: pair.split_once(':').map(|(e, _)| e.to_owned()),
                    price: price.get("price").cloned(),
                    bid: quote.get("bid_price").cloned(),
                    ask: quote.get("ask_price").cloned(),
                    ts,
                    source: "redis".into(),
                },
            );
        }
    }
    for sym in &symbols {
        if prices.contains_key(sym) {
            continue;
        }
        if let Some(v) = st.live.price(sym) {
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            prices.insert(
                sym.clone(),
                PriceView {
                    symbol: sym.clone(),
                    exchange: s("exchange"),
                    price: s("price").or_else(|| s("close")),
                    bid: s("bid_price"),
                    ask: s("ask_price"),
                    ts: v.get("ts_event").and_then(Value::as_i64).map(rfc3339),
                    source: "live".into(),
                },
            );
        }
    }
    let missing = symbols
        .iter()
        .filter(|s| !prices.contains_key(*s))
        .cloned()
        .collect();
    Ok(Json(MultipleResponse { prices, missing }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NewsQuery {
    /// Articles, 1 to 200 (default 20).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewsItem {
    pub article_id: String,
    pub title: Option<String>,
    pub source: String,
    pub url: Option<String>,
    /// Publication time, RFC 3339.
    pub published_at: String,
    pub label: String,
    pub sentiment_score: f64,
    pub confidence: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewsResponse {
    pub asset: String,
    /// Newest first.
    pub articles: Vec<NewsItem>,
    /// `postgres` or `live`.
    pub source: String,
}

/// The latest scored articles naming an asset (`CRYPTO`: any).
#[utoipa::path(get, path = "/api/v1/news/{asset}/latest", params(("asset" = String, Path), NewsQuery),
    responses((status = 200, body = NewsResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])), tag = "news")]
pub async fn news_latest(
    State(st): State<Arc<AppState>>,
    ApiPath(asset): ApiPath<String>,
    ApiQuery(q): ApiQuery<NewsQuery>,
) -> Result<Json<NewsResponse>, HttpError> {
    let asset = check_asset(&asset)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(HttpError::invalid("limit must be 1 to 200"));
    }
    if let Some(pg) = &st.backends.postgres {
        let any = asset == "CRYPTO";
        let rows = pg
            .query(
                "SELECT DISTINCT ON (s.ts, s.article_id) s.article_id, a.title, coalesce(a.origin, a.feed, s.source), a.url, \
                        (extract(epoch FROM s.ts) * 1000000)::bigint, s.label, s.sentiment_score, s.confidence \
                 FROM sentiment_asset_scores s LEFT JOIN articles a ON a.article_id = s.article_id \
                 WHERE ($1 OR s.asset = $2) ORDER BY s.ts DESC, s.article_id LIMIT $3",
                &[&any, &asset, &limit],
            )
            .await?;
        if !rows.is_empty() {
            let articles = rows
                .iter()
                .map(|r| NewsItem {
                    article_id: r.get(0),
                    title: r.get(1),
                    source: r.get(2),
                    url: r.get(3),
                    published_at: rfc3339(r.get::<_, i64>(4)),
                    label: r.get(5),
                    sentiment_score: r.get(6),
                    confidence: r.get(7),
                })
                .collect();
            return Ok(Json(NewsResponse {
                asset,
                articles,
                source: "postgres".into(),
            }));
        }
    }
    let articles = st
        .live
        .headlines(Some(&asset), limit as usize)
        .into_iter()
        .map(|h| NewsItem {
            article_id: h.article_id,
            title: Some(h.title),
            source: h.source,
            url: h.url,
            published_at: rfc3339(h.ts),
            label: h.label,
            sentiment_score: h.sentiment_score,
            confidence: h.confidence,
        })
        .collect();
    Ok(Json(NewsResponse {
        asset,
        articles,
        source: "live".into(),
    }))
}
