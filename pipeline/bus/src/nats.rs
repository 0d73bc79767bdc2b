//! The NATS JetStream bus, for distributed runs.
//!
//! - One stream (default `AURORAQ`) holds every topic under the subject
//!   `<root>.<partition>.<topic>`, ensured at start-up with file storage, a duplicate window and
//!   a retention limit, so analysts can replay topics from any start time.
//! - Publishes carry `Nats-Msg-Id` = the event id, so the server drops re-publishes within the
//!   duplicate window, and are pipelined with a sliding window of `publish_window` outstanding
//!   acks: once the window is full, the oldest ack is awaited before the next message goes out,
//!   and a `publish` call returns when every message of its batch is acked (stored). Large batches
//!   therefore keep the server busy without a stall per batch; a batch smaller than the window
//!   waits for its last ack before the call returns (the durability the `Bus` trait promises).
//! - A group member gets one durable pull consumer per partition it takes, filtered on
//!   `<root>.<partition>.<filter>`, with explicit acks, `max_ack_pending` = `max_in_flight` and
//!   `ack_wait`. Messages are acked only when the stage says so.
//! - Deliveries in flight per member are capped by a semaphore, so memory stays bounded whatever
//!   the backlog on the server; each partition's pull asks for at most `max_in_flight` divided
//!   over the member's partitions (and `pull_batch`), so messages do not wait in the client's
//!   buffers with their `ack_wait` running (a slow member with many partitions would otherwise
//!   hold hundreds each and see them redelivered).
//! - The client reconnects by itself; pull loops that fail while the server is away are rebuilt
//!   with backoff, and the durable consumers resume where their acks left them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::AckKind;
use async_trait::async_trait;
use auroraq_util::Backoff;
use futures::StreamExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Times an unacked publish is sent again before it fails (backing off 0.2 s .. 5 s).
const PUBLISH_RETRIES: u32 = 5;

/// Publish acks in flight at most over all `publish` calls of one bus (see `NatsBus::connect`).
const MAX_ACKS_IN_FLIGHT: usize = 16_384;

use crate::{
    partition_of, topics, Acker, Bus, BusError, Delivery, History, HistoryOptions, OutMessage, PublishReport,
    Stored, SubscribeOptions, Subscription,
};

/// A message sent, awaiting its publish ack: the message and subject for a retry, and the ack.
type Pending = (OutMessage, String, PublishAckFuture);

/// The header that carries a message's partition key.
pub const KEY_HEADER: &str = "Aq-Key";

/// Settings of the NATS JetStream bus.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// JetStream stream name (no dots or spaces).
    pub stream: String,
    /// First subject token; every AuroraQ subject lives under it.
    pub subject_root: String,
    /// Partitions per topic. All processes on one stream must agree.
    pub partitions: u32,
    /// How long the stream keeps messages (for replays and late consumers).
    pub max_age: Duration,
    /// Stream size limit in bytes; oldest messages go first. -1: no limit.
    pub max_bytes: i64,
    /// Window in which a re-published id is dropped.
    pub duplicate_window: Duration,
    /// Messages per pull request.
    pub pull_batch: usize,
    /// Publish acks outstanding at most while a batch is being published (see the module docs).
    pub publish_window: usize,
    pub connect_timeout: Duration,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            stream: "AURORAQ".into(),
            subject_root: "aq".into(),
            partitions: 8,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
            pull_batch: 256,
            publish_window: 4096,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The NATS JetStream bus. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    cfg: Arc<NatsConfig>,
    closed: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
}

