//! Token buckets per client identity (`MESHAUDIT_RATE_LIMIT_RPS`, burst twice
//! the rate): the authenticated API key, or the peer address when keys are
//! not required (never an unchecked header, which a client could vary to
//! escape its bucket). At most [`MAX_BUCKETS`] are kept; past that the least
//! recently used one is forgotten (not every bucket at once). Time is passed
//! in, so the arithmetic is tested without sleeping.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::lru::LruMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most.
pub const MAX_BUCKETS: usize = 100_000;

/// Smallest non-zero rate accepted at start-up: below it, one token takes
/// longer than a day to refill and `Retry-After` stops meaning anything.
pub const MIN_RATE: f64 = 0.001;
/// Largest rate accepted at start-up.
pub const MAX_RATE: f64 = 1_000_000.0;

/// Why a rate is refused at start-up.
pub fn validate_rate(rate: f64) -> Result<f64, String> {
    if rate == 0.0 || (rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
        Ok(rate)
    } else {
        Err(format!(
            "expected 0 (off) or a number from {MIN_RATE} to {MAX_RATE}"
        ))
    }
}

/// The longest wait ever answered, whatever the arithmetic says.
const MAX_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<LruMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second; 0 (or anything not a positive finite
    /// number) turns limiting off.
    pub fn new(rate: f64) -> Self {
        Self::with_capacity(rate, MAX_BUCKETS)
    }

    pub fn with_capacity(rate: f64, capacity: usize) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        Self {
            rate,
            burst: (rate * 2.0).max(1.0),
            buckets: Mutex::new(LruMap::new(capacity)),
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
        let (bucket, _evicted) = buckets.get_or_insert_with(&key.to_owned(), || Bucket {
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
            let wait = Duration::try_from_secs_f64((1.0 - bucket.tokens) / self.rate)
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
            Err(wait)
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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

    #[test]
    fn absurd_rates_are_refused_and_never_panic() {
        for bad in [1e-30, f64::NAN, f64::INFINITY, -1.0, 1e7] {
            assert!(validate_rate(bad).is_err(), "{bad}");
        }
        assert!(validate_rate(0.0).is_ok() && validate_rate(0.5).is_ok());
        // Even unvalidated, the request path answers instead of panicking.
        let t0 = Instant::now();
        for rate in [1e-30, f64::MIN_POSITIVE, 1e300] {
            let rl = RateLimiter::new(rate);
            let _ = rl.check("k", t0);
            let _ = rl.check("k", t0);
            if let Err(w) = rl.check("k", t0) {
                assert!(w <= MAX_WAIT);
                assert!(retry_after_secs(w) >= 1);
            }
        }
    }

    #[test]
    fn a_full_table_forgets_the_least_recent_not_everyone() {
        let rl = RateLimiter::with_capacity(1.0, 3);
        let t0 = Instant::now();
        // "victim" spends its burst and is then limited.
        assert!(rl.check("victim", t0).is_ok());
        assert!(rl.check("victim", t0).is_ok());
        assert!(rl.check("victim", t0).is_err());
        // Two other keys fit without evicting it; it stays limited.
        assert!(rl.check("a", t0).is_ok());
        assert!(rl.check("victim", t0).is_err());
        assert!(rl.check("b", t0).is_ok());
        assert!(rl.check("victim", t0).is_err(), "not reset by new keys");
        // A flood of new keys evicts the least recently used ones only.
        for i in 0..10 {
            let _ = rl.check(&format!("flood-{i}"), t0);
        }
        assert_eq!(rl.buckets.lock().unwrap().len(), 3);
    }
}
