//! The `auroraq` command end to end: the embedded run, the same on NATS, doctor's truthfulness,
//! graceful shutdown, and clear errors for bad configuration.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use auroraq_tests::{nats_url, unique};

fn auroraq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    // From the checkout, as a user runs it: the bundled data, model and ONNX Runtime are found.
    c.current_dir(repo_root())
        .env_remove("AURORAQ_CONFIG")
        // These tests were written for the earlier bundled data, kept as fixtures: 2017-2019
        // Coinbase bars and 79 Reuters articles of 1987 (spread over the bars' last 180 days).
        // `run` and `backtest` read them explicitly; the default data is tested in main_job.rs.
        .env("AURORAQ_RUN_BARS", "data/market/Coinbase_BTCUSD_1h.csv")
        .env("AURORAQ_RUN_NEWS", "data/news/reuters21578.jsonl")
        .env("AURORAQ_RUN_EXCHANGE", "coinbase")
        .env("RUST_LOG", "warn")
        .arg("--log-format")
        .arg("json");
    c
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// Six hourly bars, newest first as vendors ship them, one of them broken.
fn write_bars(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("bars.csv");
    std::fs::write(
        &p,
        "Banner line,https://example.com\n\
         date,symbol,open,high,low,close,volume_btc,volume\n\
         2019-10-17 05-AM,BTCUSD,8000,8010,7990,8005,1.5,12000\n\
         2019-10-17 04-AM,BTCUSD,7990,8001,7980,8000,2.5,20000\n\
         2019-10-17 03-AM,BTCUSD,NaN,8001,7980,8000,2.5,20000\n\
         2019-10-17 02-AM,BTCUSD,7980,7995,7970,7990,3,24000\n\
         2019-10-17 01-AM,BTCUSD,7970,7985,7960,7980,1,8000\n\
         2019-10-17 12-AM,BTCUSD,7960,7975,7950,7970,4,32000\n",
    )
    .unwrap();
    p
}

/// The INFO line `auroraq` logs right after installing its SIGINT/SIGTERM handlers.
const READY: &str = "ready: signal handlers installed";

/// `RUST_LOG` for a child the test signals: warnings, and the [`READY`] line.
const LOG_READY: &str = "warn,auroraq_runtime::wiring=info";

/// Waits until `child` (run with [`LOG_READY`] and stderr piped) logs [`READY`], so that a signal
/// sent after this is handled, not fatal. A thread reads the child's stderr and goes on draining
/// it, so that the child never blocks on a full pipe; it returns all of it once the child closes
/// it. Fails with what was read if the line does not come within a minute.
fn await_signal_handlers(child: &mut Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.contains(READY));
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(true) => return reader,
            Ok(false) => {}
            Err(e) => {
                let _ = child.kill();
                let stderr = reader.join().unwrap_or_default();
                panic!("no `{READY}` line on the child's stderr within 60 s ({e}); its stderr:\n{stderr}");
            }
        }
    }
}

/// `auroraq` on its own stream of the shared NATS server (deleted at the end).
struct IsolatedNats {
    envs: Vec<(&'static str, String)>,
    _cleanup: auroraq_tests::DeleteStreamOnDrop,
}

impl IsolatedNats {
    fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        IsolatedNats {
            envs: vec![
                ("AURORAQ_BUS_URL", nats_url()),
                ("AURORAQ_BUS_STREAM", name.to_uppercase()),
                ("AURORAQ_BUS_SUBJECT_ROOT", name.clone()),
            ],
            _cleanup: auroraq_tests::DeleteStreamOnDrop {
                stream: name.to_uppercase(),
            },
        }
    }

