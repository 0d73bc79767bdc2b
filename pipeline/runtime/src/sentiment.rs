//! `auroraq sentiment ...` and the `score` role.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use auroraq_sentiment::assets::AliasTable;
use auroraq_sentiment::batcher::BatchConfig;
use auroraq_sentiment::eval::{evaluate, read_examples, Report};
use auroraq_sentiment::text::prepare;
use auroraq_sentiment::worker::run_worker;
use auroraq_sentiment::{runtime, Classifier, Device, ModelOptions};
use auroraq_stage::{StageMetrics, StageStats};

use crate::config::Config;
use crate::wiring::{connect_bus, stage_config};

/// Loads ONNX Runtime and the configured (or given) model.
pub fn load(cfg: &Config, model: Option<&Path>, device: Option<crate::config::Device>) -> Result<Classifier> {
    let lib = runtime::init(Some(&cfg.sentiment.ort_dylib))?;
    let dir = model
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cfg.sentiment.model_dir.clone());
    let device = match device.unwrap_or(cfg.sentiment.device) {
        crate::config::Device::Cuda => Device::Cuda,
        crate::config::Device::Cpu => Device::Cpu,
    };
    let opts = ModelOptions {
        threads: cfg.sentiment.threads as usize,
        device,
        max_length: None,
        sessions: cfg.sentiment.sessions.max(1) as usize,
        spin: cfg.sentiment.spin,
    };
    let c =
        Classifier::load(&dir, &opts).with_context(|| format!("loading the model in {}", dir.display()))?;
    tracing::info!(model = %c.model_id, device = ?c.device, library = %lib.display(), labels = ?c.labels, max_length = c.max_length, "model loaded");
    Ok(c)
}

pub fn batching(cfg: &Config) -> BatchConfig {
    let s = &cfg.sentiment;
    BatchConfig {
        max_batch_tokens: s.max_batch_tokens as usize,
        max_batch_size: s.max_batch_size as usize,
        max_wait: Duration::from_millis(s.max_wait_ms),
        queue: s.queue as usize,
        ..BatchConfig::default()
    }
}

pub fn aliases(cfg: &Config) -> AliasTable {
    let t = if cfg.sentiment.aliases.is_empty() {
        AliasTable::default()
    } else {
        AliasTable::new(cfg.sentiment.aliases.clone())
    };
    t.with_fallback(cfg.sentiment.fallback_assets.clone())
}

/// `auroraq sentiment score TEXT...`: one JSON object per text.
pub fn score_texts(c: &Classifier, texts: &[String]) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for t in texts {
        let prepared = match prepare(None, t) {
            Ok(p) => p,
            Err(e) => {
                out.push(serde_json::json!({"text": t, "error": e.to_string()}));
                continue;
            }
        };
        let mut r = c.classify(&[prepared.text.as_str()])?;
        let (enc, p) = r.remove(0);
        out.push(serde_json::json!({
            "text": t,
            "label": p.label,
            "probabilities": p.probabilities,
            "sentiment_score": p.sentiment_score,
            "confidence": p.confidence,
            "tokens": enc.ids.len(),
            "truncated": enc.truncated || prepared.truncated,
            "model_id": c.model_id,
            "model_sha256": c.model_sha256,
        }));
    }
    Ok(out)
}

/// `auroraq sentiment eval`: figures on a labelled CSV.
pub fn eval(c: &Classifier, data: &Path, batching: &BatchConfig) -> Result<Report> {
    let examples = read_examples(data)?;
    anyhow::ensure!(!examples.is_empty(), "{} has no rows", data.display());
    let mut last = 0;
    let report = evaluate(c, &examples, batching, |done, total| {
        let pct = done * 100 / total.max(1);
        if pct >= last + 10 || done == total {
            eprintln!("[eval] {done}/{total} sentences");
            last = pct;
        }
    })?;
    Ok(report)
}

