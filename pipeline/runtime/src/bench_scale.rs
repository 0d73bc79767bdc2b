//! `auroraq bench scale`: score workers scaled by consumer group, and the pool of `auroraq score`
//! processes it (and the scaling tests) drive.
//!
//! For each worker count, on a namespace of its own (a JetStream stream and subject root, or a
//! Kafka topic and group root), that many `auroraq score` processes (children of the current
//! executable) join the `sentiment` group and load the model, then a fresh backlog of real
//! headlines is published at once, and the rate is the articles scored divided by the span from
//! the first score to the last (the scores' `ts_processed`).
//!
//! How the workers share the group depends on the bus ([`Split`]):
//!
//! - **NATS JetStream**: every worker is member 0 of 1 and pulls from the group's durable
//!   consumers, which hand each message to one puller: a worker that joins takes a share at once,
//!   and what a dead worker held unacked comes back to the others after `bus.ack_wait_secs`.
//! - **Kafka**: members take partitions by a static split (`auroraq score --member I --members
//!   N`, partition `p` when `p % N == I`; see the Kafka bus). The pool rebalances by restarting:
//!   when the count changes (a worker joins, or one was killed), every worker is stopped with
//!   SIGTERM and started again on the new split, and each partition's new owner resumes at the
//!   committed offset, so what a stopped or killed worker had not acked is delivered again to its
//!   successors. (A worker stopped by SIGTERM leaves up to `bus.max_in_flight` articles it had
//!   taken but not scored: the score role closes the bus to stop intake, after which its scores
//!   cannot be published, so it nacks them.)
//!
//! On this 2-core machine the ceiling is the cores: ONNX Runtime's intra-op threads per worker
//! times the workers should not exceed them ([`BenchOptions::threads`]), and the bus, the
//! publisher and tokenising share the same cores.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use auroraq_bus::{topics, Bus, BusKind, BusUrl, SubscribeOptions};
use auroraq_schemas::{AnyEvent, SentimentScore};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::config::BusConfig;

/// How a pool's workers share their consumer group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Every worker is member 0 of 1 and the bus shares each partition among them (JetStream
    /// pull consumers).
    Shared,
    /// Worker `i` of `n` takes the partitions `p % n == i`; a change of `n` restarts them all.
    Static,
}

impl Split {
    /// What the bus supports: shared pulls on NATS, a static split on Kafka.
    pub fn of(url: &BusUrl) -> Result<Split> {
        match url.kind() {
            BusKind::Nats => Ok(Split::Shared),
            BusKind::Kafka => Ok(Split::Static),
            BusKind::InProc => bail!(
                "the in-process bus lives in one process: scaling score processes needs --bus nats://... or kafka://..."
            ),
        }
    }
}

