//! Settings of the live connector, the REST client and the klines backfill, with Binance's
//! defaults; stream and interval names as Binance spells them. [`BinanceSettings`] is the
//! `[binance]` configuration section they are built from.

use std::path::PathBuf;
use std::time::Duration;

use auroraq_schemas::Micros;
use serde::{Deserialize, Serialize};

/// Exponential backoff with jitter (attempt `n` waits a random time in `[d/2, d]` where
/// `d = min(max, initial · 2ⁿ)`): the workspace's one [`auroraq_util::Backoff`].
pub use auroraq_util::Backoff;

/// Binance's public market-data endpoints.
pub const DEFAULT_WS_BASE: &str = "wss://stream.binance.com:9443";
pub const DEFAULT_REST_BASE: &str = "https://api.binance.com";
/// Binance.US: the spot protocol on other hosts.
pub const US_WS_BASE: &str = "wss://stream.binance.us:9443";
pub const US_REST_BASE: &str = "https://api.binance.us";
/// Binance USDⓈ-M futures.
pub const FUTURES_WS_BASE: &str = "wss://fstream.binance.com";
pub const FUTURES_REST_BASE: &str = "https://fapi.binance.com";

/// Which Binance market a connection speaks to. It decides the default endpoints and exchange
/// name, the REST paths, the request-weight budget, the depth limits allowed and the order-book
/// sync rule ([`DepthRule`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Venue {
    /// Binance spot (`binance`): `stream.binance.com:9443`, `api.binance.com/api/v3`.
    #[default]
    #[serde(rename = "binance")]
    Spot,
    /// Binance.US (`binance_us`): the spot protocol at `stream.binance.us:9443`,
    /// `api.binance.us/api/v3`.
    #[serde(rename = "binance_us", alias = "binance.us")]
    Us,
    /// Binance USDⓈ-M futures (`binance_futures`): `fstream.binance.com`,
    /// `fapi.binance.com/fapi/v1`; depth diffs carry `pu` (the previous diff's `u`).
    #[serde(rename = "binance_futures", alias = "binance-futures")]
    UsdmFutures,
}

/// How depth diffs chain onto each other and onto a snapshot (see [`crate::book`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DepthRule {
    /// Spot (Binance, Binance.US): update ids are contiguous; the first diff applied straddles
    /// `lastUpdateId + 1`, each next one starts at the previous `u + 1`.
    #[default]
    Spot,
    /// USDⓈ-M futures: the first diff applied has `U <= lastUpdateId <= u`, each next one has
    /// `pu` equal to the previous `u`.
    Futures,
}

impl Venue {
    pub const ALL: [Venue; 3] = [Venue::Spot, Venue::Us, Venue::UsdmFutures];

    /// The configuration name, also the default exchange name on events and topics:
    /// `binance`, `binance_us`, `binance_futures`.
    pub fn name(self) -> &'static str {
        match self {
            Venue::Spot => "binance",
            Venue::Us => "binance_us",
            Venue::UsdmFutures => "binance_futures",
        }
    }

    /// Reads a configuration name ([`Venue::name`]; also `binance.us`, `binance-futures`; any case).
    pub fn parse(s: &str) -> Option<Venue> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "binance" => Venue::Spot,
            "binance_us" | "binance.us" | "binance-us" => Venue::Us,
            "binance_futures" | "binance-futures" => Venue::UsdmFutures,
            _ => return None,
        })
    }

    /// The documented WebSocket base URL.
    pub fn ws_base(self) -> &'static str {
        match self {
            Venue::Spot => DEFAULT_WS_BASE,
            Venue::Us => US_WS_BASE,
            Venue::UsdmFutures => FUTURES_WS_BASE,
        }
    }

    /// The documented REST base URL.
    pub fn rest_base(self) -> &'static str {
        match self {
            Venue::Spot => DEFAULT_REST_BASE,
            Venue::Us => US_REST_BASE,
            Venue::UsdmFutures => FUTURES_REST_BASE,
        }
    }

    /// The order-book snapshot path (`/api/v3/depth`, `/fapi/v1/depth`).
    pub fn depth_path(self) -> &'static str {
        match self {
            Venue::Spot | Venue::Us => "/api/v3/depth",
            Venue::UsdmFutures => "/fapi/v1/depth",
        }
    }

    /// The klines path (`/api/v3/klines`, `/fapi/v1/klines`).
    pub fn klines_path(self) -> &'static str {
        match self {
            Venue::Spot | Venue::Us => "/api/v3/klines",
            Venue::UsdmFutures => "/fapi/v1/klines",
        }
    }

    /// The IP's `REQUEST_WEIGHT` budget per minute (6000 spot, 2400 USDⓈ-M futures).
    pub fn weight_budget(self) -> u32 {
        match self {
            Venue::Spot | Venue::Us => 6000,
            Venue::UsdmFutures => 2400,
        }
    }

    pub fn depth_rule(self) -> DepthRule {
        match self {
            Venue::Spot | Venue::Us => DepthRule::Spot,
            Venue::UsdmFutures => DepthRule::Futures,
        }
    }

    /// Whether `limit` is a depth-snapshot size this venue serves (spot: 1..=5000; futures: 5,
    /// 10, 20, 50, 100, 500 or 1000).
    pub fn depth_limit_ok(self, limit: u32) -> bool {
        match self {
            Venue::Spot | Venue::Us => (1..=5000).contains(&limit),
            Venue::UsdmFutures => [5, 10, 20, 50, 100, 500, 1000].contains(&limit),
        }
    }

    /// The venue of a cryptofeed capture by its exchange id (`BINANCE`, `BINANCE_US`,
    /// `BINANCE_FUTURES`; any case). cryptofeed's other Binance ids (`BINANCE_DELIVERY`: coin-M
    /// futures, `BINANCE_TR`) are not these protocols.
    pub fn from_cryptofeed(id: &str) -> Option<Venue> {
        Some(match id.to_ascii_uppercase().as_str() {
            "BINANCE" => Venue::Spot,
            "BINANCE_US" => Venue::Us,
            "BINANCE_FUTURES" => Venue::UsdmFutures,
            _ => return None,
        })
    }

    /// The venue whose documented host `url` is on, if any.
    fn of_url(url: &str) -> Option<Venue> {
        let host = url.split_once("://").map_or(url, |(_, r)| r);
        let host = host.split(['/', '?']).next().unwrap_or(host);
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        Venue::ALL.into_iter().find(|v| {
            [v.ws_base(), v.rest_base()].iter().any(|b| {
                b.split_once("://")
                    .map(|(_, r)| r.split(':').next().unwrap_or(r))
                    .is_some_and(|h| h == host)
            })
        })
    }
}

