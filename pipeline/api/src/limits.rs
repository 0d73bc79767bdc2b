//! Rate limits: a token bucket per caller (credential or client IP). A bucket holds up to `burst`
//! tokens and refills at `rate` per second; a request takes one, and when none is left the answer
//! is `429` with the time until the next token in `Retry-After`. The table of buckets is bounded:
//! when it grows past its cap, buckets that have refilled completely (idle callers) are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle ones are swept.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by caller.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `who` at `now`; `Err(wait)` when there is none.
    pub fn take_at(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_BUCKETS && !b.contains_key(who) {
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, x| x.tokens + now.duration_since(x.at).as_secs_f64() * rate < burst);
        }
        let bucket = b.entry(who.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    pub fn take(&self, who: &str) -> Result<(), Duration> {
        self.take_at(who, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at("a", t0).is_ok());
        }
        let wait = l.take_at("a", t0).err().unwrap_or_default();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Another caller has its own bucket.
        assert!(l.take_at("b", t0).is_ok());
        // Half a second later one token is back.
        assert!(l.take_at("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take_at("a", t0 + Duration::from_millis(500)).is_err());
    }
}
