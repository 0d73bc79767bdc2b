//! Binance spot orders over signed REST, behind an explicit live-trading switch.
//!
//! Nothing here runs unless a [`LiveTrading`] exists, and it refuses to exist without an API
//! key, an API secret **and** `enable_live_trading = true` ([`LiveTrading::new`] says which is
//! missing). The key and secret never appear in `Debug` output, logs or errors. The default
//! base URL is Binance's spot **testnet**, `https://testnet.binance.vision`; trading real funds
//! needs `base_url = "https://api.binance.com"` on purpose.
//!
//! Requests are `SIGNED` endpoints: the parameters, then `recvWindow` and `timestamp`
//! (milliseconds), form the query string, and `signature` is the hex HMAC-SHA256 of exactly
//! that string with the secret; the key goes in the `X-MBX-APIKEY` header.
//!
//! Errors: a `-2010` (new order rejected, e.g. insufficient balance or a duplicate
//! `newClientOrderId`), `-2011` (cancel rejected) or `-2013` (no such order) is
//! [`BinanceOrderError::Rejected`]; a 429 or 418 is [`BinanceOrderError::RateLimited`] and makes
//! the client refuse every request until `Retry-After` has passed (an order is never re-sent
//! on its own: the caller decides, and the client order id keeps a re-send idempotent); a 5xx
//! or a transport failure leaves the order's fate unknown, so query it by its client order id.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auroraq_schemas::{Dec, OrderSide, OrderStatus};
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

/// Binance's spot testnet: the default.
pub const TESTNET_BASE_URL: &str = "https://testnet.binance.vision";
/// Binance spot, real funds.
pub const MAINNET_BASE_URL: &str = "https://api.binance.com";

/// HMAC-SHA256 (RFC 2104) of `msg` with `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(opad).chain_update(inner).finalize();
    outer.into()
}