    fn auroraq(&self) -> Command {
        let mut c = auroraq();
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Publishes the test bars with `connect replay`.
    fn replay(&self, bars: &Path) -> Output {
        let out = self
            .auroraq()
            .args(["connect", "replay", "--stats", "--exchange", "coinbase"])
            .arg(bars)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

/// `articles`: the bundled news the job publishes too (on NATS, where the roles score it).
fn check_run(bus: Option<&str>, envs: &[(&str, String)], articles: u64) {
    let dir = tempfile::tempdir().unwrap();
    let bars = write_bars(dir.path());
    let out_dir = dir.path().join("out");
    let mut cmd = auroraq();
    if let Some(b) = bus {
        cmd.arg("--bus").arg(b);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .arg("run")
        .arg("--bars")
        .arg(&bars)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = last_json(&out);
    assert_eq!(
        s["published"],
        6 + articles,
        "5 bars, 1 dead letter, the articles: {s}"
    );
    assert_eq!(s["by_kind"]["Kline"], 5, "{s}");
    assert_eq!(
        s["by_kind"]["DeadLetter"], 1,
        "the broken row is kept as a dead letter: {s}"
    );
    assert_eq!(s["interrupted"], false);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(s["archived"], lines.len() as u64, "{s}");
    if articles == 0 {
        assert_eq!(lines.len(), 6);
    } else {
        // On NATS the archive holds what the roles published too.
        assert_eq!(s["by_kind"]["SentimentScore"], articles, "{s}");
        assert!(lines.len() as u64 > 6 + 2 * articles, "{s}");
    }
    let klines: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "Kline").collect();
    // Oldest first, exact prices, ids stable across runs.
    assert_eq!(klines[0]["open"], "7960");
    assert_eq!(klines[4]["close"], "8005");
    let dl = lines.iter().find(|l| l["kind"] == "DeadLetter").unwrap();
    assert!(dl["error"].as_str().unwrap().contains("line 5"), "{dl}");
    assert_eq!(dl["reason"], "bad_record");
}

#[test]
fn embedded_run_replays_and_stops_cleanly() {
    check_run(None, &[], 0);
}

#[test]
fn same_run_on_nats() {
    let nats = IsolatedNats::new("cli");
    check_run(Some(&nats_url()), &nats.envs, 79);
}

#[test]
fn doctor_reports_what_is_reachable() {
    let ok = auroraq()
        .arg("doctor")
        .env("AURORAQ_BUS_URL", nats_url())
        .env(
            "AURORAQ_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("AURORAQ_POSTGRES_REQUIRED", "true")
        .env("AURORAQ_REDIS_URL", "redis://127.0.0.1:6379")
        .env("AURORAQ_REDIS_REQUIRED", "true")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for component in ["bus", "postgres", "redis"] {
        let row = table.lines().find(|l| l.starts_with(component)).unwrap();
        assert!(row.contains(" ok "), "{row}");
    }
    assert!(table.contains("JetStream"), "{table}");
    assert!(table.contains("PostgreSQL"), "{table}");

    // The bus check on Kafka: the broker answers, and one that does not fails it.
    let kafka_bus = |url: &str| {
        let out = auroraq()
            .args(["doctor", "--json"])
            .env("AURORAQ_BUS_URL", url)
            .output()
            .unwrap();
        let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let bus = checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == "bus")
            .cloned()
            .unwrap();
        (out.status.code(), bus)
    };
    let (code, bus) = kafka_bus(&auroraq_tests::kafka_url());
    assert_eq!((code, &bus["status"]), (Some(0), &"ok".into()), "{bus}");
    assert!(bus["detail"].as_str().unwrap().contains("Kafka at"), "{bus}");
    let port = auroraq_tests::free_port();
    let (code, bus) = kafka_bus(&format!("kafka://127.0.0.1:{port}"));
    assert_eq!((code, &bus["status"]), (Some(1), &"failed".into()), "{bus}");

    // A required service that is down makes doctor fail, and says which.
    let bad = auroraq()
        .args(["doctor", "--json"])
        .env("AURORAQ_REDIS_URL", "redis://127.0.0.1:1")
        .env("AURORAQ_REDIS_REQUIRED", "true")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let checks: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let redis = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "redis")
        .unwrap();
    assert_eq!(redis["status"], "failed");

    // An unreachable bus is always a failure.
    let port = auroraq_tests::free_port();
    let nobus = auroraq()
        .arg("doctor")
        .env("AURORAQ_BUS_URL", format!("nats://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(nobus.status.code(), Some(1));
    // An optional one that is missing does not fail it.
    let optional = auroraq()
        .arg("doctor")
        .env("AURORAQ_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(optional.status.success());
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let out = auroraq()
        .arg("doctor")
        .env("AURORAQ_BUS_PARTITIONS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AURORAQ_BUS_PARTITIONS") && err.contains("integer"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[bus]\nurl = \"amqp://x\"\n").unwrap();
    let out = auroraq()
        .arg("--config")
        .arg(&cfg)
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bus.url"));

    let out = auroraq().args(["run", "--speed=-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--speed"));

    // The API has no default secret: without credentials it refuses to start, saying how to set one.
    let out = auroraq()
        .env_remove("AURORAQ_API_KEYS")
        .args(["api", "--listen", "127.0.0.1:0", "--no-model"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AURORAQ_API_KEYS") && err.contains("--insecure-no-auth"),
        "{err}"
    );
}

#[test]
fn sigint_drains_acks_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let nats = IsolatedNats::new("sig");
    let archive = dir.path().join("archive.jsonl");
    let mut sink = nats
        .auroraq()
        .args(["sink", "jsonl", "--filter", "market.>", "--out"])
        .arg(&archive)
        .env("RUST_LOG", LOG_READY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = await_signal_handlers(&mut sink);

    let out = nats.replay(&write_bars(dir.path()));
    assert_eq!(last_json(&out)["events"], 5);

    let t0 = Instant::now();
    while std::fs::read_to_string(&archive)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 5
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the sink did not archive the bars"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .arg("-INT")
        .arg(sink.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = sink.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the sink did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "clean exit after SIGINT; stderr:\n{}",
        stderr.join().unwrap_or_default()
    );
    let stdout = BufReader::new(sink.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .last()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["processed"], 5);

    // Everything was acked: a new sink process in the same group gets nothing more. A bar
    // published after the five (same symbol, so the same partition, behind them) is the
    // sentinel: once it is archived, any of the five still owed to the group would have come
    // before it.
    let again = dir.path().join("again.jsonl");
    let mut sink2 = nats
        .auroraq()
        .args(["sink", "jsonl", "--filter", "market.>", "--out"])
        .arg(&again)
        .env("RUST_LOG", LOG_READY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr2 = await_signal_handlers(&mut sink2);
    let sentinel = dir.path().join("sentinel.csv");
    std::fs::write(
        &sentinel,
        "Banner line,https://example.com\n\
         date,symbol,open,high,low,close,volume_btc,volume\n\
         2019-10-17 06-AM,BTCUSD,8005,8020,8000,8015,1,8000\n",
    )
    .unwrap();
    assert_eq!(last_json(&nats.replay(&sentinel))["events"], 1);
    let t0 = Instant::now();
    while std::fs::read_to_string(&again)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 1
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the second sink did not archive the sentinel bar"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(sink2.id().to_string())
        .status();
    let out2 = sink2.wait_with_output().unwrap();
    assert!(
        out2.status.success(),
        "clean exit after SIGINT; stderr:\n{}",
        stderr2.join().unwrap_or_default()
    );
    let stats2: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out2.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        stats2["received"], 1,
        "acked events are not delivered again: only the sentinel arrives"
    );
    let ids = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].clone())
            .collect()
    };
    let (first_ids, again_ids) = (ids(&archive), ids(&again));
    assert_eq!(again_ids.len(), 1);
    assert!(
        again_ids[0].is_string() && !first_ids.contains(&again_ids[0]),
        "the second sink archived the sentinel, not an acked bar: {again_ids:?} vs {first_ids:?}"
    );
}

#[test]
fn tap_prints_events_from_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let nats = IsolatedNats::new("tap");
    nats.replay(&write_bars(dir.path()));
    let out = nats
        .auroraq()
        .args(["tap", "market.klines.>", "--count", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["kind"] == "Kline" && l["symbol"] == "BTCUSD"));
}

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `auroraq sentiment eval --data CSV`, run from the checkout.
fn eval_csv(csv: &Path) -> Output {
    auroraq()
        .current_dir(repo_root())
        .args(["sentiment", "eval", "--data"])
        .arg(csv)
        .output()
        .unwrap()
}

#[test]
fn sentiment_score_and_eval_from_the_checkout() {
    // Run from the checkout, as a user would after scripts/setup.sh: the ONNX Runtime library and
    // the default model are found without any variable.
    let out = auroraq()
        .current_dir(repo_root())
        .env_remove("ORT_DYLIB_PATH")
        .args([
            "sentiment",
            "score",
            "Operating profit rose sharply and the outlook was raised.",
            "   ",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one object per text");
    assert_eq!(lines[0]["label"], "positive");
    assert!(lines[0]["sentiment_score"].as_f64().unwrap() > 0.5);
    assert!(
        lines[1]["error"].as_str().unwrap().contains("empty"),
        "{}",
        lines[1]
    );

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("few.csv");
    std::fs::write(
        &csv,
        "label,sentence\npositive,Net profit rose 20% and the dividend was raised.\n\
         negative,The company swung to a loss and cut its forecast.\n\
         neutral,The annual general meeting will be held in Helsinki on 24 March.\n",
    )
    .unwrap();
    let out = eval_csv(&csv);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = last_json(&out);
    assert_eq!(r["n"], 3);
    assert!(r["accuracy"].as_f64().unwrap() >= 2.0 / 3.0, "{r}");
    assert!(r["macro_f1"].is_number());
    assert!(String::from_utf8_lossy(&out.stdout).contains("confusion"));

    // Labels the model does not have are refused clearly.
    std::fs::write(&csv, "label,sentence\nbullish,Up we go.\n").unwrap();
    let out = eval_csv(&csv);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bullish"));
}

/// `auroraq replay --stats` on the recorded Binance capture, onto the real NATS bus: the counts the
/// sync rules give, then the same again publishes nothing new (same ids).
#[test]
fn replay_prints_counts_and_replays_identically() {
    let nats = IsolatedNats::new("replay");
    let capture = repo_root().join("tests/data/binance/cryptofeed/BINANCE.ws.1.0");
    let run = || {
        let out = nats
            .auroraq()
            .args(["replay", "--format", "cryptofeed", "--stats"])
            .arg(&capture)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)
    };
    let first = run();
    for (k, v) in [
        ("book_updates", 176),
        ("tickers", 84),
        ("trades", 2),
        ("candles", 2),
        ("gaps", 0),
        ("dead_letters", 0),
        ("articles", 0),
    ] {
        assert_eq!(first[k], v, "{k} in {first}");
    }
    assert_eq!(first["published"], first["events"]);
    let second = run();
    assert_eq!(second["published"], 0, "a replay re-sends the same ids: {second}");
    assert_eq!(second["duplicates"], first["events"]);
}

#[test]
fn replay_refuses_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mystery.bin");
    std::fs::write(&p, b"\x00\x01").unwrap();
    let out = auroraq().args(["replay", "--stats"]).arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot tell its format") && err.contains("--format"),
        "{err}"
    );
}

/// `auroraq connect binance` and `auroraq backfill binance` pointed at the loopback Binance server
/// by configuration alone (`AURORAQ_BINANCE_*`), on the real NATS bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_connector_and_backfill_from_the_command_line() {
    use auroraq_tests::binance_server::{BinanceServer, ServerConfig, Tape};
    let server = BinanceServer::start(ServerConfig {
        tape: Tape::recorded(),
        ..ServerConfig::default()
    })
    .await;
    let nats = IsolatedNats::new("binance");
    let with_endpoints = |mut c: Command| {
        c.env("AURORAQ_BINANCE_WS_URL", server.ws_base())
            .env("AURORAQ_BINANCE_REST_URL", server.rest_base());
        c
    };

