//! The roles a process can run on a shared bus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use auroraq_bus::{Bus, SubscribeOptions};
use auroraq_feedly::{FeedlyConnector, FeedlyStats, FeedlyStore, MemoryStore, RedisStore};
use auroraq_replay::{load, replay_files, Format, LoadOptions, Pace, ReplayStats, StreamOptions};
use auroraq_schemas::{AnyEvent, EventKind};
use auroraq_sink_jsonl::JsonlSink;
use auroraq_stage::{run_subscription, subscribe_stage, Handler, HandlerError, StageMetrics, StageStats};
use tracing::info;

pub use auroraq_execution::Venue;

use crate::config::Config;
use crate::wiring::stage_config;
use auroraq_util::CancellationToken;

/// Reads recorded files into events (`format` unset: detected per file); unreadable records
/// become dead letters.
pub fn load_recorded(format: Option<Format>, files: &[PathBuf], opts: &LoadOptions) -> Result<Vec<AnyEvent>> {
    let events = load(format, files, opts)?;
    info!(files = files.len(), events = events.len(), "read recorded files");
    Ok(events)
}

/// `auroraq replay`: publishes recorded files onto the configured bus.
pub async fn connect_replay(
    cfg: &Config,
    format: Option<Format>,
    files: &[PathBuf],
    opts: &LoadOptions,
    pace: Pace,
    stop: CancellationToken,
) -> Result<ReplayStats> {
    // Streamed: each file read as it is published, through an external merge sort by receive
    // time, so memory stays bounded whatever the input's size.
    let bus = crate::wiring::connect_bus(&cfg.bus).await?;
    let stats = replay_files(&*bus, format, files, opts, StreamOptions::default(), pace, stop)
        .await
        .context("replay")?;
    bus.flush().await?;
    bus.close().await;
    info!(?stats, "replay done");
    Ok(stats)
}

/// Counts what passes by kind, and forwards to an inner handler.
pub struct Counting<H> {
    pub inner: H,
    pub by_kind: Arc<Mutex<BTreeMap<EventKind, u64>>>,
}

#[async_trait]
impl<H: Handler<AnyEvent>> Handler<AnyEvent> for Counting<H> {
    async fn handle(&mut self, ev: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        let kind = ev.kind();
        let out = self.inner.handle(ev).await?;
        if let Ok(mut m) = self.by_kind.lock() {
            *m.entry(kind).or_default() += 1;
        }
        Ok(out)
    }
}

/// `auroraq sink jsonl`: archives every event of `filter` to `path` until stopped.
pub async fn sink_jsonl(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    path: &Path,
    filter: &str,
    stop: CancellationToken,
) -> Result<StageStats> {
    let sink = JsonlSink::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let scfg = stage_config(cfg, "sink-jsonl", filter);
    let sub = subscribe_stage(&*bus, &scfg).await?;
    let metrics = Arc::new(StageMetrics::default());
    let task = tokio::spawn(run_subscription(bus.clone(), scfg, sub, sink, metrics));
    until_stopped(bus, task, stop).await
}

/// `auroraq tap`: prints events of `filter` as JSON lines on stdout.
pub async fn tap(
    bus: Arc<dyn Bus>,
    filter: &str,
    count: Option<u64>,
    stop: CancellationToken,
) -> Result<u64> {
    let group = format!("tap-{}", std::process::id());
    let mut sub = bus
        .subscribe(SubscribeOptions::new(group, filter).transient())
        .await?;
    let seen = AtomicU64::new(0);
    loop {
        if count.is_some_and(|c| seen.load(Ordering::Relaxed) >= c) || stop.is_cancelled() {
            break;
        }
        let next = tokio::select! {
            n = sub.next() => n,
            _ = stop.cancelled() => break,
        };
        let Some(d) = next else { break };
        let d = d?;
        let line = match AnyEvent::decode(d.payload()) {
            Ok(ev) => ev.to_json(),
            Err(_) if auroraq_schemas::is_watermark(d.payload()) => {
                match auroraq_schemas::Watermark::decode(d.payload()) {
                    Ok(w) => {
                        serde_json::json!({"kind": "Watermark", "topic": w.topic, "partition": w.partition, "watermark": w.watermark, "producer": w.producer, "ts_wall": w.ts_wall})
                    }
                    Err(e) => {
                        serde_json::json!({"kind": "undecodable", "topic": d.topic(), "error": e.to_string(), "bytes": d.payload().len()})
                    }
                }
            }
            Err(e) => {
                serde_json::json!({"kind": "undecodable", "topic": d.topic(), "error": e.to_string(), "bytes": d.payload().len()})
            }
        };
        println!("{line}");
        d.ack().await?;
        seen.fetch_add(1, Ordering::Relaxed);
    }
    bus.close().await;
    Ok(seen.load(Ordering::Relaxed))
}