/// Binance's `signature`: lower-case hex HMAC-SHA256 of the query string with the secret.
pub fn sign(secret: &str, query: &str) -> String {
    hmac_sha256(secret.as_bytes(), query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Percent-encodes a query value (everything but `A-Za-z0-9-_.~`).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&k=v`, values percent-encoded, in the given order.
pub fn query_string(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The live-trading switch and credentials, as configured. `Debug` shows whether the key and
/// secret are set, never their values.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveTradingConfig {
    /// Must be `true` to trade. Default false.
    pub enable_live_trading: bool,
    pub api_key: Option<String>,
    pub api_secret: Option<String>,
    /// Default [`TESTNET_BASE_URL`].
    pub base_url: String,
    /// `recvWindow`, milliseconds. Default 5000.
    pub recv_window_ms: u64,
    /// HTTP timeout, seconds. Default 10.
    pub timeout_secs: u64,
}

impl Default for LiveTradingConfig {
    fn default() -> Self {
        LiveTradingConfig {
            enable_live_trading: false,
            api_key: None,
            api_secret: None,
            base_url: TESTNET_BASE_URL.to_owned(),
            recv_window_ms: 5_000,
            timeout_secs: 10,
        }
    }
}

fn set(s: &Option<String>) -> &'static str {
    if s.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        "<set>"
    } else {
        "<missing>"
    }
}

impl fmt::Debug for LiveTradingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTradingConfig")
            .field("enable_live_trading", &self.enable_live_trading)
            .field("api_key", &set(&self.api_key))
            .field("api_secret", &set(&self.api_secret))
            .field("base_url", &self.base_url)
            .field("recv_window_ms", &self.recv_window_ms)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// Why live trading was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveTradingError {
    #[error("live trading refused: {}", .missing.join("; "))]
    Refused { missing: Vec<&'static str> },
    #[error("live trading: base_url {0:?} must start with https:// or http://")]
    BadBaseUrl(String),
    #[error("live trading: recv_window_ms must be in 1..=60000, not {0}")]
    BadRecvWindow(u64),
}

/// Proof that live trading was switched on with credentials: the only way to a
/// [`BinanceOrderClient`]. `Debug` never shows the key or secret.
#[derive(Clone)]
pub struct LiveTrading {
    api_key: String,
    api_secret: String,
    base_url: String,
    recv_window_ms: u64,
    timeout: Duration,
}

impl fmt::Debug for LiveTrading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTrading")
            .field("api_key", &"<redacted>")
            .field("api_secret", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("recv_window_ms", &self.recv_window_ms)
            .finish()
    }
}

impl LiveTrading {
    /// Refuses (saying what is missing) unless `api_key` and `api_secret` are set and not
    /// blank and `enable_live_trading` is true.
    pub fn new(cfg: LiveTradingConfig) -> Result<Self, LiveTradingError> {
        let mut missing = Vec::new();
        let key = cfg.api_key.filter(|k| !k.trim().is_empty());
        let secret = cfg.api_secret.filter(|s| !s.trim().is_empty());
        if key.is_none() {
            missing.push("api_key is missing");
        }
        if secret.is_none() {
            missing.push("api_secret is missing");
        }
        if !cfg.enable_live_trading {
            missing.push("enable_live_trading is not true");
        }
        let (Some(api_key), Some(api_secret), true) = (key, secret, cfg.enable_live_trading) else {
            return Err(LiveTradingError::Refused { missing });
        };
        let base_url = cfg.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(LiveTradingError::BadBaseUrl(base_url));
        }
        if !(1..=60_000).contains(&cfg.recv_window_ms) {
            return Err(LiveTradingError::BadRecvWindow(cfg.recv_window_ms));
        }
        Ok(LiveTrading {
            api_key,
            api_secret,
            base_url,
            recv_window_ms: cfg.recv_window_ms,
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn is_testnet(&self) -> bool {
        self.base_url == TESTNET_BASE_URL
    }
}

/// Market or limit.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderType {
    Market,
    /// Good-till-cancelled limit order.
    Limit {
        price: Decimal,
    },
}

/// A new order.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOrder {
    /// Binance's symbol, e.g. `BTCUSDT` (see [`binance_symbol`]).
    pub symbol: String,
    pub side: OrderSide,
    pub order_type: OrderType,
    pub quantity: Decimal,
    /// `newClientOrderId`: at most 36 of `[.A-Z:/a-z0-9_-]`.
    pub client_order_id: String,
}

/// `BTC-USDT`, `btc/usdt`, `BTC_USDT` → `BTCUSDT`.
pub fn binance_symbol(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// One fill in an order response.
#[derive(Clone, Debug, PartialEq)]
pub struct BinanceFill {
    pub price: Decimal,
    pub qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub trade_id: Option<i64>,
}

/// One trade of the account (`GET /api/v3/myTrades`): a fill of one of its orders.
#[derive(Clone, Debug, PartialEq)]
pub struct BinanceTrade {
    pub symbol: String,
    /// The trade id (a fill's `tradeId`).
    pub id: i64,
    pub order_id: i64,
    pub price: Decimal,
    pub qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    /// Milliseconds.
    pub time_ms: i64,
}

/// An order as Binance reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct BinanceOrder {
    pub symbol: String,
    pub order_id: i64,
    pub client_order_id: String,
    /// Binance's status (`NEW`, `PARTIALLY_FILLED`, `FILLED`, `CANCELED`, `REJECTED`,
    /// `EXPIRED`, ...).
    pub venue_status: String,
    pub status: OrderStatus,
    pub price: Decimal,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub cumulative_quote_qty: Decimal,
    /// Milliseconds.
    pub transact_time: Option<i64>,
    pub fills: Vec<BinanceFill>,
}

impl BinanceOrder {
    /// Average fill price, when something filled.
    pub fn avg_price(&self) -> Option<Decimal> {
        (self.executed_qty > Decimal::ZERO).then(|| self.cumulative_quote_qty / self.executed_qty)
    }
}

/// Binance's order status in AuroraQ's lifecycle.
pub fn map_status(s: &str) -> OrderStatus {
    match s {
        "PENDING_NEW" => OrderStatus::New,
        "NEW" => OrderStatus::Accepted,
        "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
        "FILLED" => OrderStatus::Filled,
        "REJECTED" => OrderStatus::Rejected,
        _ => OrderStatus::Cancelled, // CANCELED, PENDING_CANCEL, EXPIRED, EXPIRED_IN_MATCH
    }
}

/// Why an order call failed. None of them contains the key, the secret or the signature.
#[derive(Debug, thiserror::Error)]
pub enum BinanceOrderError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{method} {path}: {source} (the order's state is unknown: query it by client order id)")]
    Transport {
        method: &'static str,
        path: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path}: rejected by Binance: {msg} (code {code})")]
    Rejected {
        method: &'static str,
        path: &'static str,
        code: i64,
        msg: String,
    },
    #[error("{method} {path}: HTTP {status}: rate limited, retry after {retry_after:?}")]
    RateLimited {
        method: &'static str,
        path: &'static str,
        status: u16,
        retry_after: Duration,
    },
    #[error("{method} {path}: HTTP {status}: {msg} (code {code})")]
    Api {
        method: &'static str,
        path: &'static str,
        status: u16,
        code: i64,
        msg: String,
    },
    #[error(
        "{method} {path}: HTTP {status}: {msg} (the order's state is unknown: query it by client order id)"
    )]
    Unknown {
        method: &'static str,
        path: &'static str,
        status: u16,
        msg: String,
    },
    #[error("{method} {path}: response does not decode: {why}")]
    Decode {
        method: &'static str,
        path: &'static str,
        why: String,
    },
}

impl BinanceOrderError {
    /// Binance's error code, when it gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            BinanceOrderError::Rejected { code, .. } | BinanceOrderError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A rejection of a duplicate `newClientOrderId` (the order exists already).
    pub fn is_duplicate(&self) -> bool {
        matches!(self, BinanceOrderError::Rejected { code: -2010, msg, .. } if msg.to_ascii_lowercase().contains("duplicate"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFill {
    price: String,
    qty: String,
    #[serde(default)]
    commission: Option<String>,
    #[serde(default)]
    commission_asset: Option<String>,
    #[serde(default)]
    trade_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrder {
    symbol: String,
    order_id: i64,
    client_order_id: String,
    #[serde(default)]
    orig_client_order_id: Option<String>,
    #[serde(default)]
    transact_time: Option<i64>,
    #[serde(default)]
    update_time: Option<i64>,
    #[serde(default)]
    price: Option<String>,
    orig_qty: String,
    executed_qty: String,
    #[serde(default)]
    cummulative_quote_qty: Option<String>,
    status: String,
    #[serde(default)]
    fills: Vec<RawFill>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrade {
    symbol: String,
    id: i64,
    order_id: i64,
    price: String,
    qty: String,
    #[serde(default)]
    commission: Option<String>,
    #[serde(default)]
    commission_asset: Option<String>,
    time: i64,
}

impl RawTrade {
    fn into_trade(self) -> Result<BinanceTrade, String> {
        Ok(BinanceTrade {
            symbol: self.symbol,
            id: self.id,
            order_id: self.order_id,
            price: dec(&self.price, "price")?,
            qty: dec(&self.qty, "qty")?,
            commission: dec(self.commission.as_deref().unwrap_or("0"), "commission")?,
            commission_asset: self.commission_asset.unwrap_or_default(),
            time_ms: self.time,
        })
    }
}

#[derive(Deserialize)]
struct RawError {
    code: Option<i64>,
    msg: Option<String>,
}

fn dec(s: &str, what: &str) -> Result<Decimal, String> {
    Dec::parse(s).map(|d| d.0).map_err(|e| format!("{what}: {e}"))
}

impl RawOrder {
    fn into_order(self) -> Result<BinanceOrder, String> {
        let fills = self
            .fills
            .into_iter()
            .map(|f| {
                Ok(BinanceFill {
                    price: dec(&f.price, "fills.price")?,
                    qty: dec(&f.qty, "fills.qty")?,
                    commission: dec(f.commission.as_deref().unwrap_or("0"), "fills.commission")?,
                    commission_asset: f.commission_asset.unwrap_or_default(),
                    trade_id: f.trade_id,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(BinanceOrder {
            symbol: self.symbol,
            order_id: self.order_id,
            // A cancel answers with the cancel's own id in clientOrderId.
            client_order_id: self.orig_client_order_id.unwrap_or(self.client_order_id),
            status: map_status(&self.status),
            venue_status: self.status,
            price: dec(self.price.as_deref().unwrap_or("0"), "price")?,
            orig_qty: dec(&self.orig_qty, "origQty")?,
            executed_qty: dec(&self.executed_qty, "executedQty")?,
            cumulative_quote_qty: dec(
                self.cummulative_quote_qty.as_deref().unwrap_or("0"),
                "cummulativeQuoteQty",
            )?,
            transact_time: self.transact_time.or(self.update_time),
            fills,
        })
    }
}

/// A Binance spot order client (`POST`, `GET` and `DELETE /api/v3/order`, `GET
/// /api/v3/openOrders`, `GET /api/v3/myTrades`).
pub struct BinanceOrderClient {
    http: reqwest::Client,
    live: LiveTrading,
    /// No request before this instant (after a 429/418), and the status that caused it.
    gate: Mutex<Option<(Instant, u16)>>,
}

impl fmt::Debug for BinanceOrderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinanceOrderClient")
            .field("live", &self.live)
            .finish()
    }
}

