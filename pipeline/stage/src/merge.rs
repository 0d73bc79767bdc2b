//! Event-time merging of a stage's inputs by watermarks.
//!
//! A stage with several inputs (fusion: scores and ticks; agents: fused signals and prices) must see
//! its events in event-time order, not in the order the bus delivers them. [`Merge`] is the buffer
//! that does it: deliveries are [pushed](Merge::push) with their [`OrderKey`] (time, then the
//! documented tie order), each input partition reports how far it has come with a
//! [watermark](Merge::watermark) ("nothing at or before T follows here"), and [`Merge::ready`]
//! releases, in key order, everything at or before the *frontier*: the least watermark over every
//! input partition the stage reads.
//!
//! Two things keep it from stalling or growing without bound:
//! - an input partition that has sent no watermark for `stale_after` stops holding the frontier
//!   back: for it the merge assumes the bounded lateness instead (the latest time seen anywhere,
//!   less `lateness`), and [`Merge::stale_inputs`] names it for metrics and logs;
//! - the buffer holds at most `capacity` items: [`Merge::is_full`] tells the runner to stop
//!   pulling (backpressure), and when it is full the earliest items are released anyway
//!   ([`Merge::ready`] counts them as forced).
//!
//! An item that arrives at or before a frontier already passed is late: [`Merge::push`] hands it
//! straight back ([`Pushed::Late`], counted) for the runner to send to the stage's late topic; it
//! never reorders what was released. A redelivery of an item still buffered (same key) is handed
//! back as [`Pushed::Duplicate`]: the buffered copy stands for both.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use auroraq_schemas::Micros;

/// Where an event stands in the merged order: its time ([`crate::processor::available_at`]), then
/// a rank (the tie order at equal times), then its event id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    pub time: Micros,
    pub rank: u8,
    pub id: String,
}

impl OrderKey {
    /// The backtest engine's order (`auroraq_backtest::Engine::run`), so that a live stage and a
    /// backtest see the same sequence: time, then recorded events (rank 0) before derived ones
    /// (rank 1: a score or signal stamped at the event that closed its window comes after that
    /// event, as on the bus), then the event id.
    pub fn of(ev: &auroraq_schemas::AnyEvent) -> OrderKey {
        let m = ev.meta();
        OrderKey {
            time: crate::processor::available_at(ev),
            rank: u8::from(m.ts_processed.is_some()),
            id: m.event_id.clone(),
        }
    }
}

/// An input partition of the stage: a topic filter and a partition number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Input {
    pub filter: String,
    pub partition: u32,
}

/// Limits of a [`Merge`].
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// Items buffered at most.
    pub capacity: usize,
    /// An input partition without a watermark for this long no longer holds the frontier back.
    pub stale_after: Duration,
    /// For a stale input: the frontier is at most the latest time seen less this.
    pub lateness: Micros,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            capacity: 65_536,
            stale_after: Duration::from_secs(30),
            lateness: 5_000_000,
        }
    }
}

/// What [`Merge::push`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Buffered until the frontier passes it.
    Buffered,
    /// At or before a frontier already released: handed back, not buffered.
    Late(T),
    /// The same key is already buffered (a redelivery): handed back, not buffered.
    Duplicate(T),
}

/// Counts of a [`Merge`], for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Items released in order, after the frontier passed them.
    pub in_order: u64,
    /// Items that came at or before a frontier already passed: released at once.
    pub late: u64,
    /// Items released before the frontier passed them because the buffer was full.
    pub forced: u64,
    /// Redeliveries of items still buffered.
    pub duplicates: u64,
}

/// The rank of a feedback input's events ([`Merge::expect`]): after everything else at their time.
pub const FEEDBACK_RANK: u8 = 2;

/// Where the merge may release up to: every key whose `(time, rank)` is at or before it.
pub type Frontier = (Micros, u8);

struct InputState {
    feedback: bool,
    /// The watermark of each producer heard on this input partition: the input's is the least.
    producers: BTreeMap<String, Micros>,
    heard: Instant,
    /// The times of this input's buffered items (time -> count).
    buffered: BTreeMap<Micros, usize>,
}

impl InputState {
    fn new(feedback: bool, now: Instant) -> Self {
        InputState {
            feedback,
            producers: BTreeMap::new(),
            heard: now,
            buffered: BTreeMap::new(),
        }
    }

