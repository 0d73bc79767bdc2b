//! A role process's operator surface over the real NATS bus: `auroraq risk --metrics-listen`
//! answers /health, /ready once its bus is connected, and /metrics with what it consumed and the
//! consumer lag of its group per partition.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auroraq_tests::{nats_url, unique};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, &[], "")
}

/// Sum of the samples of `metric` whose labels contain every one of `labels`.
fn sum(body: &str, metric: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_role_serves_its_metrics_with_consumer_lag() {
    let name = unique("metrics");
    let _cleanup = auroraq_tests::DeleteStreamOnDrop {
        stream: name.to_uppercase(),
    };
    let envs = [
        ("AURORAQ_BUS_URL", nats_url()),
        ("AURORAQ_BUS_STREAM", name.to_uppercase()),
        ("AURORAQ_BUS_SUBJECT_ROOT", name.clone()),
        ("AURORAQ_METRICS_LAG_INTERVAL_SECS", "1".to_string()),
    ];
    let port = auroraq_tests::free_port();
    let mut role = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    role.current_dir(repo_root())
        .env_remove("AURORAQ_CONFIG")
        .env("RUST_LOG", "warn")
        .args([
            "--log-format",
            "json",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "risk",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &envs {
        role.env(k, v);
    }
    let mut child = role.spawn().unwrap();
    let guard = scopeguard(child.id());

    // Ready once its bus is connected and its inputs subscribed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = get(port, "/ready") {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the role exited before it was ready"
        );
        assert!(Instant::now() < deadline, "/ready never answered 200");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(port, "/health").map(|r| r.0), Some(200));

    // Five bars for it to consume.
    let dir = tempfile::tempdir().unwrap();
    let bars = dir.path().join("bars.csv");
    std::fs::write(
        &bars,
        "Banner line,https://example.com\n\
         date,symbol,open,high,low,close,volume_btc,volume\n\
         2019-10-17 04-AM,BTCUSD,7990,8001,7980,8000,2.5,20000\n\
         2019-10-17 03-AM,BTCUSD,7985,8001,7980,7990,2.5,20000\n\
         2019-10-17 02-AM,BTCUSD,7980,7995,7970,7985,3,24000\n\
         2019-10-17 01-AM,BTCUSD,7970,7985,7960,7980,1,8000\n\
         2019-10-17 12-AM,BTCUSD,7960,7975,7950,7970,4,32000\n",
    )
    .unwrap();
    let mut replay = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    replay
        .current_dir(repo_root())
        .env_remove("AURORAQ_CONFIG")
        .env("RUST_LOG", "warn")
        .args(["connect", "replay", "--exchange", "coinbase"])
        .arg(&bars);
    for (k, v) in &envs {
        replay.env(k, v);
    }
    let out = replay.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = get(port, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200);
        let consumed = sum(
            &body,
            "auroraq_events_consumed_total",
            &["stage=\"risk\"", "role=\"risk\""],
        );
        let lag_series = body
            .lines()
            .filter(|l| l.starts_with("auroraq_bus_pending_messages{") && l.contains("group=\"risk\""))
            .count();
        if consumed >= 5.0 && lag_series > 0 {
            assert_eq!(
                sum(&body, "auroraq_bus_pending_messages", &["group=\"risk\""]),
                0.0,
                "drained"
            );
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no consumption or lag in /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        body.contains("auroraq_handler_seconds_bucket{"),
        "latency histogram:\n{body}"
    );
    assert!(body.contains("partition=\""), "lag per partition:\n{body}");

    drop(guard);
    let status = child.wait().unwrap();
    assert!(status.success(), "the role stops cleanly on SIGTERM: {status:?}");
}

/// Sends SIGTERM to `pid` when dropped (also on a failed assertion).
fn scopeguard(pid: u32) -> impl Drop {
    struct Term(u32);
    impl Drop for Term {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg("-TERM").arg(self.0.to_string()).status();
        }
    }
    Term(pid)
}

/// One HTTP/1.1 request with headers and a body; `(status, body)`.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

