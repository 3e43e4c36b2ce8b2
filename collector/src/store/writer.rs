//! The single writer path: request handlers send their batch and wait; one
//! task takes every batch waiting at that moment (up to [`MAX_GROUP`]) and
//! appends them in one transaction (group commit), so `seq` and the chain are
//! assigned in commit order and one fsync serves many requests.

use super::{BatchWrite, DynStore, StoreError, WriteOutcome};
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
        let task = tokio::spawn(run(store, metrics, idempotency_ttl_secs, rx));
        (Self { tx }, task)
    }

    /// Appends one batch; resolves after its transaction committed (or failed).
    pub async fn append(&self, batch: BatchWrite) -> Result<WriteOutcome, WriterError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((batch, reply))
            .await
            .map_err(|_| WriterError::Stopped)?;
        answer.await.map_err(|_| WriterError::Stopped)?
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
        let (batches, replies): (Vec<BatchWrite>, Vec<Reply>) = group.drain(..).unzip();
        let started = std::time::Instant::now();
        let result = store.append_batches(&batches, Utc::now(), ttl).await;
        metrics
            .db_write_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                if let Ok(head) = store.head().await {
                    metrics.chain_head_seq.set(head.seq);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = batches.len(), "append failed; answering 503");
                let message = short_error(&e);
                for reply in replies {
                    let _ = reply.send(Err(WriterError::Unavailable(message.clone())));
                }
            }
        }
    }
}

fn short_error(e: &StoreError) -> String {
    match e {
        StoreError::Database(_) => "database error".to_owned(),
        other => other.to_string(),
    }
}
