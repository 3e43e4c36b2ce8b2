//! Group commit: concurrent batches share one transaction, and one batch the
//! database refuses does not take the others of its group down with it.

use crate::support::temp_sqlite;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use meshaudit_collector::chain::ChainHead;
use meshaudit_collector::ingest::body::{split_events, Framing};
use meshaudit_collector::metrics::Metrics;
use meshaudit_collector::prepare::prepare;
use meshaudit_collector::store::sqlite::SqliteStore;
use meshaudit_collector::store::writer::Writer;
use meshaudit_collector::store::{
    Appended, BatchWrite, EventQuery, EventStore, IdempotencyRecord, RetentionAnchor, StoreError,
    StoredEvent, WriteOutcome,
};
use meshaudit_event::integrity::EventKeys;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// SQLite, except that a transaction holding the id "poison" fails.
struct Poisoned {
    inner: SqliteStore,
    transactions: AtomicUsize,
}

#[async_trait]
impl EventStore for Poisoned {
    fn backend(&self) -> &'static str {
        "poisoned"
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn prepare_partitions(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.prepare_partitions(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn append_batches(
        &self,
        batches: &[BatchWrite],
        now: DateTime<Utc>,
        ttl: i64,
    ) -> Result<Appended, StoreError> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        if batches
            .iter()
            .any(|b| b.events.iter().any(|e| e.id == "poison"))
        {
            return Err(StoreError::Refused("poisoned batch".into()));
        }
        self.inner.append_batches(batches, now, ttl).await
    }
    async fn idempotency_lookup(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency_lookup(scope, key, now).await
    }
    async fn query(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.query(q).await
    }
    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.get(id).await
    }
    async fn scan(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.scan(after, limit).await
    }
    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.inner.head().await
    }
    async fn retention_anchor(&self) -> Result<Option<RetentionAnchor>, StoreError> {
        self.inner.retention_anchor().await
    }
    async fn retention_log(&self) -> Result<Vec<RetentionAnchor>, StoreError> {
        self.inner.retention_log().await
    }
    async fn first_seq_received_from(&self, cutoff: DateTime<Utc>) -> Result<i64, StoreError> {
        self.inner.first_seq_received_from(cutoff).await
    }
    async fn remove_before(
        &self,
        anchor: &RetentionAnchor,
        patience: std::time::Duration,
    ) -> Result<i64, StoreError> {
        self.inner.remove_before(anchor, patience).await
    }
}

fn batch(ndjson: &str) -> BatchWrite {
    BatchWrite {
        events: split_events(ndjson.as_bytes(), Framing::Ndjson)
            .unwrap()
            .into_iter()
            .map(|r| prepare(r, &EventKeys::default()))
            .collect(),
        idempotency: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_bad_batch_does_not_fail_its_group() {
    let db = temp_sqlite();
    let store = Arc::new(Poisoned {
        inner: SqliteStore::connect(&db.url).await.unwrap(),
        transactions: AtomicUsize::new(0),
    });
    store.migrate().await.unwrap();
    let (writer, task) = Writer::start(store.clone(), Arc::new(Metrics::new().unwrap()), 60);
    // All four are queued before the writer task runs: one group.
    let (a, b, c, d) = tokio::join!(
        writer.append(batch("{\"id\":\"a\"}\n")),
        writer.append(batch("{\"id\":\"poison\"}\n")),
        writer.append(batch("{\"id\":\"c\"}\n{\"id\":\"a\"}\n")),
        writer.append(batch("{\"id\":\"d\"}\n")),
    );
    assert!(b.is_err(), "the poisoned batch fails");
    for (name, r) in [("a", a), ("c", c), ("d", d)] {
        assert!(
            matches!(r, Ok(WriteOutcome::Stored { .. })),
            "{name}: {r:?}"
        );
    }
    // One failed group transaction, then one transaction per batch.
    assert_eq!(store.transactions.load(Ordering::SeqCst), 5);
    let ids: Vec<String> = store
        .scan(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["a", "c", "d"]);

    // A healthy group is one transaction.
    let (x, y) = tokio::join!(
        writer.append(batch("{\"id\":\"x\"}\n")),
        writer.append(batch("{\"id\":\"y\"}\n")),
    );
    assert!(x.is_ok() && y.is_ok());
    assert_eq!(store.transactions.load(Ordering::SeqCst), 6);
    drop(writer);
    task.await.unwrap();
}
