//! The bus that AuroraQ's stages meet on.
//!
//! One trait, [`Bus`], with three implementations: [`inproc::InProcBus`] for the embedded
//! single-process mode, and [`nats::NatsBus`] (JetStream) and [`kafka::KafkaBus`] (Apache Kafka,
//! Redpanda) for distributed runs. All give the same contract, which the bus contract suite
//! (`tests/tests/bus_contract.rs`) checks against each:
//!
//! - **Topics** are dot-separated paths built by [`topics`]; subscriptions take NATS-style
//!   wildcards.
//! - **Partitions**: a message's key (the asset or symbol) picks one of the bus's partitions with
//!   a stable hash ([`partition_of`]); delivery is in publish order within a partition, so
//!   per-key order holds.
//! - **Consumer groups**: a named, durable group sees every message published to its topics after
//!   it was created (on NATS, the stream's whole history); members of one group split the
//!   partitions between them (`member`/`members`), as Kafka consumer groups do.
//! - **At-least-once**: a delivery must be acked after processing. One that is nacked, not acked
//!   within `ack_wait`, or dropped (its consumer died) is delivered again, with `attempt` counting.
//! - **De-duplication**: a message re-published with the same id within the bus's duplicate window
//!   is dropped.
//! - **Backpressure**: a member holds at most `max_in_flight` unacked deliveries; the in-process
//!   bus also bounds what a group has queued, so a slow consumer slows its producers.
//!
//! The bus carries bytes. Encoding, decoding and dead letters live in the stage runner.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

#[cfg(feature = "kafka")]
mod id_window;
pub mod inproc;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod kafka_record;
mod kind;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "kafka")]
mod packed;
pub mod topics;

pub use inproc::{InProcBus, InProcConfig};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, KafkaConfig};
pub use kind::{BusKind, BusUrl};
#[cfg(feature = "nats")]
pub use nats::{NatsBus, NatsConfig};

/// A message to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct OutMessage {
    /// A concrete topic (see [`topics`]).
    pub topic: String,
    /// Partition key: the asset or symbol. Messages with the same key keep their order.
    pub key: Option<String>,
    /// De-duplication id: the event id. A re-publish with the same id is dropped.
    pub id: String,
    /// The encoded event.
    pub payload: Bytes,
}

impl OutMessage {
    pub fn new(topic: impl Into<String>, key: Option<String>, id: impl Into<String>, payload: Bytes) -> Self {
        OutMessage {
            topic: topic.into(),
            key,
            id: id.into(),
            payload,
        }
    }
}

/// What a publish did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages stored.
    pub stored: usize,
    /// Messages dropped as duplicates of ids seen within the duplicate window.
    pub duplicates: usize,
}

/// How a member joins a consumer group.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// Durable group name: `[A-Za-z0-9_-]+`.
    pub group: String,
    /// Topic filter, with `*` and a final `>` as wildcards.
    pub filter: String,
    /// This member's index among `members`; it takes the partitions `p` with `p % members == member`.
    pub member: u32,
    pub members: u32,
    /// Most unacked deliveries this member holds at once.
    pub max_in_flight: usize,
    /// A delivery not acked within this time is delivered again.
    pub ack_wait: Duration,
    /// A short-lived group (a `tap`, a test): buses with durable state forget it soon after its
    /// last member leaves, instead of keeping its position forever.
    pub transient: bool,
    /// A new group sees only what is published after it joins (buses with history otherwise
    /// start a new group at the oldest message kept).
    pub from_now: bool,
}

impl SubscribeOptions {
    pub fn new(group: impl Into<String>, filter: impl Into<String>) -> Self {
        SubscribeOptions {
            group: group.into(),
            filter: filter.into(),
            member: 0,
            members: 1,
            max_in_flight: 1024,
            ack_wait: Duration::from_secs(30),
            transient: false,
            from_now: false,
        }
    }

    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// See [`SubscribeOptions::from_now`].
    pub fn from_now(mut self) -> Self {
        self.from_now = true;
        self
    }

