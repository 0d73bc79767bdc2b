//! What the connector needs to know: where Feedly is, which stream, the token, and its pacing.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::parse::ParseOptions;
use crate::store::RedisStoreConfig;
use crate::FeedlyError;

/// Feedly Cloud, where the API lives unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://cloud.feedly.com";
/// The environment variable read for the access token when the configuration has none.
pub const TOKEN_ENV: &str = "FEEDLY_TOKEN";

/// A Feedly access token. Never printed: its `Debug` says `Token(<redacted>)`, it has no
/// `Display`, and the HTTP header that carries it is marked sensitive. In a configuration it is a
/// plain string (empty: none); serialising one writes it out, so clear it first
/// ([`Token::default`]) where the output is not secret.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The token itself, for the `Authorization` header. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty or blank (counts as no token).
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How the connector polls one Feedly stream. [`FeedlyConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct FeedlyConfig {
    /// API root, default [`DEFAULT_BASE_URL`]; requests go to `{base_url}/v3/streams/contents`.
    pub base_url: String,
    /// The stream to poll: a feed (`feed/https://…`), a category
    /// (`user/<id>/category/<label>`), a tag, or `user/<id>/category/global.all`.
    pub stream_id: String,
    /// The access token; when `None`, the environment variable `token_env` is read.
    pub token: Option<Token>,
    /// Where to look for the token when `token` is `None` (default [`TOKEN_ENV`]).
    pub token_env: String,
    /// Items per page (`count`; Feedly allows up to 1000).
    pub count: u32,
    /// Time between the end of one poll and the start of the next.
    pub poll_interval: Duration,
    /// On the very first poll (no cursor stored yet), how far back to read; `None`: the whole
    /// stream as far as Feedly pages it (bounded by `max_pages_per_poll`).
    pub lookback: Option<Duration>,
    /// Each poll asks for items crawled after the cursor minus this much, so that items Feedly
    /// files late are not missed; the seen-id store drops the ones already published.
    pub cursor_overlap: Duration,
    /// Continuation pages followed in one poll at most. Reaching it publishes a `gap` status.
    pub max_pages_per_poll: u32,
    /// Whole-request limit (connect, headers and body).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Largest response body read; a larger one counts as a malformed page.
    pub max_body_bytes: usize,
    /// First delay after a failure (5xx, network error, timeout, malformed page, store or bus
    /// error); doubles per consecutive failure up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The longest `Retry-After` honoured as given; longer ones are cut to this.
    pub max_retry_after: Duration,
    /// Poll once (following every continuation page and retrying failures) and return.
    pub once: bool,
    pub user_agent: String,
    /// How items become articles.
    pub parse: ParseOptions,
    /// The watermark (`auroraq_stage::watermark`) on `news.articles.feedly`: after each poll and
    /// every second while it waits for the next, its clock less this. Articles are stamped
    /// `ts_ingest` when their page is read, so none published later is available before the
    /// clock now. `None`: no watermarks.
    pub watermark_lateness: Option<Duration>,
}

impl FeedlyConfig {
    /// The defaults, for `stream_id`.
    pub fn new(stream_id: impl Into<String>) -> Self {
        FeedlyConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            stream_id: stream_id.into(),
            token: None,
            token_env: TOKEN_ENV.to_owned(),
            count: 100,
            // A developer token allows 250 requests a day.
            poll_interval: Duration::from_secs(600),
            lookback: Some(Duration::from_secs(24 * 3600)),
            cursor_overlap: Duration::from_secs(300),
            max_pages_per_poll: 50,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: 64 << 20,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            once: false,
            user_agent: concat!("auroraq-feedly/", env!("CARGO_PKG_VERSION")).to_owned(),
            parse: ParseOptions::default(),
            watermark_lateness: Some(Duration::from_secs(5)),
        }
    }

    /// The token from the configuration, else from the environment variable `token_env`.
    /// An empty or blank token counts as none.
    pub fn resolve_token(&self) -> Result<Token, FeedlyError> {
        let from_config = self.token.clone().filter(|t| !t.0.trim().is_empty());
        let token = match from_config {
            Some(t) => t,
            None => match std::env::var(&self.token_env) {
                Ok(v) if !v.trim().is_empty() => Token(v),
                _ => {
                    return Err(FeedlyError::MissingToken {
                        env: self.token_env.clone(),
                    })
                }
            },
        };
        Ok(Token(token.0.trim().to_owned()))
    }

    /// Checks the settings that would make polling impossible or abusive.
    pub fn validate(&self) -> Result<(), FeedlyError> {
        let bad = |why: String| Err(FeedlyError::Config(why));
        if self.stream_id.trim().is_empty() {
            return bad("stream_id is empty: name a feed, category or tag stream".into());
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad(format!(
                "base_url {:?} must start with http:// or https://",
                self.base_url
            ));
        }
        if self.count == 0 || self.count > 1000 {
            return bad(format!("count {} must be within 1..=1000", self.count));
        }
        if self.max_pages_per_poll == 0 {
            return bad("max_pages_per_poll must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad(format!(
                "backoff_initial ({:?}) must be positive and at most backoff_max ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.parse.source.trim().is_empty() {
            return bad("parse.source is empty".into());
        }
        Ok(())
    }
}

