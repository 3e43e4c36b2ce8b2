//! Storage: [`EventStore`] with a SQLite ([`sqlite`]) and a PostgreSQL
//! ([`postgres`]) implementation, each with its own migrations, chosen by the
//! database URL ([`open`]); and the single writer path ([`writer`]) that groups
//! concurrent batches into one transaction.
//!
//! Both backends append under one lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL
//! `pg_advisory_xact_lock`), read the chain head and what the group's ids and
//! idempotency keys already have, and write what [`plan::plan_group`] decides:
//! replays, `409`s, new rows with `seq = last + 1` and the chain hash, the
//! idempotency records and the new head, all in that transaction.

pub mod limits;
pub mod plan;
pub mod postgres;
pub mod sqlite;
pub mod writer;

use crate::chain::ChainHead;
use crate::prepare::{IndexColumns, PreparedEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A backend failure: the ingest answers `503`, readers `503`/`500`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Refused(String),
    #[error("archive I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The database did not answer within `MESHAUDIT_DB_TIMEOUT_MS` ([`limits`]).
    #[error("the database did not answer {what} within {after_ms} ms")]
    Timeout { what: &'static str, after_ms: u64 },
}

impl StoreError {
    /// The database is unreachable, hung or overloaded (as opposed to
    /// refusing this particular write): retrying the same write elsewhere
    /// in the same moment would only wait again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Timeout { .. } => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL lock_timeout / statement_timeout; SQLite BUSY or
                // LOCKED (extended codes keep the primary one in the low byte).
                code == "55P03"
                    || code == "57014"
                    || code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            }
            StoreError::Database(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }
}

/// The answer to a stored batch (SPEC §6), also what idempotency remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatchAnswer {
    pub accepted: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub deduped: bool,
}

/// `X-Idempotency-Key`, scoped per API key, with the SHA-256 of the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// SHA-256 hex of the API key the request used ("" without one).
    pub scope: String,
    pub key: String,
    pub body_sha256: String,
}

/// One batch for the writer.
#[derive(Debug, Clone)]
pub struct BatchWrite {
    pub events: Vec<PreparedEvent>,
    pub idempotency: Option<IdempotencyKey>,
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored (possibly nothing new); `conflict_ids` are ids already stored
    /// with another hash.
    Stored {
        answer: BatchAnswer,
        conflict_ids: Vec<String>,
    },
    /// The same idempotency key and body within the TTL: the first answer.
    Replay(BatchAnswer),
    /// The same idempotency key with another body: `409`.
    IdempotencyConflict,
}

/// What one append transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// One per batch, in order.
    pub outcomes: Vec<WriteOutcome>,
    /// The chain head once committed.
    pub head: ChainHead,
}

/// How often the writer purges expired idempotency records, in microseconds.
pub const IDEMPOTENCY_PURGE_INTERVAL_US: i64 = 10_000_000;

/// A remembered idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub body_sha256: String,
    pub answer: BatchAnswer,
}

/// A stored event, as the read API and the verifier see it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    /// The collector's clock at commit, RFC 3339 UTC with microseconds.
    pub received_at: String,
    pub verified: Option<bool>,
    pub verify_reason: Option<String>,
    pub event_hash: String,
    pub chain_hash: String,
    /// Canonical JSON of the event as received.
    pub canonical: String,
    /// The query columns as stored (verify re-derives and compares them).
    pub index: IndexColumns,
}

/// `GET /v1/events` filters (SPEC §7).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub user: Option<String>,
    pub method: Option<String>,
    pub path_prefix: Option<String>,
    pub status: Option<i64>,
    /// Microseconds since the epoch, inclusive, on the event `timestamp`.
    pub since_us: Option<i64>,
    /// Microseconds since the epoch, inclusive, on the event `timestamp`.
    pub until_us: Option<i64>,
    /// Exclusive `seq` cursor.
    pub after: Option<i64>,
    pub limit: i64,
    /// Full-text search (`q`), see [`crate::search`].
    pub text: Option<crate::search::query::SearchQuery>,
}