    let child = with_endpoints(nats.auroraq())
        .args(["connect", "binance", "--symbols", "nknusdt,blzeth,lrcbtc,runeeur"])
        .args(["--streams", "aggTrade,kline_1m,bookTicker,depth"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !server.tape_done() && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.tape_done(), "the connector read the whole tape");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = last_json(&out);
    assert_eq!(stats["tickers"], 84, "{stats}");
    assert_eq!(stats["trades"], 2, "{stats}");
    assert_eq!(stats["klines"], 2, "{stats}");
    assert_eq!(stats["gaps"], 0, "{stats}");
    assert_eq!(stats["dead_letters"], 0, "{stats}");
    assert!(stats["book_updates"].as_u64().unwrap() > 100, "{stats}");

    // 300 one-minute bars from Binance's documented first open time, then a resumed rerun.
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp.json");
    let backfill = || async {
        let mut c = with_endpoints(nats.auroraq());
        c.args(["backfill", "binance", "--symbol", "BTCUSDT", "--interval", "1m"])
            .args(["--from", "1499040000000", "--to", "1499058000000", "--checkpoint"])
            .arg(&checkpoint);
        let out = tokio::process::Command::from(c).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)
    };
    let first = backfill().await;
    assert_eq!(
        (first["published"].as_u64(), first["complete"].as_bool()),
        (Some(300), Some(true)),
        "{first}"
    );
    let again = backfill().await;
    assert_eq!(
        again["published"], 0,
        "a complete checkpoint fetches nothing again: {again}"
    );
}