/// The first `n` headlines of a news CSV (`replay`'s news-csv format) with distinct article and
/// event ids, as articles on `news.articles.<feed>`.
pub fn headlines(path: &Path, feed: &str, n: usize) -> Result<Vec<AnyEvent>> {
    let all = auroraq_replay::news_csv::read_news_csv(path, feed)
        .with_context(|| format!("reading headlines from {}", path.display()))?;
    let (mut ids, mut events) = (HashSet::new(), HashSet::new());
    let out: Vec<AnyEvent> = all
        .into_iter()
        .filter(|e| match e {
            AnyEvent::Article(a) => {
                (!a.text.trim().is_empty() || a.title.as_deref().is_some_and(|t| !t.trim().is_empty()))
                    && ids.insert(a.article_id.clone())
                    && events.insert(a.meta.event_id.clone())
            }
            _ => false,
        })
        .take(n)
        .collect();
    if out.len() < n {
        bail!(
            "{} has only {} distinct headlines; {n} were asked for",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}

/// A namespace of the bus of its own (a JetStream stream and subject root, or a Kafka topic and
/// group root), deleted by [`Scratch::delete`] (or, best effort, on drop).
pub struct Scratch {
    /// The bus settings of the namespace: what the workers are started with.
    pub bus_cfg: BusConfig,
    /// This process's connection to it.
    pub bus: Arc<dyn Bus>,
    deleter: Option<Deleter>,
}

enum Deleter {
    #[cfg(feature = "nats")]
    Nats(Arc<auroraq_bus::NatsBus>),
    #[cfg(feature = "kafka")]
    Kafka(Arc<auroraq_bus::KafkaBus>),
}

impl Deleter {
    async fn delete(self) {
        match self {
            #[cfg(feature = "nats")]
            Deleter::Nats(b) => {
                b.close().await;
                if let Err(e) = b.delete_stream().await {
                    warn!(error = %e, "cannot delete the scratch stream");
                }
            }
            #[cfg(feature = "kafka")]
            Deleter::Kafka(b) => {
                b.close().await;
                b.stopped(Duration::from_secs(15)).await;
                match tokio::time::timeout(Duration::from_secs(20), b.delete_all()).await {
                    Ok(Err(e)) => warn!(error = %e, "cannot delete the scratch topics"),
                    Err(_) => warn!("deleting the scratch topics timed out"),
                    Ok(Ok(())) => {}
                }
            }
        }
    }
}

/// A name no other run uses: `<prefix><pid>x<counter>x<nanos>`, lower-case.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
    .to_lowercase()
}

impl Scratch {
    /// Opens a namespace named `name` (lower-case letters, digits, `_`) on the bus of `base`
    /// with `partitions` partitions.
    pub async fn open(base: &BusConfig, name: &str, partitions: u32) -> Result<Scratch> {
        let mut bus_cfg = base.clone();
        bus_cfg.stream = name.to_uppercase();
        bus_cfg.subject_root = name.to_owned();
        bus_cfg.partitions = partitions;
        let what = || {
            format!(
                "opening the scratch namespace {name} on {}",
                auroraq_util::redact(base.url.as_str())
            )
        };
        let (bus, deleter): (Arc<dyn Bus>, Deleter) = match &base.url {
            #[cfg(feature = "nats")]
            BusUrl::Nats(url) => {
                let mut n = auroraq_bus::NatsConfig::new(url.clone());
                n.partitions = partitions;
                n.stream = bus_cfg.stream.clone();
                n.subject_root = bus_cfg.subject_root.clone();
                n.max_age = Duration::from_secs(3600);
                let b = Arc::new(auroraq_bus::NatsBus::connect(n).await.with_context(what)?);
                (b.clone(), Deleter::Nats(b))
            }
            #[cfg(feature = "kafka")]
            BusUrl::Kafka(url) => {
                let mut k = auroraq_bus::KafkaConfig::new(url.clone());
                k.partitions = partitions;
                k.root = bus_cfg.subject_root.clone();
                k.retention = Duration::from_secs(3600);
                let b = Arc::new(auroraq_bus::KafkaBus::connect(k).await.with_context(what)?);
                (b.clone(), Deleter::Kafka(b))
            }
            other => bail!(
                "scaling score processes needs a NATS or Kafka bus in this build, not {}",
                auroraq_util::redact(other.as_str())
            ),
        };
        Ok(Scratch {
            bus_cfg,
            bus,
            deleter: Some(deleter),
        })
    }

    /// Deletes the namespace (its stream, or its topics and groups).
    pub async fn delete(mut self) {
        if let Some(d) = self.deleter.take() {
            d.delete().await;
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.deleter.take() {
            // Best effort, on a small runtime of its own (the caller's may be going away).
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(d.delete());
                }
            })
            .join();
        }
    }
}

/// Publishes events in batches; returns how many the bus stored.
pub async fn publish(bus: &dyn Bus, events: &[AnyEvent]) -> Result<usize> {
    let mut stored = 0;
    for chunk in events.chunks(500) {
        let r = auroraq_stage::publish_events(bus, chunk)
            .await
            .context("publishing the backlog")?;
        stored += r.stored;
    }
    bus.flush().await.context("flushing the backlog")?;
    Ok(stored)
}

