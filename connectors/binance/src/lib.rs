//! Binance connector: market data from Binance's WebSocket combined streams and REST API,
//! decoded into AuroraQ events with exact prices, and local order books kept by Binance's
//! documented sync rules. Three venues ([`Venue`]): Binance spot, Binance.US (the spot protocol
//! on other hosts) and USDⓈ-M futures (other paths, `pu`-chained depth diffs).
//!
//! - [`decode`]: frames and REST bodies into events ([`Decoder`], [`decode::snapshot`],
//!   [`decode::rest_klines`]); on USDⓈ-M futures also mark prices and liquidations
//!   (`auroraq_schemas::MarkPrice`, `auroraq_schemas::Liquidation`).
//! - [`book`]: the order-book sync per symbol ([`BookSync`]), shared by the live connector and
//!   the replay of recorded captures.
//! - [`connector`]: the live connector ([`LiveConnector`], [`run_live`]): combined streams,
//!   pings, reconnects with backoff, 24-hour rolls, order books with REST snapshots, dead
//!   letters, batched publishing, statuses on `feeds.status.<exchange>`.
//! - [`rest`]: the REST client ([`RestClient`]) that keeps to the request-weight budget and
//!   honours `Retry-After`.
//! - [`backfill`]: klines over a time range, paginated and resumable ([`backfill()`]).
//! - [`config`]: the settings of all three, with Binance's defaults, and the `[binance]`
//!   configuration section they are built from ([`BinanceSettings`]).

pub mod backfill;
pub mod book;
pub mod config;
pub mod connector;
pub mod decode;
pub mod rest;
pub mod stream;

pub use backfill::{backfill, BackfillError, BackfillProgress, BackfillReport, Checkpoint};
pub use book::{BookSync, OrderBook, SyncCounts, SyncOutput};
pub use config::{
    parse_streams, parse_symbols, BackfillConfig, Backoff, BinanceSettings, ConfigError, DepthRule, Interval,
    LiveConfig, RestConfig, StreamKind, Venue, DEFAULT_REST_BASE, DEFAULT_WS_BASE, FUTURES_REST_BASE,
    FUTURES_WS_BASE, US_REST_BASE, US_WS_BASE,
};
pub use connector::{run_live, ConnectorError, LiveConnector, LiveStats, StatsHandle};
pub use decode::{DecodeError, Decoder, DepthDiff, DepthSnapshot, MarketEvent};
pub use rest::{RestClient, RestCounters, RestError};
pub use stream::ConnectError;