pub fn print_report(r: &Report) {
    println!(
        "model {} ({}…)",
        r.model_id,
        &r.model_sha256[..12.min(r.model_sha256.len())]
    );
    println!(
        "n = {}   accuracy = {:.4}   macro-F1 = {:.4}",
        r.n, r.accuracy, r.macro_f1
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>8}",
        "label", "precision", "recall", "f1", "support"
    );
    for (l, f) in &r.per_class {
        println!(
            "{l:<10} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            f.precision, f.recall, f.f1, f.support
        );
    }
    println!("confusion (rows: true, columns: predicted)");
    print!("{:<10}", "");
    for l in &r.labels {
        print!(" {l:>9}");
    }
    println!();
    for t in &r.labels {
        print!("{t:<10}");
        for p in &r.labels {
            print!(
                " {:>9}",
                r.confusion
                    .get(t)
                    .and_then(|row| row.get(p))
                    .copied()
                    .unwrap_or(0)
            );
        }
        println!();
    }
}

/// `auroraq score`: the sentiment worker on the bus until stopped, as `member` of `members` of
/// the `sentiment` group (`(0, 1)`: every partition; on NATS several such workers share them).
pub async fn role(
    cfg: &Config,
    model: Option<PathBuf>,
    device: Option<crate::config::Device>,
    (member, members): (u32, u32),
    stop: auroraq_util::CancellationToken,
) -> Result<StageStats> {
    let c = load(cfg, model.as_deref(), device)?;
    let bus = connect_bus(&cfg.bus).await?;
    let mut scfg = stage_config(cfg, "sentiment", auroraq_bus::topics::ALL_ARTICLES);
    scfg.member = member;
    scfg.members = members;
    let metrics = Arc::new(StageMetrics::default());
    let worker = tokio::spawn(run_worker(
        bus.clone(),
        scfg,
        c,
        aliases(cfg),
        batching(cfg),
        metrics,
    ));
    stop.cancelled().await;
    bus.close().await;
    Ok(worker.await??)
}

/// One measured sentiment path.
#[derive(Debug, serde::Serialize)]
pub struct BenchFigure {
    pub path: String,
    pub sequences_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn pct(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return 0.0;
    }
    xs[((q / 100.0) * (xs.len() - 1) as f64).round() as usize]
}

fn figure(path: &str, n: usize, wall: Duration, mut lat_s: Vec<f64>) -> BenchFigure {
    BenchFigure {
        path: path.into(),
        sequences_per_s: n as f64 / wall.as_secs_f64(),
        p50_ms: pct(&mut lat_s, 50.0) * 1e3,
        p99_ms: pct(&mut lat_s, 99.0) * 1e3,
    }
}

/// Times `batches` (lists of indexes into `enc`) through the classifier.
fn time_batches(
    c: &Classifier,
    enc: &[auroraq_sentiment::Encoded],
    batches: &[Vec<usize>],
    path: &str,
) -> Result<BenchFigure> {
    let mut lat = Vec::with_capacity(batches.len());
    let t0 = std::time::Instant::now();
    for b in batches {
        let refs: Vec<_> = b.iter().map(|&i| &enc[i]).collect();
        let t = std::time::Instant::now();
        c.logits(&refs)?;
        lat.push(t.elapsed().as_secs_f64());
    }
    Ok(figure(path, enc.len(), t0.elapsed(), lat))
}

#[derive(Debug, serde::Serialize)]
pub struct SentimentBench {
    pub n: usize,
    pub mean_tokens: f64,
    pub gflop_per_sequence: f64,
    pub best_batch: usize,
    pub figures: Vec<BenchFigure>,
    pub python: Option<serde_json::Value>,
    pub ratios: BTreeMap<String, f64>,
}

use std::collections::BTreeMap;