/// How the pool starts its `auroraq score` processes.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The `auroraq` executable.
    pub exe: PathBuf,
    /// The namespace's bus settings (URL, stream, root, partitions, in-flight, ack wait).
    pub bus: BusConfig,
    /// ONNX Runtime intra-op threads per worker (`sentiment.threads`).
    pub threads: u64,
    /// Working directory of the workers (the model and ONNX Runtime paths are relative to it).
    pub dir: Option<PathBuf>,
    /// Further environment (e.g. `AURORAQ_SENTIMENT_MODEL_DIR`).
    pub env: Vec<(String, String)>,
    /// Each worker's log (stderr) goes to `<logs>/score-<id>.log`.
    pub logs: PathBuf,
}

/// One worker's counters: from its `/metrics` while it runs, from its last line once stopped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerCounts {
    /// The pool's number for it (never reused).
    pub id: usize,
    pub pid: Option<u32>,
    /// Its place in the group's split (`member` of `members`; 0 of 1 on a shared split).
    pub member: u32,
    pub members: u32,
    /// Articles it took from the bus (a redelivery counts again).
    pub received: u64,
    /// Scores it published.
    pub published: u64,
    /// Deliveries it got that the bus marked as redeliveries (attempt > 1).
    pub redelivered: u64,
    /// How it ended: `running`, `stopped` (SIGTERM, drained), `killed` (SIGKILL), `failed`.
    pub state: String,
}

struct Worker {
    counts: WorkerCounts,
    child: Child,
    metrics_port: u16,
    log: PathBuf,
}

/// `auroraq score` processes in one consumer group, scaled up and down (see the module docs).
pub struct Pool {
    opts: WorkerOptions,
    split: Split,
    running: Vec<Worker>,
    /// Workers that have ended, with their last counters.
    pub ended: Vec<WorkerCounts>,
    next_id: usize,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("finding a free port")?.port())
}

/// GET `path` of a worker's metrics server (HTTP/1.0 on loopback): the whole response.
async fn get(port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .with_context(|| format!("reading {path} timed out"))??;
    Ok(body)
}

/// A worker's `/metrics`.
async fn scrape(port: u16) -> Result<String> {
    get(port, "/metrics").await
}

/// Sums a counter's samples of the `sentiment` stage in a Prometheus text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|r| r.starts_with('{')) && l.contains("stage=\"sentiment\"")
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

