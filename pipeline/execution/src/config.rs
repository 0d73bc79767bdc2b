//! Execution configuration, with defaults (every field may be left out of a config file).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::binance::{LiveTrading, LiveTradingConfig, MAINNET_BASE_URL, TESTNET_BASE_URL};

/// Where the execution stage sends its orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Venue {
    /// Simulated fills from market data: no keys, no orders anywhere.
    Paper,
    /// Binance's spot testnet (`binance_testnet_url`): real orders with test funds. The default
    /// live venue.
    BinanceTestnet,
    /// Binance spot (`binance_url`): real orders with real funds.
    Binance,
}

impl Venue {
    pub const ALL: [Venue; 3] = [Venue::Paper, Venue::BinanceTestnet, Venue::Binance];

    /// `paper`, `binance-testnet`, `binance`: the command line's names, and the `venue` of a live
    /// venue's order updates.
    pub fn as_str(self) -> &'static str {
        match self {
            Venue::Paper => "paper",
            Venue::BinanceTestnet => "binance-testnet",
            Venue::Binance => "binance",
        }
    }

    pub fn is_live(self) -> bool {
        self != Venue::Paper
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Venue {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Venue::ALL
            .into_iter()
            .find(|v| v.as_str() == s.trim())
            .ok_or_else(|| {
                ConfigError::Invalid(format!("unknown venue {s:?}: paper, binance-testnet or binance"))
            })
    }
}

/// The execution stage's settings: the paper venue's, and the live switch, keys and endpoints of
/// the Binance venues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Stage name: source of its events, consumer group, `dlq.<name>`. Default `execution`.
    pub name: String,
    /// The `venue` of its order updates. Default `paper`.
    pub venue: String,
    /// The `account` of its portfolio snapshots. Default `paper`.
    pub account: String,
    /// Starting cash, in quote currency. Default 100000.
    pub initial_cash: Decimal,
    /// Fee per fill, basis points of the fill's notional. Default 10 (0.10%).
    pub fee_bps: Decimal,
    /// Slippage, basis points: buys fill at `price * (1 + bps/1e4)`, sells at `price * (1 -
    /// bps/1e4)`. Default 5.
    pub slippage_bps: Decimal,
    /// The asset fees are paid in (the quote currency). Default `USD`.
    pub fee_asset: String,
    /// Partial fills: a fill takes at most the trade's quantity (the quote's size at the
    /// touch, the bar's volume), shared by the orders it fills. `false`: orders fill in full
    /// on the first eligible price. Default true.
    pub use_market_size: bool,
    /// Which market data fills orders: trades, book tickers (ask for buys, bid for sells),
    /// closed bars (their open). Default all three.
    pub fill_on_trades: bool,
    pub fill_on_tickers: bool,
    pub fill_on_klines: bool,
    /// Only market data from this exchange fills orders (and marks the portfolio). Default
    /// any.
    pub exchange: Option<String>,
    /// Allow sells beyond the position (short positions). Default true; `false` rejects them.
    pub allow_short: bool,
    /// Cancel orders still open this many seconds after they were accepted (market clock).
    /// Default none: an order waits for a price for as long as it takes.
    pub order_ttl_secs: Option<i64>,
    /// Equity-curve sampling interval on the market clock, seconds: the first market event
    /// of each new interval records a point and publishes a snapshot. 0 samples every
    /// market event. Default 3600.
    pub snapshot_interval_secs: i64,
    /// Also publish a snapshot after each market event that filled something. Default true.
    pub snapshot_on_fill: bool,
    /// Equity samples per year, to annualise. Default: 365.25 days / the sampling interval
    /// (set it, e.g. 252 for daily stock bars, or when `snapshot_interval_secs` is 0).
    pub periods_per_year: Option<f64>,
    /// Annual risk-free rate for Sharpe and Sortino. Default 0.
    pub risk_free_rate: f64,
    /// Client order ids remembered after their order is done (duplicate protection).
    /// Default 100000.
    pub remember: usize,
    /// The live-trading switch: `execute --venue binance-testnet|binance` is refused unless it
    /// is true. With it on and no `--venue`, `execute` trades on the testnet (the default live
    /// venue), never on real funds. Default false.
    pub enable_live_trading: bool,
    /// The environment variable holding the Binance API key (read when a live venue starts,
    /// never logged). Default `BINANCE_API_KEY`.
    pub api_key_env: String,
    /// The environment variable holding the Binance API secret. Default `BINANCE_API_SECRET`.
    pub api_secret_env: String,
    /// Base URL of the `binance-testnet` venue. Default `https://testnet.binance.vision`.
    pub binance_testnet_url: String,
    /// Base URL of the `binance` venue (real funds). Default `https://api.binance.com`.
    pub binance_url: String,
    /// Signed requests' `recvWindow`, milliseconds (1..=60000). Default 5000.
    pub recv_window_ms: u64,
    /// HTTP timeout of order requests, seconds. Default 10.
    pub http_timeout_secs: u64,
    /// Live venues: folder of the order journal (`<name>-<venue>.json`: orders placed and not
    /// yet done), read at start to reconcile with the venue. Keep it on a volume that survives
    /// restarts. Default `.auroraq/execution`.
    pub state_dir: PathBuf,
    /// Live venues: seconds between polls of the venue for the journal's open orders (their
    /// fills and cancels); 0: only at start. Default 30.
    pub reconcile_interval_secs: u64,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            name: "execution".to_owned(),
            venue: "paper".to_owned(),
            account: "paper".to_owned(),
            initial_cash: Decimal::from(100_000),
            fee_bps: Decimal::from(10),
            slippage_bps: Decimal::from(5),
            fee_asset: "USD".to_owned(),
            use_market_size: true,
            fill_on_trades: true,
            fill_on_tickers: true,
            fill_on_klines: true,
            exchange: None,
            allow_short: true,
            order_ttl_secs: None,
            snapshot_interval_secs: 3600,
            snapshot_on_fill: true,
            periods_per_year: None,
            risk_free_rate: 0.0,
            remember: 100_000,
            enable_live_trading: false,
            api_key_env: "BINANCE_API_KEY".to_owned(),
            api_secret_env: "BINANCE_API_SECRET".to_owned(),
            binance_testnet_url: TESTNET_BASE_URL.to_owned(),
            binance_url: MAINNET_BASE_URL.to_owned(),
            recv_window_ms: 5_000,
            http_timeout_secs: 10,
            state_dir: PathBuf::from(".auroraq/execution"),
            reconcile_interval_secs: 30,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("execution config: {0}")]
    Invalid(String),
    /// A live venue without the switch or the keys; says what is missing, never a key.
    #[error("execute --venue {venue}: live trading refused: {}", .missing.join("; "))]
    LiveRefused { venue: Venue, missing: Vec<String> },
}

