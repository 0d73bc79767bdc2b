//! The in-process bus: the embedded default, for `auroraq run` and tests.
//!
//! Each consumer group holds one bounded queue per partition. Publishing a message appends it to
//! the queue of every group whose filter matches its topic; when a queue is full (queued plus
//! unacked reach `queue_capacity`) the publisher waits, so a slow consumer slows its producers and
//! memory stays bounded. A group sees what was published after it was first subscribed.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    partition_of, topics, Acker, Bus, BusError, Delivery, OutMessage, PublishReport, SubscribeOptions,
    Subscription,
};

/// Settings of the in-process bus.
#[derive(Clone, Debug)]
pub struct InProcConfig {
    /// Partitions per topic.
    pub partitions: u32,
    /// Most messages one group partition holds, queued and unacked together.
    pub queue_capacity: usize,
    /// Ids remembered for de-duplication, for this long...
    pub dedup_window: Duration,
    /// ...and at most this many.
    pub dedup_max: usize,
}

impl Default for InProcConfig {
    fn default() -> Self {
        InProcConfig {
            partitions: 8,
            queue_capacity: 8192,
            dedup_window: Duration::from_secs(120),
            dedup_max: 1 << 20,
        }
    }
}

/// The in-process bus. Cheap to clone; clones share the bus.
#[derive(Clone)]
pub struct InProcBus {
    inner: Arc<Inner>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct Inner {
    cfg: InProcConfig,
    groups: RwLock<HashMap<(String, String), Arc<Group>>>,
    routes: RwLock<FastMap<String, Arc<Vec<Arc<Group>>>>>,
    dedup: Mutex<Dedup>,
    closed: AtomicBool,
}

/// Ids seen within the window, as 128-bit keyed hashes (two independent random seeds): no
/// allocation per message, and a false duplicate needs a 128-bit collision.
struct Dedup {
    seeds: (foldhash::quality::RandomState, foldhash::quality::RandomState),
    seen: HashMap<u128, (), std::hash::BuildHasherDefault<SeqHasher>>,
    order: VecDeque<(Instant, u128)>,
}

impl Dedup {
    fn key(&self, id: &str) -> u128 {
        use std::hash::BuildHasher;
        ((self.seeds.0.hash_one(id) as u128) << 64) | self.seeds.1.hash_one(id) as u128
    }
}

struct Group {
    filter: String,
    parts: Vec<PartQueue>,
    /// Wakes members: something was queued, acked or nacked.
    wake: Notify,
    /// Members about to wait on `wake` (so that settling skips the notify when nobody waits).
    sleepers: AtomicUsize,
    capacity: usize,
}

impl Group {
    fn wake_members(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.wake.notify_waiters();
        }
    }
}

struct PartQueue {
    state: Mutex<QState>,
    /// Wakes publishers: room was freed.
    space: Notify,
    /// Publishers waiting on `space`.
    waiting: AtomicUsize,
}

impl PartQueue {
    fn wake_publishers(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }
}

/// Sequence numbers are unique and dense: they need no hashing.
#[derive(Default)]
struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type SeqMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<SeqHasher>>;

#[derive(Default)]
struct QState {
    ready: VecDeque<Entry>,
    inflight: SeqMap<Inflight>,
    deadlines: VecDeque<(Instant, u64, u32)>,
    delayed: usize,
    next_seq: u64,
}

impl QState {
    fn len(&self) -> usize {
        self.ready.len() + self.inflight.len() + self.delayed
    }

    /// Puts an entry back in sequence order (redeliveries keep per-partition order).
    fn requeue(&mut self, e: Entry) {
        let pos = self.ready.partition_point(|x| x.seq < e.seq);
        self.ready.insert(pos, e);
    }

    /// Moves deliveries whose ack deadline passed back to the queue.
    fn reap(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(&(deadline, seq, attempt)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.inflight.get(&seq).is_some_and(|f| f.attempt == attempt) {
                if let Some(f) = self.inflight.remove(&seq) {
                    f.member.in_flight.fetch_sub(1, Ordering::AcqRel);
                    self.requeue(f.entry);
                    any = true;
                }
            }
        }
        any
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }
}

#[derive(Clone)]
struct Entry {
    seq: u64,
    msg: Arc<OutMessage>,
    /// Deliveries so far.
    attempts: u32,
}

struct Inflight {
    entry: Entry,
    attempt: u32,
    member: Arc<MemberState>,
}

