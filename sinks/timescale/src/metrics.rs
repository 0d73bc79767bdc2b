//! The sink's counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::writer::BatchOutcome;

/// Counters of a running sink, readable while it runs.
#[derive(Default)]
pub struct SinkMetrics {
    /// Deliveries taken off the bus.
    pub received: AtomicU64,
    /// Of which redeliveries (attempt > 1).
    pub redelivered: AtomicU64,
    /// Deliveries acked after their rows were committed.
    pub acked: AtomicU64,
    /// Rows inserted, over all tables.
    pub rows_inserted: AtomicU64,
    /// Rows left out because the table already had them (redeliveries, replays).
    pub rows_duplicate: AtomicU64,
    /// Events left out because the same batch held them already.
    pub batch_repeats: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Of which written through staging.
    pub staged_batches: AtomicU64,
    /// Direct COPYs that met a duplicate and were redone through staging.
    pub fallbacks: AtomicU64,
    /// Failed batch writes that were retried.
    pub retries: AtomicU64,
    pub reconnects: AtomicU64,
    /// Events dead-lettered: undecodable, or rejected by the database.
    pub dead_letters: AtomicU64,
    pub partitions_created: AtomicU64,
    by_table: Mutex<BTreeMap<&'static str, TableStats>>,
}

/// Rows per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    pub inserted: u64,
    pub duplicates: u64,
}

/// A point-in-time copy of [`SinkMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    pub received: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub rows_inserted: u64,
    pub rows_duplicate: u64,
    pub batch_repeats: u64,
    pub batches: u64,
    pub staged_batches: u64,
    pub fallbacks: u64,
    pub retries: u64,
    pub reconnects: u64,
    pub dead_letters: u64,
    pub partitions_created: u64,
    /// `timescaledb` or `postgres`, once connected.
    pub flavor: Option<String>,
    pub tables: BTreeMap<String, TableStats>,
}

impl SinkMetrics {
    pub fn snapshot(&self) -> SinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkStats {
            received: get(&self.received),
            redelivered: get(&self.redelivered),
            acked: get(&self.acked),
            rows_inserted: get(&self.rows_inserted),
            rows_duplicate: get(&self.rows_duplicate),
            batch_repeats: get(&self.batch_repeats),
            batches: get(&self.batches),
            staged_batches: get(&self.staged_batches),
            fallbacks: get(&self.fallbacks),
            retries: get(&self.retries),
            reconnects: get(&self.reconnects),
            dead_letters: get(&self.dead_letters),
            partitions_created: get(&self.partitions_created),
            flavor: None,
            tables: self
                .by_table
                .lock()
                .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn record(&self, o: &BatchOutcome) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        if o.staged {
            self.staged_batches.fetch_add(1, Ordering::Relaxed);
        }
        if o.fell_back {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.rows_inserted.fetch_add(o.inserted(), Ordering::Relaxed);
        self.rows_duplicate.fetch_add(o.duplicates(), Ordering::Relaxed);
        self.batch_repeats.fetch_add(o.repeats as u64, Ordering::Relaxed);
        if let Ok(mut m) = self.by_table.lock() {
            for &(t, ins, dup) in &o.tables {
                let e = m.entry(t.name()).or_default();
                e.inserted += ins;
                e.duplicates += dup;
            }
        }
    }
}