impl NatsBus {
    /// Connects and ensures the stream exists.
    pub async fn connect(cfg: NatsConfig) -> Result<Self, BusError> {
        let connect_err = |reason: String| BusError::Connect {
            url: cfg.url.clone(),
            reason,
        };
        if cfg.partitions == 0 {
            return Err(connect_err("partitions must be at least 1".into()));
        }
        if cfg.stream.is_empty() || cfg.stream.contains(['.', ' ', '*', '>']) {
            return Err(connect_err(format!(
                "stream name {:?} must have no dots, spaces or wildcards",
                cfg.stream
            )));
        }
        topics::validate_topic(&cfg.subject_root).map_err(connect_err)?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(cfg.connect_timeout)
            .name("auroraq")
            .event_callback(|ev| async move {
                match ev {
                    async_nats::Event::Disconnected => warn!("NATS disconnected; reconnecting"),
                    async_nats::Event::Connected => debug!("NATS connected"),
                    other => debug!(event = %other, "NATS event"),
                }
            })
            .connect(cfg.url.as_str())
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // Publish acks are bounded by the bus's own window per `publish` call. The context's
        // limit on acks in flight (a permit per ack, freed only when its future is polled) must
        // not block a send while the caller holds unpolled acks: that deadlocks once batches in
        // flight pass it (async-nats' default: 5,000, waiting). So a send that finds no permit
        // fails at once and `publish` settles its oldest ack, or waits a moment, and sends again.
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(false)
            .build(client.clone());
        let stream_cfg = StreamConfig {
            name: cfg.stream.clone(),
            subjects: vec![format!("{}.>", cfg.subject_root)],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age: cfg.max_age,
            max_bytes: cfg.max_bytes,
            duplicate_window: cfg.duplicate_window,
            description: Some("AuroraQ topics: <root>.<partition>.<topic>".into()),
            ..Default::default()
        };
        js.get_or_create_stream(stream_cfg)
            .await
            .map_err(|e| connect_err(format!("cannot ensure JetStream stream {}: {e}", cfg.stream)))?;
        let (shutdown, _) = watch::channel(false);
        Ok(NatsBus {
            client,
            js,
            cfg: Arc::new(cfg),
            closed: Arc::new(AtomicBool::new(false)),
            shutdown,
        })
    }