    fn watermark(&self) -> Option<Micros> {
        self.producers.values().min().copied()
    }
}

/// The release frontier a watermark `w` of an input allows: everything at or before `w`; on a
/// feedback input also everything at `w + 1` ranked before [`FEEDBACK_RANK`] (what the stage's
/// own outputs at `w + 1` cause comes back ranked after it: see the module docs).
fn allows(w: Micros, feedback: bool) -> Frontier {
    if feedback && w < Micros::MAX {
        (w + 1, FEEDBACK_RANK - 1)
    } else {
        (w, u8::MAX)
    }
}

/// The event-time merge buffer (see the module's documentation).
pub struct Merge<T> {
    cfg: MergeConfig,
    inputs: BTreeMap<Input, InputState>,
    heap: BinaryHeap<Reverse<(OrderKey, u64)>>,
    items: BTreeMap<u64, (Input, T)>,
    /// The keys buffered now.
    keys: std::collections::BTreeSet<OrderKey>,
    seq: u64,
    /// The frontier released so far: everything at or before it has left.
    released: Option<Frontier>,
    /// The latest time pushed or watermarked.
    latest: Option<Micros>,
    stats: MergeStats,
}

impl<T> Merge<T> {
    pub fn new(cfg: MergeConfig) -> Self {
        Merge {
            cfg,
            inputs: BTreeMap::new(),
            heap: BinaryHeap::new(),
            items: BTreeMap::new(),
            keys: std::collections::BTreeSet::new(),
            seq: 0,
            released: None,
            latest: None,
            stats: MergeStats::default(),
        }
    }

    /// Declares an input partition the frontier must wait for (before it has sent anything);
    /// `feedback`: it carries what the stage's own outputs cause (its items are pushed with rank
    /// [`FEEDBACK_RANK`]).
    pub fn expect(&mut self, input: Input, feedback: bool, now: Instant) {
        self.inputs
            .entry(input)
            .or_insert_with(|| InputState::new(feedback, now));
    }

    /// Buffers an item of `input`, or hands it back when it is late or a redelivery (see
    /// [`Pushed`]).
    pub fn push(&mut self, key: OrderKey, input: &Input, item: T) -> Pushed<T> {
        self.latest = Some(self.latest.map_or(key.time, |l| l.max(key.time)));
        if self.released.is_some_and(|r| (key.time, key.rank) <= r) {
            self.stats.late += 1;
            return Pushed::Late(item);
        }
        if !self.keys.insert(key.clone()) {
            self.stats.duplicates += 1;
            return Pushed::Duplicate(item);
        }
        let now = Instant::now();
        let state = self
            .inputs
            .entry(input.clone())
            .or_insert_with(|| InputState::new(false, now));
        *state.buffered.entry(key.time).or_insert(0) += 1;
        self.seq += 1;
        self.items.insert(self.seq, (input.clone(), item));
        self.heap.push(Reverse((key, self.seq)));
        Pushed::Buffered
    }

    /// `producer` has come to `t` on `input`: nothing at or before `t` follows from it (a
    /// producer that has just sent an event at `t` and may send another at the same time says
    /// `t - 1`). A producer's watermarks never go back (an older one is ignored); the input's
    /// watermark is the least over the producers heard on it.
    pub fn watermark(&mut self, input: Input, producer: &str, t: Micros, now: Instant) {
        let s = self
            .inputs
            .entry(input)
            .or_insert_with(|| InputState::new(false, now));
        match s.producers.get_mut(producer) {
            Some(w) => *w = (*w).max(t),
            None => {
                s.producers.insert(producer.to_owned(), t);
            }
        }
        s.heard = now;
        if t < Micros::MAX {
            self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
        }
    }

    /// An input's watermark, stale inputs replaced by the bounded lateness; none while a live
    /// input has sent none.
    fn effective(&self, s: &InputState, now: Instant) -> Option<Micros> {
        let stale = now.saturating_duration_since(s.heard) >= self.cfg.stale_after;
        if !stale {
            return s.watermark();
        }
        let fallback = self.latest.map(|l| l.saturating_sub(self.cfg.lateness));
        match (s.watermark(), fallback) {
            (Some(w), Some(f)) => Some(w.max(f)),
            (w, f) => w.or(f),
        }
    }

