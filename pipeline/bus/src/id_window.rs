//! A bounded window of recently seen message ids, for de-duplication where the broker has none
//! (the Kafka bus: its publisher and each member partition keep one).
//!
//! Ids are remembered in two generations: an id goes into the current one; the current one
//! ends when it holds `capacity` ids or began `window` ago (by the times given), and the one
//! before it is then forgotten whole (both go when the current one began two windows ago). So
//! an id is remembered until at least `capacity` newer ids or `window` have passed, whichever
//! comes first, and at most `2 * capacity` ids are kept.
//!
//! Each generation is an open-addressing table of 16-byte slots (linear probing, at most half
//! full, four slots to a cache line), so a look-up touches one cache line per generation. A
//! window of 100,000 ids is megabytes, far past the caches: a caller that holds a batch of ids
//! first calls [`IdWindow::touch`] for each, so that their cache misses overlap, and then looks
//! them up.

use std::hash::BuildHasher;
use std::time::Duration;

/// A slot's key while it is empty (an id whose key is 0 is noted as 1).
const EMPTY: u128 = 0;

/// Slots of a generation's table when it is first written to.
const FIRST_SLOTS: usize = 64;

/// The two keyed hashes an id's 128-bit key is made of. Clones give the same keys, so a reader
/// can hash ids on its own thread for the window's owner.
#[derive(Clone, Default)]
pub(crate) struct IdSeeds(foldhash::quality::RandomState, foldhash::quality::RandomState);

impl IdSeeds {
    /// The id's key: two independent 64-bit hashes, so a false duplicate needs a 128-bit
    /// collision.
    pub(crate) fn key(&self, id: &str) -> u128 {
        let k = (u128::from(self.0.hash_one(id)) << 64) | u128::from(self.1.hash_one(id));
        k.max(1)
    }
}

/// One generation: an open-addressing table of keys (linear probing, power-of-two sized, at most
/// half full, four keys to a cache line).
#[derive(Default)]
struct Table {
    keys: Vec<u128>,
    len: usize,
}

impl Table {
    fn home(&self, k: u128) -> usize {
        (k as u64 as usize) & (self.keys.len() - 1)
    }