#[derive(Default)]
struct MemberState {
    in_flight: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a queue lock leaves the queue consistent (no multi-step invariants
    // span an await), so poisoning is not fatal.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InProcBus {
    pub fn new(cfg: InProcConfig) -> Self {
        let cfg = InProcConfig {
            partitions: cfg.partitions.max(1),
            queue_capacity: cfg.queue_capacity.max(1),
            ..cfg
        };
        InProcBus {
            inner: Arc::new(Inner {
                cfg,
                groups: RwLock::new(HashMap::new()),
                routes: RwLock::new(FastMap::default()),
                dedup: Mutex::new(Dedup {
                    seeds: Default::default(),
                    seen: HashMap::default(),
                    order: VecDeque::new(),
                }),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Messages queued or unacked in one group, over all partitions (for tests and metrics).
    pub fn group_depth(&self, group: &str, filter: &str) -> usize {
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        groups
            .get(&(group.to_owned(), filter.to_owned()))
            .map(|g| g.parts.iter().map(|p| lock(&p.state).len()).sum())
            .unwrap_or(0)
    }
}

impl Default for InProcBus {
    fn default() -> Self {
        InProcBus::new(InProcConfig::default())
    }
}

impl Inner {
    fn route(&self, topic: &str) -> Arc<Vec<Arc<Group>>> {
        if let Some(r) = self.routes.read().unwrap_or_else(|p| p.into_inner()).get(topic) {
            return r.clone();
        }
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        let r: Arc<Vec<Arc<Group>>> = Arc::new(
            groups
                .values()
                .filter(|g| topics::matches(&g.filter, topic))
                .cloned()
                .collect(),
        );
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned(), r.clone());
        r
    }

    /// Drops ids already seen in the window; remembers the rest.
    fn dedup(&self, batch: Vec<OutMessage>) -> (Vec<OutMessage>, usize) {
        let now = Instant::now();
        let mut d = lock(&self.dedup);
        while let Some((t, _)) = d.order.front() {
            if now.duration_since(*t) > self.cfg.dedup_window || d.order.len() > self.cfg.dedup_max {
                if let Some((_, id)) = d.order.pop_front() {
                    d.seen.remove(&id);
                }
            } else {
                break;
            }
        }
        let mut dups = 0;
        let mut keep = Vec::with_capacity(batch.len());
        for m in batch {
            let key = d.key(&m.id);
            if d.seen.insert(key, ()).is_some() {
                dups += 1;
                continue;
            }
            d.order.push_back((now, key));
            keep.push(m);
        }
        (keep, dups)
    }

    /// Appends as many as fit to a group partition, in order; returns how many.
    fn try_push_many(&self, group: &Group, part: u32, msgs: &[Arc<OutMessage>]) -> usize {
        let mut st = lock(&group.parts[part as usize].state);
        let room = group.capacity.saturating_sub(st.len()).min(msgs.len());
        for m in &msgs[..room] {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.ready.push_back(Entry {
                seq,
                msg: m.clone(),
                attempts: 0,
            });
        }
        room
    }

    /// Appends to a group partition unless it is full.
    fn try_push(&self, group: &Group, part: u32, msg: &Arc<OutMessage>) -> bool {
        self.try_push_many(group, part, std::slice::from_ref(msg)) == 1
    }

    async fn push(&self, group: &Group, part: u32, msg: &Arc<OutMessage>) -> Result<(), BusError> {
        if self.try_push(group, part, msg) {
            return Ok(());
        }
        let q = &group.parts[part as usize];
        q.waiting.fetch_add(1, Ordering::SeqCst);
        let r = async {
            loop {
                let mut space = pin!(q.space.notified());
                space.as_mut().enable();
                if self.closed.load(Ordering::Acquire) {
                    return Err(BusError::Closed);
                }
                if self.try_push(group, part, msg) {
                    return Ok(());
                }
                // Full: let consumers see what is there, then wait for room.
                group.wake.notify_waiters();
                space.await;
            }
        }
        .await;
        q.waiting.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[async_trait]
impl Bus for InProcBus {
    async fn partition_backlogs(&self) -> Result<Vec<crate::PartitionBacklog>, BusError> {
        let groups: Vec<(String, Arc<Group>)> = self
            .inner
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((name, _), g)| (name.clone(), g.clone()))
            .collect();
        let mut parts = std::collections::BTreeMap::<(String, u32), crate::Backlog>::new();
        for (name, g) in groups {
            for (i, q) in g.parts.iter().enumerate() {
                let st = q.state.lock().unwrap_or_else(|p| p.into_inner());
                let b = parts.entry((name.clone(), i as u32)).or_default();
                b.pending += (st.ready.len() + st.delayed) as u64;
                b.unacked += st.inflight.len() as u64;
            }
        }
        Ok(crate::PartitionBacklog::from_map(parts))
    }

    fn kind(&self) -> &'static str {
        "inproc"
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
        }
        let (batch, duplicates) = self.inner.dedup(batch);
        let mut report = PublishReport {
            stored: 0,
            duplicates,
        };
        // Bucket the batch per group and partition (keeping publish order within each), so that
        // each queue is locked once per batch rather than once per message.
        let nparts = self.inner.cfg.partitions as usize;
        let mut buckets: Vec<(Arc<Group>, Vec<Vec<Arc<OutMessage>>>)> = Vec::new();
        let mut last_route: Option<(String, Arc<Vec<Arc<Group>>>)> = None;
        for m in batch {
            let part = partition_of(m.key.as_deref(), self.inner.cfg.partitions) as usize;
            // Batches mostly hold one topic: look the route up once per run of it.
            let groups = match &last_route {
                Some((t, r)) if *t == m.topic => r.clone(),
                _ => {
                    let r = self.inner.route(&m.topic);
                    last_route = Some((m.topic.clone(), r.clone()));
                    r
                }
            };
            let msg = Arc::new(m);
            for g in groups.iter() {
                let idx = match buckets.iter().position(|(b, _)| Arc::ptr_eq(b, g)) {
                    Some(i) => i,
                    None => {
                        buckets.push((g.clone(), vec![Vec::new(); nparts]));
                        buckets.len() - 1
                    }
                };
                buckets[idx].1[part].push(msg.clone());
            }
            report.stored += 1;
        }
        for (g, parts) in &buckets {
            for (part, msgs) in parts.iter().enumerate() {
                if msgs.is_empty() {
                    continue;
                }
                let pushed = self.inner.try_push_many(g, part as u32, msgs);
                if pushed < msgs.len() {
                    // Full: consumers first see what is there, then we wait for room.
                    g.wake.notify_waiters();
                    for m in &msgs[pushed..] {
                        self.inner.push(g, part as u32, m).await?;
                    }
                }
            }
            g.wake_members();
        }
        Ok(report)
    }

    async fn subscribe(&self, opts: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError> {
        let parts = opts.validate(self.inner.cfg.partitions)?;
        let group = {
            let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
            let key = (opts.group.clone(), opts.filter.clone());
            if let Some(g) = groups.get(&key) {
                g.clone()
            } else {
                let g = Arc::new(Group {
                    filter: opts.filter.clone(),
                    parts: (0..self.inner.cfg.partitions)
                        .map(|_| PartQueue {
                            state: Mutex::new(QState::default()),
                            space: Notify::new(),
                            waiting: AtomicUsize::new(0),
                        })
                        .collect(),
                    wake: Notify::new(),
                    sleepers: AtomicUsize::new(0),
                    capacity: self.inner.cfg.queue_capacity,
                });
                groups.insert(key, g.clone());
                // New group: recompute routes.
                self.inner
                    .routes
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                g
            }
        };
        Ok(Box::new(InProcSubscription {
            bus: self.inner.clone(),
            group,
            parts,
            member: Arc::new(MemberState::default()),
            max_in_flight: opts.max_in_flight,
            ack_wait: opts.ack_wait,
            buffer: VecDeque::new(),
            next_part: 0,
        }))
    }

    async fn health(&self) -> Result<String, BusError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner()).len();
        Ok(format!(
            "in-process, {} partitions, {groups} groups",
            self.inner.cfg.partitions
        ))
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(()) // publishes and acks take effect before they return
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        for g in groups.values() {
            g.wake.notify_waiters();
            for p in &g.parts {
                p.space.notify_waiters();
            }
        }
    }
}

/// How many entries a member takes from one partition per visit.
const TAKE_BATCH: usize = 64;

struct InProcSubscription {
    bus: Arc<Inner>,
    group: Arc<Group>,
    parts: Vec<u32>,
    member: Arc<MemberState>,
    max_in_flight: usize,
    ack_wait: Duration,
    /// Taken from the queues (counted in flight) but not yet handed out: (partition, entry, attempt).
    buffer: VecDeque<(u32, Entry, u32)>,
    next_part: usize,
}

impl InProcSubscription {
    /// Reaps expired deliveries and takes what room allows. Returns the earliest ack deadline.
    fn fill(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let mut freed = false;
        let n = self.parts.len();
        for i in 0..n {
            let p = self.parts[(self.next_part + i) % n];
            let q = &self.group.parts[p as usize];
            let mut st = lock(&q.state);
            freed |= st.reap(now);
            let room = self
                .max_in_flight
                .saturating_sub(self.member.in_flight.load(Ordering::Acquire));
            let take = room.min(TAKE_BATCH).min(st.ready.len());
            for _ in 0..take {
                let Some(mut e) = st.ready.pop_front() else { break };
                e.attempts += 1;
                let attempt = e.attempts;
                let deadline = now + self.ack_wait;
                st.deadlines.push_back((deadline, e.seq, attempt));
                st.inflight.insert(
                    e.seq,
                    Inflight {
                        entry: e.clone(),
                        attempt,
                        member: self.member.clone(),
                    },
                );
                self.member.in_flight.fetch_add(1, Ordering::AcqRel);
                self.buffer.push_back((p, e, attempt));
            }
            if let Some(d) = st.next_deadline() {
                earliest = Some(earliest.map_or(d, |e: Instant| e.min(d)));
            }
        }
        self.next_part = (self.next_part + 1) % n.max(1);
        if freed {
            // Reaped deliveries may belong to other members, which may now have room.
            self.group.wake_members();
        }
        earliest
    }

    fn drained(&self) -> bool {
        self.member.in_flight.load(Ordering::Acquire) == 0
            && self
                .parts
                .iter()
                .all(|&p| lock(&self.group.parts[p as usize].state).ready.is_empty())
    }
}

#[async_trait]
impl Subscription for InProcSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if let Some((p, e, attempt)) = self.buffer.pop_front() {
                let acker = InProcAcker {
                    group: self.group.clone(),
                    part: p,
                    seq: e.seq,
                    attempt,
                };
                return Some(Ok(Delivery::shared(e.msg, p, attempt, Box::new(acker))));
            }
            // Fast path: something is ready.
            let deadline = self.fill();
            if !self.buffer.is_empty() {
                continue;
            }
            // Register as a sleeper before looking again, so that a publish or settle racing
            // with us either is seen by the second look or sees us and wakes us.
            let group = self.group.clone();
            group.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut woken = pin!(group.wake.notified());
            woken.as_mut().enable();
            let deadline = self.fill().or(deadline);
            if self.buffer.is_empty() && !(self.bus.closed.load(Ordering::Acquire) && self.drained()) {
                match deadline {
                    Some(d) => {
                        let _ = tokio::time::timeout_at(d, woken).await;
                    }
                    None => woken.await,
                }
            }
            group.sleepers.fetch_sub(1, Ordering::SeqCst);
            if self.buffer.is_empty() && self.bus.closed.load(Ordering::Acquire) && self.drained() {
                return None;
            }
        }
    }
}

