//! A local order book per symbol, kept by Binance's documented sync rules.
//!
//! Spot (Binance, Binance.US; [`DepthRule::Spot`]):
//!
//! 1. Diffs (`depthUpdate`) that arrive before a snapshot are buffered.
//! 2. A snapshot (`/api/v3/depth`, `lastUpdateId`) is taken. If it is older than the first
//!    buffered diff (`lastUpdateId + 1 < U`), another one is needed.
//! 3. Buffered diffs with `u <= lastUpdateId` are dropped; the first one applied must straddle the
//!    snapshot: `U <= lastUpdateId + 1 <= u`.
//! 4. Each next diff must continue the last: `U = previous u + 1`. A diff with `u <=` the book's
//!    id is old (e.g. re-sent after a reconnect) and ignored. A diff that skips ahead is a gap: the
//!    book is dropped, a `gap` status goes out, and the sync starts again from step 1 with that
//!    diff; the next snapshot that fits ends it with a `resynced` status.
//!
//! USDⓈ-M futures ([`DepthRule::Futures`], "How to manage a local order book correctly" of the
//! futures API): update ids are not contiguous, each diff names its predecessor instead.
//!
//! 1. and 2. as above, but a snapshot is too old when `lastUpdateId < U` of the first buffered diff.
//! 3. Diffs with `u < lastUpdateId` are dropped; the first one applied must have
//!    `U <= lastUpdateId <= u`.
//! 4. Each next diff's `pu` must equal the previous applied diff's `u`; otherwise it is a gap, as
//!    above. A diff with `u <=` the book's id is old and ignored.
//!
//! [`BookSync`] is pure logic (no I/O): the live connector and the replay of recorded captures
//! drive it the same way, feeding diffs and snapshots in arrival order and asking
//! [`BookSync::needs_snapshot`] when to fetch one.

use std::collections::BTreeMap;

use auroraq_schemas::{BookUpdate, EventKind, FeedState, FeedStatus, Level, Meta, Micros};
use rust_decimal::Decimal;

pub use crate::config::DepthRule;
use crate::decode::{DepthDiff, DepthSnapshot};

/// Price levels of one side; quantity zero removes a level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Side {
    levels: BTreeMap<Decimal, Decimal>,
}

impl Side {
    fn apply(&mut self, levels: &[Level]) {
        for l in levels {
            if l.quantity.0.is_zero() {
                self.levels.remove(&l.price.0);
            } else {
                self.levels.insert(l.price.0, l.quantity.0);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

/// A local order book.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderBook {
    pub bids: Side,
    pub asks: Side,
    /// The last update id applied.
    pub update_id: i64,
}

impl OrderBook {
    /// Highest bid `(price, quantity)`.
    pub fn best_bid(&self) -> Option<(Decimal, Decimal)> {
        self.bids.levels.iter().next_back().map(|(p, q)| (*p, *q))
    }

    /// Lowest ask `(price, quantity)`.
    pub fn best_ask(&self) -> Option<(Decimal, Decimal)> {
        self.asks.levels.iter().next().map(|(p, q)| (*p, *q))
    }
}

/// What the sync produced from one input.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncOutput {
    /// A snapshot or a diff applied to the book: publish it.
    Update(BookUpdate),
    /// A gap or a resync: publish it so consumers know the book had a hole.
    Status(FeedStatus),
}

/// Counters of one symbol's sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncCounts {
    pub snapshots: u64,
    pub applied: u64,
    /// Diffs older than the book (`u <=` its id), dropped.
    pub stale: u64,
    /// Snapshots older than the first buffered diff, for which another was needed.
    pub stale_snapshots: u64,
    pub gaps: u64,
    pub resyncs: u64,
}

#[derive(Debug, PartialEq)]
enum State {
    /// No book: diffs are buffered until a snapshot that fits.
    AwaitingSnapshot,
    /// A snapshot was applied; the next diff must straddle it (`update_id + 1` on spot,
    /// `update_id` on futures).
    FirstAfterSnapshot,
    Synced,
}

/// The order-book sync of one symbol.
#[derive(Debug)]
pub struct BookSync {
    exchange: String,
    symbol: String,
    rule: DepthRule,
    state: State,
    book: OrderBook,
    buffer: Vec<DepthDiff>,
    max_buffer: usize,
    /// Set after a gap until the next snapshot fits.
    resyncing: bool,
    counts: SyncCounts,
}

impl BookSync {
    /// `max_buffer` bounds the diffs kept while waiting for a snapshot (the oldest go first; a
    /// snapshot is then too old for them and another is asked for).
    pub fn new(exchange: &str, symbol: &str, max_buffer: usize) -> Self {
        BookSync {
            exchange: exchange.to_owned(),
            symbol: symbol.to_ascii_uppercase(),
            rule: DepthRule::Spot,
            state: State::AwaitingSnapshot,
            book: OrderBook::default(),
            buffer: Vec::new(),
            max_buffer: max_buffer.max(1),
            resyncing: false,
            counts: SyncCounts::default(),
        }
    }

