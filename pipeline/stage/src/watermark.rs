//! Publishing watermarks, and running a multi-input [`Processor`] merged on them.
//!
//! A producer says how far it has come on a topic with [`publish_watermark`]: one
//! [`Watermark`] message per bus partition of the topic, each keyed so that the bus's key hash
//! ([`auroraq_bus::partition_of`]) puts it on that partition, behind the data it covers.
//!
//! [`EventTimeReader`] reads a stage's inputs in event time: deliveries are buffered in a
//! [`Merge`] and handed out in [`OrderKey`] order once every input partition's watermark (the
//! least over the producers heard on it) has passed them; an event behind the released frontier
//! goes to `late.<stage>` as a dead letter (reason `late`) and never reorders the past; when
//! nothing more is ready it says so ([`Next::Idle`]), the moment for the stage to announce its
//! own progress. [`run_processor_merged`] runs a [`Processor`] on it: each event's outputs are
//! published before its delivery is acked, and at each idle moment every output topic gets the
//! watermark its *triggers* allow ([`Processor::triggers`]: the inputs whose events can make
//! output there): the least over them of "their watermark, and before their earliest event still
//! waiting". Outputs are stamped at the time of the event that made them, so that promise holds.
//!
//! Feedback inputs (a stage reading what its own outputs cause, e.g. an agent reading the order
//! updates its intents led to, stamped at the intent's time) cannot hold the frontier at the time
//! they are caused at: that would wait on itself. For them ([`Processor::feedback`]) a watermark
//! `w` also lets go what is at `w + 1` and ranked before feedback, and their events rank after
//! the rest at equal times ([`crate::merge::FEEDBACK_RANK`]): the backtest engine's order (the
//! inputs at a time first, then what they cause). A cycle of stages (agent → risk → execution →
//! agent) then moves on as long as no stage's feedback triggers an output the others wait for:
//! the agent's intents come from fused signals only, risk's decisions from intents only, so their
//! watermarks follow the fused signals and need no round trip per market event; each fused signal
//! costs one trip of watermarks around the cycle. Inputs in [`Processor::unordered`] (operator
//! controls such as risk resets) skip the merge and are handled as they arrive.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use auroraq_bus::{partition_of, topics, Bus, BusError, Delivery, OutMessage, Subscription};
use auroraq_schemas::{is_watermark, now_micros, AnyEvent, Micros, Watermark};
use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::merge::{Input, Merge, MergeConfig, OrderKey, Pushed, FEEDBACK_RANK};
use crate::processor::{available_at, ProcessorHandler};
use crate::{Handler, HandlerError, Processor, StageConfig, StageError, StageMetrics, StageStats};

/// The late topic of a stage: `late.<stage>`.
pub fn late_topic(stage: &str) -> String {
    format!("late.{}", topics::token(stage))
}

/// A key that the bus's hash puts on partition `p` of `partitions` (`wm-<n>`, the least such `n`).
pub fn key_for_partition(p: u32, partitions: u32) -> String {
    static CACHE: OnceLock<Mutex<HashMap<(u32, u32), String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(k) = cache.lock().ok().and_then(|c| c.get(&(p, partitions)).cloned()) {
        return k;
    }
    let n = partitions.max(1);
    let key = (0u64..)
        .map(|i| format!("wm-{i}"))
        .find(|k| partition_of(Some(k), n) == p % n)
        .unwrap_or_default();
    if let Ok(mut c) = cache.lock() {
        c.insert((p, partitions), key.clone());
    }
    key
}

/// The watermark messages for `t` on every partition of `topic` (see the module docs).
pub fn watermark_messages(topic: &str, partitions: u32, t: Micros, producer: &str) -> Vec<OutMessage> {
    let wall = now_micros();
    (0..partitions.max(1))
        .map(|p| {
            let w = Watermark {
                topic: topic.to_owned(),
                partition: p as i32,
                watermark: t,
                producer: producer.to_owned(),
                ts_wall: wall,
            };
            OutMessage {
                topic: topic.to_owned(),
                key: Some(key_for_partition(p, partitions)),
                id: w.id(),
                payload: Bytes::from(w.encode()),
            }
        })
        .collect()
}

