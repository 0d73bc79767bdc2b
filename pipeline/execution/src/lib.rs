//! Execution: order lifecycle, a paper venue filling from market data, portfolio and
//! performance; a Binance order client behind a live-trading switch.
//!
//! - [`ExecutionProcessor`]: the stage with its paper venue, a deterministic
//!   [`auroraq_stage::Processor`] (risk decisions and market data in; `OrderUpdate`s and
//!   `PortfolioSnapshot`s out).
//! - [`performance()`]: total return, CAGR, volatility, Sharpe, Sortino, drawdown, Calmar, win
//!   rate, turnover and exposure of an equity curve and its trades.
//! - [`LiveTrading`], [`BinanceOrderClient`], [`LiveExecution`]: real orders, only when
//!   switched on with credentials ([`ExecutionConfig::live_trading`] for a [`Venue`]); the
//!   [journal](journal) of orders in flight, reconciled with the venue after a restart.

pub mod binance;
pub mod config;
pub mod journal;
pub mod live;
pub mod paper;
pub mod performance;
pub mod portfolio;

pub use binance::{
    binance_symbol, hmac_sha256, query_string, sign, BinanceFill, BinanceOrder, BinanceOrderClient,
    BinanceOrderError, BinanceTrade, LiveTrading, LiveTradingConfig, LiveTradingError, NewOrder, OrderType,
    MAINNET_BASE_URL, TESTNET_BASE_URL,
};
pub use config::{ConfigError, ExecutionConfig, Venue};
pub use journal::{Journal, JournalError, JournalFile, JournalOrder};
pub use live::LiveExecution;
pub use paper::{client_order_id, fill_message, ExecutionProcessor, Order};
pub use performance::{
    performance, EquityPoint, Performance, PerformanceConfig, PerformanceTracker, TradeRecord,
};
pub use portfolio::{wire, FillEffect, Holding, Portfolio};
