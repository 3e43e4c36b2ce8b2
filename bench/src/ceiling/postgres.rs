//! PostgreSQL ceiling: a scratch database with the collector's PostgreSQL migrations and the
//! current month's partition (as the collector creates ahead), `synchronous_commit = on`; one
//! transaction per batch writing `events` and `event_ids` with a multi-row `INSERT` or with
//! `COPY … FROM STDIN` (text format), and the `chain_head` update.

use super::{migration_scripts, now_us, CeilingError, CeilingReport, CeilingRun, Mode};
use crate::rows::EventRow;
use crate::summary::Latency;
use meshaudit_event::schema::format_timestamp;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Postgres, QueryBuilder};
use std::path::Path;
use std::time::Instant;

/// Appends `v` to a COPY text-format line (backslash escapes; `\N` for NULL).
pub fn copy_field(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn copy_events(rows: &[EventRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 1200);
    for r in rows {
        let seq = r.seq.to_string();
        let verified = r.verified.map(|v| if v { "t" } else { "f" });
        let status = r.status.map(|s| s.to_string());
        let time = r.event_time_us.map(|s| s.to_string());
        let fields: [Option<&str>; 16] = [
            Some(&seq),
            Some(&r.id),
            Some(&r.received_at),
            Some(&r.event_hash),
            Some(&r.chain_hash),
            verified,
            r.verify_reason.as_deref(),
            Some(&r.canonical),
            r.tenant.as_deref(),
            r.namespace.as_deref(),
            r.pod.as_deref(),
            r.user_id.as_deref(),
            r.method.as_deref(),
            r.path.as_deref(),
            status.as_deref(),
            time.as_deref(),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            copy_field(&mut out, *f);
        }
        out.push('\n');
    }
    out
}

fn copy_ids(rows: &[EventRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 120);
    for r in rows {
        out.push_str(&format!("{}\t{}\t{}\n", r.id, r.event_hash, r.seq));
    }
    out
}

const EVENT_COLUMNS: &str = "seq, id, received_at, event_hash, chain_hash, verified, verify_reason, canonical, tenant, namespace, pod, user_id, method, path, status, event_time_us";

/// The partition for the month of `now_us`, as the collector creates it ahead.
fn month_partition_sql(now_us: i64) -> String {
    let ts = format_timestamp(now_us);
    let (y, m) = (&ts[0..4], &ts[5..7]);
    let (yi, mi): (i32, i32) = (y.parse().unwrap_or(2026), m.parse().unwrap_or(1));
    let (ny, nm) = if mi == 12 { (yi + 1, 1) } else { (yi, mi + 1) };
    format!(
        "CREATE TABLE IF NOT EXISTS events_bench_{y}_{m} PARTITION OF events \
         FOR VALUES FROM ('{y}-{m}-01T00:00:00+00:00') TO ('{ny:04}-{nm:02}-01T00:00:00+00:00')"
    )
}

/// Writes the rows into the (fresh, empty) database at `url`, after applying `migrations`.
pub async fn run(
    url: &str,
    migrations: &Path,
    mut run: CeilingRun,
) -> Result<CeilingReport, CeilingError> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql("SET synchronous_commit = on")
        .execute(&mut conn)
        .await?;
    for script in migration_scripts(migrations)? {
        sqlx::raw_sql(&script).execute(&mut conn).await?;
    }
    sqlx::raw_sql(&month_partition_sql(now_us()))
        .execute(&mut conn)
        .await?;
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
        match run.mode {
            Mode::Insert => {
                let mut q: QueryBuilder<Postgres> =
                    QueryBuilder::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
                q.push_values(&rows, |mut b, r| {
                    b.push_bind(r.seq)
                        .push_bind(&r.id)
                        .push_bind(&r.received_at)
                        .push_unseparated("::timestamptz")
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
                let mut q: QueryBuilder<Postgres> =
                    QueryBuilder::new("INSERT INTO event_ids (id, event_hash, seq) ");
                q.push_values(&rows, |mut b, r| {
                    b.push_bind(&r.id).push_bind(&r.event_hash).push_bind(r.seq);
                });
                q.build().execute(&mut *tx).await?;
            }
            Mode::Copy => {
                let mut copy = tx
                    .copy_in_raw(&format!("COPY events ({EVENT_COLUMNS}) FROM STDIN"))
                    .await?;
                copy.send(copy_events(&rows).into_bytes()).await?;
                copy.finish().await?;
                let mut copy = tx
                    .copy_in_raw("COPY event_ids (id, event_hash, seq) FROM STDIN")
                    .await?;
                copy.send(copy_ids(&rows).into_bytes()).await?;
                copy.finish().await?;
            }
        }
        if let Some(last) = rows.last() {
            sqlx::query("UPDATE chain_head SET seq = $1, chain_hash = $2 WHERE singleton = 1")
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
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    if stored != seq {
        return Err(CeilingError::Invalid(format!(
            "wrote {seq} rows but {stored} are stored"
        )));
    }
    Ok(CeilingReport {
        backend: "postgres",
        mode: run.mode,
        rows: seq as u64,
        batch_rows: run.batch_rows,
        elapsed_s,
        rows_per_s: seq as f64 / elapsed_s,
        batch: Latency::of(&mut latencies),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_escape_and_null() {
        let mut s = String::new();
        copy_field(&mut s, Some("a\tb\\c\nd"));
        s.push('|');
        copy_field(&mut s, None);
        assert_eq!(s, "a\\tb\\\\c\\nd|\\N");
    }

    #[test]
    fn month_partition_rolls_over_the_year() {
        // 2026-12-15
        let sql = month_partition_sql(1_797_292_800_000_000);
        assert!(sql.contains("events_bench_2026_12"), "{sql}");
        assert!(sql.contains("TO ('2027-01-01T00:00:00+00:00')"), "{sql}");
    }
}
