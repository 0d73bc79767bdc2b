//! The REST client for Binance's public market data: `/api/v3/depth` snapshots and
//! `/api/v3/klines` pages (`/fapi/v1/...` on USDⓈ-M futures, by [`RestConfig::venue`]).
//!
//! It keeps to the IP's request-weight budget: every response's `X-MBX-USED-WEIGHT-1M` is
//! read, and once the used weight reaches the soft limit (80% of 6000 by default) requests wait
//! for the next weight window. A 429 or 418 makes every request of this client wait the
//! `Retry-After` seconds (a `rate_limited` [`FeedStatus`] goes out on the status channel), a 5xx
//! or a transport error is retried with backoff, and every error names the URL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auroraq_schemas::{now_micros, EventKind, FeedState, FeedStatus, Kline, Meta};
use auroraq_util::{parse_retry_after, redact};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::RestConfig;
use crate::decode::{self, DecodeError, DepthSnapshot};

/// Why a REST call failed, with the URL it went to.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("GET {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("GET {url}: HTTP {status}, still rate limited after {tries} tries")]
    RateLimited { url: String, status: u16, tries: u32 },
    #[error(
        "GET {url}: HTTP {status} with Retry-After {retry_after:?}, longer than the {max:?} allowed to wait"
    )]
    Banned {
        url: String,
        status: u16,
        retry_after: Duration,
        max: Duration,
    },
    #[error("GET {url}: response does not decode: {source}")]
    Decode {
        url: String,
        #[source]
        source: DecodeError,
    },
    #[error("GET {url}: stopped")]
    Cancelled { url: String },
}

/// Rate-limit state shared by all requests of one client.
#[derive(Debug, Default)]
struct Gate {
    /// No request before this (after a 429/418)...
    blocked_until: Option<Instant>,
    /// ...because of this status.
    blocked_status: u16,
    /// The last used weight read, and the weight window (index) it was read in.
    used: Option<(u32, i64)>,
}

/// What a client has seen, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestCounters {
    pub requests: u64,
    pub rate_limited: u64,
    pub retries: u64,
    /// Waits because the used weight reached the soft limit.
    pub weight_waits: u64,
    pub last_used_weight: u32,
}

/// A Binance REST client (cheap to clone; clones share the rate-limit state).
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    cfg: Arc<RestConfig>,
    exchange: String,
    gate: Arc<Mutex<Gate>>,
    counters: Arc<Mutex<RestCounters>>,
    statuses: Option<mpsc::UnboundedSender<FeedStatus>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.cfg.base_url)
            .finish()
    }
}

fn window_index(window: Duration) -> (i64, Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let w = window.as_micros().max(1);
    let n = now.as_micros();
    let idx = (n / w) as i64;
    let left = Duration::from_micros((w - n % w) as u64);
    (idx, left)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v, SystemTime::now())
}

/// Binance's error body `{"code":-1121,"msg":"Invalid symbol."}`, or the start of the body.
fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<i64>,
        msg: Option<String>,
    }
    match serde_json::from_str::<E>(body) {
        Ok(E {
            code: Some(c),
            msg: Some(m),
        }) => format!("{m} (code {c})"),
        _ => body.chars().take(200).collect(),
    }
}

