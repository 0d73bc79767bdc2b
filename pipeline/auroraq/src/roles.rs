//! The roles a process can run on a shared bus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use auroraq_bus::{Bus, SubscribeOptions};
use auroraq_replay::{bad_row_letter, read_bars, replay, BarsOptions, Pace, ReplayStats};
use auroraq_schemas::AnyEvent;
use auroraq_sink_jsonl::JsonlSink;
use auroraq_stage::{run_subscription, subscribe_stage, Handler, HandlerError, StageMetrics, StageStats};
use tracing::info;

use crate::config::Config;
use crate::wiring::{stage_config, stopped};

/// Reads bar files into events; unreadable rows become dead letters.
pub fn load_bars(files: &[PathBuf], opts: &BarsOptions) -> Result<Vec<AnyEvent>> {
    let mut events = Vec::new();
    for f in files {
        let bars = read_bars(f, opts)?;
        info!(file = %f.display(), bars = bars.bars.len(), bad_rows = bars.bad_rows.len(), interval = %bars.interval, "read bars");
        let origin = f.display().to_string();
        events.extend(
            bars.bad_rows
                .iter()
                .map(|r| AnyEvent::DeadLetter(bad_row_letter(&origin, r))),
        );
        events.extend(bars.bars.into_iter().map(AnyEvent::Kline));
    }
    Ok(events)
}

/// `auroraq connect replay`: publishes recorded files onto the bus.
pub async fn connect_replay(
    bus: Arc<dyn Bus>,
    files: &[PathBuf],
    opts: &BarsOptions,
    pace: Pace,
    stop: Arc<AtomicBool>,
) -> Result<ReplayStats> {
    let events = load_bars(files, opts)?;
    let stats = replay(&*bus, events, pace, stop).await.context("replay")?;
    bus.flush().await?;
    Ok(stats)
}

/// Counts what passes by kind, and forwards to an inner handler.
pub struct Counting<H> {
    pub inner: H,
    pub by_kind: Arc<Mutex<BTreeMap<String, u64>>>,
}

#[async_trait]
impl<H: Handler<AnyEvent>> Handler<AnyEvent> for Counting<H> {
    async fn handle(&mut self, ev: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        let kind = ev.kind().name();
        let out = self.inner.handle(ev).await?;
        if let Ok(mut m) = self.by_kind.lock() {
            *m.entry(kind.to_owned()).or_default() += 1;
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
    stop: Arc<AtomicBool>,
) -> Result<StageStats> {
    let sink = JsonlSink::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let scfg = stage_config(cfg, "sink-jsonl", filter);
    let sub = subscribe_stage(&*bus, &scfg).await?;
    let metrics = Arc::new(StageMetrics::default());
    let task = tokio::spawn(run_subscription(bus.clone(), scfg, sub, sink, metrics));
    stopped(&stop).await;
    bus.close().await;
    Ok(task.await??)
}

/// `auroraq tap`: prints events of `filter` as JSON lines on stdout.
pub async fn tap(bus: Arc<dyn Bus>, filter: &str, count: Option<u64>, stop: Arc<AtomicBool>) -> Result<u64> {
    let group = format!("tap-{}", std::process::id());
    let mut sub = bus
        .subscribe(SubscribeOptions::new(group, filter).transient())
        .await?;
    let seen = AtomicU64::new(0);
    loop {
        if count.is_some_and(|c| seen.load(Ordering::Relaxed) >= c) || stop.load(Ordering::SeqCst) {
            break;
        }
        let next = tokio::select! {
            n = sub.next() => n,
            _ = stopped(&stop) => break,
        };
        let Some(d) = next else { break };
        let d = d?;
        let line = match AnyEvent::decode(d.payload()) {
            Ok(ev) => ev.to_json(),
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
