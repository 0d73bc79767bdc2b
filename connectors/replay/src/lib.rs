//! Replay of recorded data onto the bus.
//!
//! Readers turn recorded files into AuroraQ events (so far: CSV bars, [`bars`]); [`replay`] then
//! publishes them in event-time order at the recorded pace, scaled, or as fast as the bus takes
//! them, the same way every time.

pub mod bars;
pub mod time;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use auroraq_bus::{Bus, OutMessage};
use auroraq_schemas::{now_micros, AnyEvent, DeadLetter, Meta, Micros};
use auroraq_stage::{to_message, StageError};
use tracing::info;

pub use bars::{read_bars, BadRow, Bars, BarsError, BarsOptions};

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
    pub events: u64,
    pub published: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
}

/// A dead letter for a recorded row that could not be read, so it is kept and counted.
pub fn bad_row_letter(origin: &str, row: &BadRow) -> DeadLetter {
    let now = now_micros();
    DeadLetter {
        meta: Meta::derived(
            "DeadLetter",
            "replay",
            &[],
            &format!("{origin}:{}", row.line),
            now,
            now,
        ),
        stage: "replay".into(),
        reason: "bad_record".into(),
        error: format!("{origin} line {}: {}", row.line, row.reason),
        original_topic: origin.to_owned(),
        original_key: None,
        original_id: None,
        original_bytes: row.raw.clone().into_bytes(),
        attempts: 1,
    }
}

/// Publishes `events` (sorted by event time here, stably) in batches, paced as asked, until done
/// or `stop` is set. Dead letters in the list go to `dlq.replay`.
pub async fn replay(
    bus: &dyn Bus,
    mut events: Vec<AnyEvent>,
    pace: Pace,
    stop: Arc<AtomicBool>,
) -> Result<ReplayStats, StageError> {
    events.sort_by_key(|e| e.meta().ts_event);
    let mut stats = ReplayStats::default();
    let started = tokio::time::Instant::now();
    let t0: Option<Micros> = events.first().map(|e| e.meta().ts_event);
    let mut batch: Vec<OutMessage> = Vec::with_capacity(256);
    let total = events.len();
    for (i, ev) in events.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let (Pace::Speed(speed), Some(t0)) = (pace, t0) {
            let due =
                Duration::from_secs_f64(((ev.meta().ts_event - t0).max(0) as f64 / 1e6) / speed.max(1e-9));
            if started + due > tokio::time::Instant::now() {
                flush(bus, &mut batch, &mut stats).await?;
                tokio::time::sleep_until(started + due).await;
            }
        }
        if matches!(ev, AnyEvent::DeadLetter(_)) {
            stats.dead_letters += 1;
        } else {
            stats.events += 1;
        }
        batch.push(to_message(ev).map_err(StageError::Encode)?);
        if batch.len() >= 256 {
            flush(bus, &mut batch, &mut stats).await?;
        }
        if (i + 1) % 10_000 == 0 {
            info!(done = i + 1, total, "replaying");
        }
    }
    flush(bus, &mut batch, &mut stats).await?;
    Ok(stats)
}

async fn flush(
    bus: &dyn Bus,
    batch: &mut Vec<OutMessage>,
    stats: &mut ReplayStats,
) -> Result<(), StageError> {
    if batch.is_empty() {
        return Ok(());
    }
    let r = bus.publish(std::mem::take(batch)).await?;
    stats.published += r.stored as u64;
    stats.duplicates += r.duplicates as u64;
    Ok(())
}