/// `auroraq connect feedly --once` against the loopback Feedly server with the recorded responses,
/// its cursor and seen ids in the real Redis: a second run publishes nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedly_connector_from_the_command_line_persists_what_it_saw() {
    use auroraq_tests::feedly_server::{recorded_items, FeedlyServer};
    let server = FeedlyServer::start("cli-token").await;
    let stream = "user/cli/category/global.all";
    server.add_items(stream, recorded_items("nnw_feedly_macintosh_initial.json"));
    server.add_items(stream, recorded_items("nnw_gobalall_initial.json"));
    let prefix = format!("{}:", unique("auroraq:test:feedly"));
    let nats = IsolatedNats::new("feedly");
    let run = || async {
        let mut c = nats.auroraq();
        c.env("AURORAQ_FEEDLY_BASE_URL", server.base_url())
            .env("FEEDLY_TOKEN", "cli-token")
            .env("AURORAQ_FEEDLY_LOOKBACK_HOURS", "0")
            .env("AURORAQ_FEEDLY_STORE_PREFIX", &prefix)
            .env("AURORAQ_REDIS_URL", "redis://127.0.0.1:6379")
            .args(["connect", "feedly", "--once", "--stream", stream]);
        let out = tokio::process::Command::from(c).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("cli-token"), "the token must never be logged");
        last_json(&out)
    };
    let first = run().await;
    let second = run().await;
    // Clean up the test's keys before asserting.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the store wrote under its prefix");
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut con).await.unwrap();
    assert_eq!(first["articles"], 60, "{first}");
    assert_eq!(second["articles"], 0, "{second}");
}

