//! Full-text search and counts for auditors (issue 15).
//!
//! - [`query`]: the `q` language, parsed and rebuilt as a safe FTS5 or
//!   tsquery expression (pure).
//! - [`stats`]: `GET /v1/stats` counts per time bucket, from indexed columns.
//!
//! The index itself is kept by the database: an `AFTER INSERT` trigger on
//! `events` (migrations `*_search.sql`) writes each event's words in the same
//! transaction as the row, so the writer is unchanged and no event row is
//! ever updated. Search is a filter like the others: [`push_sqlite_match`] and
//! [`push_postgres_match`] add it to the backends' `query`, where it combines
//! with every other filter and the `after` cursor.
//!
//! Removal: `retain` deletes rows below its anchor in chunks, highest first.
//! On PostgreSQL an `AFTER DELETE` trigger removes their words; on SQLite
//! that trigger trips a 3.46 bug (migration `*_search_no_delete_trigger.sql`),
//! so each chunk's transaction calls [`forget_removed_sqlite`] itself.

pub mod query;
pub mod stats;

use crate::store::EventQuery;
use sqlx::{Postgres, QueryBuilder, Sqlite, SqliteConnection};

/// Removes from the SQLite FTS5 index the words of events `retain` removed,
/// inside the transaction that removed them (after the `DELETE` on `events`).
///
/// Retain deletes the rows below `first_kept_seq` highest first, so every
/// `seq` above the highest row still below the anchor is gone: their index
/// rows go, including any an earlier version left behind. Returns how many
/// index rows were removed.
pub async fn forget_removed_sqlite(
    conn: &mut SqliteConnection,
    first_kept_seq: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM events_fts WHERE rowid < ?1 \
         AND rowid > (SELECT COALESCE(MAX(seq), 0) FROM events WHERE seq < ?1)",
    )
    .bind(first_kept_seq)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Adds `q` to an SQLite events query (`seq` is the FTS5 rowid).
pub fn push_sqlite_match(qb: &mut QueryBuilder<'_, Sqlite>, q: &EventQuery) {
    if let Some(text) = &q.text {
        qb.push(" AND seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ")
            .push_bind(text.fts5());
        if let Some(after) = q.after {
            // FTS5 answers a rowid range from its own index.
            qb.push(" AND rowid > ").push_bind(after);
        }
        qb.push(")");
    }
}

/// Adds `q` to a PostgreSQL events query (GIN index on `events_search.doc`).
///
/// `= ANY(ARRAY(…))` makes the text search an init plan run once, first,
/// through the GIN index, whose `seq`s then drive the events' `seq` index in
/// order. With `IN (…)` the planner may instead walk `events_search` by key
/// and test every row's vector when its statistics are missing or stale
/// (seen: 600 ms for one match among 200k events before the first ANALYZE).
pub fn push_postgres_match(qb: &mut QueryBuilder<'_, Postgres>, q: &EventQuery) {
    if let Some(text) = &q.text {
        qb.push(
            " AND seq = ANY(ARRAY(SELECT seq FROM events_search WHERE doc @@ to_tsquery('simple', ",
        )
        .push_bind(text.tsquery())
        .push(")))");
        // No `seq > after` inside: PostgreSQL would AND the GIN bitmap with a
        // key-range bitmap of every later row (seen: 100 ms at 1M events);
        // the outer `seq > after` filters the few matches instead.
    }
}