/// Publishes watermark `t` on every partition of each of `topics`.
pub async fn publish_watermark(
    bus: &dyn Bus,
    topics: &[String],
    t: Micros,
    producer: &str,
) -> Result<(), BusError> {
    let n = bus.partitions();
    let batch: Vec<OutMessage> = topics
        .iter()
        .flat_map(|topic| watermark_messages(topic, n, t, producer))
        .collect();
    if !batch.is_empty() {
        bus.publish(batch).await?;
    }
    Ok(())
}

/// Deliveries an input of a merged stage may hold unsettled (at least): the merge holds events
/// until every input has passed them, and a bus that stops delivering at its in-flight cap would
/// hold back the very watermarks (of other partitions, behind the held data) that release them.
pub const MERGED_IN_FLIGHT: usize = 16_384;

/// Subscribes each input filter of a processor in the stage's group, keeping which filter each
/// delivery came through (see [`run_processor_merged`]); each may hold [`MERGED_IN_FLIGHT`]
/// deliveries unsettled.
pub async fn subscribe_inputs(
    bus: &dyn Bus,
    cfg: &StageConfig,
    inputs: &[String],
) -> Result<Vec<(String, Box<dyn Subscription>)>, StageError> {
    let mut subs = Vec::with_capacity(inputs.len());
    for filter in inputs {
        let mut c = cfg.clone();
        c.filter = filter.clone();
        c.max_in_flight = c.max_in_flight.max(MERGED_IN_FLIGHT);
        subs.push((filter.clone(), crate::subscribe_stage(bus, &c).await?));
    }
    Ok(subs)
}

/// An event the reader hands out, with the delivery it came in and the input filter it came
/// through.
pub struct Held {
    pub filter: String,
    pub delivery: Delivery,
    pub event: AnyEvent,
}

/// What [`EventTimeReader::next`] yields.
pub enum Next {
    /// The next event in event-time order.
    Event(Box<Held>),
    /// Nothing more is ready now (everything handed out before has been, as far as the reader
    /// knows, handled): the moment to announce output watermarks ([`EventTimeReader::bound`]).
    Idle,
    /// Every ordered input has ended ([`Watermark::END`] on each of its partitions) and all
    /// that came before has been handed out; or the bus closed.
    End,
}

/// A stage's inputs, read in event time (see the module docs).
pub struct EventTimeReader {
    bus: Arc<dyn Bus>,
    stage: String,
    metrics: Arc<StageMetrics>,
    merge: Merge<Held>,
    /// The expected input partitions of each ordered filter.
    expected: BTreeMap<String, Vec<Input>>,
    feedback: Vec<String>,
    unordered: Vec<String>,
    rx: tokio::sync::mpsc::Receiver<(String, Result<Delivery, BusError>)>,
    ready: VecDeque<Held>,
    idle_sent: bool,
    closed: bool,
    tick: tokio::time::Interval,
    stale_reported: Vec<Input>,
    /// Ids of events handed out lately: one that comes again behind the frontier is a
    /// redelivery (its ack was slow), settled, not late.
    handed: HashSet<String>,
    handed_order: VecDeque<String>,
}

/// Event ids remembered as handed out ([`EventTimeReader`]).
const REMEMBER_HANDED: usize = 200_000;