impl std::fmt::Display for Venue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Most streams one combined connection may carry (Binance's limit).
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "unknown stream kind {0:?}: expected trade, aggTrade, kline_<interval>, bookTicker, depth, \
         markPrice or forceOrder (the last two on binance_futures)"
    )]
    UnknownStream(String),
    #[error("stream {stream} is served on binance_futures only, not on {venue}")]
    FuturesOnly { stream: String, venue: Venue },
    #[error("unknown kline interval {0:?}: expected one of {intervals}", intervals = INTERVALS.join(", "))]
    UnknownInterval(String),
    #[error("no symbols given")]
    NoSymbols,
    #[error("no streams given")]
    NoStreams,
    #[error("symbol {0:?} is not a Binance symbol (letters and digits only)")]
    BadSymbol(String),
    #[error("{0} streams on one connection; Binance allows at most {MAX_STREAMS_PER_CONNECTION}")]
    TooManyStreams(usize),
    #[error("{name} must be {rule}")]
    Invalid { name: &'static str, rule: &'static str },
    #[error("URL {url:?} must start with {schemes}")]
    BadUrl { url: String, schemes: &'static str },
    #[error("{name} {url:?} is {other}'s endpoint, but venue is {venue} (its endpoint is {expected})")]
    WrongVenue {
        name: &'static str,
        url: String,
        other: Venue,
        venue: Venue,
        expected: &'static str,
    },
    #[error("depth_limit {limit} is not a snapshot size {venue} serves ({allowed})")]
    DepthLimit {
        limit: u32,
        venue: Venue,
        allowed: &'static str,
    },
}

/// One kind of market-data stream, subscribed for every configured symbol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `<symbol>@trade`: every trade.
    Trade,
    /// `<symbol>@aggTrade`: trades aggregated by taker order and price.
    AggTrade,
    /// `<symbol>@kline_<interval>`: the open candle, updated as it forms.
    Kline(Interval),
    /// `<symbol>@bookTicker`: best bid and ask.
    BookTicker,
    /// `<symbol>@depth@100ms`: order-book diffs, kept as a local book with REST snapshots.
    Depth,
    /// `<symbol>@markPrice@1s` (USDⓈ-M futures only): mark and index price, estimated settle
    /// price, funding rate and next funding time, every second (Binance's "Mark Price Stream";
    /// `<symbol>@markPrice` without `@1s` is every 3 s). Published as `MarkPrice`.
    MarkPrice,
    /// `<symbol>@forceOrder` (USDⓈ-M futures only): liquidation orders, at most the latest one
    /// per symbol per second (Binance's "Liquidation Order Streams"). Published as `Liquidation`.
    ForceOrder,
}

impl StreamKind {
    /// Parses `trade`, `aggTrade`, `kline_1m`, `bookTicker`, `depth` (or `depth@100ms`),
    /// `markPrice` (or `markPrice@1s`), `forceOrder`; the camel-case names are also accepted in
    /// lower case.
    pub fn parse(s: &str) -> Result<StreamKind, ConfigError> {
        let t = s.trim();
        Ok(match t {
            "trade" | "trades" => StreamKind::Trade,
            "aggTrade" | "aggtrade" => StreamKind::AggTrade,
            "bookTicker" | "bookticker" => StreamKind::BookTicker,
            "depth" | "depth@100ms" => StreamKind::Depth,
            "markPrice" | "markprice" | "markPrice@1s" | "markprice@1s" => StreamKind::MarkPrice,
            "forceOrder" | "forceorder" => StreamKind::ForceOrder,
            k => match k.strip_prefix("kline_") {
                Some(i) => StreamKind::Kline(Interval::parse(i)?),
                None => return Err(ConfigError::UnknownStream(s.to_owned())),
            },
        })
    }

    /// The name configurations use (what [`StreamKind::parse`] reads back): `trade`, `aggTrade`,
    /// `kline_<interval>`, `bookTicker`, `depth`, `markPrice`, `forceOrder`.
    pub fn name(&self) -> String {
        match self {
            StreamKind::Depth => "depth".into(),
            StreamKind::MarkPrice => "markPrice".into(),
            k => k.suffix(),
        }
    }

    /// The part of the stream name after `<symbol>@`.
    pub fn suffix(&self) -> String {
        match self {
            StreamKind::Trade => "trade".into(),
            StreamKind::AggTrade => "aggTrade".into(),
            StreamKind::Kline(i) => format!("kline_{}", i.name()),
            StreamKind::BookTicker => "bookTicker".into(),
            StreamKind::Depth => "depth@100ms".into(),
            StreamKind::MarkPrice => "markPrice@1s".into(),
            StreamKind::ForceOrder => "forceOrder".into(),
        }
    }