    /// Sends one message (its id is JetStream's `Nats-Msg-Id`); the future is its ack. When the
    /// acks in flight are at the bus's limit, settles `pending`'s oldest first (or, holding none,
    /// waits for other calls to settle theirs).
    async fn send(
        &self,
        subject: &str,
        m: &OutMessage,
        pending: &mut VecDeque<Pending>,
        report: &mut PublishReport,
    ) -> Result<PublishAckFuture, BusError> {
        loop {
            let mut publish = PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(&m.id);
            if let Some(k) = &m.key {
                publish = publish.header(KEY_HEADER, k.as_str());
            }
            match self.js.send_publish(subject.to_owned(), publish).await {
                Ok(f) => return Ok(f),
                Err(e) if matches!(e.kind(), PublishErrorKind::MaxAckPending) => match pending.pop_front() {
                    Some(oldest) => self.settle(oldest, report).await?,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                },
                Err(e) => {
                    return Err(BusError::Publish {
                        topic: m.topic.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// Awaits the ack of a sent message and counts it. An ack that does not come in time (a
    /// loaded broker) is asked for again by sending the message again: JetStream drops the copy by
    /// its message id within the stream's duplicate window, so a retry never stores a message twice.
    async fn settle(&self, (m, subject, fut): Pending, report: &mut PublishReport) -> Result<(), BusError> {
        let mut result = fut.await;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while let Err(e) = &result {
            if !matches!(e.kind(), PublishErrorKind::TimedOut) || backoff.failures() >= PUBLISH_RETRIES {
                break;
            }
            let wait = backoff.next_delay();
            warn!(topic = %m.topic, error = %e, ?wait, "publish ack timed out; sending again");
            tokio::time::sleep(wait).await;
            result = Box::pin(self.send(&subject, &m, &mut VecDeque::new(), report))
                .await?
                .await;
        }
        let ack = result.map_err(|e| BusError::Publish {
            topic: m.topic.clone(),
            reason: e.to_string(),
        })?;
        if ack.duplicate {
            report.duplicates += 1;
        } else {
            report.stored += 1;
        }
        Ok(())
    }

    fn subject(&self, topic: &str, partition: u32) -> String {
        format!("{}.{}.{}", self.cfg.subject_root, partition, topic)
    }

    /// The durable consumer name of one group partition. The filter is hashed in, so one group
    /// name can hold several subscriptions.
    fn durable_name(group: &str, filter: &str, partition: u32) -> String {
        let mut h: u32 = 0x811c9dc5;
        for b in filter.as_bytes() {
            h ^= *b as u32;
            h = h.wrapping_mul(0x01000193);
        }
        format!("{group}-{h:08x}-p{partition}")
    }

    /// Deletes the stream and everything in it. For tests and `auroraq` admin use.
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.js
            .delete_stream(&self.cfg.stream)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Connect {
                url: self.cfg.url.clone(),
                reason: format!("cannot delete stream {}: {e}", self.cfg.stream),
            })
    }

    async fn consumer(&self, opts: &SubscribeOptions, partition: u32) -> Result<PullConsumer, BusError> {
        let err = |reason: String| BusError::Subscribe {
            group: opts.group.clone(),
            filter: opts.filter.clone(),
            reason,
        };
        let name = Self::durable_name(&opts.group, &opts.filter, partition);
        let stream = self
            .js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        stream
            .get_or_create_consumer(
                &name,
                PullConfig {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}.{}.{}", self.cfg.subject_root, partition, opts.filter),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: opts.ack_wait,
                    deliver_policy: if opts.from_now {
                        DeliverPolicy::New
                    } else {
                        DeliverPolicy::All
                    },
                    max_ack_pending: opts.max_in_flight as i64,
                    max_deliver: -1,
                    // Durable groups keep their position while all members are away; transient
                    // ones are removed by the server a minute after their last pull.
                    inactive_threshold: if opts.transient {
                        Duration::from_secs(60)
                    } else {
                        Duration::ZERO
                    },
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(format!("consumer {name}: {e}")))
    }
}

#[async_trait]
impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn partitions(&self) -> u32 {
        self.cfg.partitions
    }

    async fn publish(&self, batch: Vec<OutMessage>) -> Result<PublishReport, BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let window = self.cfg.publish_window.max(1);
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(batch.len().min(window));
        let mut report = PublishReport::default();
        for m in batch {
            topics::validate_topic(&m.topic).map_err(BusError::InvalidTopic)?;
            if pending.len() >= window {
                if let Some(oldest) = pending.pop_front() {
                    self.settle(oldest, &mut report).await?;
                }
            }
            let subject = self.subject(&m.topic, partition_of(m.key.as_deref(), self.cfg.partitions));
            let fut = self.send(&subject, &m, &mut pending, &mut report).await?;
            pending.push_back((m, subject, fut));
        }
        for p in pending {
            self.settle(p, &mut report).await?;
        }
        Ok(report)
    }

    async fn subscribe(&self, opts: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let parts = opts.validate(self.cfg.partitions)?;
        // What each partition's pull asks the server for: the member's in-flight cap shared over
        // its partitions (at most `pull_batch`), so that a member never holds much more than
        // `max_in_flight` delivered messages whose `ack_wait` runs while they wait for a permit.
        let pull_batch = self
            .cfg
            .pull_batch
            .min(opts.max_in_flight.div_ceil(parts.len().max(1)))
            .max(1);
        let permits = Arc::new(Semaphore::new(opts.max_in_flight));
        let (tx, rx) = mpsc::channel(opts.max_in_flight.min(4096));
        for p in parts {
            // Create the durable now, so that errors surface here and the group exists (and
            // retains messages for us) from this call on.
            let consumer = self.consumer(&opts, p).await?;
            let puller = Puller {
                bus: self.clone(),
                opts: opts.clone(),
                partition: p,
                pull_batch,
                permits: permits.clone(),
                tx: tx.clone(),
                shutdown: self.shutdown.subscribe(),
            };
            tokio::spawn(puller.run(consumer));
        }
        Ok(Box::new(NatsSubscription { rx }))
    }

    async fn backlogs(&self) -> Result<std::collections::BTreeMap<String, crate::Backlog>, BusError> {
        let mut groups = std::collections::BTreeMap::<String, crate::Backlog>::new();
        for p in self.partition_backlogs().await? {
            let b = groups.entry(p.group).or_default();
            b.pending += p.backlog.pending;
            b.unacked += p.backlog.unacked;
        }
        Ok(groups)
    }

    async fn partition_backlogs(&self) -> Result<Vec<crate::PartitionBacklog>, BusError> {
        let err = |reason: String| BusError::Connect {
            url: self.cfg.url.clone(),
            reason,
        };
        let stream = self
            .js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(|e| err(format!("JetStream stream {}: {e}", self.cfg.stream)))?;
        let mut consumers = stream.consumers();
        let mut parts = std::collections::BTreeMap::<(String, u32), crate::Backlog>::new();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| err(format!("listing the consumers of {}: {e}", self.cfg.stream)))?;
            // Durable names are <group>-<filter hash>-p<partition>; readers without one are not groups.
            let Some((group, partition)) = info.config.durable_name.as_deref().and_then(|n| {
                let mut it = n.rsplitn(3, '-');
                let p = it.next()?.strip_prefix('p')?.parse::<u32>().ok()?;
                let _hash = it.next()?;
                Some((it.next()?.to_owned(), p))
            }) else {
                continue;
            };
            let b = parts.entry((group, partition)).or_default();
            b.pending += info.num_pending;
            b.unacked += info.num_ack_pending as u64;
        }
        Ok(crate::PartitionBacklog::from_map(parts))
    }

