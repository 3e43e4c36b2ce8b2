//! The PostgreSQL [`EventStore`] for production. Every pooled connection sets
//! `synchronous_commit = on`; connecting refuses a server with `fsync = off`.
//! Appends take `pg_advisory_xact_lock(APPEND_LOCK)` first, so several
//! collector replicas on one database keep one total order of `seq` and one
//! chain; `seq` never comes from a SEQUENCE (a rolled-back transaction would
//! leave a gap). Events are partitioned by month of `received_at`, partitions
//! created ahead ([`EventStore::prepare_partitions`]), plus a DEFAULT one.

use super::limits::{bounded, DbTimeouts};
use super::plan::{lookups, plan_group};
use super::{
    format_time, Appended, BatchAnswer, BatchWrite, EventQuery, EventStore, IdempotencyRecord,
    RetentionAnchor, StoreError, StoredEvent, IDEMPOTENCY_PURGE_INTERVAL_US,
};
use crate::chain::ChainHead;
use crate::prepare::IndexColumns;
use crate::prepare::PreparedEvent;
use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, QueryBuilder, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The advisory lock every append (and partition creation) holds: "mesh" in ASCII.
pub const APPEND_LOCK: i64 = 0x6d65_7368;

/// Months of partitions kept ready beyond the current one.
pub const PARTITIONS_AHEAD: u32 = 2;

const EVENT_COLUMNS: &str =
    "seq, id, received_at, verified, verify_reason, event_hash, chain_hash, canonical, \
     tenant, namespace, pod, user_id, method, path, status, event_time_us";

pub struct PgStore {
    pool: PgPool,
    timeouts: DbTimeouts,
    /// When expired idempotency records were last purged (µs since the epoch).
    last_purge_us: AtomicI64,
}

