//! The poll loop: fetch pages, follow continuations, drop what was seen, publish the rest.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use auroraq_bus::{Bus, OutMessage, PublishReport};
use auroraq_schemas::{now_micros, AnyEvent, EventKind, FeedState, FeedStatus, Meta};
use auroraq_stage::to_message;
use auroraq_util::{
    jitter_up, parse_retry_after, sleep_or_cancel, until_cancelled, Backoff, CancellationToken,
};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::config::FeedlyConfig;
use crate::parse::{parse_page_with, ParsedPage};
use crate::store::FeedlyStore;
use crate::FeedlyError;

/// Counts of one connector, since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FeedlyStats {
    /// Polls completed (every continuation page followed).
    pub polls: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Well-formed pages read.
    pub pages: u64,
    /// Items in those pages.
    pub items: u64,
    /// Articles published.
    pub articles: u64,
    /// Items skipped because their id was already published (the seen-id store).
    pub duplicates: u64,
    /// Dead letters published (unreadable items, malformed pages).
    pub dead_letters: u64,
    /// Responses whose body was not a stream page.
    pub malformed_pages: u64,
    /// 429 responses.
    pub rate_limits: u64,
    /// Tries repeated after a failure: 429, 5xx, network error, timeout, malformed page, store or
    /// bus error.
    pub retries: u64,
    /// Messages the bus dropped as duplicates of recent ones (should stay 0: the store filters
    /// first).
    pub bus_duplicates: u64,
    /// Polls that stopped at `max_pages_per_poll` with pages left (published as `gap`).
    pub gaps: u64,
}

/// What one HTTP request gave.
enum Reply {
    Body(Vec<u8>),
    RateLimited {
        retry_after: Option<Duration>,
        header: Option<String>,
    },
    /// Worth retrying: 5xx, 408, network error, timeout, body too large.
    Transient {
        what: String,
        status: Option<u16>,
    },
    Fatal(FeedlyError),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Unknown,
    Up,
    Down,
}

/// A Feedly connector for one stream. Cheap to share; [`FeedlyConnector::run`] polls until cancelled.
pub struct FeedlyConnector {
    cfg: FeedlyConfig,
    store: Arc<dyn FeedlyStore>,
    http: reqwest::Client,
    url: String,
    stats: Mutex<FeedlyStats>,
    link: Mutex<Link>,
}

