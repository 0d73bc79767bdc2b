//! The Kafka bus (Apache Kafka, Redpanda, or any broker speaking the Kafka protocol), through
//! librdkafka.
//!
//! Layout and semantics, mirroring the NATS bus:
//!
//! - **Topics**: every AuroraQ topic of one family (its first token: `market`, `news`,
//!   `sentiment`, `dlq`, ...) lives in one Kafka topic `<root>.<family>`, created on first use
//!   (by a publish or a subscription) with the bus's partition count and retention. The AuroraQ
//!   topic travels in a short frame at the start of the record's value, with the message id and
//!   the publish time, before the payload ([`kafka_record`]; records of earlier versions carry
//!   them in headers: the one `aq` ([`META_HEADER`]), or `aq-topic`, `aq-id` and `aq-ts`, still
//!   read), so a filter such as `market.trades.>` is applied by the consumer; the messages of a
//!   family that a filter does not take are skipped (and committed past) without being
//!   delivered. One Kafka topic per family keeps the contract's per-key order across the topics
//!   of a filter (as NATS's one stream does), which one Kafka topic per AuroraQ topic could not.
//! - **Keys and partitions**: the record key is the message's partition key (asset or symbol),
//!   and the record's partition is [`partition_of`] of it, the same FNV hash every AuroraQ bus
//!   uses (not Kafka's murmur2), so per-key order holds and members split partitions as on NATS.
//! - **Producer**: idempotent (`enable.idempotence`, `acks=all`), so librdkafka's own retries
//!   never store a message twice or out of order. Kafka has no de-duplication by message id, so
//!   this bus keeps one in two places, each over a bounded window (an id is remembered until at
//!   least `duplicate_window` or `dedup_capacity` newer ids have passed, whichever comes first;
//!   at most twice `dedup_capacity` ids are kept, in two generations, the older dropped whole):
//!   the publisher drops an id it published itself within the window (counted in
//!   [`PublishReport::duplicates`]), and each group member drops a message whose id it already
//!   saw at an earlier offset of the same partition within the window (a re-publish by another
//!   process; it is acked without being delivered). What neither saw (a re-publish after
//!   the window, or across a member's restart) is delivered twice: the stages are idempotent by
//!   event id.
//! - **Consumer groups**: the AuroraQ group `g` reading filter `f` is the Kafka group
//!   `<root>.<g>.<f>` (one AuroraQ group may hold several filters, as on NATS). Members take their
//!   partitions by `member`/`members` (partition `p` when `p % members == member`) with an
//!   explicit assignment, not through Kafka's group protocol: the split is static and the same on
//!   every bus, and no broker-driven rebalance can hand a key to two members in turn. The group
//!   only keeps the committed offsets.
//! - **Acks and commits**: a member commits, per partition, the end of the contiguous prefix of
//!   settled offsets (acked, or skipped), so an ack out of order never commits past an unacked
//!   message. Commits go out at most every `commit_interval`, on [`Bus::flush`] and when the member
//!   stops. The commit's metadata carries the highest offset the member had delivered (`d=<n>`),
//!   so a member that takes the partition over counts the attempts of what it gets again (≥ 2).
//! - **Hand-off**: each member has a reader task that takes every record librdkafka has ready
//!   (up to 512) in one turn, decodes them, checks them against the filter, hashes their ids for
//!   the id windows, copies each into a chunk shared with the records after it
//!   (`packed.rs`: one allocation per chunk, not five per record) and passes them to the
//!   member as one batch; the member (de-duplication, offsets, deliveries, settlements) hands the
//!   deliveries, within its `max_in_flight`, to the subscription as one batch. Acks go onto a
//!   locked vector that the member swaps out whole. A thread wakes once per batch, not per record.
//! - **Redelivery**: a nacked delivery, one not acked within `ack_wait`, and one dropped unsettled
//!   is delivered again by the member (Kafka has no per-message nack; the member keeps the
//!   message until it is acked). When a member goes away (dies, stops, or the split changes on a
//!   restart), the next owner of the partition resumes at the committed offset: everything not
//!   acked is delivered again.
//! - **History** ([`Bus::history`]) finds its start per partition with `offsetsForTimes` and
//!   merges the partitions by publish time (from the record's frame, microseconds); **backlogs**
//!   ([`Bus::backlogs`]) are the consumer lag per partition: log end offset minus committed
//!   offset, split into delivered-unacked and pending by the highest offset the member received
//!   (delivered, or skipped behind an unacked one). That mark goes in the commit's metadata and,
//!   since brokers such as tansu (0.6) drop commit metadata, is also committed as an offset
//!   (mark + 1) to a marks group `<root>-delivered.<group>.<filter>`. An idle member (every
//!   delivery taken, no settlement waiting) commits within ~10 ms rather than at
//!   `commit_interval`, so the multi-process `auroraq run`, which waits on backlogs between
//!   events, is not paced by the commit cadence.
//! - **Client teardown**: a consumer that read assigned partitions could block in
//!   `rd_kafka_destroy` when dropped on a runtime worker (cause not pinned down: likely its
//!   broker thread waiting on a fetch/commit reply whose op must be served by a queue nobody
//!   polls any more). Members unassign on drop and every client is dropped on a thread of its
//!   own ([`drop_off_runtime`]): the thread ends when the destroy does (no thread per
//!   subscription is kept in a long-running process unless a destroy hangs), and a hung destroy
//!   never blocks the runtime or process exit (the process exits without joining it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::id_window::{IdSeeds, IdWindow};
use crate::kafka_record;
use crate::packed::{Packed, Packer};
use crate::{
    partition_of, topics, Acker, Backlog, Bus, BusError, Delivery, History, HistoryOptions, OutMessage,
    PartitionBacklog, PublishReport, Stored, SubscribeOptions, Subscription,
};

/// Least time between two commits of an idle member (see `Member::commit_due`), and its tick.
const IDLE_COMMIT_GAP: Duration = Duration::from_millis(10);

/// The one header this bus wrote before the frame of [`kafka_record`] (still read): `<publish
/// time, Unix µs> <AuroraQ topic> <message id>`, separated by single spaces (topics have none;
/// the id is the rest, and may be empty).
pub const META_HEADER: &str = "aq";
/// The header that carried the AuroraQ topic before [`META_HEADER`] (still read).
pub const TOPIC_HEADER: &str = "aq-topic";
/// The header that carried the message id (the event id) before [`META_HEADER`] (still read).
pub const ID_HEADER: &str = "aq-id";
/// The header that carried the publish time, Unix µs, before [`META_HEADER`] (still read).
pub const TIME_HEADER: &str = "aq-ts";

/// Settings of the Kafka bus.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// The URL as given (`kafka://host:port[,host:port]`), for messages.
    pub url: String,
    /// `bootstrap.servers`: `host:port[,host:port]`.
    pub brokers: String,
    /// First part of every Kafka topic and group name: topics are `<root>.<family>`.
    pub root: String,
    /// Partitions of the topics this bus creates. All processes on one bus must agree.
    pub partitions: u32,
    /// Replication factor of the topics this bus creates; -1: the broker's default.
    pub replication: i32,
    /// How long the topics this bus creates keep messages (`retention.ms`).
    pub retention: Duration,
    /// Window in which a re-published id is dropped (see the module's notes).
    pub duplicate_window: Duration,
    /// Ids per generation of the de-duplication windows, of the publisher and of each member
    /// partition (at most twice this many are remembered). Memory grows with the ids seen, up to
    /// about 84 bytes per id of this at full use (two generations, each a table at most half
    /// full, 16 bytes a slot): 8.4 MB per member partition at the default 100,000.
    pub dedup_capacity: usize,
    /// Most time between an ack and the commit that covers it.
    pub commit_interval: Duration,
    /// How often a subscription with a wildcard family looks for new topics.
    pub discovery_interval: Duration,
    /// `session.timeout.ms` of the consumers.
    pub session_timeout: Duration,
    /// Timeout of the broker requests made at start-up and by admin calls.
    pub request_timeout: Duration,
    /// Further librdkafka settings for every client (producer, consumers, admin), applied last.
    pub client: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Settings for `kafka://host:port[,host:port]` (or a bare `host:port` list).
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let brokers = url
            .trim()
            .trim_start_matches("kafka://")
            .trim_end_matches('/')
            .to_owned();
        KafkaConfig {
            url,
            brokers,
            root: "aq".into(),
            partitions: 8,
            replication: -1,
            retention: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            dedup_capacity: 100_000,
            commit_interval: Duration::from_millis(100),
            discovery_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(6),
            request_timeout: Duration::from_secs(10),
            client: Vec::new(),
        }
    }

    /// Settings every client of the bus starts from: the brokers, then [`KafkaConfig::client`].
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "auroraq")
            .set("socket.keepalive.enable", "true")
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// The producer's settings: idempotent (`acks=all`), `linger.ms` 2, a 30 s delivery timeout,
    /// then [`KafkaConfig::client`]. Public so that a baseline (`auroraq bench bus --kafka`) runs
    /// with exactly the bus's settings.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// A consumer's settings in the Kafka group `group_id`: manual commits, from the earliest
    /// offset when the group has none, then [`KafkaConfig::client`].
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string())
            // What librdkafka prefetches per partition: the member holds at most max_in_flight
            // deliveries, this bounds what waits behind them.
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.wait.max.ms", "100")
            // How long librdkafka waits before fetching again once that prefetch is full: at
            // the default 1 s a member slower than its broker stalled a second per 16 MB
            // (`bench bus --kafka` with 400,000 events: idle gaps of 0.7 - 1 s between bursts).
            .set("fetch.queue.backoff.ms", "10");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// The Kafka topic of an AuroraQ topic: `<root>.<family>`.
fn kafka_topic(root: &str, topic: &str) -> String {
    let family = topic.split('.').next().unwrap_or(topic);
    format!("{root}.{family}")
}

/// The Kafka group of a group's subscription to a filter: `<root>.<group>.<filter>`, the
/// filter's wildcards spelled `ANY` (`*`) and `ALL` (`>`), which no topic token can be (tokens
/// are lower-case). Plain `[A-Za-z0-9._-]` names: tansu (0.6) does not list groups whose ids
/// hold `>`.
fn group_id(root: &str, group: &str, filter: &str) -> String {
    let filter: Vec<&str> = filter
        .split('.')
        .map(|t| match t {
            "*" => "ANY",
            ">" => "ALL",
            t => t,
        })
        .collect();
    format!("{root}.{group}.{}", filter.join("."))
}

/// The Kafka group that keeps a group's delivered marks: `<root>-delivered.<group>.<filter>`
/// (see the module's notes; [`parse_group_id`] does not take it for a group of the bus).
fn marks_group_id(root: &str, group_id: &str) -> String {
    let rest = group_id
        .strip_prefix(root)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(group_id);
    format!("{root}-delivered.{rest}")
}

