//! The gRPC `SentimentService` against a real server started in process (`auroraq_api::start`),
//! through the generated client: authentication, the model, batching order, validation, fusion
//! against REST, the health service, and `SubscribeFused` (replay from NATS JetStream, then live,
//! without gap or duplicate; live only on the in-process bus, which keeps no history).
#![cfg(feature = "grpc")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auroraq_api::grpc::pb;
use auroraq_api::grpc::pb::sentiment_service_client::SentimentServiceClient;
use auroraq_api::{ApiConfig, Backends, RunningApi, Secret};
use auroraq_bus::Bus;
use auroraq_schemas::{AnyEvent, EventKind, FusedSignal, Meta, Trend};
use auroraq_sentiment::batcher::BatchConfig;
use auroraq_sentiment::scorer::Scorer;
use auroraq_sentiment::{runtime, Classifier, ModelOptions};
use auroraq_util::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const KEY: &str = "grpc-test-key-0123456789";
const SERVICE: &str = "auroraq.sentiment.v1.SentimentService";
const WAIT: Duration = Duration::from_secs(10);

const POSITIVE: &str =
    "Operating profit rose to EUR 103.4 mn from EUR 23.2 in the corresponding period in 2006 .";
const NEGATIVE: &str =
    "Profit warning : the group cuts its full-year outlook and plans to lay off 300 workers .";
const NEUTRAL: &str = "The annual general meeting will be held in Helsinki on 25 March .";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The default model behind a batcher (on the current runtime).
fn scorer() -> Scorer {
    runtime::init(Some(&repo().join(runtime::LOCAL_LIBRARY)))
        .expect("ONNX Runtime (run scripts/setup.sh first)");
    let classifier = Classifier::load(
        &repo().join("models/auroraq-minilm-fpb"),
        &ModelOptions {
            threads: 1,
            ..ModelOptions::default()
        },
    )
    .expect("the default model");
    Scorer::start(Arc::new(classifier), BatchConfig::default())
}

async fn start(backends: Backends) -> (RunningApi, CancellationToken) {
    let cfg = ApiConfig {
        listen: "127.0.0.1:0".into(),
        grpc_listen: "127.0.0.1:0".into(),
        keys: vec![Secret(KEY.into())],
        jwt_secret_env: String::new(),
        ..ApiConfig::default()
    };
    let cancel = CancellationToken::new();
    let api = auroraq_api::start(cfg, backends, cancel.clone())
        .await
        .expect("API starts");
    (api, cancel)
}

async fn channel(api: &RunningApi) -> Channel {
    let addr: SocketAddr = api.grpc_addr.expect("gRPC listens");
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("metadata"),
    );
    r
}

fn fusion_request() -> pb::FusionRequest {
    pb::FusionRequest {
        sentiment_scores: BTreeMap::from([("reuters".to_string(), 0.8), ("coindesk".to_string(), 0.6)]),
        symbol: "btc".into(),
        timestamp: Some("2025-05-01T12:00:00Z".into()),
        confidences: BTreeMap::from([("coindesk".to_string(), 0.5)]),
    }
}

