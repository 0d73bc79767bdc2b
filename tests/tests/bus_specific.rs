//! What only one bus can show: the in-process bus pushing back on a producer, JetStream
//! surviving a server restart, and the history reads and consumer lag of JetStream and Kafka.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::{Bus, BusError, HistoryOptions, NatsBus, OutMessage, SubscribeOptions};
use auroraq_tests::*;
use bytes::Bytes;

fn msg(i: usize) -> OutMessage {
    OutMessage::new(
        "contract.bp",
        Some(format!("k{}", i % 3)),
        format!("m{i}"),
        Bytes::from(vec![7u8; 200]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_slow_consumer_slows_the_producer() {
    let capacity = 32;
    let bus = inproc_bus(1, capacity);
    let mut sub = bus
        .subscribe(SubscribeOptions::new("slow", "contract.>").max_in_flight(4))
        .await
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let bus = bus.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..500 {
                bus.publish(vec![msg(i)]).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The consumer takes nothing, so the queue fills; once it is full (500 messages do not fit
    // in 32) the producer can only be waiting, however slowly it got there.
    wait_until("the queue fills up", Duration::from_secs(30), || {
        bus.group_depth("slow", "contract.>") >= capacity && sent.load(Ordering::SeqCst) >= capacity
    })
    .await;
    assert!(
        !producer.is_finished(),
        "the producer must wait while the consumer is stalled"
    );
    assert_eq!(
        sent.load(Ordering::SeqCst),
        capacity,
        "no publish returns while the queue is full"
    );
    let depth = bus.group_depth("slow", "contract.>");
    assert!(
        depth <= capacity,
        "queued + unacked {depth} exceeds the bound {capacity}"
    );
    assert_eq!(depth, capacity, "the queue fills up to its bound");

    let mut seen = HashSet::new();
    while seen.len() < 500 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.insert(d.id().to_owned());
        d.ack().await.unwrap();
        assert!(bus.group_depth("slow", "contract.>") <= capacity);
    }
    tokio::time::timeout(Duration::from_secs(10), producer)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_close_drains_then_ends() {
    let bus = inproc_bus(2, 64);
    let mut sub = bus
        .subscribe(SubscribeOptions::new("drain", "contract.>"))
        .await
        .unwrap();
    bus.publish((0..10).map(msg).collect()).await.unwrap();
    bus.close().await;
    assert!(bus.publish(vec![msg(99)]).await.is_err(), "no intake after close");
    let mut n = 0;
    while let Some(d) = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
    {
        d.unwrap().ack().await.unwrap();
        n += 1;
    }
    assert_eq!(n, 10, "what was queued before close is still delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_keeps_acked_state_across_a_server_restart() {
    let mut server = PrivateNats::start();
    let mut cfg = isolated_nats_config(&server.url(), 2);
    cfg.connect_timeout = Duration::from_secs(2);
    let bus = NatsBus::connect(cfg).await.unwrap();
    let opts = SubscribeOptions::new("restart", "contract.>").ack_wait(Duration::from_secs(2));
    let mut sub = bus.subscribe(opts).await.unwrap();

    bus.publish((0..40).map(msg).collect()).await.unwrap();
    let mut acked = HashSet::new();
    for _ in 0..20 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        acked.insert(d.id().to_owned());
        d.ack().await.unwrap();
    }
    bus.flush().await.unwrap();
    // The server has applied the 20 acks when the group has exactly the other 20 left to settle
    // (not yet delivered, or delivered and unacked): only then is the restart a test of them.
    wait_until_async("the server applied the acks", Duration::from_secs(30), || async {
        bus.backlogs()
            .await
            .ok()
            .and_then(|b| b.get("restart").map(|g| g.pending + g.unacked))
            == Some(20)
    })
    .await;

    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();

    // Publishing resumes once the client has reconnected.
    let mut published = false;
    for _ in 0..100 {
        if bus.publish((40..60).map(msg).collect()).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(published, "publish works again after the restart");

    // The same subscription goes on: every message not acked before the restart arrives, and
    // none that was acked.
    let mut rest = HashSet::new();
    while rest.len() < 40 {
        let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("deliveries resume after the restart")
            .unwrap()
            .unwrap();
        assert!(
            !acked.contains(d.id()),
            "{} was acked before the restart but came back",
            d.id()
        );
        rest.insert(d.id().to_owned());
        d.ack().await.unwrap();
    }
    let expected: HashSet<String> = (0..60)
        .map(|i| format!("m{i}"))
        .filter(|id| !acked.contains(id))
        .collect();
    assert_eq!(rest, expected);
    bus.close().await;
}

/// Reads every stored message of a filter (acks nothing).
/// Batches larger than async-nats' limit of publish acks in flight (5,000), and several of them at
/// once: every message is stored. (Before, a batch sent whole and then awaited blocked forever on
/// the 5,001st send: the ack permits are freed only by awaiting the acks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publishes_batches_larger_than_the_ack_limit_concurrently() {
    let (bus, _guard) = nats_bus(2).await;
    let batch = |from: usize, n: usize| (from..from + n).map(msg).collect::<Vec<_>>();
    let one = tokio::time::timeout(Duration::from_secs(60), bus.publish(batch(0, 12_000)))
        .await
        .expect("a batch of 12,000 is published (it hung)")
        .unwrap();
    assert_eq!((one.stored, one.duplicates), (12_000, 0));
    let (a, b, c) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            bus.publish(batch(12_000, 8_000)),
            bus.publish(batch(20_000, 8_000)),
            bus.publish(batch(0, 3_000)),
        )
    })
    .await
    .expect("three batches at once are published (they hung)");
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!((a.stored, b.stored), (8_000, 8_000));
    assert_eq!(
        (c.stored, c.duplicates),
        (0, 3_000),
        "re-published ids are dropped"
    );
}

async fn read_history(bus: &dyn Bus, opts: HistoryOptions) -> Vec<auroraq_bus::Stored> {
    let mut h = bus.history(opts).await.unwrap();
    let total = h.total();
    let mut out = Vec::new();
    while let Some(s) = tokio::time::timeout(Duration::from_secs(10), h.next())
        .await
        .expect("a history read ends by itself")
    {
        out.push(s.unwrap());
    }
    assert!(out.len() as u64 <= total, "{} read, {total} announced", out.len());
    out
}

/// What a history read gives on a networked bus: every message once in publish order across
/// partitions, bounded by start and end times, ending at what was stored when it began, and an
/// empty read (not a hang) when nothing is in range.
async fn history_reads_from_a_start_time_and_ends(bus: &dyn Bus) {
    bus.publish((0..30).map(msg).collect()).await.unwrap();
    // Other topics are not read.
    bus.publish(vec![OutMessage::new(
        "other.topic",
        None,
        "o1",
        Bytes::from_static(b"x"),
    )])
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.publish((30..50).map(msg).collect()).await.unwrap();

    let all = read_history(bus, HistoryOptions::new("contract.>")).await;
    let ids: Vec<String> = all.iter().map(|s| s.message.id.clone()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(
        ids, expected,
        "every message once, in publish order across partitions"
    );
    assert!(all
        .windows(2)
        .all(|w| w[0].sequence < w[1].sequence && w[0].stored_at <= w[1].stored_at));
    assert_eq!(all[7].message.key.as_deref(), Some("k1"));
    assert_eq!(all[7].message.topic, "contract.bp");

    let mut since = HistoryOptions::new("contract.>");
    since.since = Some(cut);
    let later = read_history(bus, since).await;
    assert_eq!(later.first().map(|s| s.message.id.as_str()), Some("m30"));
    assert_eq!(later.len(), 20);

    let mut until = HistoryOptions::new("contract.>");
    until.until = Some(cut);
    assert_eq!(read_history(bus, until).await.len(), 30);

    // A read ends at the end of what was stored when it began, whatever comes after.
    let mut h = bus.history(HistoryOptions::new("contract.>")).await.unwrap();
    bus.publish((50..60).map(msg).collect()).await.unwrap();
    let mut n = 0;
    while let Some(s) = tokio::time::timeout(Duration::from_secs(10), h.next())
        .await
        .unwrap()
    {
        s.unwrap();
        n += 1;
    }
    assert_eq!(n, 50);

    // Nothing in range: an empty read, not a hang.
    let mut none = HistoryOptions::new("contract.>");
    none.since = Some(cut + 3_600_000_000);
    assert!(read_history(bus, none).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_history_reads_from_a_start_time_and_ends() {
    let (bus, _guard) = nats_bus(4).await;
    history_reads_from_a_start_time_and_ends(&*bus).await;

    // The in-process bus keeps no history, and says so.
    let inproc = inproc_bus(2, 64);
    match inproc.history(HistoryOptions::new("contract.>")).await {
        Err(BusError::Unsupported(why)) => assert!(why.contains("keeps no history"), "{why}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the in-process bus has no history"),
    }
}

/// A Kafka bus whose producer sends one record per batch: tansu (0.6), the test broker, answers
/// ListOffsets (latest) with the last batch's base offset + 1 instead of the log end offset, so
/// lag and history totals come out short by the size of the last batch less one on it. With one
/// record per batch the two agree; Apache Kafka and Redpanda need no such setting.
async fn kafka_bus_exact_offsets(partitions: u32) -> (Arc<auroraq_bus::KafkaBus>, KafkaGuard) {
    let mut cfg = isolated_kafka_config(&kafka_url(), partitions);
    cfg.client.push(("batch.num.messages".into(), "1".into()));
    kafka_bus_with(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_history_reads_from_a_start_time_and_ends() {
    let (bus, _guard) = kafka_bus_exact_offsets(4).await;
    history_reads_from_a_start_time_and_ends(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backlogs_are_the_lag_of_each_group() {
    // One partition, so that deliveries come in publish order.
    let (bus, _guard) = kafka_bus_exact_offsets(1).await;
    let mut sub = bus
        .subscribe(SubscribeOptions::new("lag", "contract.>"))
        .await
        .unwrap();
    bus.publish((0..20).map(msg).collect()).await.unwrap();
    let mut held = Vec::new();
    for i in 0..10 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if i < 5 {
            d.ack().await.unwrap();
        } else {
            held.push(d);
        }
    }
    bus.flush().await.unwrap();
    // 0..5 acked: the lag is the 5 held and the 10 not delivered. (Apache Kafka keeps the
    // commit's metadata, which splits it into 5 unacked and 10 pending; tansu drops it, so there
    // all 15 count as pending.)
    wait_until_async("the group's lag shows", Duration::from_secs(30), || async {
        bus.backlogs()
            .await
            .ok()
            .and_then(|b| b.get("lag").map(|g| g.pending + g.unacked))
            == Some(15)
    })
    .await;
    let parts = bus.partition_backlogs().await.unwrap();
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!((parts[0].group.as_str(), parts[0].partition), ("lag", 0));
    for d in held {
        d.ack().await.unwrap();
    }
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        d.unwrap().ack().await.unwrap();
    }
    bus.flush().await.unwrap();
    wait_until_async("the group has caught up", Duration::from_secs(30), || async {
        bus.backlogs().await.ok().and_then(|b| b.get("lag").copied()) == Some(auroraq_bus::Backlog::default())
    })
    .await;
}

/// Records written by earlier builds of the Kafka bus, with topic, id and publish time in
/// headers (the three `aq-topic`, `aq-id`, `aq-ts`, then the one `aq`) instead of the value's
/// frame, are still read: delivered with their topic and id, and their ids are the same ids to
/// the de-duplication as those of the framed records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_reads_records_of_the_header_formats() {
    use auroraq_bus::kafka::{ID_HEADER, META_HEADER, TIME_HEADER, TOPIC_HEADER};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let (bus, _guard) = kafka_bus(1).await;
    // Subscribing creates the family's Kafka topic.
    let mut sub = bus
        .subscribe(SubscribeOptions::new("legacy", "contract.>"))
        .await
        .unwrap();
    let producer: FutureProducer = bus.config().producer_config().create().unwrap();
    let ktopic = format!("{}.contract", bus.config().root);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        .to_string();
    for i in 0..3 {
        let id = format!("old{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: TOPIC_HEADER,
                value: Some("contract.legacy"),
            })
            .insert(Header {
                key: ID_HEADER,
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: TIME_HEADER,
                value: Some(now_us.as_str()),
            });
        let payload = vec![i as u8; 16];
        let record = FutureRecord::to(&ktopic)
            .key("k0")
            .payload(&payload)
            .partition(0)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    // The one-header form, whose payload starts with an Avro single-object marker as events do.
    let meta = format!("{now_us} contract.legacy old3");
    let record = FutureRecord::to(&ktopic)
        .key("k0")
        .payload(&b"\xC3\x01one"[..])
        .partition(0)
        .headers(OwnedHeaders::new().insert(Header {
            key: META_HEADER,
            value: Some(meta.as_str()),
        }));
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    // Through the bus (the frame): a new id, and old1 again (a re-publish the member drops).
    bus.publish(vec![
        OutMessage::new(
            "contract.new",
            Some("k0".into()),
            "new0",
            Bytes::from_static(b"n"),
        ),
        OutMessage::new(
            "contract.legacy",
            Some("k0".into()),
            "old1",
            Bytes::from_static(b"x"),
        ),
    ])
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(d)) => {
                let d = d.unwrap();
                got.push((d.topic().to_owned(), d.id().to_owned(), d.payload().to_vec()));
                d.ack().await.unwrap();
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        got,
        vec![
            ("contract.legacy".to_owned(), "old0".to_owned(), vec![0u8; 16]),
            ("contract.legacy".to_owned(), "old1".to_owned(), vec![1u8; 16]),
            ("contract.legacy".to_owned(), "old2".to_owned(), vec![2u8; 16]),
            (
                "contract.legacy".to_owned(),
                "old3".to_owned(),
                b"\xC3\x01one".to_vec()
            ),
            ("contract.new".to_owned(), "new0".to_owned(), b"n".to_vec()),
        ],
        "the four old records and the new one"
    );
    // The re-published old1 comes right after new0 in the one partition: it would be here by now.
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        let d = d.unwrap();
        panic!("the re-published {} was delivered again", d.id());
    }
}

/// What the bus writes, as a consumer outside AuroraQ reads it off the broker: the record's key
/// is the partition key, its value the documented frame (magic, publish time, topic, id) and
/// then the payload unchanged, and it carries no headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_carry_the_documented_frame() {
    use auroraq_bus::kafka_record;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let (bus, _guard) = kafka_bus(1).await;
    let before_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    // An id longer than the frame holds: the batch is refused before any of it is sent.
    let err = bus
        .publish(vec![
            OutMessage::new(
                "contract.layout.x",
                Some("BTCUSDT".into()),
                "refused-with-its-batch",
                Bytes::from_static(b"x"),
            ),
            OutMessage::new("contract.layout.x", None, "i".repeat(70_000), Bytes::new()),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 65,535"), "{err}");
    let payload = Bytes::from_static(b"\xC3\x01\x00 the event");
    bus.publish(vec![OutMessage::new(
        "contract.layout.x",
        Some("BTCUSDT".into()),
        "evt-1",
        payload.clone(),
    )])
    .await
    .unwrap();
    let consumer: StreamConsumer = bus
        .config()
        .consumer_config(&format!("{}.foreign", bus.config().root))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let ktopic = format!("{}.contract", bus.config().root);
    tpl.add_partition_offset(&ktopic, 0, Offset::Offset(0)).unwrap();
    consumer.assign(&tpl).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
        .await
        .expect("a record within 20 s")
        .unwrap();
    assert_eq!(m.key(), Some(&b"BTCUSDT"[..]));
    assert!(m.headers().is_none(), "no headers");
    let value = m.payload().unwrap();
    assert_eq!(&value[..4], &kafka_record::MAGIC);
    let f = kafka_record::read(value).expect("a frame");
    // The first record of the partition: nothing of the refused batch was sent.
    assert_eq!(
        (f.topic, f.id, f.payload),
        ("contract.layout.x", "evt-1", &payload[..])
    );
    assert_eq!(
        &value[16 + f.topic.len() + f.id.len()..],
        &payload[..],
        "the payload after 16 + topic + id bytes"
    );
    let after_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        (before_us..=after_us).contains(&f.published_us),
        "publish time {} within [{before_us}, {after_us}]",
        f.published_us
    );
    // The record's own timestamp is the publish time in milliseconds.
    assert_eq!(m.timestamp().to_millis(), Some(f.published_us / 1000));
    drop(m);
    consumer.unassign().unwrap();
    tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
}

/// Another process (here: a second bus with clients of its own) resumes a group where the first
/// left it: everything not acked comes again, nothing acked does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_resumes_in_another_process_at_the_committed_offsets() {
    let cfg = isolated_kafka_config(&kafka_url(), 1);
    let (first, _guard) = kafka_bus_with(cfg.clone()).await;
    let opts = SubscribeOptions::new("resume", "contract.>");
    let mut sub = first.subscribe(opts.clone()).await.unwrap();
    first.publish((0..10).map(msg).collect()).await.unwrap();
    // One partition: in order. Ack 0..5 and 7; 6, 8, 9 are not acked.
    for i in 0..10 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.id(), format!("m{i}"));
        if i < 6 || i == 7 {
            d.ack().await.unwrap();
        } else {
            std::mem::forget(d);
        }
    }
    first.close().await;
    assert!(first.stopped(Duration::from_secs(15)).await);

    let second = auroraq_bus::KafkaBus::connect(cfg).await.unwrap();
    let mut sub = second.subscribe(opts).await.unwrap();
    let mut again = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        let d = d.unwrap();
        // Apache Kafka keeps the commit's metadata, so these count as attempt 2; tansu (0.6)
        // drops it (OffsetFetch answers no metadata), so there they come as attempt 1.
        assert!(d.attempt >= 1);
        again.push(d.id().to_owned());
        d.ack().await.unwrap();
    }
    // The commit covers the contiguous prefix 0..5: 7 was acked after the unacked 6, so it comes
    // again too (at-least-once), never 0..5.
    assert_eq!(again, ["m6", "m7", "m8", "m9"]);
    second.close().await;
    assert!(second.stopped(Duration::from_secs(15)).await);
}
