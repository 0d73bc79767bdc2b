//! Replay of recorded data onto the bus.
//!
//! Readers turn recorded files into AuroraQ events: CSV bars ([`bars`]), cryptofeed's Binance
//! captures with their depth snapshots ([`cryptofeed`], through the live connector's decoder and
//! order-book sync), barter's normalised Binance data ([`barter`]), Feedly responses
//! ([`feedly`]), news JSON lines ([`reuters`]) and news headlines as CSV ([`news_csv`]); [`format::load`] picks the reader. [`replay`]
//! then publishes the events in the order AuroraQ first received them (receive time, which
//! recordings keep), at the recorded pace, scaled, or as fast as the bus takes them, the same way
//! every time. Records that cannot be read become dead letters, counted, never dropped.
//! [`replay_files`] does the same for files with bounded memory ([`stream`]: each file read as
//! a stream, an external merge sort by receive time across them).

pub mod bars;
pub mod barter;
pub mod cryptofeed;
pub mod feedly;
pub mod format;
pub mod news_csv;
pub mod recorded;
pub mod reuters;
pub mod stream;
pub mod time;

use std::time::Duration;

use auroraq_bus::{Bus, OutMessage};
use auroraq_schemas::{AnyEvent, DeadLetter, EventKind, Meta, Micros};
use auroraq_stage::{to_message, StageError};
use auroraq_util::{until_cancelled, CancellationToken};
use tracing::{info, warn};

pub use bars::{read_bars, BadRow, Bars, BarsError, BarsOptions};
pub use format::{load, Format, LoadOptions};
pub use recorded::{fit, letter, ReadError};
pub use stream::StreamOptions;

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the bus takes it.
    Max,
    /// Event-time gaps divided by this factor (1.0 = the original pace).
    Speed(f64),
}

/// Counts of one replay.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStats {
    /// Events other than dead letters.
    pub events: u64,
    pub trades: u64,
    pub tickers: u64,
    pub candles: u64,
    /// Order-book snapshots and diffs applied by the sync rules.
    pub book_updates: u64,
    pub articles: u64,
    /// Sequence gaps found (a `gap` feed status each).
    pub gaps: u64,
    /// Feed statuses of any kind (connects, disconnects, gaps, resyncs).
    pub statuses: u64,
    pub dead_letters: u64,
    /// Stored by the bus.
    pub published: u64,
    /// Refused by the bus as already seen (same event id).
    pub duplicates: u64,
}

impl ReplayStats {
    /// Takes back what [`ReplayStats::count`] counted for `ev`.
    fn uncount(&mut self, ev: &AnyEvent) {
        let mut one = ReplayStats::default();
        one.count(ev);
        let sub = |a: &mut u64, b: u64| *a = a.saturating_sub(b);
        sub(&mut self.events, one.events);
        sub(&mut self.trades, one.trades);
        sub(&mut self.tickers, one.tickers);
        sub(&mut self.candles, one.candles);
        sub(&mut self.book_updates, one.book_updates);
        sub(&mut self.articles, one.articles);
        sub(&mut self.gaps, one.gaps);
        sub(&mut self.statuses, one.statuses);
        sub(&mut self.dead_letters, one.dead_letters);
    }

    fn count(&mut self, ev: &AnyEvent) {
        self.count_class(stream::Class::of(ev));
    }

    fn count_class(&mut self, class: stream::Class) {
        use stream::Class;
        match class {
            Class::DeadLetter => {
                self.dead_letters += 1;
                return;
            }
            Class::Trade => self.trades += 1,
            Class::Ticker => self.tickers += 1,
            Class::Candle => self.candles += 1,
            Class::Book => self.book_updates += 1,
            Class::Article => self.articles += 1,
            Class::Status => self.statuses += 1,
            Class::Gap => {
                self.statuses += 1;
                self.gaps += 1;
            }
            Class::Other => {}
        }
        self.events += 1;
    }
}

/// Publishes `events` (sorted by receive time here, stably: the order AuroraQ first saw them) in
/// batches, paced as asked by their receive times, until done or `cancel` fires (a paced wait
/// ends at once; what was batched is still published). Dead letters in the list go to
/// `dlq.replay`. An event the bus refuses (larger than its messages may be) becomes a dead letter
/// there too and the replay goes on; if its dead letter is refused as well, the bus is failing and
/// the replay stops with the error.
pub async fn replay(
    bus: &dyn Bus,
    mut events: Vec<AnyEvent>,
    pace: Pace,
    cancel: CancellationToken,
) -> Result<ReplayStats, StageError> {
    events.sort_by_key(|e| e.meta().ts_ingest);
    let total = events.len() as u64;
    let items = events.into_iter().map(|ev| {
        let msg = to_message(&ev).map_err(StageError::Encode)?;
        Ok(Outgoing {
            ts: ev.meta().ts_ingest,
            class: stream::Class::of(&ev),
            msg,
            event: Some(ev),
        })
    });
    publish(bus, items, total, pace, cancel).await
}