    /// How far the merge may release: the least over the inputs of what each one's watermark
    /// allows (stale inputs replaced by the bounded lateness); none while a live input has sent
    /// no watermark yet (or no input is known).
    pub fn frontier(&self, now: Instant) -> Option<Frontier> {
        let mut min: Option<Frontier> = None;
        for s in self.inputs.values() {
            let f = allows(self.effective(s, now)?, s.feedback);
            min = Some(min.map_or(f, |m| m.min(f)));
        }
        min
    }

    /// The time up to which nothing more will come from `input` *through this merge*: its
    /// watermark, and before its earliest item still buffered. What a stage may promise about
    /// outputs that only items of this input can cause (none: nothing is known yet).
    pub fn bound(&self, input: &Input, now: Instant) -> Option<Micros> {
        let s = self.inputs.get(input)?;
        let w = self.effective(s, now)?;
        Some(match s.buffered.keys().next() {
            Some(&t) => w.min(t.saturating_sub(1)),
            None => w,
        })
    }

    /// The inputs known to the merge.
    pub fn inputs(&self) -> impl Iterator<Item = &Input> {
        self.inputs.keys()
    }

    /// The inputs that have sent no watermark for `stale_after` (and have not ended).
    pub fn stale_inputs(&self, now: Instant) -> Vec<Input> {
        self.inputs
            .iter()
            .filter(|(_, s)| {
                now.saturating_duration_since(s.heard) >= self.cfg.stale_after
                    && s.watermark() != Some(Micros::MAX)
            })
            .map(|(i, _)| i.clone())
            .collect()
    }

