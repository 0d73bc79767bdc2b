//! Returns off the market stream, on a fixed grid of return intervals.
//!
//! Time is cut into buckets of `interval` microseconds (`floor(ts / interval)`, UTC-aligned). A
//! bucket's close is the last price seen in it. A bucket is complete when a price from a later
//! bucket arrives, or, for a closed bar, when the bar ends at the bucket's end (its
//! `close_time` within 1 ms of it: Binance's `close_time` is the last millisecond, the replay
//! connector's the last microsecond), so a daily bar yields its daily return at once. The return
//! of a complete bucket is `close / previous close - 1`, whatever the gap between the two.
//! Prices older than the bucket being built (late data) are ignored. The last `lookback`
//! returns are kept, keyed by bucket, so that assets can be aligned for a portfolio.

use std::collections::VecDeque;

use auroraq_schemas::Micros;

/// One asset's returns.
#[derive(Clone, Debug)]
pub struct ReturnSeries {
    interval: Micros,
    lookback: usize,
    /// The bucket being built and its last price.
    open: Option<(i64, f64)>,
    /// The last complete bucket and its close.
    last_closed: Option<(i64, f64)>,
    returns: VecDeque<(i64, f64)>,
}

impl ReturnSeries {
    /// Returns on buckets of `interval` microseconds, keeping the last `lookback`.
    pub fn new(interval: Micros, lookback: usize) -> Self {
        ReturnSeries {
            interval: interval.max(1),
            lookback: lookback.max(2),
            open: None,
            last_closed: None,
            returns: VecDeque::new(),
        }
    }

    pub fn interval(&self) -> Micros {
        self.interval
    }

    fn bucket(&self, ts: Micros) -> i64 {
        ts.div_euclid(self.interval)
    }

    fn close(&mut self, bucket: i64, price: f64) -> Option<f64> {
        let r = match self.last_closed {
            Some((_, prev)) if prev > 0.0 && price.is_finite() => Some(price / prev - 1.0),
            _ => None,
        };
        if let Some(r) = r {
            self.returns.push_back((bucket, r));
            while self.returns.len() > self.lookback {
                self.returns.pop_front();
            }
        }
        self.last_closed = Some((bucket, price));
        r
    }

    fn is_late(&self, b: i64) -> bool {
        self.last_closed.is_some_and(|(c, _)| b <= c) || self.open.is_some_and(|(o, _)| b < o)
    }

    /// A price at `ts` (a trade, a quote mid). Returns the return it completed, if any.
    pub fn observe(&mut self, ts: Micros, price: f64) -> Option<f64> {
        if !(price.is_finite() && price > 0.0) {
            return None;
        }
        let b = self.bucket(ts);
        if self.is_late(b) {
            return None;
        }
        let mut done = None;
        if let Some((o, p)) = self.open {
            if b > o {
                done = self.close(o, p);
            }
        }
        self.open = Some((b, price));
        done
    }

    /// A closed bar `[open_time, close_time]` with its close. Returns the return(s) it
    /// completed: the previous bucket's (if the bar starts a later one) and its own (if it ends
    /// its bucket), in that order.
    pub fn observe_bar(&mut self, open_time: Micros, close_time: Micros, close: f64) -> Vec<f64> {
        let mut out = Vec::new();
        if !(close.is_finite() && close > 0.0) {
            return out;
        }
        let b = self.bucket(open_time);
        if self.is_late(b) {
            return out;
        }
        if let Some((o, p)) = self.open {
            if b > o {
                out.extend(self.close(o, p));
            }
        }
        let end = (b + 1).saturating_mul(self.interval);
        if close_time >= end - 1_000 {
            self.open = None;
            out.extend(self.close(b, close));
        } else {
            self.open = Some((b, close));
        }
        out
    }

    /// The kept returns, oldest first.
    pub fn returns(&self) -> Vec<f64> {
        self.returns.iter().map(|(_, r)| *r).collect()
    }

    /// The kept returns with their bucket index, oldest first.
    pub fn keyed(&self) -> &VecDeque<(i64, f64)> {
        &self.returns
    }

    pub fn len(&self) -> usize {
        self.returns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.returns.is_empty()
    }
}

/// Aligns several series on the buckets they all have, keeping at most the last `max` of them:
/// `out[i][t]` is series `i`'s return in the `t`-th common bucket.
pub fn align(series: &[&ReturnSeries], max: usize) -> Vec<Vec<f64>> {
    let Some(first) = series.first() else {
        return Vec::new();
    };
    if series.len() == 1 {
        // One series has all its buckets in common (each bucket once, in order): its last `max`.
        let r = first.keyed();
        return vec![r
            .iter()
            .skip(r.len().saturating_sub(max))
            .map(|(_, x)| *x)
            .collect()];
    }
    let mut common: Vec<i64> = first.keyed().iter().map(|(b, _)| *b).collect();
    for s in &series[1..] {
        let have: std::collections::BTreeSet<i64> = s.keyed().iter().map(|(b, _)| *b).collect();
        common.retain(|b| have.contains(b));
    }
    if common.len() > max {
        common.drain(..common.len() - max);
    }
    series
        .iter()
        .map(|s| {
            let map: std::collections::BTreeMap<i64, f64> = s.keyed().iter().copied().collect();
            common.iter().filter_map(|b| map.get(b).copied()).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Micros = 3_600_000_000;

    #[test]
    fn ticks_close_buckets_on_the_next_bucket() {
        let mut s = ReturnSeries::new(H, 10);
        assert_eq!(s.observe(10, 100.0), None);
        assert_eq!(s.observe(H - 1, 101.0), None); // close of bucket 0 = 101
        assert_eq!(s.observe(H + 5, 110.0), None); // bucket 0 done, no previous close
        assert_eq!(s.observe(2 * H, 99.0), Some(110.0 / 101.0 - 1.0));
        assert_eq!(s.observe(H + 7, 1.0), None, "late data is ignored");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn bars_close_their_own_bucket() {
        let mut s = ReturnSeries::new(H, 10);
        assert!(s.observe_bar(0, H - 1, 100.0).is_empty());
        assert_eq!(s.observe_bar(H, 2 * H - 1, 105.0), vec![105.0 / 100.0 - 1.0]);
        // Binance-style close time (last millisecond).
        let r = s.observe_bar(2 * H, 3 * H - 1_000, 84.0);
        assert_eq!(r.len(), 1);
        assert!((r[0] - (84.0 / 105.0 - 1.0)).abs() < 1e-15);
        assert_eq!(s.returns().len(), 2);
    }

    #[test]
    fn lookback_bounds_the_window_and_align_intersects() {
        let mut a = ReturnSeries::new(H, 3);
        let mut b = ReturnSeries::new(H, 3);
        for i in 0..6 {
            a.observe_bar(i * H, (i + 1) * H - 1, 100.0 + i as f64);
            if i != 4 {
                b.observe_bar(i * H, (i + 1) * H - 1, 50.0 + i as f64);
            }
        }
        assert_eq!(a.len(), 3);
        let al = align(&[&a, &b], 10);
        assert_eq!(al[0].len(), al[1].len());
        assert_eq!(
            al[0].len(),
            2,
            "bucket 4 is missing in b, bucket 5 in b is vs bucket 3"
        );
    }
}
