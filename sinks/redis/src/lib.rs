//! The Redis sink: live state for an API and dashboards, without PostgreSQL.
//!
//! From the bus it keeps, under a key prefix (`aq:` by default):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `aq:fused:latest:<asset>` | hash, TTL | the latest fused signal of the asset (fields below, plus `json`: the whole event) |
//! | `aq:fused:assets` | set | assets that have a latest fused signal |
//! | `aq:fused:stream` | stream, `MAXLEN ~` | every fused signal once, in arrival order |
//! | `aq:fused:seen:<event id>` | string, TTL | de-duplication marks of the stream |
//! | `aq:price:latest:<exchange>:<symbol>` | hash, TTL | the latest price, from trades and klines |
//! | `aq:quote:latest:<exchange>:<symbol>` | hash, TTL | the latest best bid and ask, from book tickers |
//! | `aq:price:symbols` | set | `<exchange>:<symbol>` pairs that have a latest price or quote |
//!
//! Every latest-state hash carries `ts_event` and `event_id`, and a write only moves it forward
//! in event time: a Lua script replaces the hash only when `(ts_event, event_id)` is greater
//! than the stored one, so replays, redeliveries and out-of-order arrivals in any order converge
//! on the same state. A stream entry is added only if its event id's `seen` mark did not exist
//! (set in the same script, atomically), so a redelivered signal is not appended twice.
//!
//! Deliveries are applied in batches (bounded by size and time; per key only the newest event of
//! a batch is sent) in one pipeline, and acked after it returns. While Redis is down the sink holds
//! its batch, stops consuming, backs off and reconnects.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::{topics, Bus, Delivery, SubscribeOptions, Subscription};
use auroraq_schemas::{AnyEvent, Micros};
use auroraq_stage::{send_dead_letter, StageError, StageMetrics};
use auroraq_util::{redact, sleep_or_cancel, CancellationToken};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, Value};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Settings of the Redis sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedisSinkConfig {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// Consumer group, and the dead-letter topic `dlq.<group>`.
    pub group: String,
    /// Topic filters; each joins the group with its own subscription.
    pub filters: Vec<String>,
    pub member: u32,
    pub members: u32,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Expiry of the latest-state hashes, renewed on each update; zero: none.
    pub state_ttl: Duration,
    /// Approximate length the stream is trimmed to.
    pub stream_maxlen: usize,
    /// How long a stream entry's de-duplication mark lives (longer than redeliveries and
    /// replays that should not append again); zero: forever.
    pub dedup_ttl: Duration,
    /// Most deliveries per batch.
    pub batch_max: usize,
    /// Longest a delivery waits for its batch.
    pub batch_delay: Duration,
    pub ack_wait: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Connection and response timeout.
    pub timeout: Duration,
}

impl RedisSinkConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisSinkConfig {
            url: url.into(),
            group: "sink-redis".into(),
            filters: vec![
                topics::ALL_FUSED.to_owned(),
                "market.trades.>".to_owned(),
                "market.klines.>".to_owned(),
                "market.tickers.>".to_owned(),
            ],
            member: 0,
            members: 1,
            key_prefix: "aq:".into(),
            state_ttl: Duration::from_secs(24 * 3600),
            stream_maxlen: 10_000,
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            batch_max: 1024,
            batch_delay: Duration::from_millis(20),
            ack_wait: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), RedisSinkError> {
        let bad = |why: &str| Err(RedisSinkError::Config(why.to_owned()));
        if self.url.is_empty() {
            return bad("no Redis URL");
        }
        if self.filters.is_empty() {
            return bad("no topic filter");
        }
        if self.batch_max == 0 || self.stream_maxlen == 0 {
            return bad("batch_max and stream_maxlen must be positive");
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return bad("backoff_min must be positive and at most backoff_max");
        }
        Ok(())
    }
}

