//! What the connector remembers between polls and across restarts: each stream's cursor (the
//! newest `crawled` time fully processed, epoch ms) and the ids it has published, so that a
//! re-fetched item is not published twice.
//!
//! [`RedisStore`] keeps them in Redis (durable, shared by restarts); [`MemoryStore`] keeps them in
//! the process, for library users who want no persistence. Both bound what they remember: an id
//! is forgotten after `seen_ttl`, and at most `max_seen` ids are kept (the oldest go first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use auroraq_util::redact;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

/// Failures of a store. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis {op} on {key} failed: {source}")]
    Redis {
        op: &'static str,
        key: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("stored cursor {key} is not a number: {value:?}")]
    BadCursor { key: String, value: String },
    #[error("invalid store settings: {0}")]
    Config(String),
}

/// The connector's memory. Implementations must be safe to share between tasks.
#[async_trait]
pub trait FeedlyStore: Send + Sync {
    /// The cursor of `stream`: the newest `crawled` time (epoch ms) of a completed poll.
    async fn cursor(&self, stream: &str) -> Result<Option<i64>, StoreError>;
    async fn set_cursor(&self, stream: &str, crawled_ms: i64) -> Result<(), StoreError>;
    /// For each key, whether it was marked seen (and not yet forgotten).
    async fn seen(&self, keys: &[String]) -> Result<Vec<bool>, StoreError>;
    async fn mark_seen(&self, keys: &[String]) -> Result<(), StoreError>;
}

/// How long and how many seen ids a store keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenLimits {
    /// An id is forgotten this long after it was last marked. Keep it well above the poll
    /// cursor's overlap, and above how long Feedly keeps serving an item under `newerThan`.
    pub seen_ttl: Duration,
    /// At most this many ids are kept; the oldest are forgotten first.
    pub max_seen: usize,
}

