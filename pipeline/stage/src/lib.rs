//! The stage runner: how every stage meets the bus.
//!
//! [`run_stage`] joins a consumer group, and for each delivery decodes the event, hands it to the
//! stage's [`Handler`], publishes what the handler returns, and only then acks. What cannot be
//! decoded or processed becomes a [`DeadLetter`] on `dlq.<stage>` with the reason and the original
//! bytes, is counted, and is acked so the stage goes on; nothing is dropped silently and nothing
//! crashes the stage.
//!
//! Bad input never stalls a stage: a dead letter keeps at most
//! [`DeadLetter::MAX_ORIGINAL_BYTES`] of the original (with its size and SHA-256), so it fits the
//! bus even when the original barely did; and a message that has been delivered `max_attempts`
//! times is dead-lettered, or, if even its dead letter cannot be published, acked with an error
//! log and counted as dropped (`auroraq_dead_letters_dropped_total`, [`StageStats::dropped`]).

pub mod merge;
pub mod processor;
pub mod trace;
pub mod watermark;

pub use processor::{
    available_at, run_processor, subscribe_processor, Clock, Processor, ProcessorHandler, SimClock, WallClock,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use auroraq_bus::{
    topics, Bus, BusError, Delivery, OutMessage, PublishReport, SubscribeOptions, Subscription,
};
use auroraq_schemas::{now_micros, AnyEvent, CodecError, DeadLetter, EventKind, Incoming, Meta};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{debug, error, warn};

/// Where an event goes by default: the topic its kind and fields name.
pub fn topic_for(ev: &AnyEvent) -> String {
    match ev {
        AnyEvent::TradeTick(e) => topics::trades(&e.exchange, &e.symbol),
        AnyEvent::Kline(e) => topics::klines(&e.exchange, &e.symbol),
        AnyEvent::BookTicker(e) => topics::tickers(&e.exchange, &e.symbol),
        AnyEvent::BookUpdate(e) => topics::book(&e.exchange, &e.symbol),
        AnyEvent::MarkPrice(e) => topics::mark_prices(&e.exchange, &e.symbol),
        AnyEvent::Liquidation(e) => topics::liquidations(&e.exchange, &e.symbol),
        AnyEvent::Article(e) => topics::articles(&e.meta.source),
        AnyEvent::SentimentScore(_) => topics::SENTIMENT_SCORES.to_owned(),
        AnyEvent::FusedSignal(e) => topics::fused(&e.asset),
        AnyEvent::OrderIntent(_) => topics::ORDER_INTENTS.to_owned(),
        AnyEvent::RiskDecision(_) => topics::RISK_DECISIONS.to_owned(),
        AnyEvent::OrderUpdate(_) => topics::EXEC_ORDERS.to_owned(),
        AnyEvent::PortfolioSnapshot(_) => topics::PORTFOLIO.to_owned(),
        AnyEvent::Alert(_) => topics::ALERTS.to_owned(),
        AnyEvent::DeadLetter(e) => topics::dlq(&e.stage),
        AnyEvent::FeedStatus(e) => topics::feed_status(&e.feed),
    }
}

/// What [`topic_for`] reads of an event: its kind and the (at most two) fields its topic names,
/// `""` for the rest. Events with equal keys have the same topic, so a router can cache routes by
/// key without building the topic (kept next to [`topic_for`]: change the two together).
pub fn topic_key(ev: &AnyEvent) -> (auroraq_schemas::EventKind, &str, &str) {
    let (a, b): (&str, &str) = match ev {
        AnyEvent::TradeTick(e) => (&e.exchange, &e.symbol),
        AnyEvent::Kline(e) => (&e.exchange, &e.symbol),
        AnyEvent::BookTicker(e) => (&e.exchange, &e.symbol),
        AnyEvent::BookUpdate(e) => (&e.exchange, &e.symbol),
        AnyEvent::MarkPrice(e) => (&e.exchange, &e.symbol),
        AnyEvent::Liquidation(e) => (&e.exchange, &e.symbol),
        AnyEvent::Article(e) => (&e.meta.source, ""),
        AnyEvent::FusedSignal(e) => (&e.asset, ""),
        AnyEvent::DeadLetter(e) => (&e.stage, ""),
        AnyEvent::FeedStatus(e) => (&e.feed, ""),
        AnyEvent::SentimentScore(_)
        | AnyEvent::OrderIntent(_)
        | AnyEvent::RiskDecision(_)
        | AnyEvent::OrderUpdate(_)
        | AnyEvent::PortfolioSnapshot(_)
        | AnyEvent::Alert(_) => ("", ""),
    };
    (ev.kind(), a, b)
}

/// The partition key of an event: its symbol or asset, so that per-asset order holds.
pub fn key_for(ev: &AnyEvent) -> Option<String> {
    match ev {
        AnyEvent::TradeTick(e) => Some(e.symbol.clone()),
        AnyEvent::Kline(e) => Some(e.symbol.clone()),
        AnyEvent::BookTicker(e) => Some(e.symbol.clone()),
        AnyEvent::BookUpdate(e) => Some(e.symbol.clone()),
        AnyEvent::MarkPrice(e) => Some(e.symbol.clone()),
        AnyEvent::Liquidation(e) => Some(e.symbol.clone()),
        AnyEvent::Article(e) => Some(e.article_id.clone()),
        AnyEvent::SentimentScore(e) => e.assets.first().cloned(),
        AnyEvent::FusedSignal(e) => Some(e.asset.clone()),
        AnyEvent::OrderIntent(e) => Some(e.symbol.clone()),
        AnyEvent::RiskDecision(e) => Some(e.symbol.clone()),
        AnyEvent::OrderUpdate(e) => Some(e.symbol.clone()),
        AnyEvent::PortfolioSnapshot(e) => Some(e.account.clone()),
        AnyEvent::Alert(e) => e.subject.clone(),
        AnyEvent::DeadLetter(e) => Some(e.stage.clone()),
        AnyEvent::FeedStatus(e) => e.symbol.clone().or_else(|| Some(e.stream.clone())),
    }
}

/// Encodes an event into a bus message on its default topic, keyed and de-duplicated by its ids.
pub fn to_message(ev: &AnyEvent) -> Result<OutMessage, CodecError> {
    Ok(OutMessage {
        topic: topic_for(ev),
        key: key_for(ev),
        id: ev.meta().event_id.clone(),
        payload: Bytes::from(ev.encode()?),
    })
}

/// The copy of a fill on `exec.fills`: an order update that is a fill also goes there (every update
/// goes to `exec.orders`). A fill is what [`OrderUpdate::is_fill`](auroraq_schemas::OrderUpdate::is_fill)
/// says (`auroraq_schemas::routing`: a last fill quantity > 0 at a last fill price > 0), the rule
/// the sinks' fill rows follow too; an update with a quantity but no price is not copied. The copy
/// has its own bus id, `<event_id>@exec.fills`, since buses de-duplicate ids across topics; its
/// payload, event id included, is the same.
pub fn fill_copy(ev: &AnyEvent) -> Option<Result<OutMessage, CodecError>> {
    let AnyEvent::OrderUpdate(u) = ev else { return None };
    if !u.is_fill() {
        return None;
    }
    Some(to_message(ev).map(|mut m| {
        m.topic = topics::EXEC_FILLS.to_owned();
        m.id = format!("{}@{}", u.meta.event_id, topics::EXEC_FILLS);
        m
    }))
}

/// The bus messages of an event: on its default topic, plus its [`fill_copy`] for fills.
pub fn to_messages(ev: &AnyEvent) -> Result<Vec<OutMessage>, CodecError> {
    let mut out = vec![to_message(ev)?];
    if let Some(copy) = fill_copy(ev) {
        out.push(copy?);
    }
    Ok(out)
}

/// Encodes and publishes events on their default topics (fills also on `exec.fills`).
pub async fn publish_events(bus: &dyn Bus, events: &[AnyEvent]) -> Result<PublishReport, StageError> {
    let mut batch = Vec::with_capacity(events.len());
    for ev in events {
        batch.extend(to_messages(ev).map_err(StageError::Encode)?);
    }
    Ok(bus.publish(batch).await?)
}

/// What a handler reports when it cannot process an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is bad: retrying will not help. It is dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
    /// Something outside the event failed (a database, a model): retry later. After
    /// `max_attempts` deliveries it is dead-lettered.
    #[error("{0}")]
    Transient(String),
}