impl PgStore {
    /// Connects with the timeouts of `MESHAUDIT_DB_TIMEOUT_MS` ([`DbTimeouts`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, DbTimeouts::from_env()?).await
    }

    /// Bounded waits: taking a connection; each statement and lock wait of
    /// the append and retain transactions ([`transaction_settings`]); and the
    /// server ends a transaction left idle (a collector that vanished
    /// mid-append would otherwise hold the append lock until TCP notices).
    pub async fn connect_with(url: &str, timeouts: DbTimeouts) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let idle_tx_ms = (timeouts.op * 4)
            .max(Duration::from_secs(10))
            .as_millis()
            .to_string();
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(timeouts.op)
            .after_connect(move |conn, _meta| {
                let idle_tx_ms = idle_tx_ms.clone();
                Box::pin(async move {
                    // Not statement_timeout for the session: migrations on a
                    // large store (index builds, backfills) take longer.
                    sqlx::query(
                        "SELECT set_config('synchronous_commit', 'on', false), \
                                set_config('idle_in_transaction_session_timeout', $1, false)",
                    )
                    .bind(&idle_tx_ms)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await?;
        if fsync.trim() != "on" {
            return Err(StoreError::Refused(
                "the PostgreSQL server runs with fsync = off: commits would not be durable; refusing to start".to_owned(),
            ));
        }
        Ok(Self {
            pool,
            timeouts,
            last_purge_us: AtomicI64::new(0),
        })
    }

    /// The pool, for tests that play the attacker.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates one monthly partition (with its TRUNCATE trigger) unless it exists.
    async fn create_partition(
        &self,
        name: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            tx.execute(
                format!(
                    "CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')"
                )
                .as_str(),
            )
            .await?;
            tx.execute(
                format!(
                    "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {name} FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse()"
                )
                .as_str(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Per transaction (`SET LOCAL`): durable commits and the timeouts. Behind a
/// transaction-pooling pgbouncer each transaction may run on another server
/// connection, where what `after_connect` set for the session does not hold.
async fn transaction_settings(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    timeouts: &DbTimeouts,
) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'on', true), \
                set_config('statement_timeout', $1, true), \
                set_config('lock_timeout', $1, true)",
    )
    .bind(timeouts.op_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `(name, from, to)` of the monthly partition holding `month`.
pub fn partition_for(year: i32, month: u32) -> Option<(String, NaiveDate, NaiveDate)> {
    let from = NaiveDate::from_ymd_opt(year, month, 1)?;
    let to = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some((format!("events_p{year:04}_{month:02}"), from, to))
}

fn row_to_event(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    let received_at: DateTime<Utc> = row.try_get("received_at")?;
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        received_at: format_time(received_at),
        verified: row.try_get("verified")?,
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
impl EventStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn raw_pool(&self) -> Option<super::RawPool<'_>> {
        Some(super::RawPool::Postgres(&self.pool))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx's migrator holds a PostgreSQL advisory lock while it runs, so
        // replicas starting together migrate once.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn prepare_partitions(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (mut year, mut month) = (now.year(), now.month());
        for _ in 0..=PARTITIONS_AHEAD {
            if let Some((name, from, to)) = partition_for(year, month) {
                // One transaction per month: a month that cannot be created
                // (the DEFAULT partition already holds rows of it) is logged
                // and its rows keep going to DEFAULT; the others still get made.
                if let Err(e) = self.create_partition(&name, from, to).await {
                    tracing::warn!(partition = %name, error = %e, "could not create the partition; its rows go to events_default");
                }
            }
            if month == 12 {
                year += 1;
                month = 1;
            } else {
                month += 1;
            }
        }
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
        let expires_us = now_us.saturating_add(idempotency_ttl_secs.saturating_mul(1_000_000));
        let mut tx = self.pool.begin().await?;
        transaction_settings(&mut tx, &self.timeouts).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        // After the lock, under READ COMMITTED, every statement sees what the
        // previous holder committed: the head, the ids, the idempotency keys.
        let head = sqlx::query("SELECT seq, chain_hash FROM chain_head WHERE singleton = 1")
            .fetch_one(&mut *tx)
            .await?;
        let head = ChainHead {
            seq: head.try_get("seq")?,
            chain_hash: head.try_get("chain_hash")?,
        };
        let (ids, keys) = lookups(batches);
        let known: HashMap<String, String> =
            sqlx::query("SELECT id, event_hash FROM event_ids WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("event_hash")?)))
                .collect::<Result<_, sqlx::Error>>()?;
        let mut live = HashMap::new();
        if !keys.is_empty() {
            let (scopes, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
            let rows = sqlx::query(
                "SELECT scope, key, body_sha256, answer FROM idempotency \
                 WHERE expires_us > $1 AND (scope, key) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
            )
            .bind(now_us)
            .bind(&scopes)
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
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
        if !plan.rows.is_empty() {
            // One statement whatever the count (arrays, so its text and plan
            // are the same every time): the rows, and their ids into the registry.
            let rows = &plan.rows;
            let text = |f: fn(&PreparedEvent) -> Option<&str>| -> Vec<Option<&str>> {
                rows.iter().map(|r| f(r.event)).collect()
            };
            sqlx::query(
                "WITH inserted AS (\
                   INSERT INTO events (seq, id, received_at, event_hash, chain_hash, verified, verify_reason, canonical, \
                                       tenant, namespace, pod, user_id, method, path, status, event_time_us) \
                   SELECT s, i, $3, h, c, v, vr, cn, t, ns, p, u, m, pa, st, et \
                   FROM unnest($1::bigint[], $2::text[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[], \
                               $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[]) \
                        AS x(s, i, h, c, v, vr, cn, t, ns, p, u, m, pa, st, et) \
                   RETURNING id, event_hash, seq) \
                 INSERT INTO event_ids (id, event_hash, seq) SELECT id, event_hash, seq FROM inserted",
            )
            .bind(rows.iter().map(|r| r.seq).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.event.id.as_str()).collect::<Vec<&str>>())
            .bind(now)
            .bind(rows.iter().map(|r| r.event.event_hash.as_str()).collect::<Vec<&str>>())
            .bind(rows.iter().map(|r| r.chain_hash.as_str()).collect::<Vec<&str>>())
            .bind(rows.iter().map(|r| r.event.verification.verified()).collect::<Vec<Option<bool>>>())
            .bind(rows.iter().map(|r| r.event.verification.reason()).collect::<Vec<Option<&str>>>())
            .bind(rows.iter().map(|r| String::from_utf8_lossy(&r.event.canonical).into_owned()).collect::<Vec<String>>())
            .bind(text(|e| e.index.tenant.as_deref()))
            .bind(text(|e| e.index.namespace.as_deref()))
            .bind(text(|e| e.index.pod.as_deref()))
            .bind(text(|e| e.index.user.as_deref()))
            .bind(text(|e| e.index.method.as_deref()))
            .bind(text(|e| e.index.path.as_deref()))
            .bind(rows.iter().map(|r| r.event.index.status).collect::<Vec<Option<i64>>>())
            .bind(rows.iter().map(|r| r.event.index.event_time_us).collect::<Vec<Option<i64>>>())
            .execute(&mut *tx)
            .await?;
        }
        // SPEC §10: signed batches' records and each new row's link to its batch.
        crate::keys::postgres::link_batches(&mut tx, &plan.rows, &super::format_time(now)).await?;
        if !plan.idempotency.is_empty() {
            let w = &plan.idempotency;
            sqlx::query(
                "INSERT INTO idempotency (scope, key, body_sha256, answer, expires_us) \
                 SELECT s, k, b, a, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(s, k, b, a) \
                 ON CONFLICT (scope, key) DO UPDATE SET body_sha256 = excluded.body_sha256, answer = excluded.answer, expires_us = excluded.expires_us",
            )
            .bind(w.iter().map(|w| w.scope.as_str()).collect::<Vec<&str>>())
            .bind(w.iter().map(|w| w.key.as_str()).collect::<Vec<&str>>())
            .bind(w.iter().map(|w| w.body_sha256.as_str()).collect::<Vec<&str>>())
            .bind(w.iter().map(|w| serde_json::to_string(&w.answer).unwrap_or_default()).collect::<Vec<String>>())
            .bind(expires_us)
            .execute(&mut *tx)
            .await?;
        }
        // SPEC §9: the Merkle tree grows with the rows, in this transaction (under the lock).
        crate::log::db::grow_postgres(&mut tx, &plan.rows).await?;
        sqlx::query("UPDATE chain_head SET seq = $1, chain_hash = $2 WHERE singleton = 1")
            .bind(plan.head.seq)
            .bind(&plan.head.chain_hash)
            .execute(&mut *tx)
            .await?;
        let last_purge = self.last_purge_us.load(Ordering::Relaxed);
        if now_us - last_purge >= IDEMPOTENCY_PURGE_INTERVAL_US || now_us < last_purge {
            sqlx::query("DELETE FROM idempotency WHERE expires_us <= $1")
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
            "SELECT body_sha256, answer FROM idempotency WHERE scope = $1 AND key = $2 AND expires_us > $3",
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
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE true"));
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
            qb.push(" AND starts_with(path, ")
                .push_bind(p.clone())
                .push(")");
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
        crate::search::push_postgres_match(&mut qb, q);
        qb.push(" ORDER BY seq ASC LIMIT ").push_bind(q.limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row_to_event).collect::<Result<_, _>>()?)
    }

    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 ORDER BY seq LIMIT 1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(row_to_event).transpose()?)
    }

    async fn scan(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq ASC LIMIT $2"
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
            sqlx::query_scalar("SELECT min(seq) FROM events WHERE received_at >= $1")
                .bind(cutoff)
                .fetch_one(&self.pool)
                .await?;
        match seq {
            Some(s) => Ok(s),
            None => Ok(self.head().await?.seq + 1),
        }
    }

    async fn record_anchor(&self, anchor: &RetentionAnchor) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        transaction_settings(&mut tx, &self.timeouts).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        let newest: i64 = sqlx::query_scalar(
            "SELECT COALESCE(max(first_kept_seq), 0)::bigint FROM retention_log",
        )
        .fetch_one(&mut *tx)
        .await?;
        if anchor.first_kept_seq <= newest {
            return Err(StoreError::Refused(format!(
                "another retain recorded an anchor at seq {newest} meanwhile; run retain again"
            )));
        }
        sqlx::query(
            "INSERT INTO retention_log (first_kept_seq, prev_chain_hash, archive_sha256, archive_name, removed, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
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
        // No append lock: these rows are below the anchor, appends write at the head.
        let mut tx = self.pool.begin().await?;
        transaction_settings(&mut tx, &self.timeouts).await?;
        let removed = sqlx::query(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < $1 ORDER BY seq DESC LIMIT $2)",
        )
        .bind(first_kept_seq)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(removed as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_roll_over_the_year() {
        let (name, from, to) = partition_for(2026, 12).unwrap();
        assert_eq!(name, "events_p2026_12");
        assert_eq!(from.to_string(), "2026-12-01");
        assert_eq!(to.to_string(), "2027-01-01");
    }
}
