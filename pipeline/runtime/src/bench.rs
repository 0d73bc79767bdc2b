//! `auroraq bench bus`: events/s from publish to consumer ack, for ~200-byte Avro events, on each
//! bus beside a bare baseline measured in the same run: a tokio channel for the in-process bus,
//! and a plain async-nats JetStream publish/consume loop for the NATS bus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use auroraq_bus::{Bus, InProcBus, InProcConfig, OutMessage, SubscribeOptions};
use auroraq_schemas::{encode, samples};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

/// One measured path: the median round, and every round's events/s.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub path: String,
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    pub rounds: Vec<f64>,
    /// CPU time this process spent per event over the timed span (all its threads, the client
    /// libraries' included; not a broker's), in µs, where it was measured. Unlike events/s it
    /// does not depend on what else the cores were doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_event: Option<f64>,
}

/// The CPU time this process has used so far (every thread), or None where the clock is missing.
#[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))]
pub(crate) fn process_cpu() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    Some(Duration::from(t))
}

impl Figure {
    pub(crate) fn new(path: &str, events: usize, d: Duration) -> Self {
        let seconds = d.as_secs_f64();
        let eps = events as f64 / seconds;
        Figure {
            path: path.into(),
            events,
            seconds,
            events_per_s: eps,
            rounds: vec![eps],
            cpu_us_per_event: None,
        }
    }

    /// With the process's CPU time per event since `start` (a [`process_cpu`] reading).
    #[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))]
    pub(crate) fn with_cpu_since(mut self, start: Option<Duration>) -> Self {
        if let (Some(start), Some(now)) = (start, process_cpu()) {
            let used = now.saturating_sub(start).as_secs_f64();
            self.cpu_us_per_event = Some(used * 1e6 / self.events.max(1) as f64);
        }
        self
    }

    /// The median of several rounds of the same path.
    /// Its CPU time per event is the median of the rounds' too (where every round has one).
    pub(crate) fn median(mut rounds: Vec<Figure>) -> Figure {
        rounds.sort_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
        let all: Vec<f64> = rounds.iter().map(|f| f.events_per_s).collect();
        let mut cpu: Option<Vec<f64>> = rounds.iter().map(|f| f.cpu_us_per_event).collect();
        let mut m = rounds.swap_remove(rounds.len() / 2);
        m.rounds = all;
        m.cpu_us_per_event = cpu.as_mut().and_then(|c| {
            c.sort_by(f64::total_cmp);
            c.get(c.len() / 2).copied()
        });
        m
    }
}

#[derive(Debug, Serialize)]
pub struct BusBench {
    pub payload_bytes: usize,
    pub batch: usize,
    pub figures: Vec<Figure>,
    pub inproc_vs_channel: f64,
    /// Publish and consume together (one producer, one consumer at once).
    pub nats_vs_bare: Option<f64>,
    /// Publish only: the bus's `publish` in batches beside async-nats with 4,096 acks outstanding.
    pub nats_publish_vs_bare: Option<f64>,
    /// Consume only: a group member acking each delivery beside a bare pull consumer.
    pub nats_consume_vs_bare: Option<f64>,
    /// Kafka bus over bare rdkafka, publish only and consume only (`--kafka`; crate::bench_kafka).
    pub kafka_vs_bare: Option<crate::bench_kafka::KafkaVsBare>,
}

/// A realistic event payload of about 200 bytes: a trade with a W3C traceparent.
pub fn payloads(n: usize) -> Result<Vec<(String, Bytes)>> {
    (0..n)
        .map(|i| {
            let mut t = samples::trade(i as u64);
            t.meta.traceparent = Some(format!(
                "00-{:032x}-{:016x}-01",
                i as u128 * 7919,
                i as u64 * 104729
            ));
            t.meta.tracestate = Some(format!("aq=bench{i:08}"));
            Ok((t.meta.event_id.clone(), Bytes::from(encode(&t)?)))
        })
        .collect()
}

