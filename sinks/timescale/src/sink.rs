//! The sink's loop: take deliveries into batches bounded by size and time, decode each batch,
//! write it in one transaction, and ack its deliveries only after the commit.
//!
//! Two tasks. Intake receives deliveries and cuts batches; the writer decodes a batch (on several
//! cores when it is large, and the next batch while it writes the current one), writes it and
//! acks it. A small queue of batches sits between them. While PostgreSQL is down the writer retries
//! its batch with backoff and reconnects; the queue fills, intake stops taking deliveries, and
//! nothing more is consumed until the database is back. Nothing is acked that is not committed: a
//! sink killed at any point leaves its unacked deliveries to be redelivered, and redelivered rows
//! de-duplicate on the tables' keys.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use auroraq_bus::{topics, Bus, Delivery, SubscribeOptions, Subscription};
use auroraq_schemas::AnyEvent;
use auroraq_stage::{send_dead_letter, StageMetrics};
use auroraq_util::{sleep_or_cancel, CancellationToken};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::TimescaleConfig;
use crate::metrics::{SinkMetrics, SinkStats};
use crate::tables;
use crate::writer::{WriteError, Writer};
use crate::SinkError;

/// Deliveries as received, cut into a batch by intake.
#[derive(Default)]
struct Batch {
    deliveries: Vec<Delivery>,
    redelivered: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.deliveries.len()
    }
}

/// A batch decoded: the deliveries whose events are good, and those events, in the same order.
struct Decoded {
    deliveries: Vec<Delivery>,
    events: Vec<AnyEvent>,
    redelivered: bool,
}

/// Below this many deliveries a batch is decoded on the writer's thread; above, in chunks on
/// blocking threads, one per core.
const PARALLEL_DECODE_MIN: usize = 256;

/// Decodes and checks one payload: the event, or the dead-letter reason and why.
fn decode_one(payload: &[u8]) -> Result<AnyEvent, (&'static str, String)> {
    let ev = AnyEvent::decode(payload).map_err(|e| ("decode_error", e.to_string()))?;
    tables::check(&ev).map_err(|why| ("invalid_event", why))?;
    Ok(ev)
}

