//! The SQLite [`EventStore`]: the embedded default (`sqlite://PATH`, created if
//! missing), WAL with `synchronous = FULL` so a commit is on disk before the
//! `200`. Appends run under `BEGIN IMMEDIATE`, which serialises writers even
//! across processes sharing the file.

use super::limits::{bounded, DbTimeouts};
use super::plan::{lookups, plan_group};
use super::{
    format_time, Appended, BatchAnswer, BatchWrite, EventQuery, EventStore, IdempotencyRecord,
    RetentionAnchor, StoreError, StoredEvent, IDEMPOTENCY_PURGE_INTERVAL_US,
};
use crate::chain::ChainHead;
use crate::prepare::IndexColumns;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row statement (17 binds each, far below SQLite's limit).
const ROWS_PER_STATEMENT: usize = 200;

const EVENT_COLUMNS: &str =
    "seq, id, received_at, verified, verify_reason, event_hash, chain_hash, canonical, \
     tenant, namespace, pod, user_id, method, path, status, event_time_us";

pub struct SqliteStore {
    pool: SqlitePool,
    timeouts: DbTimeouts,
    /// When expired idempotency records were last purged (µs since the epoch).
    last_purge_us: AtomicI64,
}

impl SqliteStore {
    /// Opens with the timeouts of `MESHAUDIT_DB_TIMEOUT_MS` ([`DbTimeouts`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, DbTimeouts::from_env()?).await
    }

    /// The busy timeout (how long a writer waits for another's lock, e.g.
    /// `retain` in another process) stays below the filter's 5 s timeout, so
    /// a locked database answers `503` instead of a hung request.
    pub async fn connect_with(url: &str, timeouts: DbTimeouts) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(timeouts.op);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(timeouts.op)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            timeouts,
            last_purge_us: AtomicI64::new(0),
        })
    }

    /// The pool, for tests that play the attacker.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn row_to_event(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        received_at: row.try_get("received_at")?,
        verified: row.try_get::<Option<i64>, _>("verified")?.map(|v| v != 0),
        verify_reason: row.try_get("verify_reason")?,
        event_hash: row.try_get("event_hash")?,
        chain_hash: row.try_get("chain_hash")?,
        canonical: row.try_get("canonical")?,
        index: IndexColumns {
            tenant: row.try_get("tenant")?,
            namespace: row.try_get("namespace")?,
            pod: row.try_get("pod")?,
            user: row.try_get("user_id")?,
            method: row.try_get("method")?,
            path: row.try_get("path")?,
            status: row.try_get("status")?,
            event_time_us: row.try_get("event_time_us")?,
        },
    })
}

fn answer_from_json(s: &str) -> BatchAnswer {
    serde_json::from_str(s).unwrap_or_default()
}

