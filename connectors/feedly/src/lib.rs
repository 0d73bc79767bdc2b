//! Feedly connector: polls a Feedly stream and publishes its entries as article events.
//!
//! - [`parse_page`] turns one `/v3/streams/contents` body into articles, dead letters and the
//!   continuation: pure, so replays of recorded Feedly JSON use it too;
//! - [`FeedlyConnector`] (and the shortcut [`run`]) polls
//!   `GET {base}/v3/streams/contents?streamId=&count=&newerThan=&continuation=` with a Bearer
//!   token, follows continuation pages, drops ids it has published before (the [`FeedlyStore`]:
//!   [`RedisStore`] across restarts, [`MemoryStore`] in the process), honours `429` with
//!   `Retry-After` and retries `5xx`, network errors, timeouts and malformed pages with backoff and
//!   jitter;
//! - events go to their default topics: articles to `news.articles.feedly`, dead letters to
//!   `dlq.feedly`, link changes ([`FeedStatus`](auroraq_schemas::FeedStatus): connected,
//!   disconnected, rate_limited, gap) to `feeds.status.feedly`.
//!
//! ```no_run
//! # async fn demo(bus: &dyn auroraq_bus::Bus) -> Result<(), auroraq_feedly::FeedlyError> {
//! use std::sync::Arc;
//! use auroraq_feedly::{FeedlyConfig, FeedlyConnector, RedisStore, RedisStoreConfig};
//! use auroraq_util::CancellationToken;
//!
//! let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379")).await?;
//! let cfg = FeedlyConfig::new("user/<id>/category/global.all"); // token from $FEEDLY_TOKEN
//! let connector = FeedlyConnector::new(cfg, Arc::new(store))?;
//! let stats = connector.run(bus, CancellationToken::new()).await?;
//! println!("{} articles", stats.articles);
//! # Ok(()) }
//! ```

pub mod config;
pub mod parse;
pub mod poller;
pub mod store;

use auroraq_bus::BusError;
use auroraq_schemas::CodecError;

pub use auroraq_util::parse_retry_after;
pub use config::{FeedlyConfig, FeedlySettings, Token, DEFAULT_BASE_URL, TOKEN_ENV};
pub use parse::{parse_item, parse_page, parse_page_with, ItemError, ParseOptions, ParsedPage};
pub use poller::{run, FeedlyConnector, FeedlyStats};
pub use store::{FeedlyStore, MemoryStore, RedisStore, RedisStoreConfig, SeenLimits, StoreError};

/// The events' source: topics `news.articles.feedly`, `dlq.feedly`, `feeds.status.feedly`.
pub const SOURCE: &str = "feedly";

/// What stops the connector. Transient trouble (5xx, timeouts, rate limits, a malformed page, a
/// store or bus hiccup while running) is retried instead and never ends up here.
#[derive(Debug, thiserror::Error)]
pub enum FeedlyError {
    #[error(
        "no Feedly access token: set the environment variable {env} or give `token` in the \
         configuration (Feedly: Settings → Developer / API access)"
    )]
    MissingToken { env: String },
    #[error("invalid Feedly configuration: {0}")]
    Config(String),
    #[error(
        "Feedly rejected the access token (HTTP {status}) at {url}: {detail}; the token may have expired"
    )]
    Unauthorized {
        status: u16,
        url: String,
        detail: String,
    },
    #[error("Feedly refused the request (HTTP {status}) at {url}: {detail}")]
    Refused {
        status: u16,
        url: String,
        detail: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("Feedly state store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot encode an event: {0}")]
    Encode(#[source] CodecError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}