impl Pool {
    pub fn new(opts: WorkerOptions, split: Split) -> Result<Pool> {
        std::fs::create_dir_all(&opts.logs).with_context(|| format!("creating {}", opts.logs.display()))?;
        Ok(Pool {
            opts,
            split,
            running: Vec::new(),
            ended: Vec::new(),
            next_id: 0,
        })
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// Workers running now.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    fn spawn(&mut self, member: u32, members: u32) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let o = &self.opts;
        let port = free_port()?;
        let log = o.logs.join(format!("score-{id}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&o.exe);
        if let Some(d) = &o.dir {
            cmd.current_dir(d);
        }
        cmd.args(["--log-format", "json", "--metrics-listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("score")
            .args(["--member", &member.to_string(), "--members", &members.to_string()])
            .env("AURORAQ_BUS_URL", o.bus.url.as_str())
            .env("AURORAQ_BUS_STREAM", &o.bus.stream)
            .env("AURORAQ_BUS_SUBJECT_ROOT", &o.bus.subject_root)
            .env("AURORAQ_BUS_PARTITIONS", o.bus.partitions.to_string())
            .env("AURORAQ_BUS_MAX_IN_FLIGHT", o.bus.max_in_flight.to_string())
            .env("AURORAQ_BUS_ACK_WAIT_SECS", o.bus.ack_wait_secs.to_string())
            .env("AURORAQ_SENTIMENT_THREADS", o.threads.to_string())
            .envs(o.env.iter().map(|(k, v)| (k, v)))
            .env_remove("AURORAQ_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} score", o.exe.display()))?;
        info!(worker = id, pid = child.id(), member, members, log = %log.display(), "score worker started");
        self.running.push(Worker {
            counts: WorkerCounts {
                id,
                pid: child.id(),
                member,
                members,
                state: "running".into(),
                ..WorkerCounts::default()
            },
            child,
            metrics_port: port,
            log,
        });
        Ok(())
    }

    /// Runs `n` workers. Shared split: starts (or stops) the difference. Static split: unless
    /// the running workers already are members 0..n of n, stops them all (SIGTERM: they commit
    /// what they acked) and starts `n` on the new split.
    pub async fn scale_to(&mut self, n: usize) -> Result<()> {
        match self.split {
            Split::Shared => {
                while self.running.len() > n {
                    let w = self.running.pop().context("a worker to stop")?;
                    self.stop_worker(w).await;
                }
                while self.running.len() < n {
                    self.spawn(0, 1)?;
                }
            }
            Split::Static => {
                let mut members: Vec<(u32, u32)> = self
                    .running
                    .iter()
                    .map(|w| (w.counts.member, w.counts.members))
                    .collect();
                members.sort_unstable();
                let want: Vec<(u32, u32)> = (0..n as u32).map(|i| (i, n as u32)).collect();
                if members != want {
                    for w in std::mem::take(&mut self.running) {
                        self.stop_worker(w).await;
                    }
                    for i in 0..n as u32 {
                        self.spawn(i, n as u32)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// SIGTERM, then its last line (its counters); SIGKILL after 60 s.
    async fn stop_worker(&mut self, mut w: Worker) {
        if let Some(pid) = w.child.id() {
            // A child this pool started and has not reaped: the pid is still its own.
            if let Err(e) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            ) {
                warn!(worker = w.counts.id, error = %e, "cannot send SIGTERM");
            }
        }
        let mut out = String::new();
        if let Some(mut o) = w.child.stdout.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), o.read_to_string(&mut out)).await;
        }
        let status = match tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                let _ = w.child.kill().await;
                None
            }
        };
        let last: Option<serde_json::Value> = out.lines().last().and_then(|l| serde_json::from_str(l).ok());
        match (status, last) {
            (Some(s), Some(v)) if s.success() => {
                let get = |k: &str| v[k].as_u64().unwrap_or(0);
                w.counts.received = get("received");
                w.counts.published = get("published");
                w.counts.redelivered = get("redelivered");
                w.counts.state = "stopped".into();
            }
            (status, _) => {
                warn!(worker = w.counts.id, ?status, log = %w.log.display(), "a score worker did not stop cleanly");
                w.counts.state = "failed".into();
            }
        }
        self.ended.push(w.counts);
    }

    /// Kills worker `index` (of the running ones) with SIGKILL, as `kill -9` does, right after
    /// reading its counters; returns them (what it had received and published by then, at least).
    pub async fn kill9(&mut self, index: usize) -> Result<WorkerCounts> {
        if index >= self.running.len() {
            bail!("no running worker {index} (there are {})", self.running.len());
        }
        let mut w = self.running.remove(index);
        if let Ok(text) = scrape(w.metrics_port).await {
            w.counts.received = counter(&text, "auroraq_events_consumed_total");
            w.counts.published = counter(&text, "auroraq_events_published_total");
        }
        w.child.start_kill().context("SIGKILL")?;
        let _ = w.child.wait().await;
        w.counts.state = "killed".into();
        info!(
            worker = w.counts.id,
            received = w.counts.received,
            published = w.counts.published,
            "score worker killed (SIGKILL)"
        );
        self.ended.push(w.counts.clone());
        Ok(w.counts)
    }

    /// The running workers' counters, from their `/metrics` (zero for one not serving yet).
    /// Fails when one has exited by itself.
    pub async fn counts(&mut self) -> Result<Vec<WorkerCounts>> {
        let mut out = Vec::new();
        for w in &mut self.running {
            if let Ok(Some(status)) = w.child.try_wait() {
                bail!(
                    "score worker {} exited by itself ({status}); see {}",
                    w.counts.id,
                    w.log.display()
                );
            }
            if let Ok(text) = scrape(w.metrics_port).await {
                w.counts.received = counter(&text, "auroraq_events_consumed_total");
                w.counts.published = counter(&text, "auroraq_events_published_total");
            }
            out.push(w.counts.clone());
        }
        Ok(out)
    }

    /// Waits until every running worker answers `/ready` (model loaded, bus connected).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.running.len() {
            loop {
                let w = &mut self.running[i];
                if let Ok(Some(status)) = w.child.try_wait() {
                    bail!(
                        "score worker {} exited by itself ({status}); see {}",
                        w.counts.id,
                        w.log.display()
                    );
                }
                let ok = get(w.metrics_port, "/ready")
                    .await
                    .is_ok_and(|r| r.lines().next().is_some_and(|l| l.contains(" 200")));
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "score worker {} was not ready within {timeout:?}; see {}",
                        w.counts.id,
                        w.log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops every running worker (SIGTERM); returns every worker's counters, in start order.
    pub async fn stop(mut self) -> Vec<WorkerCounts> {
        for w in std::mem::take(&mut self.running) {
            self.stop_worker(w).await;
        }
        let mut all = std::mem::take(&mut self.ended);
        all.sort_by_key(|c| c.id);
        all
    }
}

/// When the scores of a backlog were made.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScoreSpan {
    /// Distinct articles scored.
    pub articles: usize,
    /// Score messages seen (more than `articles` when some were scored twice).
    pub scores: usize,
    /// First and last `ts_processed`, Unix microseconds.
    pub first_us: i64,
    pub last_us: i64,
}

/// Reads `sentiment.scores` (a transient group from the start) until `n` distinct articles have a
/// score, or `timeout`.
pub async fn watch_scores(bus: &dyn Bus, n: usize, timeout: Duration) -> Result<ScoreSpan> {
    let mut sub = bus
        .subscribe(SubscribeOptions::new("scalewatch", topics::SENTIMENT_SCORES).transient())
        .await
        .context("subscribing to the scores")?;
    let mut seen = HashSet::new();
    let mut span = ScoreSpan {
        first_us: i64::MAX,
        last_us: i64::MIN,
        ..ScoreSpan::default()
    };
    let deadline = Instant::now() + timeout;
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => bail!("the bus closed after {} of {n} articles were scored", seen.len()),
            Err(_) => bail!(
                "only {} of {n} articles were scored within {timeout:?}",
                seen.len()
            ),
        };
        let d = next.context("a score delivery")?;
        let score = auroraq_schemas::decode::<SentimentScore>(d.payload());
        let _ = d.ack().await;
        let s = score.context("decoding a score")?;
        span.scores += 1;
        if seen.insert(s.article_id.clone()) {
            let t = s.meta.ts_processed.unwrap_or(s.meta.ts_ingest);
            span.first_us = span.first_us.min(t);
            span.last_us = span.last_us.max(t);
        }
    }
    span.articles = seen.len();
    Ok(span)
}