    /// Whether only USDⓈ-M futures serve it (`markPrice`, `forceOrder`): spot and Binance.US
    /// have no such streams, and [`LiveConfig::validate`] refuses them there.
    pub fn futures_only(&self) -> bool {
        matches!(self, StreamKind::MarkPrice | StreamKind::ForceOrder)
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Written as its configuration name (`"kline_1m"`), read with [`StreamKind::parse`].
impl Serialize for StreamKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for StreamKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        StreamKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a comma-separated list of stream kinds (`trade,kline_1m,bookTicker,depth`).
pub fn parse_streams(list: &str) -> Result<Vec<StreamKind>, ConfigError> {
    let mut out: Vec<StreamKind> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let k = StreamKind::parse(part)?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::NoStreams);
    }
    Ok(out)
}

/// Parses a comma-separated list of symbols (`btcusdt,ETHUSDT`) into upper case.
pub fn parse_symbols(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s = part.to_ascii_uppercase();
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError::BadSymbol(part.to_owned()));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::NoSymbols);
    }
    Ok(out)
}

/// Binance's kline intervals (case-sensitive: `1m` is a minute, `1M` a month).
pub const INTERVALS: &[&str] = &[
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
];

/// A kline interval.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    name: &'static str,
}

impl Interval {
    pub fn parse(s: &str) -> Result<Interval, ConfigError> {
        INTERVALS
            .iter()
            .find(|i| **i == s.trim())
            .map(|name| Interval { name })
            .ok_or_else(|| ConfigError::UnknownInterval(s.to_owned()))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The fixed length in milliseconds; `None` for `1M` (months differ in length).
    pub fn millis(&self) -> Option<i64> {
        let (n, unit) = self.name.split_at(self.name.len() - 1);
        let n: i64 = n.parse().ok()?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        Some(n * unit_ms)
    }

    /// Milliseconds used to estimate bar counts: the fixed length, or an average month.
    pub fn approx_millis(&self) -> i64 {
        self.millis().unwrap_or(2_629_746_000)
    }
}

/// How the REST client talks to `/api/v3` (spot, Binance.US) or `/fapi/v1` (USDⓈ-M futures).
#[derive(Clone, Debug, PartialEq)]
pub struct RestConfig {
    /// `https://api.binance.com` (or `http://127.0.0.1:<port>` for a loopback server).
    pub base_url: String,
    /// Which API's paths the requests take.
    pub venue: Venue,
    /// Per request.
    pub timeout: Duration,
    /// The IP's request-weight budget per window (`REQUEST_WEIGHT` 6000 per minute on Binance).
    pub weight_budget: u32,
    /// Above this fraction of the budget (by `X-MBX-USED-WEIGHT-1M`), requests wait for the next window.
    pub weight_soft_fraction: f64,
    /// The weight window, aligned to the wall clock (a minute on Binance).
    pub weight_window: Duration,
    /// The header that reports the used weight.
    pub weight_header: String,
    /// Tries after a 5xx, a transport error or a 429/418, before giving up.
    pub max_retries: u32,
    /// Backoff between retries of 5xx and transport errors.
    pub retry_backoff: Backoff,
    /// A `Retry-After` longer than this (a long IP ban) is an error instead of a wait.
    pub max_retry_after: Duration,
    /// Used when a 429/418 comes without a readable `Retry-After`.
    pub default_retry_after: Duration,
    pub user_agent: String,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            base_url: DEFAULT_REST_BASE.into(),
            venue: Venue::Spot,
            timeout: Duration::from_secs(10),
            weight_budget: 6000,
            weight_soft_fraction: 0.8,
            weight_window: Duration::from_secs(60),
            weight_header: "x-mbx-used-weight-1m".into(),
            max_retries: 5,
            retry_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            max_retry_after: Duration::from_secs(600),
            default_retry_after: Duration::from_secs(60),
            user_agent: concat!("auroraq-binance/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl RestConfig {
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// `venue`'s REST paths, documented base URL and request-weight budget (call
    /// [`RestConfig::with_base_url`] after it to point elsewhere).
    pub fn with_venue(mut self, venue: Venue) -> Self {
        self.venue = venue;
        self.base_url = venue.rest_base().into();
        self.weight_budget = venue.weight_budget();
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return Err(ConfigError::BadUrl {
                url: self.base_url.clone(),
                schemes: "https:// or http://",
            });
        }
        check_venue("rest_url", &self.base_url, self.venue, self.venue.rest_base())?;
        if !(self.weight_soft_fraction > 0.0 && self.weight_soft_fraction <= 1.0) {
            return Err(ConfigError::Invalid {
                name: "weight_soft_fraction",
                rule: "in (0, 1]",
            });
        }
        if self.weight_budget == 0 {
            return Err(ConfigError::Invalid {
                name: "weight_budget",
                rule: "positive",
            });
        }
        if self.weight_window.is_zero() {
            return Err(ConfigError::Invalid {
                name: "weight_window",
                rule: "positive",
            });
        }
        Ok(())
    }