/// A stage's logic: one decoded event in, zero or more events out.
#[async_trait]
pub trait Handler<E: Incoming>: Send {
    async fn handle(&mut self, event: E) -> Result<Vec<AnyEvent>, HandlerError>;
}

/// Failures of the runner itself (not of single events, which become dead letters).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot encode an output event: {0}")]
    Encode(#[source] CodecError),
    #[error("a stage task failed: {0}")]
    Task(String),
}

/// How a stage joins the bus.
#[derive(Clone, Debug)]
pub struct StageConfig {
    /// Stage name: the consumer group (unless `group` says otherwise), the producer name of its
    /// watermarks and the dead-letter topic `dlq.<name>`.
    pub name: String,
    /// The consumer group when not the name: a stage restarted to rebuild its state reads its
    /// inputs again from the start in a group of its own (see `[stages] group_suffix`).
    pub group: Option<String>,
    /// Topic filter it consumes.
    pub filter: String,
    pub member: u32,
    pub members: u32,
    pub max_in_flight: usize,
    pub ack_wait: Duration,
    /// Deliveries before a transiently failing event is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_delay: Duration,
    /// The stage's clock: the wall clock (live), or event time (the latest event time handled),
    /// for replays of recorded data through the live roles. See [`ProcessorHandler`].
    pub clock: ClockKind,
}

