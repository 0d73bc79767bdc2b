//! Bad input never stalls a stage: dead letters fit the bus, and a message is settled after
//! `max_attempts` deliveries even when its dead letter cannot be published. On the local NATS
//! server (`AURORAQ_TEST_NATS_URL`, default `nats://127.0.0.1:4222`), whose 1 MiB message limit is
//! what made a dead letter unpublishable, and on the in-process bus.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use auroraq_bus::{topics, Bus, InProcBus, InProcConfig, NatsBus, NatsConfig, OutMessage, SubscribeOptions};
use auroraq_schemas::{samples, AnyEvent, DeadLetter};
use auroraq_stage::{
    run_stage, run_subscription, subscribe_stage, Handler, HandlerError, StageConfig, StageMetrics,
    StageStats,
};
use bytes::Bytes;
use sha2::{Digest, Sha256};

fn nats_url() -> String {
    std::env::var("AURORAQ_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A JetStream bus on a stream and subject root of its own.
async fn nats_bus() -> Arc<NatsBus> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("stagedl{}x{}", std::process::id(), nanos % 1_000_000_000);
    let mut cfg = NatsConfig::new(nats_url());
    cfg.stream = name.to_uppercase();
    cfg.subject_root = name;
    cfg.partitions = 1;
    cfg.max_age = Duration::from_secs(600);
    let bus = NatsBus::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("NATS with JetStream must run at {}: {e}", nats_url()));
    Arc::new(bus)
}

/// Accepts every event and returns `outputs` for each.
struct Emit(Vec<AnyEvent>);

#[async_trait]
impl Handler<AnyEvent> for Emit {
    async fn handle(&mut self, _: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
        Ok(self.0.clone())
    }
}

fn config(name: &str, filter: &str) -> StageConfig {
    let mut cfg = StageConfig::new(name, filter);
    cfg.max_attempts = 3;
    cfg.retry_delay = Duration::from_millis(20);
    cfg
}

/// The next dead letter on `dlq.<stage>`, acked.
async fn next_dead_letter(sub: &mut Box<dyn auroraq_bus::Subscription>) -> DeadLetter {
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a dead letter within 20 s (none: the stage is retrying forever)")
        .expect("the subscription is open")
        .expect("a delivery");
    let ev = AnyEvent::decode(d.payload()).expect("the dead letter decodes");
    d.ack().await.expect("ack");
    match ev {
        AnyEvent::DeadLetter(dl) => dl,
        other => panic!("not a dead letter: {:?}", other.kind()),
    }
}

async fn stop(
    bus: Arc<NatsBus>,
    task: tokio::task::JoinHandle<Result<StageStats, auroraq_stage::StageError>>,
) {
    bus.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    let _ = bus.delete_stream().await;
}

#[tokio::test]
async fn a_bad_message_near_the_bus_limit_is_dead_lettered_and_the_stage_goes_on() {
    let bus = nats_bus().await;
    let topic = topics::articles("bigfeed");
    let cfg = config("dlbig", "news.articles.>");
    let sub = subscribe_stage(&*bus, &cfg).await.unwrap();
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlq-reader", topics::dlq("dlbig")))
        .await
        .unwrap();
    // A message just under NATS's 1 MiB that is no Avro (a JSON article pasted on the topic), then
    // a good one. Its dead letter kept whole would be over the limit.
    let mut bad = b"{\"title\": \"".to_vec();
    bad.resize((1 << 20) - 100, b'x');
    let good = samples::all()
        .into_iter()
        .find(|e| matches!(e, AnyEvent::Article(_)))
        .unwrap();
    bus.publish(vec![
        OutMessage::new(topic.clone(), Some("k".into()), "bad-1", Bytes::from(bad.clone())),
        OutMessage::new(
            topic,
            Some("k".into()),
            "good-1",
            Bytes::from(good.encode().unwrap()),
        ),
    ])
    .await
    .expect("both originals fit the bus");
    let metrics = Arc::new(StageMetrics::default());
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let task = tokio::spawn(run_subscription::<AnyEvent, _>(
        dyn_bus,
        cfg,
        sub,
        Emit(vec![]),
        metrics.clone(),
    ));

    let dl = next_dead_letter(&mut dlq).await;
    assert_eq!(dl.reason, "decode_error");
    assert_eq!(dl.original_id.as_deref(), Some("bad-1"));
    assert_eq!(dl.original_bytes.len(), DeadLetter::MAX_ORIGINAL_BYTES);
    assert!(
        dl.original_bytes == bad[..DeadLetter::MAX_ORIGINAL_BYTES],
        "the first bytes are kept"
    );
    let sha: String = Sha256::digest(&bad).iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        dl.error.ends_with(&format!(
            "(original cut to 262144 of 1048476 bytes, sha256 {sha})"
        )),
        "{}",
        dl.error
    );
    // The good article behind it is processed: the stage did not stall.
    for _ in 0..200 {
        if metrics.snapshot().processed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = metrics.snapshot();
    assert_eq!((s.processed, s.dead_letters, s.dropped), (1, 1, 0), "{s:?}");
    assert_eq!(s.redelivered, 0, "acked on its first delivery: {s:?}");
    stop(bus, task).await;
}