/// `auroraq sentiment bench`: the Rust paths, then the Python baselines on the same file and sentences.
pub async fn bench(
    cfg: &Config,
    model: Option<&Path>,
    data: &Path,
    n: usize,
    batch_sizes: &[usize],
    python: Option<&str>,
    hf_dir: Option<&Path>,
) -> Result<SentimentBench> {
    let mut cfg = cfg.clone();
    if cfg.sentiment.threads == 0 {
        cfg.sentiment.threads = 2;
    }
    let c = load(&cfg, model, Some(crate::config::Device::Cpu))?;
    let sentences: Vec<String> = read_examples(data)?
        .into_iter()
        .map(|e| e.sentence)
        .take(n)
        .collect();
    anyhow::ensure!(!sentences.is_empty(), "no sentences in {}", data.display());
    let enc: Vec<_> = sentences.iter().map(|s| c.encode(s)).collect::<Result<_, _>>()?;
    let n = enc.len();
    let mean_tokens = enc.iter().map(|e| e.ids.len()).sum::<usize>() as f64 / n as f64;
    c.logits(&enc.iter().take(8).collect::<Vec<_>>())?; // warm-up

    let mut figures = Vec::new();
    let singles: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    figures.push(time_batches(&c, &enc, &singles, "rust batch 1")?);
    let mut best = (0usize, 0.0f64);
    let mut same_order = BTreeMap::new();
    for &b in batch_sizes {
        let in_order: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(b.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        let f = time_batches(&c, &enc, &in_order, &format!("rust batch {b}, file order"))?;
        same_order.insert(b, f.sequences_per_s);
        figures.push(f);
        let lengths: Vec<usize> = enc.iter().map(|e| e.ids.len()).collect();
        let bc = BatchConfig {
            max_batch_size: b,
            max_batch_tokens: b * c.max_length,
            ..BatchConfig::default()
        };
        let sorted = auroraq_sentiment::batcher::plan(&lengths, &bc);
        let f = time_batches(
            &c,
            &enc,
            &sorted,
            &format!("rust batch {b}, length-sorted (worker)"),
        )?;
        if f.sequences_per_s > best.1 {
            best = (b, f.sequences_per_s);
        }
        figures.push(f);
    }

    // Text in, label out (tokenising counted), on one batch plan that the Python baselines get too:
    // the worker's length-sorted plan at the best batch size.
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let lengths: Vec<usize> = enc.iter().map(|e| e.ids.len()).collect();
    let plan = auroraq_sentiment::batcher::plan(
        &lengths,
        &BatchConfig {
            max_batch_size: best.0.max(1),
            max_batch_tokens: best.0.max(1) * c.max_length,
            ..BatchConfig::default()
        },
    );
    let mut text_paths = BTreeMap::new();
    for (sessions, threads) in [(1usize, 2u64), (2, 1)] {
        let mut tcfg = cfg.clone();
        tcfg.sentiment.sessions = sessions as u64;
        tcfg.sentiment.threads = threads;
        let tc = load(&tcfg, model, Some(crate::config::Device::Cpu))?;
        tc.classify(&texts[..texts.len().min(8)])?; // warm-up
        let path = format!(
            "rust text->label, batch {} length-sorted, {sessions} session(s) x {threads} thread(s)",
            best.0
        );
        let f = text_to_label(&tc, &texts, &plan, sessions, &path)?;
        text_paths.insert(format!("{sessions}x{threads}"), f.sequences_per_s);
        figures.push(f);
    }
    let rust_text_best = text_paths.values().copied().fold(0.0, f64::max);

    // The whole worker on the in-process bus: articles published at once, timed to the last score.
    figures.push(worker_figure(&cfg, model, &sentences, best.0.max(1)).await?);

    let (layers, hidden, inter) = model_shape(&cfg, model);
    let t = mean_tokens;
    let gflop = (2.0 * layers * t * (4.0 * hidden * hidden + 2.0 * hidden * inter)
        + 4.0 * layers * t * t * hidden)
        / 1e9;

    let mut ratios = BTreeMap::new();
    let py = match python {
        None => None,
        Some(py) => {
            let model_dir = model
                .map(Path::to_path_buf)
                .unwrap_or_else(|| cfg.sentiment.model_dir.clone());
            let plan_file =
                std::env::temp_dir().join(format!("auroraq-bench-plan-{}.json", std::process::id()));
            std::fs::write(&plan_file, serde_json::to_string(&plan)?)
                .with_context(|| format!("writing {}", plan_file.display()))?;
            let mut cmd = std::process::Command::new(py);
            cmd.args(baseline_args(&BaselineArgs {
                plan: &plan_file,
                model_dir: &model_dir,
                data,
                n,
                batch: best.0,
                max_length: c.max_length,
                hf_dir,
            }));
            eprintln!("[bench] running the Python baselines with {py}");
            let out = cmd.output().with_context(|| format!("running {py}"))?;
            anyhow::ensure!(
                out.status.success(),
                "Python baselines failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(
                out.stdout
                    .split(|b| *b == b'\n')
                    .rfind(|l| !l.is_empty())
                    .unwrap_or(b"{}"),
            )
            .context("Python baselines printed no JSON")?;
            let sps = |k: &str| {
                v.get(k)
                    .and_then(|x| x.get("sequences_per_s"))
                    .and_then(|x| x.as_f64())
            };
            if let Some(b1) = sps("ort_b1") {
                ratios.insert("rust_best_vs_python_ort_b1".into(), best.1 / b1);
            }
            if let Some(bn) = sps("ort_bN") {
                ratios.insert("rust_best_vs_python_ort_same_batch".into(), best.1 / bn);
                if let Some(r) = same_order.get(&best.0) {
                    ratios.insert(
                        "rust_same_batch_file_order_vs_python_ort_same_batch".into(),
                        r / bn,
                    );
                }
            }
            if let Some(hf) = sps("hf_pipeline") {
                ratios.insert("rust_best_vs_seed_pipeline".into(), best.1 / hf);
                ratios.insert("rust_text_to_label_vs_seed_pipeline".into(), rust_text_best / hf);
            }
            let py_text: Vec<f64> = ["ort_plan_1x2", "ort_plan_2x1"]
                .iter()
                .filter_map(|k| sps(k))
                .collect();
            if let Some(p12) = sps("ort_plan_1x2") {
                if let Some(r) = text_paths.get("1x2") {
                    ratios.insert("rust_text_to_label_1x2_vs_python_1x2_same_plan".into(), r / p12);
                }
            }
            if let Some(p21) = sps("ort_plan_2x1") {
                if let Some(r) = text_paths.get("2x1") {
                    ratios.insert("rust_text_to_label_2x1_vs_python_2x1_same_plan".into(), r / p21);
                }
            }
            if let Some(py_best) = py_text.iter().copied().reduce(f64::max) {
                ratios.insert(
                    "rust_text_to_label_best_vs_python_best_same_plan".into(),
                    rust_text_best / py_best,
                );
            }
            if let Some(peak) = v.get("fp32_gemm_gflops").and_then(|x| x.as_f64()) {
                // Achieved model GFLOP/s (the encoder's matrix products, counted as fp32 FLOPs)
                // against the machine's measured dense fp32 peak: the distance to the roofline.
                ratios.insert(
                    "rust_text_to_label_gflops_vs_fp32_gemm_peak".into(),
                    rust_text_best * gflop / peak,
                );
            }
            let _ = std::fs::remove_file(&plan_file);
            Some(v)
        }
    };
    Ok(SentimentBench {
        n,
        mean_tokens,
        gflop_per_sequence: gflop,
        best_batch: best.0,
        figures,
        python: py,
        ratios,
    })
}

/// What `sentiment bench` hands the Python baselines.
struct BaselineArgs<'a> {
    plan: &'a Path,
    model_dir: &'a Path,
    data: &'a Path,
    n: usize,
    batch: usize,
    max_length: usize,
    hf_dir: Option<&'a Path>,
}