/// Per delivery, its event or why it is a dead letter.
type DecodeResults = Vec<Result<AnyEvent, (&'static str, String)>>;

/// Decodes a batch's payloads, in order, on several cores when it is large.
async fn decode_all(deliveries: &[Delivery]) -> DecodeResults {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if deliveries.len() < PARALLEL_DECODE_MIN || cores < 2 {
        return deliveries.iter().map(|d| decode_one(d.payload())).collect();
    }
    let payloads: Vec<bytes::Bytes> = deliveries.iter().map(|d| d.payload_bytes()).collect();
    let chunk = payloads.len().div_ceil(cores);
    let mut tasks = Vec::with_capacity(cores);
    for c in payloads.chunks(chunk) {
        let c = c.to_vec();
        tasks.push(tokio::task::spawn_blocking(move || {
            c.iter().map(|p| decode_one(p)).collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::with_capacity(payloads.len());
    let mut done = 0;
    for t in tasks {
        match t.await {
            Ok(part) => out.extend(part),
            // A decoding thread died: decode its share here instead.
            Err(_) => out.extend(
                payloads[done..(done + chunk).min(payloads.len())]
                    .iter()
                    .map(|p| decode_one(p)),
            ),
        }
        done = out.len();
    }
    out
}

/// Joins the sink's consumer group, one subscription per filter. On the in-process bus, call it
/// before producers start (a group sees what is published after it exists).
pub async fn subscribe(
    bus: &dyn Bus,
    cfg: &TimescaleConfig,
) -> Result<Vec<Box<dyn Subscription>>, SinkError> {
    cfg.validate().map_err(SinkError::Config)?;
    let mut subs = Vec::with_capacity(cfg.filters.len());
    for f in &cfg.filters {
        let opts = SubscribeOptions::new(topics::token(&cfg.group), f.clone())
            .member(cfg.member, cfg.members)
            .max_in_flight(cfg.max_in_flight())
            .ack_wait(cfg.ack_wait);
        subs.push(bus.subscribe(opts).await?);
    }
    Ok(subs)
}

/// Subscribes and runs the sink; see [`run_subscriptions`].
pub async fn run(
    bus: Arc<dyn Bus>,
    cfg: TimescaleConfig,
    metrics: Arc<SinkMetrics>,
    cancel: CancellationToken,
) -> Result<SinkStats, SinkError> {
    let subs = subscribe(&*bus, &cfg).await?;
    run_subscriptions(bus, cfg, subs, metrics, cancel).await
}

/// Runs the sink on subscriptions made by [`subscribe`] until they end (the bus is closed and
/// this member's share drained), writing what it holds before returning. Connects (and applies
/// the migrations when `cfg.migrate`) on the first batch, retrying while PostgreSQL is away.
///
/// `cancel` only ends waiting: once it fires, a batch that cannot be written is left unacked (the
/// bus redelivers it to the next sink) and the sink returns. To stop the sink, close the bus
/// (it drains), then cancel if PostgreSQL may be down.
///
/// Undecodable deliveries and events the database rejects become dead letters on
/// `dlq.<group>`. Returns the counters; fails only when retrying cannot help (bad configuration,
/// a migration that fails, a database without the schema when `migrate` is off).
pub async fn run_subscriptions(
    bus: Arc<dyn Bus>,
    cfg: TimescaleConfig,
    subs: Vec<Box<dyn Subscription>>,
    metrics: Arc<SinkMetrics>,
    cancel: CancellationToken,
) -> Result<SinkStats, SinkError> {
    cfg.validate().map_err(SinkError::Config)?;
    let writer = Writer::new(cfg.clone(), metrics.clone())?;
    let stage = topics::token(&cfg.group);
    let dl_metrics = Arc::new(StageMetrics::default());

    // One forwarding task per subscription, so that waiting on the batch timer never cancels a
    // pending `next()`. Dropping the receiver drops what is queued: those deliveries come back.
    let (dtx, mut drx) = mpsc::channel::<Delivery>(cfg.batch_rows.clamp(64, 8192));
    let mut forwarders = Vec::new();
    for mut sub in subs {
        let dtx = dtx.clone();
        forwarders.push(tokio::spawn(async move {
            while let Some(next) = sub.next().await {
                match next {
                    Ok(d) => {
                        if dtx.send(d).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => warn!(error = %e, "delivery error"),
                }
            }
        }));
    }
    drop(dtx);

    let (btx, brx) = mpsc::channel::<Batch>(cfg.pipeline.max(1));
    let writer_task = tokio::spawn(write_batches(
        writer,
        brx,
        bus.clone(),
        stage.clone(),
        metrics.clone(),
        dl_metrics.clone(),
        cancel.clone(),
        cfg.clone(),
    ));

    // Dropping this future (a caller's abort) stops every task of the sink, as a crash would:
    // nothing more is written or acked, and what was not acked comes back.
    let _guard = AbortOnDrop(
        forwarders
            .iter()
            .map(|f| f.abort_handle())
            .chain(std::iter::once(writer_task.abort_handle()))
            .collect(),
    );

    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            d = drx.recv() => Some(d),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => None,
            // The writer gave up (cancelled) or failed: take nothing more.
            _ = btx.closed() => break,
        };
        let d = match next {
            // The batch's time is up.
            None => {
                deadline = None;
                count_consumed(&batch.deliveries);
                if btx.send(std::mem::take(&mut batch)).await.is_err() {
                    break;
                }
                continue;
            }
            // Every subscription ended.
            Some(None) => break,
            Some(Some(d)) => d,
        };
        if auroraq_schemas::is_watermark(d.payload()) {
            if let Err(e) = auroraq_stage::skip_watermark("sink-postgres", d).await {
                debug!(error = %e, "acking a watermark failed; it will come back");
            }
            continue;
        }
        metrics.received.fetch_add(1, Ordering::Relaxed);
        if d.attempt > 1 {
            metrics.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        batch.redelivered |= d.attempt > 1;
        batch.deliveries.push(d);
        if batch.len() == 1 {
            deadline = Some(Instant::now() + cfg.batch_delay);
        }
        if batch.len() >= cfg.batch_rows {
            deadline = None;
            count_consumed(&batch.deliveries);
            if btx.send(std::mem::take(&mut batch)).await.is_err() {
                break;
            }
        }
    }
    if batch.len() > 0 {
        count_consumed(&batch.deliveries);
        let _ = btx.send(batch).await;
    }
    drop(btx);
    drop(drx);
    for f in forwarders {
        f.abort();
    }
    let flavor = match writer_task.await {
        Ok(Ok(flavor)) => flavor,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(SinkError::Task(e.to_string())),
    };
    if let Err(e) = bus.flush().await {
        warn!(error = %e, "flushing acks failed");
    }
    let mut stats = metrics.snapshot();
    stats.flavor = flavor.map(|f| f.name().to_owned());
    info!(?stats, "timescale sink finished");
    Ok(stats)
}

/// Aborts the sink's tasks when the sink's future is dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Publishes a dead letter for `d` and acks it (or nacks it when the dead letter cannot be sent).
async fn dead_letter(
    bus: &dyn Bus,
    stage: &str,
    d: Delivery,
    reason: &str,
    why: &str,
    metrics: &SinkMetrics,
    dl_metrics: &StageMetrics,
) {
    let before = dl_metrics.dead_letters.load(Ordering::Relaxed);
    if let Err(e) = send_dead_letter(bus, stage, d, reason, why, dl_metrics).await {
        error!(error = %e, "cannot settle a dead-lettered delivery");
    }
    let after = dl_metrics.dead_letters.load(Ordering::Relaxed);
    metrics.dead_letters.fetch_add(after - before, Ordering::Relaxed);
}

/// Acks a committed batch's deliveries on a task of their own, so that the next batch is written
/// meanwhile (acking 5,000 deliveries one by one took a few percent of the writer's time); the
/// previous batch's acks finish first, so at most one batch is being acked at a time.
async fn ack_behind(
    acking: &mut Option<JoinHandle<()>>,
    deliveries: Vec<Delivery>,
    metrics: &Arc<SinkMetrics>,
) {
    if let Some(h) = acking.take() {
        let _ = h.await;
    }
    let m = metrics.clone();
    *acking = Some(tokio::spawn(async move { ack_all(deliveries, &m).await }));
}

/// The writer task: writes each batch until it commits (retrying with backoff while the
/// database is away), then acks its deliveries (see [`ack_behind`]). Returns the schema flavour.
#[allow(clippy::too_many_arguments)]
async fn write_batches(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Batch>,
    bus: Arc<dyn Bus>,
    stage: String,
    metrics: Arc<SinkMetrics>,
    dl_metrics: Arc<StageMetrics>,
    cancel: CancellationToken,
    cfg: TimescaleConfig,
) -> Result<Option<crate::Flavor>, SinkError> {
    let mut acking: Option<JoinHandle<()>> = None;
    let result = 'run: {
        // Connect (and migrate) now rather than on the first batch, so that a refusal (a bad
        // password, a missing database, a failing migration) stops the sink at once instead of
        // when events arrive; a server that is away is only noted, and retried on the first batch.
        tokio::select! {
            r = writer.ensure_connected() => match r {
                Ok(()) => {}
                Err(WriteError::Fatal(e)) => {
                    error!(error = %e, "the timescale sink cannot go on");
                    break 'run Err(e);
                }
                Err(e) => warn!(error = %e, "PostgreSQL is not reachable yet; retrying when events arrive"),
            },
            _ = cancel.cancelled() => break 'run Ok(writer.flavor()),
        }
        // The next batch, decoding while the current one is written.
        let mut next: Option<JoinHandle<(Batch, DecodeResults)>> = None;
        loop {
            let (raw, decoded) = match next.take() {
                Some(h) => match h.await {
                    Ok(r) => r,
                    Err(e) => break 'run Err(SinkError::Task(format!("decoding a batch: {e}"))),
                },
                None => match rx.recv().await {
                    Some(raw) => {
                        let d = decode_all(&raw.deliveries).await;
                        (raw, d)
                    }
                    None => break,
                },
            };
            if let Ok(queued) = rx.try_recv() {
                next = Some(tokio::spawn(async move {
                    let d = decode_all(&queued.deliveries).await;
                    (queued, d)
                }));
            }
            let mut batch = Decoded {
                deliveries: Vec::with_capacity(raw.len()),
                events: Vec::with_capacity(raw.len()),
                redelivered: raw.redelivered,
            };
            let now = auroraq_schemas::now_micros();
            for (d, r) in raw.deliveries.into_iter().zip(decoded) {
                match r.and_then(|ev| match cfg.check_time(ev.meta().ts_event, now) {
                    Ok(()) => Ok(ev),
                    Err(why) => Err(("out_of_time_range", why)),
                }) {
                    Ok(ev) => {
                        batch.deliveries.push(d);
                        batch.events.push(ev);
                    }
                    Err((reason, why)) => {
                        dead_letter(&*bus, &stage, d, reason, &why, &metrics, &dl_metrics).await;
                    }
                }
            }
            if batch.events.is_empty() {
                continue;
            }
            let mut backoff = cfg.backoff_min;
            let mut failures = 0u32;
            let traced = auroraq_stage::trace::enabled().then(std::time::SystemTime::now);
            loop {
                let res = match tokio::time::timeout(
                    cfg.write_timeout,
                    writer.write(&batch.events, batch.redelivered),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(WriteError::Connection(format!(
                        "the batch took longer than {:?}",
                        cfg.write_timeout
                    ))),
                };
                let failure = match res {
                    Ok(outcome) => {
                        metrics.record(&outcome);
                        if let Some(start) = traced {
                            // One span per committed batch, linked to every row's event.
                            auroraq_stage::trace::record_sink_batch(
                                &stage,
                                "postgres",
                                batch.events.iter().map(|e| e.meta()),
                                start,
                            );
                        }
                        debug!(
                            rows = batch.events.len(),
                            inserted = outcome.inserted(),
                            duplicates = outcome.duplicates(),
                            staged = outcome.staged,
                            "batch committed"
                        );
                        if failures > 0 {
                            info!(failures, "PostgreSQL is back; batch committed");
                        }
                        ack_behind(&mut acking, batch.deliveries, &metrics).await;
                        break;
                    }
                    Err(WriteError::Data(e)) => {
                        warn!(error = %crate::writer::db_message(&e), rows = batch.events.len(), "the database rejected the batch; writing its events one by one");
                        match writer.write_each(&batch.events).await {
                            Ok(bad) => {
                                let mut deliveries: Vec<Option<Delivery>> =
                                    batch.deliveries.into_iter().map(Some).collect();
                                for (i, why) in bad {
                                    if let Some(d) = deliveries.get_mut(i).and_then(Option::take) {
                                        dead_letter(
                                            &*bus,
                                            &stage,
                                            d,
                                            "rejected_by_database",
                                            &why,
                                            &metrics,
                                            &dl_metrics,
                                        )
                                        .await;
                                    }
                                }
                                ack_behind(&mut acking, deliveries.into_iter().flatten().collect(), &metrics)
                                    .await;
                                break;
                            }
                            Err(e) => e,
                        }
                    }
                    Err(e) => e,
                };
                match failure {
                    WriteError::Fatal(e) => {
                        error!(error = %e, "the timescale sink cannot go on");
                        break 'run Err(e);
                    }
                    WriteError::Connection(_) => writer.disconnect(),
                    _ => {}
                }
                failures += 1;
                metrics.retries.fetch_add(1, Ordering::Relaxed);
                warn!(error = %failure, attempt = failures, retry_in = ?backoff, rows = batch.events.len(), "writing a batch failed; holding it and retrying");
                if !sleep_or_cancel(backoff, &cancel).await {
                    warn!(
                        rows = batch.events.len(),
                        "stopping with an unwritten batch: it stays unacked and will be redelivered"
                    );
                    break 'run Ok(writer.flavor());
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
        Ok(writer.flavor())
    };
    // What was committed is acked before the sink returns, whatever stopped it.
    if let Some(h) = acking {
        let _ = h.await;
    }
    result
}

/// Counts a batch's deliveries on `auroraq_events_consumed_total`, once per run of one topic
/// rather than once per delivery (a metric lookup and two strings each).
fn count_consumed(deliveries: &[Delivery]) {
    let mut run: Option<(&str, u64)> = None;
    for d in deliveries {
        match &mut run {
            Some((topic, n)) if *topic == d.topic() => *n += 1,
            _ => {
                if let Some((topic, n)) = run {
                    auroraq_stage::count_consumed_n("sink-postgres", topic, n);
                }
                run = Some((d.topic(), 1));
            }
        }
    }
    if let Some((topic, n)) = run {
        auroraq_stage::count_consumed_n("sink-postgres", topic, n);
    }
}

async fn ack_all(deliveries: Vec<Delivery>, metrics: &SinkMetrics) {
    let n = deliveries.len() as u64;
    let mut failed = 0u64;
    for d in deliveries {
        if let Err(e) = d.ack().await {
            failed += 1;
            debug!(error = %e, "ack failed; the delivery will come back and de-duplicate");
        }
    }
    if failed > 0 {
        warn!(
            failed,
            "acks failed; those deliveries will be redelivered and de-duplicated"
        );
    }
    metrics.acked.fetch_add(n - failed, Ordering::Relaxed);
}
