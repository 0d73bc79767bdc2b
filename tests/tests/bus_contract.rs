//! The bus contract, run against every bus: the in-process bus, NATS JetStream (the real
//! server at 127.0.0.1:4222, one isolated stream per test) and Kafka (the real Kafka-protocol
//! broker at 127.0.0.1:19092 that `scripts/services.sh` starts, tansu here; one isolated topic
//! and group root per test).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use auroraq_bus::{Bus, BusError, Delivery, OutMessage, SubscribeOptions, Subscription};
use auroraq_schemas::{decode, encode, samples, AnyEvent, Article, DeadLetter, EventKind, Meta};
use auroraq_stage::{run_subscription, subscribe_stage, Handler, HandlerError, StageConfig, StageMetrics};
use auroraq_tests::*;
use bytes::Bytes;

fn msg(topic: &str, key: &str, id: &str, body: &str) -> OutMessage {
    OutMessage::new(topic, Some(key.to_owned()), id, Bytes::from(body.to_owned()))
}

async fn recv(sub: &mut Box<dyn Subscription>, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, sub.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("delivery error: {e}"),
        Ok(None) | Err(_) => None,
    }
}

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(1500);

async fn per_key_order(bus: Arc<dyn Bus>) {
    let keys = ["BTC", "ETH", "SOL", "AAPL", "MSFT", "SPX"];
    let per_key = 60;
    let mut single = bus
        .subscribe(SubscribeOptions::new("order1", "contract.>"))
        .await
        .unwrap();
    let mut m0 = bus
        .subscribe(SubscribeOptions::new("order2", "contract.>").member(0, 2))
        .await
        .unwrap();
    let mut m1 = bus
        .subscribe(SubscribeOptions::new("order2", "contract.>").member(1, 2))
        .await
        .unwrap();

    let mut all = Vec::new();
    for seq in 0..per_key {
        for k in keys {
            all.push(msg(
                &format!("contract.t{}", seq % 3),
                k,
                &format!("{k}-{seq}"),
                &format!("{k}:{seq}"),
            ));
        }
    }
    for chunk in all.chunks(50) {
        bus.publish(chunk.to_vec()).await.unwrap();
    }
    let total = keys.len() * per_key;

    // One member gets everything, each key in publish order.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for _ in 0..total {
        let d = recv(&mut single, WAIT).await.expect("all messages arrive");
        let body = String::from_utf8(d.payload().to_vec()).unwrap();
        let (k, s) = body.split_once(':').unwrap();
        let s: i64 = s.parse().unwrap();
        assert_eq!(d.key(), Some(k));
        let prev = last.insert(k.to_owned(), s).unwrap_or(-1);
        assert_eq!(s, prev + 1, "key {k}: got {s} after {prev}");
        d.ack().await.unwrap();
    }

    // Two members split the partitions: each key goes to exactly one member, in order.
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut got = 0;
    while got < total {
        let (d, who) = tokio::select! {
            d = recv(&mut m0, WAIT) => (d, 0),
            d = recv(&mut m1, WAIT) => (d, 1),
        };
        let d = d.expect("all messages arrive at one of the members");
        let body = String::from_utf8(d.payload().to_vec()).unwrap();
        let (k, s) = body.split_once(':').unwrap();
        let s: i64 = s.parse().unwrap();
        assert_eq!(
            *owner.entry(k.to_owned()).or_insert(who),
            who,
            "key {k} went to both members"
        );
        let prev = last.insert(k.to_owned(), s).unwrap_or(-1);
        assert_eq!(s, prev + 1, "key {k}: got {s} after {prev}");
        d.ack().await.unwrap();
        got += 1;
    }
    assert!(
        recv(&mut m0, QUIET).await.is_none() && recv(&mut m1, QUIET).await.is_none(),
        "nothing extra"
    );
}

async fn redelivery_when_consumer_dies(bus: Arc<dyn Bus>) {
    let opts = SubscribeOptions::new("dies", "contract.dies").ack_wait(Duration::from_secs(1));
    let mut a = bus.subscribe(opts.clone()).await.unwrap();
    let batch: Vec<_> = (0..10)
        .map(|i| msg("contract.dies", "k", &format!("d{i}"), &format!("{i}")))
        .collect();
    bus.publish(batch).await.unwrap();
    let mut unacked = HashSet::new();
    for i in 0..10 {
        let d = recv(&mut a, WAIT).await.expect("first delivery");
        assert_eq!(d.attempt, 1);
        if i < 4 {
            d.ack().await.unwrap();
        } else {
            unacked.insert(d.id().to_owned());
            // The consumer dies: no ack, no nack ever reaches the bus.
            std::mem::forget(d);
        }
    }
    drop(a);

    let mut b = bus.subscribe(opts).await.unwrap();
    let mut again = HashSet::new();
    while again.len() < unacked.len() {
        let d = recv(&mut b, WAIT)
            .await
            .expect("unacked messages are redelivered");
        assert!(d.attempt >= 2, "redelivery counts attempts, got {}", d.attempt);
        assert!(unacked.contains(d.id()), "acked message {} came back", d.id());
        again.insert(d.id().to_owned());
        d.ack().await.unwrap();
    }
    assert!(
        recv(&mut b, QUIET).await.is_none(),
        "acked messages never come back"
    );
}