/// The key names, for readers (an API) as much as for the sink.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }
    pub fn fused_latest(&self, asset: &str) -> String {
        format!("{}fused:latest:{asset}", self.prefix)
    }
    pub fn fused_assets(&self) -> String {
        format!("{}fused:assets", self.prefix)
    }
    pub fn fused_stream(&self) -> String {
        format!("{}fused:stream", self.prefix)
    }
    pub fn fused_seen(&self, event_id: &str) -> String {
        format!("{}fused:seen:{event_id}", self.prefix)
    }
    pub fn price_latest(&self, exchange: &str, symbol: &str) -> String {
        format!("{}price:latest:{exchange}:{symbol}", self.prefix)
    }
    pub fn quote_latest(&self, exchange: &str, symbol: &str) -> String {
        format!("{}quote:latest:{exchange}:{symbol}", self.prefix)
    }
    pub fn price_symbols(&self) -> String {
        format!("{}price:symbols", self.prefix)
    }
}

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum RedisSinkError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("Redis {op}: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error(transparent)]
    Bus(#[from] auroraq_bus::BusError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("the sink task failed: {0}")]
    Task(String),
}

/// Replaces the hash KEYS[1] by the given fields when (ts, id) is newer than what it holds.
/// ARGV: ts_event, event_id, ttl_ms (0: none), then field, value pairs. Returns 1 if written.
const LATEST_LUA: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'ts_event', 'event_id')
if cur[1] then
  local ts, nts = tonumber(cur[1]), tonumber(ARGV[1])
  if nts < ts or (nts == ts and ARGV[2] <= (cur[2] or '')) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ts_event', ARGV[1], 'event_id', ARGV[2], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"#;

/// Appends to the stream KEYS[1] unless the mark KEYS[2] exists, setting the mark.
/// ARGV: mark ttl_ms (0: none), maxlen, then field, value pairs. Returns the entry id or nil.
const STREAM_LUA: &str = r#"
local ok
if tonumber(ARGV[1]) > 0 then
  ok = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1])
else
  ok = redis.call('SET', KEYS[2], '1', 'NX')
end
if not ok then
  return false
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"#;

/// Counters of a running sink.
#[derive(Default)]
pub struct RedisSinkMetrics {
    pub received: AtomicU64,
    pub redelivered: AtomicU64,
    pub acked: AtomicU64,
    /// Events of kinds the sink keeps nothing of (acked and skipped).
    pub ignored: AtomicU64,
    /// Latest-state hashes replaced.
    pub state_updates: AtomicU64,
    /// Latest-state writes refused as older than what Redis holds.
    pub state_stale: AtomicU64,
    /// Events superseded within their batch by a newer one for the same key.
    pub superseded: AtomicU64,
    pub stream_appended: AtomicU64,
    /// Stream appends skipped as already appended.
    pub stream_duplicates: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub reconnects: AtomicU64,
    pub dead_letters: AtomicU64,
}

/// A point-in-time copy of [`RedisSinkMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RedisSinkStats {
    pub received: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub ignored: u64,
    pub state_updates: u64,
    pub state_stale: u64,
    pub superseded: u64,
    pub stream_appended: u64,
    pub stream_duplicates: u64,
    pub batches: u64,
    pub retries: u64,
    pub reconnects: u64,
    pub dead_letters: u64,
}

impl RedisSinkMetrics {
    pub fn snapshot(&self) -> RedisSinkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisSinkStats {
            received: g(&self.received),
            redelivered: g(&self.redelivered),
            acked: g(&self.acked),
            ignored: g(&self.ignored),
            state_updates: g(&self.state_updates),
            state_stale: g(&self.state_stale),
            superseded: g(&self.superseded),
            stream_appended: g(&self.stream_appended),
            stream_duplicates: g(&self.stream_duplicates),
            batches: g(&self.batches),
            retries: g(&self.retries),
            reconnects: g(&self.reconnects),
            dead_letters: g(&self.dead_letters),
        }
    }
}