/// The partition keys the bus benchmarks cycle through.
pub(crate) const KEYS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];

/// The payloads as messages on `topic`, keyed in turn by [`KEYS`].
pub(crate) fn messages(topic: &str, p: &[(String, Bytes)]) -> Vec<OutMessage> {
    p.iter()
        .enumerate()
        .map(|(i, (id, b))| {
            OutMessage::new(
                topic,
                Some(KEYS[i % KEYS.len()].to_owned()),
                id.clone(),
                b.clone(),
            )
        })
        .collect()
}

async fn channel_baseline(p: &[(String, Bytes)], batch: usize) -> Figure {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8192);
    let n = p.len();
    let data: Vec<Bytes> = p.iter().map(|(_, b)| b.clone()).collect();
    let t0 = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut bytes = 0usize;
        for _ in 0..n {
            match rx.recv().await {
                Some(b) => bytes += b.len(),
                None => break,
            }
        }
        bytes
    });
    for chunk in data.chunks(batch) {
        for b in chunk {
            if tx.send(b.clone()).await.is_err() {
                break;
            }
        }
    }
    let _ = consumer.await;
    Figure::new("tokio mpsc channel (bare)", n, t0.elapsed())
}

/// Receives and acks up to `n` deliveries; how many came before the subscription ended.
async fn bus_consume(sub: &mut dyn auroraq_bus::Subscription, n: usize) -> Result<usize> {
    let mut got = 0;
    while got < n {
        match sub.next().await {
            Some(Ok(d)) => {
                d.ack().await?;
                got += 1;
            }
            Some(Err(e)) => return Err(anyhow::Error::from(e)),
            None => break,
        }
    }
    Ok(got)
}

/// The bare loops' consumer: pulls in batches of 256 and acks each message, up to `n`.
#[cfg(feature = "nats")]
async fn bare_consume(
    consumer: async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    n: usize,
) -> Result<usize> {
    let mut msgs = consumer.stream().max_messages_per_batch(256).messages().await?;
    let mut got = 0;
    while got < n {
        match msgs.next().await {
            Some(Ok(m)) => {
                m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                got += 1;
            }
            Some(Err(e)) => return Err(anyhow::anyhow!("{e}")),
            None => break,
        }
    }
    Ok(got)
}

/// Publishes everything in batches while one member consumes and acks; timed to the last ack.
async fn bus_path(
    name: &str,
    bus: Arc<dyn Bus>,
    topic: &str,
    p: &[(String, Bytes)],
    batch: usize,
) -> Result<Figure> {
    let mut sub = bus
        .subscribe(SubscribeOptions::new("bench", topic).max_in_flight(4096))
        .await?;
    let msgs = messages(topic, p);
    let n = msgs.len();
    let t0 = Instant::now();
    let consumer = tokio::spawn(async move { bus_consume(&mut *sub, n).await });
    let producer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            // Messages are moved into the bus, as a producer that built them would.
            let mut it = msgs.into_iter();
            loop {
                let chunk: Vec<OutMessage> = it.by_ref().take(batch).collect();
                if chunk.is_empty() {
                    break;
                }
                bus.publish(chunk).await?;
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    producer.await??;
    let got = consumer.await??;
    let d = t0.elapsed();
    anyhow::ensure!(got == n, "{name}: consumed {got} of {n}");
    bus.flush().await?;
    Ok(Figure::new(name, n, d))
}

/// A fresh file-backed stream for the bare loops and a durable pull consumer on it, acking
/// explicitly with 4,096 acks pending at most.
#[cfg(feature = "nats")]
async fn bare_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
    subject: &str,
) -> Result<async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>> {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let _ = js.delete_stream(name).await;
    let stream = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    Ok(stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4096,
            ..Default::default()
        })
        .await?)
}