/// The main job: bundled bars and news through sentiment, fusion, agents, risk and execution, with
/// its report; twice, with the same fingerprint.
#[test]
fn the_main_job_reports_and_repeats_its_fingerprint() {
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let out = auroraq()
            .arg("run")
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = last_json(&out);
        let report = dir.path().join("report");
        for f in ["report.html", "equity.svg", "trades.csv", "summary.json"] {
            assert!(report.join(f).is_file(), "{f} written");
        }
        let html = std::fs::read_to_string(report.join("report.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("not from the same days"));
        (s, dir)
    };
    let (a, _d1) = run();
    let (b, _d2) = run();
    let bt = &a["backtest"];
    assert_eq!(
        bt["fingerprint"], b["backtest"]["fingerprint"],
        "same data, same fingerprint"
    );
    assert_eq!(bt["fingerprint"].as_str().map(str::len), Some(64));
    assert_eq!(bt["emitted_by_kind"]["SentimentScore"], 79, "{bt}");
    assert!(bt["emitted_by_kind"]["FusedSignal"].as_u64().unwrap() > 0, "{bt}");
    assert!(bt["trades"].as_u64().unwrap() >= 1, "{bt}");
    assert_eq!(bt["events"], 20_111 + 79);
    let by_kind: u64 = bt["emitted_by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(bt["emitted"].as_u64(), Some(by_kind), "{bt}");
    for k in ["total_return", "sharpe", "max_drawdown"] {
        assert!(bt[k].as_f64().is_some_and(f64::is_finite), "{k}: {bt}");
    }
}

/// `auroraq backtest` on recorded files: the same fingerprint twice, a different one on other data.
#[test]
fn backtest_of_files_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let bars = repo_root().join("data/market/Coinbase_BTCUSD_1h.csv");
    let news = repo_root().join("data/news/reuters21578.jsonl");
    let run = |files: &[&Path]| {
        let out = auroraq()
            .args(["backtest", "--exchange", "coinbase", "--out"])
            .arg(dir.path())
            .args(files)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)
    };
    let a = run(&[&bars, &news]);
    let b = run(&[&bars, &news]);
    assert_eq!(a["fingerprint"], b["fingerprint"]);
    assert_eq!(a["events"], 20_111 + 79);
    let c = run(&[&bars]);
    assert_ne!(a["fingerprint"], c["fingerprint"]);
    assert_eq!(
        c["emitted_by_kind"]["SentimentScore"], 0,
        "no news, no scores: {c}"
    );
    assert_eq!(a["emitted_by_kind"]["SentimentScore"], 79, "{a}");
}