async fn nack_redelivers(bus: Arc<dyn Bus>) {
    let mut s = bus
        .subscribe(SubscribeOptions::new("nack", "contract.nack"))
        .await
        .unwrap();
    bus.publish(vec![msg("contract.nack", "k", "n1", "x")])
        .await
        .unwrap();
    let d = recv(&mut s, WAIT).await.unwrap();
    assert_eq!(d.attempt, 1);
    d.nack(None).await.unwrap();
    let d = recv(&mut s, WAIT).await.expect("nacked message is redelivered");
    assert_eq!((d.id(), d.attempt), ("n1", 2));
    d.ack().await.unwrap();
    assert!(recv(&mut s, QUIET).await.is_none());
}

async fn deduplicates_republished_ids(bus: Arc<dyn Bus>) {
    let mut s = bus
        .subscribe(SubscribeOptions::new("dedup", "contract.dedup"))
        .await
        .unwrap();
    let batch: Vec<_> = (0..20)
        .map(|i| msg("contract.dedup", "k", &format!("x{i}"), "v"))
        .collect();
    let first = bus.publish(batch.clone()).await.unwrap();
    assert_eq!((first.stored, first.duplicates), (20, 0));
    let second = bus.publish(batch).await.unwrap();
    assert_eq!((second.stored, second.duplicates), (0, 20));
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let d = recv(&mut s, WAIT).await.unwrap();
        assert!(ids.insert(d.id().to_owned()), "duplicate delivery of {}", d.id());
        d.ack().await.unwrap();
    }
    assert!(
        recv(&mut s, QUIET).await.is_none(),
        "re-published ids are not delivered again"
    );
}

async fn bounded_in_flight(bus: Arc<dyn Bus>) {
    let mut s = bus
        .subscribe(SubscribeOptions::new("slow", "contract.slow").max_in_flight(8))
        .await
        .unwrap();
    let batch: Vec<_> = (0..100)
        .map(|i| msg("contract.slow", &format!("k{}", i % 5), &format!("s{i}"), "v"))
        .collect();
    bus.publish(batch).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(recv(&mut s, WAIT).await.expect("up to max_in_flight arrive"));
    }
    assert!(
        recv(&mut s, QUIET).await.is_none(),
        "a slow consumer never holds more than max_in_flight"
    );
    held.pop().unwrap().ack().await.unwrap();
    held.push(recv(&mut s, WAIT).await.expect("an ack frees one slot"));
    let mut total = held.len() + 1; // plus the one acked above
    for d in held {
        d.ack().await.unwrap();
    }
    while total < 100 {
        recv(&mut s, WAIT)
            .await
            .expect("the rest arrives")
            .ack()
            .await
            .unwrap();
        total += 1;
    }
}

async fn rejects_bad_topics_and_subscriptions(bus: Arc<dyn Bus>) {
    for bad in ["", "Upper.case", "a..b", "wild.*", "x.>"] {
        let r = bus.publish(vec![msg(bad, "k", "id", "v")]).await;
        assert!(matches!(r, Err(BusError::InvalidTopic(_))), "{bad:?}: {r:?}");
    }
    for (group, filter, member, members) in [
        ("g x", "a", 0, 1),
        ("g", "a.>.b", 0, 1),
        ("g", "a", 2, 2),
        ("g", "a", 0, 0),
    ] {
        let r = bus
            .subscribe(SubscribeOptions::new(group, filter).member(member, members))
            .await;
        assert!(
            matches!(r, Err(BusError::InvalidSubscription(_))),
            "{group}/{filter}"
        );
    }
}

/// Counts articles; fails on cue by title.
struct ArticleCounter(Arc<std::sync::atomic::AtomicU64>);

#[async_trait]
impl Handler<Article> for ArticleCounter {
    async fn handle(&mut self, a: Article) -> Result<Vec<AnyEvent>, HandlerError> {
        match a.title.as_deref() {
            Some("flaky") => Err(HandlerError::Transient("the database is away".into())),
            Some("poison") => Err(HandlerError::Permanent("article names no asset".into())),
            _ => {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(vec![])
            }
        }
    }
}

