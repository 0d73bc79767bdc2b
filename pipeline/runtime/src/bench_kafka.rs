//! `auroraq bench bus --kafka kafka://host:port`: the Kafka bus beside bare rdkafka loops, in the
//! same run, on the same ~200-byte Avro payloads ([`crate::bench::payloads`]).
//!
//! Two paths, each measured on the bus and bare, rounds alternating bare and bus (the order
//! swapped every round) so that a noisy machine loads both alike; medians of the rounds:
//!
//! - **publish only**: the bus's `publish` in batches of `--batch` (each call returns once the
//!   broker has stored its batch), beside a bare `FutureProducer` loop with at most 4,096
//!   deliveries outstanding (the oldest awaited when the window is full), timed to the last
//!   delivery report. Both producers have exactly the bus's settings
//!   ([`KafkaConfig::producer_config`]: idempotent, `acks=all`, `linger.ms` 2, librdkafka's
//!   default batch size), the same key per message and an id header (the bus adds its topic and
//!   time headers).
//!   No consumer runs during the publish, on either side.
//! - **consume only**: then a new group reads everything; the bus's member (a delivery per
//!   message, acked, offsets committed as the bus does) beside a bare `StreamConsumer` on the
//!   same consumer settings ([`KafkaConfig::consumer_config`]) reading the partition from its
//!   start and committing once at the end. Both clocks start before the consumer takes its
//!   partition (the bus assigns partitions itself, without Kafka's group protocol, as `assign`
//!   does), so both include the first fetch. Both read on a spawned task of the runtime, as a
//!   stage's loop does.
//!
//! Topics have one partition (as the NATS bench's stream has one), created for the round and
//! deleted after it.

use serde::Serialize;

use crate::bench::Figure;

/// The Kafka figures of `bench bus`: bus over bare, per path.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaVsBare {
    /// Publish only: the bus's `publish` in batches beside rdkafka with 4,096 deliveries
    /// outstanding.
    pub publish: f64,
    /// Consume only: a group member acking each delivery beside a bare consumer loop.
    pub consume: f64,
    /// Consume only, by CPU: the bare loop's CPU time per event over the bus's (1.0: the bus
    /// costs what the bare loop does). Steadier than `consume` on cores shared with the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume_cpu: Option<f64>,
    /// Publish only, by CPU, the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_cpu: Option<f64>,
}

/// What the Kafka part of the bench measured.
#[derive(Debug, Serialize)]
pub struct KafkaBench {
    /// Bare publish, bus publish, bare consume, bus consume (medians of the rounds).
    pub figures: Vec<Figure>,
    pub kafka_vs_bare: KafkaVsBare,
}

/// Adds the Kafka figures and `kafka_vs_bare` to a bus bench.
pub async fn add_to(
    bench: &mut crate::bench::BusBench,
    url: &str,
    events: usize,
    batch: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let k = measure(url, events, batch, rounds).await?;
    bench.figures.extend(k.figures);
    bench.kafka_vs_bare = Some(k.kafka_vs_bare);
    Ok(())
}

#[cfg(not(feature = "kafka"))]
pub async fn measure(
    _url: &str,
    _events: usize,
    _batch: usize,
    _rounds: usize,
) -> anyhow::Result<KafkaBench> {
    anyhow::bail!("this build has no Kafka support (feature `kafka`)")
}

#[cfg(feature = "kafka")]
pub use with_kafka::measure;

