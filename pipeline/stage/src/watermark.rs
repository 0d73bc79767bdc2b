//! Publishing watermarks, and running a multi-input [`Processor`] merged on them.
//!
//! A producer says how far it has come on a topic with [`publish_watermark`]: one
//! [`Watermark`] message per bus partition of the topic, each keyed so that the bus's key hash
//! ([`auroraq_bus::partition_of`]) puts it on that partition, behind the data it covers.
//!
//! [`run_processor_merged`] runs a processor with several inputs on event time: deliveries are
//! buffered in a [`Merge`] and handed to the processor in [`OrderKey`] order once the least
//! watermark over every input partition has passed them; a delivery is acked only after the
//! events made from it are published; an event behind the released frontier goes to
//! `late.<stage>` as a dead letter (reason `late`) and never reorders the past; after each
//! advance the processor's own output topics get the frontier as their watermark.
//!
//! Feedback inputs (a stage reading what its own outputs cause, e.g. an agent reading the order
//! updates its intents led to) cannot hold the frontier at the time they are caused at: that
//! would wait on itself. For them ([`Processor::feedback`]) a watermark `w` counts as `w + 1`
//! (everything strictly before the next time is in), they sort after the other inputs at equal
//! times (rank 2), and one arriving at a time already released is processed at once, not sent
//! to the late topic: the backtest engine's order (inputs at a time first, then what they cause).
//! Not enough on its own for a cycle whose every edge is feedback (agent → risk → execution →
//! agent, all stamped at their input's time): the frontiers there would advance by 1 µs per round
//! trip. Such a cycle needs its output watermarks computed from its non-feedback inputs only (or
//! a progress protocol with in-flight counts); the job's roles are not run merged yet.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use auroraq_bus::{partition_of, topics, Bus, BusError, Delivery, OutMessage, Subscription};
use auroraq_schemas::{is_watermark, now_micros, AnyEvent, Micros, Watermark};
use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::merge::{Input, Merge, MergeConfig, OrderKey, Pushed};
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

/// Subscribes each input filter of a processor in the stage's group, keeping which filter each
/// delivery came through (see [`run_processor_merged`]).
pub async fn subscribe_inputs(
    bus: &dyn Bus,
    cfg: &StageConfig,
    inputs: &[String],
) -> Result<Vec<(String, Box<dyn Subscription>)>, StageError> {
    let mut subs = Vec::with_capacity(inputs.len());
    for filter in inputs {
        let mut c = cfg.clone();
        c.filter = filter.clone();
        subs.push((filter.clone(), crate::subscribe_stage(bus, &c).await?));
    }
    Ok(subs)
}

struct Held {
    d: Delivery,
    ev: AnyEvent,
}

/// Runs a processor with several inputs on event time, merged by watermarks (see the module
/// docs), until the bus closes; then what is still buffered is processed in order.
pub async fn run_processor_merged<P: Processor + 'static>(
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    subs: Vec<(String, Box<dyn Subscription>)>,
    processor: P,
    merge_cfg: MergeConfig,
    metrics: Arc<StageMetrics>,
) -> Result<StageStats, StageError> {
    let outputs = processor.outputs();
    let feedback = processor.feedback();
    let mut handler = ProcessorHandler::on_event_time(processor);
    let partitions = bus.partitions();
    let mine: Vec<u32> = (0..partitions)
        .filter(|p| p % cfg.members.max(1) == cfg.member)
        .collect();
    let mut merge: Merge<Held> = Merge::new(merge_cfg);
    let now = Instant::now();
    for (filter, _) in &subs {
        for p in &mine {
            merge.expect(
                Input {
                    filter: filter.clone(),
                    partition: *p,
                },
                now,
            );
        }
    }
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(String, Result<Delivery, BusError>)>(cfg.max_in_flight.max(16));
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
    drop(tx);
    let mut announced: Option<Micros> = None;
    let mut stale_reported = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = tick.tick() => {
                let now = Instant::now();
                let stale = merge.stale_inputs(now);
                if stale != stale_reported {
                    if !stale.is_empty() {
                        warn!(stage = %cfg.name, ?stale, "inputs sent no watermark within the stale limit; falling back to the bounded lateness");
                    }
                    metrics::gauge!("auroraq_merge_stale_inputs", "stage" => cfg.name.clone()).set(stale.len() as f64);
                    stale_reported = stale;
                }
                let ready = merge.ready(now);
                process_ready(&*bus, &cfg, &mut handler, ready, &metrics).await?;
                announce(&*bus, &cfg, &merge, &outputs, &mut announced, now).await;
                continue;
            }
        };
        let Some((filter, d)) = next else { break };
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                warn!(stage = %cfg.name, error = %e, "delivery error");
                continue;
            }
        };
        let is_feedback = feedback.contains(&filter);
        if is_watermark(d.payload()) {
            match Watermark::decode(d.payload()) {
                Ok(w) => {
                    let t = if is_feedback {
                        w.watermark.saturating_add(1)
                    } else {
                        w.watermark
                    };
                    merge.watermark(
                        Input {
                            filter,
                            partition: d.partition,
                        },
                        t,
                        Instant::now(),
                    );
                    metrics::counter!("auroraq_watermarks_consumed_total", "stage" => cfg.name.clone())
                        .increment(1);
                    d.ack().await?;
                }
                Err(e) => {
                    crate::send_dead_letter(&*bus, &cfg.name, d, "decode_error", &e.to_string(), &metrics)
                        .await?
                }
            }
        } else {
            metrics.received.fetch_add(1, Ordering::Relaxed);
            crate::count_consumed(&cfg.name, d.topic());
            match AnyEvent::decode(d.payload()) {
                Err(e) => {
                    crate::send_dead_letter(&*bus, &cfg.name, d, "decode_error", &e.to_string(), &metrics)
                        .await?
                }
                Ok(ev) => {
                    let mut key = OrderKey::of(&ev);
                    if is_feedback {
                        key.rank = 2;
                    }
                    match merge.push(key, Held { d, ev }) {
                        Pushed::Buffered => {}
                        Pushed::Duplicate(h) => h.d.ack().await?,
                        Pushed::Late(h) if is_feedback => {
                            process_ready(&*bus, &cfg, &mut handler, vec![h], &metrics).await?
                        }
                        Pushed::Late(h) => send_late(&*bus, &cfg, h, &metrics).await?,
                    }
                }
            }
        }
        let now = Instant::now();
        let ready = merge.ready(now);
        process_ready(&*bus, &cfg, &mut handler, ready, &metrics).await?;
        announce(&*bus, &cfg, &merge, &outputs, &mut announced, now).await;
    }
    // The input ended: what is left, in order.
    let rest = merge.drain();
    process_ready(&*bus, &cfg, &mut handler, rest, &metrics).await?;
    let stats = merge.stats().clone();
    info!(stage = %cfg.name, ?stats, "merge stopped");
    bus.flush().await?;
    Ok(metrics.snapshot())
}