impl Drop for InProcSubscription {
    fn drop(&mut self) {
        // Entries taken but never handed out go back unchanged: they were not delivered.
        for (p, mut e, attempt) in self.buffer.drain(..) {
            let q = &self.group.parts[p as usize];
            let mut st = lock(&q.state);
            if st.inflight.get(&e.seq).is_some_and(|f| f.attempt == attempt) {
                st.inflight.remove(&e.seq);
                self.member.in_flight.fetch_sub(1, Ordering::AcqRel);
                e.attempts -= 1;
                st.requeue(e);
            }
        }
        self.group.wake_members();
    }
}

struct InProcAcker {
    group: Arc<Group>,
    part: u32,
    seq: u64,
    attempt: u32,
}

impl InProcAcker {
    fn settle(&self, requeue: bool, delay: Option<Duration>) {
        let q = &self.group.parts[self.part as usize];
        {
            let mut st = lock(&q.state);
            if st
                .inflight
                .get(&self.seq)
                .is_none_or(|f| f.attempt != self.attempt)
            {
                // Expired and redelivered already: this settle is stale.
                return;
            }
            let Some(f) = st.inflight.remove(&self.seq) else {
                return;
            };
            f.member.in_flight.fetch_sub(1, Ordering::AcqRel);
            if requeue {
                match delay.filter(|d| !d.is_zero()) {
                    None => st.requeue(f.entry),
                    Some(d) => {
                        st.delayed += 1;
                        let group = self.group.clone();
                        let part = self.part;
                        tokio::spawn(async move {
                            tokio::time::sleep(d).await;
                            let q = &group.parts[part as usize];
                            {
                                let mut st = lock(&q.state);
                                st.delayed -= 1;
                                st.requeue(f.entry);
                            }
                            group.wake_members();
                        });
                    }
                }
            }
        }
        if !requeue {
            q.wake_publishers();
        }
        self.group.wake_members();
    }
}

#[async_trait]
impl Acker for InProcAcker {
    fn settle_now(&self, ack: bool) -> bool {
        self.settle(!ack, None);
        true
    }

    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settle(false, None);
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), BusError> {
        self.settle(true, delay);
        Ok(())
    }
}