#[cfg(feature = "kafka")]
mod with_kafka {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use auroraq_bus::{Bus, KafkaBus, KafkaConfig, OutMessage, SubscribeOptions};
    use bytes::Bytes;
    use futures::StreamExt;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::{Header, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    use super::{KafkaBench, KafkaVsBare};
    use crate::bench::{payloads, process_cpu, Figure};

    use crate::bench::{messages, KEYS};
    /// Deliveries the bare producer keeps outstanding (as the bare NATS loop keeps acks).
    const WINDOW: usize = 4096;

    struct Split {
        publish: Figure,
        consume: Figure,
    }

    fn cfg_for(url: &str, round: usize) -> KafkaConfig {
        let mut cfg = KafkaConfig::new(url);
        cfg.root = format!("benchaq{}x{round}", std::process::id());
        cfg.partitions = 1;
        cfg.retention = Duration::from_secs(600);
        cfg
    }

    /// Bare rdkafka: a one-partition topic, a producer loop with [`WINDOW`] deliveries
    /// outstanding, then a consumer reading the partition from its start.
    async fn bare(url: &str, p: &[(String, Bytes)], round: usize) -> Result<Split> {
        let cfg = cfg_for(url, round);
        let topic = format!("benchbare{}x{round}", std::process::id());
        let admin: AdminClient<DefaultClientContext> =
            cfg.client_config().create().context("bare admin client")?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let created = admin
            .create_topics(
                [&NewTopic::new(&topic, 1, TopicReplication::Fixed(-1)).set("retention.ms", "600000")],
                &opts,
            )
            .await
            .context("creating the bare topic")?;
        for r in created {
            r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
        }
        let result = bare_loops(&cfg, &topic, p).await;
        let _ = admin.delete_topics(&[&topic], &opts).await;
        let _ = admin.delete_groups(&[&format!("{topic}.bench")], &opts).await;
        result
    }

    async fn bare_loops(cfg: &KafkaConfig, topic: &str, p: &[(String, Bytes)]) -> Result<Split> {
        let producer: FutureProducer = cfg.producer_config().create().context("bare producer")?;
        let n = p.len();
        // Untimed: the first message pays the producer's start (broker connection, metadata,
        // the idempotent producer's id: about a second on tansu), as the bus's does below.
        let warm = FutureRecord::<str, [u8]>::to(topic)
            .payload(b"warm-up")
            .partition(0);
        match producer.send_result(warm) {
            Ok(f) => delivered(f).await?,
            Err((e, _)) => return Err(anyhow::anyhow!("bare warm-up: {e}")),
        }
        let (t0, c0) = (Instant::now(), process_cpu());
        let mut window = VecDeque::with_capacity(WINDOW);
        for (i, (id, b)) in p.iter().enumerate() {
            if window.len() >= WINDOW {
                if let Some(f) = window.pop_front() {
                    delivered(f).await?;
                }
            }
            let headers = OwnedHeaders::new().insert(Header {
                key: auroraq_bus::kafka::ID_HEADER,
                value: Some(id.as_str()),
            });
            let mut record = FutureRecord::to(topic)
                .key(KEYS[i % KEYS.len()])
                .payload(&b[..])
                .partition(0)
                .headers(headers);
            let f = loop {
                match producer.send_result(record) {
                    Ok(f) => break f,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(anyhow::anyhow!("bare produce: {e}")),
                }
            };
            window.push_back(f);
        }
        for f in window {
            delivered(f).await?;
        }
        let publish = Figure::new(
            &format!("rdkafka publish only (bare, window {WINDOW})"),
            n,
            t0.elapsed(),
        )
        .with_cpu_since(c0);
        drop_blocking(producer).await;

        let consumer: StreamConsumer = cfg
            .consumer_config(&format!("{topic}.bench"))
            .create()
            .context("bare consumer")?;
        let mut tpl = TopicPartitionList::new();
        // An explicit offset, as the bus assigns (a new topic starts at 0): `Offset::Beginning`
        // would add a ListOffsets round trip, about half a second here.
        tpl.add_partition_offset(topic, 0, Offset::Offset(0))?;
        let (t1, c1) = (Instant::now(), process_cpu());
        consumer.assign(&tpl)?;
        // On a task of the runtime, as a stage's loop runs (and the bus's loop below).
        let reader = tokio::spawn(async move {
            let (mut got, mut bytes, mut last) = (0usize, 0usize, -1i64);
            let mut first = None;
            {
                // One stream for the loop's life, as the bus's reader keeps one: `recv` makes a
                // stream per message (a waker registered and removed each time).
                let mut messages = consumer.stream();
                // The warm-up message first, then the n timed ones.
                while got < n + 1 {
                    let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
                        .await
                        .context("bare consumer: nothing for 30 s")?
                        .context("bare consumer: the stream ended")??;
                    first.get_or_insert_with(|| t1.elapsed());
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    last = m.offset();
                    got += 1;
                }
            }
            anyhow::Ok((consumer, got, bytes, last, first))
        });
        let (consumer, got, bytes, last, first) = reader.await.context("the bare consumer's task")??;
        tracing::info!(first_message_after = ?first, total = ?t1.elapsed(), "bare consumer: start and total");
        let mut commit = TopicPartitionList::new();
        commit.add_partition_offset(topic, 0, Offset::Offset(last + 1))?;
        consumer.commit(&commit, CommitMode::Async)?;
        let consume = Figure::new("rdkafka consume only (bare)", got - 1, t1.elapsed()).with_cpu_since(c1);
        anyhow::ensure!(bytes > 0, "bare consumer read no payload");
        consumer.unassign()?;
        drop_blocking(consumer).await;
        Ok(Split { publish, consume })
    }

    async fn delivered(f: rdkafka::producer::DeliveryFuture) -> Result<()> {
        match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(anyhow::anyhow!("bare delivery: {e}")),
            Err(_) => Err(anyhow::anyhow!("bare delivery: the producer went away")),
        }
    }