    /// Items buffered.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The buffer is at capacity: stop taking deliveries until [`Merge::ready`] makes room.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.cfg.capacity
    }

    pub fn stats(&self) -> &MergeStats {
        &self.stats
    }

    /// Releases, in key order, every item at or before the frontier, and while the buffer is
    /// over capacity the earliest items beyond it.
    pub fn ready(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        if let Some(f) = self.frontier(now) {
            while let Some(Reverse((key, _))) = self.heap.peek() {
                if (key.time, key.rank) > f {
                    break;
                }
                out.extend(self.pop());
                self.stats.in_order += 1;
            }
            self.released = Some(self.released.map_or(f, |r| r.max(f)));
        }
        while self.items.len() > self.cfg.capacity {
            let Some(Reverse((key, _))) = self.heap.peek() else {
                break;
            };
            let k = (key.time, u8::MAX);
            out.extend(self.pop());
            self.stats.forced += 1;
            self.released = Some(self.released.map_or(k, |r| r.max(k)));
        }
        out
    }

    /// Everything still buffered, in key order (the input ended).
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.items.len());
        while !self.heap.is_empty() {
            out.extend(self.pop());
        }
        out
    }

    fn pop(&mut self) -> Option<T> {
        let Reverse((key, seq)) = self.heap.pop()?;
        self.keys.remove(&key);
        let (input, item) = self.items.remove(&seq)?;
        if let Some(s) = self.inputs.get_mut(&input) {
            if let std::collections::btree_map::Entry::Occupied(mut e) = s.buffered.entry(key.time) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(time: Micros, rank: u8, id: &str) -> OrderKey {
        OrderKey {
            time,
            rank,
            id: id.into(),
        }
    }

    fn input(filter: &str, partition: u32) -> Input {
        Input {
            filter: filter.into(),
            partition,
        }
    }

    #[test]
    fn releases_in_event_time_order_once_every_input_has_passed() {
        let t0 = Instant::now();
        let mut m = Merge::new(MergeConfig::default());
        let (scores, ticks) = (input("sentiment.scores", 0), input("market.>", 0));
        m.expect(scores.clone(), false, t0);
        m.expect(ticks.clone(), false, t0);
        // Arrival order is not time order.
        assert_eq!(m.push(key(30, 1, "s30"), &scores, "s30"), Pushed::Buffered);
        assert_eq!(m.push(key(10, 0, "t10"), &ticks, "t10"), Pushed::Buffered);
        assert_eq!(m.push(key(20, 1, "s20"), &scores, "s20"), Pushed::Buffered);
        assert_eq!(m.push(key(20, 0, "t20"), &ticks, "t20"), Pushed::Buffered);
        assert_eq!(
            m.push(key(20, 0, "t20"), &ticks, "again"),
            Pushed::Duplicate("again")
        );
        // One input has said nothing yet: nothing can leave.
        m.watermark(scores.clone(), "p", 30, t0);
        assert!(m.ready(t0).is_empty());
        assert_eq!(m.frontier(t0), None);
        // The other reaches 20: everything at or before 20, ties by rank.
        m.watermark(ticks.clone(), "p", 20, t0);
        assert_eq!(m.ready(t0), vec!["t10", "t20", "s20"]);
        m.watermark(ticks.clone(), "p", 40, t0);
        assert_eq!(m.ready(t0), vec!["s30"]);
        assert_eq!(m.stats().in_order, 4);
        // Late: at or before what has been released.
        assert_eq!(m.push(key(25, 0, "late"), &ticks, "late"), Pushed::Late("late"));
        assert_eq!(m.stats().late, 1);
    }

    #[test]
    fn watermarks_never_go_back_and_ties_fall_to_the_id() {
        let t0 = Instant::now();
        let mut m = Merge::new(MergeConfig::default());
        let a = input("a", 0);
        m.watermark(a.clone(), "p", 50, t0);
        m.watermark(a.clone(), "p", 10, t0);
        assert_eq!(m.frontier(t0), Some((50, u8::MAX)));
        m.push(key(40, 0, "b"), &a, "b");
        m.push(key(40, 0, "a"), &a, "a");
        assert_eq!(m.ready(t0), vec!["a", "b"]);
    }

    #[test]
    fn a_silent_input_falls_back_to_the_bounded_lateness() {
        let t0 = Instant::now();
        let cfg = MergeConfig {
            stale_after: Duration::from_secs(10),
            lateness: 5,
            ..MergeConfig::default()
        };
        let mut m = Merge::new(cfg);
        let (busy, idle) = (input("busy", 0), input("idle", 3));
        m.expect(idle.clone(), false, t0);
        m.watermark(busy.clone(), "p", 100, t0);
        m.push(key(90, 0, "x"), &busy, "x");
        m.push(key(97, 0, "y"), &busy, "y");
        assert!(m.ready(t0).is_empty(), "the idle input holds the frontier");
        let later = t0 + Duration::from_secs(11);
        m.watermark(busy, "p", 100, later);
        assert_eq!(m.stale_inputs(later), vec![idle]);
        // The idle input counts as the latest time less the lateness: 95.
        assert_eq!(m.frontier(later), Some((95, u8::MAX)));
        assert_eq!(m.ready(later), vec!["x"]);
    }

    #[test]
    fn a_full_buffer_releases_its_earliest_items() {
        let t0 = Instant::now();
        let cfg = MergeConfig {
            capacity: 3,
            ..MergeConfig::default()
        };
        let mut m = Merge::new(cfg);
        let never = input("never", 0);
        m.expect(never.clone(), false, t0);
        for (t, id) in [(5, "e"), (1, "a"), (3, "c"), (2, "b")] {
            m.push(key(t, 0, id), &never, id);
        }
        assert!(m.is_full());
        assert_eq!(m.ready(t0), vec!["a"]);
        assert_eq!(m.stats().forced, 1);
        // An item before what was forced out is late, not lost.
        assert_eq!(m.push(key(1, 1, "z"), &never, "z"), Pushed::Late("z"));
        assert_eq!(m.drain(), vec!["b", "c", "e"]);
        assert!(m.is_empty());
    }

    /// The property of the issue: any arrival interleaving of the same events over three input
    /// partitions, with random redeliveries and watermarks that each input sends after its own
    /// events, gives one output sequence: the events sorted by key.
    #[test]
    fn every_interleaving_and_redelivery_gives_one_sequence() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        // Per input, events in time order (a partition delivers in order), watermarks after them.
        let mut per_input: Vec<Vec<(Micros, u8, String)>> = vec![Vec::new(); 3];
        for i in 0..300u64 {
            let p = (i % 3) as usize;
            per_input[p].push((rnd(1000) as Micros, p as u8, format!("e{i}")));
        }
        for evs in &mut per_input {
            evs.sort();
        }
        let mut expected: Vec<String> = {
            let mut all: Vec<_> = per_input.iter().flatten().cloned().collect();
            all.sort();
            all.into_iter().map(|(_, _, id)| id).collect()
        };
        expected.dedup();
        let t0 = Instant::now();
        for _ in 0..50 {
            let mut m = Merge::new(MergeConfig::default());
            for p in 0..3 {
                m.expect(input("in", p), false, t0);
            }
            let mut cursor = [0usize; 3];
            let mut out: Vec<String> = Vec::new();
            while cursor.iter().zip(&per_input).any(|(c, v)| *c < v.len()) {
                let p = rnd(3) as usize;
                let Some((t, r, id)) = per_input[p].get(cursor[p]).cloned() else {
                    continue;
                };
                let k = key(t, r, &id);
                let from = input("in", p as u32);
                assert!(!matches!(m.push(k.clone(), &from, id.clone()), Pushed::Late(_)));
                // A redelivery, sometimes, before the original has left.
                if rnd(4) == 0 {
                    assert!(matches!(m.push(k, &from, id.clone()), Pushed::Duplicate(_)));
                }
                cursor[p] += 1;
                // The input's watermark: its next event is not earlier than this one, but may be
                // at the same time, so nothing before `t` follows: `t - 1`.
                m.watermark(from, "p", t - 1, t0);
                out.extend(m.ready(t0));
            }
            out.extend(m.drain());
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn feedback_inputs_release_their_time_after_the_rest() {
        let t0 = Instant::now();
        let mut m = Merge::new(MergeConfig::default());
        let (data, fb) = (input("data", 0), input("fb", 0));
        m.expect(data.clone(), false, t0);
        m.expect(fb.clone(), true, t0);
        m.watermark(data.clone(), "p", 100, t0);
        // Feedback at 9: what is at 10 and ranked before feedback may go; feedback at 10 waits.
        m.watermark(fb.clone(), "q", 9, t0);
        m.push(key(10, 0, "d10"), &data, "d10");
        m.push(key(10, FEEDBACK_RANK, "f10"), &fb, "f10");
        m.push(key(11, 0, "d11"), &data, "d11");
        assert_eq!(m.frontier(t0), Some((10, FEEDBACK_RANK - 1)));
        assert_eq!(m.ready(t0), vec!["d10"]);
        // Nothing more from `data` up to 10: its next buffered item is at 11.
        assert_eq!(m.bound(&data, t0), Some(10));
        m.watermark(fb.clone(), "q", 10, t0);
        assert_eq!(m.ready(t0), vec!["f10", "d11"]);
        assert_eq!(m.bound(&data, t0), Some(100));
    }

    #[test]
    fn an_input_waits_for_the_slowest_of_its_producers() {
        let t0 = Instant::now();
        let mut m = Merge::new(MergeConfig::default());
        let a = input("a", 0);
        m.watermark(a.clone(), "fast", 50, t0);
        m.watermark(a.clone(), "slow", 20, t0);
        m.push(key(30, 0, "x"), &a, "x");
        assert!(m.ready(t0).is_empty());
        assert_eq!(m.bound(&a, t0), Some(20));
        m.watermark(a.clone(), "slow", 40, t0);
        assert_eq!(m.ready(t0), vec!["x"]);
        assert_eq!(m.bound(&a, t0), Some(40));
    }

    #[test]
    fn events_order_as_in_the_backtest_engine() {
        use auroraq_schemas::samples;
        let all = samples::all();
        let raw = all
            .iter()
            .find(|e| e.meta().ts_processed.is_none())
            .expect("a recorded sample");
        let derived = all
            .iter()
            .find(|e| e.meta().ts_processed.is_some())
            .expect("a derived sample");
        let (a, b) = (OrderKey::of(raw), OrderKey::of(derived));
        assert_eq!((a.rank, b.rank), (0, 1));
        assert_eq!(a.id, raw.meta().event_id);
        assert_eq!(a.time, crate::processor::available_at(raw));
        let same_time = OrderKey {
            time: a.time,
            ..b.clone()
        };
        assert!(a < same_time, "recorded before derived at equal times");
    }
}