/// `auroraq connect feedly`: polls a Feedly stream onto `news.articles.feedly`. The cursor and the
/// ids already published persist in Redis when `redis.url` is set (so a restart publishes nothing
/// twice); otherwise they live in memory, with a warning.
pub async fn connect_feedly(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    stream: Option<String>,
    once: bool,
    stop: CancellationToken,
) -> Result<FeedlyStats> {
    let mut fc = cfg.feedly.connector_config();
    if let Some(stream_id) = stream {
        fc.stream_id = stream_id;
    }
    if fc.stream_id.is_empty() {
        anyhow::bail!("no Feedly stream: give --stream or set feedly.stream_id (AURORAQ_FEEDLY_STREAM_ID)");
    }
    fc.once = once;
    let store: Arc<dyn FeedlyStore> = if cfg.redis.url.is_empty() {
        tracing::warn!("redis.url is not set: the Feedly cursor and seen ids live in memory and a restart re-reads the lookback window (the bus still drops re-sent ids for 2 minutes)");
        Arc::new(MemoryStore::default())
    } else {
        Arc::new(
            RedisStore::connect(cfg.feedly.store_config(cfg.redis.url.clone()))
                .await
                .with_context(|| format!("Feedly store at {}", cfg.redis.url))?,
        )
    };
    let connector = FeedlyConnector::new(fc, store)?;
    let stats = connector.run(&*bus, stop).await?;
    bus.flush().await?;
    Ok(stats)
}

/// `auroraq connect binance`: live market data onto `market.*.<exchange>.<symbol>`, statuses onto
/// `feeds.status.<exchange>`. Symbols and streams default to `[binance]` in the configuration.
pub async fn connect_binance(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    symbols: Option<String>,
    streams: Option<String>,
    stop: CancellationToken,
) -> Result<auroraq_binance::LiveStats> {
    let mut b = cfg.binance.clone();
    if let Some(symbols) = symbols {
        b.symbols = auroraq_binance::parse_symbols(&symbols)?;
    }
    if let Some(streams) = streams {
        b.streams = auroraq_binance::parse_streams(&streams)?;
    }
    let live = b.live_config()?;
    let connector = auroraq_binance::LiveConnector::new(live, bus.clone())?;
    let stats = connector.run(stop).await?;
    bus.flush().await?;
    Ok(stats)
}

/// `auroraq backfill binance`: REST klines for a range onto `market.klines.<exchange>.<symbol>`,
/// with a progress bar on stderr, resumable from its checkpoint file.
pub async fn backfill_binance(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    a: BackfillArgs,
    stop: CancellationToken,
) -> Result<auroraq_binance::BackfillReport> {
    use auroraq_binance::Interval;
    use auroraq_replay::time::parse_timestamp as parse_time;
    let from = parse_time(&a.from).with_context(|| format!("--from {:?}: not a date or time", a.from))?;
    let to = parse_time(&a.to).with_context(|| format!("--to {:?}: not a date or time", a.to))?;
    if to <= from {
        anyhow::bail!("--to must be after --from");
    }
    let interval = Interval::parse(&a.interval)?;
    let mut bc = cfg.binance.backfill_config(&a.symbol, interval, from, to);
    bc.checkpoint = Some(a.checkpoint.unwrap_or_else(|| {
        PathBuf::from(format!(
            ".auroraq/backfill/{}-{}-{}-{}-{from}-{to}.json",
            auroraq_bus::topics::token(&cfg.binance.exchange),
            a.symbol.to_ascii_uppercase(),
            a.interval,
            "klines"
        ))
    }));
    if let Some(dir) = bc.checkpoint.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bar = crate::wiring::progress_bar(
        true,
        0,
        "{spinner} {wide_bar} {pos}/{len} bars {per_sec} eta {eta}",
    );
    let cancel = stop;
    let mut progress = |p: &auroraq_binance::BackfillProgress| {
        bar.set_length(p.total.max(p.done));
        bar.set_position(p.done);
    };
    let report = auroraq_binance::backfill(&bc, &*bus, &cancel, &mut progress).await;
    bar.finish_and_clear();
    let report = report?;
    bus.flush().await?;
    Ok(report)
}