    /// The used weight at which requests start waiting for the next window.
    pub fn soft_limit(&self) -> u32 {
        ((self.weight_budget as f64) * self.weight_soft_fraction)
            .floor()
            .max(1.0) as u32
    }
}

/// A URL on another venue's documented host is a configuration mistake (a loopback server or any
/// other host is fine).
fn check_venue(
    name: &'static str,
    url: &str,
    venue: Venue,
    expected: &'static str,
) -> Result<(), ConfigError> {
    match Venue::of_url(url) {
        Some(other) if other != venue => Err(ConfigError::WrongVenue {
            name,
            url: url.to_owned(),
            other,
            venue,
            expected,
        }),
        _ => Ok(()),
    }
}

/// The live connector's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveConfig {
    /// Which Binance market: decides the order-book sync rule and the REST paths.
    pub venue: Venue,
    /// `wss://stream.binance.com:9443` (or `ws://127.0.0.1:<port>` for a loopback server).
    pub ws_base: String,
    /// The name events carry as `exchange`/`source` and topics use: `binance`, `binance.us`,
    /// `binance-testnet`, ...
    pub exchange: String,
    /// Upper-case symbols (`BTCUSDT`).
    pub symbols: Vec<String>,
    pub streams: Vec<StreamKind>,
    pub rest: RestConfig,
    /// Between reconnects after errors, closes and EOFs.
    pub reconnect: Backoff,
    /// A connection that stayed up this long starts the next reconnect backoff from its initial
    /// delay again.
    pub reconnect_reset_after: Duration,
    /// A connection is replaced (new one opened, then the old one closed) after this long,
    /// before Binance's 24-hour cut.
    pub roll_after: Duration,
    /// During a roll, the old connection is still read this long after the new one is open, so
    /// nothing falls between them (re-sent events de-duplicate by id).
    pub roll_overlap: Duration,
    /// No frame at all (data or ping) for this long: the connection is dead; reconnect.
    pub idle_timeout: Duration,
    /// TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// `limit` of `/api/v3/depth` snapshots (weight 50 up to 1000, 250 up to 5000).
    pub depth_limit: u32,
    /// Depth diffs buffered per symbol while waiting for a snapshot.
    pub max_buffer: usize,
    /// Wait before asking again for a snapshot that was too old or failed.
    pub snapshot_retry: Duration,
    /// Events published in one batch at most...
    pub batch_max: usize,
    /// ...and held at most this long before publishing.
    pub batch_linger: Duration,
    /// How often the connector announces its watermark (`auroraq_stage::watermark`) on the
    /// families it publishes (trades, tickers, klines, book of its first symbol, every
    /// partition); zero: never. It stamps `ts_ingest` on receipt, so nothing it publishes later
    /// is available before its own clock now: the watermark is the clock at the last flush less
    /// `watermark_lateness`, and a quiet feed or partition advances with the clock.
    pub watermark_every: Duration,
    /// Held back from the clock: covers depth diffs held while a book waits for its snapshot and
    /// the frames of a connection roll's overlap, which are published after later ones (more
    /// than this late, they go to the readers' late topics).
    pub watermark_lateness: Duration,
    /// Dead letters go to `dlq.<dead_letter_stage>`.
    pub dead_letter_stage: String,
}

impl LiveConfig {
    /// Binance's endpoints and defaults for `symbols` and `streams`.
    pub fn new(symbols: Vec<String>, streams: Vec<StreamKind>) -> Self {
        LiveConfig {
            venue: Venue::Spot,
            ws_base: DEFAULT_WS_BASE.into(),
            exchange: "binance".into(),
            symbols: symbols.into_iter().map(|s| s.to_ascii_uppercase()).collect(),
            streams,
            rest: RestConfig::default(),
            reconnect: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            reconnect_reset_after: Duration::from_secs(60),
            roll_after: Duration::from_secs(23 * 3600),
            roll_overlap: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            depth_limit: 1000,
            max_buffer: 1000,
            snapshot_retry: Duration::from_secs(1),
            batch_max: 500,
            batch_linger: Duration::from_millis(20),
            watermark_every: Duration::from_secs(1),
            watermark_lateness: Duration::from_secs(5),
            dead_letter_stage: "binance".into(),
        }
    }

    /// Speaks `venue`'s protocol at its documented endpoints, under its name ([`Venue::name`]),
    /// with its request-weight budget. Call [`LiveConfig::with_endpoints`] and
    /// [`LiveConfig::with_exchange`] after it to change those.
    pub fn with_venue(mut self, venue: Venue) -> Self {
        self.venue = venue;
        self.ws_base = venue.ws_base().into();
        self.exchange = venue.name().into();
        self.rest = self.rest.with_venue(venue);
        self
    }

    /// Points the connector at other endpoints (a loopback server, the testnet).
    pub fn with_endpoints(mut self, ws_base: impl Into<String>, rest_base: impl Into<String>) -> Self {
        self.ws_base = ws_base.into();
        self.rest.base_url = rest_base.into();
        self
    }

