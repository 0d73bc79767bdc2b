//! `auroraq bench api`: `POST /api/v1/sentiment/analyze` requests/s and latency at several client
//! counts, for this API (in process, on loopback, the default model behind its batcher, the cache
//! off) and, in the same run, for a baseline server at `--baseline URL` (the seed's design:
//! `scripts/bench/api_seed_baseline.py`, FastAPI calling a `transformers` pipeline per request on the
//! same weights). Every request carries a different real headline, so nothing is answered from a
//! cache. The load generator is the same for both: `clients` tasks, each sending its next request
//! when the last one is answered (closed loop), for `duration` after a warm-up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tracing::info;

use crate::config::Config;

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub server: String,
    pub round: usize,
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Texts per model batch (this API only).
    pub mean_batch_size: Option<f64>,
}

/// The medians over the rounds at one client count.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub clients: usize,
    pub auroraq_requests_per_s: f64,
    pub auroraq_p99_ms: f64,
    pub mean_batch_size: f64,
    pub baseline_requests_per_s: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    /// Median requests/s of this API over the baseline's median.
    pub throughput_ratio: Option<f64>,
    /// Median p99 of this API over the baseline's median p99.
    pub p99_ratio: Option<f64>,
    /// Each round's requests/s ratio (the two points of a round ran one right after the other).
    pub throughput_ratio_by_round: Vec<f64>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// By client count: medians over the rounds and the ratios.
    pub summary: Vec<Summary>,
    pub rounds: usize,
    pub texts: usize,
    /// Every measured point, in the order measured.
    pub points: Vec<Point>,
}

/// Real headlines to send, each once per run at most.
fn headlines(cfg: &Config) -> Result<Vec<String>> {
    let path = cfg.run.news.first().context("run.news names no headline file")?;
    let events = auroraq_replay::news_csv::read_news_csv(path, "bench")
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(events
        .into_iter()
        .filter_map(|e| match e {
            auroraq_schemas::AnyEvent::Article(a) => a.title,
            _ => None,
        })
        .collect())
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// Closed-loop load on `url` with `clients` concurrent clients for `duration`.
async fn load(
    url: &str,
    key: Option<&str>,
    clients: usize,
    duration: Duration,
    texts: Arc<Vec<String>>,
    offset: usize,
) -> Result<(u64, u64, Vec<f64>, f64)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .context("http client")?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(offset));
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, texts, next) = (http.clone(), texts.clone(), next.clone());
            let url = url.to_owned();
            let key = key.map(str::to_owned);
            tokio::spawn(async move {
                let (mut ok, mut err, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) % texts.len();
                    let mut req = http.post(&url).json(&serde_json::json!({"text": texts[i]}));
                    if let Some(k) = &key {
                        req = req.bearer_auth(k);
                    }
                    let s = Instant::now();
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            ok += 1;
                            lat.push(s.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => err += 1,
                    }
                }
                (ok, err, lat)
            })
        })
        .collect();
    let (mut ok, mut err, mut lat) = (0, 0, Vec::new());
    for t in tasks {
        let (o, e, l) = t.await.context("client task")?;
        ok += o;
        err += e;
        lat.extend(l);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((ok, err, lat, secs))
}