/// What `auroraq backfill binance` fetches.
#[derive(Clone, Debug)]
pub struct BackfillArgs {
    /// Symbol, e.g. BTCUSDT.
    pub symbol: String,
    /// Kline interval: 1s, 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w, 1M.
    pub interval: String,
    /// Start (inclusive): 2024-01-01, RFC 3339, or epoch seconds/milliseconds.
    pub from: String,
    /// End (exclusive).
    pub to: String,
    /// Checkpoint file (default under .auroraq/backfill/); a rerun resumes from it.
    pub checkpoint: Option<PathBuf>,
}

/// Runs a deterministic stage ([`auroraq_stage::Processor`]) on the bus with the wall clock until
/// stopped: `auroraq risk`, `auroraq execute`, `auroraq agent`.
pub async fn processor_role<P: auroraq_stage::Processor + 'static>(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    processor: P,
    stop: CancellationToken,
) -> Result<StageStats> {
    let name = processor.name().to_owned();
    let inputs = processor.inputs();
    let scfg = stage_config(cfg, &name, "");
    let metrics = Arc::new(StageMetrics::default());
    if cfg.stages.merged() {
        // The inputs merged in event-time order by their watermarks, and the stage's own
        // watermarks announced on its outputs (on event time, or with `stages.merge = "always"`).
        let subs = auroraq_stage::watermark::subscribe_inputs(&*bus, &scfg, &inputs).await?;
        info!(stage = %name, ?inputs, "running on event time, inputs merged by watermarks");
        let task = tokio::spawn(auroraq_stage::watermark::run_processor_merged(
            bus.clone(),
            scfg,
            subs,
            processor,
            auroraq_stage::merge::MergeConfig::default(),
            metrics,
        ));
        return until_stopped(bus, task, stop).await;
    }
    let sub = auroraq_stage::subscribe_processor(&*bus, &scfg, &inputs).await?;
    info!(stage = %name, ?inputs, "running");
    let task = tokio::spawn(auroraq_stage::run_processor(
        bus.clone(),
        scfg,
        sub,
        processor,
        metrics,
    ));
    until_stopped(bus, task, stop).await
}

/// `auroraq fuse`: the fusion stage on the bus until stopped.
pub async fn fuse(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    stop: CancellationToken,
) -> Result<auroraq_fusion::FusionStats> {
    let mut fc = cfg.fusion.clone();
    fc.stamp_window_close |= cfg.stages.clock == auroraq_stage::ClockKind::Event;
    fc.group = cfg.stages.group(&fc.group);
    fc.merge_inputs |= cfg.stages.merged();
    let stats = auroraq_fusion::run(bus.clone(), fc, stop).await?;
    bus.close().await;
    Ok(stats)
}

/// `auroraq risk`: the risk stage on the configured bus until stopped.
pub async fn risk(cfg: &Config, stop: CancellationToken) -> Result<StageStats> {
    let p = auroraq_risk::RiskProcessor::new(cfg.risk.clone())?;
    let bus = crate::wiring::connect_bus(&cfg.bus).await?;
    processor_role(cfg, bus, p, stop).await
}

/// `auroraq execute [--venue paper|binance-testnet|binance]`: the execution stage on the configured
/// bus until stopped, on `venue` (none: see [`auroraq_execution::ExecutionConfig::venue`]). A live
/// venue needs `[execution] enable_live_trading` and the keys in the environment variables the
/// section names; it is refused, saying what is missing, before the bus is touched.
pub async fn execute(
    cfg: &Config,
    venue: Option<auroraq_execution::Venue>,
    stop: CancellationToken,
) -> Result<StageStats> {
    let venue = cfg.execution.venue(venue);
    let env = |k: &str| std::env::var(k).ok();
    if venue.is_live() {
        // Refused before connecting anywhere.
        cfg.execution.live_trading(venue, env)?;
    }
    let bus = crate::wiring::connect_bus(&cfg.bus).await?;
    execute_on(cfg, bus, venue, env, stop).await
}