/// How a stage keeps time (`[stages] clock`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    /// Outputs are stamped with the system clock: live runs.
    #[default]
    Wall,
    /// A stage's time is the latest event time it has handled (as a backtest's simulated clock):
    /// recorded data replayed through the live roles.
    Event,
}

impl StageConfig {
    pub fn new(name: impl Into<String>, filter: impl Into<String>) -> Self {
        StageConfig {
            name: name.into(),
            group: None,
            filter: filter.into(),
            member: 0,
            members: 1,
            max_in_flight: 256,
            ack_wait: Duration::from_secs(30),
            max_attempts: Retries::DEFAULT.max_attempts,
            retry_delay: Duration::from_millis(200),
            clock: ClockKind::Wall,
        }
    }

    fn subscribe_options(&self) -> SubscribeOptions {
        SubscribeOptions::new(
            topics::token(self.group.as_deref().unwrap_or(&self.name)),
            self.filter.clone(),
        )
        .member(self.member, self.members)
        .max_in_flight(self.max_in_flight)
        .ack_wait(self.ack_wait)
    }
}

/// Counters of one stage, readable while it runs.
#[derive(Default)]
pub struct StageMetrics {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    pub published: AtomicU64,
    pub redelivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Messages acked without a dead letter: theirs could not be published after `max_attempts`.
    pub dropped: AtomicU64,
    dead_letter_reasons: Mutex<BTreeMap<String, u64>>,
}

/// A point-in-time copy of [`StageMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StageStats {
    pub received: u64,
    pub processed: u64,
    pub published: u64,
    pub redelivered: u64,
    pub retried: u64,
    pub dead_letters: u64,
    /// Messages acked without a dead letter (see [`StageMetrics::dropped`]).
    pub dropped: u64,
    pub dead_letter_reasons: BTreeMap<String, u64>,
}