fn article(id: &str, title: &str) -> Article {
    let AnyEvent::Article(mut a) = samples::all()
        .into_iter()
        .find(|e| matches!(e, AnyEvent::Article(_)))
        .unwrap()
    else {
        unreachable!()
    };
    a.meta = Meta::raw(EventKind::Article, "feedly", id, 1, 2);
    a.article_id = id.to_owned();
    a.title = Some(title.to_owned());
    a
}

async fn dead_letters(bus: Arc<dyn Bus>) {
    let mut dlq = bus
        .subscribe(SubscribeOptions::new("dlqwatch", "dlq.>"))
        .await
        .unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let metrics = Arc::new(StageMetrics::default());
    let mut cfg = StageConfig::new("deadtest", "news.articles.>");
    cfg.max_attempts = 3;
    cfg.retry_delay = Duration::from_millis(20);
    // Join the stage's group before publishing, as a deployment would: once `subscribe_stage`
    // returns the group exists and keeps everything published after (the in-process bus keeps
    // messages only for existing groups), however late the stage task gets to run.
    let sub = subscribe_stage(&*bus, &cfg).await.unwrap();
    let stage = tokio::spawn(run_subscription(
        bus.clone(),
        cfg,
        sub,
        ArticleCounter(counter.clone()),
        metrics.clone(),
    ));

    let good = encode(&article("a1", "fine")).unwrap();
    let truncated = good[..good.len() / 2].to_vec();
    let wrong_kind = encode(&samples::trade(1)).unwrap();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not avro at all".to_vec()),
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("wrongkind", wrong_kind),
    ];
    let mut batch: Vec<OutMessage> = bad
        .iter()
        .map(|(id, b)| OutMessage::new("news.articles.test", None, *id, Bytes::from(b.clone())))
        .collect();
    batch.push(OutMessage::new(
        "news.articles.test",
        None,
        "good",
        Bytes::from(good),
    ));
    for (id, title) in [("flaky", "flaky"), ("poison", "poison")] {
        batch.push(OutMessage::new(
            "news.articles.test",
            None,
            id,
            Bytes::from(encode(&article(id, title)).unwrap()),
        ));
    }
    bus.publish(batch).await.unwrap();

    let mut letters: BTreeMap<String, DeadLetter> = BTreeMap::new();
    while letters.len() < bad.len() + 2 {
        let d = recv(&mut dlq, WAIT)
            .await
            .expect("a dead letter for each bad message");
        assert_eq!(d.topic(), "dlq.deadtest");
        let dl: DeadLetter = decode(d.payload()).expect("dead letters are valid events");
        letters.insert(dl.original_id.clone().unwrap_or_default(), dl);
        d.ack().await.unwrap();
    }
    for (id, bytes) in &bad {
        let dl = &letters[*id];
        assert_eq!(dl.reason, "decode_error", "{id}: {}", dl.error);
        assert!(!dl.error.is_empty());
        assert_eq!(&dl.original_bytes, bytes, "original bytes kept whole");
        assert_eq!(dl.original_topic, "news.articles.test");
        assert_eq!(dl.stage, "deadtest");
    }
    assert_eq!(letters["flaky"].reason, "max_attempts");
    assert_eq!(letters["flaky"].attempts, 3);
    assert_eq!(letters["poison"].reason, "handler_error");
    assert!(letters["poison"].error.contains("names no asset"));

    bus.close().await;
    let stats = tokio::time::timeout(WAIT, stage)
        .await
        .expect("stage drains and stops")
        .unwrap()
        .unwrap();
    assert_eq!(
        counter.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the good article was processed"
    );
    assert_eq!(stats.dead_letters, 6);
    assert_eq!(stats.dead_letter_reasons["decode_error"], 4);
    assert_eq!(stats.retried, 2, "two retries before the third attempt gave up");
    assert_eq!(stats.processed, 1);
}