/// The bundled backtest through the in-process bus and through NATS gives the fingerprint of the
/// backtest read straight from the files: the buses lose and change nothing, and order does not
/// matter.
#[test]
fn backtest_fingerprint_is_the_same_on_both_buses() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprint = |c: &mut Command| {
        let out = c.arg("--out").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = last_json(&out);
        assert_eq!(s["events"], 20_111 + 79, "{s}");
        s["fingerprint"].as_str().unwrap().to_owned()
    };
    let files = fingerprint(auroraq().arg("backtest"));
    let inproc = fingerprint(auroraq().args(["backtest", "--via-bus"]));
    let nats = IsolatedNats::new("btbus");
    let on_nats = fingerprint(nats.auroraq().args(["backtest", "--via-bus"]));
    assert_eq!(inproc, files, "in-process bus");
    assert_eq!(on_nats, files, "NATS bus");
}

/// `backtest --from-bus` reads what JetStream kept, from a start time to an end time, and gives the
/// fingerprint of the backtest of the files that were published there; the in-process bus (no
/// history) and an empty range are refused clearly.
#[test]
fn backtest_from_a_retained_stream_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let bars = repo_root().join("data/market/Coinbase_BTCUSD_1h.csv");
    let news = repo_root().join("data/news/reuters21578.jsonl");
    // Bars of another symbol (the BTC ones are in the bundled file: the bus would drop them as
    // re-published ids).
    let small = dir.path().join("eth.csv");
    let text = std::fs::read_to_string(write_bars(dir.path())).unwrap();
    std::fs::write(&small, text.replace("BTCUSD", "ETHUSD")).unwrap();
    let summary = |c: &mut Command| {
        let out = c.arg("--out").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)
    };
    let files_a = summary(
        auroraq()
            .args(["backtest", "--exchange", "coinbase"])
            .arg(&bars)
            .arg(&news),
    );
    let files_b = summary(auroraq().args(["backtest", "--exchange", "coinbase"]).arg(&small));

    let nats = IsolatedNats::new("btfrom");
    let out = nats
        .auroraq()
        .args(["replay", "--exchange", "coinbase"])
        .arg(&bars)
        .arg(&news)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A cut between the two publishes, on a whole second (the CLI takes epoch seconds too).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let cut = now.as_secs() + 1;
    std::thread::sleep(Duration::from_secs(cut) - now + Duration::from_millis(100));
    let replayed = last_json(&nats.replay(&small));
    assert_eq!(replayed["candles"], 5, "{replayed}");

    let cut = cut.to_string();
    let until = summary(nats.auroraq().args(["backtest", "--from-bus", "--until", &cut]));
    assert_eq!(until["events"], 20_111 + 79, "{until}");
    assert_eq!(until["fingerprint"], files_a["fingerprint"]);
    let since = summary(nats.auroraq().args(["backtest", "--from-bus", "--since", &cut]));
    assert_eq!(since["events"], 5, "{since}");
    assert_eq!(since["fingerprint"], files_b["fingerprint"]);

    let refused = |c: &mut Command, why: &str| {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why:?} not in: {err}");
    };
    refused(
        nats.auroraq()
            .args(["backtest", "--from-bus", "--since", "2099-01-01"]),
        "kept no market data",
    );
    refused(auroraq().args(["backtest", "--from-bus"]), "keeps no history");
    refused(
        nats.auroraq()
            .args(["backtest", "--from-bus", "--since", "yesterday"]),
        "is not a time",
    );
}

/// `auroraq run --bus nats://... --sink postgres://...`: the main job as separate processes (one
/// per role), each on its own consumer group of the run's stream; the same trades as the embedded
/// job on the same data, and the results in the PostgreSQL tables.
#[test]
fn main_job_as_processes_on_nats_with_postgres() {
    let nats = IsolatedNats::new("job");
    main_job_as_processes_with_postgres("nats", &nats.envs, |s| {
        Box::new(auroraq_tests::DeleteStreamOnDrop {
            stream: s["stream"].as_str().unwrap_or_default().to_owned(),
        })
    });
}

