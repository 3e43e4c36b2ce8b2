//! Bytes in flight (`MESHAUDIT_MAX_INFLIGHT_BYTES`): every ingest request
//! holds permits for its body bytes (its `Content-Length`, or the body limit
//! when it has none, and again for its decompressed size) until it is
//! answered, so concurrent batches cannot hold more memory than that; past
//! it the answer is `503` with `Retry-After` instead of a growing heap.

use super::refusal::Refusal;
use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Seconds a client is told to wait when the collector is full.
pub const RETRY_AFTER_SECS: u64 = 1;

pub struct Admission {
    bytes: Arc<Semaphore>,
}

/// Permits held for one request; released (and the gauge lowered) on drop.
pub struct Admitted {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: i64,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(max_inflight_bytes: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(
                max_inflight_bytes.min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Takes permits for `bytes` more bytes, or refuses with `503` at once
    /// (waiting would only hold the connection and its buffers longer).
    pub fn admit(&self, held: &mut Admitted, bytes: usize) -> Result<(), Refusal> {
        let n = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(permit) => {
                held.permits.push(permit);
                let n = i64::from(n);
                held.bytes += n;
                held.metrics.ingest_inflight_bytes.add(n);
                Ok(())
            }
            Err(_) => Err(Refusal::Overloaded {
                retry_after_secs: RETRY_AFTER_SECS,
            }),
        }
    }

    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Admitted {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            permits: Vec::new(),
            bytes: 0,
            metrics,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.metrics.ingest_inflight_bytes.sub(self.bytes);
        self.permits.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bounded_then_released() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let a = Admission::new(100);
        let mut first = Admitted::new(metrics.clone());
        a.admit(&mut first, 60).unwrap();
        let mut second = Admitted::new(metrics.clone());
        assert!(matches!(
            a.admit(&mut second, 60),
            Err(Refusal::Overloaded { .. })
        ));
        assert_eq!(metrics.ingest_inflight_bytes.get(), 60);
        drop(first);
        assert_eq!(metrics.ingest_inflight_bytes.get(), 0);
        a.admit(&mut second, 60).unwrap();
        assert_eq!(a.available(), 40);
    }
}