impl ExecutionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.name.trim().is_empty() || self.venue.trim().is_empty() || self.account.trim().is_empty() {
            return bad("name, venue and account must not be empty");
        }
        if self.fee_bps < Decimal::ZERO || self.slippage_bps < Decimal::ZERO {
            return bad("fee_bps and slippage_bps must be >= 0");
        }
        if self.slippage_bps >= Decimal::from(10_000) {
            return bad("slippage_bps must be < 10000");
        }
        if self.snapshot_interval_secs < 0 {
            return bad("snapshot_interval_secs must be >= 0");
        }
        if self.order_ttl_secs.is_some_and(|t| t <= 0) {
            return bad("order_ttl_secs must be > 0");
        }
        if self.periods_per_year.is_some_and(|p| !(p > 0.0 && p.is_finite())) {
            return bad("periods_per_year must be > 0");
        }
        if self.periods_per_year.is_none() && self.snapshot_interval_secs == 0 {
            return bad("set periods_per_year when snapshot_interval_secs is 0");
        }
        if !self.risk_free_rate.is_finite() {
            return bad("risk_free_rate must be finite");
        }
        if self.api_key_env.trim().is_empty() || self.api_secret_env.trim().is_empty() {
            return bad("api_key_env and api_secret_env must name environment variables");
        }
        for (k, u) in [
            ("binance_testnet_url", &self.binance_testnet_url),
            ("binance_url", &self.binance_url),
        ] {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "{k} {u:?} must start with https:// or http://"
                )));
            }
        }
        if !(1..=60_000).contains(&self.recv_window_ms) {
            return bad("recv_window_ms must be in 1..=60000");
        }
        if self.http_timeout_secs == 0 {
            return bad("http_timeout_secs must be at least 1");
        }
        Ok(())
    }

    /// The venue `execute` trades on: `requested` (`--venue`), else the testnet when
    /// `enable_live_trading` is on, else paper. Real funds only when asked for by name.
    pub fn venue(&self, requested: Option<Venue>) -> Venue {
        requested.unwrap_or(if self.enable_live_trading {
            Venue::BinanceTestnet
        } else {
            Venue::Paper
        })
    }

    /// The base URL of a live venue.
    pub fn base_url(&self, venue: Venue) -> Option<&str> {
        match venue {
            Venue::Paper => None,
            Venue::BinanceTestnet => Some(&self.binance_testnet_url),
            Venue::Binance => Some(&self.binance_url),
        }
    }

    /// The proof of the switch and the keys for a live `venue`: the keys come from the
    /// environment variables `api_key_env` and `api_secret_env`, looked up with `env` (the
    /// process's environment in `execute`). Refuses, saying what is missing (the switch, which
    /// variable), when they are not all there; an error never contains a key.
    pub fn live_trading(
        &self,
        venue: Venue,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LiveTrading, ConfigError> {
        let Some(base_url) = self.base_url(venue) else {
            return Err(ConfigError::Invalid("the paper venue does not trade live".into()));
        };
        let key = env(&self.api_key_env).filter(|v| !v.trim().is_empty());
        let secret = env(&self.api_secret_env).filter(|v| !v.trim().is_empty());
        let mut missing = Vec::new();
        if !self.enable_live_trading {
            missing.push(
                "[execution] enable_live_trading is not true (AURORAQ_EXECUTION_ENABLE_LIVE_TRADING=true switches it on)"
                    .to_owned(),
            );
        }
        if key.is_none() {
            missing.push(format!(
                "environment variable {} (the API key) is not set",
                self.api_key_env
            ));
        }
        if secret.is_none() {
            missing.push(format!(
                "environment variable {} (the API secret) is not set",
                self.api_secret_env
            ));
        }
        if !missing.is_empty() {
            return Err(ConfigError::LiveRefused { venue, missing });
        }
        LiveTrading::new(LiveTradingConfig {
            enable_live_trading: self.enable_live_trading,
            api_key: key,
            api_secret: secret,
            base_url: base_url.to_owned(),
            recv_window_ms: self.recv_window_ms,
            timeout_secs: self.http_timeout_secs,
        })
        .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The order journal of a live venue: `<state_dir>/<name>-<venue>.json`.
    pub fn journal_path(&self, venue: Venue) -> PathBuf {
        Path::new(&self.state_dir).join(format!("{}-{}.json", self.name, venue.as_str()))
    }

    /// Equity samples per year.
    pub fn periods_per_year(&self) -> f64 {
        self.periods_per_year
            .unwrap_or_else(|| 365.25 * 86_400.0 / self.snapshot_interval_secs.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &str) -> Option<String> {
        match k {
            "BINANCE_API_KEY" => Some("KEY-abc123".into()),
            "BINANCE_API_SECRET" => Some("SECRET-xyz789".into()),
            _ => None,
        }
    }

    #[test]
    fn venues_by_name_and_the_default_live_venue() {
        for v in Venue::ALL {
            assert_eq!(v.as_str().parse::<Venue>(), Ok(v));
        }
        assert!("kraken".parse::<Venue>().is_err());
        let mut c = ExecutionConfig::default();
        assert_eq!(c.venue(None), Venue::Paper);
        c.enable_live_trading = true;
        assert_eq!(
            c.venue(None),
            Venue::BinanceTestnet,
            "never real funds by default"
        );
        assert_eq!(c.venue(Some(Venue::Paper)), Venue::Paper);
        assert_eq!(c.base_url(Venue::BinanceTestnet), Some(TESTNET_BASE_URL));
        assert_eq!(c.base_url(Venue::Binance), Some(MAINNET_BASE_URL));
        assert_eq!(
            c.journal_path(Venue::Binance),
            Path::new(".auroraq/execution/execution-binance.json")
        );
    }

    #[test]
    fn live_venues_are_refused_without_the_switch_or_the_keys() {
        let off = ExecutionConfig::default();
        for venue in [Venue::BinanceTestnet, Venue::Binance] {
            match off.live_trading(venue, keys) {
                Err(ConfigError::LiveRefused { missing, .. }) => {
                    assert_eq!(missing.len(), 1, "{missing:?}");
                    assert!(missing[0].contains("enable_live_trading"), "{missing:?}");
                }
                other => panic!("{venue}: {other:?}"),
            }
        }
        let on = ExecutionConfig {
            enable_live_trading: true,
            ..ExecutionConfig::default()
        };
        let e = on.live_trading(Venue::BinanceTestnet, |_| None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--venue binance-testnet")
                && msg.contains("BINANCE_API_KEY")
                && msg.contains("BINANCE_API_SECRET"),
            "{msg}"
        );
        let only_key = |k: &str| (k == "BINANCE_API_KEY").then(|| "KEY-abc123".to_owned());
        let msg = on.live_trading(Venue::Binance, only_key).unwrap_err().to_string();
        assert!(
            msg.contains("BINANCE_API_SECRET") && !msg.contains("KEY-abc123"),
            "{msg}"
        );
        // Switched on with both keys: the venue's URL; the keys never shown.
        let lt = on.live_trading(Venue::BinanceTestnet, keys).expect("allowed");
        assert_eq!(lt.base_url(), TESTNET_BASE_URL);
        let lt = on.live_trading(Venue::Binance, keys).expect("allowed");
        assert_eq!(lt.base_url(), MAINNET_BASE_URL);
        let shown = format!("{lt:?} {on:?}");
        assert!(
            !shown.contains("KEY-abc123") && !shown.contains("SECRET-xyz789"),
            "{shown}"
        );
        assert!(on.live_trading(Venue::Paper, keys).is_err());
    }
}