    /// Names the exchange in events and topics.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The combined-stream names, symbol-major: `btcusdt@trade`, `btcusdt@depth@100ms`, ...
    pub fn stream_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.symbols.len() * self.streams.len());
        for s in &self.symbols {
            let lower = s.to_ascii_lowercase();
            for k in &self.streams {
                out.push(format!("{lower}@{}", k.suffix()));
            }
        }
        out
    }

    /// `<ws_base>/stream?streams=a/b/c`.
    pub fn url(&self) -> String {
        format!(
            "{}/stream?streams={}",
            self.ws_base.trim_end_matches('/'),
            self.stream_names().join("/")
        )
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.symbols.is_empty() {
            return Err(ConfigError::NoSymbols);
        }
        if self.streams.is_empty() {
            return Err(ConfigError::NoStreams);
        }
        for s in &self.symbols {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ConfigError::BadSymbol(s.clone()));
            }
        }
        if self.venue != Venue::UsdmFutures {
            if let Some(k) = self.streams.iter().find(|k| k.futures_only()) {
                return Err(ConfigError::FuturesOnly {
                    stream: k.name(),
                    venue: self.venue,
                });
            }
        }
        let n = self.symbols.len() * self.streams.len();
        if n > MAX_STREAMS_PER_CONNECTION {
            return Err(ConfigError::TooManyStreams(n));
        }
        if !(self.ws_base.starts_with("wss://") || self.ws_base.starts_with("ws://")) {
            return Err(ConfigError::BadUrl {
                url: self.ws_base.clone(),
                schemes: "wss:// or ws://",
            });
        }
        if self.exchange.trim().is_empty() {
            return Err(ConfigError::Invalid {
                name: "exchange",
                rule: "a non-empty name",
            });
        }
        if self.idle_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "idle_timeout/connect_timeout",
                rule: "positive",
            });
        }
        if self.roll_after.is_zero() {
            return Err(ConfigError::Invalid {
                name: "roll_after",
                rule: "positive",
            });
        }
        if self.batch_max == 0 {
            return Err(ConfigError::Invalid {
                name: "batch_max",
                rule: "positive",
            });
        }
        if !self.venue.depth_limit_ok(self.depth_limit) {
            return Err(ConfigError::DepthLimit {
                limit: self.depth_limit,
                venue: self.venue,
                allowed: match self.venue {
                    Venue::UsdmFutures => "5, 10, 20, 50, 100, 500 or 1000",
                    Venue::Spot | Venue::Us => "1..=5000",
                },
            });
        }
        if self.rest.venue != self.venue {
            return Err(ConfigError::Invalid {
                name: "rest.venue",
                rule: "the connector's venue",
            });
        }
        check_venue("ws_url", &self.ws_base, self.venue, self.venue.ws_base())?;
        self.rest.validate()
    }
}

/// `[binance]`: which Binance market the connector speaks to, where it connects and what it
/// subscribes to. `venue` picks the protocol and the documented endpoints: `binance` (spot,
/// `wss://stream.binance.com:9443`, `https://api.binance.com`), `binance_us` (Binance.US,
/// `wss://stream.binance.us:9443`, `https://api.binance.us`) or `binance_futures` (USDⓈ-M futures,
/// `wss://fstream.binance.com`, `https://fapi.binance.com`). `ws_url`, `rest_url` and `exchange`
/// left out take the venue's; set them for a loopback server or the testnet
/// (`wss://stream.testnet.binance.vision`, `https://testnet.binance.vision`). A URL on another
/// venue's documented host is refused by [`BinanceSettings::live_config`]. Without `venue`, URLs
/// on one venue's documented hosts name it (`rest_url = "https://api.binance.us"` alone is
/// Binance.US, as sections written before `venue` existed say it); otherwise it is `binance`.
///
/// The configuration section the runtime reads; [`BinanceSettings::live_config`] and
/// [`BinanceSettings::backfill_config`] turn it into the connector's and the backfill's settings
/// (Binance's defaults for everything else).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "RawSettings")]
pub struct BinanceSettings {
    /// `binance`, `binance_us` or `binance_futures`.
    pub venue: Venue,
    /// WebSocket base URL (the connector appends `/stream?streams=...`).
    pub ws_url: String,
    /// REST base URL (depth snapshots, klines backfill).
    pub rest_url: String,
    /// Exchange name on events and topics, e.g. `binance`, `binance_us`, `binance_futures`,
    /// `binance_testnet`.
    pub exchange: String,
    /// Symbols, e.g. `["btcusdt", "ethusdt"]`.
    pub symbols: Vec<String>,
    /// Streams: trade, aggTrade, kline_<interval>, bookTicker, depth; on `binance_futures` also
    /// markPrice (`<symbol>@markPrice@1s`: `MarkPrice` events on
    /// `market.mark_prices.<exchange>.<symbol>`) and forceOrder (`<symbol>@forceOrder`:
    /// `Liquidation` events on `market.liquidations.<exchange>.<symbol>`).
    pub streams: Vec<StreamKind>,
    /// The watermark's lateness behind the connector's clock, in milliseconds (see
    /// [`LiveConfig::watermark_lateness`]); 0 announces no watermark. Default 5000.
    pub watermark_lateness_ms: u64,
}

/// `[binance]` as written: keys left out take the venue's (or the spot defaults).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    venue: Option<Venue>,
    ws_url: Option<String>,
    rest_url: Option<String>,
    exchange: Option<String>,
    symbols: Option<Vec<String>>,
    streams: Option<Vec<StreamKind>>,
    watermark_lateness_ms: Option<u64>,
}

impl From<RawSettings> for BinanceSettings {
    fn from(r: RawSettings) -> Self {
        // Without `venue`, the URLs given say it when they are one venue's documented hosts (a
        // section written before `venue` existed, pointing at Binance.US); otherwise spot.
        let venue = r.venue.unwrap_or_else(|| {
            let named: Vec<Venue> = [&r.ws_url, &r.rest_url]
                .into_iter()
                .flatten()
                .filter_map(|u| Venue::of_url(u))
                .collect();
            match named.split_first() {
                Some((v, rest)) if rest.iter().all(|o| o == v) => *v,
                _ => Venue::Spot,
            }
        });
        let d = BinanceSettings::for_venue(venue);
        BinanceSettings {
            venue,
            ws_url: r.ws_url.unwrap_or(d.ws_url),
            rest_url: r.rest_url.unwrap_or(d.rest_url),
            exchange: r.exchange.unwrap_or(d.exchange),
            symbols: r.symbols.unwrap_or(d.symbols),
            streams: r.streams.unwrap_or(d.streams),
            watermark_lateness_ms: r.watermark_lateness_ms.unwrap_or(d.watermark_lateness_ms),
        }
    }
}

impl Default for BinanceSettings {
    fn default() -> Self {
        BinanceSettings::for_venue(Venue::Spot)
    }
}