/// `[feedly]`: the Feedly connector. The token comes from `token`, else from the environment
/// variable named by `token_env` (`FEEDLY_TOKEN`); it is never logged.
///
/// The configuration section the runtime reads; [`FeedlySettings::connector_config`] and
/// [`FeedlySettings::store_config`] turn it into the connector's and its Redis store's settings
/// (the defaults of [`FeedlyConfig::new`] for everything else).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedlySettings {
    /// API root; requests go to `{base_url}/v3/streams/contents`.
    pub base_url: String,
    /// Stream to poll, e.g. `user/<id>/category/global.all` or `feed/<url>`.
    pub stream_id: String,
    /// The access token; empty: read the environment variable `token_env`.
    pub token: Token,
    /// Where to look for the token when `token` is empty.
    pub token_env: String,
    /// Items per request (1..=1000).
    pub count: u32,
    /// Seconds between polls.
    pub poll_interval_secs: u64,
    /// How far back the first poll reads, in hours; 0: the whole stream.
    pub lookback_hours: u64,
    /// Prefix of the Redis keys holding the cursor and the ids already published.
    pub store_prefix: String,
}

impl Default for FeedlySettings {
    fn default() -> Self {
        FeedlySettings {
            base_url: DEFAULT_BASE_URL.into(),
            stream_id: String::new(),
            token: Token::default(),
            token_env: TOKEN_ENV.into(),
            count: 100,
            poll_interval_secs: 600,
            lookback_hours: 24,
            store_prefix: "auroraq:feedly:".into(),
        }
    }
}

impl FeedlySettings {
    /// The connector's settings for `stream_id` (the defaults of [`FeedlyConfig::new`] for what
    /// the section does not name; a poll interval of at least a second). Not validated here:
    /// [`FeedlyConnector::new`](crate::FeedlyConnector::new) does.
    pub fn connector_config(&self) -> FeedlyConfig {
        let mut fc = FeedlyConfig::new(self.stream_id.clone());
        fc.base_url = self.base_url.clone();
        fc.token = (!self.token.is_blank()).then(|| self.token.clone());
        fc.token_env = self.token_env.clone();
        fc.count = self.count;
        fc.poll_interval = Duration::from_secs(self.poll_interval_secs.max(1));
        fc.lookback =
            (self.lookback_hours > 0).then(|| Duration::from_secs(self.lookback_hours.saturating_mul(3600)));
        fc
    }

    /// The Redis store's settings at `url`, its keys under `store_prefix`.
    pub fn store_config(&self, url: impl Into<String>) -> RedisStoreConfig {
        let mut rc = RedisStoreConfig::new(url);
        rc.key_prefix = self.store_prefix.clone();
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_redacted_in_debug() {
        let mut cfg = FeedlyConfig::new("feed/x");
        cfg.token = Some(Token::new("s3cr3t-token-value"));
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("Token(<redacted>)"));
    }

    #[test]
    fn token_comes_from_config_then_env() {
        let mut cfg = FeedlyConfig::new("feed/x");
        cfg.token_env = "AURORAQ_FEEDLY_TEST_TOKEN_NEVER_SET".into();
        let err = cfg.resolve_token().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("AURORAQ_FEEDLY_TEST_TOKEN_NEVER_SET"), "{msg}");
        cfg.token = Some(Token::new("  "));
        assert!(cfg.resolve_token().is_err(), "a blank token is no token");
        cfg.token = Some(Token::new(" abc \n"));
        assert_eq!(cfg.resolve_token().unwrap().expose(), "abc");
        // PATH is always set: stands in for a token found in the environment.
        cfg.token = None;
        cfg.token_env = "PATH".into();
        assert!(cfg.resolve_token().is_ok());
    }

    #[test]
    fn settings_section() {
        let d = FeedlySettings::default();
        assert_eq!(
            serde_json::to_value(&d).expect("serialises"),
            serde_json::json!({
                "base_url": "https://cloud.feedly.com",
                "stream_id": "",
                "token": "",
                "token_env": "FEEDLY_TOKEN",
                "count": 100,
                "poll_interval_secs": 600,
                "lookback_hours": 24,
                "store_prefix": "auroraq:feedly:",
            })
        );
        let fc = d.connector_config();
        assert!(fc.token.is_none(), "an empty token is none");
        assert_eq!(fc.lookback, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(fc.poll_interval, Duration::from_secs(600));
        assert_eq!(d.store_config("redis://x").key_prefix, "auroraq:feedly:");

        let s: FeedlySettings = serde_json::from_value(serde_json::json!({
            "stream_id": "feed/x",
            "token": "s3cr3t",
            "count": 7,
            "poll_interval_secs": 0,
            "lookback_hours": 0,
            "store_prefix": "p:",
        }))
        .expect("parses");
        assert_eq!(s.base_url, DEFAULT_BASE_URL, "unset keys keep defaults");
        assert!(!format!("{s:?}").contains("s3cr3t"), "the token is redacted");
        let fc = s.connector_config();
        assert_eq!(fc.stream_id, "feed/x");
        assert_eq!(fc.token.as_ref().map(Token::expose), Some("s3cr3t"));
        assert_eq!(fc.count, 7);
        assert_eq!(fc.poll_interval, Duration::from_secs(1), "at least a second");
        assert_eq!(fc.lookback, None, "0: the whole stream");
        assert!(fc.validate().is_ok());
        assert_eq!(s.store_config("redis://x").key_prefix, "p:");

        let e = serde_json::from_value::<FeedlySettings>(serde_json::json!({"tokn": "x"}))
            .expect_err("unknown key");
        assert!(e.to_string().contains("tokn"), "{e}");
    }

    #[test]
    fn validates() {
        assert!(FeedlyConfig::new("feed/x").validate().is_ok());
        assert!(FeedlyConfig::new(" ").validate().is_err());
        let mut c = FeedlyConfig::new("feed/x");
        c.base_url = "cloud.feedly.com".into();
        assert!(c.validate().is_err());
        let mut c = FeedlyConfig::new("feed/x");
        c.count = 1001;
        assert!(c.validate().is_err());
    }
}
