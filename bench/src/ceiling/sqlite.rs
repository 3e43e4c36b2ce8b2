//! SQLite ceiling: WAL, `synchronous = FULL` (the collector's settings), one transaction per
//! batch with a multi-row `INSERT` into `events` and `event_ids` and the `chain_head` update.

use super::{migration_scripts, now_us, CeilingError, CeilingReport, CeilingRun, Mode};
use crate::summary::Latency;
use meshaudit_event::schema::format_timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
use std::path::Path;
use std::time::Instant;

/// Creates a fresh database at `db` with the collector's SQLite migrations and writes the rows.
pub async fn run(
    db: &Path,
    migrations: &Path,
    mut run: CeilingRun,
) -> Result<CeilingReport, CeilingError> {
    if run.mode != Mode::Insert {
        return Err(CeilingError::Invalid(
            "SQLite has no COPY; use --mode insert".into(),
        ));
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await?;
    for script in migration_scripts(migrations)? {
        sqlx::raw_sql(&script).execute(&mut conn).await?;
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut seq = 0i64;
    while (seq as u64) < run.rows {
        let n = run.batch_rows.min((run.rows - seq as u64) as usize);
        let t0 = Instant::now();
        let received_us = now_us();
        let received_at = format_timestamp(received_us);
        let rows: Vec<_> = (1..=n as i64)
            .map(|k| {
                let s = seq + k;
                let id = run.ids[(s - 1) as usize].clone();
                run.source.row(s, &id, received_us, &received_at)
            })
            .collect();
        let mut tx = conn.begin().await?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO events (seq, id, received_at, received_us, event_hash, chain_hash, verified, verify_reason, canonical, tenant, namespace, pod, user_id, method, path, status, event_time_us) ",
        );
        q.push_values(&rows, |mut b, r| {
            b.push_bind(r.seq)
                .push_bind(&r.id)
                .push_bind(&r.received_at)
                .push_bind(r.received_us)
                .push_bind(&r.event_hash)
                .push_bind(&r.chain_hash)
                .push_bind(r.verified)
                .push_bind(&r.verify_reason)
                .push_bind(&r.canonical)
                .push_bind(&r.tenant)
                .push_bind(&r.namespace)
                .push_bind(&r.pod)
                .push_bind(&r.user_id)
                .push_bind(&r.method)
                .push_bind(&r.path)
                .push_bind(r.status)
                .push_bind(r.event_time_us);
        });
        q.build().execute(&mut *tx).await?;
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO event_ids (id, event_hash, seq) ");
        q.push_values(&rows, |mut b, r| {
            b.push_bind(&r.id).push_bind(&r.event_hash).push_bind(r.seq);
        });
        q.build().execute(&mut *tx).await?;
        if let Some(last) = rows.last() {
            sqlx::query("UPDATE chain_head SET seq = ?, chain_hash = ? WHERE singleton = 1")
                .bind(last.seq)
                .bind(&last.chain_hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        seq += n as i64;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(CeilingReport {
        backend: "sqlite",
        mode: run.mode,
        rows: seq as u64,
        batch_rows: run.batch_rows,
        elapsed_s,
        rows_per_s: seq as f64 / elapsed_s,
        batch: Latency::of(&mut latencies),
    })
}
