//! The REST API and WebSockets through real clients (reqwest, tungstenite) against a server wired
//! to a bus with the real sinks on it: PostgreSQL (a database of its own per test) and Redis
//! (a key prefix of its own), the real model behind the batcher, and the risk stage. Data is real:
//! BTC hourly bars and crypto headlines from `data/crypto/`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use auroraq_api::stores::{Pg, Redis};
use auroraq_api::{ApiConfig, Backends, RunningApi, Secret};
use auroraq_bus::Bus;
use auroraq_schemas::*;
use auroraq_sentiment::batcher::BatchConfig;
use auroraq_sentiment::scorer::Scorer;
use auroraq_sentiment::{runtime, Classifier, ModelOptions};
use auroraq_stage::to_message;
use auroraq_tests::{dyn_bus, inproc_bus, unique, wait_until_async};
use auroraq_util::CancellationToken;
use futures::StreamExt;
use serde_json::{json, Value};

mod common;
use common::repo;

const KEY: &str = "test-key-0123456789abcdef";

fn scorer() -> Scorer {
    runtime::init(Some(&repo().join(runtime::LOCAL_LIBRARY))).expect("run scripts/onnxruntime.sh first");
    let opts = ModelOptions {
        threads: 1,
        ..ModelOptions::default()
    };
    let c = Classifier::load(&repo().join("models/auroraq-minilm-fpb"), &opts).expect("the default model");
    Scorer::start(Arc::new(c), BatchConfig::default())
}

fn config() -> ApiConfig {
    ApiConfig {
        listen: "127.0.0.1:0".into(),
        keys: vec![Secret(KEY.into())],
        jwt_secret_env: String::new(),
        ..ApiConfig::default()
    }
}

struct Api {
    running: RunningApi,
    base: String,
    http: reqwest::Client,
    cancel: CancellationToken,
}