#[cfg(feature = "nats")]
async fn bare_nats(url: &str, p: &[(String, Bytes)], batch: usize) -> Result<Figure> {
    use async_nats::jetstream;
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    // Room for a whole batch of unawaited acks (async-nats' default, 5,000, would block).
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(batch.max(5_000))
        .build(client.clone());
    let name = format!("BENCHBARE{}", std::process::id());
    let subject = format!("benchbare{}.x", std::process::id());
    let consumer = bare_stream(&js, &name, &subject).await?;
    let n = p.len();
    let data: Vec<(String, Bytes)> = p.to_vec();
    let t0 = Instant::now();
    let cons = tokio::spawn(async move { bare_consume(consumer, n).await });
    for chunk in data.chunks(batch) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (id, b) in chunk {
            let m = jetstream::message::PublishMessage::build()
                .payload(b.clone())
                .message_id(id);
            acks.push(js.send_publish(subject.clone(), m).await?);
        }
        for a in acks {
            a.await?;
        }
    }
    let got = cons.await??;
    let d = t0.elapsed();
    anyhow::ensure!(got == n, "bare JetStream: consumed {got} of {n}");
    let _ = js.delete_stream(&name).await;
    Ok(Figure::new("async-nats JetStream loop (bare)", n, d))
}

/// The NATS paths measured apart: publish-only (everything stored, timed to the last ack), then
/// consume-only (a group that existed before the publish reads and acks everything).
#[cfg(feature = "nats")]
struct Split {
    publish: Figure,
    consume: Figure,
}

/// Bare async-nats: JetStream publish with message ids and a window of `window` outstanding acks
/// (the oldest awaited when the window is full), then a pull consumer acking each message.
#[cfg(feature = "nats")]
async fn bare_nats_split(url: &str, p: &[(String, Bytes)], window: usize, round: usize) -> Result<Split> {
    use async_nats::jetstream;
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::new(client.clone());
    let name = format!("BENCHSPLIT{}X{round}", std::process::id());
    let subject = format!("benchsplit{}x{round}.x", std::process::id());
    let consumer = bare_stream(&js, &name, &subject).await?;
    let n = p.len();
    let (t0, c0) = (Instant::now(), process_cpu());
    let mut acks = std::collections::VecDeque::with_capacity(window);
    for (id, b) in p {
        if acks.len() >= window.max(1) {
            if let Some(a) = acks.pop_front() {
                let a: jetstream::context::PublishAckFuture = a;
                a.await?;
            }
        }
        let m = jetstream::message::PublishMessage::build()
            .payload(b.clone())
            .message_id(id);
        acks.push_back(js.send_publish(subject.clone(), m).await?);
    }
    for a in acks {
        a.await?;
    }
    let publish = Figure::new(
        &format!("async-nats publish only (bare, window {window})"),
        n,
        t0.elapsed(),
    )
    .with_cpu_since(c0);
    let (t1, c1) = (Instant::now(), process_cpu());
    let got = bare_consume(consumer, n).await?;
    let consume =
        Figure::new("async-nats consume only, explicit acks (bare)", got, t1.elapsed()).with_cpu_since(c1);
    anyhow::ensure!(got == n, "bare JetStream: consumed {got} of {n}");
    let _ = js.delete_stream(&name).await;
    Ok(Split { publish, consume })
}