impl std::fmt::Debug for FeedlyConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedlyConnector")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl FeedlyConnector {
    /// Checks the configuration, finds the token (configuration, else `$FEEDLY_TOKEN`) and builds
    /// the HTTP client. Fails with [`FeedlyError::MissingToken`] when there is no token.
    pub fn new(cfg: FeedlyConfig, store: Arc<dyn FeedlyStore>) -> Result<Self, FeedlyError> {
        cfg.validate()?;
        let token = cfg.resolve_token()?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            FeedlyError::Config("the access token holds characters not allowed in an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(cfg.user_agent.clone())
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(FeedlyError::Client)?;
        let url = format!("{}/v3/streams/contents", cfg.base_url.trim_end_matches('/'));
        Ok(FeedlyConnector {
            cfg,
            store,
            http,
            url,
            stats: Mutex::new(FeedlyStats::default()),
            link: Mutex::new(Link::Unknown),
        })
    }

    pub fn config(&self) -> &FeedlyConfig {
        &self.cfg
    }

    /// The counts so far (also while [`run`](Self::run) runs).
    pub fn stats(&self) -> FeedlyStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn bump(&self, f: impl FnOnce(&mut FeedlyStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.backoff_initial, self.cfg.backoff_max)
    }

    /// Polls the stream every `poll_interval` (once, with `once`) until `cancel` fires, publishing
    /// articles on `news.articles.feedly`, dead letters on `dlq.feedly` and link changes on
    /// `feeds.status.feedly`. Transient failures are retried with backoff; what cannot be retried
    /// (a rejected token, a refused request, an unreadable store at start) ends it with an error.
    /// Returns the counts.
    pub async fn run(&self, bus: &dyn Bus, cancel: CancellationToken) -> Result<FeedlyStats, FeedlyError> {
        let stream = self.cfg.stream_id.as_str();
        info!(
            stream,
            base_url = %self.cfg.base_url,
            count = self.cfg.count,
            poll_interval_s = self.cfg.poll_interval.as_secs_f64(),
            once = self.cfg.once,
            "feedly connector starting"
        );
        let mut cursor = self.store.cursor(stream).await?;
        debug!(stream, ?cursor, "cursor loaded");
        while !cancel.is_cancelled() {
            let began = now_micros();
            if !self.poll(bus, &cancel, &mut cursor).await? {
                break;
            }
            self.bump(|s| s.polls += 1);
            self.watermark(bus, began).await;
            if self.cfg.once || !self.wait_marking(bus, &cancel).await {
                break;
            }
        }
        bus.flush().await?;
        let stats = self.stats();
        info!(stream, ?stats, "feedly connector stopped");
        Ok(stats)
    }

    /// The watermark at `now` (see [`FeedlyConfig::watermark_lateness`]).
    async fn watermark(&self, bus: &dyn Bus, now: i64) {
        let Some(lateness) = self.cfg.watermark_lateness else {
            return;
        };
        let w = now.saturating_sub(lateness.as_micros() as i64);
        let topics = [auroraq_bus::topics::articles("feedly")];
        if let Err(e) = auroraq_stage::watermark::publish_watermark(bus, &topics, w, "feedly").await {
            warn!(error = %e, "cannot publish the watermark; the next one will cover it");
        }
    }

    /// Waits `poll_interval`, announcing the watermark every second. False when cancelled.
    async fn wait_marking(&self, bus: &dyn Bus, cancel: &CancellationToken) -> bool {
        let until = tokio::time::Instant::now() + self.cfg.poll_interval;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            if !sleep_or_cancel(left.min(Duration::from_secs(1)), cancel).await {
                return false;
            }
            self.watermark(bus, now_micros()).await;
        }
    }

    /// One poll: every page from the cursor on. Returns false when cancelled midway.
    async fn poll(
        &self,
        bus: &dyn Bus,
        cancel: &CancellationToken,
        cursor: &mut Option<i64>,
    ) -> Result<bool, FeedlyError> {
        let stream = self.cfg.stream_id.as_str();
        let newer_than = match *cursor {
            Some(c) => Some(
                c.saturating_sub(self.cfg.cursor_overlap.as_millis() as i64)
                    .max(0),
            ),
            None => self
                .cfg
                .lookback
                .map(|d| (now_micros() / 1000).saturating_sub(d.as_millis() as i64).max(0)),
        };
        let mut continuation: Option<String> = None;
        let mut newest = *cursor;
        let mut pages = 0u32;
        loop {
            let Some(page) = self
                .fetch_page(bus, cancel, newer_than, continuation.as_deref())
                .await?
            else {
                return Ok(false);
            };
            pages += 1;
            newest = newest.max(page.newest_crawled_ms);
            let next = page.continuation.clone();
            if !self.deliver(bus, cancel, page).await? {
                return Ok(false);
            }
            match next {
                None => break,
                Some(c) if continuation.as_deref() == Some(c.as_str()) => {
                    warn!(stream, continuation = %c, "Feedly returned the same continuation twice; ending this poll");
                    break;
                }
                Some(c) if pages >= self.cfg.max_pages_per_poll => {
                    warn!(
                        stream,
                        pages,
                        "max_pages_per_poll reached with pages left: older items of this poll are skipped"
                    );
                    self.bump(|s| s.gaps += 1);
                    let mut attrs = BTreeMap::new();
                    attrs.insert("pages".to_owned(), pages.to_string());
                    attrs.insert("continuation".to_owned(), c);
                    self.status(
                        bus,
                        FeedState::Gap,
                        format!("stopped after {pages} pages (max_pages_per_poll); older items of this poll were skipped"),
                        attrs,
                    )
                    .await;
                    break;
                }
                Some(c) => continuation = Some(c),
            }
        }
        if let Some(n) = newest.filter(|n| Some(*n) > *cursor) {
            let saved = self
                .retrying(cancel, "saving the cursor", || self.store.set_cursor(stream, n))
                .await;
            if saved.is_none() {
                return Ok(false);
            }
            *cursor = Some(n);
        }
        info!(stream, pages, ?newer_than, cursor = ?*cursor, "poll done");
        Ok(true)
    }

    /// Fetches one page, retrying until it is well-formed. `None` when cancelled.
    async fn fetch_page(
        &self,
        bus: &dyn Bus,
        cancel: &CancellationToken,
        newer_than: Option<i64>,
        continuation: Option<&str>,
    ) -> Result<Option<ParsedPage>, FeedlyError> {
        let stream = self.cfg.stream_id.as_str();
        let mut backoff = self.backoff();
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            self.bump(|s| s.requests += 1);
            debug!(stream, ?newer_than, continuation, "GET streams/contents");
            let Some(reply) = until_cancelled(cancel, self.request(newer_than, continuation)).await else {
                return Ok(None);
            };
            let wait = match reply {
                Reply::Body(body) => {
                    let page = parse_page_with(&body, now_micros(), &self.cfg.parse);
                    let Some(why) = page.page_error.clone() else {
                        self.bump(|s| {
                            s.pages += 1;
                            s.items += page.items as u64;
                        });
                        self.link_up(bus).await;
                        return Ok(Some(page));
                    };
                    warn!(stream, error = %why, "malformed page: dead-lettered; retrying");
                    self.bump(|s| s.malformed_pages += 1);
                    let letters: Vec<AnyEvent> =
                        page.dead_letters.into_iter().map(AnyEvent::DeadLetter).collect();
                    if self.publish(bus, cancel, &letters).await?.is_none() {
                        return Ok(None);
                    }
                    self.bump(|s| s.dead_letters += letters.len() as u64);
                    backoff.next_delay()
                }
                Reply::RateLimited { retry_after, header } => {
                    self.bump(|s| s.rate_limits += 1);
                    let wait = match retry_after {
                        Some(ra) => jitter_up(ra.min(self.cfg.max_retry_after).max(self.cfg.backoff_initial)),
                        None => backoff.next_delay(),
                    };
                    warn!(stream, retry_after = ?header, wait_s = wait.as_secs_f64(), "rate limited (429)");
                    let mut attrs = BTreeMap::new();
                    attrs.insert("http_status".to_owned(), "429".to_owned());
                    attrs.insert("retry_after_ms".to_owned(), wait.as_millis().to_string());
                    if let Some(h) = header {
                        attrs.insert("retry_after".to_owned(), h);
                    }
                    self.set_link(Link::Down);
                    self.status(
                        bus,
                        FeedState::RateLimited,
                        format!("Feedly answered 429; next request in {:.1} s", wait.as_secs_f64()),
                        attrs,
                    )
                    .await;
                    wait
                }
                Reply::Transient { what, status } => {
                    let wait = backoff.next_delay();
                    warn!(stream, error = %what, wait_s = wait.as_secs_f64(), "request failed; retrying");
                    self.link_down(bus, &what, status).await;
                    wait
                }
                Reply::Fatal(e) => {
                    self.link_down(bus, &e.to_string(), None).await;
                    return Err(e);
                }
            };
            self.bump(|s| s.retries += 1);
            if !sleep_or_cancel(wait, cancel).await {
                return Ok(None);
            }
        }
    }

    async fn request(&self, newer_than: Option<i64>, continuation: Option<&str>) -> Reply {
        let mut query: Vec<(&str, String)> = vec![
            ("streamId", self.cfg.stream_id.clone()),
            ("count", self.cfg.count.to_string()),
        ];
        if let Some(n) = newer_than {
            query.push(("newerThan", n.to_string()));
        }
        if let Some(c) = continuation {
            query.push(("continuation", c.to_owned()));
        }
        let resp = match self.http.get(&self.url).query(&query).send().await {
            Ok(r) => r,
            Err(e) => {
                return Reply::Transient {
                    what: describe(&e),
                    status: None,
                }
            }
        };
        let status = resp.status();
        if status.is_success() {
            return match self.read_body(resp).await {
                Ok(b) => Reply::Body(b),
                Err(what) => Reply::Transient { what, status: None },
            };
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let header = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let retry_after = header
                .as_deref()
                .and_then(|h| parse_retry_after(h, SystemTime::now()));
            return Reply::RateLimited { retry_after, header };
        }
        let code = status.as_u16();
        let url = format!("{}?streamId={}", self.url, self.cfg.stream_id);
        let detail = self
            .read_body(resp)
            .await
            .map(|b| body_excerpt(&b))
            .unwrap_or_default();
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Reply::Transient {
                what: format!("HTTP {code} from {url}: {detail}"),
                status: Some(code),
            };
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Reply::Fatal(FeedlyError::Unauthorized {
                status: code,
                url,
                detail,
            });
        }
        Reply::Fatal(FeedlyError::Refused {
            status: code,
            url,
            detail,
        })
    }

    /// The body, at most `max_body_bytes`.
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.cfg.max_body_bytes {
                        return Err(format!(
                            "response body exceeds max_body_bytes ({})",
                            self.cfg.max_body_bytes
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(format!(
                        "reading the body after {} bytes: {}",
                        body.len(),
                        describe(&e)
                    ))
                }
            }
        }
    }

    /// Publishes a page's new articles and dead letters, and remembers them. False when cancelled.
    async fn deliver(
        &self,
        bus: &dyn Bus,
        cancel: &CancellationToken,
        page: ParsedPage,
    ) -> Result<bool, FeedlyError> {
        let mut keys = Vec::with_capacity(page.articles.len() + page.dead_letters.len());
        keys.extend(page.articles.iter().map(|a| a.article_id.clone()));
        keys.extend(
            page.dead_letters
                .iter()
                .map(|d| format!("dead:{}", d.meta.event_id)),
        );
        if keys.is_empty() {
            return Ok(true);
        }
        let Some(seen) = self
            .retrying(cancel, "checking seen ids", || self.store.seen(&keys))
            .await
        else {
            return Ok(false);
        };
        let mut in_page = HashSet::new();
        let mut fresh_keys = Vec::new();
        let mut events = Vec::new();
        let (mut articles, mut letters, mut duplicates) = (0u64, 0u64, 0u64);
        let n_articles = page.articles.len();
        let all = page
            .articles
            .into_iter()
            .map(AnyEvent::Article)
            .chain(page.dead_letters.into_iter().map(AnyEvent::DeadLetter));
        for (i, ev) in all.enumerate() {
            let key = &keys[i];
            let was_seen = seen.get(i).copied().unwrap_or(false) || !in_page.insert(key.clone());
            let is_article = i < n_articles;
            match (was_seen, is_article) {
                (true, true) => duplicates += 1,
                (true, false) => {}
                (false, true) => articles += 1,
                (false, false) => letters += 1,
            }
            if !was_seen {
                fresh_keys.push(key.clone());
                events.push(ev);
            }
        }
        // The receipt: where each article's trace starts (exported only when traces are on).
        auroraq_stage::trace::record_receipts("feedly", &events);
        let Some(report) = self.publish(bus, cancel, &events).await? else {
            return Ok(false);
        };
        if self
            .retrying(cancel, "marking ids seen", || self.store.mark_seen(&fresh_keys))
            .await
            .is_none()
        {
            return Ok(false);
        }
        self.bump(|s| {
            s.articles += articles;
            s.dead_letters += letters;
            s.duplicates += duplicates;
            s.bus_duplicates += report.duplicates as u64;
        });
        debug!(
            stream = %self.cfg.stream_id,
            articles,
            dead_letters = letters,
            duplicates,
            "page delivered"
        );
        Ok(true)
    }

    /// Encodes and publishes, retrying bus failures. `None` when cancelled.
    async fn publish(
        &self,
        bus: &dyn Bus,
        cancel: &CancellationToken,
        events: &[AnyEvent],
    ) -> Result<Option<PublishReport>, FeedlyError> {
        if events.is_empty() {
            return Ok(Some(PublishReport::default()));
        }
        let msgs = events
            .iter()
            .map(to_message)
            .collect::<Result<Vec<OutMessage>, _>>()
            .map_err(FeedlyError::Encode)?;
        Ok(self
            .retrying(cancel, "publishing", || bus.publish(msgs.clone()))
            .await)
    }

    /// Runs `op` until it succeeds, backing off between tries. `None` when cancelled.
    async fn retrying<T, E, F, Fut>(&self, cancel: &CancellationToken, what: &str, mut op: F) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut backoff = self.backoff();
        loop {
            match until_cancelled(cancel, op()).await? {
                Ok(v) => return Some(v),
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(stream = %self.cfg.stream_id, error = %e, wait_s = wait.as_secs_f64(), "{what} failed; retrying");
                    self.bump(|s| s.retries += 1);
                    if !sleep_or_cancel(wait, cancel).await {
                        return None;
                    }
                }
            }
        }
    }

    fn set_link(&self, to: Link) -> Link {
        match self.link.lock() {
            Ok(mut l) => std::mem::replace(&mut *l, to),
            Err(_) => Link::Unknown,
        }
    }

    async fn link_up(&self, bus: &dyn Bus) {
        if self.set_link(Link::Up) != Link::Up {
            info!(stream = %self.cfg.stream_id, "connected to Feedly");
            self.status(
                bus,
                FeedState::Connected,
                "pages are being read".into(),
                BTreeMap::new(),
            )
            .await;
        }
    }

    async fn link_down(&self, bus: &dyn Bus, why: &str, status: Option<u16>) {
        if self.set_link(Link::Down) != Link::Down {
            let mut attrs = BTreeMap::new();
            if let Some(s) = status {
                attrs.insert("http_status".to_owned(), s.to_string());
            }
            self.status(bus, FeedState::Disconnected, why.to_owned(), attrs)
                .await;
        }
    }

    /// Publishes a [`FeedStatus`] on `feeds.status.<source>`; a failure is logged, not retried.
    async fn status(
        &self,
        bus: &dyn Bus,
        state: FeedState,
        detail: String,
        attributes: BTreeMap<String, String>,
    ) {
        let now = now_micros();
        let source = self.cfg.parse.source.as_str();
        let native = format!("{}:{state:?}:{now}", self.cfg.stream_id);
        let ev = AnyEvent::FeedStatus(FeedStatus {
            meta: Meta::raw(EventKind::FeedStatus, source, &native, now, now),
            feed: source.to_owned(),
            stream: self.cfg.stream_id.clone(),
            symbol: None,
            status: state,
            detail,
            attributes,
        });
        let sent = match to_message(&ev) {
            Ok(m) => bus.publish(vec![m]).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            warn!(stream = %self.cfg.stream_id, error = %e, ?state, "cannot publish a feed status");
        }
    }
}