/// The group and filter of a Kafka group id of this bus.
fn parse_group_id(root: &str, id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix(root)?.strip_prefix('.')?;
    let (group, filter) = rest.split_once('.')?;
    let filter: Vec<&str> = filter
        .split('.')
        .map(|t| match t {
            "ANY" => "*",
            "ALL" => ">",
            t => t,
        })
        .collect();
    let filter = filter.join(".");
    (!group.is_empty() && topics::validate_filter(&filter).is_ok()).then(|| (group.to_owned(), filter))
}

/// Whether the Kafka topic `<root>.<family>` can hold topics `filter` takes.
fn family_matches(root: &str, filter: &str, ktopic: &str) -> bool {
    let Some(family) = ktopic.strip_prefix(root).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    if family.is_empty() || family.contains('.') {
        return false;
    }
    match filter.split('.').next() {
        Some("*") | Some(">") => true,
        Some(f) => f == family,
        None => false,
    }
}

/// The family's Kafka topic when the filter names one (not a wildcard).
fn concrete_family(root: &str, filter: &str) -> Option<String> {
    match filter.split('.').next() {
        Some("*") | Some(">") | None => None,
        Some(f) => Some(format!("{root}.{f}")),
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Drops a librdkafka client (or what holds one) on a thread of its own. Destroying a consumer
/// that read assigned partitions blocked (in `rd_kafka_destroy`, joining its broker thread) when
/// done on a runtime worker, so the last reference never goes there; if the destroy hangs, only
/// that thread waits.
fn drop_off_runtime<T: Send + 'static>(t: T) {
    if let Err(e) = std::thread::Builder::new()
        .name("kafka-drop".into())
        .spawn(move || drop(t))
    {
        warn!(error = %e, "cannot start a thread to drop a Kafka client; leaking it");
    }
}

/// A shared librdkafka client whose reference is dropped by [`drop_off_runtime`].
struct OffRuntime<T: Send + Sync + 'static>(Option<Arc<T>>);

impl<T: Send + Sync + 'static> OffRuntime<T> {
    fn new(t: T) -> Self {
        OffRuntime(Some(Arc::new(t)))
    }

    fn share(&self) -> Self {
        OffRuntime(self.0.clone())
    }
}

impl<T: Send + Sync + 'static> std::ops::Deref for OffRuntime<T> {
    type Target = Arc<T>;
    fn deref(&self) -> &Arc<T> {
        // Some until dropped.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("an OffRuntime client used after drop"))
    }
}

impl<T: Send + Sync + 'static> Drop for OffRuntime<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            drop_off_runtime(t);
        }
    }
}

/// Runs a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a blocking Kafka call failed: {e}"))
}

type Tp = (Arc<str>, i32);

/// A member that has stopped: what it had delivered, for the next owner of its partitions in
/// this process (brokers that drop commit metadata, as tansu does, lose this across processes).
type Handover = HashMap<(String, Arc<str>, i32), i64>;

impl MemberHandle {
    /// Stopping or stopped: its subscription is gone (or the member let go of it), and it has
    /// not finished committing.
    fn leaving(&self) -> bool {
        !*self.done.borrow() && self.tx.upgrade().is_none_or(|tx| tx.is_closed())
    }

    fn running(&self) -> bool {
        !*self.done.borrow() && self.tx.upgrade().is_some_and(|tx| !tx.is_closed())
    }
}

/// A running group member, as the bus sees it.
struct MemberHandle {
    group_id: String,
    /// Closed once the member's subscription is gone (weak: the member's end of it must close
    /// the subscription when the member stops).
    tx: mpsc::WeakSender<Batch>,
    cmd: mpsc::UnboundedSender<Cmd>,
    done: watch::Receiver<bool>,
    transient: bool,
}

struct Shared {
    cfg: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// For metadata, watermarks and group listings.
    meta: Arc<BaseConsumer>,
    /// One idle consumer per Kafka group (a group of the bus, or its marks group), to read and
    /// commit its offsets.
    group_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    known_topics: Mutex<HashSet<String>>,
    published: Mutex<IdWindow>,
    last_stamp: AtomicU64,
    members: Mutex<Vec<MemberHandle>>,
    handover: Mutex<Handover>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
}

/// The Kafka bus. Cheap to clone; clones share the clients.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Shared>,
}

impl KafkaBus {
    /// Connects (checks that a broker answers) and prepares the producer.
    pub async fn connect(cfg: KafkaConfig) -> Result<Self, BusError> {
        let connect_err = |reason: String| BusError::Connect {
            url: cfg.url.clone(),
            reason,
        };
        if cfg.partitions == 0 {
            return Err(connect_err("partitions must be at least 1".into()));
        }
        if cfg.brokers.is_empty() || cfg.brokers.split(',').any(|b| b.trim().is_empty()) {
            return Err(connect_err("no broker: kafka://host:port[,host:port]".into()));
        }
        topics::validate_topic(&cfg.root).map_err(connect_err)?;
        let producer: FutureProducer = cfg
            .producer_config()
            .create()
            .map_err(|e| connect_err(format!("producer: {e}")))?;
        let admin: AdminClient<DefaultClientContext> = cfg
            .client_config()
            .create()
            .map_err(|e| connect_err(format!("admin client: {e}")))?;
        let meta: BaseConsumer = cfg
            .consumer_config(&format!("{}.-meta", cfg.root))
            .create()
            .map_err(|e| connect_err(format!("metadata client: {e}")))?;
        let meta = Arc::new(meta);
        let timeout = cfg.request_timeout;
        let m = meta.clone();
        let brokers = blocking(move || m.fetch_metadata(None, timeout).map(|md| md.brokers().len()))
            .await
            .map_err(connect_err)?
            .map_err(|e| connect_err(e.to_string()))?;
        info!(brokers, url = %cfg.brokers, "connected to Kafka");
        let (shutdown, _) = watch::channel(false);
        let published = IdWindow::new(cfg.duplicate_window, cfg.dedup_capacity);
        Ok(KafkaBus {
            inner: Arc::new(Shared {
                cfg,
                producer,
                admin,
                meta,
                group_readers: Mutex::new(HashMap::new()),
                known_topics: Mutex::new(HashSet::new()),
                published: Mutex::new(published),
                last_stamp: AtomicU64::new(0),
                members: Mutex::new(Vec::new()),
                handover: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                shutdown,
            }),
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.cfg
    }

    /// Deletes every Kafka topic and group under this bus's root. For tests and admin use.
    pub async fn delete_all(&self) -> Result<(), BusError> {
        let cfg = &self.inner.cfg;
        let err = |reason: String| BusError::Connect {
            url: cfg.url.clone(),
            reason,
        };
        let names = self.topics_under_root().await.map_err(err)?;
        let opts = AdminOptions::new().request_timeout(Some(cfg.request_timeout));
        if !names.is_empty() {
            let refs: Vec<&str> = names.keys().map(String::as_str).collect();
            self.inner
                .admin
                .delete_topics(&refs, &opts)
                .await
                .map_err(|e| err(format!("deleting topics: {e}")))?;
        }
        let mut groups = self.groups().await.map_err(err)?;
        let marks: Vec<String> = groups.iter().map(|g| marks_group_id(&cfg.root, g)).collect();
        groups.extend(marks);
        if !groups.is_empty() {
            let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
            let _ = self.inner.admin.delete_groups(&refs, &opts).await;
        }
        Ok(())
    }

    /// Waits (at most `timeout`) until every member of this bus has committed and stopped, as
    /// they do after [`Bus::close`] or once their subscriptions are dropped. A process should
    /// close the bus and wait for this before its runtime goes: librdkafka does not finish
    /// destroying a consumer dropped mid-flight with the runtime (the drop hangs).
    pub async fn stopped(&self, timeout: Duration) -> bool {
        let running: Vec<watch::Receiver<bool>> = match self.inner.members.lock() {
            Ok(m) => m.iter().map(|h| h.done.clone()).collect(),
            Err(_) => Vec::new(),
        };
        tokio::time::timeout(timeout, async {
            for mut done in running {
                let _ = done.wait_for(|d| *d).await;
            }
        })
        .await
        .is_ok()
    }

    /// A publish time that never goes backwards in this process (microseconds).
    fn stamp(&self) -> i64 {
        let now = now_us().max(0) as u64;
        let mut prev = self.inner.last_stamp.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self
                .inner
                .last_stamp
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next as i64,
                Err(p) => prev = p,
            }
        }
    }