    pub fn member(mut self, member: u32, members: u32) -> Self {
        self.member = member;
        self.members = members;
        self
    }

    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Checks the options, and returns the partitions this member takes out of `partitions`.
    pub fn validate(&self, partitions: u32) -> Result<Vec<u32>, BusError> {
        let bad = |why: String| Err(BusError::InvalidSubscription(why));
        if self.group.is_empty()
            || !self
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(format!("group {:?} must be [A-Za-z0-9_-]+", self.group));
        }
        topics::validate_filter(&self.filter).map_err(BusError::InvalidSubscription)?;
        if self.members == 0 || self.member >= self.members {
            return bad(format!(
                "member {} of {} is out of range",
                self.member, self.members
            ));
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1".into());
        }
        let mine: Vec<u32> = (0..partitions)
            .filter(|p| p % self.members == self.member)
            .collect();
        if mine.is_empty() {
            return bad(format!(
                "member {} of {} gets none of the bus's {partitions} partitions; use at most {partitions} members",
                self.member, self.members
            ));
        }
        Ok(mine)
    }
}

/// The partition a key falls in: FNV-1a over the key's bytes, modulo the partition count.
/// Stable across processes, machines and releases; messages without a key go to partition 0.
pub fn partition_of(key: Option<&str>, partitions: u32) -> u32 {
    let Some(key) = key else { return 0 };
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % partitions.max(1) as u64) as u32
}

/// Bus failures. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("invalid subscription: {0}")]
    InvalidSubscription(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("publish to {topic} failed: {reason}")]
    Publish { topic: String, reason: String },
    #[error("subscribe {group} to {filter} failed: {reason}")]
    Subscribe {
        group: String,
        filter: String,
        reason: String,
    },
    #[error("ack failed: {0}")]
    Ack(String),
    #[error("the bus is closed")]
    Closed,
    #[error("{0}")]
    Unsupported(String),
    #[error("reading the stored history of {filter} failed: {reason}")]
    History { filter: String, reason: String },
}

/// What a consumer group has yet to settle (see [`Bus::backlogs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Stored, not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked.
    pub unacked: u64,
}

/// One consumer group's backlog on one partition (see [`Bus::partition_backlogs`]): the lag that
/// operators scale consumer groups on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionBacklog {
    pub group: String,
    pub partition: u32,
    pub backlog: Backlog,
}

impl PartitionBacklog {
    /// From backlogs keyed by (group, partition), in key order.
    pub fn from_map(parts: std::collections::BTreeMap<(String, u32), Backlog>) -> Vec<PartitionBacklog> {
        parts
            .into_iter()
            .map(|((group, partition), backlog)| PartitionBacklog {
                group,
                partition,
                backlog,
            })
            .collect()
    }
}

/// Which stored messages a history read returns (see [`Bus::history`]).
#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Topic filter (wildcards as for subscriptions).
    pub filter: String,
    /// First message stored at or after this time (Unix microseconds); none: the oldest kept.
    pub since: Option<i64>,
    /// Stop before the first message stored after this time (Unix microseconds); none: at the end of
    /// what was stored when the read began.
    pub until: Option<i64>,
}

impl HistoryOptions {
    pub fn new(filter: impl Into<String>) -> Self {
        HistoryOptions {
            filter: filter.into(),
            since: None,
            until: None,
        }
    }
}

/// A message as the bus stored it, read back from its history.
#[derive(Clone, Debug)]
pub struct Stored {
    pub message: OutMessage,
    /// The bus's sequence number of the message (stream sequence on JetStream).
    pub sequence: u64,
    /// When the bus stored it (Unix microseconds).
    pub stored_at: i64,
}

/// Stored messages, oldest first; ends at the end of what was stored when the read began (or at
/// `until`). Reading acks nothing and moves no consumer group.
#[async_trait]
pub trait History: Send {
    /// The next stored message; `None` at the end.
    async fn next(&mut self) -> Option<Result<Stored, BusError>>;
    /// Messages stored in the range when the read began (an upper bound on what `next` returns).
    fn total(&self) -> u64;
}

