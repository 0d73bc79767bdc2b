//! The runtime library's jobs, called as a program would call them (no subprocess): the main
//! job embedded, backtest plans over files and the bundled layout, configuration choices.

use std::path::{Path, PathBuf};

use auroraq_runtime::backtest::{self, Job, Source};
use auroraq_runtime::config::Device;
use auroraq_runtime::{roles, run, wiring, CancellationToken, Config};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first `rows` hourly bars of the bundled Coinbase file (banner and header kept).
fn bars(dir: &Path, rows: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("data/market/Coinbase_BTCUSD_1h.csv")).unwrap();
    let p = dir.join("bars.csv");
    let lines: Vec<&str> = text.lines().take(rows + 2).collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// The first `n` bundled Reuters articles.
fn news(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("data/news/reuters21578.jsonl")).unwrap();
    let p = dir.join("news.jsonl");
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Defaults, with the model and ONNX Runtime found from the repository root.
fn config(dir: &Path, bar_rows: usize, articles: usize) -> Config {
    let mut cfg = Config::load(None, Vec::<(String, String)>::new()).unwrap();
    cfg.sentiment.model_dir = repo().join("models/auroraq-minilm-fpb");
    cfg.sentiment.ort_dylib = repo().join(".auroraq/onnxruntime/libonnxruntime.so");
    cfg.run.bars = vec![bars(dir, bar_rows)];
    cfg.run.news = if articles > 0 {
        vec![news(dir, articles)]
    } else {
        vec![]
    };
    cfg.run.out_dir = dir.join("out");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_main_job_archives_everything_and_repeats_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 300, 6);
    let first = run::run(
        &cfg,
        wiring::pace(0.0).unwrap(),
        &[],
        CancellationToken::new(),
        false,
    )
    .await
    .unwrap();
    assert!(!first.interrupted);
    assert_eq!(first.published, 300, "every bar published once");
    assert_eq!(
        first.archived, first.published,
        "the archive sink kept every event"
    );
    assert_eq!(first.dead_letters, 0);
    let bt = first.backtest.as_ref().expect("the job ran its backtest");
    assert_eq!(
        bt.emitted_by_kind
            .get(&auroraq_schemas::EventKind::SentimentScore),
        Some(&6),
        "{:?}",
        bt.emitted_by_kind
    );
    assert!(cfg.run.out_dir.join("report/summary.json").exists());
    let lines = std::fs::read_to_string(cfg.run.out_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines as u64, first.archived);

    let again = run::run(
        &cfg,
        wiring::pace(0.0).unwrap(),
        &[],
        CancellationToken::new(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        again.backtest.as_ref().map(|b| &b.fingerprint),
        Some(&bt.fingerprint),
        "same data, same results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_main_job_stops_before_its_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 300, 0);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let s = run::run(&cfg, wiring::pace(0.0).unwrap(), &[], cancel, false)
        .await
        .unwrap();
    assert!(s.interrupted);
    assert!(s.backtest.is_none(), "interrupted: no backtest");
    assert!(s.published < 300, "intake stopped: {} published", s.published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_job_refuses_sinks_without_a_shared_bus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 10, 0);
    let e = run::run(
        &cfg,
        auroraq_runtime::replay::Pace::Max,
        &["postgres://postgres@127.0.0.1/postgres".into()],
        CancellationToken::new(),
        false,
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("--bus nats://"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_of_files_reads_them_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 200, 0);
    let job = Job {
        source: Source::Files {
            files: cfg.run.bars.clone(),
            format: None,
            exchange: "coinbase".into(),
            symbol: None,
        },
        agents: vec!["auroraq".into()],
        policy: None,
        out: dir.path().join("bt"),
        via_bus: true,
        progress: false,
    };
    let s = backtest::run_job(&cfg, job.clone()).await.unwrap();
    assert_eq!(s.events, 200, "every bar, through the in-process bus and back");
    assert_eq!(s.trades, 0, "no news, no signal, no trade");
    assert!(dir.path().join("bt/report.html").exists());
    let direct = backtest::run_job(
        &cfg,
        Job {
            via_bus: false,
            ..job
        },
    )
    .await
    .unwrap();
    assert_eq!(direct.fingerprint, s.fingerprint, "the bus changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_names_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 10, 0);
    let job = Job {
        source: Source::Files {
            files: vec![dir.path().join("missing.csv")],
            format: None,
            exchange: "csv".into(),
            symbol: None,
        },
        agents: vec!["auroraq".into()],
        policy: None,
        out: dir.path().join("bt"),
        via_bus: false,
        progress: false,
    };
    let e = format!("{:#}", backtest::run_job(&cfg, job.clone()).await.unwrap_err());
    assert!(e.contains("missing.csv"), "{e}");
    let e = format!(
        "{:#}",
        backtest::run_job(
            &cfg,
            Job {
                source: Source::Bus {
                    since: Some("yesterday-ish".into()),
                    until: None
                },
                ..job.clone()
            }
        )
        .await
        .unwrap_err()
    );
    assert!(e.contains("--since") && e.contains("yesterday-ish"), "{e}");
    let e = format!(
        "{:#}",
        backtest::run_job(
            &cfg,
            Job {
                agents: vec!["nobody".into()],
                source: Source::Files {
                    files: cfg.run.bars.clone(),
                    format: None,
                    exchange: "coinbase".into(),
                    symbol: None
                },
                ..job
            }
        )
        .await
        .unwrap_err()
    );
    assert!(
        e.contains("nobody") && e.contains("auroraq"),
        "names the agents it has: {e}"
    );
}

#[test]
fn the_demo_config_trades_the_bars_asset_on_daily_windows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 48, 3);
    let inputs = backtest::bundled(&cfg).unwrap();
    assert_eq!(inputs.len(), 48 + 3);
    let demo = backtest::demo_config(&cfg, &inputs).unwrap();
    let agent = &demo.agents["auroraq"];
    assert_eq!(agent.assets.get("BTC").map(String::as_str), Some("BTCUSD"));
    assert_eq!(demo.sentiment.fallback_assets, vec!["BTC".to_string()]);
    assert_eq!(demo.fusion.windows.len(), 1);
    assert_eq!(demo.fusion.windows[0].size_secs, 86_400);
    assert!(roles::agent(&demo, "auroraq", None).is_ok());
}

#[test]
fn pace_takes_zero_or_a_positive_factor() {
    assert_eq!(wiring::pace(0.0).unwrap(), auroraq_runtime::replay::Pace::Max);
    assert_eq!(
        wiring::pace(60.0).unwrap(),
        auroraq_runtime::replay::Pace::Speed(60.0)
    );
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(wiring::pace(bad).unwrap_err().to_string().contains("--speed"));
    }
}