/// What `auroraq bench scale` measures.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub workers: Vec<usize>,
    pub articles: usize,
    /// Partitions of each namespace (12 splits evenly over 1, 2, 3, 4 and 6 static members).
    pub partitions: u32,
    /// ONNX Runtime threads per worker; `None`: the cores divided by the workers (at least 1).
    pub threads: Option<u64>,
    /// The headlines (news CSV).
    pub news: PathBuf,
    /// Rounds over every worker count (interleaved, so that a busy spell of a shared machine
    /// falls on every count alike); each count's median is reported.
    pub rounds: usize,
}

/// One worker count's figure.
#[derive(Clone, Debug, Serialize)]
pub struct ScalePoint {
    pub workers: usize,
    pub threads_per_worker: u64,
    pub articles: usize,
    /// First score to last, seconds.
    pub seconds: f64,
    pub articles_per_s: f64,
    /// Against one worker's rate.
    pub speedup: f64,
    /// Score messages seen (more than `articles` when some article was scored twice).
    pub scores: usize,
    /// Articles each worker took (a redelivery counts again), in the median round.
    pub per_worker: Vec<u64>,
    /// Every round's rate, in round order (the figure above is their median).
    pub rounds_articles_per_s: Vec<f64>,
    /// The 1-minute load average at the end of each round (`/proc/loadavg`): how busy the
    /// machine was besides the bench.
    pub load_average: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    pub bus: String,
    pub split: Split,
    pub partitions: u32,
    pub cores: usize,
    pub points: Vec<ScalePoint>,
    /// Best rate over the one-worker rate.
    pub best_speedup: f64,
}