/// Settles one delivery. Implemented by each bus.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Settles at once without awaiting, where the bus can (`ack` true: ack, else nack now).
    /// Returns false when the async path must be taken.
    fn settle_now(&self, _ack: bool) -> bool {
        false
    }
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// The redelivery delay asked for when a delivery is dropped unsettled (`None`: at once).
    fn drop_delay(&self) -> Option<Duration> {
        None
    }
    /// Asks for redelivery, after `delay` where the bus supports it.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), BusError>;
}

/// One message delivered to a group member. Ack it after processing; a delivery dropped without
/// ack or nack is delivered again (to this member or another).
pub struct Delivery {
    msg: Held,
    pub partition: u32,
    /// 1 on first delivery, 2 on the first redelivery, and so on.
    pub attempt: u32,
    acker: Option<Box<dyn Acker>>,
}

/// The message of a delivery: owned (decoded off the wire), shared with the bus's queue, or
/// packed into a buffer shared with the records read with it.
enum Held {
    Owned(OutMessage),
    Shared(std::sync::Arc<OutMessage>),
    #[cfg(feature = "kafka")]
    Packed(packed::Packed),
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic())
            .field("key", &self.key())
            .field("id", &self.id())
            .field("partition", &self.partition)
            .field("attempt", &self.attempt)
            .field("bytes", &self.payload().len())
            .finish()
    }
}

impl Delivery {
    pub fn new(msg: OutMessage, partition: u32, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            msg: Held::Owned(msg),
            partition,
            attempt,
            acker: Some(acker),
        }
    }

    /// A delivery of a message the bus keeps (no copy).
    pub fn shared(
        msg: std::sync::Arc<OutMessage>,
        partition: u32,
        attempt: u32,
        acker: Box<dyn Acker>,
    ) -> Self {
        Delivery {
            msg: Held::Shared(msg),
            partition,
            attempt,
            acker: Some(acker),
        }
    }

    /// A delivery of a packed message (no copy).
    #[cfg(feature = "kafka")]
    pub(crate) fn packed(msg: packed::Packed, partition: u32, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            msg: Held::Packed(msg),
            partition,
            attempt,
            acker: Some(acker),
        }
    }

    /// The concrete topic it was published to.
    pub fn topic(&self) -> &str {
        match &self.msg {
            Held::Owned(m) => &m.topic,
            Held::Shared(m) => &m.topic,
            #[cfg(feature = "kafka")]
            Held::Packed(m) => m.topic(),
        }
    }

    /// Its partition key.
    pub fn key(&self) -> Option<&str> {
        match &self.msg {
            Held::Owned(m) => m.key.as_deref(),
            Held::Shared(m) => m.key.as_deref(),
            #[cfg(feature = "kafka")]
            Held::Packed(m) => m.key(),
        }
    }

    /// Its de-duplication id (the event id); empty when the publisher gave none.
    pub fn id(&self) -> &str {
        match &self.msg {
            Held::Owned(m) => &m.id,
            Held::Shared(m) => &m.id,
            #[cfg(feature = "kafka")]
            Held::Packed(m) => m.id(),
        }
    }

    /// The encoded event.
    pub fn payload(&self) -> &[u8] {
        match &self.msg {
            Held::Owned(m) => &m.payload,
            Held::Shared(m) => &m.payload,
            #[cfg(feature = "kafka")]
            Held::Packed(m) => m.payload(),
        }
    }

    /// The encoded event as a handle of its own that shares the delivery's buffer (a reference
    /// count, no copy), for a consumer that keeps payloads after acking their deliveries.
    pub fn payload_bytes(&self) -> Bytes {
        match &self.msg {
            Held::Owned(m) => m.payload.clone(),
            Held::Shared(m) => m.payload.clone(),
            #[cfg(feature = "kafka")]
            Held::Packed(m) => m.payload_bytes(),
        }
    }

    /// Processing succeeded: never deliver it again.
    pub async fn ack(mut self) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) if a.settle_now(true) => Ok(()),
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }

    /// Processing failed: deliver it again, after `delay` where the bus supports it.
    pub async fn nack(mut self, delay: Option<Duration>) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.nack(delay).await,
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(a) = self.acker.take() {
            // Dropped unsettled: the consumer died or gave up. Ask for redelivery at once where we
            // can; buses whose nack needs a runtime fall back on ack_wait.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let delay = a.drop_delay();
                handle.spawn(async move {
                    let _ = a.nack(delay).await;
                });
            }
        }
    }
}