/// The NATS bus: `publish` in batches of `batch`, then a group's member reading and acking all.
#[cfg(feature = "nats")]
async fn bus_nats_split(url: &str, p: &[(String, Bytes)], batch: usize, round: usize) -> Result<Split> {
    let mut cfg = auroraq_bus::NatsConfig::new(url);
    cfg.stream = format!("BENCHAQSPLIT{}X{round}", std::process::id());
    cfg.subject_root = format!("benchaqsplit{}x{round}", std::process::id());
    cfg.partitions = 1;
    let bus = Arc::new(auroraq_bus::NatsBus::connect(cfg).await?);
    let topic = "bench.nats";
    // The group exists before the publish, so that it keeps everything for the consume phase.
    let mut sub = bus
        .subscribe(SubscribeOptions::new("bench", topic).max_in_flight(4096))
        .await?;
    let msgs = messages(topic, p);
    let n = msgs.len();
    let (t0, c0) = (Instant::now(), process_cpu());
    let mut it = msgs.into_iter();
    loop {
        let chunk: Vec<OutMessage> = it.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        bus.publish(chunk).await?;
    }
    let publish = Figure::new(
        &format!("auroraq NATS bus publish only (batch {batch})"),
        n,
        t0.elapsed(),
    )
    .with_cpu_since(c0);
    let (t1, c1) = (Instant::now(), process_cpu());
    let got = bus_consume(&mut *sub, n).await?;
    bus.flush().await?;
    let consume = Figure::new("auroraq NATS bus consume only", got, t1.elapsed()).with_cpu_since(c1);
    drop(sub);
    bus.close().await;
    let _ = bus.delete_stream().await;
    anyhow::ensure!(got == n, "NATS bus: consumed {got} of {n}");
    Ok(Split { publish, consume })
}

pub async fn bus(
    events: usize,
    nats_events: usize,
    nats_url: Option<&str>,
    batch: usize,
    rounds: usize,
) -> Result<BusBench> {
    let rounds = rounds.max(1);
    let p = payloads(events.max(nats_events))?;
    let payload_bytes = p.iter().map(|(_, b)| b.len()).sum::<usize>() / p.len().max(1);
    let mut figures = Vec::new();

    // Rounds alternate baseline and bus, so that both see the same machine state.
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(channel_baseline(&p[..events], batch).await);
        let inproc: Arc<dyn Bus> = Arc::new(InProcBus::new(InProcConfig {
            partitions: 8,
            ..InProcConfig::default()
        }));
        ours.push(
            bus_path(
                "auroraq in-process bus",
                inproc,
                "bench.inproc",
                &p[..events],
                batch,
            )
            .await?,
        );
    }
    let (base, ours) = (Figure::median(base), Figure::median(ours));
    let inproc_vs_channel = ours.events_per_s / base.events_per_s;
    figures.push(base);
    figures.push(ours);

    let mut nats_vs_bare = None;
    let (mut nats_publish_vs_bare, mut nats_consume_vs_bare) = (None, None);
    #[cfg(feature = "nats")]
    if let Some(url) = nats_url {
        let (mut bare, mut ours) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            bare.push(bare_nats(url, &p[..nats_events], batch).await?);
            let mut cfg = auroraq_bus::NatsConfig::new(url);
            cfg.stream = format!("BENCHAQ{}X{round}", std::process::id());
            cfg.subject_root = format!("benchaq{}x{round}", std::process::id());
            cfg.partitions = 1;
            let nb = Arc::new(auroraq_bus::NatsBus::connect(cfg).await?);
            let r = bus_path(
                "auroraq NATS JetStream bus",
                nb.clone(),
                "bench.nats",
                &p[..nats_events],
                batch,
            )
            .await;
            nb.close().await;
            let _ = nb.delete_stream().await;
            ours.push(r?);
        }
        let (bare, ours) = (Figure::median(bare), Figure::median(ours));
        nats_vs_bare = Some(ours.events_per_s / bare.events_per_s);
        figures.push(bare);
        figures.push(ours);

        // Publish and consume apart, bare and ours alternating by round.
        let (mut bp, mut bc, mut op, mut oc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let b = bare_nats_split(url, &p[..nats_events], 4096, round).await?;
            bp.push(b.publish);
            bc.push(b.consume);
            let o = bus_nats_split(url, &p[..nats_events], batch, round).await?;
            op.push(o.publish);
            oc.push(o.consume);
        }
        let (bp, bc, op, oc) = (
            Figure::median(bp),
            Figure::median(bc),
            Figure::median(op),
            Figure::median(oc),
        );
        nats_publish_vs_bare = Some(op.events_per_s / bp.events_per_s);
        nats_consume_vs_bare = Some(oc.events_per_s / bc.events_per_s);
        figures.extend([bp, op, bc, oc]);
    }
    #[cfg(not(feature = "nats"))]
    let _ = (nats_url, nats_events);

    Ok(BusBench {
        payload_bytes,
        batch,
        figures,
        inproc_vs_channel,
        nats_vs_bare,
        nats_publish_vs_bare,
        nats_consume_vs_bare,
        kafka_vs_bare: None,
    })
}

