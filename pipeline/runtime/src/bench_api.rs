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
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Texts per model batch (this API only).
    pub mean_batch_size: Option<f64>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub points: Vec<Point>,
    /// This API's requests/s over the baseline's, by client count.
    pub throughput_vs_baseline: Vec<(usize, f64)>,
    /// This API's p99 over the baseline's, by client count.
    pub p99_vs_baseline: Vec<(usize, f64)>,
    pub texts: usize,
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

async fn measure(
    server: &str,
    url: &str,
    key: Option<&str>,
    clients: &[usize],
    duration: Duration,
    texts: &Arc<Vec<String>>,
    stats: Option<&auroraq_sentiment::scorer::ScorerStats>,
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    // Warm-up: threads, connections, the model's first runs.
    load(url, key, 4, Duration::from_secs(2), texts.clone(), 0).await?;
    for (n, &c) in clients.iter().enumerate() {
        let before = stats.map(|s| (s.texts.load(Ordering::Relaxed), s.batches.load(Ordering::Relaxed)));
        let (ok, err, lat, secs) = load(url, key, c, duration, texts.clone(), 1000 + n * 7919).await?;
        let mean_batch_size = stats.zip(before).map(|(s, (t0, b0))| {
            let (t, b) = (
                s.texts.load(Ordering::Relaxed) - t0,
                s.batches.load(Ordering::Relaxed) - b0,
            );
            t as f64 / b.max(1) as f64
        });
        let p = Point {
            server: server.into(),
            clients: c,
            requests: ok,
            errors: err,
            requests_per_s: ok as f64 / secs,
            p50_ms: pct(&lat, 50.0),
            p99_ms: pct(&lat, 99.0),
            mean_batch_size,
        };
        info!(?p, "measured");
        eprintln!(
            "{:<9} {:>3} clients: {:>8.1} req/s  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {}{}",
            p.server,
            c,
            p.requests_per_s,
            p.p50_ms,
            p.p99_ms,
            err,
            p.mean_batch_size
                .map(|b| format!("  batch {b:.1}"))
                .unwrap_or_default()
        );
        points.push(p);
    }
    Ok(points)
}

/// Measures this API and, when given, the baseline at `baseline` (its analyze URL).
pub async fn api(
    cfg: &Config,
    clients: &[usize],
    duration: Duration,
    baseline: Option<&str>,
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
    let mut points = measure("auroraq", &url, Some(key), clients, duration, &texts, stats).await?;
    stop.cancel();
    if let Some(b) = baseline {
        points.extend(measure("baseline", b, None, clients, duration, &texts, None).await?);
    }
    let ratio = |f: fn(&Point) -> f64| -> Vec<(usize, f64)> {
        clients
            .iter()
            .filter_map(|&c| {
                let ours = points.iter().find(|p| p.server == "auroraq" && p.clients == c)?;
                let base = points.iter().find(|p| p.server == "baseline" && p.clients == c)?;
                Some((c, f(ours) / f(base).max(1e-9)))
            })
            .collect()
    };
    Ok(Report {
        throughput_vs_baseline: ratio(|p| p.requests_per_s),
        p99_vs_baseline: ratio(|p| p.p99_ms),
        texts: texts.len(),
        points,
    })
}