/// The newest 1,500 bundled bars written to `dir/bars.csv` (the news then falls on them as in the
/// full job's last days), and the embedded job's summary on them (its report in `dir/embedded`).
fn embedded_job_on_newest_bars(dir: &Path) -> (std::path::PathBuf, serde_json::Value) {
    let text = std::fs::read_to_string(repo_root().join("data/market/Coinbase_BTCUSD_1h.csv")).unwrap();
    let bars = dir.join("bars.csv");
    std::fs::write(&bars, text.lines().take(1502).collect::<Vec<_>>().join("\n")).unwrap();
    let embedded = auroraq()
        .args(["run", "--bars"])
        .arg(&bars)
        .arg("--out")
        .arg(dir.join("embedded"))
        .output()
        .unwrap();
    assert!(
        embedded.status.success(),
        "{}",
        String::from_utf8_lossy(&embedded.stderr)
    );
    (bars, last_json(&embedded))
}

/// A stage killed with `kill -9` in the middle of the job on NATS (the execution role, right after
/// it accepted its first order): the job starts it again in a consumer group of its own, it
/// rebuilds its state by processing the run's stream from the start (what it publishes again has
/// the same ids and is de-duplicated), and the trades are still the embedded job's.
#[test]
fn main_job_on_nats_survives_a_stage_killed_mid_run() {
    let nats = IsolatedNats::new("jobkill");
    let dir = tempfile::tempdir().unwrap();
    let (bars, embedded) = embedded_job_on_newest_bars(dir.path());
    assert!(embedded["backtest"]["trades"].as_u64().unwrap() >= 2);

    let out_dir = dir.path().join("on-bus");
    let mut job = nats
        .auroraq()
        .env("AURORAQ_BUS_PARTITIONS", "1")
        // The roles' "order accepted" lines and the job's "role started" lines (with pids).
        .env("RUST_LOG", "info")
        .args(["run", "--bars"])
        .arg(&bars)
        .arg("--out")
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(job.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The execution role's pid, from the job's "role started" line.
    let deadline = Instant::now() + Duration::from_secs(120);
    let pid = loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("the job's log");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "role started" && v["fields"]["role"] == "execution" {
            break v["fields"]["pid"].as_i64().expect("a pid") as i32;
        }
        assert!(Instant::now() < deadline, "no execution role started");
    };
    // Its first accepted order, then kill -9.
    let log = out_dir.join("logs/execution.log");
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("\"order accepted\"") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the execution role accepted no order: {text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        !text.contains("every input ended"),
        "the kill came after the role had finished: not mid-run"
    );
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut job.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = job.wait().unwrap();
    let log_lines: Vec<String> = rx.try_iter().collect();
    reader.join().unwrap();
    let s: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    let _cleanup = auroraq_tests::DeleteStreamOnDrop {
        stream: s["stream"].as_str().unwrap_or_default().to_owned(),
    };
    assert!(status.success(), "{}", log_lines.join("\n"));
    let execution = s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "execution")
        .unwrap();
    assert_eq!(execution["restarts"], 1, "{s}");
    assert_eq!(execution["exit_code"], 0, "{execution}");
    // The restarted role processed the whole run again, to its end.
    let again = std::fs::read_to_string(out_dir.join("logs/execution.restart1.log")).unwrap();
    assert!(
        again.contains("\"order accepted\"") && again.contains("every input ended"),
        "{again}"
    );
    let trades = |run: &Path| std::fs::read_to_string(run.join("report/trades.csv")).unwrap();
    assert_eq!(trades(&out_dir), trades(&dir.path().join("embedded")));
    assert_eq!(
        s["backtest"]["emitted_by_kind"], embedded["backtest"]["emitted_by_kind"],
        "the same events, none twice"
    );
}

/// The same on Kafka (topics `<run root>.<family>`, a Kafka group per role and input).
#[test]
fn main_job_as_processes_on_kafka_with_postgres() {
    let root = unique("job");
    let envs = [
        ("AURORAQ_BUS_URL", auroraq_tests::kafka_url()),
        ("AURORAQ_BUS_SUBJECT_ROOT", root),
    ];
    main_job_as_processes_with_postgres("kafka", &envs, |s| {
        Box::new(auroraq_tests::DeleteKafkaRootOnDrop {
            root: s["subject_root"].as_str().unwrap_or_default().to_owned(),
        })
    });
}