impl BusBench {
    /// One human line per path on stderr.
    pub fn print(&self) {
        for f in &self.figures {
            eprintln!(
                "{:<36} {:>10} events {:>8.3} s {:>12.0} events/s",
                f.path, f.events, f.seconds, f.events_per_s
            );
        }
    }
}

/// `auroraq bench sink`: PostgreSQL sink rows/s beside a bare COPY loop (`url`: default
/// `postgres.url`; the bench creates and drops its own database).
pub async fn sink(
    cfg: &crate::Config,
    url: Option<String>,
    rows: usize,
    rounds: usize,
) -> Result<auroraq_sink_timescale::BenchReport> {
    let url = url.unwrap_or_else(|| cfg.postgres.url.clone());
    if url.is_empty() {
        anyhow::bail!("no PostgreSQL URL: give --url or set postgres.url");
    }
    let mut bc = auroraq_sink_timescale::BenchConfig::new(url);
    bc.rows = rows;
    bc.rounds = rounds;
    Ok(auroraq_sink_timescale::bench(&bc).await?)
}

/// `auroraq bench fusion`: fusion on timely with each worker count beside a plain per-asset loop.
pub fn fusion(
    cfg: &crate::Config,
    scores: usize,
    workers: Vec<usize>,
    rounds: usize,
) -> Result<auroraq_fusion::BenchReport> {
    let opts = auroraq_fusion::BenchOptions {
        config: cfg.fusion.clone(),
        scores,
        workers,
        rounds,
        ..auroraq_fusion::BenchOptions::default()
    };
    Ok(tokio::task::block_in_place(|| auroraq_fusion::bench(&opts))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(eps: f64, cpu: Option<f64>) -> Figure {
        let mut f = Figure::new("p", 1000, Duration::from_secs_f64(1000.0 / eps));
        f.cpu_us_per_event = cpu;
        f
    }

    #[test]
    fn the_median_takes_the_median_cpu_of_the_rounds() {
        // The median round by events/s is the 200/s one; the median CPU is 2.0, from another round.
        let m = Figure::median(vec![
            round(300.0, Some(1.0)),
            round(100.0, Some(3.0)),
            round(200.0, Some(2.5)),
            round(250.0, Some(2.0)),
            round(150.0, Some(0.5)),
        ]);
        assert!((m.events_per_s - 200.0).abs() < 1e-6, "{}", m.events_per_s);
        assert_eq!(m.rounds.len(), 5);
        assert_eq!(m.cpu_us_per_event, Some(2.0));
        // A round without a CPU reading leaves the median without one.
        let m = Figure::median(vec![
            round(1.0, Some(1.0)),
            round(2.0, None),
            round(3.0, Some(1.0)),
        ]);
        assert_eq!(m.cpu_us_per_event, None);
    }

    #[test]
    fn cpu_per_event_counts_the_time_spent_since_the_start() {
        let start = process_cpu().expect("CLOCK_PROCESS_CPUTIME_ID is there on Linux");
        // Burn CPU until the process has used 30 ms more (other test threads may add to it).
        let t = Instant::now();
        let mut x = 0u64;
        while process_cpu().is_some_and(|now| now < start + Duration::from_millis(30)) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the process clock does not advance"
            );
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let wall = t.elapsed();
        let f = Figure::new("p", 1000, wall).with_cpu_since(Some(start));
        let us = f.cpu_us_per_event.expect("measured");
        // At least the 30 ms over 1,000 events; at most what every core could have used since.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let most = (wall + Duration::from_millis(5)).as_secs_f64() * 1e6 * cores / 1000.0;
        assert!(us >= 30.0 && us <= most, "{us} µs per event, at most {most}");
    }
}