/// [`execute`] on `bus`, with the keys looked up by `env`. Logs the venue at start.
pub async fn execute_on(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    venue: auroraq_execution::Venue,
    env: impl Fn(&str) -> Option<String>,
    stop: CancellationToken,
) -> Result<StageStats> {
    use auroraq_execution::{BinanceOrderClient, LiveExecution};
    if !venue.is_live() {
        info!(
            venue = venue.as_str(),
            "execution venue: paper (fills simulated from market data; no orders leave this process)"
        );
        let p = auroraq_execution::ExecutionProcessor::new(cfg.execution.clone())?;
        return processor_role(cfg, bus, p, stop).await;
    }
    let ec = &cfg.execution;
    let live = ec.live_trading(venue, env)?;
    let funds = if venue == auroraq_execution::Venue::Binance {
        "REAL FUNDS"
    } else {
        "test funds"
    };
    info!(
        venue = venue.as_str(),
        base_url = live.base_url(),
        journal = %ec.journal_path(venue).display(),
        "execution venue: {venue} ({funds}): live orders at {}",
        live.base_url()
    );
    let client = BinanceOrderClient::new(live).context("Binance order client")?;
    let mut ex = LiveExecution::new(client, &ec.name)
        .with_venue(venue.as_str())
        .with_remember(ec.remember)
        .with_journal(&ec.journal_path(venue))?;
    let scfg = stage_config(cfg, &ec.name, auroraq_bus::topics::RISK_DECISIONS);
    let sub = subscribe_stage(&*bus, &scfg).await?;
    // Reconciled before the first decision: what happened while the stage was down.
    let missed = ex
        .reconcile()
        .await
        .with_context(|| format!("cannot reconcile order state with {venue}"))?;
    auroraq_stage::publish_events(&*bus, &missed).await?;
    let ex = Arc::new(tokio::sync::Mutex::new(ex));
    if ec.reconcile_interval_secs > 0 {
        let (ex, bus, stop) = (ex.clone(), bus.clone(), stop.clone());
        let every = std::time::Duration::from_secs(ec.reconcile_interval_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let polled = ex.lock().await.poll().await;
                match polled {
                    Ok(events) if !events.is_empty() => {
                        if let Err(e) = auroraq_stage::publish_events(&*bus, &events).await {
                            tracing::warn!(error = %e, count = events.len(), "cannot publish reconciled order updates");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot poll the venue's open orders"),
                }
            }
        });
    }
    let metrics = Arc::new(StageMetrics::default());
    let task = tokio::spawn(run_subscription(bus.clone(), scfg, sub, SharedLive(ex), metrics));
    until_stopped(bus, task, stop).await
}

/// The live stage, shared by the stage runner and the poller.
struct SharedLive(Arc<tokio::sync::Mutex<auroraq_execution::LiveExecution>>);

#[async_trait]
impl Handler<AnyEvent> for SharedLive {
    async fn handle(&mut self, ev: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        self.0.lock().await.handle(ev).await
    }
}

/// `auroraq agent`: the agent `name` (with `policy`, see [`agent`]) on the configured bus until
/// stopped.
pub async fn agent_role(
    cfg: &Config,
    name: &str,
    policy: Option<&Path>,
    stop: CancellationToken,
) -> Result<StageStats> {
    let a = agent(cfg, name, policy)?;
    let bus = crate::wiring::connect_bus(&cfg.bus).await?;
    processor_role(cfg, bus, a, stop).await
}

/// `auroraq topics`: the topic naming convention on stdout.
pub fn print_topics() {
    for (pattern, events) in auroraq_bus::topics::TABLE {
        println!("{pattern:<40} {events}");
    }
}