/// A group member's stream of deliveries.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the bus is closed.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
}

/// A message bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// `inproc`, `nats` or `kafka`.
    fn kind(&self) -> &'static str;
    /// Number of partitions every topic is split into.
    fn partitions(&self) -> u32;
    /// Publishes a batch. Returns once every message is stored (or dropped as a duplicate); on
    /// the in-process bus that may wait for room (backpressure).
    async fn publish(&self, batch: Vec<OutMessage>) -> Result<PublishReport, BusError>;
    /// Joins a consumer group (creating it durably if new).
    async fn subscribe(&self, opts: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError>;
    /// Checks the bus is reachable.
    async fn health(&self) -> Result<String, BusError>;
    /// Stops intake: subscriptions end once drained. Publishing after close fails.
    async fn close(&self);
    /// Waits until publishes and acks sent so far have left the process.
    async fn flush(&self) -> Result<(), BusError>;
    /// Per durable consumer group: messages not yet delivered, and delivered but not yet acked.
    /// Every stage has caught up with everything published when all are zero (a stage that holds
    /// messages on purpose, as fusion holds scores of open windows, keeps its unacked ones). Buses
    /// that cannot tell say so with [`BusError::Unsupported`].
    async fn backlogs(&self) -> Result<std::collections::BTreeMap<String, Backlog>, BusError> {
        Err(BusError::Unsupported(format!(
            "the {} bus does not report consumer backlogs",
            self.kind()
        )))
    }
    /// Every consumer group's backlog per partition (a group that reads several filters is summed
    /// per partition). Buses that cannot tell say so with [`BusError::Unsupported`].
    async fn partition_backlogs(&self) -> Result<Vec<PartitionBacklog>, BusError> {
        Err(BusError::Unsupported(format!(
            "the {} bus does not report consumer backlogs",
            self.kind()
        )))
    }
    /// Reads what the bus has kept of `opts.filter` from a start time, for backtests and audits.
    /// Buses that keep no history (the in-process bus) say so with [`BusError::Unsupported`].
    async fn history(&self, opts: HistoryOptions) -> Result<Box<dyn History>, BusError> {
        Err(BusError::Unsupported(format!(
            "the {} bus keeps no history to read {} from; record to a retained bus (NATS JetStream, Kafka) or to files",
            self.kind(),
            opts.filter
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of(None, 8), 0);
        assert_eq!(partition_of(Some("BTC"), 8), partition_of(Some("BTC"), 8));
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[partition_of(Some(&format!("SYM{i}")), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "poor spread: {seen:?}");
        // A fixed value, so that a change of hash (which would reorder keys across a
        // rolling upgrade) is caught.
        assert_eq!(partition_of(Some("BTCUSDT"), 1024), 556); // FNV-1a 64 = 0x3e640dbff523962c
    }

    #[test]
    fn member_partitions() {
        let o = SubscribeOptions::new("g", "a.>").member(1, 3);
        assert_eq!(o.validate(8).unwrap(), vec![1, 4, 7]);
        assert!(SubscribeOptions::new("g", "a.>")
            .member(3, 3)
            .validate(8)
            .is_err());
        assert!(SubscribeOptions::new("g", "a.>")
            .member(5, 9)
            .validate(4)
            .is_err());
        assert!(SubscribeOptions::new("g.x", "a").validate(1).is_err());
        assert!(SubscribeOptions::new("g", "a.>.b").validate(1).is_err());
    }
}
