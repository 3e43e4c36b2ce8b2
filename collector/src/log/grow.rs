//! Growing the tree inside the writer's transaction, on both backends.
//!
//! Under the lock that orders `seq`, the group's new rows become leaves
//! `seq − 1` (their record hashes into `log_entries`) and every tile-level
//! hash they complete goes into `log_nodes`; events committed before the
//! tree existed are added first, from their stored rows, so no leaf is ever
//! skipped. The right edge of the tree ([`Frontier`]) is kept in memory per
//! database between commits and used only when the stored tree still ends
//! where it left it (same size, same last record hash); otherwise — another
//! replica appended, a rollback, a restored copy — it is reloaded from the
//! stored partial tiles. Nothing stored is ever rewritten.
//!
//! The `bench-no-log` feature (benchmark builds only) makes growing a no-op,
//! to price the tree against the same binary without it.

use super::db::{load_ranges_postgres, load_ranges_sqlite, record_hash, to_hash, Run};
use super::merkle::{leaf_hash, sha256, Hash};
use super::tiles::{frontier_ranges, Frontier, NewNode};
use crate::store::plan::NewRow;
use crate::store::StoreError;
use async_trait::async_trait;
use sqlx::{PgConnection, QueryBuilder, Row, Sqlite, SqliteConnection};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Rows per multi-row SQLite statement.
const ROWS_PER_STATEMENT: usize = 400;

/// The newest stored leaf: (database identity, tree size, last record hash).
type Tail = (String, u64, Option<Hash>);

/// What growing needs from a backend, inside its transaction.
#[async_trait]
trait TreeTx: Send {
    /// The database's identity (for the frontier cache), the tree size and the last record hash.
    async fn tail(&mut self) -> Result<Tail, StoreError>;
    /// Canonical JSON of events `from < seq ≤ to`, by seq.
    async fn events(&mut self, from: u64, to: u64) -> Result<Vec<(i64, String)>, StoreError>;
    /// Hashes of `(level, from, to)` ranges: level 0 record hashes, others node hashes.
    async fn load(&mut self, ranges: &[(u8, u64, u64)]) -> Result<Vec<Run>, StoreError>;
    async fn insert(
        &mut self,
        first: u64,
        entries: &[Hash],
        nodes: &[NewNode],
    ) -> Result<(), StoreError>;
}

/// Canonical JSON of events `from < seq ≤ to`, by seq, on either backend's
/// connection (one SQL text: sqlx binds `$N` on SQLite and PostgreSQL alike).
macro_rules! events_between {
    ($conn:expr, $from:expr, $to:expr) => {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, canonical FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        )
        .bind($from as i64)
        .bind($to as i64)
        .fetch_all($conn)
        .await
        .map_err(StoreError::from)
    };
}

/// Frontiers by database identity, with the tail (size, last record hash) they end at.
type FrontierCache = Mutex<HashMap<String, (u64, Option<Hash>, Frontier)>>;

fn cache() -> &'static FrontierCache {
    static CACHE: OnceLock<FrontierCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn disagree(tree: u64, first_new: u64) -> StoreError {
    StoreError::Refused(format!(
        "the Merkle tree holds {tree} leaves but the next event is seq {first_new}: tree and events disagree (was the database edited?)"
    ))
}

