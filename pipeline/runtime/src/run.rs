//! `auroraq run`: the main job.
//!
//! Embedded (the in-process bus, the default): every role in one process. The replay connector
//! publishes the bundled market data onto the bus, where the JSON-lines archive sink keeps every
//! event (dead letters counted); then the same bundled data, with its news, goes through
//! sentiment, fusion, the AuroraQ agent, risk and paper execution on event time
//! (`crate::backtest`), which writes the report. The job ends when both are done, or on
//! SIGINT/SIGTERM (the backtest is then skipped).
//!
//! On NATS (`--bus nats://...`, with `--sink postgres://...` for the tables): the same job as
//! separate processes, one per role (`crate::processes`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use auroraq_replay::{replay, Pace};
use auroraq_schemas::{AnyEvent, EventKind};
use auroraq_sink_jsonl::JsonlSink;
use auroraq_stage::{run_subscription, subscribe_stage, StageMetrics};
use serde::Serialize;
use tracing::info;

use crate::config::Config;
use crate::roles::Counting;
use crate::wiring::connect_bus;
use auroraq_util::CancellationToken;

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub bus: String,
    pub published: u64,
    pub duplicates: u64,
    pub archived: u64,
    pub dead_letters: u64,
    pub by_kind: BTreeMap<EventKind, u64>,
    pub archive: PathBuf,
    pub interrupted: bool,
    /// The backtest of the bundled data through sentiment, fusion, agents, risk and execution
    /// (absent when interrupted); on NATS, the report of what the role processes published.
    pub backtest: Option<auroraq_backtest::Summary>,
    /// On NATS: the run's own JetStream stream and subject root (for `backtest --from-bus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_root: Option<String>,
    /// Sinks the job wrote to (credentials redacted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<String>,
    /// On NATS: the role processes and what each reported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<crate::processes::ProcessReport>,
    pub elapsed_s: f64,
}

/// Runs the main job: embedded on the in-process bus, or as separate processes on NATS.
pub async fn run(
    cfg: &Config,
    pace: Pace,
    sinks: &[String],
    stop: CancellationToken,
    progress: bool,
) -> Result<RunSummary> {
    if cfg.bus.url == auroraq_bus::BusUrl::InProc {
        if !sinks.is_empty() {
            anyhow::bail!(
                "--sink needs the job's roles on a shared bus: add --bus nats://host:4222 (embedded, the job \
                 writes {} and its report)",
                cfg.run.out_dir.join("events.jsonl").display()
            );
        }
        return embedded(cfg, pace, stop, progress).await;
    }
    if pace != Pace::Max {
        anyhow::bail!("--speed applies to the embedded job; on NATS the job paces itself on the stages");
    }
    crate::processes::run(cfg, sinks, stop, progress).await
}

/// The API beside the embedded job (`run --api`).
#[cfg(feature = "api")]
struct JobApi(auroraq_api::RunningApi);

#[cfg(feature = "api")]
impl JobApi {
    fn addr(&self) -> std::net::SocketAddr {
        self.0.addr
    }

    /// Shows an event of the in-process backtest in the API's live view.
    fn show(&self, e: &AnyEvent) {
        self.0.state.live.apply(e);
    }
}

/// Starts the API on the job's bus when `run.api` is set (feature `api`).
#[cfg(feature = "api")]
async fn start_api(
    cfg: &Config,
    bus: std::sync::Arc<dyn auroraq_bus::Bus>,
    stop: CancellationToken,
) -> Result<Option<JobApi>> {
    if cfg.run.api.is_empty() {
        return Ok(None);
    }
    let opts = crate::api::ApiOptions {
        listen: Some(cfg.run.api.clone()),
        ..Default::default()
    };
    let running = crate::api::start(cfg, bus, &opts, stop).await?;
    info!(addr = %running.addr, "API serving beside the job");
    Ok(Some(JobApi(running)))
}

/// Without the API there is nothing to start or show.
#[cfg(not(feature = "api"))]
struct JobApi;

#[cfg(not(feature = "api"))]
impl JobApi {
    fn addr(&self) -> &'static str {
        "-"
    }

    fn show(&self, _e: &AnyEvent) {}
}