impl Api {
    async fn start(cfg: ApiConfig, backends: Backends) -> Api {
        let cancel = CancellationToken::new();
        let running = auroraq_api::start(cfg, backends, cancel.clone())
            .await
            .expect("start the API");
        Api {
            base: format!("http://{}", running.addr),
            running,
            http: reqwest::Client::new(),
            cancel,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(KEY)
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        json_of(self.get(path).send().await.expect("request")).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        json_of(self.post(path, body).send().await.expect("request")).await
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(&body)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    (s, v)
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_credentials() {
    let bus = dyn_bus(inproc_bus(4, 1024));
    let cfg = ApiConfig {
        listen: "127.0.0.1:0".into(),
        jwt_secret_env: String::new(),
        ..ApiConfig::default()
    };
    let e = auroraq_api::start(cfg, Backends::bus_only(bus), CancellationToken::new())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("AURORAQ_API_KEYS") && e.contains("--insecure-no-auth"),
        "{e}"
    );
}

fn jwt(secret: &[u8], alg: jsonwebtoken::Algorithm, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_rejections_and_bad_requests() {
    let var = unique("AQ_TEST_JWT_").to_uppercase().replace('-', "_");
    let secret = "a-secret-of-at-least-32-bytes-for-hs256!";
    std::env::set_var(&var, secret);
    let cfg = ApiConfig {
        jwt_secret_env: var,
        max_body_bytes: 4096,
        ..config()
    };
    let api = Api::start(cfg, Backends::bus_only(dyn_bus(inproc_bus(4, 1024)))).await;
    let url = |p: &str| format!("{}{p}", api.base);
    let c = &api.http;

    // Open: health, metrics route exists (not enabled here), the page.
    assert_eq!(c.get(url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(url("/ready")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(url("/")).send().await.unwrap().status(), 200);

    // Missing, wrong, and good API keys; both headers.
    let (s, v) = json_of(c.get(url("/api/v1/status")).send().await.unwrap()).await;
    assert_eq!((s, error_code(&v)), (401, "unauthorized"), "{v}");
    let (s, _) = json_of(
        c.get(url("/api/v1/status"))
            .bearer_auth("wrong-key-0123456789")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(api.get("/api/v1/status").send().await.unwrap().status(), 200);
    let r = c
        .get(url("/api/v1/status"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));

    // JWTs: valid, expired, no exp, another algorithm, another secret.
    let now = auroraq_schemas::now_micros() / 1_000_000;
    let ok = jwt(
        secret.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "agent-1", "exp": now + 600}),
    );
    assert_eq!(
        c.get(url("/api/v1/status"))
            .bearer_auth(&ok)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for (token, why) in [
        (
            jwt(
                secret.as_bytes(),
                jsonwebtoken::Algorithm::HS256,
                json!({"sub": "a", "exp": now - 600}),
            ),
            "expired",
        ),
        (
            jwt(
                secret.as_bytes(),
                jsonwebtoken::Algorithm::HS256,
                json!({"sub": "a"}),
            ),
            "exp",
        ),
        (
            jwt(
                secret.as_bytes(),
                jsonwebtoken::Algorithm::HS384,
                json!({"sub": "a", "exp": now + 600}),
            ),
            "algorithm",
        ),
        (
            jwt(
                b"another-secret-of-at-least-32-bytes!!",
                jsonwebtoken::Algorithm::HS256,
                json!({"exp": now + 600}),
            ),
            "signature",
        ),
    ] {
        let (s, v) = json_of(
            c.get(url("/api/v1/status"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 401, "{why}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(why),
            "{why}: {v}"
        );
    }

    // Bad requests: malformed JSON, wrong content type, unknown field, body too large, unknown
    // route; every one in the error shape.
    let (s, v) = json_of(
        c.post(url("/api/v1/sentiment/fusion"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, error_code(&v)), (400, "invalid_request"), "{v}");
    let (s, v) = json_of(
        c.post(url("/api/v1/sentiment/fusion"))
            .bearer_auth(KEY)
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, error_code(&v)), (415, "unsupported_media_type"), "{v}");
    let (s, v) = api
        .post_json(
            "/api/v1/sentiment/fusion",
            json!({"sentiment_scores": {"a": 0.5}, "colour": 1}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap_or("").contains("colour"),
        "{v}"
    );
    let big = "x".repeat(8000);
    let (s, v) = api
        .post_json("/api/v1/sentiment/analyze", json!({"text": big}))
        .await;
    assert_eq!((s, error_code(&v)), (413, "payload_too_large"), "{v}");
    let (s, v) = api.get_json("/api/v1/nope").await;
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");
    // Validation: a score out of range, a NaN-like string, a bad symbol, a bad limit.
    let (s, _) = api
        .post_json(
            "/api/v1/sentiment/fusion",
            json!({"sentiment_scores": {"a": 1.5}}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api.get_json("/api/v1/market/BTC%20USDT/ohlcv").await;
    assert_eq!(s, 400);
    let (s, _) = api.get_json("/api/v1/news/BTC/latest?limit=0").await;
    assert_eq!(s, 400);
    // Without a model the sentiment endpoints say so.
    let (s, v) = api
        .post_json("/api/v1/sentiment/analyze", json!({"text": "Bitcoin rallies"}))
        .await;
    assert_eq!((s, error_code(&v)), (503, "unavailable"), "{v}");

    // OpenAPI: every route, and the security schemes.
    let (s, doc) = api.get_json("/openapi.json").await;
    assert_eq!(s, 200);
    for p in [
        "/api/v1/sentiment/analyze",
        "/api/v1/sentiment/batch",
        "/api/v1/sentiment/{asset}/realtime",
        "/api/v1/sentiment/fusion",
        "/api/v1/market/{symbol}/ohlcv",
        "/api/v1/market/multiple",
        "/api/v1/news/{asset}/latest",
        "/api/v1/risk/calculate",
        "/api/v1/risk/validate-order",
        "/api/v1/risk/limits/{agent}",
        "/api/v1/risk/metrics",
        "/api/v1/orders/place",
        "/api/v1/orders/history",
        "/api/v1/portfolio/{agent}",
        "/api/v1/performance/metrics",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_load_shedding() {
    let cfg = ApiConfig {
        rate_per_key: 1.0,
        burst_per_key: 3.0,
        max_in_flight: 1,
        order_decision_timeout_ms: 3000,
        ..config()
    };
    let api = Api::start(cfg, Backends::bus_only(dyn_bus(inproc_bus(4, 1024)))).await;
    // An order nobody decides holds the one in-flight slot for 3 s.
    let slow = api.post(
        "/api/v1/orders/place",
        json!({"agent": "auroraq", "symbol": "BTCUSDT", "side": "buy", "notional": "100"}),
    );
    let slow = tokio::spawn(slow.send());
    // Wait until it holds the slot (no fixed sleep: a loaded machine may take a while).
    let state = api.running.state.clone();
    wait_until_async(
        "the slow order to take the in-flight slot",
        Duration::from_secs(10),
        || {
            let st = state.clone();
            async move { st.in_flight.available_permits() == 0 }
        },
    )
    .await;
    let r = api.get("/api/v1/status").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let (s, v) = json_of(slow.await.unwrap().unwrap()).await;
    assert_eq!(s, 202, "nobody decides: pending, {v}");
    assert_eq!(v["status"], "pending");
    // The burst of 3 was spent by two requests above (the shed one took a token too); then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = api.get("/api/v1/status").send().await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    assert!(statuses.contains(&(429, true)), "{statuses:?}");
    // Health is never limited by credential.
    assert_eq!(
        api.http
            .get(format!("{}/health", api.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentiment_through_the_batcher() {
    let bus = dyn_bus(inproc_bus(4, 1024));
    let mut b = Backends::bus_only(bus);
    b.scorer = Some(scorer());
    let api = Api::start(config(), b).await;

    // Real headlines (data/crypto/crypto_news_2025-05_2025-08.csv.gz).
    let up = "Bitcoin Jumps Above $97K as Traders Optimistic U.S.-China Trade Deal Possible";
    let down = "US Treasury wants to cut off Huione over ties to crypto crime";
    let (s, v) = api
        .post_json("/api/v1/sentiment/analyze", json!({"text": up, "asset": "btc"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["label"], "positive", "{v}");
    assert!(v["sentiment_score"].as_f64().unwrap_or(0.0) > 0.5);
    assert_eq!(v["asset"], "BTC");
    assert_eq!(v["mode"], "live");
    assert!(
        v["model_version"].as_str().unwrap_or("").contains("@sha256:"),
        "{v}"
    );
    assert!(
        !v["keywords"].as_array().map(Vec::is_empty).unwrap_or(true),
        "{v}"
    );
    assert!(v["scenario_tag"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(v["cached"], false);
    let (_, again) = api
        .post_json("/api/v1/sentiment/analyze", json!({"text": up}))
        .await;
    assert_eq!(again["cached"], true);
    assert_eq!(again["sentiment_score"], v["sentiment_score"]);

    // Batch: order kept; limits.
    let texts = vec![down, up, "Markets were flat on Tuesday."];
    let (s, v) = api
        .post_json(
            "/api/v1/sentiment/batch",
            json!({"texts": texts, "mode": "backtest"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total_processed"], 3);
    assert_eq!(v["results"][1]["label"], "positive");
    assert_eq!(v["results"][0]["mode"], "backtest");
    assert_ne!(v["results"][0]["label"], "positive", "{v}");
    let many: Vec<String> = (0..101).map(|i| format!("headline {i}")).collect();
    let (s, _) = api
        .post_json("/api/v1/sentiment/batch", json!({"texts": many}))
        .await;
    assert_eq!(s, 400);
    let (s, v) = api
        .post_json("/api/v1/sentiment/analyze", json!({"text": "   "}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api
        .post_json("/api/v1/sentiment/analyze", json!({"text": "é".repeat(10_001)}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap_or("").contains("10000"),
        "{v}"
    );
    let (s, v) = api
        .post_json(
            "/api/v1/sentiment/analyze",
            json!({"text": "ok", "mode": "paper"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Concurrent requests share batches.
    let before = api
        .running
        .state
        .backends
        .scorer
        .as_ref()
        .map(|s| s.stats().batches.load(Ordering::Relaxed))
        .unwrap_or(0);
    let reqs = (0..48).map(|i| {
        api.post(
            "/api/v1/sentiment/analyze",
            json!({"text": format!("Ether price rises {i}% after upgrade")}),
        )
        .send()
    });
    for r in futures::future::join_all(reqs).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let stats = api
        .running
        .state
        .backends
        .scorer
        .as_ref()
        .map(|s| s.stats())
        .unwrap();
    let batches = stats.batches.load(Ordering::Relaxed) - before;
    assert!(
        batches < 48,
        "48 concurrent texts ran in {batches} batches: no batching"
    );

    // Fusion with fusion's own arithmetic: weights are shares, the result lies between.
    let (s, v) = api
        .post_json(
            "/api/v1/sentiment/fusion",
            json!({"sentiment_scores": {"coindesk": 0.8, "reuters": 0.6}, "symbol": "BTC"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let f = v["fused_score"].as_f64().unwrap_or(-1.0);
    assert!((0.6..=0.8).contains(&f), "{v}");
    let w: f64 = v["weights_used"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0);
    assert!((w - 1.0).abs() < 1e-9, "{v}");
}

async fn publish(bus: &dyn Bus, events: &[AnyEvent]) {
    let msgs: Vec<_> = events.iter().map(|e| to_message(e).expect("encode")).collect();
    for chunk in msgs.chunks(500) {
        bus.publish(chunk.to_vec()).await.expect("publish");
    }
}

fn fused(asset: &str, end: Micros, score: f64) -> FusedSignal {
    let mut weights = std::collections::BTreeMap::new();
    weights.insert("coindesk".to_string(), 0.7);
    weights.insert("cointelegraph".to_string(), 0.3);
    FusedSignal {
        meta: Meta::raw(
            EventKind::FusedSignal,
            "fusion",
            &format!("{asset}-{end}"),
            end,
            end,
        ),
        asset: asset.into(),
        window_start: end - 3_600_000_000,
        window_end: end,
        fused_score: score,
        confidence: 0.8,
        scores_used: 3,
        scores_rejected: 0,
        sources_used: 2,
        weights_used: weights,
        trend: Trend::Rising,
    }
}

fn admin_url() -> String {
    std::env::var("AURORAQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("AURORAQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A PostgreSQL database of one test's own.
struct TestDb {
    name: String,
    url: String,
    admin: tokio_postgres::Client,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = unique("aq_api_").to_lowercase().replace('-', "_");
        let (admin, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = auroraq_sink_timescale::url_with_dbname(&admin_url(), &name).expect("url");
        TestDb { name, url, admin }
    }

    async fn drop(self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await;
    }
}

/// The OpenAPI document as a property test: schemathesis (installed by scripts/schemathesis.sh)
/// generates requests for every operation from the document, valid and invalid, and no answer may
/// be a 5xx. The server has the model, PostgreSQL and the risk shadow, so every route does its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_property_run_finds_no_server_error() {
    let st = repo().join(".auroraq/st-venv/bin/schemathesis");
    if !st.exists() {
        eprintln!("SKIPPED: schemathesis is not installed (scripts/schemathesis.sh installs it)");
        return;
    }
    let db = TestDb::new().await;
    let mut b = Backends::bus_only(dyn_bus(inproc_bus(4, 10_000)));
    b.scorer = Some(scorer());
    b.postgres = Some(Pg::new(&db.url).expect("pg"));
    let cfg = ApiConfig {
        rate_per_key: 1e9,
        burst_per_key: 1e9,
        rate_per_ip: 1e9,
        burst_per_ip: 1e9,
        order_decision_timeout_ms: 200,
        ..config()
    };
    let api = Api::start(cfg, b).await;
    let out = tokio::process::Command::new(&st)
        .args(["run", &format!("{}/openapi.json", api.base)])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .args([
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--workers",
            "2",
            "--seed",
            "1",
        ])
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{report}");
    assert!(
        report.contains("16/16"),
        "not every operation was tested:\n{report}"
    );
    assert!(
        report.contains("passed") && !report.contains(" failed"),
        "{report}"
    );
    drop(api);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_live_state_risk_and_orders() {
    // A database and a key prefix of this test's own.
    let db = TestDb::new().await;
    let db_url = db.url.clone();
    let prefix = format!("{}:", unique("aqapi"));

    let bus = dyn_bus(inproc_bus(4, 100_000));
    let cancel = CancellationToken::new();
    // The real sinks on the bus.
    let mut tcfg = auroraq_sink_timescale::TimescaleConfig::new(db_url.clone());
    tcfg.batch_delay = Duration::from_millis(50);
    let pg_sink = tokio::spawn(auroraq_sink_timescale::run(
        bus.clone(),
        tcfg,
        Arc::new(Default::default()),
        cancel.clone(),
    ));
    let mut rcfg = auroraq_sink_redis::RedisSinkConfig::new(redis_url());
    rcfg.key_prefix = prefix.clone();
    let redis_sink = tokio::spawn(auroraq_sink_redis::run(
        bus.clone(),
        rcfg,
        Arc::new(Default::default()),
        cancel.clone(),
    ));
    // The risk stage.
    let risk_cfg = auroraq_risk::RiskConfig::default();
    let rp = auroraq_risk::RiskProcessor::new(risk_cfg.clone()).expect("risk");
    let scfg = auroraq_stage::StageConfig::new("risk", "");
    let inputs = auroraq_stage::Processor::inputs(&rp);
    let sub = auroraq_stage::subscribe_processor(&*bus, &scfg, &inputs)
        .await
        .expect("subscribe risk");
    let risk = tokio::spawn(auroraq_stage::run_processor(
        bus.clone(),
        scfg,
        sub,
        rp,
        Arc::new(Default::default()),
    ));

    let mut b = Backends::bus_only(bus.clone());
    b.postgres = Some(Pg::new(&db_url).expect("pg"));
    b.redis = Some(Redis::new(&redis_url(), &prefix).expect("redis"));
    b.risk = risk_cfg;
    let api = Api::start(config(), b).await;

    // A WebSocket client on BTC's sentiment before anything is published.
    let ws_url = format!("ws://{}/ws/sentiment/BTC?access_token={KEY}", api.running.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("websocket");
    // Without credentials the upgrade is refused.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws/status", api.running.addr)).await;
    assert!(refused.is_err());

    // Real data: 80 hourly BTC bars, 6 real headlines with scores, fused signals, a portfolio.
    let bars = auroraq_replay::bars::read_bars(
        &repo().join("data/crypto/btc_usd_1h_2024-08_2025-11.csv"),
        &auroraq_replay::bars::BarsOptions {
            exchange: "cryptocompare".into(),
            symbol: Some("BTCUSDT".into()),
            interval: None,
        },
    )
    .expect("bars");
    let klines: Vec<AnyEvent> = bars.bars.into_iter().take(80).map(AnyEvent::Kline).collect();
    let last_close = match klines.last() {
        Some(AnyEvent::Kline(k)) => k.close_time,
        _ => unreachable!(),
    };
    publish(&*bus, &klines).await;
    let articles = common::real_articles(6);
    let mut events = Vec::new();
    for (i, a) in articles.iter().enumerate() {
        events.push(AnyEvent::Article(a.clone()));
        let score = 0.2 + 0.1 * i as f64;
        events.push(AnyEvent::SentimentScore(common::score_of(
            a,
            if score > 0.5 { "positive" } else { "negative" },
            score,
        )));
    }
    for k in 0..5 {
        events.push(AnyEvent::FusedSignal(fused(
            "BTC",
            last_close - (4 - k) * 3_600_000_000,
            0.5 + 0.02 * k as f64,
        )));
    }
    publish(&*bus, &events).await;

    // The WebSocket client sees the fused signals, in order.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("ok");
        let v: Value = serde_json::from_str(m.to_text().unwrap_or("")).unwrap_or(Value::Null);
        if v["type"] == "fused" {
            seen.push(v["data"]["fused_score"].as_f64().unwrap_or(0.0));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    ws.close(None).await.ok();

    // The sinks wrote; the API reads them.
    let pg = Pg::new(&db_url).unwrap();
    wait_until_async(
        "the sinks to write the bars and signals",
        Duration::from_secs(30),
        || async {
            let k = pg
                .query("SELECT count(*) FROM klines", &[])
                .await
                .ok()
                .and_then(|r| r.first().map(|r| r.get::<_, i64>(0)));
            let f = pg
                .query("SELECT count(*) FROM fused_signals", &[])
                .await
                .ok()
                .and_then(|r| r.first().map(|r| r.get::<_, i64>(0)));
            k == Some(80) && f == Some(5)
        },
    )
    .await;
    let (s, v) = api
        .get_json("/api/v1/market/btcusdt/ohlcv?interval=1h&limit=10")
        .await;
    assert_eq!(s, 200, "{v}");
    let bars = v["bars"].as_array().cloned().unwrap_or_default();
    assert_eq!(bars.len(), 10, "{v}");
    assert!(bars
        .windows(2)
        .all(|w| w[0]["open_time"].as_str() < w[1]["open_time"].as_str()));
    let (s, v) = api
        .get_json("/api/v1/market/BTCUSDT/ohlcv?start=2024-08-01T00:00:00Z&end=2024-08-01T04:00:00Z")
        .await;
    assert_eq!((s, v["bars"].as_array().map(Vec::len)), (200, Some(5)), "{v}");
    assert_eq!(v["bars"][0]["open"], "64617.83");
    let (s, v) = api
        .get_json("/api/v1/market/BTCUSDT/ohlcv?start=2024-13-45T00:00:00Z")
        .await;
    assert_eq!(s, 400, "{v}");

    wait_until_async(
        "redis to hold BTC's latest signal",
        Duration::from_secs(30),
        || async {
            api.get("/api/v1/sentiment/BTC/realtime?hours_back=6")
                .send()
                .await
                .ok()
                .map(|r| r.status() == 200)
                .unwrap_or(false)
                && Redis::new(&redis_url(), &prefix)
                    .unwrap()
                    .cmd::<Option<String>>(
                        redis::cmd("HGET")
                            .arg(format!("{prefix}fused:latest:BTC"))
                            .arg("fused_score"),
                    )
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        },
    )
    .await;
    let (s, v) = api.get_json("/api/v1/sentiment/btc/realtime?hours_back=6").await;
    assert_eq!(s, 200, "{v}");
    assert!(
        (v["fused_score"].as_f64().unwrap_or(0.0) - 0.58).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["trend"], "rising");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(5), "{v}");
    let sources: Vec<&str> = v["sources"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(sources.contains(&"redis") && sources.contains(&"postgres"), "{v}");

    let (s, v) = api
        .get_json("/api/v1/market/multiple?symbols=BTCUSDT,ETHUSDT")
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["prices"]["BTCUSDT"]["price"].is_string(), "{v}");
    assert_eq!(v["missing"], json!(["ETHUSDT"]));

    wait_until_async(
        "the sink to write the scores",
        Duration::from_secs(30),
        || async {
            pg.query("SELECT count(*) FROM sentiment_asset_scores", &[])
                .await
                .ok()
                .and_then(|r| r.first().map(|r| r.get::<_, i64>(0)))
                == Some(6)
        },
    )
    .await;
    let (s, v) = api.get_json("/api/v1/news/BTC/latest?limit=3").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "postgres");
    let items = v["articles"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3);
    let titles: Vec<String> = articles.iter().filter_map(|a| a.title.clone()).collect();
    assert!(
        items
            .iter()
            .all(|i| titles.iter().any(|t| Some(t.as_str()) == i["title"].as_str())),
        "{v}"
    );

    // Risk: VaR of a position from the bars' returns; an order checked; limits; metrics.
    let (s, v) = api
        .post_json(
            "/api/v1/risk/calculate",
            json!({"positions": [{"symbol": "BTCUSDT", "notional": "10000"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["var"].as_f64().unwrap_or(0.0) > 0.0
            && v["es"].as_f64().unwrap_or(0.0) >= v["var"].as_f64().unwrap_or(1.0),
        "{v}"
    );
    let (s, v) = api
        .post_json(
            "/api/v1/risk/calculate",
            json!({"positions": [{"symbol": "DOGEUSDT", "quantity": "1"}]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = api
        .post_json(
            "/api/v1/risk/validate-order",
            json!({"agent": "auroraq", "symbol": "BTCUSDT", "side": "buy", "notional": "1000000"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["verdict"], "rejected", "over the order notional limit: {v}");
    let (s, v) = api
        .post_json(
            "/api/v1/risk/validate-order",
            json!({"agent": "auroraq", "symbol": "BTCUSDT", "side": "buy", "notional": "1000"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["verdict"], "rejected", "{v}");
    let (s, v) = api
        .post_json(
            "/api/v1/risk/validate-order",
            json!({"agent": "auroraq", "symbol": "BTCUSDT", "side": "buy", "quantity": "-1"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api.get_json("/api/v1/risk/limits/auroraq").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["limits"]["max_order_notional"], "25000");

    // An order through risk: the risk stage on the bus decides it.
    let (s, v) = api
        .post_json(
            "/api/v1/orders/place",
            json!({"agent": "auroraq", "symbol": "BTCUSDT", "side": "buy", "notional": "1000"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "decided");
    assert_eq!(v["decision"]["intent_id"], v["intent_id"]);
    assert!(v["intent_id"].as_str().unwrap_or("").starts_with("api-"));
    let (s, v) = api.get_json("/api/v1/risk/metrics").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.get_json("/api/v1/orders/history?agent=auroraq").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["orders"].is_array());
    let (s, _) = api.get_json("/api/v1/portfolio/nobody").await;
    assert_eq!(s, 404);

    // The status snapshot has it all.
    let (s, v) = api.get_json("/api/v1/status").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["fused"]["BTC"]["history"].as_array().map(Vec::len),
        Some(5),
        "{v}"
    );
    assert_eq!(v["headlines"].as_array().map(Vec::len), Some(6), "{v}");
    assert!(
        titles
            .iter()
            .any(|t| v["headlines"][0]["title"].as_str() == Some(t.as_str())),
        "{v}"
    );

    cancel.cancel();
    bus.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = pg_sink.await;
        let _ = redis_sink.await;
        let _ = risk.await;
    })
    .await;
    drop(api);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_websocket_client_is_dropped_and_the_bus_is_not_slowed() {
    let bus = dyn_bus(inproc_bus(4, 100_000));
    let cfg = ApiConfig {
        ws_buffer: 8,
        ..config()
    };
    let api = Api::start(cfg, Backends::bus_only(bus.clone())).await;
    let url = format!("ws://{}/ws/sentiment/BTC?access_token={KEY}", api.running.addr);
    let (mut slow, _) = tokio_tungstenite::connect_async(&url).await.expect("websocket");
    // A burst far beyond the client's buffer while it reads nothing.
    let events: Vec<AnyEvent> = (0..5000)
        .map(|i| AnyEvent::FusedSignal(fused("BTC", 1_700_000_000_000_000 + i * 1_000_000, 0.5)))
        .collect();
    let t = std::time::Instant::now();
    publish(&*bus, &events).await;
    let publish_time = t.elapsed();
    // The client then finds its stream closed with the reason.
    let mut close = None;
    let mut received = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(20), slow.next()).await {
        match m {
            Ok(tokio_tungstenite::tungstenite::Message::Close(f)) => {
                close = f;
                break;
            }
            Ok(_) => received += 1,
            Err(_) => break,
        }
    }
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013);
    assert_eq!(close.reason.as_str(), "slow consumer");
    assert!(
        received < 5000,
        "the slow client got {received} of 5000: it was not dropped"
    );
    assert!(
        publish_time < Duration::from_secs(10),
        "publishing took {publish_time:?}"
    );
}

/// The Python client in the seed's shapes (`pipeline/api/clients/python/sentiment_client.py`, standard
/// library only) against the server: every call of the seed's `SentimentClient` works unchanged, and
/// its answers agree with what the same server tells a Rust client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sentiment_client_works_unchanged() {
    let bus = dyn_bus(inproc_bus(4, 1024));
    let mut b = Backends::bus_only(bus.clone());
    b.scorer = Some(scorer());
    let api = Api::start(config(), b).await;
    // A fused history for BTC on the bus, for the realtime call.
    let t0 = now_micros() - 3 * 3_600_000_000;
    let sigs: Vec<AnyEvent> = (0..4)
        .map(|i| AnyEvent::FusedSignal(fused("BTC", t0 + i * 3_600_000_000, 0.55 + i as f64 / 100.0)))
        .collect();
    publish(&*bus, &sigs).await;
    wait_until_async("the live view to hold BTC", Duration::from_secs(20), || async {
        api.get_json("/api/v1/sentiment/BTC/realtime").await.1["fused_score"].is_number()
    })
    .await;

    // Real headlines (data/crypto/crypto_news_2025-05_2025-08.csv.gz).
    let texts = [
        "Bitcoin Jumps Above $97K as Traders Optimistic U.S.-China Trade Deal Possible",
        "US Treasury wants to cut off Huione over ties to crypto crime",
        "Markets were flat on Tuesday.",
    ];
    let out = tokio::process::Command::new("python3")
        .arg(repo().join("pipeline/api/clients/python/sentiment_client.py"))
        .args(["--url", &api.base, "--api-key", KEY, "--asset", "BTC", "smoke"])
        .args(texts)
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");

    assert_eq!(v["health"], "ok", "{v}");
    let a = &v["analyze"];
    assert_eq!(a["label"], "positive", "{v}");
    assert_eq!(a["asset"], "BTC");
    assert_eq!(a["timestamp"], "2025-05-02T10:00:00Z");
    assert!(a["model_version"]
        .as_str()
        .is_some_and(|m| m.contains("@sha256:")));
    assert!(a["keywords"].as_array().is_some_and(|k| !k.is_empty()), "{v}");
    assert!(a["scenario_tag"].as_str().is_some_and(|t| !t.is_empty()));
    // The batch answers in order, with the scores a Rust client gets for the same texts.
    assert_eq!(v["batch"]["total_processed"], 3);
    assert_eq!(v["batch"]["modes"], json!(["backtest"]));
    for (i, t) in texts.iter().enumerate() {
        let (s, r) = api
            .post_json("/api/v1/sentiment/analyze", json!({"text": t, "asset": "BTC"}))
            .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(v["batch"]["labels"][i], r["label"], "text {i}: {v}");
        let (x, y) = (
            v["batch"]["scores"][i].as_f64().unwrap_or(-1.0),
            r["sentiment_score"].as_f64().unwrap_or(-2.0),
        );
        assert!((x - y).abs() < 1e-9, "text {i}: {x} against {y}");
    }
    assert_ne!(v["batch"]["labels"][1], "positive", "{v}");
    // Realtime: the latest fused window of the four.
    let rt = &v["realtime"];
    assert!(
        (rt["fused_score"].as_f64().unwrap_or(0.0) - 0.58).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(rt["trend"], "rising");
    assert_eq!(rt["history"].as_array().map(Vec::len), Some(4), "{v}");
    // Fusion: the same answer the Rust client gets.
    let (_, f) = api
        .post_json(
            "/api/v1/sentiment/fusion",
            json!({"sentiment_scores": {"coindesk": 0.8, "reuters": 0.6}, "symbol": "BTC"}),
        )
        .await;
    assert_eq!(v["fusion"]["fused_score"], f["fused_score"], "{v}");
    assert_eq!(v["fusion"]["weights_used"], f["weights_used"], "{v}");
    // Errors reach the caller as the API's codes.
    assert_eq!(v["errors"]["empty_text"]["status"], 400, "{v}");
    assert_eq!(v["errors"]["wrong_key"]["status"], 401, "{v}");
    assert!(v["errors"]["wrong_key"]["code"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
}