impl EventTimeReader {
    /// Reads `subs` (one subscription per input filter, see [`subscribe_inputs`]) for the stage
    /// `cfg.name`, as member `cfg.member` of `cfg.members` (the partitions it waits for).
    pub fn new(
        bus: Arc<dyn Bus>,
        cfg: &StageConfig,
        subs: Vec<(String, Box<dyn Subscription>)>,
        feedback: Vec<String>,
        unordered: Vec<String>,
        merge_cfg: MergeConfig,
        metrics: Arc<StageMetrics>,
    ) -> Self {
        let partitions = bus.partitions();
        let mine: Vec<u32> = (0..partitions.max(1))
            .filter(|p| p % cfg.members.max(1) == cfg.member)
            .collect();
        let mut merge: Merge<Held> = Merge::new(merge_cfg);
        let mut expected = BTreeMap::new();
        let now = Instant::now();
        for (filter, _) in &subs {
            if unordered.contains(filter) {
                continue;
            }
            let inputs: Vec<Input> = mine
                .iter()
                .map(|p| Input {
                    filter: filter.clone(),
                    partition: *p,
                })
                .collect();
            for i in &inputs {
                merge.expect(i.clone(), feedback.contains(filter), now);
            }
            expected.insert(filter.clone(), inputs);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.max_in_flight.max(16));
        for (filter, mut sub) in subs {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(d) = sub.next().await {
                    if tx.send((filter.clone(), d)).await.is_err() {
                        break;
                    }
                }
            });
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        EventTimeReader {
            bus,
            stage: cfg.name.clone(),
            metrics,
            merge,
            expected,
            feedback,
            unordered,
            rx,
            ready: VecDeque::new(),
            idle_sent: false,
            closed: false,
            tick,
            stale_reported: Vec::new(),
            handed: HashSet::new(),
            handed_order: VecDeque::new(),
        }
    }

    /// The time up to which nothing more will be handed out from `filter` (on any of the
    /// member's partitions): what the stage may promise for outputs only `filter`'s events make.
    /// Valid at [`Next::Idle`]; none while a partition of it has sent no watermark.
    pub fn bound(&self, filter: &str) -> Option<Micros> {
        let now = Instant::now();
        let inputs = self.expected.get(filter)?;
        let mut min: Option<Micros> = None;
        for i in inputs {
            let b = self.merge.bound(i, now)?;
            min = Some(min.map_or(b, |m| m.min(b)));
        }
        min
    }

    /// Whether every ordered input has ended.
    fn ended(&self) -> bool {
        self.merge.is_empty() && {
            let now = Instant::now();
            self.expected
                .values()
                .flatten()
                .all(|i| self.merge.bound(i, now) == Some(Watermark::END))
        }
    }

    /// The merge's counters.
    pub fn stats(&self) -> &crate::merge::MergeStats {
        self.merge.stats()
    }

    /// The next event in event-time order, an idle moment, or the end (see [`Next`]).
    pub async fn next(&mut self) -> Result<Next, StageError> {
        loop {
            if let Some(h) = self.ready.pop_front() {
                self.idle_sent = false;
                let id = h.event.meta().event_id.clone();
                if self.handed.insert(id.clone()) {
                    self.handed_order.push_back(id);
                    while self.handed_order.len() > REMEMBER_HANDED {
                        if let Some(old) = self.handed_order.pop_front() {
                            self.handed.remove(&old);
                        }
                    }
                }
                return Ok(Next::Event(Box::new(h)));
            }
            if self.closed || (!self.expected.is_empty() && self.ended()) {
                return Ok(Next::End);
            }
            if !self.idle_sent {
                self.idle_sent = true;
                return Ok(Next::Idle);
            }
            let next = tokio::select! {
                m = self.rx.recv() => m,
                _ = self.tick.tick() => {
                    let now = Instant::now();
                    let stale = self.merge.stale_inputs(now);
                    if stale != self.stale_reported {
                        if !stale.is_empty() {
                            warn!(stage = %self.stage, ?stale, "inputs sent no watermark within the stale limit; falling back to the bounded lateness");
                        }
                        metrics::gauge!("auroraq_merge_stale_inputs", "stage" => self.stage.clone()).set(stale.len() as f64);
                        self.stale_reported = stale;
                    }
                    let ready = self.merge.ready(now);
                    if !ready.is_empty() {
                        self.ready.extend(ready);
                    } else {
                        // Announce again: stale inputs may have moved the bounds.
                        self.idle_sent = false;
                    }
                    continue;
                }
            };
            let Some((filter, d)) = next else {
                // The bus closed: what is left, in order.
                self.ready.extend(self.merge.drain());
                self.closed = true;
                continue;
            };
            self.take(filter, d).await?;
            self.ready.extend(self.merge.ready(Instant::now()));
        }
    }

    async fn take(&mut self, filter: String, d: Result<Delivery, BusError>) -> Result<(), StageError> {
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                warn!(stage = %self.stage, error = %e, "delivery error");
                return Ok(());
            }
        };
        let bus = &*self.bus;
        if is_watermark(d.payload()) {
            match Watermark::decode(d.payload()) {
                Ok(w) => {
                    if !self.unordered.contains(&filter) {
                        let input = Input {
                            filter,
                            partition: d.partition,
                        };
                        self.merge
                            .watermark(input, &w.producer, w.watermark, Instant::now());
                    }
                    metrics::counter!("auroraq_watermarks_consumed_total", "stage" => self.stage.clone())
                        .increment(1);
                    d.ack().await?;
                }
                Err(e) => self.undecodable(d, &e.to_string()).await?,
            }
            return Ok(());
        }
        self.metrics.received.fetch_add(1, Ordering::Relaxed);
        crate::count_consumed(&self.stage, d.topic());
        let ev = match AnyEvent::decode(d.payload()) {
            Ok(ev) => ev,
            Err(e) => return self.undecodable(d, &e.to_string()).await,
        };
        if self.unordered.contains(&filter) {
            self.ready.push_back(Held {
                filter,
                delivery: d,
                event: ev,
            });
            return Ok(());
        }
        let feedback = self.feedback.contains(&filter);
        let mut key = OrderKey::of(&ev);
        if feedback {
            key.rank = FEEDBACK_RANK;
        }
        let input = Input {
            filter: filter.clone(),
            partition: d.partition,
        };
        let held = Held {
            filter,
            delivery: d,
            event: ev,
        };
        match self.merge.push(key, &input, held) {
            Pushed::Buffered => {}
            Pushed::Duplicate(h) => h.delivery.ack().await?,
            // Handed out before: a redelivery.
            Pushed::Late(h) if self.handed.contains(&h.event.meta().event_id) => {
                metrics::counter!("auroraq_events_redelivered_total", "stage" => self.stage.clone())
                    .increment(1);
                h.delivery.ack().await?
            }
            // What a stage's own outputs caused, at a time already let go: handled now.
            Pushed::Late(h) if feedback => self.ready.push_back(h),
            Pushed::Late(h) => send_late(bus, &self.stage, h, &self.metrics).await?,
        }
        Ok(())
    }

    /// After the end: what still comes is late (to `late.<stage>`) until the bus closes.
    pub async fn drain_late(&mut self) -> Result<(), StageError> {
        while let Some((filter, d)) = self.rx.recv().await {
            let Ok(d) = d else { continue };
            if is_watermark(d.payload()) {
                d.ack().await?;
                continue;
            }
            match AnyEvent::decode(d.payload()) {
                Ok(event) => {
                    let h = Held {
                        filter,
                        delivery: d,
                        event,
                    };
                    send_late(&*self.bus, &self.stage, h, &self.metrics).await?
                }
                Err(e) => self.undecodable(d, &e.to_string()).await?,
            }
        }
        Ok(())
    }

    /// A delivery that is neither an event nor a watermark: a dead letter (`decode_error`).
    async fn undecodable(&self, d: Delivery, why: &str) -> Result<(), StageError> {
        crate::send_dead_letter(&*self.bus, &self.stage, d, "decode_error", why, &self.metrics).await
    }
}

