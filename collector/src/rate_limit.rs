//! Per-API-key token buckets (`MESHAUDIT_RATE_LIMIT_RPS`, burst twice the
//! rate). Time is passed in, so the arithmetic is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by the idempotency scope (the API key's hash).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second; 0 turns limiting off.
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            burst: (rate * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one token for `key` at `now`; `Err(wait)` says when to retry.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > 100_000 {
            // Keys are API keys, so this only grows with configuration; stay bounded anyway.
            buckets.clear();
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(2.0);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(rl.check("k", t0).is_ok());
        }
        let wait = rl.check("k", t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        assert!(rl.check("other", t0).is_ok(), "buckets are per key");
        assert!(rl.check("k", t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn zero_is_off() {
        let rl = RateLimiter::new(0.0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(rl.check("k", t0).is_ok());
        }
    }
}