    /// Creates the Kafka topic if this process has not seen it yet (an existing one is fine).
    async fn ensure_topic(&self, ktopic: &str) -> Result<(), String> {
        if self
            .inner
            .known_topics
            .lock()
            .map(|k| k.contains(ktopic))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let cfg = &self.inner.cfg;
        let retention = cfg.retention.as_millis().to_string();
        let topic = NewTopic::new(
            ktopic,
            cfg.partitions as i32,
            TopicReplication::Fixed(cfg.replication),
        )
        .set("retention.ms", &retention);
        let opts = AdminOptions::new()
            .request_timeout(Some(cfg.request_timeout))
            .operation_timeout(Some(cfg.request_timeout));
        let results = self
            .inner
            .admin
            .create_topics([&topic], &opts)
            .await
            .map_err(|e| format!("creating topic {ktopic}: {e}"))?;
        for r in results {
            match r {
                Ok(name) => info!(topic = %name, partitions = cfg.partitions, "created Kafka topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
            }
        }
        if let Ok(mut k) = self.inner.known_topics.lock() {
            k.insert(ktopic.to_owned());
        }
        Ok(())
    }

    /// Every Kafka topic under the root, with its partition count.
    async fn topics_under_root(&self) -> Result<BTreeMap<String, i32>, String> {
        let meta = self.inner.meta.clone();
        let timeout = self.inner.cfg.request_timeout;
        let prefix = format!("{}.", self.inner.cfg.root);
        blocking(move || {
            meta.fetch_metadata(None, timeout).map(|md| {
                md.topics()
                    .iter()
                    .filter(|t| t.name().starts_with(&prefix) && t.error().is_none())
                    .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
                    .collect::<BTreeMap<_, _>>()
            })
        })
        .await?
        .map_err(|e| format!("reading the topics: {e}"))
    }

    /// The Kafka topics (with partition counts) a filter reads now.
    async fn topics_for(&self, filter: &str) -> Result<BTreeMap<String, i32>, String> {
        let root = &self.inner.cfg.root;
        Ok(self
            .topics_under_root()
            .await?
            .into_iter()
            .filter(|(t, n)| *n > 0 && family_matches(root, filter, t))
            .collect())
    }

    /// The Kafka groups of this bus.
    async fn groups(&self) -> Result<Vec<String>, String> {
        let meta = self.inner.meta.clone();
        let timeout = self.inner.cfg.request_timeout;
        let root = self.inner.cfg.root.clone();
        blocking(move || {
            meta.fetch_group_list(None, timeout).map(|l| {
                l.groups()
                    .iter()
                    .map(|g| g.name().to_owned())
                    .filter(|g| parse_group_id(&root, g).is_some())
                    .collect::<Vec<_>>()
            })
        })
        .await?
        .map_err(|e| format!("listing the consumer groups: {e}"))
    }

    /// Offsets by timestamp (`Offset::End` / `Beginning` for the log end and start) of many
    /// partitions in one request. A partition has none when no message is at or after the time.
    /// A partition whose look-up failed is asked again (up to [`OFFSET_TRIES`] times); if it
    /// still fails, so does the call: a failed look-up is never taken for an empty partition
    /// (a history read would have skipped the partition's messages).
    async fn offsets(
        &self,
        tps: &[(String, i32)],
        at: Offset,
    ) -> Result<HashMap<(String, i32), i64>, String> {
        let mut found = HashMap::new();
        let mut ask: Vec<(String, i32)> = tps.to_vec();
        for attempt in 1..=OFFSET_TRIES {
            if ask.is_empty() {
                break;
            }
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &ask {
                tpl.add_partition_offset(t, *p, at)
                    .map_err(|e| format!("offsets of {t}/{p}: {e}"))?;
            }
            let meta = self.inner.meta.clone();
            let timeout = self.inner.cfg.request_timeout;
            let out = blocking(move || meta.offsets_for_times(tpl, timeout))
                .await?
                .map_err(|e| format!("listing offsets: {e}"))?;
            let mut failed = Vec::new();
            for e in out.elements() {
                let tp = (e.topic().to_owned(), e.partition());
                match (e.error(), e.offset()) {
                    (Err(err), _) => failed.push((tp, err)),
                    (Ok(()), Offset::Offset(o)) => {
                        found.insert(tp, o);
                    }
                    (Ok(()), _) => {}
                }
            }
            if let Some(((t, p), err)) = failed.first().filter(|_| attempt == OFFSET_TRIES) {
                return Err(format!(
                    "listing offsets: {t}/{p}: {err} ({} partitions failed {OFFSET_TRIES} times)",
                    failed.len()
                ));
            }
            ask = failed.into_iter().map(|(tp, _)| tp).collect();
        }
        Ok(found)
    }

    /// The idle client of a Kafka group (created on first use), to read and commit its offsets.
    fn group_client(&self, gid: &str) -> Result<Arc<BaseConsumer>, String> {
        let mut readers = self
            .inner
            .group_readers
            .lock()
            .map_err(|_| "a group reader panicked".to_owned())?;
        if let Some(r) = readers.get(gid) {
            return Ok(r.clone());
        }
        let r: BaseConsumer = self
            .inner
            .cfg
            .consumer_config(gid)
            .create()
            .map_err(|e| format!("group reader for {gid}: {e}"))?;
        let r = Arc::new(r);
        readers.insert(gid.to_owned(), r.clone());
        Ok(r)
    }

    /// The committed offsets (None: none committed) and their metadata of a Kafka group.
    async fn committed(
        &self,
        gid: &str,
        tps: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), (Option<i64>, String)>, String> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        let reader = self.group_client(gid)?;
        let timeout = self.inner.cfg.request_timeout;
        let committed = blocking(move || reader.committed_offsets(tpl, timeout))
            .await?
            .map_err(|e| format!("committed offsets of {gid}: {e}"))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (
                    (e.topic().to_owned(), e.partition()),
                    (offset, e.metadata().to_owned()),
                )
            })
            .collect())
    }

    /// Waits for this process's members of `group_id` whose subscriptions are gone to commit
    /// and stop, so that a new member starts where they left off.
    async fn wait_for_leavers(&self, group_id: &str) {
        let leaving: Vec<watch::Receiver<bool>> = match self.inner.members.lock() {
            Ok(m) => m
                .iter()
                .filter(|h| h.group_id == group_id && h.leaving())
                .map(|h| h.done.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        for mut done in leaving {
            let _ = tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d)).await;
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn partitions(&self) -> u32 {
        self.inner.cfg.partitions
    }

    async fn publish(&self, batch: Vec<OutMessage>) -> Result<PublishReport, BusError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        for m in &batch {
            topics::validate_topic(&m.topic).map_err(BusError::InvalidTopic)?;
            kafka_record::check(&m.topic, &m.id).map_err(|e| BusError::Publish {
                topic: m.topic.clone(),
                reason: e.to_string(),
            })?;
        }
        let cfg = &self.inner.cfg;
        let mut report = PublishReport::default();
        let mut pending = Vec::with_capacity(batch.len());
        let mut in_batch: HashSet<u128, foldhash::fast::RandomState> = HashSet::default();
        // The Kafka topic of the last AuroraQ topic (a batch is mostly one topic).
        let mut last_topic: Option<(String, String)> = None;
        // The record's value (frame and payload), built in one buffer for the whole batch.
        let mut value = Vec::new();
        let now = now_us();
        for m in batch {
            let mut key = None;
            if !m.id.is_empty() {
                let (k, seen) = match self.inner.published.lock() {
                    Ok(mut w) => {
                        let k = w.key(&m.id);
                        (Some(k), w.seen_key(k, now))
                    }
                    Err(_) => (None, false),
                };
                if seen || k.is_some_and(|k| !in_batch.insert(k)) {
                    report.duplicates += 1;
                    continue;
                }
                key = k;
            }
            if last_topic.as_ref().is_none_or(|(t, _)| *t != m.topic) {
                let ktopic = kafka_topic(&cfg.root, &m.topic);
                self.ensure_topic(&ktopic)
                    .await
                    .map_err(|reason| BusError::Publish {
                        topic: m.topic.clone(),
                        reason,
                    })?;
                last_topic = Some((m.topic.clone(), ktopic));
            }
            let ktopic = last_topic.as_ref().map_or("", |(_, k)| k.as_str());
            let partition = partition_of(m.key.as_deref(), cfg.partitions) as i32;
            let stamp = self.stamp();
            kafka_record::write(&mut value, &m.topic, &m.id, stamp, &m.payload).map_err(|e| {
                BusError::Publish {
                    topic: m.topic.clone(),
                    reason: e.to_string(),
                }
            })?;
            let mut record = FutureRecord::<str, [u8]>::to(ktopic)
                .payload(&value[..])
                .partition(partition)
                .timestamp(stamp / 1000);
            if let Some(k) = &m.key {
                record = record.key(k.as_str());
            }
            let fut = loop {
                match self.inner.producer.send_result(record) {
                    Ok(f) => break f,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: wait for deliveries to make room.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        return Err(BusError::Publish {
                            topic: m.topic.clone(),
                            reason: e.to_string(),
                        })
                    }
                }
            };
            pending.push((m, key, fut));
        }
        for (m, key, fut) in pending {
            match fut.await {
                Ok(Ok(_)) => {
                    report.stored += 1;
                    if let Some(k) = key {
                        if let Ok(mut w) = self.inner.published.lock() {
                            w.insert_key(k, now_us());
                        }
                    }
                }
                Ok(Err((e, _))) => {
                    return Err(BusError::Publish {
                        topic: m.topic.clone(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(BusError::Publish {
                        topic: m.topic.clone(),
                        reason: "the producer went away before the broker answered".into(),
                    })
                }
            }
        }
        Ok(report)
    }

    async fn subscribe(&self, opts: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let cfg = &self.inner.cfg;
        let mine = opts.validate(cfg.partitions)?;
        let err = |reason: String| BusError::Subscribe {
            group: opts.group.clone(),
            filter: opts.filter.clone(),
            reason,
        };
        let gid = group_id(&cfg.root, &opts.group, &opts.filter);
        self.wait_for_leavers(&gid).await;
        if let Some(family) = concrete_family(&cfg.root, &opts.filter) {
            // Create it now, so that the member reads it from its first message on.
            self.ensure_topic(&family).await.map_err(err)?;
        }
        let consumer: StreamConsumer = cfg
            .consumer_config(&gid)
            .create()
            .map_err(|e| err(format!("consumer: {e}")))?;
        // Never full: a batch holds at least one delivery, and at most max_in_flight are out.
        let (tx, rx) = mpsc::channel(opts.max_in_flight.clamp(1, 4096));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let marks_id = marks_group_id(&cfg.root, &gid);
        let marks = self.group_client(&marks_id).map_err(err)?;
        let mut member = Member {
            bus: self.clone(),
            consumer: OffRuntime::new(consumer),
            group_id: gid.clone(),
            marks_id,
            marks,
            marking: None,
            joined_us: now_us(),
            mine: mine.iter().map(|p| *p as i32).collect(),
            opts: opts.clone(),
            parts: Vec::new(),
            part_ids: HashMap::default(),
            last_part: None,
            seeds: IdSeeds::default(),
            redeliver: VecDeque::new(),
            part_tps: Vec::new(),
            out: 0,
            tx: Some(tx.clone()),
            settlements: Arc::default(),
            settled: Vec::new(),
            cmd_rx,
            shutdown: self.inner.shutdown.subscribe(),
            last_commit: Instant::now(),
            duplicates: 0,
        };
        // Assign what exists now before returning: the group exists (and keeps its place) from
        // this call on.
        member.discover().await.map_err(err)?;
        if let Ok(mut m) = self.inner.members.lock() {
            m.retain(|h| !*h.done.borrow());
            m.push(MemberHandle {
                group_id: gid,
                tx: tx.downgrade(),
                cmd: cmd_tx,
                done: done_rx,
                transient: opts.transient,
            });
        }
        tokio::spawn(async move {
            member.run().await;
            let _ = done_tx.send(true);
        });
        Ok(Box::new(KafkaSubscription {
            rx,
            ready: VecDeque::new(),
        }))
    }

    async fn backlogs(&self) -> Result<BTreeMap<String, Backlog>, BusError> {
        let mut groups = BTreeMap::<String, Backlog>::new();
        for p in self.partition_backlogs().await? {
            let b = groups.entry(p.group).or_default();
            b.pending += p.backlog.pending;
            b.unacked += p.backlog.unacked;
        }
        Ok(groups)
    }

    async fn partition_backlogs(&self) -> Result<Vec<PartitionBacklog>, BusError> {
        let cfg = &self.inner.cfg;
        let err = |reason: String| BusError::Connect {
            url: cfg.url.clone(),
            reason,
        };
        // Every request at once: `auroraq run` on processes asks this between any two events.
        let (groups, topics) = futures::join!(self.groups(), self.topics_under_root());
        let (groups, topics) = (groups.map_err(err)?, topics.map_err(err)?);
        let all: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
            .collect();
        let (ends, starts) = futures::join!(
            self.offsets(&all, Offset::End),
            self.offsets(&all, Offset::Beginning)
        );
        let (ends, starts) = (ends.map_err(err)?, starts.map_err(err)?);
        let mut reads = Vec::new();
        for gid in groups {
            let Some((group, filter)) = parse_group_id(&cfg.root, &gid) else {
                continue;
            };
            let tps: Vec<(String, i32)> = all
                .iter()
                .filter(|(t, _)| family_matches(&cfg.root, &filter, t))
                .cloned()
                .collect();
            if tps.is_empty() {
                continue;
            }
            let marks = marks_group_id(&cfg.root, &gid);
            reads.push(async move {
                let (committed, marked) =
                    futures::join!(self.committed(&gid, &tps), self.committed(&marks, &tps));
                (group, committed, marked)
            });
        }
        let mut parts = BTreeMap::<(String, u32), Backlog>::new();
        for (group, committed, marked) in futures::future::join_all(reads).await {
            let (committed, marked) = (committed.map_err(err)?, marked.map_err(err)?);
            for (key, (offset, metadata)) in committed {
                let end = ends.get(&key).copied().unwrap_or(0);
                let start = starts.get(&key).copied().unwrap_or(0);
                let at = offset.unwrap_or(start);
                let lag = (end - at).max(0) as u64;
                // Delivered up to here: the mark, or (a broker keeping commit metadata) the
                // commit's own record of it.
                let mark = marked.get(&key).and_then(|(o, _)| *o);
                let delivered = delivered_through(&metadata)
                    .map(|d| d + 1)
                    .into_iter()
                    .chain(mark)
                    .max()
                    .map(|d| d.min(end));
                let unacked = delivered.map(|d| (d - at).max(0) as u64).unwrap_or(0).min(lag);
                let b = parts.entry((group.clone(), key.1 as u32)).or_default();
                b.pending += lag - unacked;
                b.unacked += unacked;
            }
        }
        Ok(PartitionBacklog::from_map(parts))
    }

    async fn history(&self, opts: HistoryOptions) -> Result<Box<dyn History>, BusError> {
        topics::validate_filter(&opts.filter).map_err(BusError::InvalidSubscription)?;
        let cfg = &self.inner.cfg;
        let err = |reason: String| BusError::History {
            filter: opts.filter.clone(),
            reason,
        };
        let began = now_us();
        let topics = self.topics_for(&opts.filter).await.map_err(err)?;
        let all: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
            .collect();
        let ends = self.offsets(&all, Offset::End).await.map_err(err)?;
        let starts = match opts.since {
            // The first offset at or after the start (in ms, Kafka's resolution; the rest is
            // skipped by the publish time in microseconds).
            Some(us) => self
                .offsets(&all, Offset::Offset(us.div_euclid(1000)))
                .await
                .map_err(err)?,
            None => self.offsets(&all, Offset::Beginning).await.map_err(err)?,
        };
        let consumer: StreamConsumer = cfg
            .consumer_config(&format!("{}.-history", cfg.root))
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| err(format!("reader: {e}")))?;
        let consumer = OffRuntime::new(consumer);
        let mut tpl = TopicPartitionList::new();
        let mut total = 0u64;
        let mut live = Vec::new();
        for tp in &all {
            let end = ends.get(tp).copied().unwrap_or(0);
            // No offset at or after the start time: nothing to read there.
            // (Kafka answers no offset for a start time after the last message: nothing there.)
            let Some(start) = starts.get(tp).copied() else {
                continue;
            };
            total += (end - start).max(0) as u64;
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(start))
                .map_err(|e| err(e.to_string()))?;
            live.push(tp.clone());
        }
        if !live.is_empty() {
            consumer
                .assign(&tpl)
                .map_err(|e| err(format!("assigning: {e}")))?;
        }
        let mut queues = Vec::new();
        for (t, p) in live {
            match consumer.split_partition_queue(&t, p) {
                Some(q) => queues.push(PartQueue {
                    queue: q,
                    head: None,
                    done: false,
                }),
                None => return Err(err(format!("cannot read {t}/{p} on its own"))),
            }
        }
        // The main queue must be served for librdkafka's events; it gets no messages.
        let c = consumer.share();
        let server = tokio::spawn(async move {
            loop {
                if let Err(e) = c.recv().await {
                    debug!(error = %e, "history reader event");
                }
            }
        });
        debug!(filter = %opts.filter, since = ?opts.since, until = ?opts.until, total, "history read");
        Ok(Box::new(KafkaHistory {
            _consumer: consumer,
            server,
            queues,
            filter: opts.filter,
            since: opts.since,
            until: opts.until.map_or(began, |u| u.min(began)),
            total,
            sequence: 0,
        }))
    }

    async fn health(&self) -> Result<String, BusError> {
        let cfg = &self.inner.cfg;
        let meta = self.inner.meta.clone();
        let timeout = cfg.request_timeout;
        let prefix = format!("{}.", cfg.root);
        let (brokers, topics) = blocking(move || {
            meta.fetch_metadata(None, timeout).map(|md| {
                (
                    md.brokers().len(),
                    md.topics()
                        .iter()
                        .filter(|t| t.name().starts_with(&prefix))
                        .count(),
                )
            })
        })
        .await
        .map_err(|reason| BusError::Connect {
            url: cfg.url.clone(),
            reason,
        })?
        .map_err(|e| BusError::Connect {
            url: cfg.url.clone(),
            reason: format!("Kafka unavailable: {e}"),
        })?;
        Ok(format!(
            "Kafka at {}: {brokers} broker(s), {topics} topic(s) under {}.*",
            cfg.brokers, cfg.root
        ))
    }

    async fn flush(&self) -> Result<(), BusError> {
        let producer = self.inner.producer.clone();
        let timeout = self.inner.cfg.request_timeout;
        blocking(move || producer.flush(timeout))
            .await
            .map_err(BusError::Ack)?
            .map_err(|e| BusError::Ack(format!("flush: {e}")))?;
        let cmds: Vec<mpsc::UnboundedSender<Cmd>> = match self.inner.members.lock() {
            Ok(m) => m.iter().map(|h| h.cmd.clone()).collect(),
            Err(_) => Vec::new(),
        };
        for cmd in cmds {
            let (tx, rx) = oneshot::channel();
            if cmd.send(Cmd::Commit(tx)).is_ok() {
                let _ = tokio::time::timeout(timeout, rx).await;
            }
        }
        Ok(())
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let _ = self.inner.shutdown.send(true);
        let producer = self.inner.producer.clone();
        let timeout = self.inner.cfg.request_timeout;
        match blocking(move || producer.flush(timeout)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "Kafka producer flush on close failed"),
            Err(e) => warn!(error = %e, "Kafka producer flush on close failed"),
        }
    }
}