    async fn history(&self, opts: HistoryOptions) -> Result<Box<dyn History>, BusError> {
        topics::validate_filter(&opts.filter).map_err(BusError::InvalidSubscription)?;
        let err = |reason: String| BusError::History {
            filter: opts.filter.clone(),
            reason,
        };
        let mut stream = self
            .js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(|e| err(format!("JetStream stream {}: {e}", self.cfg.stream)))?;
        let last = stream
            .info()
            .await
            .map_err(|e| err(format!("JetStream stream {}: {e}", self.cfg.stream)))?
            .state
            .last_sequence;
        let deliver_policy = match opts.since {
            Some(us) => DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(us as i128 * 1000)
                    .map_err(|e| err(format!("start time {us} µs: {e}")))?,
            },
            None => DeliverPolicy::All,
        };
        // One ordered (ephemeral, ack-less) consumer over every partition: stream order, which is
        // the order the messages were stored in.
        let mut consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{}.*.{}", self.cfg.subject_root, opts.filter),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("cannot create a reader: {e}")))?;
        let total = consumer
            .info()
            .await
            .map_err(|e| err(format!("cannot read the reader's state: {e}")))?
            .num_pending;
        debug!(filter = %opts.filter, since = ?opts.since, until = ?opts.until, total, last, "history read");
        let messages = if total == 0 {
            None
        } else {
            Some(
                consumer
                    .messages()
                    .await
                    .map_err(|e| err(format!("cannot start reading: {e}")))?,
            )
        };
        Ok(Box::new(NatsHistory {
            messages,
            last,
            until: opts.until,
            total,
            root_len: self.cfg.subject_root.len(),
            filter: opts.filter,
        }))
    }

    async fn health(&self) -> Result<String, BusError> {
        let err = |reason: String| BusError::Connect {
            url: self.cfg.url.clone(),
            reason,
        };
        let mut stream = self
            .js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(|e| err(format!("JetStream stream {} unavailable: {e}", self.cfg.stream)))?;
        let info = stream
            .info()
            .await
            .map_err(|e| err(format!("JetStream unavailable: {e}")))?;
        let server = self.client.server_info();
        Ok(format!(
            "NATS {} with JetStream; stream {}: {} messages, {} bytes",
            server.version, self.cfg.stream, info.state.messages, info.state.bytes
        ))
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Ack(format!("flush: {e}")))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
        if let Err(e) = self.client.flush().await {
            warn!(error = %e, "NATS flush on close failed");
        }
    }
}

/// Pulls one partition consumer into a member's channel, rebuilding the pull after errors.
struct Puller {
    bus: NatsBus,
    opts: SubscribeOptions,
    partition: u32,
    /// Messages per pull request (see `subscribe`).
    pull_batch: usize,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Result<Delivery, BusError>>,
    shutdown: watch::Receiver<bool>,
}

impl Puller {
    async fn run(mut self, mut consumer: PullConsumer) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.pull_batch)
                .heartbeat(Duration::from_secs(2))
                .expires(Duration::from_secs(10))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => {
                    backoff = Duration::from_millis(100);
                    m
                }
                Err(e) => {
                    warn!(group = %self.opts.group, partition = self.partition, error = %e, "pull failed; retrying");
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    // The consumer may be gone (stream recreated): get it again.
                    if let Ok(c) = self.bus.consumer(&self.opts, self.partition).await {
                        consumer = c;
                    }
                    continue;
                }
            };
            loop {
                // Take a permit before pulling the next message: at most max_in_flight unsettled.
                // Stop when the bus closes or the member goes away (its channel closes).
                let permit = tokio::select! {
                    p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = self.shutdown.changed() => return,
                    _ = self.tx.closed() => return,
                };
                let next = tokio::select! {
                    n = messages.next() => n,
                    _ = self.shutdown.changed() => return,
                    _ = self.tx.closed() => return,
                };
                match next {
                    Some(Ok(msg)) => {
                        let Some(d) = self.delivery(msg, permit) else {
                            continue;
                        };
                        if self.tx.send(Ok(d)).await.is_err() {
                            return; // the member is gone; unsettled deliveries come back after ack_wait
                        }
                    }
                    Some(Err(e)) => {
                        debug!(group = %self.opts.group, partition = self.partition, error = %e, "pull stream error; rebuilding");
                        break;
                    }
                    None => break,
                }
            }
            if self.pause(backoff).await {
                return;
            }
        }
    }

    /// Sleeps, or returns true if shutdown came first.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.shutdown.borrow(),
            _ = self.shutdown.changed() => true,
        }
    }

    fn delivery(
        &self,
        msg: async_nats::jetstream::Message,
        permit: OwnedSemaphorePermit,
    ) -> Option<Delivery> {
        let attempt = msg.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
        let (msg, acker) = msg.split();
        let Some(message) = out_message(&msg, self.bus.cfg.subject_root.len()) else {
            warn!(subject = %msg.subject, "message outside the AuroraQ subject layout; terminating it");
            tokio::spawn(async move {
                let _ = acker.ack_with(AckKind::Term).await;
            });
            return None;
        };
        Some(Delivery::new(
            message,
            self.partition,
            attempt,
            Box::new(NatsAcker {
                acker,
                _permit: permit,
            }),
        ))
    }
}