const ORDER_PATH: &str = "/api/v3/order";
const OPEN_ORDERS_PATH: &str = "/api/v3/openOrders";
const MY_TRADES_PATH: &str = "/api/v3/myTrades";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl BinanceOrderClient {
    pub fn new(live: LiveTrading) -> Result<Self, BinanceOrderError> {
        let http = reqwest::Client::builder()
            .timeout(live.timeout)
            .user_agent(concat!("auroraq-execution/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BinanceOrderError::Client)?;
        Ok(BinanceOrderClient {
            http,
            live,
            gate: Mutex::new(None),
        })
    }

    pub fn live(&self) -> &LiveTrading {
        &self.live
    }

    /// The signed query string for `params` at `timestamp_ms`: the parameters, `recvWindow`,
    /// `timestamp`, then `signature` over everything before it.
    pub fn signed_query(&self, params: &[(&str, String)], timestamp_ms: i64) -> String {
        let mut all: Vec<(&str, String)> = params.to_vec();
        all.push(("recvWindow", self.live.recv_window_ms.to_string()));
        all.push(("timestamp", timestamp_ms.to_string()));
        let q = query_string(&all);
        let sig = sign(&self.live.api_secret, &q);
        format!("{q}&signature={sig}")
    }

    /// Until when requests are refused after a 429/418, if they are.
    pub fn blocked_for(&self) -> Option<Duration> {
        let g = self.gate.lock().ok()?;
        let (until, _) = (*g)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Sends a signed request to `path` and returns the body of a 2xx answer; see the module
    /// documentation for the errors.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &'static str,
        params: &[(&str, String)],
    ) -> Result<String, BinanceOrderError> {
        let m: &'static str = match method {
            reqwest::Method::POST => "POST",
            reqwest::Method::DELETE => "DELETE",
            _ => "GET",
        };
        if let Ok(g) = self.gate.lock() {
            if let Some((until, status)) = *g {
                if let Some(left) = until
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                {
                    return Err(BinanceOrderError::RateLimited {
                        method: m,
                        path,
                        status,
                        retry_after: left,
                    });
                }
            }
        }
        let url = format!(
            "{}{path}?{}",
            self.live.base_url,
            self.signed_query(params, now_ms())
        );
        debug!(method = m, path, "binance signed request");
        let resp = self
            .http
            .request(method, url)
            .header("X-MBX-APIKEY", &self.live.api_key)
            .send()
            .await
            .map_err(|e| BinanceOrderError::Transport {
                method: m,
                path,
                source: e.without_url(),
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.map_err(|e| BinanceOrderError::Transport {
            method: m,
            path,
            source: e.without_url(),
        })?;
        let api_err = || {
            serde_json::from_str::<RawError>(&body)
                .ok()
                .map(|e| (e.code.unwrap_or(0), e.msg.unwrap_or_default()))
                .unwrap_or_else(|| (0, body.chars().take(200).collect()))
        };
        match status {
            200..=299 => Ok(body),
            429 | 418 => {
                let wait = retry_after.unwrap_or(Duration::from_secs(if status == 418 { 120 } else { 60 }));
                warn!(method = m, path, status, retry_after = ?wait, "binance rate limit: requests paused");
                if let Ok(mut g) = self.gate.lock() {
                    *g = Some((Instant::now() + wait, status));
                }
                Err(BinanceOrderError::RateLimited {
                    method: m,
                    path,
                    status,
                    retry_after: wait,
                })
            }
            400..=499 => {
                let (code, msg) = api_err();
                warn!(method = m, path, status, code, %msg, "binance order error");
                if matches!(code, -2010 | -2011 | -2013) {
                    Err(BinanceOrderError::Rejected {
                        method: m,
                        path,
                        code,
                        msg,
                    })
                } else {
                    Err(BinanceOrderError::Api {
                        method: m,
                        path,
                        status,
                        code,
                        msg,
                    })
                }
            }
            _ => {
                let (_, msg) = api_err();
                warn!(method = m, path, status, %msg, "binance order: unknown outcome");
                Err(BinanceOrderError::Unknown {
                    method: m,
                    path,
                    status,
                    msg,
                })
            }
        }
    }

    /// A signed request to `/api/v3/order` whose answer is one order.
    async fn call(
        &self,
        method: reqwest::Method,
        params: &[(&str, String)],
    ) -> Result<BinanceOrder, BinanceOrderError> {
        let m: &'static str = match method {
            reqwest::Method::POST => "POST",
            reqwest::Method::DELETE => "DELETE",
            _ => "GET",
        };
        let body = self.request(method, ORDER_PATH, params).await?;
        serde_json::from_str::<RawOrder>(&body)
            .map_err(|e| e.to_string())
            .and_then(RawOrder::into_order)
            .map_err(|why| BinanceOrderError::Decode {
                method: m,
                path: ORDER_PATH,
                why,
            })
    }

    /// `GET /api/v3/openOrders`: the account's open orders, of `symbol` or (none) of every
    /// symbol.
    pub async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<BinanceOrder>, BinanceOrderError> {
        let p: Vec<(&str, String)> = symbol.map(|s| ("symbol", s.to_owned())).into_iter().collect();
        let body = self.request(reqwest::Method::GET, OPEN_ORDERS_PATH, &p).await?;
        let decode = |why: String| BinanceOrderError::Decode {
            method: "GET",
            path: OPEN_ORDERS_PATH,
            why,
        };
        serde_json::from_str::<Vec<RawOrder>>(&body)
            .map_err(|e| decode(e.to_string()))?
            .into_iter()
            .map(|o| o.into_order().map_err(decode))
            .collect()
    }

    /// `GET /api/v3/myTrades` of one order (`orderId`): its fills so far, oldest first.
    pub async fn order_trades(
        &self,
        symbol: &str,
        order_id: i64,
    ) -> Result<Vec<BinanceTrade>, BinanceOrderError> {
        let p = vec![
            ("symbol", symbol.to_owned()),
            ("orderId", order_id.to_string()),
            ("limit", "1000".to_owned()),
        ];
        let body = self.request(reqwest::Method::GET, MY_TRADES_PATH, &p).await?;
        let decode = |why: String| BinanceOrderError::Decode {
            method: "GET",
            path: MY_TRADES_PATH,
            why,
        };
        let mut trades = serde_json::from_str::<Vec<RawTrade>>(&body)
            .map_err(|e| decode(e.to_string()))?
            .into_iter()
            .map(|t| t.into_trade().map_err(decode))
            .collect::<Result<Vec<_>, _>>()?;
        trades.sort_by_key(|t| t.id);
        Ok(trades)
    }

    /// `POST /api/v3/order` with `newOrderRespType=FULL` (fills in the answer).
    pub async fn place_order(&self, o: &NewOrder) -> Result<BinanceOrder, BinanceOrderError> {
        let side = match o.side {
            OrderSide::Buy => "BUY",
            OrderSide::Sell => "SELL",
        };
        let mut p: Vec<(&str, String)> = vec![("symbol", o.symbol.clone()), ("side", side.to_owned())];
        match &o.order_type {
            OrderType::Market => p.push(("type", "MARKET".to_owned())),
            OrderType::Limit { price } => {
                p.push(("type", "LIMIT".to_owned()));
                p.push(("timeInForce", "GTC".to_owned()));
                p.push(("price", price.normalize().to_string()));
            }
        }
        p.push(("quantity", o.quantity.normalize().to_string()));
        p.push(("newClientOrderId", o.client_order_id.clone()));
        p.push(("newOrderRespType", "FULL".to_owned()));
        self.call(reqwest::Method::POST, &p).await
    }

    /// `GET /api/v3/order` by client order id.
    pub async fn query_order(
        &self,
        symbol: &str,
        client_order_id: &str,
    ) -> Result<BinanceOrder, BinanceOrderError> {
        let p = vec![
            ("symbol", symbol.to_owned()),
            ("origClientOrderId", client_order_id.to_owned()),
        ];
        self.call(reqwest::Method::GET, &p).await
    }

    /// `DELETE /api/v3/order` by client order id.
    pub async fn cancel_order(
        &self,
        symbol: &str,
        client_order_id: &str,
    ) -> Result<BinanceOrder, BinanceOrderError> {
        let p = vec![
            ("symbol", symbol.to_owned()),
            ("origClientOrderId", client_order_id.to_owned()),
        ];
        self.call(reqwest::Method::DELETE, &p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn status_mapping() {
        assert_eq!(map_status("NEW"), OrderStatus::Accepted);
        assert_eq!(map_status("FILLED"), OrderStatus::Filled);
        assert_eq!(map_status("PARTIALLY_FILLED"), OrderStatus::PartiallyFilled);
        assert_eq!(map_status("EXPIRED"), OrderStatus::Cancelled);
        assert_eq!(map_status("REJECTED"), OrderStatus::Rejected);
        assert_eq!(binance_symbol("btc-usdt"), "BTCUSDT");
    }
}