/// Publishes the frontier on the processor's output topics when it has advanced.
async fn announce(
    bus: &dyn Bus,
    cfg: &StageConfig,
    merge: &Merge<Held>,
    outputs: &[String],
    announced: &mut Option<Micros>,
    now: Instant,
) {
    let Some(f) = merge.frontier(now) else { return };
    if outputs.is_empty() || announced.is_some_and(|a| a >= f) {
        return;
    }
    match publish_watermark(bus, outputs, f, &cfg.name).await {
        Ok(()) => *announced = Some(f),
        Err(e) => warn!(stage = %cfg.name, error = %e, "cannot publish the output watermark; will retry"),
    }
}

/// Processes released deliveries in order: outputs published, then the delivery acked.
async fn process_ready<P: Processor>(
    bus: &dyn Bus,
    cfg: &StageConfig,
    handler: &mut ProcessorHandler<P>,
    ready: Vec<Held>,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    for Held { d, ev } in ready {
        let cx = auroraq_schemas::TraceContext::of(ev.meta());
        let outcome = handler.handle(ev).await;
        match outcome {
            Ok(mut outs) => {
                // Each output continues its input's trace with a span of this stage's own.
                for o in outs.iter_mut() {
                    crate::trace::stamp(&cfg.name, o.meta_mut(), &cx);
                }
                let mut delay = cfg.retry_delay;
                loop {
                    match crate::publish_events(bus, &outs).await {
                        Ok(_) => break,
                        Err(StageError::Encode(e)) => {
                            // The processor made something unpublishable: dead-letter the input.
                            let why = e.to_string();
                            crate::send_dead_letter(bus, &cfg.name, d, "encode_error", &why, metrics).await?;
                            return Ok(());
                        }
                        Err(e) => {
                            // In order or not at all: the next events wait for this one.
                            warn!(stage = %cfg.name, error = %e, retry_in = ?delay, "publishing outputs failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
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
    }
    Ok(())
}

/// An event behind the released frontier: a dead letter (reason `late`) on `late.<stage>`.
async fn send_late(
    bus: &dyn Bus,
    cfg: &StageConfig,
    h: Held,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    let why = format!(
        "available at {} µs, behind the frontier already released",
        available_at(&h.ev)
    );
    debug!(stage = %cfg.name, id = %h.ev.meta().event_id, "late event");
    let dl = crate::dead_letter(&cfg.name, &h.d, "late", &why);
    let mut m = crate::to_message(&AnyEvent::DeadLetter(dl)).map_err(StageError::Encode)?;
    m.topic = late_topic(&cfg.name);
    m.key = h.d.key().map(str::to_owned);
    bus.publish(vec![m]).await?;
    metrics::counter!("auroraq_events_late_total", "stage" => cfg.name.clone()).increment(1);
    metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
    h.d.ack().await?;
    Ok(())
}