struct NatsSubscription {
    rx: mpsc::Receiver<Result<Delivery, BusError>>,
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        self.rx.recv().await
    }
}

struct NatsAcker {
    acker: async_nats::jetstream::message::Acker,
    /// Released when the delivery is settled: frees a slot of the member's max_in_flight.
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.acker.ack().await.map_err(|e| BusError::Ack(e.to_string()))
    }

    /// A dropped delivery comes back after a short delay: NATS (2.9) could hand back a message
    /// NAKed at once as a first delivery (`num_delivered` 1) when its member's pull was still open,
    /// hiding the redelivery from the stage's counters.
    fn drop_delay(&self) -> Option<Duration> {
        Some(Duration::from_millis(500))
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }
}

/// A stored message as AuroraQ published it: the topic from `<root>.<partition>.<topic>`, the id
/// and key from the headers. None when the subject is not in that layout.
fn out_message(msg: &async_nats::Message, root_len: usize) -> Option<OutMessage> {
    let topic = msg
        .subject
        .as_str()
        .get(root_len + 1..)
        .and_then(|rest| rest.split_once('.'))
        .map(|(_, t)| t.to_owned())?;
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    Some(OutMessage {
        topic,
        key: header(KEY_HEADER),
        id: header("Nats-Msg-Id").unwrap_or_default(),
        payload: msg.payload.clone(),
    })
}

/// A history read: an ordered consumer, stopped at the stream's last sequence when the read began,
/// when nothing matching is pending, or past `until`.
struct NatsHistory {
    messages: Option<async_nats::jetstream::consumer::pull::Ordered>,
    last: u64,
    until: Option<i64>,
    total: u64,
    root_len: usize,
    filter: String,
}

#[async_trait]
impl History for NatsHistory {
    async fn next(&mut self) -> Option<Result<Stored, BusError>> {
        loop {
            let messages = self.messages.as_mut()?;
            let msg = match messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.messages = None;
                    return Some(Err(BusError::History {
                        filter: self.filter.clone(),
                        reason: e.to_string(),
                    }));
                }
                None => {
                    self.messages = None;
                    return None;
                }
            };
            let (sequence, pending, stored_at) = match msg.info() {
                Ok(i) => (
                    i.stream_sequence,
                    i.pending,
                    (i.published.unix_timestamp_nanos() / 1000) as i64,
                ),
                Err(e) => {
                    self.messages = None;
                    return Some(Err(BusError::History {
                        filter: self.filter.clone(),
                        reason: format!("a stored message without its metadata: {e}"),
                    }));
                }
            };
            if sequence > self.last || self.until.is_some_and(|u| stored_at > u) {
                self.messages = None;
                return None;
            }
            if sequence == self.last || pending == 0 {
                // This one is the last: end after it.
                self.messages = None;
            }
            match out_message(&msg.message, self.root_len) {
                Some(message) => {
                    return Some(Ok(Stored {
                        message,
                        sequence,
                        stored_at,
                    }))
                }
                None => {
                    warn!(subject = %msg.subject, "stored message outside the AuroraQ subject layout; skipped");
                    continue;
                }
            }
        }
    }

    fn total(&self) -> u64 {
        self.total
    }
}
