//! The events of a batch (SPEC §6 checks 7–8): decompressed within the size
//! limit, counted, split, parsed, hashed, checked and given their id, off
//! the async executor (a 4 MiB body is milliseconds of CPU that would
//! otherwise stall every other connection on that worker).

use super::body::{gunzip_bounded, split_batch, Framing};
use super::refusal::Refusal;
use crate::prepare::{prepare_checked, PreparedEvent};
use meshaudit_event::integrity::EventKeys;
use std::sync::Arc;

/// Runs `work` on the blocking pool (a failed task is answered, not propagated).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "an ingest decoding task failed");
        Err(Refusal::malformed("the body could not be decoded", None))
    })
}

/// Bounded gzip decompression on the blocking pool.
pub async fn gunzip_blocking(raw: Arc<Vec<u8>>, limit: usize) -> Result<Vec<u8>, Refusal> {
    blocking(move || gunzip_bounded(&raw, limit)).await
}

/// What turning a (decompressed) body into events needs.
#[derive(Debug, Clone)]
pub struct Decode {
    pub framing: Framing,
    pub max_events: usize,
    pub keys: Arc<EventKeys>,
}

impl Decode {
    /// [`Decode::run`] on the blocking pool.
    pub async fn run_blocking(self, body: Arc<Vec<u8>>) -> Result<Vec<PreparedEvent>, Refusal> {
        blocking(move || self.run(&body)).await
    }

    /// The pure part: a decompressed body to prepared events.
    pub fn run(&self, body: &[u8]) -> Result<Vec<PreparedEvent>, Refusal> {
        let raw_events = split_batch(body, self.framing, self.max_events)?;
        raw_events
            .into_iter()
            .map(|raw| {
                let line = raw.line;
                prepare_checked(raw, &self.keys).map_err(|p| {
                    Refusal::malformed(format!("event at line {line}: {p}"), Some(line))
                })
            })
            .collect()
    }
}