impl StageMetrics {
    pub fn snapshot(&self) -> StageStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StageStats {
            received: get(&self.received),
            processed: get(&self.processed),
            published: get(&self.published),
            redelivered: get(&self.redelivered),
            retried: get(&self.retried),
            dead_letters: get(&self.dead_letters),
            dropped: get(&self.dropped),
            dead_letter_reasons: self
                .dead_letter_reasons
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
        }
    }

    fn count_dead_letter(&self, stage: &str, reason: &str) {
        metrics::counter!("auroraq_dead_letters_total", "stage" => stage.to_owned(), "reason" => reason.to_owned())
            .increment(1);
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.dead_letter_reasons.lock() {
            *m.entry(reason.to_owned()).or_default() += 1;
        }
    }

    fn count_dropped(&self, stage: &str, reason: &str) {
        metrics::counter!("auroraq_dead_letters_dropped_total", "stage" => stage.to_owned(), "reason" => reason.to_owned())
            .increment(1);
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds the dead letter for a delivery. Its id is derived from the stage, the original message
/// (its id, or a hash of its bytes) and the reason, so dead-lettering the same message twice
/// yields one dead letter after de-duplication. It is [bounded](DeadLetter::bounded): an original
/// of more than [`DeadLetter::MAX_ORIGINAL_BYTES`] is cut, its size and SHA-256 noted in `error`.
pub fn dead_letter(stage: &str, d: &Delivery, reason: &str, error: &str) -> DeadLetter {
    let original = if d.id().is_empty() {
        let digest = Sha256::digest(d.payload());
        digest
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    } else {
        d.id().to_owned()
    };
    let now = now_micros();
    let mut meta = Meta::derived(
        EventKind::DeadLetter,
        stage,
        &[],
        &format!("{}|{original}|{reason}", d.topic()),
        now,
        now,
    );
    if !d.id().is_empty() {
        meta.derived_from = vec![d.id().to_owned()];
    }
    DeadLetter {
        meta,
        stage: stage.to_owned(),
        reason: reason.to_owned(),
        error: error.to_owned(),
        original_topic: d.topic().to_owned(),
        original_key: d.key().map(str::to_owned),
        original_id: (!d.id().is_empty()).then(|| d.id().to_owned()),
        original_bytes: d.payload().to_vec(),
        attempts: d.attempt as i32,
    }
    .bounded()
}

/// Runs `handler` on every event of `E` the stage's filter brings, until the bus closes and the
/// stage's share is drained. Returns the stage's counters.
pub async fn run_stage<E: Incoming, H: Handler<E>>(
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    handler: H,
    metrics: Arc<StageMetrics>,
) -> Result<StageStats, StageError> {
    let sub = subscribe_stage(&*bus, &cfg).await?;
    run_subscription(bus, cfg, sub, handler, metrics).await
}

/// Joins the stage's consumer group. Subscribe every stage before starting producers when the
/// bus only keeps messages for existing groups (the in-process bus).
pub async fn subscribe_stage(bus: &dyn Bus, cfg: &StageConfig) -> Result<Box<dyn Subscription>, StageError> {
    Ok(bus.subscribe(cfg.subscribe_options()).await?)
}

/// Runs a stage on a subscription made by [`subscribe_stage`]; see [`run_stage`].
pub async fn run_subscription<E: Incoming, H: Handler<E>>(
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    mut sub: Box<dyn Subscription>,
    mut handler: H,
    metrics: Arc<StageMetrics>,
) -> Result<StageStats, StageError> {
    let retries = Retries::of(&cfg);
    while let Some(next) = sub.next().await {
        let d = match next {
            Ok(d) => d,
            Err(e) => {
                warn!(stage = %cfg.name, error = %e, "delivery error");
                continue;
            }
        };
        if auroraq_schemas::is_watermark(d.payload()) {
            // Event-time progress, not an event: a single-input stage skips it.
            skip_watermark(&cfg.name, d).await?;
            continue;
        }
        metrics.received.fetch_add(1, Ordering::Relaxed);
        count_consumed(&cfg.name, d.topic());
        if d.attempt > 1 {
            metrics.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let started = std::time::Instant::now();
        // The consumed event's trace context (no allocation); its id only when spans are exported.
        let mut input_cx = None;
        let mut input_id = None;
        let outcome = match E::decode_message(d.payload()) {
            Err(e) => Err(("decode_error", e.to_string())),
            Ok(event) => {
                let m = event.incoming_meta();
                input_cx = Some(auroraq_schemas::TraceContext::of(m));
                if trace::enabled() {
                    input_id = Some((m.event_id.clone(), std::time::SystemTime::now()));
                }
                match handler.handle(event).await {
                    Ok(outs) => Ok(outs),
                    Err(HandlerError::Permanent(why)) => Err(("handler_error", why)),
                    Err(HandlerError::Transient(why)) if d.attempt >= cfg.max_attempts => {
                        Err(("max_attempts", format!("failed {} times, last: {why}", d.attempt)))
                    }
                    Err(HandlerError::Transient(why)) => {
                        debug!(stage = %cfg.name, attempt = d.attempt, error = %why, "transient failure; retrying");
                        metrics.retried.fetch_add(1, Ordering::Relaxed);
                        let delay = retry_after(cfg.retry_delay, d.attempt);
                        d.nack(Some(delay)).await?;
                        continue;
                    }
                }
            }
        };
        match outcome {
            Ok(mut outs) => {
                // Each output continues its parent's trace with a span of this stage's own.
                if let Some(cx) = input_cx.filter(|_| !outs.is_empty()) {
                    let spans: Vec<_> = outs
                        .iter_mut()
                        .map(|ev| trace::stamp(&cfg.name, ev.meta_mut(), &cx))
                        .collect();
                    if let Some((id, start)) = &input_id {
                        trace::record_outputs(
                            &cfg.name,
                            &spans,
                            &outs,
                            Some((id, d.topic(), Some(d.partition), cx)),
                            *start,
                        );
                    }
                }
                let mut batch = Vec::with_capacity(outs.len());
                let mut encode_error = None;
                for ev in &outs {
                    match to_messages(ev) {
                        Ok(m) => batch.extend(m),
                        Err(e) => encode_error = Some(e.to_string()),
                    }
                }
                if let Some(why) = encode_error {
                    error!(stage = %cfg.name, error = %why, "stage produced an event that does not encode");
                    send_dead_letter_after(&*bus, &cfg.name, d, "encode_error", &why, &metrics, retries)
                        .await?;
                    continue;
                }
                let n = batch.len() as u64;
                if n > 0 {
                    let topics: Vec<String> = batch.iter().map(|m| m.topic.clone()).collect();
                    if let Err(e) = bus.publish(batch).await {
                        if d.attempt >= cfg.max_attempts {
                            // The outputs may never fit (too large for the bus): give up on them.
                            let why = format!("publishing its outputs failed {} times, last: {e}", d.attempt);
                            send_dead_letter_after(
                                &*bus,
                                &cfg.name,
                                d,
                                "publish_error",
                                &why,
                                &metrics,
                                retries,
                            )
                            .await?;
                            continue;
                        }
                        // Not acked: it comes back and is processed again (outputs de-duplicate).
                        warn!(stage = %cfg.name, attempt = d.attempt, error = %e, "publishing outputs failed; will retry");
                        let delay = retry_after(cfg.retry_delay, d.attempt);
                        d.nack(Some(delay)).await?;
                        continue;
                    }
                    for t in topics {
                        count_published(&cfg.name, t);
                    }
                }
                metrics.published.fetch_add(n, Ordering::Relaxed);
                metrics.processed.fetch_add(1, Ordering::Relaxed);
                d.ack().await?;
                metrics::histogram!("auroraq_handler_seconds", "stage" => cfg.name.clone())
                    .record(started.elapsed().as_secs_f64());
            }
            Err((reason, why)) => {
                send_dead_letter_after(&*bus, &cfg.name, d, reason, &why, &metrics, retries).await?;
            }
        }
    }
    bus.flush().await?;
    Ok(metrics.snapshot())
}

/// Acks a [watermark](auroraq_schemas::Watermark) delivery that a stage or sink has no use for
/// (event-time progress, not an event: single-input stages and sinks skip them) and counts it on
/// `auroraq_watermarks_consumed_total{stage}`.
pub async fn skip_watermark(stage: &str, d: Delivery) -> Result<(), auroraq_bus::BusError> {
    metrics::counter!("auroraq_watermarks_consumed_total", "stage" => stage.to_owned()).increment(1);
    d.ack().await
}

/// Counts a consumed delivery on the `auroraq_events_consumed_total{stage,topic}` metric.
pub fn count_consumed(stage: &str, topic: &str) {
    count_consumed_n(stage, topic, 1);
}

/// Counts `n` events consumed from `topic` at once (a batch's run of one topic): one metric
/// lookup instead of `n`.
pub fn count_consumed_n(stage: &str, topic: &str, n: u64) {
    metrics::counter!("auroraq_events_consumed_total", "stage" => stage.to_owned(), "topic" => topic.to_owned())
        .increment(n);
}

/// Counts a published event on the `auroraq_events_published_total{stage,topic}` metric.
pub fn count_published(stage: &str, topic: String) {
    metrics::counter!("auroraq_events_published_total", "stage" => stage.to_owned(), "topic" => topic)
        .increment(1);
}

/// The delay before delivery `attempt + 1` of a message: `first`, doubling per attempt, at most
/// a minute.
pub fn retry_after(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(60))
}

/// When a message whose dead letter cannot be published is given up (see
/// [`send_dead_letter_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retries {
    /// Deliveries after which a message whose dead letter fails is acked without one.
    pub max_attempts: u32,
    /// First delay before the message comes back for another try; doubles per attempt.
    pub delay: Duration,
}