impl Default for SeenLimits {
    fn default() -> Self {
        SeenLimits {
            seen_ttl: Duration::from_secs(7 * 24 * 3600),
            max_seen: 200_000,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A store in the process's memory: nothing survives a restart.
pub struct MemoryStore {
    limits: SeenLimits,
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    cursors: HashMap<String, i64>,
    /// key → the number of its last mark.
    seen: HashMap<String, u64>,
    /// Marks in order (key, mark number, time in ms), for forgetting the oldest; an entry whose
    /// number no longer matches `seen` was re-marked later and is skipped.
    order: VecDeque<(String, u64, i64)>,
    marks: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(SeenLimits::default())
    }
}

impl MemoryStore {
    pub fn new(limits: SeenLimits) -> Self {
        MemoryStore {
            limits,
            inner: Mutex::new(MemoryInner::default()),
        }
    }

    /// Ids remembered now.
    pub fn seen_len(&self) -> usize {
        self.inner.lock().map(|g| g.seen.len()).unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryInner {
    fn forget_old(&mut self, now: i64, limits: &SeenLimits) {
        let oldest_kept = now - limits.seen_ttl.as_millis() as i64;
        while let Some((key, mark, at)) = self.order.front().cloned() {
            if self.seen.get(&key) != Some(&mark) {
                self.order.pop_front();
                continue;
            }
            if at < oldest_kept || self.seen.len() > limits.max_seen {
                self.seen.remove(&key);
                self.order.pop_front();
            } else {
                break;
            }
        }
    }
}

#[async_trait]
impl FeedlyStore for MemoryStore {
    async fn cursor(&self, stream: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().cursors.get(stream).copied())
    }

    async fn set_cursor(&self, stream: &str, crawled_ms: i64) -> Result<(), StoreError> {
        self.lock().cursors.insert(stream.to_owned(), crawled_ms);
        Ok(())
    }

    async fn seen(&self, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let now = now_ms();
        let mut g = self.lock();
        g.forget_old(now, &self.limits);
        Ok(keys.iter().map(|k| g.seen.contains_key(k)).collect())
    }

    async fn mark_seen(&self, keys: &[String]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut g = self.lock();
        for k in keys {
            g.marks += 1;
            let mark = g.marks;
            g.seen.insert(k.clone(), mark);
            g.order.push_back((k.clone(), mark, now));
        }
        g.forget_old(now, &self.limits);
        Ok(())
    }
}

/// Settings of a [`RedisStore`]. Its `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// e.g. `redis://127.0.0.1:6379` (`redis://:password@host:port/db` with a password).
    pub url: String,
    /// Prepended to every key: `<prefix>cursor:<stream>` (a string, epoch ms) and `<prefix>seen`
    /// (a sorted set of ids scored by when they were marked, epoch ms).
    pub key_prefix: String,
    pub limits: SeenLimits,
    /// Connect and response timeout of each Redis call.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("limits", &self.limits)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisStoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisStoreConfig {
            url: url.into(),
            key_prefix: "auroraq:feedly:".to_owned(),
            limits: SeenLimits::default(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A store in Redis: the cursor and the seen ids survive restarts and are shared by every
/// connector process using the same key prefix.
///
/// Seen ids live in one sorted set, scored by when they were marked: marking trims entries older
/// than `seen_ttl` and keeps the newest `max_seen`, and the whole set expires `seen_ttl` after
/// the last mark. A lost connection is re-opened on the next call.
pub struct RedisStore {
    cfg: RedisStoreConfig,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.cfg.key_prefix)
            .field("limits", &self.cfg.limits)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens the store and checks that Redis answers.
    pub async fn connect(cfg: RedisStoreConfig) -> Result<Self, StoreError> {
        if cfg.limits.max_seen == 0 || cfg.limits.seen_ttl.as_secs() == 0 {
            return Err(StoreError::Config(
                "max_seen and seen_ttl (at least 1 s) must be positive".into(),
            ));
        }
        let client = redis::Client::open(cfg.url.as_str()).map_err(|source| StoreError::Connect {
            url: redact(&cfg.url),
            source,
        })?;
        let store = RedisStore {
            cfg,
            client,
            conn: tokio::sync::Mutex::new(None),
        };
        let key = store.key("ping");
        match store.call::<String>("PING", &key, redis::cmd("PING")).await {
            Ok(_) => Ok(store),
            Err(StoreError::Redis { source, .. }) => Err(StoreError::Connect {
                url: redact(&store.cfg.url),
                source,
            }),
            Err(e) => Err(e),
        }
    }

    pub fn config(&self) -> &RedisStoreConfig {
        &self.cfg
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.cfg.key_prefix)
    }

    /// The key of the seen-id set.
    pub fn seen_key(&self) -> String {
        self.key("seen")
    }

    /// The key of a stream's cursor.
    pub fn cursor_key(&self, stream: &str) -> String {
        self.key(&format!("cursor:{stream}"))
    }

    /// Deletes every key under the prefix (a reset: the next poll starts afresh). Returns how
    /// many were deleted.
    pub async fn clear(&self) -> Result<usize, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.cfg.key_prefix));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .call(
                    "SCAN",
                    &pattern,
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .to_owned(),
                )
                .await?;
            if !keys.is_empty() {
                let n: usize = self
                    .call("DEL", &pattern, redis::cmd("DEL").arg(&keys).to_owned())
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn connection(&self, key: &str) -> Result<MultiplexedConnection, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(self.cfg.timeout)
            .set_response_timeout(self.cfg.timeout);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|source| StoreError::Redis {
                op: "connect",
                key: key.to_owned(),
                source,
            })?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn call<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        key: &str,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut c = self.connection(key).await?;
        match cmd.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(source) => Err(self.failed(op, key, source).await),
        }
    }

    async fn pipe<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        key: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut c = self.connection(key).await?;
        match pipe.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(source) => Err(self.failed(op, key, source).await),
        }
    }

    /// The error of a failed command; a broken connection is dropped, to be made again.
    async fn failed(&self, op: &'static str, key: &str, source: redis::RedisError) -> StoreError {
        self.drop_connection_on(&source).await;
        StoreError::Redis {
            op,
            key: key.to_owned(),
            source,
        }
    }

    async fn drop_connection_on(&self, e: &redis::RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
            *self.conn.lock().await = None;
        }
    }
}