/// The agent named `name` from the configuration, with its policy: the seed's rule, or an ONNX
/// model (`policy` = a path to a `.onnx` file).
pub fn agent(cfg: &Config, name: &str, policy: Option<&Path>) -> Result<auroraq_agents::Agent> {
    let ac = cfg.agents.get(name).cloned().with_context(|| {
        format!(
            "no agent {name:?} in the configuration (have: {})",
            cfg.agents.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let policy: Box<dyn auroraq_agents::Policy> = match policy {
        None => Box::new(auroraq_agents::RulePolicy { t: ac.rule }),
        #[cfg(feature = "sentiment")]
        Some(p) => Box::new(auroraq_agents::onnx::OnnxPolicy::load(
            p,
            Some(&cfg.sentiment.ort_dylib),
        )?),
        #[cfg(not(feature = "sentiment"))]
        Some(_) => anyhow::bail!("this build has no ONNX Runtime (cargo feature `sentiment`)"),
    };
    Ok(auroraq_agents::Agent::new(ac, policy))
}

fn service_url(url: &str, flag: Option<String>, what: &str, key: &str) -> Result<String> {
    let u = flag.unwrap_or_else(|| url.to_owned());
    if u.is_empty() {
        anyhow::bail!("no {what} URL: give --url or set {key}");
    }
    Ok(u)
}

/// `auroraq sink postgres`: every event into the PostgreSQL/TimescaleDB tables (migrations first),
/// acked only once committed, until stopped.
pub async fn sink_postgres(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    url: Option<String>,
    stop: CancellationToken,
) -> Result<auroraq_sink_timescale::SinkStats> {
    let url = service_url(
        &cfg.postgres.url,
        url,
        "PostgreSQL",
        "postgres.url (AURORAQ_POSTGRES_URL)",
    )?;
    let mut sc = auroraq_sink_timescale::TimescaleConfig::new(url);
    sc.ack_wait = sink_ack_wait(cfg, sc.ack_wait);
    sc.max_past_days = cfg.postgres.max_past_days;
    sc.max_future_days = cfg.postgres.max_future_days;
    let subs = auroraq_sink_timescale::subscribe(&*bus, &sc).await?;
    let metrics = Arc::new(auroraq_sink_timescale::SinkMetrics::default());
    let task = tokio::spawn(auroraq_sink_timescale::run_subscriptions(
        bus.clone(),
        sc,
        subs,
        metrics,
        stop.clone(),
    ));
    until_stopped(bus, task, stop).await
}

/// Waits for `stop`, closes the bus (the role drains and acks) and returns the role's counters.
async fn until_stopped<T, E>(
    bus: Arc<dyn Bus>,
    task: tokio::task::JoinHandle<Result<T, E>>,
    stop: CancellationToken,
) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut task = task;
    tokio::select! {
        _ = stop.cancelled() => {}
        // The role ended by itself (it failed: a URL it cannot use, a database that refuses it):
        // say so now rather than sit idle until a signal.
        r = &mut task => {
            bus.close().await;
            return Ok(r??);
        }
    }
    bus.close().await;
    Ok(task.await??)
}

/// A sink's ack wait: the bus's, but no shorter than the sink's own default (a sink holds a
/// batch while it writes, and while its store is down).
fn sink_ack_wait(cfg: &Config, sink_default: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(cfg.bus.ack_wait_secs.max(1)).max(sink_default)
}

/// `auroraq sink redis`: latest fused signal and price per asset, and the fused-signal stream.
pub async fn sink_redis(
    cfg: &Config,
    bus: Arc<dyn Bus>,
    url: Option<String>,
    stop: CancellationToken,
) -> Result<auroraq_sink_redis::RedisSinkStats> {
    let url = service_url(&cfg.redis.url, url, "Redis", "redis.url (AURORAQ_REDIS_URL)")?;
    let mut rc = auroraq_sink_redis::RedisSinkConfig::new(url);
    rc.ack_wait = sink_ack_wait(cfg, rc.ack_wait);
    let subs = auroraq_sink_redis::subscribe(&*bus, &rc).await?;
    let metrics = Arc::new(auroraq_sink_redis::RedisSinkMetrics::default());
    let task = tokio::spawn(auroraq_sink_redis::run_subscriptions(
        bus.clone(),
        rc,
        subs,
        metrics,
        stop.clone(),
    ));
    until_stopped(bus, task, stop).await
}