impl RestClient {
    /// A client for `cfg`; statuses it publishes name `exchange` as their feed.
    pub fn new(cfg: RestConfig, exchange: &str) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(cfg.user_agent.clone())
            .build()
            .map_err(RestError::Client)?;
        Ok(RestClient {
            http,
            cfg: Arc::new(cfg),
            exchange: exchange.to_owned(),
            gate: Arc::default(),
            counters: Arc::default(),
            statuses: None,
            cancel: CancellationToken::new(),
        })
    }

    /// Sends a `rate_limited` [`FeedStatus`] here whenever Binance answers 429 or 418.
    pub fn with_status_channel(mut self, tx: mpsc::UnboundedSender<FeedStatus>) -> Self {
        self.statuses = Some(tx);
        self
    }

    /// Waits (for weight, `Retry-After`, backoff) end early with [`RestError::Cancelled`] once
    /// `cancel` fires.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    pub fn config(&self) -> &RestConfig {
        &self.cfg
    }

    pub fn counters(&self) -> RestCounters {
        self.counters.lock().map(|c| *c).unwrap_or_default()
    }

    fn count(&self, f: impl FnOnce(&mut RestCounters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(&mut c);
        }
    }

    async fn sleep(&self, d: Duration, url: &str) -> Result<(), RestError> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(RestError::Cancelled { url: redact(url) }),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// How long the next request must wait: a `Retry-After` in force, or the rest of the weight
    /// window once the soft limit is reached.
    fn wait_needed(&self) -> Option<(Duration, &'static str)> {
        let gate = self.gate.lock().ok()?;
        let now = Instant::now();
        if let Some(until) = gate.blocked_until {
            if until > now {
                return Some((until - now, "retry_after"));
            }
        }
        if let Some((used, idx)) = gate.used {
            let (cur, left) = window_index(self.cfg.weight_window);
            if idx == cur && used >= self.cfg.soft_limit() {
                // A little past the boundary, so the server's window has turned too.
                return Some((left + Duration::from_millis(5), "weight"));
            }
        }
        None
    }

    async fn pass_gate(&self, url: &str) -> Result<(), RestError> {
        while let Some((d, why)) = self.wait_needed() {
            if why == "retry_after" && d > self.cfg.max_retry_after {
                // Banned for longer than we wait: fail now rather than sleep for days.
                let status = self.gate.lock().map(|g| g.blocked_status).unwrap_or(418);
                return Err(RestError::Banned {
                    url: redact(url),
                    status,
                    retry_after: d,
                    max: self.cfg.max_retry_after,
                });
            }
            if why == "weight" {
                self.count(|c| c.weight_waits += 1);
                debug!(url = %redact(url), wait_ms = d.as_millis() as u64, "used weight near the budget; waiting for the next window");
            }
            self.sleep(d, url).await?;
        }
        Ok(())
    }

    fn note_weight(&self, headers: &reqwest::header::HeaderMap) {
        let used = headers
            .get(self.cfg.weight_header.to_ascii_lowercase().as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(used) = used {
            let (idx, _) = window_index(self.cfg.weight_window);
            if let Ok(mut g) = self.gate.lock() {
                g.used = Some((used, idx));
            }
            self.count(|c| c.last_used_weight = used);
        }
    }

    fn rate_limited_status(
        &self,
        path: &str,
        symbol: Option<&str>,
        status: u16,
        wait: Duration,
    ) -> FeedStatus {
        let ts = now_micros();
        FeedStatus {
            meta: Meta::raw(
                EventKind::FeedStatus,
                &self.exchange,
                &format!("rest:{path}:{status}:{ts}"),
                ts,
                ts,
            ),
            feed: self.exchange.clone(),
            stream: format!("rest:{path}"),
            symbol: symbol.map(str::to_owned),
            status: FeedState::RateLimited,
            detail: format!(
                "HTTP {status} on {path}: waiting {} s (Retry-After)",
                wait.as_secs_f64()
            ),
            attributes: [
                ("http_status".to_owned(), status.to_string()),
                ("retry_after_ms".to_owned(), wait.as_millis().to_string()),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// GETs `path` with `query`, waiting and retrying as the limits require; returns the body.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        symbol: Option<&str>,
    ) -> Result<String, RestError> {
        let mut url = format!("{}{}", self.cfg.base_url.trim_end_matches('/'), path);
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            url = format!("{url}?{}", q.join("&"));
        }
        let mut tries = 0u32;
        loop {
            self.pass_gate(&url).await?;
            tries += 1;
            self.count(|c| c.requests += 1);
            let sent = tokio::select! {
                _ = self.cancel.cancelled() => return Err(RestError::Cancelled { url: redact(&url) }),
                r = self.http.get(&url).send() => r,
            };
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    if tries > self.cfg.max_retries {
                        return Err(RestError::Transport {
                            url: redact(&url),
                            source: e.without_url(),
                        });
                    }
                    let d = self.cfg.retry_backoff.delay(tries - 1);
                    warn!(url = %redact(&url), error = %e.without_url(), retry_in_ms = d.as_millis() as u64, "request failed; retrying");
                    self.count(|c| c.retries += 1);
                    self.sleep(d, &url).await?;
                    continue;
                }
            };
            self.note_weight(resp.headers());
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status.as_u16() == 418 {
                let wait = retry_after(resp.headers()).unwrap_or(self.cfg.default_retry_after);
                self.count(|c| c.rate_limited += 1);
                if let Ok(mut g) = self.gate.lock() {
                    // A huge Retry-After saturates (and is refused below): block for a year then.
                    let now = Instant::now();
                    let until = now
                        .checked_add(wait)
                        .unwrap_or(now + Duration::from_secs(365 * 86_400));
                    g.blocked_until = Some(g.blocked_until.map_or(until, |u| u.max(until)));
                    g.blocked_status = status.as_u16();
                }
                if wait > self.cfg.max_retry_after {
                    return Err(RestError::Banned {
                        url: redact(&url),
                        status: status.as_u16(),
                        retry_after: wait,
                        max: self.cfg.max_retry_after,
                    });
                }
                warn!(url = %redact(&url), status = status.as_u16(), retry_after_s = wait.as_secs_f64(), "rate limited; waiting");
                if let Some(tx) = &self.statuses {
                    let _ = tx.send(self.rate_limited_status(path, symbol, status.as_u16(), wait));
                }
                if tries > self.cfg.max_retries {
                    return Err(RestError::RateLimited {
                        url: redact(&url),
                        status: status.as_u16(),
                        tries,
                    });
                }
                continue;
            }
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) => {
                    if tries > self.cfg.max_retries {
                        return Err(RestError::Transport {
                            url: redact(&url),
                            source: e.without_url(),
                        });
                    }
                    self.count(|c| c.retries += 1);
                    self.sleep(self.cfg.retry_backoff.delay(tries - 1), &url).await?;
                    continue;
                }
            };
            if status.is_success() {
                return Ok(body);
            }
            if status.is_server_error() && tries <= self.cfg.max_retries {
                let d = self.cfg.retry_backoff.delay(tries - 1);
                warn!(url = %redact(&url), status = status.as_u16(), retry_in_ms = d.as_millis() as u64, "server error; retrying");
                self.count(|c| c.retries += 1);
                self.sleep(d, &url).await?;
                continue;
            }
            return Err(RestError::Status {
                url: redact(&url),
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
    }

    /// `GET /api/v3/depth?symbol=..&limit=..` (`/fapi/v1/depth` on USDⓈ-M futures), decoded.
    pub async fn depth_snapshot(&self, symbol: &str, limit: u32) -> Result<DepthSnapshot, RestError> {
        let symbol = symbol.to_ascii_uppercase();
        let query = [("symbol", symbol.clone()), ("limit", limit.to_string())];
        let path = self.cfg.venue.depth_path();
        let body = self.get(path, &query, Some(&symbol)).await?;
        decode::snapshot(&symbol, &body, now_micros()).map_err(|source| RestError::Decode {
            url: format!("{}{path}?symbol={symbol}&limit={limit}", self.cfg.base_url),
            source,
        })
    }

    /// One page of `GET /api/v3/klines` (`/fapi/v1/klines` on USDⓈ-M futures; times in epoch
    /// milliseconds, as Binance takes them).
    pub async fn klines(
        &self,
        symbol: &str,
        interval: &str,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Kline>, RestError> {
        let symbol = symbol.to_ascii_uppercase();
        let mut query = vec![("symbol", symbol.clone()), ("interval", interval.to_owned())];
        if let Some(s) = start_ms {
            query.push(("startTime", s.to_string()));
        }
        if let Some(e) = end_ms {
            query.push(("endTime", e.to_string()));
        }
        query.push(("limit", limit.to_string()));
        let path = self.cfg.venue.klines_path();
        let body = self.get(path, &query, Some(&symbol)).await?;
        decode::rest_klines(&self.exchange, &symbol, interval, &body, now_micros()).map_err(|source| {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            RestError::Decode {
                url: format!("{}{path}?{}", self.cfg.base_url, q.join("&")),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_error_bodies() {
        assert_eq!(
            error_message(r#"{"code":-1121,"msg":"Invalid symbol."}"#),
            "Invalid symbol. (code -1121)"
        );
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }
}