/// The interpreter's arguments for `scripts/bench/sentiment_baselines.py`: the script first (an
/// option before it would be the interpreter's), then its options; two threads as Rust's paths.
fn baseline_args(a: &BaselineArgs) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["scripts/bench/sentiment_baselines.py".into()];
    let mut opt = |k: &str, val: std::ffi::OsString| {
        v.push(k.into());
        v.push(val);
    };
    opt("--plan", a.plan.into());
    opt("--model-dir", a.model_dir.into());
    opt("--sentences", a.data.into());
    opt("--n", a.n.to_string().into());
    opt("--batch", a.batch.to_string().into());
    opt("--threads", "2".into());
    opt("--max-length", a.max_length.to_string().into());
    if let Some(h) = a.hf_dir {
        opt("--hf-dir", h.into());
    }
    v
}

/// Text in, label out over `plan`: each batch tokenised, run and labelled; with several sessions,
/// that many threads take batches in turn.
fn text_to_label(
    c: &Classifier,
    texts: &[&str],
    plan: &[Vec<usize>],
    workers: usize,
    path: &str,
) -> Result<BenchFigure> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t0 = std::time::Instant::now();
    let lat: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>> {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(b) = plan.get(i) else { break };
                        let t = std::time::Instant::now();
                        let batch: Vec<&str> = b.iter().map(|&i| texts[i]).collect();
                        let labelled = c.classify(&batch)?;
                        anyhow::ensure!(labelled.len() == b.len(), "a text got no label");
                        lat.push(t.elapsed().as_secs_f64());
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    Ok(figure(path, texts.len(), t0.elapsed(), lat))
}