impl BinanceSettings {
    /// `venue`'s documented endpoints and name, with the default symbols and streams.
    pub fn for_venue(venue: Venue) -> Self {
        BinanceSettings {
            venue,
            ws_url: venue.ws_base().into(),
            rest_url: venue.rest_base().into(),
            exchange: venue.name().into(),
            symbols: vec!["btcusdt".into(), "ethusdt".into()],
            streams: vec![
                StreamKind::Trade,
                StreamKind::Kline(Interval { name: "1m" }),
                StreamKind::BookTicker,
                StreamKind::Depth,
            ],
            watermark_lateness_ms: 5000,
        }
    }
}

impl BinanceSettings {
    /// The live connector's settings: this venue's protocol at these endpoints, exchange,
    /// symbols (upper case, checked, duplicates dropped) and streams (duplicates dropped),
    /// validated.
    pub fn live_config(&self) -> Result<LiveConfig, ConfigError> {
        let symbols = parse_symbols(&self.symbols.join(","))?;
        let mut streams: Vec<StreamKind> = Vec::with_capacity(self.streams.len());
        for k in &self.streams {
            if !streams.contains(k) {
                streams.push(k.clone());
            }
        }
        let mut live = LiveConfig::new(symbols, streams)
            .with_venue(self.venue)
            .with_endpoints(self.ws_url.clone(), self.rest_url.clone())
            .with_exchange(self.exchange.clone());
        if self.watermark_lateness_ms == 0 {
            live.watermark_every = Duration::ZERO;
        } else {
            live.watermark_lateness = Duration::from_millis(self.watermark_lateness_ms);
        }
        live.validate()?;
        Ok(live)
    }

    /// The REST client's settings: the venue's paths and budget at `rest_url`.
    pub fn rest_config(&self) -> RestConfig {
        RestConfig::default()
            .with_venue(self.venue)
            .with_base_url(self.rest_url.clone())
    }

    /// A klines backfill of `symbol` at `interval` over `[from, to)` from `rest_url`, its events
    /// named `exchange` (no checkpoint file: set [`BackfillConfig::checkpoint`] to resume).
    pub fn backfill_config(
        &self,
        symbol: &str,
        interval: Interval,
        from: Micros,
        to: Micros,
    ) -> BackfillConfig {
        let mut bc = BackfillConfig::new(symbol, interval, from, to);
        bc.rest = self.rest_config();
        bc.exchange = self.exchange.clone();
        bc
    }
}

/// What to backfill: klines of one symbol and interval over `[from, to)`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackfillConfig {
    pub rest: RestConfig,
    /// Events' `exchange`/`source`.
    pub exchange: String,
    /// Upper-case symbol.
    pub symbol: String,
    pub interval: Interval,
    /// First open time wanted, epoch microseconds (rounded to milliseconds for Binance).
    pub from: Micros,
    /// End of the range (exclusive), epoch microseconds.
    pub to: Micros,
    /// Bars per request (Binance's maximum is 1000).
    pub page_limit: u32,
    /// A small JSON file holding the next start time, written after each published page and
    /// read on start, so that a stopped backfill resumes where it was.
    pub checkpoint: Option<PathBuf>,
}

impl BackfillConfig {
    pub fn new(symbol: &str, interval: Interval, from: Micros, to: Micros) -> Self {
        BackfillConfig {
            rest: RestConfig::default(),
            exchange: "binance".into(),
            symbol: symbol.trim().to_ascii_uppercase(),
            interval,
            from,
            to,
            page_limit: 1000,
            checkpoint: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.symbol.is_empty() || !self.symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError::BadSymbol(self.symbol.clone()));
        }
        if self.to <= self.from {
            return Err(ConfigError::Invalid {
                name: "to",
                rule: "after from",
            });
        }
        if self.page_limit == 0 || self.page_limit > 1000 {
            return Err(ConfigError::Invalid {
                name: "page_limit",
                rule: "in 1..=1000",
            });
        }
        if self.exchange.trim().is_empty() {
            return Err(ConfigError::Invalid {
                name: "exchange",
                rule: "a non-empty name",
            });
        }
        self.rest.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_url() {
        let streams = parse_streams("trade, kline_1m,bookTicker,depth,trade").expect("parses");
        assert_eq!(streams.len(), 4, "duplicates dropped");
        let cfg = LiveConfig::new(parse_symbols("btcusdt,ETHUSDT").expect("symbols"), streams);
        assert_eq!(cfg.symbols, vec!["BTCUSDT", "ETHUSDT"]);
        assert_eq!(
            cfg.url(),
            "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@kline_1m/btcusdt@bookTicker/\
             btcusdt@depth@100ms/ethusdt@trade/ethusdt@kline_1m/ethusdt@bookTicker/ethusdt@depth@100ms"
        );
        assert!(cfg.validate().is_ok());
        assert!(matches!(
            parse_streams("kline_7m"),
            Err(ConfigError::UnknownInterval(_))
        ));
        assert!(matches!(
            parse_streams("depth20"),
            Err(ConfigError::UnknownStream(_))
        ));
        assert_eq!(parse_streams(" , "), Err(ConfigError::NoStreams));
        assert!(matches!(
            parse_symbols("btc/usdt"),
            Err(ConfigError::BadSymbol(_))
        ));
        let mut bad = cfg.clone();
        bad.ws_base = "https://x".into();
        assert!(matches!(bad.validate(), Err(ConfigError::BadUrl { .. })));
        let many = LiveConfig::new(
            (0..300).map(|i| format!("S{i}")).collect(),
            parse_streams("trade,depth,bookTicker,aggTrade").expect("s"),
        );
        assert_eq!(many.validate(), Err(ConfigError::TooManyStreams(1200)));
    }