/// `kind` (`nats` or `kafka`): the bus `envs` put `auroraq` on; `cleanup`: a guard deleting what
/// the run (its summary given) left on the bus.
fn main_job_as_processes_with_postgres(
    kind: &str,
    envs: &[(&'static str, String)],
    cleanup: impl Fn(&serde_json::Value) -> Box<dyn std::any::Any>,
) {
    let on_bus = || {
        let mut c = auroraq();
        for (k, v) in envs {
            c.env(k, v);
        }
        c
    };
    let dir = tempfile::tempdir().unwrap();
    let (bars, embedded) = embedded_job_on_newest_bars(dir.path());
    assert!(
        embedded["backtest"]["trades"].as_u64().unwrap() >= 1,
        "{embedded}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = std::env::var("AURORAQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db = unique("aq_job_").to_lowercase();
    let query = |url: &str, sql: &str| -> i64 {
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c.query_one(sql, &[]).await.unwrap().get(0)
        })
    };
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    });
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);

    let out = on_bus()
        .env("AURORAQ_BUS_PARTITIONS", "1")
        .args(["run", "--bars"])
        .arg(&bars)
        .arg("--out")
        .arg(dir.path().join("on-bus"))
        .args(["--sink", &url])
        .output()
        .unwrap();
    let s = last_json(&out);
    let _cleanup = cleanup(&s);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["bus"], kind);
    let roles: Vec<&str> = s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["exit_code"], 0, "{p}");
            assert_ne!(p["pid"].as_u64(), Some(std::process::id() as u64));
            p["role"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        roles,
        [
            "sentiment",
            "fusion",
            "agent",
            "risk",
            "execution",
            "archive",
            "sink-postgres"
        ]
    );
    // The same decisions as the embedded job: the same orders, at the same times and prices.
    let trades = |run: &str| std::fs::read_to_string(dir.path().join(run).join("report/trades.csv")).unwrap();
    assert_eq!(trades("on-bus"), trades("embedded"));
    let (e, n) = (
        &embedded["backtest"]["emitted_by_kind"],
        &s["backtest"]["emitted_by_kind"],
    );
    for kind in [
        "SentimentScore",
        "FusedSignal",
        "OrderIntent",
        "RiskDecision",
        "OrderUpdate",
    ] {
        assert_eq!(e[kind], n[kind], "{kind}: embedded {e}, on the bus {n}");
    }
    for figure in ["total_return", "sharpe", "max_drawdown"] {
        assert_eq!(
            embedded["backtest"][figure], s["backtest"][figure],
            "{figure}: the same equity curve"
        );
    }
    assert_eq!(s["published"], 1500 + 79);

    // The run's stream stays for backtests: its recorded scores are used, not recomputed.
    let bt = on_bus()
        .env("AURORAQ_BUS_PARTITIONS", "1")
        .env("AURORAQ_BUS_STREAM", s["stream"].as_str().unwrap())
        .env("AURORAQ_BUS_SUBJECT_ROOT", s["subject_root"].as_str().unwrap())
        .args(["backtest", "--from-bus", "--out"])
        .arg(dir.path().join("from-bus"))
        .output()
        .unwrap();
    assert!(bt.status.success(), "{}", String::from_utf8_lossy(&bt.stderr));
    let bt = last_json(&bt);
    assert_eq!(
        bt["events"],
        1500 + 79 + 79,
        "bars, articles and their recorded scores: {bt}"
    );
    assert_eq!(bt["emitted_by_kind"]["SentimentScore"], 0, "{bt}");

    // And in PostgreSQL.
    let count = |table: &str| query(&url, &format!("SELECT count(*) FROM {table}"));
    assert_eq!(count("klines"), 1500);
    assert_eq!(count("articles"), 79);
    assert_eq!(count("sentiment_scores"), 79);
    assert_eq!(count("fused_signals"), n["FusedSignal"].as_i64().unwrap());
    assert_eq!(count("orders"), n["OrderUpdate"].as_i64().unwrap());
    assert_eq!(count("fills"), embedded["backtest"]["trades"].as_i64().unwrap());
    assert_eq!(
        count("portfolio_snapshots"),
        n["PortfolioSnapshot"].as_i64().unwrap()
    );
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let _ = c
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
    });

    // --sink without a shared bus is refused, saying what to do.
    let refused = auroraq()
        .args(["run", "--sink", &url, "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--bus nats://"));
}