#[async_trait]
impl EventStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn raw_pool(&self) -> Option<super::RawPool<'_>> {
        Some(super::RawPool::Sqlite(&self.pool))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn prepare_partitions(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded(self.timeouts.op, "a ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    fn op_timeout(&self) -> Duration {
        self.timeouts.op
    }

    async fn append_batches(
        &self,
        batches: &[BatchWrite],
        now: DateTime<Utc>,
        idempotency_ttl_secs: i64,
    ) -> Result<Appended, StoreError> {
        let now_us = now.timestamp_micros();
        let received_at = format_time(now);
        let expires_us = now_us.saturating_add(idempotency_ttl_secs.saturating_mul(1_000_000));
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head = sqlx::query("SELECT seq, chain_hash FROM chain_head WHERE singleton = 1")
            .fetch_one(&mut *tx)
            .await?;
        let head = ChainHead {
            seq: head.try_get("seq")?,
            chain_hash: head.try_get("chain_hash")?,
        };
        let (ids, keys) = lookups(batches);
        let mut known = HashMap::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT id, event_hash FROM event_ids WHERE id IN (");
            let mut list = qb.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *tx).await? {
                known.insert(row.try_get("id")?, row.try_get("event_hash")?);
            }
        }
        let mut live = HashMap::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT scope, key, body_sha256, answer FROM idempotency WHERE expires_us > ",
            );
            qb.push_bind(now_us).push(" AND (scope, key) IN (");
            for (i, (scope, key)) in chunk.iter().enumerate() {
                qb.push(if i == 0 { "(" } else { ", (" });
                qb.push_bind(*scope).push(", ").push_bind(*key).push(")");
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *tx).await? {
                live.insert(
                    (row.try_get("scope")?, row.try_get("key")?),
                    IdempotencyRecord {
                        body_sha256: row.try_get("body_sha256")?,
                        answer: answer_from_json(row.try_get("answer")?),
                    },
                );
            }
        }
        let plan = plan_group(batches, head, &known, &live);
        for chunk in plan.rows.chunks(ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO events (seq, id, received_at, received_us, event_hash, chain_hash, verified, verify_reason, canonical, tenant, namespace, pod, user_id, method, path, status, event_time_us) ",
            );
            qb.push_values(chunk, |mut b, row| {
                let ev = row.event;
                b.push_bind(row.seq)
                    .push_bind(ev.id.as_str())
                    .push_bind(received_at.as_str())
                    .push_bind(now_us)
                    .push_bind(ev.event_hash.as_str())
                    .push_bind(row.chain_hash.as_str())
                    .push_bind(ev.verification.verified().map(i64::from))
                    .push_bind(ev.verification.reason())
                    .push_bind(String::from_utf8_lossy(&ev.canonical).into_owned())
                    .push_bind(ev.index.tenant.as_deref())
                    .push_bind(ev.index.namespace.as_deref())
                    .push_bind(ev.index.pod.as_deref())
                    .push_bind(ev.index.user.as_deref())
                    .push_bind(ev.index.method.as_deref())
                    .push_bind(ev.index.path.as_deref())
                    .push_bind(ev.index.status)
                    .push_bind(ev.index.event_time_us);
            });
            qb.build().execute(&mut *tx).await?;
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO event_ids (id, event_hash, seq) ");
            qb.push_values(chunk, |mut b, row| {
                b.push_bind(row.event.id.as_str())
                    .push_bind(row.event.event_hash.as_str())
                    .push_bind(row.seq);
            });
            qb.build().execute(&mut *tx).await?;
        }
        // SPEC §10: signed batches' records and each new row's link to its batch.
        crate::keys::sqlite::link_batches(&mut tx, &plan.rows, &received_at).await?;
        for chunk in plan.idempotency.chunks(ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO idempotency (scope, key, body_sha256, answer, expires_us) ",
            );
            qb.push_values(chunk, |mut b, w| {
                b.push_bind(w.scope.as_str())
                    .push_bind(w.key.as_str())
                    .push_bind(w.body_sha256.as_str())
                    .push_bind(serde_json::to_string(&w.answer).unwrap_or_default())
                    .push_bind(expires_us);
            });
            qb.push(
                " ON CONFLICT (scope, key) DO UPDATE SET body_sha256 = excluded.body_sha256, answer = excluded.answer, expires_us = excluded.expires_us",
            );
            qb.build().execute(&mut *tx).await?;
        }
        // SPEC §9: the Merkle tree grows with the rows, in this transaction.
        crate::log::db::grow_sqlite(&mut tx, &plan.rows).await?;
        sqlx::query("UPDATE chain_head SET seq = ?, chain_hash = ? WHERE singleton = 1")
            .bind(plan.head.seq)
            .bind(&plan.head.chain_hash)
            .execute(&mut *tx)
            .await?;
        let last_purge = self.last_purge_us.load(Ordering::Relaxed);
        if now_us - last_purge >= IDEMPOTENCY_PURGE_INTERVAL_US || now_us < last_purge {
            sqlx::query("DELETE FROM idempotency WHERE expires_us <= ?")
                .bind(now_us)
                .execute(&mut *tx)
                .await?;
            self.last_purge_us.store(now_us, Ordering::Relaxed);
        }
        tx.commit().await?;
        Ok(Appended {
            outcomes: plan.outcomes,
            head: plan.head,
        })
    }

    async fn idempotency_lookup(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        // On the ingest path: bounded like the append it precedes.
        let row = bounded(self.timeouts.op, "an idempotency lookup", async {
            Ok(sqlx::query(
            "SELECT body_sha256, answer FROM idempotency WHERE scope = ? AND key = ? AND expires_us > ?",
        )
        .bind(scope)
        .bind(key)
        .bind(now.timestamp_micros())
        .fetch_optional(&self.pool)
            .await?)
        })
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(IdempotencyRecord {
                body_sha256: row.try_get("body_sha256")?,
                answer: answer_from_json(row.try_get("answer")?),
            })),
        }
    }

    async fn query(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1"));
        for (column, value) in [
            ("tenant", &q.tenant),
            ("namespace", &q.namespace),
            ("pod", &q.pod),
            ("user_id", &q.user),
        ] {
            if let Some(v) = value {
                qb.push(format_args!(" AND {column} = "))
                    .push_bind(v.clone());
            }
        }
        if let Some(m) = &q.method {
            qb.push(" AND method = ").push_bind(m.to_ascii_uppercase());
        }
        if let Some(p) = &q.path_prefix {
            qb.push(" AND substr(path, 1, ")
                .push_bind(p.chars().count() as i64)
                .push(") = ")
                .push_bind(p.clone());
        }
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s);
        }
        if let Some(s) = q.since_us {
            qb.push(" AND event_time_us >= ").push_bind(s);
        }
        if let Some(u) = q.until_us {
            qb.push(" AND event_time_us <= ").push_bind(u);
        }
        if let Some(a) = q.after {
            qb.push(" AND seq > ").push_bind(a);
        }
        crate::search::push_sqlite_match(&mut qb, q);
        qb.push(" ORDER BY seq ASC LIMIT ").push_bind(q.limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row_to_event).collect::<Result<_, _>>()?)
    }

    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = ? ORDER BY seq LIMIT 1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(row_to_event).transpose()?)
    }

    async fn scan(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq ASC LIMIT ?"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_to_event).collect::<Result<_, _>>()?)
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        let row = sqlx::query("SELECT seq, chain_hash FROM chain_head WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(ChainHead {
            seq: row.try_get("seq")?,
            chain_hash: row.try_get("chain_hash")?,
        })
    }

    async fn retention_anchor(&self) -> Result<Option<RetentionAnchor>, StoreError> {
        Ok(self.retention_log().await?.pop())
    }

    async fn retention_log(&self) -> Result<Vec<RetentionAnchor>, StoreError> {
        let rows = sqlx::query(
            "SELECT first_kept_seq, prev_chain_hash, archive_sha256, archive_name, removed, created_at FROM retention_log ORDER BY first_kept_seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RetentionAnchor {
                    first_kept_seq: r.try_get("first_kept_seq")?,
                    prev_chain_hash: r.try_get("prev_chain_hash")?,
                    archive_sha256: r.try_get("archive_sha256")?,
                    archive_name: r.try_get("archive_name")?,
                    removed: r.try_get("removed")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn first_seq_received_from(&self, cutoff: DateTime<Utc>) -> Result<i64, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM events WHERE received_us >= ?")
                .bind(cutoff.timestamp_micros())
                .fetch_one(&self.pool)
                .await?;
        match seq {
            Some(s) => Ok(s),
            None => Ok(self.head().await?.seq + 1),
        }
    }

    async fn record_anchor(&self, anchor: &RetentionAnchor) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let newest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(first_kept_seq), 0) FROM retention_log")
                .fetch_one(&mut *tx)
                .await?;
        if anchor.first_kept_seq <= newest {
            return Err(StoreError::Refused(format!(
                "another retain recorded an anchor at seq {newest} meanwhile; run retain again"
            )));
        }
        sqlx::query(
            "INSERT INTO retention_log (first_kept_seq, prev_chain_hash, archive_sha256, archive_name, removed, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(anchor.first_kept_seq)
        .bind(&anchor.prev_chain_hash)
        .bind(&anchor.archive_sha256)
        .bind(&anchor.archive_name)
        .bind(anchor.removed)
        .bind(&anchor.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_chunk_below(&self, first_kept_seq: i64, limit: i64) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let removed = sqlx::query(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ? ORDER BY seq DESC LIMIT ?)",
        )
        .bind(first_kept_seq)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        crate::search::forget_removed_sqlite(&mut tx, first_kept_seq).await?;
        tx.commit().await?;
        Ok(removed as i64)
    }
}