/// Watermarks (`auroraq_stage::watermark`) on this bus: one per partition, each delivered behind
/// the data published before it on its partition, and a merged reader hands out events of two
/// keys (two partitions) in event-time order, then the end.
async fn watermarks_ride_their_partitions(bus: Arc<dyn Bus>) {
    use auroraq_schemas::{is_watermark, Watermark};
    use auroraq_stage::merge::MergeConfig;
    use auroraq_stage::watermark::{publish_watermark, subscribe_inputs, EventTimeReader, Next};
    let n = bus.partitions();
    let cfg = StageConfig::new("wmc", "");
    let subs = subscribe_inputs(&*bus, &cfg, &["contract.>".to_owned()])
        .await
        .unwrap();
    let mut raw = bus
        .subscribe(SubscribeOptions::new("wmraw", "contract.>"))
        .await
        .unwrap();
    let trade = |symbol: &str, seq: u64| {
        let mut t = samples::trade(seq);
        t.symbol = symbol.into();
        t.meta.event_id = format!("{symbol}-{seq}");
        let ev = AnyEvent::TradeTick(t);
        let mut m = auroraq_stage::to_message(&ev).unwrap();
        m.topic = "contract.trades".into();
        m.key = Some(symbol.into());
        m
    };
    // Each key in time order (as a producer sends it); across keys, not.
    bus.publish(vec![
        trade("BTC", 10),
        trade("BTC", 30),
        trade("ETH", 20),
        trade("ETH", 40),
    ])
    .await
    .unwrap();
    let t40 = auroraq_stage::available_at(&AnyEvent::TradeTick(samples::trade(40)));
    publish_watermark(&*bus, &["contract.trades".to_owned()], t40, "wmc-producer")
        .await
        .unwrap();

    // Raw: a watermark per partition, each behind that partition's data.
    let mut data_after_mark = 0;
    let mut marks: BTreeMap<u32, Watermark> = BTreeMap::new();
    let mut data = 0;
    while marks.len() < n as usize || data < 4 {
        let d = recv(&mut raw, WAIT).await.expect("data and watermarks");
        if is_watermark(d.payload()) {
            let w = Watermark::decode(d.payload()).unwrap();
            assert_eq!(
                w.partition as u32, d.partition,
                "a watermark rides its own partition"
            );
            assert!(
                marks.insert(d.partition, w).is_none(),
                "one watermark per partition"
            );
        } else {
            data += 1;
            if marks.contains_key(&d.partition) {
                data_after_mark += 1;
            }
        }
        d.ack().await.unwrap();
    }
    assert_eq!(data_after_mark, 0, "data came after its partition's watermark");
    assert!(marks
        .values()
        .all(|w| w.watermark == t40 && w.producer == "wmc-producer"));

    // Merged: in event-time order across the partitions, then the end.
    let mut reader = EventTimeReader::new(
        bus.clone(),
        &cfg,
        subs,
        Vec::new(),
        Vec::new(),
        MergeConfig::default(),
        Arc::new(StageMetrics::default()),
    );
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(WAIT, reader.next())
            .await
            .expect("in time")
            .unwrap()
        {
            Next::Event(h) => {
                seen.push(h.event.meta().event_id.clone());
                h.delivery.ack().await.unwrap();
            }
            Next::Idle => {}
            Next::End => panic!("ended early"),
        }
    }
    assert_eq!(seen, ["BTC-10", "ETH-20", "BTC-30", "ETH-40"]);
    publish_watermark(
        &*bus,
        &["contract.trades".to_owned()],
        Watermark::END,
        "wmc-producer",
    )
    .await
    .unwrap();
    loop {
        match tokio::time::timeout(WAIT, reader.next())
            .await
            .expect("the end in time")
            .unwrap()
        {
            Next::End => break,
            Next::Idle => {}
            Next::Event(h) => panic!("an event after the end: {}", h.event.meta().event_id),
        }
    }
}

macro_rules! contract {
    ($bus:ident, $make:expr) => {
        mod $bus {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_key_order() {
                let (bus, _g) = $make;
                super::per_key_order(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redelivery_when_consumer_dies() {
                let (bus, _g) = $make;
                super::redelivery_when_consumer_dies(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nack_redelivers() {
                let (bus, _g) = $make;
                super::nack_redelivers(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deduplicates_republished_ids() {
                let (bus, _g) = $make;
                super::deduplicates_republished_ids(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bounded_in_flight() {
                let (bus, _g) = $make;
                super::bounded_in_flight(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rejects_bad_topics_and_subscriptions() {
                let (bus, _g) = $make;
                super::rejects_bad_topics_and_subscriptions(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watermarks_ride_their_partitions() {
                let (bus, _g) = $make;
                super::watermarks_ride_their_partitions(bus).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letters() {
                let (bus, _g) = $make;
                super::dead_letters(bus).await;
            }
        }
    };
}

contract!(inproc, (dyn_bus(inproc_bus(4, 1024)), ()));
contract!(nats, {
    let (b, g) = nats_bus(4).await;
    (dyn_bus(b), g)
});
contract!(kafka, {
    let (b, g) = kafka_bus(4).await;
    (dyn_bus(b), g)
});