/// The highest offset delivered, from a commit's metadata (`d=<n>`).
fn delivered_through(metadata: &str) -> Option<i64> {
    metadata
        .split_whitespace()
        .find_map(|w| w.strip_prefix("d="))
        .and_then(|d| d.parse().ok())
}

/// How long each step of assigning partitions took: logged at debug, or as a warning when the
/// whole took over [`Took::SLOW`] (a slow broker, or a librdkafka wait).
struct Took {
    start: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Took {
    const SLOW: Duration = Duration::from_millis(500);

    fn new() -> Self {
        let now = Instant::now();
        Took {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }

    fn report(&self, group: &str, partitions: usize) {
        let total = self.start.elapsed();
        if total >= Self::SLOW {
            warn!(group, partitions, ?total, steps = ?self.steps, "assigning partitions was slow");
        } else {
            debug!(group, partitions, ?total, steps = ?self.steps, "assigned partitions");
        }
    }
}

/// What a member is asked to do besides settling: commit now (`flush`), then answer.
enum Cmd {
    Commit(oneshot::Sender<()>),
}

/// A delivery's settlement, naming the partition by its id in the member.
#[derive(Clone, Copy, Debug)]
enum Settle {
    Ack(u32, i64),
    /// Deliver again, after the delay.
    Nack(u32, i64, Option<Duration>),
}

/// The settlements of a member's deliveries, which the member takes all at once. A settlement
/// costs one uncontended lock, and wakes the member only when it is the first one waiting: a
/// channel send per ack cost several atomic operations on lines the member's core also writes.
#[derive(Default)]
struct Settlements {
    waiting: Mutex<Vec<Settle>>,
    ready: tokio::sync::Notify,
}

impl Settlements {
    /// The waiting settlements (a panic elsewhere cannot leave them half-written: each change is
    /// one push or one swap).
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Settle>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, s: Settle) {
        let first = {
            let mut w = self.waiting();
            w.push(s);
            w.len() == 1
        };
        if first {
            self.ready.notify_one();
        }
    }

    /// Swaps what is waiting with `into` (empty, its capacity kept for the next turn).
    fn take(&self, into: &mut Vec<Settle>) {
        std::mem::swap(&mut *self.waiting(), into);
    }

    fn is_empty(&self) -> bool {
        self.waiting().is_empty()
    }
}

/// One partition a member reads.
struct Part {
    /// Every offset below is settled (acked or skipped): the offset to commit.
    next: i64,
    /// Offsets received at or above `next`, ascending: whether each is settled, and its delivery
    /// while it is unacked.
    received: VecDeque<Slot>,
    /// Highest offset delivered or skipped (by this member or, from the commit metadata or the
    /// marks group, a predecessor).
    delivered: i64,
    /// Offsets up to here had been delivered before this member started: attempt ≥ 2.
    before: i64,
    committed: (i64, i64),
    /// `delivered` as last committed to the marks group.
    marked: i64,
    ids: IdWindow,
    /// Its index in the member's `part_tps`.
    id: u32,
}

/// A received offset of a [`Part`].
struct Slot {
    offset: i64,
    settled: bool,
    inflight: Option<Inflight>,
}

impl Part {
    fn new(id: u32, next: i64, before: i64, ids: IdWindow) -> Self {
        Part {
            id,
            next,
            received: VecDeque::new(),
            delivered: before.max(next - 1),
            before,
            // Not committed yet: the first commit records where the group starts.
            committed: (-1, -1),
            marked: before,
            ids,
        }
    }

    /// Deliveries not yet acked.
    fn unacked(&self) -> usize {
        self.received.iter().filter(|s| s.inflight.is_some()).count()
    }