/// A backend's pool, for read-side modules with their own SQL ([`crate::search`]).
pub enum RawPool<'a> {
    Sqlite(&'a sqlx::SqlitePool),
    Postgres(&'a sqlx::PgPool),
}

/// A `retention_log` entry: where verification starts after `retain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionAnchor {
    pub first_kept_seq: i64,
    pub prev_chain_hash: String,
    pub archive_sha256: String,
    pub archive_name: String,
    pub removed: i64,
    pub created_at: String,
}

impl RetentionAnchor {
    /// The chain link just before the first kept row.
    pub fn as_head(&self) -> ChainHead {
        ChainHead {
            seq: self.first_kept_seq - 1,
            chain_hash: self.prev_chain_hash.clone(),
        }
    }
}

/// An event store (SPEC §7 storage).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Which backend, for logs: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// The pool, for search and stats; `None` for stores without SQL.
    fn raw_pool(&self) -> Option<RawPool<'_>> {
        None
    }
    /// Applies the migrations (and creates PostgreSQL partitions ahead).
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Creates partitions ahead of `now` where the backend has them.
    async fn prepare_partitions(&self, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Reachable and answering.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Appends the batches in one durable transaction, in order; one outcome
    /// each, and the head after the commit.
    async fn append_batches(
        &self,
        batches: &[BatchWrite],
        now: DateTime<Utc>,
        idempotency_ttl_secs: i64,
    ) -> Result<Appended, StoreError>;
    /// A live idempotency record, if any (read-only pre-check).
    async fn idempotency_lookup(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Events matching the filters, ascending by `seq`.
    async fn query(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    /// One event by id.
    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError>;
    /// Rows with `seq > after`, ascending, at most `limit` (for verify and retain).
    async fn scan(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError>;
    /// The recorded head (seq 0 and zeros when empty).
    async fn head(&self) -> Result<ChainHead, StoreError>;
    /// The newest retention anchor, if `retain` ever ran.
    async fn retention_anchor(&self) -> Result<Option<RetentionAnchor>, StoreError>;
    /// Every retention anchor, oldest first.
    async fn retention_log(&self) -> Result<Vec<RetentionAnchor>, StoreError>;
    /// The first `seq` received at or after `cutoff` (head + 1 when none).
    async fn first_seq_received_from(&self, cutoff: DateTime<Utc>) -> Result<i64, StoreError>;
    /// Records `anchor`, then removes every row with `seq < anchor.first_kept_seq`
    /// in bounded chunks ([`EventStore::finish_removal`]); returns how many rows were removed.
    /// Each step is tried again while the database is busy, for up to `patience`.
    async fn remove_before(
        &self,
        anchor: &RetentionAnchor,
        patience: std::time::Duration,
    ) -> Result<i64, StoreError> {
        limits::retry_unavailable(patience, "recording the retention anchor", || async {
            // A try that timed out on our side may still have committed.
            if self.retention_anchor().await?.is_some_and(|a| {
                a.first_kept_seq == anchor.first_kept_seq
                    && a.archive_sha256 == anchor.archive_sha256
            }) {
                return Ok(());
            }
            self.record_anchor(anchor).await
        })
        .await?;
        self.finish_removal(anchor.first_kept_seq, patience).await
    }
    /// Appends `anchor` to `retention_log` in a short transaction under the
    /// append lock; refused unless it lies beyond every earlier anchor. Rows
    /// below it may be deleted from then on.
    async fn record_anchor(&self, _anchor: &RetentionAnchor) -> Result<(), StoreError> {
        Err(StoreError::Refused(
            "this store cannot record retention anchors".to_owned(),
        ))
    }
    /// Deletes at most `limit` rows with `seq < first_kept_seq` (already below
    /// a recorded anchor), the highest first, in one short transaction that
    /// does not take the append lock; returns how many. Highest first, so
    /// what an interrupted run leaves is a prefix that still chains from the
    /// previous anchor (or genesis) and verifies.
    async fn delete_chunk_below(
        &self,
        _first_kept_seq: i64,
        _limit: i64,
    ) -> Result<i64, StoreError> {
        Err(StoreError::Refused(
            "this store cannot remove rows".to_owned(),
        ))
    }
    /// Deletes every row below `first_kept_seq` chunk by chunk, pausing
    /// between chunks so appends keep their turn, and trying a chunk again
    /// while the database is busy, for up to `patience`; an interrupted run
    /// is finished by the next `retain`.
    async fn finish_removal(
        &self,
        first_kept_seq: i64,
        patience: std::time::Duration,
    ) -> Result<i64, StoreError> {
        let mut removed = 0;
        loop {
            let n =
                limits::retry_unavailable(patience, "removing a chunk of retained rows", || {
                    self.delete_chunk_below(first_kept_seq, limits::RETAIN_CHUNK_ROWS)
                })
                .await?;
            removed += n;
            if n < limits::RETAIN_CHUNK_ROWS {
                return Ok(removed);
            }
            tokio::time::sleep(limits::RETAIN_CHUNK_PAUSE).await;
        }
    }
    /// How long one append may take before it is answered `503`.
    fn op_timeout(&self) -> std::time::Duration {
        limits::DEFAULT_DB_TIMEOUT
    }
}

pub type DynStore = Arc<dyn EventStore>;

/// Opens the store named by `url` (`sqlite:` or `postgres://`), without migrating.
pub async fn open(url: &str) -> Result<DynStore, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Refused(
            "DATABASE_URL must start with sqlite: or postgres://".to_owned(),
        ))
    }
}