/// What one applied batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyOutcome {
    pub state_updates: u64,
    pub state_stale: u64,
    pub superseded: u64,
    pub stream_appended: u64,
    pub stream_duplicates: u64,
    pub ignored: u64,
}

/// A hash's or a stream entry's fields.
type Fields = Vec<(&'static str, String)>;

/// A latest-state write: the newest event for one key.
struct Latest {
    key: String,
    index: (String, String),
    ts: Micros,
    id: String,
    fields: Fields,
}

fn fused_fields(f: &auroraq_schemas::FusedSignal, json: String) -> Fields {
    vec![
        ("asset", f.asset.clone()),
        ("fused_score", f.fused_score.to_string()),
        ("confidence", f.confidence.to_string()),
        ("trend", f.trend.as_str().to_owned()),
        ("window_start", f.window_start.to_string()),
        ("window_end", f.window_end.to_string()),
        ("scores_used", f.scores_used.to_string()),
        ("scores_rejected", f.scores_rejected.to_string()),
        ("sources_used", f.sources_used.to_string()),
        ("source", f.meta.source.clone()),
        ("json", json),
    ]
}

/// The latest-state writes and stream entries of a batch, newest per key.
struct Plan {
    latest: Vec<Latest>,
    /// Fused signals for the stream, each once, in event-time order: (event id, ts, fields).
    stream: Vec<(String, Micros, Fields)>,
    superseded: u64,
    ignored: u64,
}

fn plan(keys: &Keys, events: &[AnyEvent]) -> Plan {
    let mut latest: HashMap<String, Latest> = HashMap::new();
    let mut stream: BTreeMap<(Micros, String), Fields> = BTreeMap::new();
    let mut superseded = 0;
    let mut ignored = 0;
    let mut offer = |l: Latest| match latest.get(&l.key) {
        Some(cur) if (cur.ts, cur.id.as_str()) >= (l.ts, l.id.as_str()) => superseded += 1,
        Some(_) => {
            superseded += 1;
            latest.insert(l.key.clone(), l);
        }
        None => {
            latest.insert(l.key.clone(), l);
        }
    };
    for ev in events {
        let m = ev.meta();
        match ev {
            AnyEvent::FusedSignal(f) => {
                let json = ev.to_json().to_string();
                let fields = fused_fields(f, json);
                stream.entry((m.ts_event, m.event_id.clone())).or_insert_with(|| {
                    let mut s = vec![
                        ("event_id", m.event_id.clone()),
                        ("ts_event", m.ts_event.to_string()),
                    ];
                    s.extend(fields.iter().filter(|(k, _)| *k != "json").cloned());
                    s
                });
                offer(Latest {
                    key: keys.fused_latest(&f.asset),
                    index: (keys.fused_assets(), f.asset.clone()),
                    ts: m.ts_event,
                    id: m.event_id.clone(),
                    fields,
                });
            }
            AnyEvent::TradeTick(t) => offer(Latest {
                key: keys.price_latest(&t.exchange, &t.symbol),
                index: (keys.price_symbols(), format!("{}:{}", t.exchange, t.symbol)),
                ts: m.ts_event,
                id: m.event_id.clone(),
                fields: vec![
                    ("exchange", t.exchange.clone()),
                    ("symbol", t.symbol.clone()),
                    ("price", t.price.to_string()),
                    ("quantity", t.quantity.to_string()),
                    ("from", "trade".to_owned()),
                ],
            }),
            AnyEvent::Kline(k) => offer(Latest {
                key: keys.price_latest(&k.exchange, &k.symbol),
                index: (keys.price_symbols(), format!("{}:{}", k.exchange, k.symbol)),
                ts: m.ts_event,
                id: m.event_id.clone(),
                fields: vec![
                    ("exchange", k.exchange.clone()),
                    ("symbol", k.symbol.clone()),
                    ("price", k.close.to_string()),
                    ("interval", k.interval.clone()),
                    ("closed", k.closed.to_string()),
                    ("from", "kline".to_owned()),
                ],
            }),
            AnyEvent::BookTicker(b) => offer(Latest {
                key: keys.quote_latest(&b.exchange, &b.symbol),
                index: (keys.price_symbols(), format!("{}:{}", b.exchange, b.symbol)),
                ts: m.ts_event,
                id: m.event_id.clone(),
                fields: vec![
                    ("exchange", b.exchange.clone()),
                    ("symbol", b.symbol.clone()),
                    ("bid_price", b.bid_price.to_string()),
                    ("bid_qty", b.bid_qty.to_string()),
                    ("ask_price", b.ask_price.to_string()),
                    ("ask_qty", b.ask_qty.to_string()),
                    ("mid", mid(b.bid_price.0, b.ask_price.0)),
                ],
            }),
            _ => ignored += 1,
        }
    }
    let mut latest: Vec<Latest> = latest.into_values().collect();
    latest.sort_by(|a, b| a.key.cmp(&b.key));
    Plan {
        latest,
        stream: stream.into_iter().map(|((ts, id), f)| (id, ts, f)).collect(),
        superseded,
        ignored,
    }
}

fn mid(bid: Decimal, ask: Decimal) -> String {
    bid.checked_add(ask)
        .and_then(|s| s.checked_div(Decimal::TWO))
        .map(|m| m.normalize().to_string())
        .unwrap_or_default()
}

/// Writes batches of events to Redis; holds one multiplexed connection and re-opens it when
/// it is lost.
pub struct RedisSink {
    cfg: RedisSinkConfig,
    keys: Keys,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    latest_sha: String,
    stream_sha: String,
    connected_once: bool,
    metrics: Arc<RedisSinkMetrics>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("url", &redact(&self.cfg.url))
            .field("key_prefix", &self.cfg.key_prefix)
            .finish_non_exhaustive()
    }
}

