//! Percentiles over latency samples, and the small report types the binaries print as JSON.

use serde::Serialize;

/// The `q` quantile (0..=1) of `samples` by nearest rank; `None` for no samples.
pub fn percentile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.saturating_sub(1).min(samples.len() - 1)])
}

/// p50, p99 and max of latency samples in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latency {
    pub fn of(samples_ms: &mut [f64]) -> Self {
        Self {
            p50_ms: percentile(samples_ms, 0.50),
            p99_ms: percentile(samples_ms, 0.99),
            max_ms: percentile(samples_ms, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        s.reverse();
        assert_eq!(percentile(&mut s, 0.5), Some(50.0));
        assert_eq!(percentile(&mut s, 0.99), Some(99.0));
        assert_eq!(percentile(&mut s, 1.0), Some(100.0));
        assert_eq!(percentile(&mut s, 0.0), Some(1.0));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn latency_of_one_sample() {
        let l = Latency::of(&mut [3.5]);
        assert_eq!(l.p50_ms, Some(3.5));
        assert_eq!(l.p99_ms, Some(3.5));
        assert_eq!(l.max_ms, Some(3.5));
    }
}
