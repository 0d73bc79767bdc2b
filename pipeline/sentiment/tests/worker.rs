//! The sentiment worker on the bus: articles in, scores out, each article acked once; bad input
//! dead-lettered; on the in-process bus and on the real NATS server.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::{topics, Bus, OutMessage, SubscribeOptions};
use auroraq_schemas::{decode, encode, Article, DeadLetter, EventKind, Meta, SentimentScore};
use auroraq_sentiment::assets::AliasTable;
use auroraq_sentiment::batcher::BatchConfig;
use auroraq_sentiment::eval::read_examples;
use auroraq_sentiment::worker::{run_worker, run_worker_on};
use auroraq_sentiment::{runtime, Classifier, ModelOptions};
use auroraq_stage::{publish_events, subscribe_stage, StageConfig, StageMetrics};
use auroraq_tests::{dyn_bus, inproc_bus, nats_bus};
use bytes::Bytes;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn classifier() -> Classifier {
    runtime::init(Some(&repo().join(runtime::LOCAL_LIBRARY))).expect("run scripts/onnxruntime.sh first");
    Classifier::load(
        &repo().join("models/auroraq-minilm-fpb"),
        &ModelOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap()
}

fn articles(n: usize) -> Vec<Article> {
    let ex = read_examples(&repo().join("data/fpb/validation.csv")).unwrap();
    ex.iter()
        .take(n)
        .enumerate()
        .map(|(i, e)| Article {
            meta: Meta::raw(
                EventKind::Article,
                "test",
                &format!("a{i}"),
                1_000_000 + i as i64,
                2_000_000 + i as i64,
            ),
            article_id: format!("a{i}"),
            feed: "test".into(),
            title: if i % 3 == 0 {
                Some("Bitcoin <b>update</b>".into())
            } else {
                None
            },
            text: e.sentence.clone(),
            url: None,
            origin: None,
            keywords: vec![],
            tickers: if i % 5 == 0 { vec!["AAPL".into()] } else { vec![] },
            ts_crawled: None,
        })
        .collect()
}

/// Makes the worker's consumer group exist before anything is published, so that publishing never
/// races the worker task's own `subscribe` (which `run_worker` makes when it first runs). The
/// in-process bus keeps messages only for groups that exist, and a group, once made, outlives its
/// first member: join and leave at once. A JetStream group starts at the oldest message kept (its
/// durable sees everything published before it), so it needs no head start; there, leaving at
/// once could strand the pull a member had already asked for, so this does nothing.
async fn create_group_before_publishing(bus: &dyn Bus, cfg: &StageConfig) {
    if bus.kind() == "inproc" {
        drop(subscribe_stage(bus, cfg).await.unwrap());
    }
}

async fn articles_in_scores_out(bus: Arc<dyn Bus>) {
    let mut scores = bus
        .subscribe(SubscribeOptions::new("scores", topics::SENTIMENT_SCORES))
        .await
        .unwrap();
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlq", "dlq.>"))
        .await
        .unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let mut cfg = StageConfig::new("sentiment", topics::ALL_ARTICLES);
    cfg.max_in_flight = 16; // fewer than the articles: the worker must keep pulling as it acks
    let batching = BatchConfig {
        max_batch_size: 8,
        max_batch_tokens: 1024,
        ..BatchConfig::default()
    };
    create_group_before_publishing(&*bus, &cfg).await;
    let worker = tokio::spawn(run_worker(
        bus.clone(),
        cfg,
        classifier(),
        AliasTable::default(),
        batching,
        metrics.clone(),
    ));

    let arts = articles(40);
    let events: Vec<_> = arts
        .iter()
        .cloned()
        .map(auroraq_schemas::AnyEvent::Article)
        .collect();
    publish_events(&*bus, &events).await.unwrap();
    // Bad input: bytes that are no event, and an article with nothing to read.
    let mut empty = arts[0].clone();
    empty.meta = Meta::raw(EventKind::Article, "test", "empty", 1, 2);
    empty.article_id = "empty".into();
    empty.title = None;
    empty.text = " <p> </p> ".into();
    bus.publish(vec![
        OutMessage::new(
            topics::articles("test"),
            None,
            "junk",
            Bytes::from_static(b"\x00\x01junk"),
        ),
        OutMessage::new(
            topics::articles("test"),
            None,
            "empty",
            Bytes::from(encode(&empty).unwrap()),
        ),
    ])
    .await
    .unwrap();

    let mut seen: BTreeMap<String, SentimentScore> = BTreeMap::new();
    while seen.len() < arts.len() {
        let d = tokio::time::timeout(Duration::from_secs(60), scores.next())
            .await
            .expect("scores arrive")
            .unwrap()
            .unwrap();
        let s: SentimentScore = decode(d.payload()).unwrap();
        assert!(
            seen.insert(s.article_id.clone(), s).is_none(),
            "one score per article"
        );
        d.ack().await.unwrap();
    }
    let mut reasons = HashSet::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(20), dlq.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let dl: DeadLetter = decode(d.payload()).unwrap();
        reasons.insert((dl.original_id.clone().unwrap_or_default(), dl.reason.clone()));
        d.ack().await.unwrap();
    }
    assert!(
        reasons.contains(&("junk".into(), "decode_error".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("empty".into(), "bad_text".into())),
        "{reasons:?}"
    );

    let a0 = &seen["a0"];
    assert_eq!(a0.assets, vec!["AAPL", "BTC"], "linked by title alias and ticker");
    assert_eq!(a0.meta.derived_from, vec![arts[0].meta.event_id.clone()]);
    assert!(a0.meta.ts_processed.is_some());
    assert_eq!(a0.model_sha256.len(), 64);
    for s in seen.values() {
        assert!((0.0..=1.0).contains(&s.sentiment_score));
        let p = &s.probabilities;
        assert!((s.sentiment_score - (0.5 + (p["positive"] - p["negative"]) / 2.0)).abs() < 1e-9);
    }

    bus.close().await;
    let stats = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        stats.processed, 40,
        "each article acked once after its score was published"
    );
    assert_eq!(stats.dead_letters, 2);
    assert_eq!(stats.published, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_articles_in_scores_out() {
    articles_in_scores_out(dyn_bus(inproc_bus(4, 1024))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_articles_in_scores_out() {
    let (bus, _guard) = nats_bus(4).await;
    articles_in_scores_out(dyn_bus(bus)).await;
}

/// A worker dies mid-stream; another takes over the group. Every article is scored, and because a
/// score's id derives from its article and model, re-scored articles de-duplicate on the bus:
/// consumers see each score once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_nothing_lost_when_a_worker_dies() {
    let (nats, _guard) = nats_bus(2).await;
    let bus = dyn_bus(nats);
    let mut scores = bus
        .subscribe(SubscribeOptions::new("scores", topics::SENTIMENT_SCORES))
        .await
        .unwrap();
    let mut cfg = StageConfig::new("sentiment", topics::ALL_ARTICLES);
    cfg.ack_wait = Duration::from_secs(2);
    cfg.max_in_flight = 8;
    let batching = BatchConfig {
        max_batch_size: 4,
        max_batch_tokens: 512,
        ..BatchConfig::default()
    };
    let arts = articles(30);
    let events: Vec<_> = arts
        .iter()
        .cloned()
        .map(auroraq_schemas::AnyEvent::Article)
        .collect();

    create_group_before_publishing(&*bus, &cfg).await;
    let first = tokio::spawn(run_worker(
        bus.clone(),
        cfg.clone(),
        classifier(),
        AliasTable::default(),
        batching.clone(),
        Arc::new(StageMetrics::default()),
    ));
    publish_events(&*bus, &events).await.unwrap();

    let mut seen = HashSet::new();
    while seen.len() < 5 {
        let d = tokio::time::timeout(Duration::from_secs(60), scores.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let s: SentimentScore = decode(d.payload()).unwrap();
        assert!(seen.insert(s.article_id), "a score seen twice");
        d.ack().await.unwrap();
    }
    first.abort(); // dies without acking what it holds
    let _ = first.await;

    let second = tokio::spawn(run_worker(
        bus.clone(),
        cfg,
        classifier(),
        AliasTable::default(),
        batching,
        Arc::new(StageMetrics::default()),
    ));
    while seen.len() < arts.len() {
        let d = tokio::time::timeout(Duration::from_secs(60), scores.next())
            .await
            .expect("every article is scored")
            .unwrap()
            .unwrap();
        let s: SentimentScore = decode(d.payload()).unwrap();
        assert!(
            seen.insert(s.article_id.clone()),
            "score of {} delivered twice",
            s.article_id
        );
        d.ack().await.unwrap();
    }
    // Nothing more: re-scored articles were dropped as duplicates by the bus.
    assert!(tokio::time::timeout(Duration::from_secs(3), scores.next())
        .await
        .is_err());
    bus.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(20), second).await;
}

/// A score the bus refuses (over NATS's 1 MiB max payload: its article's id is 1.1 MB; the
/// articles come from the in-process bus, which takes them) is retried by redelivery of its
/// article, then dead-lettered after `max_attempts` with its original bytes bounded; its batch-mates
/// are scored at once and the worker goes on. (Before, the whole batch was nacked every time,
/// forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_the_bus_refuses_is_dead_lettered_and_its_batch_mates_are_scored() {
    let input = dyn_bus(inproc_bus(1, 1024));
    let (nats, _guard) = nats_bus(1).await;
    let output = dyn_bus(nats);
    let mut scores = output
        .subscribe(SubscribeOptions::new("scores", topics::SENTIMENT_SCORES))
        .await
        .unwrap();
    let mut dlq = output
        .subscribe(SubscribeOptions::new("dlq", "dlq.>"))
        .await
        .unwrap();
    let mut cfg = StageConfig::new("sentiment", topics::ALL_ARTICLES);
    cfg.max_attempts = 3;
    cfg.retry_delay = Duration::from_millis(100);
    let sub = subscribe_stage(&*input, &cfg).await.unwrap();
    let mut arts = articles(6);
    arts[2].article_id = "x".repeat(1_100_000);
    let big = encode(&arts[2]).unwrap();
    let events: Vec<_> = arts
        .iter()
        .cloned()
        .map(auroraq_schemas::AnyEvent::Article)
        .collect();
    publish_events(&*input, &events).await.unwrap();
    let metrics = Arc::new(StageMetrics::default());
    let worker = tokio::spawn(run_worker_on(
        output.clone(),
        cfg,
        sub,
        classifier(),
        AliasTable::default(),
        BatchConfig {
            max_batch_size: 8,
            max_batch_tokens: 1024,
            ..BatchConfig::default()
        },
        metrics.clone(),
    ));

    let mut scored = HashSet::new();
    while scored.len() < 5 {
        let d = tokio::time::timeout(Duration::from_secs(60), scores.next())
            .await
            .expect("the refused score's batch-mates are scored")
            .unwrap()
            .unwrap();
        let s: SentimentScore = decode(d.payload()).unwrap();
        assert!(scored.insert(s.article_id), "a score seen twice");
        d.ack().await.unwrap();
    }
    let expected: HashSet<String> = [0, 1, 3, 4, 5].iter().map(|i| format!("a{i}")).collect();
    assert_eq!(scored, expected);

    let d = tokio::time::timeout(Duration::from_secs(60), dlq.next())
        .await
        .expect("the refused score's article is dead-lettered (it was retried forever)")
        .unwrap()
        .unwrap();
    let dl: DeadLetter = decode(d.payload()).unwrap();
    d.ack().await.unwrap();
    assert_eq!(dl.reason, "publish_error");
    assert_eq!(dl.attempts, 3);
    assert!(dl.error.contains("failed 3 times"), "{}", dl.error);
    assert!(
        dl.original_bytes.len() < big.len(),
        "the dead letter's copy is bounded"
    );
    assert!(
        big.starts_with(&dl.original_bytes),
        "it keeps the original's head"
    );
    for _ in 0..100 {
        if metrics.snapshot().dead_letters == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = metrics.snapshot();
    assert_eq!((s.processed, s.dead_letters, s.dropped), (5, 1, 0), "{s:?}");
    assert_eq!((s.redelivered, s.retried), (2, 2), "{s:?}");
    input.close().await;
    output.close().await;
    let stats = tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker ends once its bus closes")
        .unwrap()
        .expect("the worker ends cleanly");
    assert_eq!(stats.received, 8, "{stats:?}");
}