async fn grow<T: TreeTx>(tx: &mut T, rows: &[NewRow<'_>]) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let start = u64::try_from(first.seq - 1).map_err(|_| disagree(0, 0))?;
    let (db, size, last) = tx.tail().await?;
    if size > start {
        return Err(disagree(size, start + 1));
    }
    let mut hashes: Vec<Hash> = Vec::with_capacity((start - size) as usize + rows.len());
    if size < start {
        // Events committed before the tree existed (an upgraded store).
        let missing = tx.events(size, start).await?;
        for (i, (seq, canonical)) in missing.iter().enumerate() {
            if *seq as u64 != size + 1 + i as u64 {
                return Err(disagree(size, *seq as u64));
            }
            hashes.push(sha256(canonical.as_bytes()));
        }
        if hashes.len() as u64 != start - size {
            return Err(disagree(size, start + 1));
        }
    }
    hashes.extend(rows.iter().map(|r| record_hash(&r.event.canonical)));

    // An in-memory SQLite database has no file name to tell it apart: no cache.
    let cacheable = !db.ends_with(':');
    let mut frontier = load_frontier(tx, cacheable.then_some(db.as_str()), size, last).await?;
    let mut nodes: Vec<NewNode> = Vec::new();
    for h in &hashes {
        frontier.push(h, &mut nodes);
    }
    tx.insert(size, &hashes, &nodes).await?;
    if cacheable {
        if let Ok(mut c) = cache().lock() {
            c.insert(db, (frontier.size(), hashes.last().copied(), frontier));
        }
    }
    Ok(())
}

/// The right edge of the stored tree of `size` leaves ending in record hash
/// `last`: the one kept in memory for database `db` when it ends there, else
/// loaded from the stored partial tiles.
async fn load_frontier<T: TreeTx>(
    tx: &mut T,
    db: Option<&str>,
    size: u64,
    last: Option<Hash>,
) -> Result<Frontier, StoreError> {
    let kept = db.and_then(|db| {
        let c = cache().lock().ok()?;
        c.get(db)
            .filter(|(s, l, _)| *s == size && *l == last)
            .map(|(_, _, f)| f.clone())
    });
    if let Some(f) = kept {
        return Ok(f);
    }
    let mut loaded = HashMap::new();
    for (level, first, hashes) in tx.load(&frontier_ranges(size)).await? {
        for (idx, h) in (first..).zip(hashes) {
            loaded.insert((level, idx), if level == 0 { leaf_hash(&h) } else { h });
        }
    }
    Frontier::load(size, &loaded).map_err(|e| StoreError::Refused(e.to_string()))
}

/// Grows the tree by a group's new rows, inside the writer's SQLite transaction.
pub async fn grow_sqlite(
    conn: &mut SqliteConnection,
    rows: &[NewRow<'_>],
) -> Result<(), StoreError> {
    if cfg!(feature = "bench-no-log") {
        return Ok(());
    }
    grow(&mut SqliteTx(conn), rows).await
}

/// Grows the tree by a group's new rows, inside the writer's PostgreSQL
/// transaction (after `pg_advisory_xact_lock`, so replicas keep one tree).
pub async fn grow_postgres(conn: &mut PgConnection, rows: &[NewRow<'_>]) -> Result<(), StoreError> {
    if cfg!(feature = "bench-no-log") {
        return Ok(());
    }
    grow(&mut PgTx(conn), rows).await
}

struct SqliteTx<'c>(&'c mut SqliteConnection);

#[async_trait]
impl TreeTx for SqliteTx<'_> {
    async fn tail(&mut self) -> Result<Tail, StoreError> {
        let db: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut *self.0)
                .await?;
        let row = sqlx::query("SELECT idx, record_hash FROM log_entries ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(match row {
            None => (format!("sqlite:{db}"), 0, None),
            Some(r) => (
                format!("sqlite:{db}"),
                r.try_get::<i64, _>("idx")? as u64 + 1,
                Some(to_hash(r.try_get("record_hash")?)?),
            ),
        })
    }

    async fn events(&mut self, from: u64, to: u64) -> Result<Vec<(i64, String)>, StoreError> {
        events_between!(&mut *self.0, from, to)
    }

    async fn load(&mut self, ranges: &[(u8, u64, u64)]) -> Result<Vec<Run>, StoreError> {
        load_ranges_sqlite(&mut *self.0, ranges).await
    }

    async fn insert(
        &mut self,
        first: u64,
        entries: &[Hash],
        nodes: &[NewNode],
    ) -> Result<(), StoreError> {
        let indexed: Vec<(i64, &Hash)> = entries
            .iter()
            .enumerate()
            .map(|(i, h)| ((first + i as u64) as i64, h))
            .collect();
        for chunk in indexed.chunks(ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO log_entries (idx, record_hash) ");
            qb.push_values(chunk, |mut b, (idx, h)| {
                b.push_bind(*idx).push_bind(h.as_slice());
            });
            qb.build().execute(&mut *self.0).await?;
        }
        for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO log_nodes (level, idx, hash) ");
            qb.push_values(chunk, |mut b, n| {
                b.push_bind(i64::from(n.level))
                    .push_bind(n.index as i64)
                    .push_bind(n.hash.as_slice());
            });
            qb.build().execute(&mut *self.0).await?;
        }
        Ok(())
    }
}

struct PgTx<'c>(&'c mut PgConnection);

#[async_trait]
impl TreeTx for PgTx<'_> {
    async fn tail(&mut self) -> Result<Tail, StoreError> {
        let row = sqlx::query(
            "SELECT current_database() || '@' || coalesce(inet_server_addr()::text, 'local') || ':' || coalesce(inet_server_port()::text, '0') AS db, \
                    e.idx, e.record_hash \
             FROM (SELECT 1) AS one \
             LEFT JOIN (SELECT idx, record_hash FROM log_entries ORDER BY idx DESC LIMIT 1) AS e ON true",
        )
        .fetch_one(&mut *self.0)
        .await?;
        let db: String = row.try_get("db")?;
        let idx: Option<i64> = row.try_get("idx")?;
        let last: Option<Vec<u8>> = row.try_get("record_hash")?;
        Ok((
            format!("postgres:{db}"),
            idx.map_or(0, |i| i as u64 + 1),
            last.map(to_hash).transpose()?,
        ))
    }

    async fn events(&mut self, from: u64, to: u64) -> Result<Vec<(i64, String)>, StoreError> {
        events_between!(&mut *self.0, from, to)
    }

    async fn load(&mut self, ranges: &[(u8, u64, u64)]) -> Result<Vec<Run>, StoreError> {
        load_ranges_postgres(&mut *self.0, ranges).await
    }

    async fn insert(
        &mut self,
        first: u64,
        entries: &[Hash],
        nodes: &[NewNode],
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO log_entries (idx, record_hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])")
            .bind((0..entries.len()).map(|i| (first + i as u64) as i64).collect::<Vec<i64>>())
            .bind(entries.iter().map(|h| h.to_vec()).collect::<Vec<Vec<u8>>>())
            .execute(&mut *self.0)
            .await?;
        if !nodes.is_empty() {
            sqlx::query("INSERT INTO log_nodes (level, idx, hash) SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])")
                .bind(nodes.iter().map(|n| i32::from(n.level)).collect::<Vec<i32>>())
                .bind(nodes.iter().map(|n| n.index as i64).collect::<Vec<i64>>())
                .bind(nodes.iter().map(|n| n.hash.to_vec()).collect::<Vec<Vec<u8>>>())
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }
}