/// Polls with a new [`FeedlyConnector`] until `cancel` fires (see [`FeedlyConnector::run`]).
pub async fn run(
    bus: &dyn Bus,
    store: Arc<dyn FeedlyStore>,
    cfg: FeedlyConfig,
    cancel: CancellationToken,
) -> Result<FeedlyStats, FeedlyError> {
    FeedlyConnector::new(cfg, store)?.run(bus, cancel).await
}

/// A reqwest error with its causes (reqwest's own message hides them), never with a token: the
/// token is in a header, and reqwest errors carry only the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn body_excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn errors_go_into_anyhow_style_boxes() {
        fn check<E: std::error::Error + Send + Sync + 'static>() {}
        check::<FeedlyError>();
        check::<crate::StoreError>();
    }

    #[test]
    fn run_future_is_send() {
        let mut cfg = FeedlyConfig::new("feed/x");
        cfg.token = Some(crate::Token::new("t"));
        let c = FeedlyConnector::new(cfg, Arc::new(MemoryStore::default())).unwrap();
        let bus = auroraq_bus::InProcBus::new(auroraq_bus::InProcConfig::default());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let fut = c.run(&bus, cancel);
        assert_send(&fut);
    }

    #[test]
    fn missing_token_fails_early() {
        let mut cfg = FeedlyConfig::new("feed/x");
        cfg.token_env = "AURORAQ_FEEDLY_TEST_NO_SUCH_VAR".into();
        let err = FeedlyConnector::new(cfg, Arc::new(MemoryStore::default())).unwrap_err();
        assert!(matches!(err, FeedlyError::MissingToken { .. }), "{err}");
    }

    #[test]
    fn token_with_newline_is_a_config_error_without_the_token() {
        let mut cfg = FeedlyConfig::new("feed/x");
        cfg.token = Some(crate::Token::new("abc\ndef"));
        let err = FeedlyConnector::new(cfg, Arc::new(MemoryStore::default())).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FeedlyError::Config(_)));
        assert!(!msg.contains("abc"), "{msg}");
    }
}