    #[test]
    fn intervals() {
        assert_eq!(Interval::parse("1m").expect("1m").millis(), Some(60_000));
        assert_eq!(Interval::parse("12h").expect("12h").millis(), Some(43_200_000));
        assert_eq!(Interval::parse("1w").expect("1w").millis(), Some(604_800_000));
        assert_eq!(Interval::parse("1M").expect("1M").millis(), None);
        assert!(Interval::parse("2m").is_err());
    }

    #[test]
    fn settings_section() {
        let d = BinanceSettings::default();
        assert_eq!(
            serde_json::to_value(&d).expect("serialises"),
            serde_json::json!({
                "venue": "binance",
                "ws_url": "wss://stream.binance.com:9443",
                "rest_url": "https://api.binance.com",
                "exchange": "binance",
                "symbols": ["btcusdt", "ethusdt"],
                "streams": ["trade", "kline_1m", "bookTicker", "depth"],
                "watermark_lateness_ms": 5000,
            })
        );
        let live = d.live_config().expect("the defaults work");
        assert_eq!(live.symbols, vec!["BTCUSDT", "ETHUSDT"]);
        assert_eq!(live.ws_base, DEFAULT_WS_BASE);
        assert_eq!(live.rest.base_url, DEFAULT_REST_BASE);
        assert_eq!(live.streams.len(), 4);

        let s: BinanceSettings = serde_json::from_value(serde_json::json!({
            "rest_url": "https://api.binance.us",
            "exchange": "binance_us",
            "symbols": ["solusdt", "SOLUSDT"],
            "streams": ["aggtrade", "kline_1h", "depth@100ms", "aggTrade"],
        }))
        .expect("parses");
        assert_eq!(s.venue, Venue::Us, "a Binance.US URL without venue names it");
        assert_eq!(s.ws_url, US_WS_BASE, "unset keys take the venue's");
        let interval = Interval::parse("1h").expect("1h");
        assert_eq!(
            s.streams,
            vec![
                StreamKind::AggTrade,
                StreamKind::Kline(interval.clone()),
                StreamKind::Depth,
                StreamKind::AggTrade
            ]
        );
        let live = s.live_config().expect("valid");
        assert_eq!(live.symbols, vec!["SOLUSDT"]);
        assert_eq!(live.streams.len(), 3, "duplicates dropped");
        assert_eq!(live.exchange, "binance_us");
        assert_eq!(live.rest.base_url, "https://api.binance.us");
        let bc = s.backfill_config("solusdt", interval, 0, 1);
        assert_eq!(
            (
                bc.symbol.as_str(),
                bc.exchange.as_str(),
                bc.rest.base_url.as_str()
            ),
            ("SOLUSDT", "binance_us", "https://api.binance.us")
        );
        let round: BinanceSettings =
            serde_json::from_value(serde_json::to_value(&s).expect("serialises")).expect("reads back");
        assert_eq!(round, s);

        let e = serde_json::from_value::<BinanceSettings>(serde_json::json!({"streams": ["depth20"]}))
            .expect_err("unknown stream");
        assert!(e.to_string().contains("depth20"), "{e}");
        let e = serde_json::from_value::<BinanceSettings>(serde_json::json!({"ws": "x"}))
            .expect_err("unknown key");
        assert!(e.to_string().contains("ws"), "{e}");
        let mut bad = BinanceSettings::default();
        bad.symbols.clear();
        assert_eq!(bad.live_config(), Err(ConfigError::NoSymbols));
        let mut bad = BinanceSettings::default();
        bad.streams.clear();
        assert_eq!(bad.live_config(), Err(ConfigError::NoStreams));
        let bad = BinanceSettings {
            ws_url: "https://x".into(),
            ..BinanceSettings::default()
        };
        assert!(matches!(bad.live_config(), Err(ConfigError::BadUrl { .. })));
    }