/// Why [`replay_files`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("temporary run file: {0}")]
    Spill(#[source] std::io::Error),
}

/// [`load`] then [`replay`], with bounded memory: every file is read as a stream into an
/// external merge sort by receive time ([`stream`]), and the merged runs are published in the
/// order `replay` gives the loaded list, the same events with the same ids. Reading fails as
/// `load` fails, before anything is published.
pub async fn replay_files(
    bus: &dyn Bus,
    format: Option<Format>,
    files: &[std::path::PathBuf],
    opts: &LoadOptions,
    stream_opts: stream::StreamOptions,
    pace: Pace,
    cancel: CancellationToken,
) -> Result<ReplayStats, ReplayError> {
    let mut sorter = stream::Sorter::new(stream_opts.buffer_bytes);
    let total = stream::read_all(format, files, opts, &mut sorter)?;
    info!(
        files = files.len(),
        events = total,
        runs = sorter.runs(),
        held_bytes = sorter.peak,
        "read recorded files"
    );
    let merged = sorter.finish().map_err(ReplayError::Spill)?;
    let items = merged.map(|p| match p {
        Ok(p) => Ok(Outgoing {
            ts: p.key.0,
            class: p.class,
            msg: p.msg,
            event: None,
        }),
        Err(e) => Err(ReplayError::Spill(e)),
    });
    publish(bus, items, total, pace, cancel).await
}

/// One event on its way to the bus.
struct Outgoing {
    ts: Micros,
    class: stream::Class,
    msg: OutMessage,
    /// The event, where it is at hand (else decoded from the message when traces need it).
    event: Option<AnyEvent>,
}

async fn publish<E: From<StageError>>(
    bus: &dyn Bus,
    items: impl Iterator<Item = Result<Outgoing, E>>,
    total: u64,
    pace: Pace,
    cancel: CancellationToken,
) -> Result<ReplayStats, E> {
    let mut stats = ReplayStats::default();
    let started = tokio::time::Instant::now();
    let mut t0: Option<Micros> = None;
    let mut batch: Vec<OutMessage> = Vec::with_capacity(256);
    let mut done = 0u64;
    let mut progress = Progress::default();
    for item in items {
        if cancel.is_cancelled() {
            break;
        }
        let item = item?;
        let t0 = *t0.get_or_insert(item.ts);
        if let Pace::Speed(speed) = pace {
            let due = Duration::from_secs_f64(((item.ts - t0).max(0) as f64 / 1e6) / speed.max(1e-9));
            if started + due > tokio::time::Instant::now() {
                flush(bus, &mut batch, &mut stats).await?;
                // Nothing before this item's time follows.
                progress.announce(bus, item.ts.saturating_sub(1)).await;
                if until_cancelled(&cancel, tokio::time::sleep_until(started + due))
                    .await
                    .is_none()
                {
                    break;
                }
            }
        }
        stats.count_class(item.class);
        // The receipt: where the event's trace starts (exported only when traces are on).
        if auroraq_stage::trace::enabled() {
            let ev = match item.event {
                Some(ev) => Some(ev),
                None => AnyEvent::decode(&item.msg.payload).ok(),
            };
            if let Some(ev) = ev {
                auroraq_stage::trace::record_receipts("replay", std::slice::from_ref(&ev));
            }
        }
        progress.saw(&item.msg.topic, item.ts);
        batch.push(item.msg);
        if batch.len() >= 256 {
            flush(bus, &mut batch, &mut stats).await?;
            // Items come in time order: nothing before the last one's time follows.
            progress.announce(bus, progress.last.saturating_sub(1)).await;
        }
        done += 1;
        if done.is_multiple_of(10_000) {
            info!(done, total, "replaying");
        }
    }
    flush(bus, &mut batch, &mut stats).await?;
    if !cancel.is_cancelled() {
        progress.announce(bus, auroraq_schemas::Watermark::END).await;
    }
    Ok(stats)
}

