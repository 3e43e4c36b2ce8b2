//! Retry delays: exponential backoff with jitter, pure. The delay doubles from
//! [`BASE`] up to [`CAP`]; the jitter spreads each delay over its upper half so
//! exporters of many collectors do not retry in step against a recovering sink.

use std::time::Duration;

pub const BASE: Duration = Duration::from_millis(200);
pub const CAP: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (1 = first retry); `jitter` in `[0, 1)`.
pub fn delay(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let full = BASE.saturating_mul(1u32 << exp).min(CAP);
    let jitter = jitter.clamp(0.0, 1.0);
    full / 2 + full.mul_f64(jitter / 2.0)
}

/// A jitter value in `[0, 1)` from the clock's nanoseconds (no secret needs it).
pub fn clock_jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_in_the_upper_half_and_caps() {
        assert_eq!(delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(delay(40, 1.0), CAP);
        assert_eq!(delay(40, 0.0), CAP / 2);
        let j = clock_jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