/// `auroraq api`: refuses to start without credentials; with a key it serves the model, and its
/// own `/metrics` counts the requests; SIGTERM stops it cleanly.
#[test]
fn the_api_role_serves_the_model_behind_a_key() {
    let port = auroraq_tests::free_port();
    let base = |c: &mut Command| {
        c.current_dir(repo_root())
            .env_remove("AURORAQ_CONFIG")
            .env_remove("AURORAQ_API_KEYS")
            .env("RUST_LOG", "warn")
            .args([
                "--log-format",
                "json",
                "api",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ]);
    };
    let mut open = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    base(&mut open);
    let out = open.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("AURORAQ_API_KEYS"), "{err}");

    let key = "cli-key-0123456789abcdef";
    let mut api = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    base(&mut api);
    api.env("AURORAQ_API_KEYS", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = api.spawn().unwrap();
    let guard = scopeguard(child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/ready").map(|r| r.0) != Some(200) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the API exited before it was ready"
        );
        assert!(Instant::now() < deadline, "/ready never answered 200");
        std::thread::sleep(Duration::from_millis(100));
    }
    let auth = format!("Bearer {key}");
    let json = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (s, body) = request(
        port,
        "POST",
        "/api/v1/sentiment/analyze",
        &json,
        r#"{"text": "Bitcoin ETF inflows hit a record as institutions pile in"}"#,
    )
    .expect("analyze");
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["model_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("auroraq-minilm"),
        "{v}"
    );
    assert_eq!(
        request(port, "GET", "/api/v1/status", &[], "").map(|r| r.0),
        Some(401)
    );
    let (s, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(s, 200);
    assert!(
        sum(
            &metrics,
            "auroraq_api_requests_total",
            &["route=\"/api/v1/sentiment/analyze\"", "status=\"200\""]
        ) >= 1.0,
        "{metrics}"
    );
    drop(guard);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the API did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// `auroraq run --api`: the API serves during the embedded job, and after it shows what the
/// in-process backtest made (fused signals, scored headlines, the agent's portfolio) until
/// interrupted; SIGINT then stops it cleanly.
#[test]
fn the_embedded_job_shows_its_results_in_the_api() {
    let port = auroraq_tests::free_port();
    let out = tempfile::tempdir().unwrap();
    let mut job = Command::new(env!("CARGO_BIN_EXE_auroraq"));
    job.current_dir(repo_root())
        .env_remove("AURORAQ_CONFIG")
        .env_remove("AURORAQ_API_KEYS")
        // The earlier bundled fixtures: quick in a debug build.
        .env("AURORAQ_RUN_BARS", "data/market/Coinbase_BTCUSD_1h.csv")
        .env("AURORAQ_RUN_NEWS", "data/news/reuters21578.jsonl")
        .env("AURORAQ_RUN_EXCHANGE", "coinbase")
        .env("RUST_LOG", "warn")
        .args(["--log-format", "json", "run", "--out"])
        .arg(out.path())
        .args(["--api", &format!("127.0.0.1:{port}"), "--insecure-no-auth"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = job.spawn().unwrap();
    let guard = scopeguard(child.id());
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job exited while it should serve"
        );
        assert!(
            Instant::now() < deadline,
            "the API never showed the job's results"
        );
        if let Some((200, body)) = get(port, "/api/v1/status") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let fused = v["fused"].as_object().map(|m| m.len()).unwrap_or(0);
            let headlines = v["headlines"].as_array().map(Vec::len).unwrap_or(0);
            let portfolios = v["portfolios"].as_object().map(|m| m.len()).unwrap_or(0);
            // The job hands its events to the API in time order once the backtest is done; the
            // agent's orders come last.
            let agent = get(port, "/api/v1/portfolio/auroraq").map(|r| r.0);
            if fused > 0 && headlines > 0 && portfolios > 0 && agent == Some(200) {
                break v;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status["fused"]["BTC"]["history"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{status}"
    );
    let (s, body) = get(port, "/api/v1/portfolio/auroraq").unwrap();
    assert_eq!(s, 200, "{body}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["risk"]["agent"], "auroraq", "{p}");
    drop(guard);
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the job did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert!(summary["backtest"]["trades"].as_u64().is_some(), "{summary}");
}