    /// Notes a received offset, unsettled; false when it was received before. A partition's
    /// records come in offset order, so `received` stays sorted.
    fn receive(&mut self, offset: i64) -> bool {
        let last = self.received.back().map_or(self.next - 1, |s| s.offset);
        if offset <= last {
            return false;
        }
        self.received.push_back(Slot {
            offset,
            settled: false,
            inflight: None,
        });
        true
    }

    /// The slot of a received, unsettled offset. Offsets are mostly contiguous: tried at its
    /// place first, then searched.
    fn slot(&mut self, offset: i64) -> Option<&mut Slot> {
        let front = self.received.front()?.offset;
        let guess = usize::try_from(offset - front).ok()?;
        let i = match self.received.get(guess) {
            Some(s) if s.offset == offset => guess,
            _ => self.received.binary_search_by_key(&offset, |s| s.offset).ok()?,
        };
        self.received.get_mut(i)
    }

    /// Notes a delivery of the offset just received.
    fn deliver(&mut self, offset: i64, f: Inflight) {
        if let Some(s) = self.received.back_mut().filter(|s| s.offset == offset) {
            s.inflight = Some(f);
        }
    }

    fn inflight(&mut self, offset: i64) -> Option<&mut Inflight> {
        self.slot(offset)?.inflight.as_mut()
    }