    /// Follows `rule` (spot's by default).
    pub fn with_rule(mut self, rule: DepthRule) -> Self {
        self.rule = rule;
        self
    }

    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    pub fn rule(&self) -> DepthRule {
        self.rule
    }

    /// Whether a snapshot should be fetched now: no book yet and at least one diff buffered
    /// (Binance: open the stream first, then take the snapshot).
    pub fn needs_snapshot(&self) -> bool {
        self.state == State::AwaitingSnapshot && !self.buffer.is_empty()
    }

    pub fn is_synced(&self) -> bool {
        self.state != State::AwaitingSnapshot
    }

    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    pub fn counts(&self) -> SyncCounts {
        self.counts
    }

    /// Forgets the book, e.g. after the stream was reconnected and diffs may have been missed.
    pub fn reset(&mut self) {
        self.state = State::AwaitingSnapshot;
        self.book = OrderBook::default();
        self.buffer.clear();
    }

    /// Feeds one diff, in arrival order.
    pub fn on_diff(&mut self, diff: DepthDiff) -> Vec<SyncOutput> {
        let mut out = Vec::new();
        match self.state {
            State::AwaitingSnapshot => self.buffer_diff(diff),
            State::FirstAfterSnapshot | State::Synced => self.apply_diff(diff, &mut out),
        }
        out
    }

    /// Feeds a snapshot. Applies it if it fits the buffered diffs, then the buffered diffs after it.
    pub fn on_snapshot(&mut self, snap: DepthSnapshot) -> Vec<SyncOutput> {
        let mut out = Vec::new();
        if let Some(first) = self.buffer.first() {
            let too_old = match self.rule {
                DepthRule::Spot => snap.last_update_id + 1 < first.first_update_id,
                DepthRule::Futures => snap.last_update_id < first.first_update_id,
            };
            if too_old {
                // Older than the first buffered diff: updates in between are missing.
                self.counts.stale_snapshots += 1;
                return out;
            }
        }
        self.book = OrderBook {
            update_id: snap.last_update_id,
            ..OrderBook::default()
        };
        self.book.bids.apply(&snap.bids);
        self.book.asks.apply(&snap.asks);
        self.counts.snapshots += 1;
        let native = format!("{}:snapshot:{}", self.symbol, snap.last_update_id);
        out.push(SyncOutput::Update(BookUpdate {
            meta: Meta::raw(
                EventKind::BookUpdate,
                &self.exchange,
                &native,
                snap.ts_ingest,
                snap.ts_ingest,
            ),
            exchange: self.exchange.clone(),
            symbol: self.symbol.clone(),
            first_update_id: snap.last_update_id,
            final_update_id: snap.last_update_id,
            snapshot: true,
            bids: snap.bids,
            asks: snap.asks,
        }));
        self.state = State::FirstAfterSnapshot;
        if self.resyncing {
            self.resyncing = false;
            self.counts.resyncs += 1;
            out.push(SyncOutput::Status(self.status(
                FeedState::Resynced,
                snap.ts_ingest,
                &format!("resynced:{}", snap.last_update_id),
                format!("order book rebuilt from snapshot {}", snap.last_update_id),
                [("last_update_id", snap.last_update_id.to_string())],
            )));
        }
        for diff in std::mem::take(&mut self.buffer) {
            if self.state == State::AwaitingSnapshot {
                // A gap inside the buffer: keep the rest for the next snapshot.
                self.buffer_diff(diff);
            } else {
                self.apply_diff(diff, &mut out);
            }
        }
        out
    }

    fn buffer_diff(&mut self, diff: DepthDiff) {
        if self.buffer.len() >= self.max_buffer {
            self.buffer.remove(0);
        }
        self.buffer.push(diff);
    }