impl Retries {
    /// What [`send_dead_letter`] uses: [`StageConfig::new`]'s `max_attempts`, retried after a second.
    pub const DEFAULT: Retries = Retries {
        max_attempts: 5,
        delay: Duration::from_secs(1),
    };

    /// A stage's own: its `max_attempts` and `retry_delay`.
    pub fn of(cfg: &StageConfig) -> Retries {
        Retries {
            max_attempts: cfg.max_attempts,
            delay: cfg.retry_delay,
        }
    }
}

/// Publishes the dead letter of `d` to `dlq.<stage>`, counts it and acks `d`; if the dead letter
/// cannot be published, nacks `d` for another try, until `d` has been delivered
/// [`Retries::DEFAULT`]`.max_attempts` times: then acks it with an error log and counts it dropped.
/// See [`send_dead_letter_after`].
pub async fn send_dead_letter(
    bus: &dyn Bus,
    stage: &str,
    d: Delivery,
    reason: &str,
    why: &str,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    send_dead_letter_after(bus, stage, d, reason, why, metrics, Retries::DEFAULT).await
}

/// Publishes the [bounded](DeadLetter::bounded) dead letter of `d` to `dlq.<stage>`, counts it and
/// acks `d`. If the dead letter cannot be published (the bus refuses it or is down), `d` is nacked
/// and comes back after [`retry_after`]; once `d` has been delivered `retries.max_attempts` times
/// it is acked anyway, with an error log naming it (topic, id, size, SHA-256) and counted on
/// [`StageMetrics::dropped`] and `auroraq_dead_letters_dropped_total{stage,reason}`: a message
/// that cannot even be dead-lettered never holds up the stage.
pub async fn send_dead_letter_after(
    bus: &dyn Bus,
    stage: &str,
    d: Delivery,
    reason: &str,
    why: &str,
    metrics: &StageMetrics,
    retries: Retries,
) -> Result<(), StageError> {
    warn!(stage, topic = %d.topic(), reason, error = %why, "dead letter");
    let dl = dead_letter(stage, &d, reason, why);
    let published = match auroraq_schemas::encode(&dl) {
        Ok(payload) => {
            let msg = OutMessage {
                topic: topics::dlq(stage),
                key: Some(dl.stage.clone()),
                id: dl.meta.event_id.clone(),
                payload: payload.into(),
            };
            bus.publish(vec![msg])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("the dead letter does not encode: {e}")),
    };
    match published {
        Ok(()) => {
            metrics.count_dead_letter(stage, reason);
            d.ack().await?;
        }
        Err(e) if d.attempt >= retries.max_attempts => {
            let digest = Sha256::digest(d.payload());
            let sha256: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            error!(
                stage,
                topic = %d.topic(),
                id = %d.id(),
                bytes = d.payload().len(),
                %sha256,
                attempts = d.attempt,
                reason,
                cause = %why,
                error = %e,
                "cannot publish dead letter; acking the message without one (dropped)"
            );
            metrics.count_dropped(stage, reason);
            d.ack().await?;
        }
        Err(e) => {
            // The dead letter did not make it: keep the original for another try.
            warn!(stage, attempt = d.attempt, error = %e, "cannot publish dead letter; will retry");
            let delay = retry_after(retries.delay, d.attempt);
            d.nack(Some(delay)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use auroraq_schemas::samples;

    /// Variants of every sample with each field a topic may name changed.
    fn events() -> Vec<AnyEvent> {
        let mut out = Vec::new();
        for ev in samples::all() {
            for (a, b) in [("x", "y"), ("x", "Y"), ("X", "y"), ("z", "y")] {
                let mut e = ev.clone();
                match &mut e {
                    AnyEvent::TradeTick(e) => (e.exchange, e.symbol) = (a.into(), b.into()),
                    AnyEvent::Kline(e) => (e.exchange, e.symbol) = (a.into(), b.into()),
                    AnyEvent::BookTicker(e) => (e.exchange, e.symbol) = (a.into(), b.into()),
                    AnyEvent::BookUpdate(e) => (e.exchange, e.symbol) = (a.into(), b.into()),
                    AnyEvent::MarkPrice(e) => (e.exchange, e.symbol) = (a.into(), b.into()),
                    AnyEvent::Liquidation(e) => (e.exchange, e.symbol) = (a.into(), b.into()),
                    AnyEvent::Article(e) => e.meta.source = a.into(),
                    AnyEvent::FusedSignal(e) => e.asset = a.into(),
                    AnyEvent::DeadLetter(e) => e.stage = a.into(),
                    AnyEvent::FeedStatus(e) => e.feed = a.into(),
                    _ => {}
                }
                out.push(e);
            }
            out.push(ev);
        }
        out
    }

    #[test]
    fn fills_are_copied_to_exec_fills_by_the_schemas_rule() {
        for ev in samples::all() {
            let AnyEvent::OrderUpdate(base) = ev else {
                assert!(fill_copy(&ev).is_none(), "{:?}", ev.kind());
                continue;
            };
            for (u, class) in auroraq_schemas::routing::fill_edge_cases(&base) {
                let ev = AnyEvent::OrderUpdate(u);
                let msgs = to_messages(&ev).expect("encodes");
                let fill = class == auroraq_schemas::FillClass::Fill;
                assert_eq!(msgs.len(), if fill { 2 } else { 1 }, "{class:?}");
                assert_eq!(msgs[0].topic, topics::EXEC_ORDERS);
                if fill {
                    assert_eq!(msgs[1].topic, topics::EXEC_FILLS);
                    assert_eq!(msgs[1].id, format!("{}@exec.fills", ev.meta().event_id));
                    assert_eq!(msgs[1].payload, msgs[0].payload);
                }
            }
        }
    }

    #[test]
    fn equal_topic_keys_mean_equal_topics() {
        let evs = events();
        for a in &evs {
            for b in &evs {
                if topic_key(a) == topic_key(b) {
                    assert_eq!(topic_for(a), topic_for(b), "{:?} {:?}", a.kind(), b.kind());
                }
            }
        }
    }
}