/// RFC 3339 UTC with six fractional digits and `+00:00`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Per-batch planning shared by the backends: given what the database says
/// about each id, decide duplicate / conflict / new, in body order.
#[derive(Debug, Default)]
pub struct BatchPlan {
    pub answer: BatchAnswer,
    pub conflict_ids: Vec<String>,
    /// Indexes into the batch's events that are new, in body order.
    pub new_events: Vec<usize>,
}

impl BatchPlan {
    /// `known(id)` gives the stored event hash of an id (from the database,
    /// including rows inserted earlier in this transaction).
    pub fn decide(events: &[PreparedEvent], known: impl Fn(&str) -> Option<String>) -> Self {
        let mut plan = BatchPlan::default();
        let mut in_batch: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            let existing = in_batch
                .get(ev.id.as_str())
                .map(|h| (*h).to_owned())
                .or_else(|| known(&ev.id));
            match existing {
                Some(h) if h == ev.event_hash => plan.answer.duplicates += 1,
                Some(_) => {
                    plan.answer.conflicts += 1;
                    plan.conflict_ids.push(ev.id.clone());
                }
                None => {
                    plan.answer.accepted += 1;
                    plan.new_events.push(i);
                    in_batch.insert(&ev.id, &ev.event_hash);
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::body::RawEvent;
    use crate::prepare::prepare;
    use meshaudit_event::integrity::EventKeys;
    use meshaudit_event::value::{parse, Value};

    fn ev(json: &str) -> PreparedEvent {
        match parse(json.as_bytes()).unwrap() {
            Value::Object(event) => prepare(RawEvent { line: 1, event }, &EventKeys::default()),
            _ => unreachable!(),
        }
    }

    #[test]
    fn plan_counts_duplicates_and_conflicts() {
        let events = vec![
            ev(r#"{"id":"a","n":1}"#),
            ev(r#"{"id":"a","n":1}"#),
            ev(r#"{"id":"a","n":2}"#),
            ev(r#"{"id":"old","n":1}"#),
            ev(r#"{"id":"clash","n":1}"#),
        ];
        let old_hash = events[3].event_hash.clone();
        let plan = BatchPlan::decide(&events, |id| match id {
            "old" => Some(old_hash.clone()),
            "clash" => Some("other".to_owned()),
            _ => None,
        });
        assert_eq!(
            plan.answer,
            BatchAnswer {
                accepted: 1,
                duplicates: 2,
                conflicts: 2,
                deduped: false
            }
        );
        assert_eq!(plan.new_events, vec![0]);
        assert_eq!(plan.conflict_ids, vec!["a".to_owned(), "clash".to_owned()]);
    }
}