/// Runs a processor with several inputs on event time, merged by watermarks (see the module
/// docs). When every input has ended it lets the processor finish, publishes what that made and
/// [`Watermark::END`] on its outputs, then sends whatever still comes to its late topic until the
/// bus closes.
pub async fn run_processor_merged<P: Processor + 'static>(
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    subs: Vec<(String, Box<dyn Subscription>)>,
    processor: P,
    merge_cfg: MergeConfig,
    metrics: Arc<StageMetrics>,
) -> Result<StageStats, StageError> {
    let outputs = processor.outputs();
    let triggers: Vec<(String, Vec<String>)> = outputs
        .iter()
        .map(|o| (o.clone(), processor.triggers(o)))
        .collect();
    let mut reader = EventTimeReader::new(
        bus.clone(),
        &cfg,
        subs,
        processor.feedback(),
        processor.unordered(),
        merge_cfg,
        metrics.clone(),
    );
    // On event time its clock reads the events; on the wall clock (a live deployment merging by
    // watermarks) outputs are stamped now, later than any input, so the watermarks hold either way.
    let mut handler = if cfg.clock == crate::ClockKind::Event {
        ProcessorHandler::on_event_time(processor)
    } else {
        ProcessorHandler::live(processor)
    };
    let mut announced: HashMap<String, Micros> = HashMap::new();
    loop {
        match reader.next().await? {
            Next::Event(h) => process_held(&*bus, &cfg, &mut handler, *h, &metrics).await?,
            Next::Idle => announce(&*bus, &cfg, &reader, &triggers, &mut announced).await,
            Next::End => break,
        }
    }
    if !reader.closed {
        // Every input ended: what is still pending (final snapshots), then the end on the outputs.
        let mut outs = handler.processor.finish(&*handler.clock);
        for o in outs.iter_mut() {
            let cx = auroraq_schemas::TraceContext::of(o.meta());
            crate::trace::stamp(&cfg.name, o.meta_mut(), &cx);
        }
        publish_retrying(&*bus, &cfg, &outs).await?;
        metrics.published.fetch_add(outs.len() as u64, Ordering::Relaxed);
        let mut delay = cfg.retry_delay;
        while let Err(e) = publish_watermark(&*bus, &outputs, Watermark::END, &cfg.name).await {
            warn!(stage = %cfg.name, error = %e, retry_in = ?delay, "cannot publish the end watermark; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        info!(stage = %cfg.name, stats = ?reader.stats(), "every input ended");
        reader.drain_late().await?;
    }
    info!(stage = %cfg.name, stats = ?reader.stats(), "merge stopped");
    bus.flush().await?;
    Ok(metrics.snapshot())
}

/// Publishes on each output the watermark its triggers allow, where it has advanced.
async fn announce(
    bus: &dyn Bus,
    cfg: &StageConfig,
    reader: &EventTimeReader,
    triggers: &[(String, Vec<String>)],
    announced: &mut HashMap<String, Micros>,
) {
    let n = bus.partitions();
    let mut batch = Vec::new();
    let mut moved = Vec::new();
    for (output, from) in triggers {
        let mut w: Option<Micros> = None;
        for f in from {
            // Unordered inputs are not expected: they promise nothing.
            if !reader.expected.contains_key(f) {
                continue;
            }
            match reader.bound(f) {
                Some(b) => w = Some(w.map_or(b, |m| m.min(b))),
                None => {
                    w = None;
                    break;
                }
            }
        }
        let Some(w) = w else { continue };
        if announced.get(output).is_some_and(|a| *a >= w) {
            continue;
        }
        batch.extend(watermark_messages(output, n, w, &cfg.name));
        moved.push((output.clone(), w));
    }
    if batch.is_empty() {
        return;
    }
    match bus.publish(batch).await {
        Ok(_) => {
            for (o, w) in moved {
                announced.insert(o, w);
            }
        }
        Err(e) => warn!(stage = %cfg.name, error = %e, "cannot publish output watermarks; will retry"),
    }
}

/// Publishes a processor's outputs, retrying until they are out (in order or not at all).
async fn publish_retrying(bus: &dyn Bus, cfg: &StageConfig, outs: &[AnyEvent]) -> Result<(), StageError> {
    if outs.is_empty() {
        return Ok(());
    }
    let mut delay = cfg.retry_delay;
    loop {
        match crate::publish_events(bus, outs).await {
            Ok(_) => return Ok(()),
            Err(StageError::Encode(e)) => return Err(StageError::Encode(e)),
            Err(e) => {
                warn!(stage = %cfg.name, error = %e, retry_in = ?delay, "publishing outputs failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Processes one released event: outputs published, then the delivery acked.
async fn process_held<P: Processor>(
    bus: &dyn Bus,
    cfg: &StageConfig,
    handler: &mut ProcessorHandler<P>,
    h: Held,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    let Held {
        delivery: d,
        event: ev,
        ..
    } = h;
    let cx = auroraq_schemas::TraceContext::of(ev.meta());
    let input = crate::trace::enabled().then(|| (ev.meta().event_id.clone(), std::time::SystemTime::now()));
    match handler.handle(ev).await {
        Ok(mut outs) => {
            // Each output continues its input's trace with a span of this stage's own.
            let spans: Vec<_> = outs
                .iter_mut()
                .map(|o| crate::trace::stamp(&cfg.name, o.meta_mut(), &cx))
                .collect();
            if let (Some((id, start)), false) = (&input, outs.is_empty()) {
                crate::trace::record_outputs(
                    &cfg.name,
                    &spans,
                    &outs,
                    Some((id, d.topic(), Some(d.partition), cx)),
                    *start,
                );
            }
            match publish_retrying(bus, cfg, &outs).await {
                Ok(()) => {}
                Err(StageError::Encode(e)) => {
                    // The processor made something unpublishable: dead-letter the input.
                    let why = e.to_string();
                    return crate::send_dead_letter(bus, &cfg.name, d, "encode_error", &why, metrics).await;
                }
                Err(e) => return Err(e),
            }
            metrics.published.fetch_add(outs.len() as u64, Ordering::Relaxed);
            metrics.processed.fetch_add(1, Ordering::Relaxed);
            d.ack().await?;
        }
        Err(HandlerError::Permanent(why)) | Err(HandlerError::Transient(why)) => {
            // On event time a retry would come out of order: dead-letter it now.
            crate::send_dead_letter(bus, &cfg.name, d, "handler_error", &why, metrics).await?;
        }
    }
    Ok(())
}

/// An event behind the released frontier: a dead letter (reason `late`) on `late.<stage>`.
async fn send_late(bus: &dyn Bus, stage: &str, h: Held, metrics: &StageMetrics) -> Result<(), StageError> {
    let why = format!(
        "available at {} µs, behind the frontier already released",
        available_at(&h.event)
    );
    debug!(stage = %stage, id = %h.event.meta().event_id, "late event");
    let dl = crate::dead_letter(stage, &h.delivery, "late", &why);
    let mut m = crate::to_message(&AnyEvent::DeadLetter(dl)).map_err(StageError::Encode)?;
    m.topic = late_topic(stage);
    m.key = h.delivery.key().map(str::to_owned);
    bus.publish(vec![m]).await?;
    metrics::counter!("auroraq_events_late_total", "stage" => stage.to_owned()).increment(1);
    metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
    h.delivery.ack().await?;
    Ok(())
}

/// A single-input stage's watermarks passed on to its outputs (the sentiment worker: articles in,
/// scores out, in batches): it records the watermark of each input partition (the least over its
/// producers) and the times of the events it holds (taken in, outputs not yet published), and
/// announces on its outputs the least input watermark, kept before the earliest held event.
/// Outputs must be stamped no earlier than the event that made them.
pub struct Forwarder {
    bus: Arc<dyn Bus>,
    stage: String,
    outputs: Vec<String>,
    expected: Vec<u32>,
    state: tokio::sync::Mutex<ForwardState>,
}

#[derive(Default)]
struct ForwardState {
    parts: BTreeMap<u32, BTreeMap<String, Micros>>,
    held: BTreeMap<Micros, usize>,
    announced: Option<Micros>,
}

impl Forwarder {
    /// For the stage `cfg.name` (member `cfg.member` of `cfg.members`: the partitions it waits
    /// for), announcing on `outputs`.
    pub fn new(bus: Arc<dyn Bus>, cfg: &StageConfig, outputs: Vec<String>) -> Arc<Self> {
        let expected = (0..bus.partitions().max(1))
            .filter(|p| p % cfg.members.max(1) == cfg.member)
            .collect();
        Arc::new(Forwarder {
            bus,
            stage: cfg.name.clone(),
            outputs,
            expected,
            state: tokio::sync::Mutex::new(ForwardState::default()),
        })
    }

    /// A watermark came on input partition `partition`.
    pub async fn watermark(&self, partition: u32, w: &Watermark) {
        let mut s = self.state.lock().await;
        let p = s.parts.entry(partition).or_default();
        let v = p.entry(w.producer.clone()).or_insert(w.watermark);
        *v = (*v).max(w.watermark);
        metrics::counter!("auroraq_watermarks_consumed_total", "stage" => self.stage.clone()).increment(1);
        self.announce(&mut s).await;
    }

    /// An event at `t` was taken in: the outputs' watermark stays before it until released.
    pub async fn hold(&self, t: Micros) {
        *self.state.lock().await.held.entry(t).or_insert(0) += 1;
    }

    /// Events taken in at `times` are settled (outputs published, or dead-lettered, or handed
    /// back to the bus).
    pub async fn release(&self, times: impl IntoIterator<Item = Micros>) {
        let mut s = self.state.lock().await;
        for t in times {
            if let std::collections::btree_map::Entry::Occupied(mut e) = s.held.entry(t) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        self.announce(&mut s).await;
    }

    async fn announce(&self, s: &mut ForwardState) {
        let mut min: Option<Micros> = None;
        for p in &self.expected {
            let Some(w) = s.parts.get(p).and_then(|m| m.values().min().copied()) else {
                return;
            };
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        let Some(mut w) = min else { return };
        if let Some(&t) = s.held.keys().next() {
            w = w.min(t.saturating_sub(1));
        }
        if s.announced.is_some_and(|a| a >= w) {
            return;
        }
        match publish_watermark(&*self.bus, &self.outputs, w, &self.stage).await {
            Ok(()) => s.announced = Some(w),
            Err(e) => {
                warn!(stage = %self.stage, error = %e, "cannot publish the output watermark; will retry")
            }
        }
    }
}
