//! Exponential backoff with "equal jitter".

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `initial · 2ⁿ` after the n-th consecutive failure, capped at `max`; each
/// delay is drawn uniformly from its upper half ("equal jitter"), so that many clients that fail
/// together do not retry together.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The upper bound of attempt `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max)
    }

    /// The jittered delay before attempt `attempt` (0-based), in `[ceiling/2, ceiling]`;
    /// stateless, for callers that count attempts themselves.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// The delay before the next try, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A small random addition to a server-given wait (at most a tenth of it, at most a second), so
/// that clients told the same time do not all come back at once. Never shortens the wait.
pub fn jitter_up(d: Duration) -> Duration {
    let span = (d / 10).min(Duration::from_secs(1));
    d + rand::rng().random_range(Duration::ZERO..=span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for ceiling in [100u64, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(ceiling / 2) && d <= Duration::from_millis(ceiling),
                "{d:?} not in [{}, {ceiling}] ms",
                ceiling / 2
            );
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        let draws: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(draws.len() > 1, "jittered");
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(300));
        }
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn stateless_delay_is_within_its_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..10 {
            let c = b.ceiling(attempt);
            let d = b.delay(attempt);
            assert!(d >= c / 2 && d <= c, "attempt {attempt}: {d:?} vs {c:?}");
        }
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(2));
        assert_eq!(b.ceiling(10), Duration::from_secs(2));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let d = b.delay(2);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
            distinct.insert(d);
        }
        assert!(distinct.len() > 1, "jittered");
        assert_eq!(b.failures(), 0, "delay() keeps no state");
    }

    #[test]
    fn jitter_only_adds() {
        for _ in 0..100 {
            let d = jitter_up(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200));
        }
        assert!(jitter_up(Duration::from_secs(100)) <= Duration::from_secs(101));
    }
}
