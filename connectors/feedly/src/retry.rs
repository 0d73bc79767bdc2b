//! Waiting: exponential backoff with jitter, `Retry-After`, and sleeps that end on stop.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use rand::Rng;

/// How often a wait looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Exponential backoff: `initial · 2ⁿ` after the n-th consecutive failure, capped at `max`; each
/// delay is drawn uniformly from its upper half ("equal jitter"), so that many clients that fail
/// together do not retry together.
#[derive(Clone, Debug)]
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

    /// The delay before the next try, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Reads a `Retry-After` value: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, or the obsolete RFC 850 and asctime forms). A date in the past
/// is a zero delay; anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Huge numbers saturate rather than fail: the caller caps the wait anyway.
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A small random addition to a server-given wait (at most a tenth of it, at most a second), so
/// that clients told the same time do not all come back at once. Never shortens the wait.
pub fn jitter_up(d: Duration) -> Duration {
    let span = (d / 10).min(Duration::from_secs(1));
    d + rand::rng().random_range(Duration::ZERO..=span)
}

/// Sleeps for `d`, or less if `stop` is set. Returns false when stopped.
pub async fn sleep_or_stop(d: Duration, stop: &AtomicBool) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        tokio::time::sleep((deadline - now).min(STOP_CHECK)).await;
    }
}

/// Runs `f` to completion unless `stop` is set first (then `None`: `f` is dropped).
pub async fn until_stopped<F: Future>(stop: &AtomicBool, f: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = f => Some(out),
        _ = async {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(STOP_CHECK).await;
            }
        } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let expect = [100u64, 200, 400, 800, 1000, 1000];
        for ceiling in expect {
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
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(draws.len() > 1);
        // Many failures do not overflow.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(300));
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        // In the past: no wait.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn jitter_only_adds() {
        for _ in 0..100 {
            let d = jitter_up(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200));
        }
        assert!(jitter_up(Duration::from_secs(100)) <= Duration::from_secs(101));
    }

    #[tokio::test]
    async fn sleeps_end_on_stop() {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let t0 = std::time::Instant::now();
        assert!(sleep_or_stop(Duration::from_millis(20), &stop).await);
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.store(true, Ordering::SeqCst);
        });
        assert!(!sleep_or_stop(Duration::from_secs(30), &stop).await);
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Stopped: a future that never ends is dropped; one that is ready still completes.
        assert_eq!(until_stopped(&stop, std::future::pending::<()>()).await, None);
        assert_eq!(until_stopped(&stop, async { 1 }).await, Some(1));
    }
}