    fn apply_diff(&mut self, diff: DepthDiff, out: &mut Vec<SyncOutput>) {
        let id = self.book.update_id;
        let first = self.state == State::FirstAfterSnapshot;
        // Spot: `u <= lastUpdateId` is already in the book. Futures: the diff with
        // `u == lastUpdateId` is the first one to apply (`U <= lastUpdateId <= u`).
        let stale = match (self.rule, first) {
            (DepthRule::Futures, true) => diff.final_update_id < id,
            _ => diff.final_update_id <= id,
        };
        if stale {
            self.counts.stale += 1;
            return;
        }
        let fits = match (self.rule, first) {
            (DepthRule::Spot, true) => diff.first_update_id <= id + 1,
            (DepthRule::Spot, false) => diff.first_update_id == id + 1 || diff.first_update_id <= id,
            (DepthRule::Futures, true) => diff.first_update_id <= id,
            (DepthRule::Futures, false) => diff.prev_final_update_id == Some(id),
        };
        if !fits {
            self.counts.gaps += 1;
            let ts = diff.ts_ingest;
            let (status_id, detail, attrs) = match (self.rule, first) {
                (DepthRule::Spot, _) => {
                    let expected = id + 1;
                    let received = diff.first_update_id;
                    (
                        format!("gap:{expected}:{received}"),
                        format!(
                            "depth update {received} does not follow {id}: {} update ids missed; resyncing",
                            received - expected
                        ),
                        [expected.to_string(), received.to_string()],
                    )
                }
                (DepthRule::Futures, true) => {
                    let received = diff.first_update_id;
                    (
                        format!("gap:{id}:{received}"),
                        format!(
                            "depth update {received}..{} does not cover snapshot {id}; resyncing",
                            diff.final_update_id
                        ),
                        [id.to_string(), received.to_string()],
                    )
                }
                (DepthRule::Futures, false) => {
                    let received = diff
                        .prev_final_update_id
                        .map_or_else(|| "none".to_owned(), |p| p.to_string());
                    (
                        format!("gap:pu:{id}:{received}:{}", diff.final_update_id),
                        format!(
                            "depth update {} has pu {received}, not the previous u {id}; resyncing",
                            diff.final_update_id
                        ),
                        [id.to_string(), received],
                    )
                }
            };
            let [expected, received] = attrs;
            let attrs = [("expected", expected), ("received", received)];
            out.push(SyncOutput::Status(self.status(
                FeedState::Gap,
                ts,
                &status_id,
                detail,
                attrs,
            )));
            self.resyncing = true;
            self.state = State::AwaitingSnapshot;
            self.book = OrderBook::default();
            self.buffer.clear();
            self.buffer_diff(diff);
            return;
        }
        self.book.bids.apply(&diff.bids);
        self.book.asks.apply(&diff.asks);
        self.book.update_id = diff.final_update_id;
        self.state = State::Synced;
        self.counts.applied += 1;
        let native = format!(
            "{}:{}:{}",
            self.symbol, diff.first_update_id, diff.final_update_id
        );
        out.push(SyncOutput::Update(BookUpdate {
            meta: Meta::raw(
                EventKind::BookUpdate,
                &self.exchange,
                &native,
                diff.event_time,
                diff.ts_ingest,
            ),
            exchange: self.exchange.clone(),
            symbol: self.symbol.clone(),
            first_update_id: diff.first_update_id,
            final_update_id: diff.final_update_id,
            snapshot: false,
            bids: diff.bids,
            asks: diff.asks,
        }));
    }