    /// librdkafka clients are destroyed off the async threads (the destroy blocks).
    async fn drop_blocking<T: Send + 'static>(t: T) {
        let _ = tokio::task::spawn_blocking(move || drop(t)).await;
    }

    /// The bus: a group that exists before the publish, `publish` in batches, then the group's
    /// member reading and acking everything.
    async fn bus(url: &str, p: &[(String, Bytes)], batch: usize, round: usize) -> Result<Split> {
        let bus = Arc::new(
            KafkaBus::connect(cfg_for(url, round))
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
        let result = bus_paths(&bus, p, batch).await;
        bus.close().await;
        bus.stopped(Duration::from_secs(15)).await;
        let _ = bus.delete_all().await;
        result
    }

    async fn bus_paths(bus: &Arc<KafkaBus>, p: &[(String, Bytes)], batch: usize) -> Result<Split> {
        let topic = "bench.kafka";
        let msgs: Vec<OutMessage> = messages(topic, p);
        let n = msgs.len();
        // Untimed, as the bare loop's: the producer's start and the topic's creation, on another
        // AuroraQ topic of the same family (the same Kafka topic; the group's member skips it).
        bus.publish(vec![OutMessage::new(
            "bench.warmup",
            Some(KEYS[0].to_owned()),
            format!("warm-up-{}", std::process::id()),
            Bytes::from_static(b"warm-up"),
        )])
        .await?;
        // Publish only: no consumer runs yet (as in the bare loop).
        let (t0, c0) = (Instant::now(), process_cpu());
        let mut it = msgs.into_iter();
        let mut stored = 0;
        loop {
            let chunk: Vec<OutMessage> = it.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            stored += bus.publish(chunk).await?.stored;
        }
        let publish = Figure::new(
            &format!("auroraq Kafka bus publish only (batch {batch})"),
            n,
            t0.elapsed(),
        )
        .with_cpu_since(c0);
        anyhow::ensure!(stored == n, "Kafka bus: stored {stored} of {n}");
        // Consume only: a new group reads the topic from its start. The bus assigns its
        // partitions itself (no group protocol, no rebalance), so the clock starts before the
        // subscription, as the bare consumer's starts before its `assign`.
        let (t1, c1) = (Instant::now(), process_cpu());
        let mut sub = bus
            .subscribe(SubscribeOptions::new("bench", topic).max_in_flight(4096))
            .await?;
        let subscribed = t1.elapsed();
        // On a task of the runtime, as a stage's loop runs (and the bare loop above).
        let reader = tokio::spawn(async move {
            let mut first = None;
            let mut got = 0;
            while got < n {
                match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                    Ok(Some(Ok(d))) => {
                        first.get_or_insert_with(|| t1.elapsed());
                        d.ack().await?;
                        got += 1;
                    }
                    Ok(Some(Err(e))) => return Err(e.into()),
                    Ok(None) => break,
                    Err(_) => anyhow::bail!("Kafka bus: nothing delivered for 30 s ({got} of {n})"),
                }
            }
            Ok((sub, got, first))
        });
        let (sub, got, first) = reader.await.context("the bus consumer's task")??;
        bus.flush().await?;
        let consume = Figure::new("auroraq Kafka bus consume only", got, t1.elapsed()).with_cpu_since(c1);
        tracing::info!(?subscribed, first_delivery_after = ?first, total = ?t1.elapsed(), "bus consumer: start and total");
        anyhow::ensure!(got == n, "Kafka bus: consumed {got} of {n}");
        drop(sub);
        Ok(Split { publish, consume })
    }

    /// Rounds of bare and bus, alternating (bare first on even rounds, bus first on odd ones).
    pub async fn measure(url: &str, events: usize, batch: usize, rounds: usize) -> Result<KafkaBench> {
        let p = payloads(events.max(1))?;
        let (mut bp, mut bc, mut op, mut oc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds.max(1) {
            let (b, o) = if round % 2 == 0 {
                let b = bare(url, &p, round).await?;
                (b, bus(url, &p, batch, round).await?)
            } else {
                let o = bus(url, &p, batch, round).await?;
                (bare(url, &p, round).await?, o)
            };
            tracing::info!(
                round,
                bare_publish = b.publish.events_per_s,
                bus_publish = o.publish.events_per_s,
                bare_consume = b.consume.events_per_s,
                bus_consume = o.consume.events_per_s,
                "Kafka bench round"
            );
            bp.push(b.publish);
            bc.push(b.consume);
            op.push(o.publish);
            oc.push(o.consume);
        }
        let (bp, op, bc, oc) = (
            Figure::median(bp),
            Figure::median(op),
            Figure::median(bc),
            Figure::median(oc),
        );
        let by_cpu = |bare: &Figure, bus: &Figure| Some(bare.cpu_us_per_event? / bus.cpu_us_per_event?);
        let kafka_vs_bare = KafkaVsBare {
            publish: op.events_per_s / bp.events_per_s,
            consume: oc.events_per_s / bc.events_per_s,
            consume_cpu: by_cpu(&bc, &oc),
            publish_cpu: by_cpu(&bp, &op),
        };
        Ok(KafkaBench {
            figures: vec![bp, op, bc, oc],
            kafka_vs_bare,
        })
    }
}