#[tokio::test]
async fn outputs_too_large_for_the_bus_are_dead_lettered_after_max_attempts() {
    let bus = nats_bus().await;
    let cfg = config("dlout", "news.articles.>");
    let sub = subscribe_stage(&*bus, &cfg).await.unwrap();
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlq-reader", topics::dlq("dlout")))
        .await
        .unwrap();
    let mut article = samples::all()
        .into_iter()
        .find_map(|e| match e {
            AnyEvent::Article(a) => Some(a),
            _ => None,
        })
        .unwrap();
    let input = AnyEvent::Article(article.clone());
    // The stage's output: an article of 2 MB, which NATS refuses.
    article.text = "y".repeat(2_000_000);
    article.meta.source = "out".into();
    bus.publish(vec![OutMessage::new(
        topics::articles("in"),
        None,
        "in-1",
        Bytes::from(input.encode().unwrap()),
    )])
    .await
    .unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let task = tokio::spawn(run_subscription::<AnyEvent, _>(
        dyn_bus,
        cfg,
        sub,
        Emit(vec![AnyEvent::Article(article)]),
        metrics.clone(),
    ));
    let dl = next_dead_letter(&mut dlq).await;
    assert_eq!(dl.reason, "publish_error");
    assert_eq!(dl.attempts, 3);
    assert!(dl.error.contains("failed 3 times"), "{}", dl.error);
    assert!(AnyEvent::decode(&dl.original_bytes).is_ok_and(|e| e == input));
    let s = metrics.snapshot();
    assert_eq!((s.dead_letters, s.dropped, s.redelivered), (1, 0, 2), "{s:?}");
    stop(bus, task).await;
}

#[tokio::test]
async fn a_message_whose_dead_letter_cannot_be_published_is_acked_after_max_attempts() {
    // Deliveries come from one in-process bus; outputs and dead letters go to another, closed,
    // which refuses every publish (as a bus that is down does).
    let input = Arc::new(InProcBus::new(InProcConfig::default()));
    let output = Arc::new(InProcBus::new(InProcConfig::default()));
    output.close().await;
    let cfg = config("dldrop", "news.articles.>");
    let sub = subscribe_stage(&*input, &cfg).await.unwrap();
    input
        .publish(vec![OutMessage::new(
            topics::articles("x"),
            None,
            "junk-1",
            Bytes::from_static(b"\x00\x01 not avro"),
        )])
        .await
        .unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let out: Arc<dyn Bus> = output.clone();
    let task = tokio::spawn(run_subscription::<AnyEvent, _>(
        out,
        cfg,
        sub,
        Emit(vec![]),
        metrics.clone(),
    ));
    let settled = async {
        while metrics.snapshot().dropped == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), settled)
        .await
        .expect("the stage settles the message (it retried forever)");
    input.close().await;
    let stats = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the stage ends once its bus closes")
        .unwrap()
        .expect("the stage ends cleanly");
    assert_eq!(stats.received, 3, "{stats:?}");
    assert_eq!(stats.redelivered, 2, "{stats:?}");
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    assert_eq!(stats.dropped, 1, "{stats:?}");
}

#[tokio::test]
async fn run_stage_still_dead_letters_on_the_in_process_bus() {
    let bus = Arc::new(InProcBus::new(InProcConfig::default()));
    let cfg = config("dlinproc", "news.articles.>");
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlq-reader", topics::dlq("dlinproc")))
        .await
        .unwrap();
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let sub = subscribe_stage(&*bus, &cfg).await.unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let task = tokio::spawn(run_subscription::<AnyEvent, _>(
        dyn_bus.clone(),
        cfg.clone(),
        sub,
        Emit(vec![]),
        metrics,
    ));
    let payload = vec![7u8; 300 << 10];
    bus.publish(vec![OutMessage::new(
        topics::articles("x"),
        None,
        "",
        Bytes::from(payload.clone()),
    )])
    .await
    .unwrap();
    let dl = next_dead_letter(&mut dlq).await;
    assert_eq!(dl.original_bytes.len(), DeadLetter::MAX_ORIGINAL_BYTES);
    assert!(dl.original_cut());
    assert_eq!(dl.original_id, None);
    bus.close().await;
    let stats = task.await.unwrap().unwrap();
    assert_eq!((stats.dead_letters, stats.dropped), (1, 0));
    let _ = run_stage::<AnyEvent, Emit>; // the one-call form is the same loop
}