impl ScaleReport {
    pub fn print(&self) {
        println!(
            "bench scale on {} ({} split, {} partitions, {} cores): articles/s from first score to last",
            self.bus,
            serde_json::to_value(self.split)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            self.partitions,
            self.cores
        );
        println!(
            "{:>7} {:>8} {:>8} {:>9} {:>10} {:>8}  {:<24} {:<16} per worker (median round)",
            "workers",
            "threads",
            "articles",
            "seconds",
            "articles/s",
            "speedup",
            "rounds (articles/s)",
            "load average"
        );
        for p in &self.points {
            let rounds: Vec<String> = p
                .rounds_articles_per_s
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect();
            let loads: Vec<String> = p.load_average.iter().map(|l| format!("{l:.1}")).collect();
            println!(
                "{:>7} {:>8} {:>8} {:>9.2} {:>10.1} {:>7.2}x  {:<24} {:<16} {:?}",
                p.workers,
                p.threads_per_worker,
                p.articles,
                p.seconds,
                p.articles_per_s,
                p.speedup,
                rounds.join(" "),
                loads.join(" "),
                p.per_worker
            );
        }
    }
}

/// `auroraq bench scale`: see the module docs.
pub async fn bench(cfg: &crate::Config, opts: &BenchOptions) -> Result<ScaleReport> {
    let split = Split::of(&cfg.bus.url)?;
    if opts.workers.is_empty() || opts.workers.contains(&0) {
        bail!("--workers takes counts of at least 1, e.g. 1,2,3");
    }
    if split == Split::Static {
        if let Some(&w) = opts.workers.iter().find(|&&w| w as u32 > opts.partitions) {
            bail!("{w} workers on a static split need at least {w} partitions (--partitions)");
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exe = std::env::current_exe().context("finding the auroraq executable to start the workers")?;
    let articles = headlines(&opts.news, "scalebench", opts.articles.max(1))?;
    let logs = std::env::temp_dir().join(unique_name("auroraq-bench-scale-"));
    let mut rounds: Vec<Vec<ScalePoint>> = vec![Vec::new(); opts.workers.len()];
    for round in 0..opts.rounds.max(1) {
        for (k, &n) in opts.workers.iter().enumerate() {
            let threads = opts.threads.unwrap_or((cores / n).max(1) as u64);
            let dir = logs.join(format!("r{round}w{n}"));
            let p = measure(cfg, split, &exe, &articles, opts.partitions, n, threads, dir).await?;
            info!(round, workers = n, articles_per_s = p.articles_per_s, seconds = p.seconds, load = ?p.load_average, "point measured");
            rounds[k].push(p);
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
    let mut points: Vec<ScalePoint> = Vec::new();
    for mut of_count in rounds {
        let rates: Vec<f64> = of_count.iter().map(|p| p.articles_per_s).collect();
        let loads: Vec<f64> = of_count.iter().flat_map(|p| p.load_average.clone()).collect();
        of_count.sort_by(|a, b| a.articles_per_s.total_cmp(&b.articles_per_s));
        let mid = of_count.len() / 2;
        let Some(mut p) = of_count.into_iter().nth(mid) else {
            continue;
        };
        p.rounds_articles_per_s = rates;
        p.load_average = loads;
        points.push(p);
    }
    let base = points.first().map_or(1.0, |p| p.articles_per_s);
    for p in &mut points {
        p.speedup = p.articles_per_s / base;
    }
    let best = points.iter().map(|p| p.speedup).fold(0.0, f64::max);
    Ok(ScaleReport {
        bus: auroraq_util::redact(cfg.bus.url.as_str()),
        split,
        partitions: opts.partitions,
        cores,
        points,
        best_speedup: best,
    })
}

/// The 1-minute load average, where `/proc/loadavg` tells it.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One round of one worker count: workers ready, backlog published, scores watched.
#[allow(clippy::too_many_arguments)]
async fn measure(
    cfg: &crate::Config,
    split: Split,
    exe: &Path,
    articles: &[AnyEvent],
    partitions: u32,
    n: usize,
    threads: u64,
    logs: PathBuf,
) -> Result<ScalePoint> {
    let scratch = Scratch::open(&cfg.bus, &unique_name("scale"), partitions).await?;
    let mut pool = Pool::new(
        WorkerOptions {
            exe: exe.to_path_buf(),
            bus: scratch.bus_cfg.clone(),
            threads,
            dir: None,
            // The parent's model, whatever configuration file it was given.
            env: vec![
                (
                    "AURORAQ_SENTIMENT_MODEL_DIR".into(),
                    cfg.sentiment.model_dir.display().to_string(),
                ),
                (
                    "AURORAQ_SENTIMENT_ORT_DYLIB".into(),
                    cfg.sentiment.ort_dylib.display().to_string(),
                ),
            ],
            logs,
        },
        split,
    )?;
    // The workers load the model and join first, so that the span measured is theirs
    // together, not one worker's while the others still load; the backlog then goes out at
    // once (publishing is far faster than scoring).
    pool.scale_to(n).await?;
    pool.wait_ready(Duration::from_secs(120)).await?;
    let stored = publish(&*scratch.bus, articles).await?;
    if stored != articles.len() {
        bail!("the bus stored {stored} of {} articles", articles.len());
    }
    let span = watch_scores(&*scratch.bus, articles.len(), Duration::from_secs(600)).await;
    let load = load_average();
    let counts = pool.stop().await;
    scratch.delete().await;
    let span = span?;
    let seconds = ((span.last_us - span.first_us) as f64 / 1e6).max(1e-6);
    let rate = span.articles as f64 / seconds;
    Ok(ScalePoint {
        workers: n,
        threads_per_worker: threads,
        articles: span.articles,
        seconds,
        articles_per_s: rate,
        speedup: 1.0,
        scores: span.scores,
        per_worker: counts.iter().map(|c| c.received).collect(),
        rounds_articles_per_s: vec![rate],
        load_average: load.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_the_sentiment_stage_are_summed() {
        let text = "# TYPE auroraq_events_consumed_total counter\n\
            auroraq_events_consumed_total{role=\"score\",stage=\"sentiment\",topic=\"news.articles.a\"} 12\n\
            auroraq_events_consumed_total{role=\"score\",stage=\"sentiment\",topic=\"news.articles.b\"} 30\n\
            auroraq_events_consumed_total{role=\"score\",stage=\"fusion\",topic=\"x\"} 99\n\
            auroraq_events_consumed_totalx{stage=\"sentiment\"} 5\n";
        assert_eq!(counter(text, "auroraq_events_consumed_total"), 42);
        assert_eq!(counter(text, "auroraq_events_published_total"), 0);
    }

    #[test]
    fn the_split_follows_the_bus() {
        assert_eq!(
            Split::of(&BusUrl::Nats("nats://h:1".into())).unwrap(),
            Split::Shared
        );
        assert_eq!(
            Split::of(&BusUrl::Kafka("kafka://h:1".into())).unwrap(),
            Split::Static
        );
        assert!(Split::of(&BusUrl::InProc).is_err());
    }
}