async fn worker_figure(
    cfg: &Config,
    model: Option<&Path>,
    sentences: &[String],
    batch: usize,
) -> Result<BenchFigure> {
    use auroraq_bus::{topics, Bus, InProcBus, SubscribeOptions};
    use auroraq_schemas::{AnyEvent, Article, EventKind, Meta};
    let c = load(cfg, model, Some(crate::config::Device::Cpu))?;
    let bus: Arc<dyn Bus> = Arc::new(InProcBus::default());
    let mut scores = bus
        .subscribe(SubscribeOptions::new("bench", topics::SENTIMENT_SCORES))
        .await?;
    let mut scfg = stage_config(cfg, "sentiment", topics::ALL_ARTICLES);
    scfg.max_in_flight = 4096;
    let mut b = batching(cfg);
    b.max_batch_size = batch;
    b.max_batch_tokens = batch * c.max_length;
    let metrics = Arc::new(StageMetrics::default());
    let worker = tokio::spawn(run_worker(bus.clone(), scfg, c, aliases(cfg), b, metrics));
    let events: Vec<AnyEvent> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            AnyEvent::Article(Article {
                meta: Meta::raw(EventKind::Article, "bench", &i.to_string(), i as i64, i as i64),
                article_id: i.to_string(),
                feed: "bench".into(),
                title: None,
                text: s.clone(),
                url: None,
                origin: None,
                keywords: vec![],
                tickers: vec![],
                ts_crawled: None,
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = std::time::Instant::now();
    auroraq_stage::publish_events(&*bus, &events).await?;
    let mut lat = Vec::with_capacity(events.len());
    for _ in 0..events.len() {
        let d = scores.next().await.context("bus closed early")??;
        lat.push(t0.elapsed().as_secs_f64());
        d.ack().await?;
    }
    let wall = t0.elapsed();
    bus.close().await;
    worker.await??;
    Ok(figure(
        &format!("rust worker on the in-process bus, batch {batch} (time to score, all published at once)"),
        events.len(),
        wall,
        lat,
    ))
}

fn model_shape(cfg: &Config, model: Option<&Path>) -> (f64, f64, f64) {
    let dir = model
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cfg.sentiment.model_dir.clone());
    let v: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let g = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    (
        g("num_hidden_layers", 12.0),
        g("hidden_size", 768.0),
        g("intermediate_size", 3072.0),
    )
}

impl SentimentBench {
    /// One human line per path on stderr.
    pub fn print(&self) {
        for f in &self.figures {
            eprintln!(
                "{:<40} {:>9.1} seq/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                f.path, f.sequences_per_s, f.p50_ms, f.p99_ms
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_script_comes_before_its_options() {
        let args = baseline_args(&BaselineArgs {
            plan: Path::new("/tmp/plan.json"),
            model_dir: Path::new("models/m"),
            data: Path::new("data/fpb/validation.csv"),
            n: 512,
            batch: 16,
            max_length: 128,
            hf_dir: Some(Path::new(".auroraq/hf")),
        });
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args[0], "scripts/bench/sentiment_baselines.py", "{args:?}");
        // Each option with its value after it, and each one an option the script defines.
        let value = |k: &str| args.iter().position(|a| *a == k).map(|i| args[i + 1]);
        assert_eq!(value("--plan"), Some("/tmp/plan.json"));
        assert_eq!(value("--model-dir"), Some("models/m"));
        assert_eq!(value("--batch"), Some("16"));
        assert_eq!(value("--max-length"), Some("128"));
        assert_eq!(value("--hf-dir"), Some(".auroraq/hf"));
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/sentiment_baselines.py"),
        )
        .unwrap();
        for k in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                script.contains(&format!("\"{k}\"")),
                "the script has no option {k}"
            );
        }
    }
}
