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

/// One generation: an open-addressing table (linear probing, power-of-two sized, at most half
/// full). Keys and tags are kept apart: a look-up of a new id reads only the keys.
#[derive(Default)]
struct Table {
    keys: Vec<u128>,
    tags: Vec<i64>,
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

    fn find(&self, k: u128) -> Option<i64> {
        if self.keys.is_empty() {
            return None;
        }
        match self.slot(k) {
            (i, true) => Some(self.tags[i]),
            _ => None,
        }
    }

    /// Notes the key with `tag` (replacing the tag it had).
    fn insert(&mut self, k: u128, tag: i64) {
        if (self.len + 1) * 2 > self.keys.len() {
            self.grow();
        }
        let (i, found) = self.slot(k);
        if !found {
            self.keys[i] = k;
            self.len += 1;
        }
        self.tags[i] = tag;
    }

    fn grow(&mut self) {
        let size = (self.keys.len() * 2).max(FIRST_SLOTS);
        let keys = std::mem::replace(&mut self.keys, vec![EMPTY; size]);
        let tags = std::mem::replace(&mut self.tags, vec![0; size]);
        for (k, tag) in keys.into_iter().zip(tags).filter(|(k, _)| *k != EMPTY) {
            let (i, _) = self.slot(k);
            self.keys[i] = k;
            self.tags[i] = tag;
        }
    }

    /// Forgets every id, keeping the table's memory.
    fn clear(&mut self) {
        if self.len > 0 {
            self.keys.fill(EMPTY);
            self.len = 0;
        }
    }

    /// Reads the key's home slot, so that a look-up soon after finds it in the cache.
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

    fn find(&self, k: u128) -> Option<i64> {
        self.current.find(k).or_else(|| self.previous.find(k))
    }

    /// The tag the key was noted with, if within the window at `at_us`.
    pub(crate) fn seen_key(&mut self, k: u128, at_us: i64) -> Option<i64> {
        self.expire(at_us);
        self.find(k)
    }

    /// Notes the key with `tag` in the current generation.
    pub(crate) fn insert_key(&mut self, k: u128, at_us: i64, tag: i64) {
        self.expire(at_us);
        self.current.insert(k, tag);
    }

    /// The tag the key was noted with within the window, or, if it was not, None after noting
    /// it with `tag`.
    pub(crate) fn seen_or_insert_key(&mut self, k: u128, at_us: i64, tag: i64) -> Option<i64> {
        self.expire(at_us);
        if let Some(t) = self.find(k) {
            return Some(t);
        }
        self.current.insert(k, tag);
        None
    }

    /// Brings the slots a look-up of `k` reads into the cache (see the module's notes).
    pub(crate) fn touch(&self, k: u128) {
        self.current.touch(k);
        self.previous.touch(k);
    }

    #[cfg(test)]
    pub(crate) fn seen(&mut self, id: &str, at_us: i64) -> Option<i64> {
        let k = self.key(id);
        self.seen_key(k, at_us)
    }

    #[cfg(test)]
    pub(crate) fn insert(&mut self, id: &str, at_us: i64, tag: i64) {
        let k = self.key(id);
        self.insert_key(k, at_us, tag);
    }

    #[cfg(test)]
    pub(crate) fn seen_or_insert(&mut self, id: &str, at_us: i64, tag: i64) -> Option<i64> {
        let k = self.key(id);
        self.seen_or_insert_key(k, at_us, tag)
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
        w.insert("a", 0, 1);
        assert_eq!(w.seen("a", 500_000), Some(1));
        assert_eq!(
            w.seen("a", 1_500_000),
            Some(1),
            "1.5 windows later: the previous generation"
        );
        assert_eq!(
            w.seen("a", 3_500_001),
            None,
            "two windows after its generation ended"
        );
        for (i, id) in ["b", "c", "d"].iter().enumerate() {
            w.insert(id, 4_000_000 + i as i64, i as i64);
        }
        assert_eq!(w.seen("b", 4_000_003), Some(0), "2 newer ids");
        w.insert("e", 4_000_004, 3);
        w.insert("f", 4_000_005, 4);
        assert_eq!(w.seen("b", 4_000_006), Some(0), "4 newer ids, 5 kept");
        w.insert("g", 4_000_006, 5);
        assert_eq!(w.seen("b", 4_000_007), None, "over twice the capacity");
        assert_eq!(w.seen("e", 4_000_007), Some(3));
        assert_eq!(
            w.seen_or_insert("e", 4_000_008, 9),
            Some(3),
            "an id of the previous generation"
        );
        assert_eq!(w.seen_or_insert("i", 4_000_008, 7), None);
        assert_eq!(w.seen_or_insert("i", 4_000_009, 8), Some(7));
    }
}