    fn status<const N: usize>(
        &self,
        state: FeedState,
        ts: Micros,
        native: &str,
        detail: String,
        attrs: [(&str, String); N],
    ) -> FeedStatus {
        FeedStatus {
            meta: Meta::raw(
                EventKind::FeedStatus,
                &self.exchange,
                &format!("{}:{native}", self.symbol),
                ts,
                ts,
            ),
            feed: self.exchange.clone(),
            stream: format!("{}@depth", self.symbol.to_ascii_lowercase()),
            symbol: Some(self.symbol.clone()),
            status: state,
            detail,
            attributes: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auroraq_schemas::Dec;

    fn lv(p: &str, q: &str) -> Level {
        Level {
            price: Dec::parse(p).expect("p"),
            quantity: Dec::parse(q).expect("q"),
        }
    }

    fn diff(first: i64, last: i64, bids: Vec<Level>) -> DepthDiff {
        DepthDiff {
            symbol: "BTCUSDT".into(),
            first_update_id: first,
            final_update_id: last,
            prev_final_update_id: None,
            event_time: last * 10,
            ts_ingest: last * 10 + 1,
            bids,
            asks: vec![],
        }
    }

    fn snap(id: i64) -> DepthSnapshot {
        DepthSnapshot {
            symbol: "BTCUSDT".into(),
            last_update_id: id,
            ts_ingest: id * 10,
            bids: vec![lv("100", "1"), lv("99", "2")],
            asks: vec![lv("101", "1")],
        }
    }

    fn updates(out: &[SyncOutput]) -> Vec<(i64, i64, bool)> {
        out.iter()
            .filter_map(|o| match o {
                SyncOutput::Update(u) => Some((u.first_update_id, u.final_update_id, u.snapshot)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn buffered_diffs_older_than_the_snapshot_are_dropped() {
        let mut s = BookSync::new("binance", "btcusdt", 100);
        assert!(!s.needs_snapshot(), "no snapshot before the stream has something");
        assert!(s.on_diff(diff(5, 8, vec![])).is_empty());
        assert!(s.on_diff(diff(9, 12, vec![lv("100", "0")])).is_empty());
        assert!(s.needs_snapshot());
        let out = s.on_snapshot(snap(10));
        assert_eq!(updates(&out), vec![(10, 10, true), (9, 12, false)]);
        assert_eq!(
            s.book().best_bid().map(|b| b.0.to_string()),
            Some("99".into()),
            "100 removed"
        );
        let out = s.on_diff(diff(13, 13, vec![lv("100.5", "3")]));
        assert_eq!(updates(&out), vec![(13, 13, false)]);
        assert_eq!(s.book().best_bid().map(|b| b.0.to_string()), Some("100.5".into()));
        assert_eq!(s.counts().stale, 1);
    }

    #[test]
    fn a_snapshot_older_than_the_buffer_is_refused() {
        let mut s = BookSync::new("binance", "btcusdt", 100);
        s.on_diff(diff(20, 25, vec![]));
        assert!(s.on_snapshot(snap(10)).is_empty());
        assert!(s.needs_snapshot());
        assert_eq!(s.counts().stale_snapshots, 1);
        assert_eq!(
            updates(&s.on_snapshot(snap(22))),
            vec![(22, 22, true), (20, 25, false)]
        );
    }

    #[test]
    fn a_gap_resets_and_the_next_snapshot_heals_it() {
        let mut s = BookSync::new("binance", "btcusdt", 100);
        s.on_diff(diff(1, 3, vec![]));
        s.on_snapshot(snap(2));
        s.on_diff(diff(4, 5, vec![]));
        let out = s.on_diff(diff(7, 9, vec![]));
        assert!(
            matches!(&out[..], [SyncOutput::Status(st)] if st.status == FeedState::Gap
            && st.attributes.get("expected").map(String::as_str) == Some("6"))
        );
        assert!(!s.is_synced());
        assert!(s.needs_snapshot());
        s.on_diff(diff(10, 11, vec![]));
        let out = s.on_snapshot(snap(8));
        assert_eq!(updates(&out), vec![(8, 8, true), (7, 9, false), (10, 11, false)]);
        assert!(out
            .iter()
            .any(|o| matches!(o, SyncOutput::Status(st) if st.status == FeedState::Resynced)));
        assert_eq!(s.counts().gaps, 1);
        assert_eq!(s.counts().resyncs, 1);
        // a re-sent old diff after reconnect is ignored, not a gap
        assert!(s.on_diff(diff(10, 11, vec![])).is_empty());
        assert_eq!(s.counts().gaps, 1);
    }

    #[test]
    fn first_diff_after_snapshot_must_straddle() {
        let mut s = BookSync::new("binance", "btcusdt", 100);
        s.on_diff(diff(1, 1, vec![]));
        s.on_snapshot(snap(5));
        let out = s.on_diff(diff(7, 8, vec![]));
        assert!(matches!(&out[..], [SyncOutput::Status(st)] if st.status == FeedState::Gap));
    }

    /// A futures diff: `pu` chains it to the previous one; ids jump.
    fn fdiff(first: i64, last: i64, pu: i64, bids: Vec<Level>) -> DepthDiff {
        DepthDiff {
            prev_final_update_id: Some(pu),
            ..diff(first, last, bids)
        }
    }

    fn futures() -> BookSync {
        BookSync::new("binance_futures", "btcusdt", 100).with_rule(DepthRule::Futures)
    }

    #[test]
    fn futures_diffs_chain_by_pu_not_by_contiguous_ids() {
        let mut s = futures();
        s.on_diff(fdiff(90, 95, 80, vec![]));
        s.on_diff(fdiff(96, 100, 95, vec![]));
        s.on_diff(fdiff(107, 130, 100, vec![lv("100", "0")]));
        // u < lastUpdateId dropped; the first applied has U <= lastUpdateId <= u (u == 100 here).
        let out = s.on_snapshot(snap(100));
        assert_eq!(
            updates(&out),
            vec![(100, 100, true), (96, 100, false), (107, 130, false)]
        );
        assert_eq!(s.counts().stale, 1);
        // Ids jump (U = 141 is not 131) but pu names the previous u: no gap.
        let out = s.on_diff(fdiff(141, 150, 130, vec![lv("100.5", "3")]));
        assert_eq!(updates(&out), vec![(141, 150, false)]);
        assert_eq!(s.book().best_bid().map(|b| b.0.to_string()), Some("100.5".into()));
        assert_eq!(s.counts().gaps, 0);
        // The spot rule on the same input calls the jump a gap.
        let mut spot = BookSync::new("binance", "btcusdt", 100);
        spot.on_diff(fdiff(96, 100, 95, vec![]));
        spot.on_snapshot(snap(100));
        spot.on_diff(fdiff(107, 130, 100, vec![]));
        assert_eq!(spot.counts().gaps, 1);
    }

    #[test]
    fn a_futures_pu_that_is_not_the_previous_u_is_a_gap_and_a_snapshot_heals_it() {
        let mut s = futures();
        s.on_diff(fdiff(95, 105, 90, vec![]));
        s.on_snapshot(snap(100));
        let out = s.on_diff(fdiff(120, 140, 115, vec![]));
        assert!(
            matches!(&out[..], [SyncOutput::Status(st)] if st.status == FeedState::Gap
                && st.attributes.get("expected").map(String::as_str) == Some("105")
                && st.attributes.get("received").map(String::as_str) == Some("115")),
            "{out:?}"
        );
        assert!(s.needs_snapshot());
        // A snapshot older than the buffered diff's U (lastUpdateId < U) cannot start the book.
        assert!(s.on_snapshot(snap(119)).is_empty());
        assert_eq!(s.counts().stale_snapshots, 1);
        let out = s.on_snapshot(snap(125));
        assert_eq!(updates(&out), vec![(125, 125, true), (120, 140, false)]);
        assert!(out
            .iter()
            .any(|o| matches!(o, SyncOutput::Status(st) if st.status == FeedState::Resynced)));
        // Re-sent after a reconnect: old, ignored, not a gap.
        assert!(s.on_diff(fdiff(120, 140, 115, vec![])).is_empty());
        // A futures diff without pu cannot be chained: a gap, not a guess.
        let out = s.on_diff(diff(141, 150, vec![]));
        assert!(
            matches!(&out[..], [SyncOutput::Status(st)] if st.status == FeedState::Gap
            && st.attributes.get("received").map(String::as_str) == Some("none"))
        );
    }

    #[test]
    fn the_first_futures_diff_must_cover_the_snapshot_id() {
        let mut s = futures();
        s.on_diff(fdiff(99, 100, 98, vec![]));
        s.on_snapshot(snap(100));
        assert_eq!(s.counts().applied, 1, "u == lastUpdateId is applied on futures");
        let mut s = futures();
        s.on_diff(fdiff(90, 95, 80, vec![]));
        s.on_snapshot(snap(100));
        let out = s.on_diff(fdiff(101, 110, 100, vec![]));
        assert!(
            matches!(&out[..], [SyncOutput::Status(st)] if st.status == FeedState::Gap),
            "U = 101 > lastUpdateId 100 does not cover it: {out:?}"
        );
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut s = BookSync::new("binance", "btcusdt", 2);
        for i in 0..5 {
            s.on_diff(diff(i * 2 + 1, i * 2 + 2, vec![]));
        }
        assert_eq!(s.buffer.len(), 2);
        assert_eq!(s.buffer[0].first_update_id, 7);
    }
}