    /// Settles an offset (acked, or skipped), and moves `next` past the settled prefix.
    fn settle(&mut self, offset: i64) {
        if let Some(s) = self.slot(offset) {
            s.settled = true;
            s.inflight = None;
        }
        while let Some(s) = self.received.front() {
            if !s.settled {
                break;
            }
            self.next = s.offset + 1;
            self.received.pop_front();
        }
    }
}

struct Inflight {
    msg: Packed,
    attempt: u32,
    due: Instant,
    /// Waiting in `redeliver`.
    queued: bool,
}

struct Member {
    bus: KafkaBus,
    consumer: OffRuntime<StreamConsumer>,
    group_id: String,
    /// The group's marks group, its client, and the marks commit under way.
    marks_id: String,
    marks: Arc<BaseConsumer>,
    marking: Option<tokio::task::JoinHandle<bool>>,
    joined_us: i64,
    mine: BTreeSet<i32>,
    opts: SubscribeOptions,
    /// The partitions it reads, by id (a [`Part`]'s `id` is its index here and in `part_tps`).
    parts: Vec<Part>,
    /// Each partition's id by its name.
    part_ids: HashMap<Tp, u32, foldhash::fast::RandomState>,
    /// The partition of the record received last: records come in runs of one partition.
    last_part: Option<(Tp, u32)>,
    /// The keys of every partition's id window (the reader hashes the ids with them).
    seeds: IdSeeds,
    /// Deliveries to send again, with the time they are due.
    redeliver: VecDeque<(Instant, Tp, i64)>,
    /// Each partition's id (its index here), which deliveries and settlements name it by.
    part_tps: Vec<Tp>,
    /// Deliveries handed out and not yet settled (acked, nacked or dropped): at most
    /// max_in_flight.
    out: usize,
    tx: Option<mpsc::Sender<Batch>>,
    /// Its deliveries' settlements, and the vector they are taken into.
    settlements: Arc<Settlements>,
    settled: Vec<Settle>,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    shutdown: watch::Receiver<bool>,
    last_commit: Instant,
    duplicates: u64,
}

impl Drop for Member {
    /// Lets go of the partitions before the consumer goes: librdkafka cannot finish destroying
    /// a consumer whose partitions are still assigned (the test runtime's shutdown hung on it).
    fn drop(&mut self) {
        if let Err(e) = self.consumer.unassign() {
            debug!(group = %self.group_id, error = %e, "unassign on drop failed");
        }
    }
}

/// A received record, as the reader hands it to the member. The reader does all the work that
/// reads the message (the filter, the id's hash) and takes both references the member needs
/// (the delivery's and the one kept until the ack), so the member never touches the message's
/// memory, which the reader's core wrote.
struct Received {
    tp: Tp,
    offset: i64,
    /// The AuroraQ message, twice; None outside the layout.
    message: Option<(Packed, Packed)>,
    /// Whether the subscription takes it: its topic matches the filter and, for a subscription
    /// from now on, it was published after the member joined.
    wanted: bool,
    /// Publish time, Unix µs.
    ts: i64,
    /// The id's key in the member's id windows ([`Member::seeds`]); 0 without an id.
    key: u128,
}

/// What the reader needs to know of its member's subscription.
struct ReadFilter {
    filter: String,
    /// Only messages published at or after this (Unix µs) are wanted.
    since_us: Option<i64>,
    /// The last AuroraQ topic checked against the filter, and whether it matched.
    last: Option<(String, bool)>,
}

impl ReadFilter {
    fn wants(&mut self, topic: &str, ts: i64) -> bool {
        let matches = match &self.last {
            Some((last, m)) if last == topic => *m,
            _ => {
                let m = topics::matches(&self.filter, topic);
                self.last = Some((topic.to_owned(), m));
                m
            }
        };
        matches && self.since_us.is_none_or(|since| ts >= since)
    }
}

/// Deliveries handed to the subscription at once: what the member took in one turn. One hand-off
/// per batch instead of one per record: when the subscriber is faster than the member, each
/// hand-off costs a thread wake-up.
type Batch = Result<Vec<Delivery>, BusError>;

/// Most deliveries in one [`Batch`].
const MAX_BATCH: usize = 512;

/// Records the reader took in one turn, decoded.
type ReadBatch = Vec<Received>;

enum Step {
    Cmd(Option<Cmd>),
    Settled,
    Read(Option<ReadBatch>),
    Tick,
    Stop,
    Gone,
}

/// Times [`KafkaBus::offsets`] asks for a partition whose look-up failed before it gives up.
const OFFSET_TRIES: u32 = 3;

/// Read batches the reader may be ahead of the member.
const READ_AHEAD: usize = 2;

/// A member's reader: takes records off the member's consumer, decodes them (the value's frame,
/// the copy into a shared chunk: [`Packer`]), checks them against the
/// subscription's filter, hashes their ids for the id windows (see [`Received`]) and hands them
/// to the member by batch
/// (every record ready in one turn, at most [`MAX_BATCH`]). On its own task, so that this work
/// and the member's bookkeeping (de-duplication, offsets, deliveries, acks) run on two cores.
/// It is at most [`READ_AHEAD`] batches ahead; the member delivers them within max_in_flight.
/// Stops when the member drops its end.
async fn read_records(
    group: String,
    consumer: OffRuntime<StreamConsumer>,
    mut reading: Reading,
    tx: mpsc::Sender<ReadBatch>,
) {
    // One stream for the reader's life: a stream per record would register and remove a waker
    // (two locks) each time.
    let mut records = consumer.stream();
    loop {
        let first = tokio::select! {
            biased;
            _ = tx.closed() => break,
            first = records.next() => first,
        };
        let mut batch = Vec::new();
        match first {
            Some(Ok(m)) => batch.push(reading.read(&m)),
            Some(Err(e)) => {
                warn!(group = %group, error = %e, "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => break,
        }
        while batch.len() < MAX_BATCH {
            match records.next().now_or_never() {
                Some(Some(Ok(m))) => batch.push(reading.read(&m)),
                Some(Some(Err(e))) => {
                    warn!(group = %group, error = %e, "Kafka consumer error");
                    break;
                }
                Some(None) | None => break,
            }
        }
        if tx.send(batch).await.is_err() {
            break;
        }
    }
}

impl Member {
    /// Assigns the partitions of Kafka topics not yet read, at the group's committed offsets.
    async fn discover(&mut self) -> Result<(), String> {
        let mut took = Took::new();
        let first = self.parts.is_empty();
        let topics = self.bus.topics_for(&self.opts.filter).await?;
        took.step("metadata");
        let mut new = Vec::new();
        for (t, n) in topics {
            if n as u32 != self.bus.inner.cfg.partitions {
                debug!(topic = %t, partitions = n, configured = self.bus.inner.cfg.partitions, "topic has another partition count");
            }
            let t: Arc<str> = Arc::from(t.as_str());
            for p in self.mine.iter().copied().filter(|p| *p < n) {
                if !self.part_ids.contains_key(&(t.clone(), p)) {
                    new.push((t.clone(), p));
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, i32)> = new.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        // The group's committed offsets come through the bus's reader of the group, not through
        // this member's consumer: librdkafka 2.3 holds back a consumer's first fetch by about a
        // second after that consumer asked for committed offsets (a fetch starts in ~40 ms
        // otherwise; `bench bus --kafka` shows it as the time to the first delivery).
        // The marks group's offsets (what earlier members delivered: the next offset after it)
        // are read at the same time.
        let (committed, marked) = futures::join!(
            self.bus.committed(&self.group_id, &keys),
            self.bus.committed(&self.marks_id, &keys)
        );
        let (committed, marked) = (committed?, marked?);
        took.step("committed offsets");
        let mut committed_at = HashMap::new();
        for (k, (o, meta)) in committed {
            if let Some(o) = o {
                committed_at.insert(k, (o, delivered_through(&meta)));
            }
        }
        for (k, (o, _)) in &marked {
            if let (Some(o), Some((_, d))) = (o, committed_at.get_mut(k)) {
                *d = (*d).max(Some(o - 1));
            }
        }
        let lows = self.bus.offsets(&keys, Offset::Beginning).await?;
        let highs = if self.opts.from_now {
            self.bus.offsets(&keys, Offset::End).await?
        } else {
            HashMap::new()
        };
        took.step("partition offsets");
        let mut assign = TopicPartitionList::new();
        let handover = self
            .bus
            .inner
            .handover
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        for (t, p) in new {
            let key = (t.to_string(), p);
            let low = lows.get(&key).copied().unwrap_or(0);
            let (start, meta_delivered) = match committed_at.get(&key) {
                Some((o, d)) => ((*o).max(low), *d),
                None if self.opts.from_now => (highs.get(&key).copied().unwrap_or(low), None),
                None => (low, None),
            };
            let handed = handover.get(&(self.group_id.clone(), t.clone(), p)).copied();
            let before = meta_delivered.into_iter().chain(handed).max().unwrap_or(-1);
            assign
                .add_partition_offset(&t, p, Offset::Offset(start))
                .map_err(|e| e.to_string())?;
            let ids = IdWindow::with_seeds(
                self.bus.inner.cfg.duplicate_window,
                self.bus.inner.cfg.dedup_capacity,
                self.seeds.clone(),
            );
            let id = u32::try_from(self.parts.len()).unwrap_or(u32::MAX);
            self.parts.push(Part::new(id, start, before, ids));
            self.part_tps.push((t.clone(), p));
            self.part_ids.insert((t, p), id);
        }
        // The consumer learns the topics' leaders before it takes their partitions: a partition
        // whose topic the consumer has no metadata for waits for librdkafka's topic scan, once a
        // second, before its first fetch (`bench bus --kafka`'s first delivery came 1.03 s after
        // the assign in most starts, 20 - 60 ms with the metadata known).
        let consumer = self.consumer.clone();
        let timeout = self.bus.inner.cfg.request_timeout;
        let names: BTreeSet<String> = keys.iter().map(|(t, _)| t.clone()).collect();
        // Only a head start: on failure the partitions are assigned all the same (the partitions
        // are already noted as this member's, so an error here must not leave them unassigned).
        let known = blocking(move || {
            names
                .iter()
                .try_for_each(|t| consumer.fetch_metadata(Some(t), timeout).map(drop))
                .map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r);
        if let Err(e) = known {
            debug!(group = %self.group_id, error = %e, "no metadata before the assignment");
        }
        took.step("consumer metadata");
        self.consumer
            .incremental_assign(&assign)
            .map_err(|e| format!("assigning partitions: {e}"))?;
        // A member's first commit goes through the group's reader (see `commit_via`).
        self.commit_via(CommitMode::Sync, first).await;
        took.step("first commit");
        took.report(&self.group_id, assign.count());
        Ok(())
    }

    /// Commits what changed since the last commit: the settled prefix to the group, what was
    /// delivered to its marks group.
    async fn commit(&mut self, mode: CommitMode) {
        self.commit_via(mode, false).await
    }

    /// [`Member::commit`], through the bus's reader of the group when `reader` (a `Sync` commit).
    /// The reader found the group's coordinator when it read the committed offsets, while a new
    /// member's consumer is still looking for it when the member commits its start: librdkafka
    /// retries a commit deferred for want of a coordinator only on its next one-second timer
    /// (the start waited 1.0 s for it in about one start of three). Only the first commit goes
    /// that way: a later one could overtake an asynchronous commit of the member's consumer
    /// still in flight and be overwritten by its older offsets.
    async fn commit_via(&mut self, mode: CommitMode, reader: bool) {
        self.last_commit = Instant::now();
        self.mark(mode).await;
        let mut tpl = TopicPartitionList::new();
        let mut changed = Vec::new();
        for ((t, p), part) in self.part_tps.iter().zip(&self.parts) {
            if part.committed == (part.next, part.delivered) {
                continue;
            }
            let meta = format!("aq1 d={}", part.delivered);
            if tpl
                .add_partition_offset(t, *p, Offset::Offset(part.next))
                .is_err()
            {
                continue;
            }
            if let Some(mut e) = tpl.find_partition(t, *p) {
                e.set_metadata(meta);
            }
            changed.push((part.id, (part.next, part.delivered)));
        }
        if changed.is_empty() {
            return;
        }
        let result = match mode {
            CommitMode::Sync if reader => match self.bus.group_client(&self.group_id) {
                Ok(r) => blocking(move || r.commit(&tpl, CommitMode::Sync))
                    .await
                    .unwrap_or_else(|e| Err(KafkaError::Subscription(e))),
                Err(e) => Err(KafkaError::Subscription(e)),
            },
            CommitMode::Sync => {
                let consumer = self.consumer.clone();
                blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                    .await
                    .unwrap_or_else(|e| Err(KafkaError::Subscription(e)))
            }
            CommitMode::Async => self.consumer.commit(&tpl, CommitMode::Async),
        };
        match result {
            Ok(()) => {
                for (id, v) in changed {
                    if let Some(part) = self.parts.get_mut(id as usize) {
                        part.committed = v;
                    }
                }
            }
            Err(e) => warn!(group = %self.group_id, error = %e, "Kafka offset commit failed; retrying"),
        }
    }

    /// Commits the delivered marks that changed (offset: the next after the last delivered) to
    /// the marks group, on a blocking thread: waited for when `Sync`, else left to finish while
    /// the member goes on (one at a time; what changes meanwhile goes with the next commit).
    async fn mark(&mut self, mode: CommitMode) {
        if let Some(h) = self.marking.take() {
            if matches!(mode, CommitMode::Sync) || h.is_finished() {
                if !h.await.unwrap_or(false) {
                    // Failed: every mark goes again.
                    for part in self.parts.iter_mut() {
                        part.marked = i64::MIN;
                    }
                }
            } else {
                self.marking = Some(h);
                return;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), part) in self.part_tps.iter().zip(&mut self.parts) {
            if part.marked == part.delivered || part.delivered < 0 {
                continue;
            }
            if tpl
                .add_partition_offset(t, *p, Offset::Offset(part.delivered + 1))
                .is_ok()
            {
                part.marked = part.delivered;
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let marks = self.marks.clone();
        let group = self.marks_id.clone();
        let h = tokio::task::spawn_blocking(move || match marks.commit(&tpl, CommitMode::Sync) {
            Ok(()) => true,
            Err(e) => {
                // Until the next commit sends them again the backlog counts them pending.
                warn!(group = %group, error = %e, "committing delivered marks failed; retrying");
                false
            }
        });
        if matches!(mode, CommitMode::Sync) {
            if !h.await.unwrap_or(false) {
                for part in self.parts.iter_mut() {
                    part.marked = i64::MIN;
                }
            }
        } else {
            self.marking = Some(h);
        }
    }

    async fn run(mut self) {
        let commit_every = self.bus.inner.cfg.commit_interval;
        let discover_every = self.bus.inner.cfg.discovery_interval;
        let wildcard = concrete_family(&self.bus.inner.cfg.root, &self.opts.filter).is_none();
        let mut last_discovery = Instant::now();
        let mut tick = tokio::time::interval(commit_every.min(IDLE_COMMIT_GAP));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = Instant::now();
        let (read_tx, mut read_rx) = mpsc::channel(READ_AHEAD);
        let reading = Reading {
            seeds: self.seeds.clone(),
            filter: ReadFilter {
                filter: self.opts.filter.clone(),
                since_us: self.opts.from_now.then_some(self.joined_us),
                last: None,
            },
            one_topic: !wildcard,
            last_topic: None,
            packer: Packer::default(),
        };
        let reader = tokio::spawn(read_records(
            self.group_id.clone(),
            self.consumer.share(),
            reading,
            read_tx,
        ));
        // Records read and not yet taken: they wait while max_in_flight deliveries are out or
        // deliveries are due again (those go first).
        let mut held: VecDeque<Received> = VecDeque::new();
        let mut cmds_open = true;
        let gone = loop {
            // Settlements first, all that are waiting: an ack sent before the subscription
            // went must count, and acks arrive in bursts (a subscriber settles a batch).
            if self.settle_waiting(true) > 0 && self.commit_due() {
                self.commit(CommitMode::Async).await;
            }
            self.redeliver_due().await;
            if self.redeliver.is_empty() && !held.is_empty() {
                self.take(&mut held).await;
            }
            let step = {
                let Some(tx) = self.tx.clone() else { break false };
                tokio::select! {
                    biased;
                    _ = self.settlements.ready.notified() => Step::Settled,
                    c = self.cmd_rx.recv(), if cmds_open => Step::Cmd(c),
                    _ = self.shutdown.changed() => Step::Stop,
                    _ = tx.closed() => Step::Gone,
                    _ = tick.tick() => Step::Tick,
                    b = read_rx.recv(), if self.redeliver.is_empty() && held.is_empty() => Step::Read(b),
                }
            };
            match step {
                Step::Stop => break false,
                Step::Gone => break true,
                Step::Cmd(Some(c)) => {
                    self.command(c).await;
                    if self.commit_due() {
                        self.commit(CommitMode::Async).await;
                    }
                }
                // Taken at the top of the loop.
                Step::Settled => {}
                // Every handle's sender is gone (not while the bus holds the member's handle).
                Step::Cmd(None) => cmds_open = false,
                Step::Tick => {
                    if last_expiry.elapsed() >= Duration::from_millis(100) {
                        last_expiry = Instant::now();
                        self.expire();
                    }
                    if self.commit_due() {
                        self.commit(CommitMode::Async).await;
                    }
                    if wildcard && last_discovery.elapsed() >= discover_every {
                        last_discovery = Instant::now();
                        if let Err(e) = self.discover().await {
                            warn!(group = %self.group_id, error = %e, "looking for new topics failed");
                        }
                    }
                }
                Step::Read(Some(read)) => {
                    // Only read when nothing is held: the batch's buffer becomes the queue's,
                    // with no copy of its records.
                    if held.is_empty() {
                        held = VecDeque::from(read);
                    } else {
                        held.extend(read);
                    }
                    self.take(&mut held).await;
                }
                // The reader stopped: its consumer's stream ended.
                Step::Read(None) => break false,
            }
        };
        // No more records: what the reader holds or had read is dropped unsettled (its next
        // owner reads it again), and its share of the consumer goes before the unassign.
        drop(read_rx);
        if tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .is_err()
        {
            warn!(group = %self.group_id, "the member's reader did not stop within 5 s");
        }
        // Stopping: no more deliveries. On close, what was delivered may still be settled for
        // a while (the stage drains); when the subscription is gone nothing more can be.
        self.tx = None;
        if !gone {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let settlements = self.settlements.clone();
            loop {
                self.settle_waiting(false);
                if !self.parts.iter().any(|p| p.unacked() > 0) {
                    break;
                }
                // A settlement, or a commit asked for by `flush` meanwhile.
                let next = tokio::time::timeout_at(deadline, async {
                    tokio::select! {
                        _ = settlements.ready.notified() => Step::Settled,
                        c = self.cmd_rx.recv(), if cmds_open => Step::Cmd(c),
                    }
                });
                match next.await {
                    Ok(Step::Cmd(Some(c))) => self.command(c).await,
                    Ok(Step::Cmd(None)) => cmds_open = false,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        // Settlements already made count, whichever way the member stops.
        self.settle_waiting(false);
        self.commit(CommitMode::Sync).await;
        if let Ok(mut h) = self.bus.inner.handover.lock() {
            for ((t, p), part) in self.part_tps.iter().zip(&self.parts) {
                h.insert((self.group_id.clone(), t.clone(), *p), part.delivered);
            }
        }
        if self.duplicates > 0 {
            info!(group = %self.group_id, duplicates = self.duplicates, "dropped re-published ids");
        }
        if self.opts.transient {
            let others = self
                .bus
                .inner
                .members
                .lock()
                .map(|m| {
                    m.iter()
                        .filter(|h| h.group_id == self.group_id && h.transient && h.running())
                        .count()
                })
                .unwrap_or(0);
            if others == 0 {
                let opts = AdminOptions::new().request_timeout(Some(self.bus.inner.cfg.request_timeout));
                let groups = [self.group_id.as_str(), self.marks_id.as_str()];
                let _ = self.bus.inner.admin.delete_groups(&groups, &opts).await;
            }
        }
        debug!(group = %self.group_id, "member stopped");
    }

    /// Takes held records in order while fewer than max_in_flight deliveries are out, and
    /// hands their deliveries over as one batch.
    async fn take(&mut self, held: &mut VecDeque<Received>) {
        let now = Instant::now();
        let n = held.len().min(self.opts.max_in_flight.saturating_sub(self.out));
        // The id windows' slots these records look up, read ahead all at once: their cache
        // misses overlap instead of stalling one record each.
        for r in held.iter().take(n).filter(|r| r.key != 0) {
            if let Some(id) = self.part_id(&r.tp) {
                self.parts[id as usize].ids.touch(r.key);
            }
        }
        let mut batch = Vec::with_capacity(n);
        while self.out < self.opts.max_in_flight {
            let Some(m) = held.pop_front() else { break };
            batch.extend(self.receive(m, now));
        }
        self.send(batch).await;
    }

    /// Takes a received record: its delivery, or None when it is skipped (outside the layout or
    /// the filter, a duplicate id, or already received). `now`: when the batch was read.
    fn receive(&mut self, r: Received, now: Instant) -> Option<Delivery> {
        let Received {
            tp,
            offset,
            message,
            wanted,
            ts,
            key,
        } = r;
        let id = self.part_id(&tp)?;
        let part = &mut self.parts[id as usize];
        if !part.receive(offset) {
            return None;
        }
        // Received: delivered below, or settled at once (skipped). A skipped offset behind an
        // unacked one stays uncommitted; counting it as delivered keeps it out of the pending
        // backlog (a member that holds messages, as fusion does, would otherwise never show
        // a settled group).
        part.delivered = part.delivered.max(offset);
        let Some((message, kept)) = message else {
            warn!(topic = %tp.0, partition = tp.1, offset, "a record outside AuroraQ's layout; skipped");
            part.settle(offset);
            return None;
        };
        if !wanted {
            part.settle(offset);
            return None;
        }
        // `part.receive` let this offset through once: an id seen before came at an earlier one.
        if key != 0 && part.ids.seen_or_insert_key(key, ts) {
            debug!(group = %self.group_id, id = %message.id(), offset, "duplicate id dropped");
            self.duplicates += 1;
            part.settle(offset);
            return None;
        }
        let attempt = if offset <= part.before { 2 } else { 1 };
        part.deliver(
            offset,
            Inflight {
                msg: kept,
                attempt,
                due: now + self.opts.ack_wait,
                queued: false,
            },
        );
        let (id, partition) = (part.id, tp.1);
        Some(self.delivery(id, partition, offset, message, attempt))
    }

    /// A delivery of partition `part` (its id) / `partition` (its number): one more out.
    fn delivery(&mut self, part: u32, partition: i32, offset: i64, msg: Packed, attempt: u32) -> Delivery {
        self.out += 1;
        let acker = KafkaAcker {
            settlements: self.settlements.clone(),
            part,
            offset,
            settled: AtomicBool::new(false),
        };
        Delivery::packed(msg, partition as u32, attempt, Box::new(acker))
    }

    /// The partition a settlement names.
    fn part_of(&mut self, id: u32) -> Option<(&Tp, &mut Part)> {
        let tp = self.part_tps.get(id as usize)?;
        Some((tp, self.parts.get_mut(id as usize)?))
    }

    /// The id of a partition by its name: the last one's when it is the same (the reader shares
    /// a topic's name between consecutive records, so that is a pointer comparison).
    fn part_id(&mut self, tp: &Tp) -> Option<u32> {
        if let Some((last, id)) = &self.last_part {
            if last.1 == tp.1 && Arc::ptr_eq(&last.0, &tp.0) {
                return Some(*id);
            }
        }
        let id = *self.part_ids.get(tp)?;
        self.last_part = Some((tp.clone(), id));
        Some(id)
    }

    /// Hands a batch to the subscription (nothing when it is empty or the subscription gone).
    async fn send(&mut self, batch: Vec<Delivery>) {
        let Some(tx) = &self.tx else { return };
        if batch.is_empty() {
            return;
        }
        // Never full: each batch in the channel holds at least one of max_in_flight deliveries.
        let _ = tx.send(Ok(batch)).await;
    }

    /// Takes the settlements waiting (nacks only when `nacks`: a stopping member delivers
    /// nothing again), and returns how many there were. The caller commits when due.
    fn settle_waiting(&mut self, nacks: bool) -> usize {
        let mut settled = std::mem::take(&mut self.settled);
        self.settlements.take(&mut settled);
        let n = settled.len();
        for s in settled.drain(..) {
            match s {
                Settle::Nack(..) if !nacks => {}
                s => self.settle(s),
            }
        }
        self.settled = settled;
        n
    }

    fn settle(&mut self, s: Settle) {
        match s {
            Settle::Ack(id, offset) => {
                self.out = self.out.saturating_sub(1);
                if let Some((_, part)) = self.part_of(id) {
                    part.settle(offset);
                }
            }
            Settle::Nack(id, offset, delay) => {
                self.out = self.out.saturating_sub(1);
                let Some((tp, part)) = self.part_of(id) else {
                    return;
                };
                let tp = tp.clone();
                if let Some(f) = part.inflight(offset) {
                    if !f.queued {
                        f.queued = true;
                        let due = Instant::now() + delay.unwrap_or_default();
                        self.redeliver.push_back((due, tp, offset));
                    }
                }
            }
        }
    }

    async fn command(&mut self, c: Cmd) {
        match c {
            // What was settled before the commit was asked for counts.
            Cmd::Commit(done) => {
                self.settle_waiting(true);
                self.commit(CommitMode::Sync).await;
                let _ = done.send(());
            }
        }
    }

    /// Whether to commit now: `commit_interval` after the last commit, or, sooner, once the
    /// member is idle (every delivery taken by the subscriber, no settlement waiting) and
    /// [`IDLE_COMMIT_GAP`] has passed. A busy member commits at its interval; an idle one's
    /// backlog shows what it settled within milliseconds (`auroraq run` on processes waits on
    /// it between events).
    fn commit_due(&self) -> bool {
        let since = self.last_commit.elapsed();
        if since >= self.bus.inner.cfg.commit_interval {
            return true;
        }
        let idle = self.settlements.is_empty()
            && self
                .tx
                .as_ref()
                .is_some_and(|tx| tx.capacity() == tx.max_capacity());
        idle && since >= IDLE_COMMIT_GAP
    }

    /// Deliveries not acked within ack_wait are due again.
    fn expire(&mut self) {
        let now = Instant::now();
        for (tp, part) in self.part_tps.iter().zip(&mut self.parts) {
            for s in part.received.iter_mut() {
                if let Some(f) = s.inflight.as_mut().filter(|f| f.due <= now && !f.queued) {
                    f.queued = true;
                    self.redeliver.push_back((now, tp.clone(), s.offset));
                }
            }
        }
    }

    /// Sends again what is due, while fewer than max_in_flight deliveries are out.
    async fn redeliver_due(&mut self) {
        let now = Instant::now();
        let mut later = VecDeque::new();
        let mut batch = Vec::new();
        while let Some((due, tp, offset)) = self.redeliver.pop_front() {
            if due > now {
                later.push_back((due, tp, offset));
                continue;
            }
            if self.out >= self.opts.max_in_flight {
                later.push_back((due, tp, offset));
                later.extend(self.redeliver.drain(..));
                break;
            }
            let ack_wait = self.opts.ack_wait;
            let Some(part) = self
                .part_ids
                .get(&tp)
                .and_then(|id| self.parts.get_mut(*id as usize))
            else {
                continue;
            };
            let id = part.id;
            let Some(f) = part.inflight(offset) else { continue };
            f.attempt += 1;
            f.due = now + ack_wait;
            f.queued = false;
            let (msg, attempt) = (f.msg.clone(), f.attempt);
            batch.push(self.delivery(id, tp.1, offset, msg, attempt));
        }
        self.send(batch).await;
        // What is not due yet (or waits for room) goes out on a later turn of the loop,
        // which a tick, an ack or a message starts.
        self.redeliver = later;
    }
}

/// What a member's reader keeps from one record to the next.
struct Reading {
    seeds: IdSeeds,
    filter: ReadFilter,
    /// The member reads one Kafka topic (its filter names a family), so every record's is the
    /// first one's: its name is not read again (librdkafka's name is a C string: a length and a
    /// UTF-8 check per record).
    one_topic: bool,
    /// The Kafka topic of the record before, shared by the records after it that have the same
    /// (no allocation per record).
    last_topic: Option<Arc<str>>,
    packer: Packer,
}

impl Reading {
    /// A record as the member takes it.
    fn read(&mut self, m: &BorrowedMessage<'_>) -> Received {
        let topic = match &self.last_topic {
            Some(t) if self.one_topic || **t == *m.topic() => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(m.topic());
                self.last_topic = Some(t.clone());
                t
            }
        };
        let (meta, ts) = meta(m);
        let (mut message, mut wanted, mut key) = (None, false, 0);
        if let Some(r) = meta {
            wanted = self.filter.wants(r.topic, ts);
            if wanted && !r.id.is_empty() {
                key = self.seeds.key(r.id);
            }
            let record_key = m.key().and_then(|k| std::str::from_utf8(k).ok());
            let packed = self.packer.pack(r.topic, r.id, record_key, r.payload);
            message = Some((packed.clone(), packed));
        }
        Received {
            tp: (topic, m.partition()),
            offset: m.offset(),
            message,
            wanted,
            ts,
            key,
        }
    }
}

/// What a record holds in AuroraQ's layout: its topic, message id and payload.
struct RecordMeta<'a> {
    topic: &'a str,
    id: &'a str,
    payload: &'a [u8],
}

/// A record's AuroraQ topic, message id and payload (None outside the layout), and its publish
/// time (µs). A framed value ([`kafka_record`]) first; else the headers of the layouts before
/// it, whose value is the payload.
fn meta<M: Message>(m: &M) -> (Option<RecordMeta<'_>>, i64) {
    let value = m.payload().unwrap_or_default();
    if let Some(f) = kafka_record::read(value) {
        let meta = RecordMeta {
            topic: f.topic,
            id: f.id,
            payload: f.payload,
        };
        return (Some(meta), f.published_us);
    }
    let (topic, id, ts) = match m.headers() {
        Some(h) => meta_of(h),
        None => (None, "", None),
    };
    let ts = ts.unwrap_or_else(|| m.timestamp().to_millis().unwrap_or(0).saturating_mul(1000));
    let meta = topic.map(|topic| RecordMeta {
        topic,
        id,
        payload: value,
    });
    (meta, ts)
}

/// The AuroraQ message of a record (None outside the layout) and its publish time (µs).
fn decode(m: &impl Message) -> (Option<OutMessage>, i64) {
    let (meta, ts) = meta(m);
    let message = meta.map(|r| OutMessage {
        topic: r.topic.to_owned(),
        key: m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned),
        id: r.id.to_owned(),
        payload: Bytes::copy_from_slice(r.payload),
    });
    (message, ts)
}

/// A record's AuroraQ topic, message id and publish time (µs) from its headers: the one
/// [`META_HEADER`], or, as records written before it carry them, [`TOPIC_HEADER`],
/// [`ID_HEADER`] and [`TIME_HEADER`].
fn meta_of<H: Headers>(h: &H) -> (Option<&str>, &str, Option<i64>) {
    let (mut topic, mut id, mut ts) = (None, "", None);
    for h in h.iter() {
        let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
            continue;
        };
        match h.key {
            META_HEADER => return parse_meta(v).map_or((None, "", None), |(t, i, s)| (Some(t), i, Some(s))),
            TOPIC_HEADER => topic = Some(v),
            ID_HEADER => id = v,
            TIME_HEADER => ts = v.parse::<i64>().ok(),
            _ => {}
        }
    }
    (topic, id, ts)
}

/// `<µs> <topic> <id>` (see [`META_HEADER`]: the time in decimal digits); None when it is not of
/// that form. One pass over the bytes: this runs once per record read.
fn parse_meta(v: &str) -> Option<(&str, &str, i64)> {
    let b = v.as_bytes();
    let mut ts: i64 = 0;
    let mut i = 0;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        ts = ts.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
        i += 1;
    }
    if i == 0 || b.get(i) != Some(&b' ') {
        return None;
    }
    let start = i + 1;
    let len = b[start..].iter().position(|c| *c == b' ')?;
    if len == 0 {
        return None;
    }
    // Both cuts are at ASCII spaces, so they are character boundaries.
    Some((v.get(start..start + len)?, v.get(start + len + 1..)?, ts))
}

struct KafkaSubscription {
    rx: mpsc::Receiver<Batch>,
    /// The rest of the last batch received.
    ready: VecDeque<Delivery>,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Some(Ok(d));
            }
            match self.rx.recv().await? {
                // The batch's buffer becomes the queue's (no copy): it is only read when empty.
                Ok(batch) => self.ready = VecDeque::from(batch),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Settles one delivery with its member: each acker settles exactly once (an ack, a nack, or,
/// dropped unsettled, a nack), which is how the member counts what is out.
struct KafkaAcker {
    settlements: Arc<Settlements>,
    /// The partition's id in its member.
    part: u32,
    offset: i64,
    settled: AtomicBool,
}

impl KafkaAcker {
    fn settle(&self, s: Settle) {
        if !self.settled.swap(true, Ordering::Relaxed) {
            // When the member is gone nobody takes it: the message stays uncommitted and its
            // next owner delivers it again.
            self.settlements.push(s);
        }
    }
}

impl Drop for KafkaAcker {
    /// Dropped unsettled (outside a runtime, where a delivery cannot spawn its nack): delivered
    /// again at once.
    fn drop(&mut self) {
        self.settle(Settle::Nack(self.part, self.offset, None));
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    /// Settling is a message to the member's task: never waits.
    fn settle_now(&self, ack: bool) -> bool {
        self.settle(if ack {
            Settle::Ack(self.part, self.offset)
        } else {
            Settle::Nack(self.part, self.offset, None)
        });
        true
    }

    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settle_now(true);
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), BusError> {
        self.settle(Settle::Nack(self.part, self.offset, delay));
        Ok(())
    }
}

struct PartQueue {
    queue: rdkafka::consumer::stream_consumer::StreamPartitionQueue<DefaultConsumerContext>,
    head: Option<(i64, i64, OutMessage)>,
    done: bool,
}

/// A history read: one queue per partition, merged by publish time.
struct KafkaHistory {
    _consumer: OffRuntime<StreamConsumer>,
    server: tokio::task::JoinHandle<()>,
    queues: Vec<PartQueue>,
    filter: String,
    since: Option<i64>,
    /// Stop at messages published after this (the read's start, or `until`).
    until: i64,
    total: u64,
    sequence: u64,
}

impl Drop for KafkaHistory {
    fn drop(&mut self) {
        self.server.abort();
        // The partition queues hold the consumer too.
        drop_off_runtime(std::mem::take(&mut self.queues));
    }
}

impl KafkaHistory {
    /// Fills the head of one partition: its next message in range, or done.
    async fn fill(q: &mut PartQueue, filter: &str, since: Option<i64>, until: i64) -> Result<(), BusError> {
        while q.head.is_none() && !q.done {
            match q.queue.recv().await {
                Ok(m) => {
                    let (message, ts) = decode(&m);
                    if ts > until {
                        q.done = true;
                        break;
                    }
                    if since.is_some_and(|s| ts < s) {
                        continue;
                    }
                    match message {
                        Some(message) if topics::matches(filter, &message.topic) => {
                            q.head = Some((ts, m.offset(), message));
                        }
                        _ => {}
                    }
                }
                Err(KafkaError::PartitionEOF(_)) => q.done = true,
                Err(e) => {
                    q.done = true;
                    return Err(BusError::History {
                        filter: filter.to_owned(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl History for KafkaHistory {
    async fn next(&mut self) -> Option<Result<Stored, BusError>> {
        for q in &mut self.queues {
            if let Err(e) = Self::fill(q, &self.filter, self.since, self.until).await {
                return Some(Err(e));
            }
        }
        let (i, _) = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.head.as_ref().map(|h| (i, h.0)))
            .min_by_key(|(_, ts)| *ts)?;
        let (ts, _offset, message) = self.queues[i].head.take()?;
        self.sequence += 1;
        Some(Ok(Stored {
            message,
            sequence: self.sequence,
            stored_at: ts,
        }))
    }

    fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders};

    #[test]
    fn names() {
        assert_eq!(kafka_topic("aq", "market.trades.binance.btcusdt"), "aq.market");
        assert_eq!(kafka_topic("aq", "alerts"), "aq.alerts");
        let g = group_id("aq", "fusion", "sentiment.*.>");
        assert_eq!(g, "aq.fusion.sentiment.ANY.ALL");
        assert_eq!(
            parse_group_id("aq", &g),
            Some(("fusion".to_owned(), "sentiment.*.>".to_owned()))
        );
        assert_eq!(parse_group_id("aq", "other.fusion.x"), None);
        assert_eq!(parse_group_id("aq", "aq.-meta"), None);
        assert!(family_matches("aq", "market.>", "aq.market"));
        assert!(family_matches("aq", ">", "aq.dlq"));
        assert!(!family_matches("aq", "market.>", "aq.news"));
        assert!(!family_matches("aq", "market.>", "aqx.market"));
        assert_eq!(concrete_family("aq", "*.x"), None);
        assert_eq!(concrete_family("aq", "dlq.>").as_deref(), Some("aq.dlq"));
        assert_eq!(delivered_through("aq1 d=41"), Some(41));
        assert_eq!(delivered_through(""), None);
        assert_eq!(KafkaConfig::new("kafka://a:1,b:2").brokers, "a:1,b:2");
    }

    #[test]
    fn reads_the_meta_header_and_the_three_before_it() {
        assert_eq!(
            parse_meta("1700000000000001 market.trades.x id with spaces"),
            Some(("market.trades.x", "id with spaces", 1_700_000_000_000_001))
        );
        assert_eq!(parse_meta("5 a.b "), Some(("a.b", "", 5)), "an empty id");
        assert_eq!(parse_meta("5 a.b"), None, "no id separator");
        assert_eq!(parse_meta("x a.b id"), None, "a time that is no number");
        assert_eq!(parse_meta("5  id"), None, "an empty topic");
        assert_eq!(parse_meta(" a.b id"), None, "no time");
        assert_eq!(parse_meta("-5 a.b id"), None, "a negative time");
        assert_eq!(parse_meta("99999999999999999999 a.b id"), None, "a time past i64");
        assert_eq!(
            parse_meta("7 sentiment.é.x id é"),
            Some(("sentiment.é.x", "id é", 7)),
            "cut at the spaces only"
        );
        let one = OwnedHeaders::new().insert(Header {
            key: META_HEADER,
            value: Some("42 news.x e1"),
        });
        assert_eq!(meta_of(&one), (Some("news.x"), "e1", Some(42)));
        let three = OwnedHeaders::new()
            .insert(Header {
                key: TOPIC_HEADER,
                value: Some("news.y"),
            })
            .insert(Header {
                key: ID_HEADER,
                value: Some("e2"),
            })
            .insert(Header {
                key: TIME_HEADER,
                value: Some("43"),
            });
        assert_eq!(meta_of(&three), (Some("news.y"), "e2", Some(43)));
        let broken = OwnedHeaders::new().insert(Header {
            key: META_HEADER,
            value: Some("not meta"),
        });
        assert_eq!(meta_of(&broken), (None, "", None), "outside the layout");
        let binary = OwnedHeaders::new().insert(Header {
            key: META_HEADER,
            value: Some(&[0xff_u8, 0x20, 0x61][..]),
        });
        assert_eq!(meta_of(&binary), (None, "", None), "not UTF-8");
    }

    #[test]
    fn commits_only_a_contiguous_prefix() {
        let mut p = Part::new(0, 10, -1, IdWindow::new(Duration::from_secs(1), 10));
        assert_eq!(p.delivered, 9);
        let mut packer = Packer::default();
        let mut inflight = |o: i64| Inflight {
            msg: packer.pack("a.b", &o.to_string(), None, b""),
            attempt: 1,
            due: Instant::now(),
            queued: false,
        };
        for o in [10, 11, 13, 14] {
            assert!(p.receive(o));
            p.deliver(o, inflight(o));
        }
        assert_eq!(p.unacked(), 4);
        assert!(!p.receive(13), "received twice");
        assert!(!p.receive(9), "behind the committed prefix");
        // 13 sits at index 2, not at 13 - 10: found past the gap.
        assert_eq!(
            p.inflight(13).map(|f| f.msg.id().to_owned()),
            Some("13".to_owned())
        );
        assert!(p.inflight(12).is_none(), "12 was never received");
        p.settle(11);
        p.settle(14);
        assert_eq!(p.next, 10, "10 is unacked");
        assert_eq!(p.unacked(), 2);
        assert!(p.inflight(11).is_none(), "an acked delivery is forgotten");
        p.settle(10);
        assert_eq!(p.next, 12, "13 is unacked (12, a gap, is fetched as 13)");
        p.settle(13);
        assert_eq!(p.next, 15);
        assert_eq!(p.unacked(), 0);
        assert!(p.received.is_empty());
    }
}