fn redis_err(op: &'static str) -> impl Fn(redis::RedisError) -> RedisSinkError {
    move |source| RedisSinkError::Redis { op, source }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

impl RedisSink {
    /// A sink for `cfg`; connects on first use.
    pub fn new(cfg: RedisSinkConfig, metrics: Arc<RedisSinkMetrics>) -> Result<Self, RedisSinkError> {
        cfg.validate()?;
        let client = redis::Client::open(cfg.url.as_str()).map_err(redis_err("open"))?;
        Ok(RedisSink {
            keys: Keys::new(cfg.key_prefix.clone()),
            cfg,
            client,
            conn: None,
            latest_sha: String::new(),
            stream_sha: String::new(),
            connected_once: false,
            metrics,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, RedisSinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let acfg = AsyncConnectionConfig::new()
            .set_connection_timeout(self.cfg.timeout)
            .set_response_timeout(self.cfg.timeout);
        let mut c = self
            .client
            .get_multiplexed_async_connection_with_config(&acfg)
            .await
            .map_err(redis_err("connect"))?;
        self.load_scripts(&mut c).await?;
        if self.connected_once {
            self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
            info!(url = %redact(&self.cfg.url), "reconnected to Redis");
        } else {
            info!(url = %redact(&self.cfg.url), "connected to Redis");
        }
        self.connected_once = true;
        self.conn = Some(c.clone());
        Ok(c)
    }

    async fn load_scripts(&mut self, c: &mut MultiplexedConnection) -> Result<(), RedisSinkError> {
        self.latest_sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(LATEST_LUA)
            .query_async(c)
            .await
            .map_err(redis_err("SCRIPT LOAD"))?;
        self.stream_sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(STREAM_LUA)
            .query_async(c)
            .await
            .map_err(redis_err("SCRIPT LOAD"))?;
        Ok(())
    }

    /// Drops the connection (after a failure); the next call re-opens it.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Applies a batch in one pipeline: each key's newest event (only if newer than what Redis
    /// holds) and each new fused signal to the stream. Idempotent.
    pub async fn apply(&mut self, events: &[AnyEvent]) -> Result<ApplyOutcome, RedisSinkError> {
        let p = plan(&self.keys, events);
        let mut out = ApplyOutcome {
            superseded: p.superseded,
            ignored: p.ignored,
            ..ApplyOutcome::default()
        };
        if p.latest.is_empty() && p.stream.is_empty() {
            return Ok(out);
        }
        let ttl_ms = self.cfg.state_ttl.as_millis() as u64;
        let dedup_ms = self.cfg.dedup_ttl.as_millis() as u64;
        let stream_key = self.keys.fused_stream();
        let traced = auroraq_stage::trace::enabled().then(std::time::SystemTime::now);
        for attempt in 0..2 {
            let mut c = self.connection().await?;
            let mut pipe = redis::pipe();
            for l in &p.latest {
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(&self.latest_sha)
                    .arg(1)
                    .arg(&l.key)
                    .arg(l.ts)
                    .arg(&l.id)
                    .arg(ttl_ms);
                for (k, v) in &l.fields {
                    cmd.arg(*k).arg(v);
                }
                pipe.cmd("SADD").arg(&l.index.0).arg(&l.index.1).ignore();
            }
            for (id, _ts, fields) in &p.stream {
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(&self.stream_sha)
                    .arg(2)
                    .arg(&stream_key)
                    .arg(self.keys.fused_seen(id))
                    .arg(dedup_ms)
                    .arg(self.cfg.stream_maxlen);
                for (k, v) in fields {
                    cmd.arg(*k).arg(v);
                }
            }
            match pipe.query_async::<Vec<Value>>(&mut c).await {
                Ok(results) => {
                    let (states, appends) = results.split_at(p.latest.len().min(results.len()));
                    for r in states {
                        if matches!(r, Value::Int(1)) {
                            out.state_updates += 1;
                        } else {
                            out.state_stale += 1;
                        }
                    }
                    for r in appends {
                        if matches!(r, Value::Nil) {
                            out.stream_duplicates += 1;
                        } else {
                            out.stream_appended += 1;
                        }
                    }
                    if let Some(start) = traced {
                        // One span per applied batch, linked to every event in it.
                        let metas = events.iter().map(|e| e.meta());
                        auroraq_stage::trace::record_sink_batch("redis", "redis", metas, start);
                    }
                    return Ok(out);
                }
                Err(e) if e.kind() == ErrorKind::NoScriptError && attempt == 0 => {
                    // Redis restarted or flushed its scripts: load them again and retry once.
                    warn!("Redis lost the sink's scripts; loading them again");
                    self.load_scripts(&mut c).await?;
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        self.disconnect();
                    }
                    return Err(RedisSinkError::Redis {
                        op: "apply batch",
                        source: e,
                    });
                }
            }
        }
        Err(RedisSinkError::Config(
            "Redis keeps losing the sink's scripts".into(),
        ))
    }
}

/// Joins the sink's consumer group, one subscription per filter. On the in-process bus, call it
/// before producers start.
pub async fn subscribe(
    bus: &dyn Bus,
    cfg: &RedisSinkConfig,
) -> Result<Vec<Box<dyn Subscription>>, RedisSinkError> {
    cfg.validate()?;
    let mut subs = Vec::with_capacity(cfg.filters.len());
    for f in &cfg.filters {
        let opts = SubscribeOptions::new(topics::token(&cfg.group), f.clone())
            .member(cfg.member, cfg.members)
            .max_in_flight(cfg.batch_max.max(1) * 2)
            .ack_wait(cfg.ack_wait);
        subs.push(bus.subscribe(opts).await?);
    }
    Ok(subs)
}

/// Subscribes and runs the sink; see [`run_subscriptions`].
pub async fn run(
    bus: Arc<dyn Bus>,
    cfg: RedisSinkConfig,
    metrics: Arc<RedisSinkMetrics>,
    cancel: CancellationToken,
) -> Result<RedisSinkStats, RedisSinkError> {
    let subs = subscribe(&*bus, &cfg).await?;
    run_subscriptions(bus, cfg, subs, metrics, cancel).await
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Runs the sink on subscriptions made by [`subscribe`] until they end (the bus is closed and
/// drained). Each batch is applied, then its deliveries acked; while Redis is down the batch is
/// retried with backoff and nothing more is consumed. `cancel` ends waiting for Redis: the batch
/// in hand stays unacked (redelivered later) and the sink returns. Undecodable deliveries become
/// dead letters on `dlq.<group>`.
pub async fn run_subscriptions(
    bus: Arc<dyn Bus>,
    cfg: RedisSinkConfig,
    subs: Vec<Box<dyn Subscription>>,
    metrics: Arc<RedisSinkMetrics>,
    cancel: CancellationToken,
) -> Result<RedisSinkStats, RedisSinkError> {
    let mut sink = RedisSink::new(cfg.clone(), metrics.clone())?;
    let stage = topics::token(&cfg.group);
    let dl_metrics = StageMetrics::default();
    let (tx, mut rx) = mpsc::channel::<Delivery>(cfg.batch_max.clamp(16, 8192));
    let mut forwarders = Vec::new();
    for mut sub in subs {
        let tx = tx.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(next) = sub.next().await {
                match next {
                    Ok(d) => {
                        if tx.send(d).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => warn!(error = %e, "delivery error"),
                }
            }
        }));
    }
    drop(tx);
    // Dropping this future (a caller's abort) stops the forwarding tasks too.
    let _guard = AbortOnDrop(forwarders.iter().map(|f| f.abort_handle()).collect());

    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut events: Vec<AnyEvent> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    while open || !deliveries.is_empty() {
        let mut flush = !open;
        if open {
            let next = match deadline {
                Some(at) => tokio::select! {
                    d = rx.recv() => Some(d),
                    _ = tokio::time::sleep_until(at) => None,
                },
                None => Some(rx.recv().await),
            };
            match next {
                None => flush = true,
                Some(None) => {
                    open = false;
                    flush = true;
                }
                Some(Some(d)) if auroraq_schemas::is_watermark(d.payload()) => {
                    if let Err(e) = auroraq_stage::skip_watermark("sink-redis", d).await {
                        debug!(error = %e, "acking a watermark failed; it will come back");
                    }
                }
                Some(Some(d)) => {
                    metrics.received.fetch_add(1, Ordering::Relaxed);
                    auroraq_stage::count_consumed("sink-redis", d.topic());
                    if d.attempt > 1 {
                        metrics.redelivered.fetch_add(1, Ordering::Relaxed);
                    }
                    match AnyEvent::decode(d.payload()) {
                        Ok(ev) => {
                            events.push(ev);
                            deliveries.push(d);
                            if deliveries.len() == 1 {
                                deadline = Some(Instant::now() + cfg.batch_delay);
                            }
                            flush = deliveries.len() >= cfg.batch_max;
                        }
                        Err(e) => {
                            let before = dl_metrics.dead_letters.load(Ordering::Relaxed);
                            if let Err(e) = send_dead_letter(
                                &*bus,
                                &stage,
                                d,
                                "decode_error",
                                &e.to_string(),
                                &dl_metrics,
                            )
                            .await
                            {
                                error!(error = %e, "cannot settle a dead-lettered delivery");
                            }
                            let n = dl_metrics.dead_letters.load(Ordering::Relaxed) - before;
                            metrics.dead_letters.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        if !flush || deliveries.is_empty() {
            continue;
        }
        deadline = None;
        let mut backoff = cfg.backoff_min;
        let mut failures = 0u32;
        loop {
            match sink.apply(&events).await {
                Ok(o) => {
                    metrics.batches.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .state_updates
                        .fetch_add(o.state_updates, Ordering::Relaxed);
                    metrics.state_stale.fetch_add(o.state_stale, Ordering::Relaxed);
                    metrics.superseded.fetch_add(o.superseded, Ordering::Relaxed);
                    metrics
                        .stream_appended
                        .fetch_add(o.stream_appended, Ordering::Relaxed);
                    metrics
                        .stream_duplicates
                        .fetch_add(o.stream_duplicates, Ordering::Relaxed);
                    metrics.ignored.fetch_add(o.ignored, Ordering::Relaxed);
                    if failures > 0 {
                        info!(failures, "Redis is back; batch applied");
                    }
                    break;
                }
                Err(RedisSinkError::Config(why)) => return Err(RedisSinkError::Config(why)),
                Err(e) => {
                    failures += 1;
                    metrics.retries.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, attempt = failures, retry_in = ?backoff, "applying a batch to Redis failed; holding it and retrying");
                    if !sleep_or_cancel(backoff, &cancel).await {
                        warn!(
                            events = events.len(),
                            "stopping with an unapplied batch: it stays unacked and will be redelivered"
                        );
                        for f in &forwarders {
                            f.abort();
                        }
                        return Ok(metrics.snapshot());
                    }
                    backoff = (backoff * 2).min(cfg.backoff_max);
                }
            }
        }
        events.clear();
        let n = deliveries.len() as u64;
        let mut failed = 0;
        for d in deliveries.drain(..) {
            if let Err(e) = d.ack().await {
                failed += 1;
                debug!(error = %e, "ack failed; the delivery will come back and de-duplicate");
            }
        }
        metrics.acked.fetch_add(n - failed, Ordering::Relaxed);
    }
    for f in forwarders {
        f.abort();
    }
    if let Err(e) = bus.flush().await {
        warn!(error = %e, "flushing acks failed");
    }
    let stats = metrics.snapshot();
    info!(?stats, "redis sink finished");
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use auroraq_schemas::samples;

    fn fused(asset: &str, ts: Micros, score: f64) -> AnyEvent {
        let mut f = match samples::all()
            .into_iter()
            .find(|e| matches!(e, AnyEvent::FusedSignal(_)))
        {
            Some(AnyEvent::FusedSignal(f)) => f,
            _ => panic!("samples have a fused signal"),
        };
        f.asset = asset.to_owned();
        f.fused_score = score;
        f.meta = auroraq_schemas::Meta::raw(
            auroraq_schemas::EventKind::FusedSignal,
            "fusion",
            &format!("{asset}:{ts}"),
            ts,
            ts,
        );
        AnyEvent::FusedSignal(f)
    }

    #[test]
    fn a_batch_keeps_the_newest_event_per_key_and_each_signal_once() {
        let keys = Keys::new("p:");
        let evs = vec![
            fused("BTC", 20, 0.2),
            fused("BTC", 10, 0.1),
            fused("ETH", 5, 0.5),
            fused("BTC", 20, 0.2),
            AnyEvent::TradeTick(samples::trade(1)),
            AnyEvent::TradeTick(samples::trade(3)),
            AnyEvent::TradeTick(samples::trade(2)),
        ];
        let p = plan(&keys, &evs);
        assert_eq!(p.latest.len(), 3);
        let btc = p
            .latest
            .iter()
            .find(|l| l.key == "p:fused:latest:BTC")
            .map(|l| l.ts);
        assert_eq!(btc, Some(20));
        let price = p
            .latest
            .iter()
            .find(|l| l.key.starts_with("p:price:latest:"))
            .map(|l| l.ts);
        assert_eq!(price, Some(samples::trade(3).meta.ts_event));
        assert_eq!(p.stream.len(), 3, "each fused signal once");
        assert!(p.stream.windows(2).all(|w| w[0].1 <= w[1].1), "in event time");
        assert_eq!(p.superseded, 4);
    }

    #[test]
    fn mid_prices_are_exact() {
        assert_eq!(
            mid(Decimal::new(6412344, 2), Decimal::new(6412345, 2)),
            "64123.445"
        );
    }
}