#[cfg(not(feature = "api"))]
async fn start_api(
    cfg: &Config,
    _bus: std::sync::Arc<dyn auroraq_bus::Bus>,
    _stop: CancellationToken,
) -> Result<Option<JobApi>> {
    anyhow::ensure!(
        cfg.run.api.is_empty(),
        "run.api is set but this build has no API (feature `api`)"
    );
    Ok(None)
}

async fn embedded(cfg: &Config, pace: Pace, stop: CancellationToken, progress: bool) -> Result<RunSummary> {
    let t0 = Instant::now();
    let bus = connect_bus(&cfg.bus).await?;
    info!(bus = %auroraq_util::redact(cfg.bus.url.as_str()), "starting every role in one process");
    let api = start_api(cfg, bus.clone(), stop.clone()).await?;

    // Stages first, so that they see everything the connectors publish.
    std::fs::create_dir_all(&cfg.run.out_dir)
        .with_context(|| format!("cannot create output folder {}", cfg.run.out_dir.display()))?;
    let archive = cfg.run.out_dir.join("events.jsonl");
    if archive.exists() {
        std::fs::remove_file(&archive).with_context(|| format!("cannot replace {}", archive.display()))?;
    }
    let sink = JsonlSink::open(&archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let by_kind = Arc::new(Mutex::new(BTreeMap::new()));
    let scfg = crate::wiring::stage_config(cfg, "archive", ">");
    let sub = subscribe_stage(&*bus, &scfg).await?;
    let metrics = Arc::new(StageMetrics::default());
    let archive_task = tokio::spawn(run_subscription(
        bus.clone(),
        scfg,
        sub,
        Counting {
            inner: sink,
            by_kind: by_kind.clone(),
        },
        metrics.clone(),
    ));

    // Connectors: the bundled bars onto the bus (read once: the backtest below reuses them).
    let bundled = crate::backtest::bundled(cfg)?;
    let events: Vec<AnyEvent> = bundled
        .iter()
        .filter(|e| !matches!(e, AnyEvent::Article(_)))
        .cloned()
        .collect();
    info!(events = events.len(), "replaying bundled data");
    let stats = replay(&*bus, events, pace, stop.clone())
        .await
        .context("replay")?;

    // Intake done (or interrupted): let the stages catch up with what was published, then close
    // the bus, which drains them and stops. (A bus with durable history, like JetStream, would
    // otherwise keep the rest for the next run.)
    if !stop.is_cancelled() {
        let expected = stats.published;
        let caught_up = async {
            while metrics.received.load(std::sync::atomic::Ordering::Relaxed) < expected {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            _ = caught_up => {}
            _ = stop.cancelled() => {}
        }
    }
    bus.close().await;
    let stage_stats = archive_task.await.context("archive stage panicked")??;
    let by_kind = by_kind.lock().map(|m| m.clone()).unwrap_or_default();
    let interrupted = stop.is_cancelled();
    let backtest = if interrupted || !cfg.run.backtest {
        None
    } else {
        let out = cfg.run.out_dir.join("report");
        let (demo, plan) = crate::backtest::bundled_plan(cfg, bundled, Some(&out), progress)?;
        Some(tokio::task::block_in_place(|| match &api {
            // The backtest runs in process, off the bus: its events go to the API's live view.
            Some(api) => crate::backtest::run_observed(&demo, plan, Some(&mut |e| api.show(e))),
            None => crate::backtest::run(&demo, plan),
        })?)
    };
    if let Some(api) = api {
        info!(addr = %api.addr(), "the job is done; the API keeps serving until interrupted (Ctrl-C)");
        stop.cancelled().await;
    }
    Ok(RunSummary {
        bus: bus.kind().to_owned(),
        published: stats.published,
        duplicates: stats.duplicates,
        archived: stage_stats.processed,
        dead_letters: by_kind.get(&EventKind::DeadLetter).copied().unwrap_or(0) + stage_stats.dead_letters,
        by_kind,
        archive,
        interrupted,
        backtest,
        stream: None,
        subject_root: None,
        sinks: Vec::new(),
        processes: Vec::new(),
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}
