//! The single writer path: request handlers send their batch and wait; one
//! task takes every batch waiting at that moment (up to [`MAX_GROUP`]) and
//! appends them in one transaction (group commit), so `seq` and the chain are
//! assigned in commit order and one fsync serves many requests.

use super::{Appended, BatchWrite, DynStore, StoreError, WriteOutcome};
use crate::metrics::Metrics;
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most batches committed in one transaction.
pub const MAX_GROUP: usize = 64;

type Reply = oneshot::Sender<Result<WriteOutcome, WriterError>>;

/// Why a batch could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriterError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the writer has stopped")]
    Stopped,
}

/// The handle request handlers use; cloning is cheap.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<(BatchWrite, Reply)>,
    /// Longest wait for an answer: a hung database becomes a `503` before the
    /// filter's 5 s timeout (the store's timeout plus a turn in the queue).
    deadline: std::time::Duration,
}

impl Writer {
    /// Starts the writer task; it ends when every `Writer` clone is dropped and
    /// the queue is drained, which is how a graceful shutdown finishes in-flight batches.
    pub fn start(
        store: DynStore,
        metrics: Arc<Metrics>,
        idempotency_ttl_secs: i64,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let deadline = store.op_timeout() + std::time::Duration::from_secs(1);
        let task = tokio::spawn(run(store, metrics, idempotency_ttl_secs, rx));
        (Self { tx, deadline }, task)
    }

    /// Appends one batch; resolves after its transaction committed (or failed).
    pub async fn append(&self, batch: BatchWrite) -> Result<WriteOutcome, WriterError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((batch, reply))
            .await
            .map_err(|_| WriterError::Stopped)?;
        // Past the deadline the batch may still be committed (it is then a
        // duplicate when the filter retries), or skipped if not yet taken.
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(outcome) => outcome.map_err(|_| WriterError::Stopped)?,
            Err(_) => Err(WriterError::Unavailable(
                "the database did not answer in time".to_owned(),
            )),
        }
    }
}

async fn run(
    store: DynStore,
    metrics: Arc<Metrics>,
    ttl: i64,
    mut rx: mpsc::Receiver<(BatchWrite, Reply)>,
) {
    let mut group: Vec<(BatchWrite, Reply)> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        // Requests that stopped waiting (deadline passed) were answered 503.
        group.retain(|(_, reply)| !reply.is_closed());
        if group.is_empty() {
            continue;
        }
        let (batches, replies): (Vec<BatchWrite>, Vec<Reply>) = group.drain(..).unzip();
        match commit(&store, &metrics, &batches, ttl).await {
            Ok(appended) => answer(replies, appended.outcomes.into_iter().map(Ok)),
            // A database that is down or hung would only time out again per batch.
            Err(e) if batches.len() > 1 && !e.is_unavailable() => {
                // One bad batch must not fail the others grouped with it:
                // retry each on its own, so only the culprit gets its 503.
                tracing::warn!(error = %e, batches = batches.len(), "group commit failed; retrying batch by batch");
                for (batch, reply) in batches.into_iter().zip(replies) {
                    if reply.is_closed() {
                        continue;
                    }
                    let one = std::slice::from_ref(&batch);
                    let result = commit(&store, &metrics, one, ttl).await;
                    let outcome = result
                        .map_err(|e| failed(&e, 1))
                        .and_then(|mut a| a.outcomes.pop().ok_or(WriterError::Stopped));
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                let err = failed(&e, batches.len());
                answer(replies, std::iter::repeat_with(|| Err(err.clone())));
            }
        }
    }
}

async fn commit(
    store: &DynStore,
    metrics: &Metrics,
    batches: &[BatchWrite],
    ttl: i64,
) -> Result<Appended, StoreError> {
    let started = std::time::Instant::now();
    let result = super::limits::bounded(
        store.op_timeout(),
        "an append",
        store.append_batches(batches, Utc::now(), ttl),
    )
    .await;
    metrics
        .db_write_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Ok(appended) = &result {
        metrics.chain_head_seq.set(appended.head.seq);
    }
    result
}

fn answer(replies: Vec<Reply>, outcomes: impl Iterator<Item = Result<WriteOutcome, WriterError>>) {
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

fn failed(e: &StoreError, batches: usize) -> WriterError {
    tracing::error!(error = %e, batches, "append failed; answering 503");
    WriterError::Unavailable(short_error(e))
}

fn short_error(e: &StoreError) -> String {
    match e {
        StoreError::Database(_) => "database error".to_owned(),
        other => other.to_string(),
    }
}