    /// The slot holding the key, or the empty slot where it would go.
    fn slot(&self, k: u128) -> (usize, bool) {
        let mask = self.keys.len() - 1;
        let mut i = self.home(k);
        loop {
            match self.keys[i] {
                EMPTY => return (i, false),
                key if key == k => return (i, true),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn contains(&self, k: u128) -> bool {
        !self.keys.is_empty() && self.slot(k).1
    }

    fn insert(&mut self, k: u128) {
        if (self.len + 1) * 2 > self.keys.len() {
            self.grow();
        }
        if let (i, false) = self.slot(k) {
            self.keys[i] = k;
            self.len += 1;
        }
    }

    fn grow(&mut self) {
        let size = (self.keys.len() * 2).max(FIRST_SLOTS);
        let keys = std::mem::replace(&mut self.keys, vec![EMPTY; size]);
        for k in keys.into_iter().filter(|k| *k != EMPTY) {
            let (i, _) = self.slot(k);
            self.keys[i] = k;
        }
    }

    /// Forgets every id, keeping the table's memory.
    fn clear(&mut self) {
        if self.len > 0 {
            self.keys.fill(EMPTY);
            self.len = 0;
        }
    }

    /// Reads the key's home slot, so that a look-up or an insert soon after finds it in the
    /// cache.
    fn touch(&self, k: u128) {
        if !self.keys.is_empty() {
            std::hint::black_box(self.keys[self.home(k)]);
        }
    }
}

/// The window (see the module's notes).
pub(crate) struct IdWindow {
    window_us: i64,
    capacity: usize,
    seeds: IdSeeds,
    current: Table,
    previous: Table,
    /// When the current generation began.
    since_us: i64,
}

impl IdWindow {
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self::with_seeds(window, capacity, IdSeeds::default())
    }

    /// A window whose keys are `seeds`' (several windows of one owner can share them).
    pub(crate) fn with_seeds(window: Duration, capacity: usize, seeds: IdSeeds) -> Self {
        IdWindow {
            window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            capacity: capacity.max(1),
            seeds,
            current: Table::default(),
            previous: Table::default(),
            since_us: i64::MIN,
        }
    }

    /// The id's key in this window.
    pub(crate) fn key(&self, id: &str) -> u128 {
        self.seeds.key(id)
    }

    /// Starts a new generation when the current one is full or `window` old at `now_us` (two
    /// when it is two windows old: everything is forgotten).
    fn expire(&mut self, now_us: i64) {
        let age = now_us.saturating_sub(self.since_us);
        if self.current.len < self.capacity && age < self.window_us {
            return;
        }
        if age >= self.window_us.saturating_mul(2) {
            self.current.clear();
            self.previous.clear();
        } else {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.since_us = now_us;
    }

    fn contains(&self, k: u128) -> bool {
        self.current.contains(k) || self.previous.contains(k)
    }

    /// Whether the key was noted within the window at `at_us`.
    pub(crate) fn seen_key(&mut self, k: u128, at_us: i64) -> bool {
        self.expire(at_us);
        self.contains(k)
    }

    /// Notes the key in the current generation.
    pub(crate) fn insert_key(&mut self, k: u128, at_us: i64) {
        self.expire(at_us);
        self.current.insert(k);
    }

    /// Whether the key was noted within the window; if it was not, it is noted now.
    pub(crate) fn seen_or_insert_key(&mut self, k: u128, at_us: i64) -> bool {
        self.expire(at_us);
        if self.contains(k) {
            return true;
        }
        self.current.insert(k);
        false
    }

    /// Brings the slots a look-up of `k` reads into the cache (see the module's notes).
    pub(crate) fn touch(&self, k: u128) {
        self.current.touch(k);
        self.previous.touch(k);
    }

    #[cfg(test)]
    pub(crate) fn seen(&mut self, id: &str, at_us: i64) -> bool {
        let k = self.key(id);
        self.seen_key(k, at_us)
    }

    #[cfg(test)]
    pub(crate) fn insert(&mut self, id: &str, at_us: i64) {
        let k = self.key(id);
        self.insert_key(k, at_us);
    }

    #[cfg(test)]
    pub(crate) fn seen_or_insert(&mut self, id: &str, at_us: i64) -> bool {
        let k = self.key(id);
        self.seen_or_insert_key(k, at_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_window_forgets_old_and_excess_ids() {
        // Remembered until at least the window (1 s) or 3 newer ids have passed; at most
        // 2 x 3 ids kept.
        let mut w = IdWindow::new(Duration::from_secs(1), 3);
        w.insert("a", 0);
        assert!(w.seen("a", 500_000));
        assert!(
            w.seen("a", 1_500_000),
            "1.5 windows later: the previous generation"
        );
        assert!(!w.seen("a", 3_500_001), "two windows after its generation ended");
        for (i, id) in ["b", "c", "d"].iter().enumerate() {
            w.insert(id, 4_000_000 + i as i64);
        }
        assert!(w.seen("b", 4_000_003), "2 newer ids");
        w.insert("e", 4_000_004);
        w.insert("f", 4_000_005);
        assert!(w.seen("b", 4_000_006), "4 newer ids, 5 kept");
        w.insert("g", 4_000_006);
        assert!(!w.seen("b", 4_000_007), "over twice the capacity");
        assert!(w.seen("e", 4_000_007));
        assert!(
            w.seen_or_insert("e", 4_000_008),
            "an id of the previous generation"
        );
        assert!(!w.seen_or_insert("i", 4_000_008));
        assert!(w.seen_or_insert("i", 4_000_009));
    }

    #[test]
    fn tables_grow_and_keep_every_key() {
        let mut w = IdWindow::new(Duration::from_secs(3600), 1_000_000);
        let ids: Vec<String> = (0..5_000).map(|i| format!("id-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(!w.seen_or_insert(id, i as i64), "{id} is new");
        }
        assert!(w.current.keys.len() >= 2 * ids.len(), "at most half full");
        for (i, id) in ids.iter().enumerate() {
            assert!(w.seen_or_insert(id, 10_000 + i as i64), "{id} was noted");
        }
        assert!(!w.seen("id-5000", 20_000));
    }
}