#[async_trait]
impl FeedlyStore for RedisStore {
    async fn cursor(&self, stream: &str) -> Result<Option<i64>, StoreError> {
        let key = self.cursor_key(stream);
        let v: Option<String> = self
            .call("GET", &key, redis::cmd("GET").arg(&key).to_owned())
            .await?;
        match v {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| StoreError::BadCursor { key, value: s }),
        }
    }

    async fn set_cursor(&self, stream: &str, crawled_ms: i64) -> Result<(), StoreError> {
        let key = self.cursor_key(stream);
        self.call::<()>(
            "SET",
            &key,
            redis::cmd("SET").arg(&key).arg(crawled_ms).to_owned(),
        )
        .await
    }

    async fn seen(&self, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let set = self.seen_key();
        let mut p = redis::pipe();
        for k in keys {
            p.cmd("ZSCORE").arg(&set).arg(k);
        }
        let scores: Vec<Option<f64>> = self.pipe("ZSCORE", &set, &p).await?;
        // Entries past their time that no mark has trimmed yet count as forgotten.
        let oldest_kept = (now_ms() - self.cfg.limits.seen_ttl.as_millis() as i64) as f64;
        Ok(scores
            .into_iter()
            .map(|s| s.is_some_and(|at| at >= oldest_kept))
            .collect())
    }

    async fn mark_seen(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let set = self.seen_key();
        let now = now_ms();
        let ttl_ms = self.cfg.limits.seen_ttl.as_millis() as i64;
        let mut p = redis::pipe();
        p.atomic();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&set);
        for k in keys {
            zadd.arg(now).arg(k);
        }
        p.add_command(zadd).ignore();
        p.cmd("ZREMRANGEBYSCORE")
            .arg(&set)
            .arg("-inf")
            .arg(format!("({}", now - ttl_ms))
            .ignore();
        // Keep the newest max_seen: remove ranks 0 ..= -(max_seen + 1).
        p.cmd("ZREMRANGEBYRANK")
            .arg(&set)
            .arg(0)
            .arg(-(self.cfg.limits.max_seen as i64) - 1)
            .ignore();
        p.cmd("PEXPIRE").arg(&set).arg(ttl_ms).ignore();
        self.pipe::<()>("ZADD", &set, &p).await
    }
}

/// Escapes Redis glob characters, so a prefix matches only itself.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_remembers_and_bounds() {
        let s = MemoryStore::new(SeenLimits {
            seen_ttl: Duration::from_secs(3600),
            max_seen: 3,
        });
        assert_eq!(s.cursor("st").await.unwrap(), None);
        s.set_cursor("st", 42).await.unwrap();
        assert_eq!(s.cursor("st").await.unwrap(), Some(42));
        assert_eq!(s.cursor("other").await.unwrap(), None);
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        s.mark_seen(&k(&["a", "b"])).await.unwrap();
        assert_eq!(s.seen(&k(&["a", "b", "c"])).await.unwrap(), [true, true, false]);
        s.mark_seen(&k(&["a"])).await.unwrap(); // re-marked: now the newest
        s.mark_seen(&k(&["c", "d"])).await.unwrap();
        assert_eq!(s.seen_len(), 3);
        // b was the oldest mark.
        assert_eq!(
            s.seen(&k(&["a", "b", "c", "d"])).await.unwrap(),
            [true, false, true, true]
        );
    }

    #[tokio::test]
    async fn memory_store_forgets_after_ttl() {
        let s = MemoryStore::new(SeenLimits {
            seen_ttl: Duration::from_millis(50),
            max_seen: 100,
        });
        s.mark_seen(&["x".to_string()]).await.unwrap();
        assert_eq!(s.seen(&["x".to_string()]).await.unwrap(), [true]);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(s.seen(&["x".to_string()]).await.unwrap(), [false]);
        assert_eq!(s.seen_len(), 0);
    }

    #[test]
    fn redis_passwords_are_not_shown() {
        let cfg = RedisStoreConfig::new("redis://user:hunter2@db:6379/1");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("db:6379/1"), "{dbg}");
    }

    #[test]
    fn urls_and_globs() {
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(escape_glob("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