/// One point: `clients` clients on `url` for `duration`.
#[allow(clippy::too_many_arguments)]
async fn measure(
    server: &str,
    round: usize,
    url: &str,
    key: Option<&str>,
    clients: usize,
    duration: Duration,
    texts: &Arc<Vec<String>>,
    offset: usize,
    stats: Option<&auroraq_sentiment::scorer::ScorerStats>,
) -> Result<Point> {
    let before = stats.map(|s| (s.texts.load(Ordering::Relaxed), s.batches.load(Ordering::Relaxed)));
    let (ok, err, lat, secs) = load(url, key, clients, duration, texts.clone(), offset).await?;
    let mean_batch_size = stats.zip(before).map(|(s, (t0, b0))| {
        let (t, b) = (
            s.texts.load(Ordering::Relaxed) - t0,
            s.batches.load(Ordering::Relaxed) - b0,
        );
        t as f64 / b.max(1) as f64
    });
    let p = Point {
        server: server.into(),
        round,
        clients,
        requests: ok,
        errors: err,
        requests_per_s: ok as f64 / secs,
        p50_ms: pct(&lat, 50.0),
        p99_ms: pct(&lat, 99.0),
        mean_batch_size,
    };
    info!(?p, "measured");
    eprintln!(
        "round {round}  {:<9} {:>3} clients: {:>8.1} req/s  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {}{}",
        p.server,
        clients,
        p.requests_per_s,
        p.p50_ms,
        p.p99_ms,
        err,
        p.mean_batch_size
            .map(|b| format!("  batch {b:.1}"))
            .unwrap_or_default()
    );
    Ok(p)
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The medians over rounds at one client count, and each round's ratios.
fn summarise(points: &[Point], clients: &[usize]) -> Vec<Summary> {
    clients
        .iter()
        .map(|&c| {
            let of = |server: &str, f: fn(&Point) -> f64| -> Vec<f64> {
                points
                    .iter()
                    .filter(|p| p.server == server && p.clients == c)
                    .map(f)
                    .collect()
            };
            let (ours, base) = (
                of("auroraq", |p| p.requests_per_s),
                of("baseline", |p| p.requests_per_s),
            );
            let (ours99, base99) = (of("auroraq", |p| p.p99_ms), of("baseline", |p| p.p99_ms));
            let batch = points
                .iter()
                .filter(|p| p.server == "auroraq" && p.clients == c)
                .filter_map(|p| p.mean_batch_size)
                .collect();
            let per_round: Vec<f64> = ours.iter().zip(&base).map(|(o, b)| o / b.max(1e-9)).collect();
            let has_base = !base.is_empty();
            Summary {
                clients: c,
                auroraq_requests_per_s: median(ours.clone()),
                auroraq_p99_ms: median(ours99.clone()),
                mean_batch_size: median(batch),
                baseline_requests_per_s: has_base.then(|| median(base.clone())),
                baseline_p99_ms: has_base.then(|| median(base99.clone())),
                throughput_ratio: has_base.then(|| median(ours) / median(base).max(1e-9)),
                p99_ratio: has_base.then(|| median(ours99) / median(base99).max(1e-9)),
                throughput_ratio_by_round: per_round,
            }
        })
        .collect()
}

/// Measures this API and, when given, the baseline at `baseline` (its analyze URL), `rounds`
/// times over, the two servers' points at a client count one right after the other.
pub async fn api(
    cfg: &Config,
    clients: &[usize],
    duration: Duration,
    baseline: Option<&str>,
    rounds: usize,
) -> Result<Report> {
    if clients.is_empty() || clients.contains(&0) {
        bail!("--clients must list positive counts, e.g. 1,16,64");
    }
    if let Some(b) = baseline {
        let host = b
            .strip_prefix("http://")
            .and_then(|r| r.split(['/', ':']).next())
            .unwrap_or("");
        if !(host == "localhost" || host.starts_with("127.")) {
            bail!("--baseline must be an http:// URL on loopback (127.0.0.0/8 or localhost), not {b}");
        }
    }
    let texts = Arc::new(headlines(cfg)?);
    // This API on loopback: the default model behind the batcher, no cache, limits out of the way.
    let key = "bench-key-0123456789abcdef";
    let mut c = cfg.clone();
    c.api.listen = "127.0.0.1:0".into();
    c.api.grpc_listen = String::new();
    c.api.keys = vec![auroraq_api::Secret(key.into())];
    c.api.cache_entries = 0;
    c.api.rate_per_key = 1e9;
    c.api.burst_per_key = 1e9;
    c.api.rate_per_ip = 1e9;
    c.api.burst_per_ip = 1e9;
    c.api.max_in_flight = clients.iter().max().copied().unwrap_or(1) * 2;
    c.postgres.url = String::new();
    c.redis.url = String::new();
    let bus = crate::wiring::connect_bus(&c.bus).await?;
    let stop = auroraq_util::CancellationToken::new();
    let running = crate::api::start(&c, bus, &crate::api::ApiOptions::default(), stop.clone()).await?;
    let url = format!("http://{}/api/v1/sentiment/analyze", running.addr);
    let stats = running.state.backends.scorer.as_ref().map(|s| s.stats());
    // Warm-up of both: threads, connections, the model's first runs.
    load(&url, Some(key), 4, Duration::from_secs(2), texts.clone(), 0).await?;
    if let Some(b) = baseline {
        load(b, None, 4, Duration::from_secs(2), texts.clone(), 0).await?;
    }
    // Rounds, each point of this API right beside the baseline's at the same client count, so
    // that a slow spell of the machine falls on both; the summary takes medians over rounds.
    let mut points = Vec::new();
    for round in 0..rounds.max(1) {
        for (n, &c) in clients.iter().enumerate() {
            let offset = 1000 + (round * clients.len() + n) * 7919;
            points.push(
                measure(
                    "auroraq",
                    round,
                    &url,
                    Some(key),
                    c,
                    duration,
                    &texts,
                    offset,
                    stats,
                )
                .await?,
            );
            if let Some(b) = baseline {
                points.push(measure("baseline", round, b, None, c, duration, &texts, offset, None).await?);
            }
        }
    }
    stop.cancel();
    let summary = summarise(&points, clients);
    Ok(Report {
        summary,
        texts: texts.len(),
        rounds: rounds.max(1),
        points,
    })
}