/// The replay's watermarks (see `auroraq_stage::watermark`): after each batch, "nothing before the
/// last item's time follows" (items go out in time order, `ts` being no later than their
/// `available_at`), and the end at the end; on one topic of each family published (a merged
/// reader follows a producer per input partition, whatever topic of the family carries it) and,
/// for market data, on the trades, tickers and klines of the first instrument, so that a stage
/// reading a family the recording lacks is not held back by it.
#[derive(Default)]
struct Progress {
    /// The first topic seen of each family (its first two tokens), and the market families.
    topics: std::collections::BTreeMap<String, String>,
    last: Micros,
    announced: Option<Micros>,
}

impl Progress {
    fn saw(&mut self, topic: &str, ts: Micros) {
        self.last = self.last.max(ts);
        let mut parts = topic.splitn(3, '.');
        let (a, b, rest) = (parts.next(), parts.next(), parts.next());
        let family = format!("{}.{}", a.unwrap_or_default(), b.unwrap_or_default());
        if self.topics.contains_key(&family) {
            return;
        }
        if let (Some("market"), Some(instrument)) = (a, rest) {
            for f in ["trades", "tickers", "klines"] {
                self.topics
                    .entry(format!("market.{f}"))
                    .or_insert_with(|| format!("market.{f}.{instrument}"));
            }
        }
        self.topics.entry(family).or_insert_with(|| topic.to_owned());
    }

    async fn announce(&mut self, bus: &dyn Bus, t: Micros) {
        if self.topics.is_empty() || self.announced.is_some_and(|a| a >= t) {
            return;
        }
        let topics: Vec<String> = self.topics.values().cloned().collect();
        match auroraq_stage::watermark::publish_watermark(bus, &topics, t, "replay").await {
            Ok(()) => self.announced = Some(t),
            Err(e) => {
                warn!(error = %e, "cannot publish the replay's watermark; the next batch's will cover it")
            }
        }
    }
}

async fn flush(
    bus: &dyn Bus,
    batch: &mut Vec<OutMessage>,
    stats: &mut ReplayStats,
) -> Result<(), StageError> {
    if batch.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(batch);
    let first_error = match bus.publish(batch.clone()).await {
        Ok(r) => {
            stats.published += r.stored as u64;
            stats.duplicates += r.duplicates as u64;
            return Ok(());
        }
        Err(e) => e,
    };
    // One message may be what the bus refused: publish them one at a time (those stored before
    // the failure come back as duplicates) and dead-letter those it refuses.
    warn!(error = %first_error, messages = batch.len(), "publishing a batch failed; publishing its messages one at a time");
    for m in batch {
        let err = match bus.publish(vec![m.clone()]).await {
            Ok(r) => {
                stats.published += r.stored as u64;
                stats.duplicates += r.duplicates as u64;
                continue;
            }
            Err(e) => e,
        };
        let dl = AnyEvent::DeadLetter(refused(&m, &err.to_string()));
        match bus
            .publish(vec![to_message(&dl).map_err(StageError::Encode)?])
            .await
        {
            Ok(r) => {
                warn!(topic = %m.topic, id = %m.id, bytes = m.payload.len(), error = %err, "the bus refused an event; dead-lettered");
                // It was counted as what it is when batched: it is a dead letter now.
                if let Ok(ev) = AnyEvent::decode(&m.payload) {
                    stats.uncount(&ev);
                }
                stats.dead_letters += 1;
                stats.published += r.stored as u64;
                stats.duplicates += r.duplicates as u64;
            }
            // Even a small dead letter is refused: the bus is failing, not this event.
            Err(_) => return Err(StageError::Bus(err)),
        }
    }
    Ok(())
}

/// The dead letter of a message the bus refused while replaying ([bounded](DeadLetter::bounded)).
fn refused(m: &OutMessage, error: &str) -> DeadLetter {
    let ts = AnyEvent::decode(&m.payload).map_or(0, |e| e.meta().ts_ingest);
    DeadLetter {
        meta: Meta::derived(
            EventKind::DeadLetter,
            "replay",
            &[],
            &format!("refused|{}|{}", m.topic, m.id),
            ts,
            ts,
        ),
        stage: "replay".into(),
        reason: "publish_error".into(),
        error: format!("the bus refused the event ({} bytes): {error}", m.payload.len()),
        original_topic: m.topic.clone(),
        original_key: m.key.clone(),
        original_id: Some(m.id.clone()),
        original_bytes: m.payload.to_vec(),
        attempts: 1,
    }
    .bounded()
}