async fn stop(api: RunningApi, cancel: CancellationToken) {
    cancel.cancel();
    tokio::time::timeout(WAIT, api.wait())
        .await
        .expect("the API stops promptly")
        .expect("the API stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_health_fusion_and_errors() {
    let bus: Arc<dyn Bus> = Arc::new(auroraq_bus::InProcBus::default());
    let (api, cancel) = start(Backends::bus_only(bus)).await;
    let ch = channel(&api).await;
    let mut client = SentimentServiceClient::new(ch.clone());

    // No credentials, a wrong key, an empty bearer: UNAUTHENTICATED.
    let e = client
        .fuse_sentiments(fusion_request())
        .await
        .expect_err("needs credentials");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut wrong = Request::new(fusion_request());
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer wrong-key-0123456789abc".parse().expect("metadata"),
    );
    let e = client.fuse_sentiments(wrong).await.expect_err("wrong key");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(e.message(), "invalid API key");
    let mut wrong = Request::new(fusion_request());
    wrong
        .metadata_mut()
        .insert("x-api-key", "nope-nope-nope-nope".parse().expect("metadata"));
    assert_eq!(
        client.fuse_sentiments(wrong).await.map_err(|e| e.code()).err(),
        Some(Code::Unauthenticated)
    );

    // The key as a bearer, raw, or in x-api-key.
    for (header, value) in [
        ("authorization", format!("Bearer {KEY}")),
        ("authorization", KEY.to_string()),
        ("x-api-key", KEY.to_string()),
    ] {
        let mut r = Request::new(fusion_request());
        r.metadata_mut().insert(header, value.parse().expect("metadata"));
        assert!(client.fuse_sentiments(r).await.is_ok(), "{header}: {value}");
    }

    // Fusion: the REST answer, field for field.
    let got = client
        .fuse_sentiments(authed(fusion_request()))
        .await
        .expect("fusion")
        .into_inner();
    assert_eq!(got.symbol, "BTC");
    assert_eq!(got.sources_used, 2);
    assert_eq!(got.weights_used.len(), 2);
    let total: f64 = got.weights_used.values().sum();
    assert!((total - 1.0).abs() < 1e-9, "weights sum to {total}");
    assert!(
        got.weights_used["reuters"] > got.weights_used["coindesk"],
        "{:?}",
        got.weights_used
    );
    assert!(
        got.fused_score > 0.6 && got.fused_score < 0.8,
        "{}",
        got.fused_score
    );
    assert_eq!(got.timestamp.as_deref(), Some("2025-05-01T12:00:00Z"));
    let rest: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/v1/sentiment/fusion", api.addr))
        .header("x-api-key", KEY)
        .json(&serde_json::json!({
            "sentiment_scores": {"reuters": 0.8, "coindesk": 0.6},
            "symbol": "btc",
            "timestamp": "2025-05-01T12:00:00Z",
            "confidences": {"coindesk": 0.5}
        }))
        .send()
        .await
        .expect("REST answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rest["fused_score"].as_f64(), Some(got.fused_score));
    assert_eq!(rest["confidence"].as_f64(), Some(got.confidence));
    assert_eq!(rest["trend"].as_str(), Some(got.trend.as_str()));
    assert_eq!(rest["sources_used"].as_u64(), Some(got.sources_used as u64));
    for (source, w) in &got.weights_used {
        assert_eq!(rest["weights_used"][source].as_f64(), Some(*w), "{source}");
    }

    // REST's validation, as gRPC codes.
    let mut bad = fusion_request();
    bad.sentiment_scores.insert("x".into(), 1.5);
    let e = client
        .fuse_sentiments(authed(bad))
        .await
        .expect_err("score out of range");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.metadata()
            .get("auroraq-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("invalid_request")
    );
    let e = client
        .fuse_sentiments(authed(pb::FusionRequest::default()))
        .await
        .expect_err("no sources");
    assert_eq!(e.code(), Code::InvalidArgument);

    // No model in this API: UNAVAILABLE, as REST's 503.
    let e = client
        .analyze_text(authed(pb::AnalyzeRequest {
            text: POSITIVE.into(),
            ..Default::default()
        }))
        .await
        .expect_err("no model");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // Realtime: nothing known yet; a bad asset or window is INVALID_ARGUMENT.
    let rt = client
        .get_realtime_sentiment(authed(pb::RealtimeRequest {
            asset: "eth".into(),
            hours_back: 0,
        }))
        .await
        .expect("realtime")
        .into_inner();
    assert_eq!(
        (
            rt.asset.as_str(),
            rt.fused_score,
            rt.trend.as_str(),
            rt.hours_back
        ),
        ("ETH", None, "unknown", 6)
    );
    for (asset, hours_back) in [("no/such", 6), ("ETH", 500)] {
        let e = client
            .get_realtime_sentiment(authed(pb::RealtimeRequest {
                asset: asset.into(),
                hours_back,
            }))
            .await
            .expect_err("invalid");
        assert_eq!(e.code(), Code::InvalidArgument, "{asset} {hours_back}: {e:?}");
    }

    // Health answers without credentials.
    let mut health = HealthClient::new(ch.clone());
    for service in ["", SERVICE] {
        let h = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(h.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(e.code(), Code::NotFound);

    stop(api, cancel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_with_the_model() {
    let bus: Arc<dyn Bus> = Arc::new(auroraq_bus::InProcBus::default());
    let mut backends = Backends::bus_only(bus);
    backends.scorer = Some(scorer());
    let (api, cancel) = start(backends).await;
    let mut client = SentimentServiceClient::new(channel(&api).await);

    let r = client
        .analyze_text(authed(pb::AnalyzeRequest {
            text: POSITIVE.into(),
            asset: "btc".into(),
            mode: String::new(),
            timestamp: Some("2025-05-01T12:00:00Z".into()),
        }))
        .await
        .expect("analyze")
        .into_inner();
    assert_eq!(r.label, "positive", "{r:?}");
    assert!(r.sentiment_score > 0.5 && r.confidence > 0.5, "{r:?}");
    assert!(r.model_version.contains("@sha256:"), "{}", r.model_version);
    assert_eq!(r.model_version, api.state.model_version);
    assert_eq!((r.asset.as_str(), r.mode.as_str()), ("BTC", "live"));
    assert_eq!(r.timestamp.as_deref(), Some("2025-05-01T12:00:00Z"));
    let p: f64 = r.probabilities.values().sum();
    assert!(
        (p - 1.0).abs() < 1e-4 && r.probabilities.len() == 3,
        "{:?}",
        r.probabilities
    );
    assert!(!r.keywords.is_empty() && !r.scenario_tag.is_empty(), "{r:?}");
    assert!(!r.truncated);

    // The same text again: from the cache, same answer.
    let again = client
        .analyze_text(authed(pb::AnalyzeRequest {
            text: POSITIVE.into(),
            ..Default::default()
        }))
        .await
        .expect("analyze")
        .into_inner();
    assert!(again.cached && again.processing_time == 0.0);
    assert_eq!(
        (again.label.as_str(), again.sentiment_score),
        ("positive", r.sentiment_score)
    );
    assert_eq!(again.asset, "CRYPTO");

    // A batch keeps the order of its texts.
    let texts = [NEGATIVE, POSITIVE, NEUTRAL, NEGATIVE];
    let b = client
        .analyze_batch(authed(pb::BatchRequest {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            asset: "eth".into(),
            mode: "backtest".into(),
        }))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(b.total_processed, 4);
    let labels: Vec<&str> = b.results.iter().map(|x| x.label.as_str()).collect();
    assert_eq!(labels, ["negative", "positive", "neutral", "negative"]);
    assert!(b.results.iter().all(|x| x.mode == "backtest" && x.asset == "ETH"));
    assert_eq!(b.results[1].sentiment_score, r.sentiment_score);

    // Validation: REST's 400s are INVALID_ARGUMENT.
    for (what, req) in [
        ("empty text", pb::AnalyzeRequest::default()),
        (
            "blank text",
            pb::AnalyzeRequest {
                text: "   ".into(),
                ..Default::default()
            },
        ),
        (
            "long text",
            pb::AnalyzeRequest {
                text: "a".repeat(10_001),
                ..Default::default()
            },
        ),
        (
            "bad mode",
            pb::AnalyzeRequest {
                text: POSITIVE.into(),
                mode: "paper".into(),
                ..Default::default()
            },
        ),
        (
            "bad asset",
            pb::AnalyzeRequest {
                text: POSITIVE.into(),
                asset: "B T C".into(),
                ..Default::default()
            },
        ),
    ] {
        let e = client.analyze_text(authed(req)).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    let e = client
        .analyze_batch(authed(pb::BatchRequest::default()))
        .await
        .expect_err("no texts");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .analyze_batch(authed(pb::BatchRequest {
            texts: vec![POSITIVE.into(), String::new()],
            ..Default::default()
        }))
        .await
        .expect_err("an empty text");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("texts[1]"), "{}", e.message());

    stop(api, cancel).await;
}

fn signal(i: usize, t0: i64) -> FusedSignal {
    let start = t0 + i as i64 * 60_000_000;
    FusedSignal {
        meta: Meta::raw(
            EventKind::FusedSignal,
            "fusion",
            &format!("grpc-test-{t0}-{i}"),
            start,
            start,
        ),
        asset: "BTC".into(),
        window_start: start,
        window_end: start + 60_000_000,
        fused_score: 0.5 + i as f64 / 100.0,
        confidence: 0.9,
        scores_used: 3,
        scores_rejected: 0,
        sources_used: 2,
        weights_used: BTreeMap::from([("reuters".to_string(), 0.75), ("coindesk".to_string(), 0.25)]),
        trend: Trend::Rising,
    }
}

async fn publish(bus: &dyn Bus, sigs: &[FusedSignal]) {
    let batch = sigs
        .iter()
        .map(|s| auroraq_stage::to_message(&AnyEvent::FusedSignal(s.clone())).expect("encodes"))
        .collect();
    bus.publish(batch).await.expect("published");
}

async fn next(stream: &mut Streaming<pb::FusedSignal>) -> pb::FusedSignal {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a signal in time")
        .expect("no error")
        .expect("the stream goes on")
}

/// Nothing more arrives for a while.
async fn quiet(stream: &mut Streaming<pb::FusedSignal>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        panic!("unexpected: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_fused_replays_history_then_follows_live() {
    // The in-process bus keeps no history: JetStream does.
    let (nats, _guard) = auroraq_tests::nats_bus(4).await;
    let bus: Arc<dyn Bus> = nats;
    let (api, cancel) = start(Backends::bus_only(bus.clone())).await;
    let mut client = SentimentServiceClient::new(channel(&api).await);

    let t0 = auroraq_schemas::now_micros();
    let sigs: Vec<FusedSignal> = (0..5).map(|i| signal(i, t0)).collect();
    // Another asset's signal, which the stream must not carry.
    let mut eth = signal(9, t0);
    eth.asset = "ETH".into();
    eth.meta.event_id = "eth-signal".into();
    publish(
        bus.as_ref(),
        &[sigs[0].clone(), eth.clone(), sigs[1].clone(), sigs[2].clone()],
    )
    .await;

    // Unauthenticated subscriptions are refused.
    let e = client
        .subscribe_fused(pb::SubscribeRequest {
            asset: "BTC".into(),
            from_time: t0 - 1_000_000,
        })
        .await
        .expect_err("needs credentials");
    assert_eq!(e.code(), Code::Unauthenticated);

    let mut stream = client
        .subscribe_fused(authed(pb::SubscribeRequest {
            asset: "btc".into(),
            from_time: t0 - 1_000_000,
        }))
        .await
        .expect("subscribed")
        .into_inner();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut stream).await);
    }
    let first = &got[0];
    assert_eq!(first.asset, "BTC");
    assert_eq!(
        (first.window_start, first.window_end),
        (sigs[0].window_start, sigs[0].window_end)
    );
    assert_eq!(
        (first.fused_score, first.confidence, first.trend.as_str()),
        (0.5, 0.9, "rising")
    );
    assert_eq!(first.scores_used, 3);
    assert_eq!(first.weights_used, sigs[0].weights_used);

    // Live from here; the replayed ones (which the live view may deliver late) are not repeated.
    publish(bus.as_ref(), &[sigs[3].clone(), eth, sigs[4].clone()]).await;
    for _ in 0..2 {
        got.push(next(&mut stream).await);
    }
    let ids: Vec<&str> = got.iter().map(|s| s.event_id.as_str()).collect();
    let want: Vec<&str> = sigs.iter().map(|s| s.meta.event_id.as_str()).collect();
    assert_eq!(ids, want, "in order, each once");
    // A re-published signal (same event id) is not sent again.
    publish(bus.as_ref(), &[sigs[1].clone()]).await;
    quiet(&mut stream).await;

    // Shutdown ends the stream and the server.
    cancel.cancel();
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    tokio::time::timeout(WAIT, api.wait())
        .await
        .expect("the API stops promptly")
        .expect("the API stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_fused_while_publishing_has_no_gap_or_duplicate() {
    let (nats, _guard) = auroraq_tests::nats_bus(4).await;
    let bus: Arc<dyn Bus> = nats;
    let (api, cancel) = start(Backends::bus_only(bus.clone())).await;
    let mut client = SentimentServiceClient::new(channel(&api).await);
    let t0 = auroraq_schemas::now_micros();
    let sigs: Vec<FusedSignal> = (0..40).map(|i| signal(i, t0)).collect();

    // Signals keep coming while the subscription replays the history and switches to live.
    let publisher = {
        let (bus, sigs) = (bus.clone(), sigs.clone());
        tokio::spawn(async move {
            for s in &sigs {
                publish(bus.as_ref(), std::slice::from_ref(s)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut stream = client
        .subscribe_fused(authed(pb::SubscribeRequest {
            asset: "BTC".into(),
            from_time: t0 - 1_000_000,
        }))
        .await
        .expect("subscribed")
        .into_inner();
    let mut ids = Vec::new();
    for _ in 0..sigs.len() {
        ids.push(next(&mut stream).await.event_id);
    }
    publisher.await.expect("published");
    let want: Vec<String> = sigs.iter().map(|s| s.meta.event_id.clone()).collect();
    assert_eq!(ids, want, "every signal once, in order");
    quiet(&mut stream).await;

    stop(api, cancel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_fused_is_live_only_without_history() {
    let bus: Arc<dyn Bus> = Arc::new(auroraq_bus::InProcBus::default());
    let (api, cancel) = start(Backends::bus_only(bus.clone())).await;
    let mut client = SentimentServiceClient::new(channel(&api).await);
    let t0 = auroraq_schemas::now_micros();
    let sigs: Vec<FusedSignal> = (0..3).map(|i| signal(i, t0)).collect();
    publish(bus.as_ref(), &sigs[..1]).await;

    let e = client
        .subscribe_fused(authed(pb::SubscribeRequest {
            asset: "BTC/USD".into(),
            from_time: 0,
        }))
        .await
        .expect_err("bad asset");
    assert_eq!(e.code(), Code::InvalidArgument);

    // The bus has no history to replay: live only (from now), no error.
    let mut stream = client
        .subscribe_fused(authed(pb::SubscribeRequest {
            asset: "BTC".into(),
            from_time: t0 - 1_000_000,
        }))
        .await
        .expect("subscribed")
        .into_inner();
    publish(bus.as_ref(), &sigs[1..]).await;
    assert_eq!(next(&mut stream).await.event_id, sigs[1].meta.event_id);
    assert_eq!(next(&mut stream).await.event_id, sigs[2].meta.event_id);
    quiet(&mut stream).await;

    stop(api, cancel).await;
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
}