#[test]
fn choices_in_the_configuration_are_typed() {
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let c = Config::load(None, env("AURORAQ_STAGES_CLOCK", "event")).unwrap();
    assert_eq!(c.stages.clock, auroraq_stage::ClockKind::Event);
    let c = Config::load(None, env("AURORAQ_SENTIMENT_DEVICE", "cuda")).unwrap();
    assert_eq!(c.sentiment.device, Device::Cuda);
    let c = Config::load(None, env("AURORAQ_BUS_URL", "nats://127.0.0.1:4222")).unwrap();
    assert_eq!(c.bus.url.kind(), auroraq_bus::BusKind::Nats);
    for (k, v, says) in [
        ("AURORAQ_STAGES_CLOCK", "sometimes", "sometimes"),
        ("AURORAQ_SENTIMENT_DEVICE", "tpu", "tpu"),
        ("AURORAQ_BUS_URL", "amqp://h", "bus.url"),
    ] {
        let e = format!("{:#}", Config::load(None, env(k, v)).unwrap_err());
        assert!(e.contains(k) || e.contains(says), "{k}={v}: {e}");
        assert!(e.contains(says), "{k}={v}: {e}");
    }
    // The string forms round-trip through the file the multi-process job writes.
    let mut c = Config::default();
    c.stages.clock = auroraq_stage::ClockKind::Event;
    c.set_bus_url("nats://127.0.0.1:4222").unwrap();
    let text = toml::to_string(&c).unwrap();
    assert!(
        text.contains("clock = \"event\"") && text.contains("url = \"nats://127.0.0.1:4222\""),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let back = Config::load(Some(&p), Vec::<(String, String)>::new()).unwrap();
    assert_eq!(back.stages.clock, c.stages.clock);
    assert_eq!(back.bus.url, c.bus.url);
}