    #[test]
    fn venues_take_their_documented_endpoints_paths_and_rules() {
        let s: BinanceSettings =
            serde_json::from_value(serde_json::json!({"venue": "binance_futures"})).expect("parses");
        assert_eq!(s.ws_url, "wss://fstream.binance.com");
        assert_eq!(s.rest_url, "https://fapi.binance.com");
        assert_eq!(s.exchange, "binance_futures");
        let live = s.live_config().expect("valid");
        assert_eq!(live.venue, Venue::UsdmFutures);
        assert_eq!(live.venue.depth_rule(), DepthRule::Futures);
        assert_eq!(live.rest.venue.depth_path(), "/fapi/v1/depth");
        assert_eq!(live.rest.venue.klines_path(), "/fapi/v1/klines");
        assert_eq!(live.rest.weight_budget, 2400);
        assert!(live
            .url()
            .starts_with("wss://fstream.binance.com/stream?streams=btcusdt@trade/"));
        let bc = s.backfill_config("btcusdt", Interval::parse("1h").expect("1h"), 0, 1);
        assert_eq!(
            (bc.rest.venue, bc.exchange.as_str()),
            (Venue::UsdmFutures, "binance_futures")
        );
        assert!(bc.validate().is_ok());

        let us: BinanceSettings =
            serde_json::from_value(serde_json::json!({"venue": "binance.us", "symbols": ["btcusd"]}))
                .expect("parses");
        assert_eq!(us.venue, Venue::Us);
        assert_eq!(
            (us.ws_url.as_str(), us.rest_url.as_str(), us.exchange.as_str()),
            (
                "wss://stream.binance.us:9443",
                "https://api.binance.us",
                "binance_us"
            )
        );
        let live = us.live_config().expect("valid");
        assert_eq!(live.venue.depth_rule(), DepthRule::Spot);
        assert_eq!(live.rest.venue.depth_path(), "/api/v3/depth");
        assert_eq!(live.rest.weight_budget, 6000);

        // Keys given win over the venue's (a loopback server), and survive a round trip.
        let local: BinanceSettings = serde_json::from_value(serde_json::json!({
            "venue": "binance_futures", "ws_url": "ws://127.0.0.1:9", "rest_url": "http://127.0.0.1:9",
        }))
        .expect("parses");
        let live = local.live_config().expect("a loopback server is fine");
        assert_eq!(
            (live.ws_base.as_str(), live.venue),
            ("ws://127.0.0.1:9", Venue::UsdmFutures)
        );
        let round: BinanceSettings =
            serde_json::from_value(serde_json::to_value(&local).expect("serialises")).expect("reads back");
        assert_eq!(round, local);

        // Another venue's documented host is a mistake, named as such.
        let mixed: BinanceSettings = serde_json::from_value(serde_json::json!({
            "venue": "binance_futures", "rest_url": "https://api.binance.com",
        }))
        .expect("parses");
        let e = mixed.live_config().expect_err("spot REST for futures");
        assert!(
            matches!(
                &e,
                ConfigError::WrongVenue {
                    name: "rest_url",
                    other: Venue::Spot,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("https://fapi.binance.com"), "{e}");
        let mixed = BinanceSettings {
            ws_url: US_WS_BASE.into(),
            ..BinanceSettings::default()
        };
        assert!(matches!(
            mixed.live_config(),
            Err(ConfigError::WrongVenue {
                name: "ws_url",
                other: Venue::Us,
                venue: Venue::Spot,
                ..
            })
        ));
        // Without venue: a section of Binance.US URLs (as written before venue existed) is
        // Binance.US; URLs of two venues name none, and are refused.
        let old: BinanceSettings = serde_json::from_value(serde_json::json!({
            "ws_url": US_WS_BASE, "rest_url": US_REST_BASE, "exchange": "binance_us",
        }))
        .expect("parses");
        assert_eq!(old.venue, Venue::Us);
        assert!(old.live_config().is_ok());
        let two: BinanceSettings = serde_json::from_value(serde_json::json!({
            "ws_url": US_WS_BASE, "rest_url": FUTURES_REST_BASE,
        }))
        .expect("parses");
        assert_eq!(two.venue, Venue::Spot);
        assert!(matches!(two.live_config(), Err(ConfigError::WrongVenue { .. })));
        let e = serde_json::from_value::<BinanceSettings>(serde_json::json!({"venue": "binance_delivery"}))
            .expect_err("unknown venue");
        assert!(e.to_string().contains("binance_delivery"), "{e}");

        // Futures serve fewer depth sizes than spot.
        let mut live = BinanceSettings::for_venue(Venue::UsdmFutures)
            .live_config()
            .expect("valid");
        live.depth_limit = 5000;
        assert!(matches!(
            live.validate(),
            Err(ConfigError::DepthLimit { limit: 5000, .. })
        ));
        live.depth_limit = 500;
        assert!(live.validate().is_ok());
        let mut spot = BinanceSettings::default().live_config().expect("valid");
        spot.depth_limit = 5000;
        assert!(spot.validate().is_ok());

        for v in Venue::ALL {
            assert_eq!(Venue::parse(v.name()), Some(v));
            assert_eq!(Venue::of_url(v.ws_base()), Some(v));
            assert_eq!(
                Venue::of_url(&format!("{}/api/v3/depth?symbol=X", v.rest_base())),
                Some(v)
            );
        }
        assert_eq!(Venue::of_url("http://127.0.0.1:8080"), None);
        assert_eq!(
            Venue::from_cryptofeed("BINANCE_FUTURES"),
            Some(Venue::UsdmFutures)
        );
        assert_eq!(Venue::from_cryptofeed("BINANCE_DELIVERY"), None);
    }

    #[test]
    fn futures_mark_price_and_liquidation_streams() {
        // Binance's documented stream names: `<symbol>@markPrice@1s`, `<symbol>@forceOrder`.
        let streams = parse_streams("markPrice, forceorder, markPrice@1s, depth").expect("parses");
        assert_eq!(
            streams,
            vec![StreamKind::MarkPrice, StreamKind::ForceOrder, StreamKind::Depth]
        );
        for k in &streams[..2] {
            assert!(k.futures_only());
            assert_eq!(StreamKind::parse(&k.name()).as_ref(), Ok(k));
        }
        let s: BinanceSettings = serde_json::from_value(serde_json::json!({
            "venue": "binance_futures", "symbols": ["btcusdt"], "streams": ["markPrice", "forceOrder"],
        }))
        .expect("parses");
        assert_eq!(
            serde_json::to_value(&s).expect("serialises")["streams"],
            serde_json::json!(["markPrice", "forceOrder"])
        );
        let live = s.live_config().expect("valid on futures");
        assert_eq!(
            live.url(),
            "wss://fstream.binance.com/stream?streams=btcusdt@markPrice@1s/btcusdt@forceOrder"
        );
        // Spot and Binance.US have no such streams.
        for venue in [Venue::Spot, Venue::Us] {
            let spot = BinanceSettings {
                streams: vec![StreamKind::Trade, StreamKind::ForceOrder],
                ..BinanceSettings::for_venue(venue)
            };
            let e = spot.live_config().expect_err("futures only");
            assert_eq!(
                e,
                ConfigError::FuturesOnly {
                    stream: "forceOrder".into(),
                    venue
                }
            );
            assert!(e.to_string().contains("binance_futures"), "{e}");
        }
        let e = parse_streams("markPrices").expect_err("unknown");
        assert!(e.to_string().contains("markPrice or forceOrder"), "{e}");
    }

    #[test]
    fn soft_limit() {
        assert_eq!(RestConfig::default().soft_limit(), 4800);
    }
}
