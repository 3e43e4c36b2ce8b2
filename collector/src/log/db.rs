//! The tree's storage, on SQLite and PostgreSQL (tables of the `…_verifiable_log`
//! migrations): `log_entries` (leaf index → record hash), `log_nodes` (tile
//! level ≥ 1 hashes, by level and index), `log_checkpoints` (every signed
//! checkpoint) and `log_signing_keys` (a key generated on first start). All
//! append-only, refused UPDATE and DELETE by triggers.
//!
//! [`grow_sqlite`] and [`grow_postgres`] run inside the writer's transaction,
//! under the lock that orders `seq`: the tree grows with the events it covers
//! or not at all. [`LogDb`] is the read side (and the checkpoint writer).

use super::merkle::{leaf_hash, sha256, Hash};
use super::tiles::{frontier_ranges, Frontier, NewNode};
use crate::store::plan::NewRow;
use crate::store::{RawPool, StoreError};
use sqlx::{PgConnection, PgPool, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use std::collections::HashMap;

/// Rows per multi-row SQLite statement.
const ROWS_PER_STATEMENT: usize = 400;

/// The record hash of a stored event: SHA-256 of its stored canonical JSON.
pub fn record_hash(canonical: &[u8]) -> Hash {
    // The stores keep the canonical bytes as text; it is ASCII (§5 escapes
    // everything else), so the bytes hashed are the bytes stored.
    sha256(String::from_utf8_lossy(canonical).as_bytes())
}

fn to_hash(v: Vec<u8>) -> Result<Hash, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Refused("a stored tree hash is not 32 bytes".to_owned()))
}

fn disagree(tree: u64, first_new: i64) -> StoreError {
    StoreError::Refused(format!(
        "the Merkle tree holds {tree} leaves but the next event is seq {first_new}: tree and events disagree (was the database edited?)"
    ))
}

/// What a group adds to the tree: its record hashes in `seq` order, and the
/// tree size it expects before them.
fn new_leaves(rows: &[NewRow<'_>]) -> Option<(u64, Vec<Hash>)> {
    let first = rows.first()?;
    let start = u64::try_from(first.seq - 1).ok()?;
    Some((
        start,
        rows.iter()
            .map(|r| record_hash(&r.event.canonical))
            .collect(),
    ))
}

/// Grows the tree by a group's new rows, inside the writer's SQLite transaction.
pub async fn grow_sqlite(
    conn: &mut SqliteConnection,
    rows: &[NewRow<'_>],
) -> Result<(), StoreError> {
    let Some((start, mut hashes)) = new_leaves(rows) else {
        return Ok(());
    };
    let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
        .fetch_one(&mut *conn)
        .await?;
    let size = size as u64;
    if size > start {
        return Err(disagree(size, start as i64 + 1));
    }
    if size < start {
        // Events committed before the tree existed (an upgraded store):
        // their leaves first, from the stored rows, never skipping one.
        let rows = sqlx::query(
            "SELECT seq, canonical FROM events WHERE seq > ? AND seq <= ? ORDER BY seq",
        )
        .bind(size as i64)
        .bind(start as i64)
        .fetch_all(&mut *conn)
        .await?;
        let mut missing = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let seq: i64 = r.try_get("seq")?;
            if seq != size as i64 + 1 + i as i64 {
                return Err(disagree(size, seq));
            }
            let canonical: String = r.try_get("canonical")?;
            missing.push(sha256(canonical.as_bytes()));
        }
        if missing.len() as u64 != start - size {
            return Err(disagree(size, start as i64 + 1));
        }
        missing.append(&mut hashes);
        hashes = missing;
    }
    let mut loaded = HashMap::new();
    for (level, from, to) in frontier_ranges(size) {
        let rows = if level == 0 {
            sqlx::query("SELECT idx, record_hash AS h FROM log_entries WHERE idx >= ? AND idx < ?")
        } else {
            sqlx::query(
                "SELECT idx, hash AS h FROM log_nodes WHERE level = ? AND idx >= ? AND idx < ?",
            )
            .bind(i64::from(level))
        }
        .bind(from as i64)
        .bind(to as i64)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let idx: i64 = r.try_get("idx")?;
            let h = to_hash(r.try_get("h")?)?;
            let h = if level == 0 { leaf_hash(&h) } else { h };
            loaded.insert((level, idx as u64), h);
        }
    }
    let mut frontier =
        Frontier::load(size, &loaded).map_err(|e| StoreError::Refused(e.to_string()))?;
    let mut nodes: Vec<NewNode> = Vec::new();
    for h in &hashes {
        frontier.push(h, &mut nodes);
    }
    let entries: Vec<(i64, &Hash)> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| ((size + i as u64) as i64, h))
        .collect();
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO log_entries (idx, record_hash) ");
        qb.push_values(chunk, |mut b, (idx, h)| {
            b.push_bind(*idx).push_bind(h.as_slice());
        });
        qb.build().execute(&mut *conn).await?;
    }
    for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO log_nodes (level, idx, hash) ");
        qb.push_values(chunk, |mut b, n| {
            b.push_bind(i64::from(n.level))
                .push_bind(n.index as i64)
                .push_bind(n.hash.as_slice());
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Grows the tree by a group's new rows, inside the writer's PostgreSQL
/// transaction (after `pg_advisory_xact_lock`, so replicas keep one tree).
pub async fn grow_postgres(conn: &mut PgConnection, rows: &[NewRow<'_>]) -> Result<(), StoreError> {
    let Some((start, mut hashes)) = new_leaves(rows) else {
        return Ok(());
    };
    let size: i64 = sqlx::query_scalar("SELECT COALESCE(max(idx) + 1, 0) FROM log_entries")
        .fetch_one(&mut *conn)
        .await?;
    let size = size as u64;
    if size > start {
        return Err(disagree(size, start as i64 + 1));
    }
    if size < start {
        let rows = sqlx::query(
            "SELECT seq, canonical FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(size as i64)
        .bind(start as i64)
        .fetch_all(&mut *conn)
        .await?;
        let mut missing = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let seq: i64 = r.try_get("seq")?;
            if seq != size as i64 + 1 + i as i64 {
                return Err(disagree(size, seq));
            }
            let canonical: String = r.try_get("canonical")?;
            missing.push(sha256(canonical.as_bytes()));
        }
        if missing.len() as u64 != start - size {
            return Err(disagree(size, start as i64 + 1));
        }
        missing.append(&mut hashes);
        hashes = missing;
    }
    let ranges = frontier_ranges(size);
    let mut loaded = HashMap::new();
    if !ranges.is_empty() {
        let levels: Vec<i32> = ranges.iter().map(|r| i32::from(r.0)).collect();
        let froms: Vec<i64> = ranges.iter().map(|r| r.1 as i64).collect();
        let tos: Vec<i64> = ranges.iter().map(|r| r.2 as i64).collect();
        let rows = sqlx::query(
            "SELECT 0 AS level, e.idx, e.record_hash AS h FROM log_entries e \
               JOIN unnest($1::int[], $2::bigint[], $3::bigint[]) AS r(l, f, t) \
                 ON r.l = 0 AND e.idx >= r.f AND e.idx < r.t \
             UNION ALL \
             SELECT n.level, n.idx, n.hash AS h FROM log_nodes n \
               JOIN unnest($1::int[], $2::bigint[], $3::bigint[]) AS r(l, f, t) \
                 ON r.l > 0 AND n.level = r.l AND n.idx >= r.f AND n.idx < r.t",
        )
        .bind(&levels)
        .bind(&froms)
        .bind(&tos)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let level: i32 = r.try_get("level")?;
            let idx: i64 = r.try_get("idx")?;
            let h = to_hash(r.try_get("h")?)?;
            let h = if level == 0 { leaf_hash(&h) } else { h };
            loaded.insert((level as u8, idx as u64), h);
        }
    }
    let mut frontier =
        Frontier::load(size, &loaded).map_err(|e| StoreError::Refused(e.to_string()))?;
    let mut nodes: Vec<NewNode> = Vec::new();
    for h in &hashes {
        frontier.push(h, &mut nodes);
    }
    sqlx::query("INSERT INTO log_entries (idx, record_hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])")
        .bind((0..hashes.len()).map(|i| (size + i as u64) as i64).collect::<Vec<i64>>())
        .bind(hashes.iter().map(|h| h.to_vec()).collect::<Vec<Vec<u8>>>())
        .execute(&mut *conn)
        .await?;
    if !nodes.is_empty() {
        sqlx::query("INSERT INTO log_nodes (level, idx, hash) SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])")
            .bind(nodes.iter().map(|n| i32::from(n.level)).collect::<Vec<i32>>())
            .bind(nodes.iter().map(|n| n.index as i64).collect::<Vec<i64>>())
            .bind(nodes.iter().map(|n| n.hash.to_vec()).collect::<Vec<Vec<u8>>>())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A kept checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    /// When it was signed, µs since the epoch.
    pub created_us: i64,
}

/// The read side of the tree and the checkpoint table, over the store's pool.
#[derive(Clone)]
pub enum LogDb {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl LogDb {
    pub fn from_raw(raw: RawPool<'_>) -> Self {
        match raw {
            RawPool::Sqlite(p) => Self::Sqlite(p.clone()),
            RawPool::Postgres(p) => Self::Postgres(p.clone()),
        }
    }

    /// How many leaves the stored tree has.
    pub async fn tree_size(&self) -> Result<u64, StoreError> {
        let n: i64 = match self {
            Self::Sqlite(p) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
                    .fetch_one(p)
                    .await?
            }
            Self::Postgres(p) => {
                sqlx::query_scalar("SELECT COALESCE(max(idx) + 1, 0) FROM log_entries")
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(n as u64)
    }

    /// Record hashes of leaves `[from, to)` that are stored, by index.
    pub async fn entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Hash)>, StoreError> {
        let rows = match self {
            Self::Sqlite(p) => {
                sqlx::query("SELECT idx, record_hash AS h FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx")
                    .bind(from as i64)
                    .bind(to as i64)
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|r| Ok((r.try_get::<i64, _>("idx")?, r.try_get::<Vec<u8>, _>("h")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
            Self::Postgres(p) => {
                sqlx::query("SELECT idx, record_hash AS h FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                    .bind(from as i64)
                    .bind(to as i64)
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|r| Ok((r.try_get::<i64, _>("idx")?, r.try_get::<Vec<u8>, _>("h")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
        };
        rows.into_iter()
            .map(|(i, h)| Ok((i as u64, to_hash(h)?)))
            .collect()
    }

    /// Tile-level hashes `[from, to)` at `level` (level 0: leaf hashes), by index.
    pub async fn level_hashes(
        &self,
        level: u8,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        if level == 0 {
            return Ok(self
                .entries(from, to)
                .await?
                .into_iter()
                .map(|(i, h)| (i, leaf_hash(&h)))
                .collect());
        }
        let rows = match self {
            Self::Sqlite(p) => {
                sqlx::query("SELECT idx, hash FROM log_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx")
                    .bind(i64::from(level))
                    .bind(from as i64)
                    .bind(to as i64)
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|r| Ok((r.try_get::<i64, _>("idx")?, r.try_get::<Vec<u8>, _>("hash")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
            Self::Postgres(p) => {
                sqlx::query("SELECT idx, hash FROM log_nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx")
                    .bind(i32::from(level))
                    .bind(from as i64)
                    .bind(to as i64)
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .map(|r| Ok((r.try_get::<i64, _>("idx")?, r.try_get::<Vec<u8>, _>("hash")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
        };
        rows.into_iter()
            .map(|(i, h)| Ok((i as u64, to_hash(h)?)))
            .collect()
    }

    /// The newest checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.checkpoint_where(None).await
    }

    /// The kept checkpoint of tree size `size`, if any.
    pub async fn checkpoint_of_size(
        &self,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.checkpoint_where(Some(size)).await
    }

    async fn checkpoint_where(
        &self,
        size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let size = size.map(|s| s as i64);
        let row = match self {
            Self::Sqlite(p) => {
                sqlx::query("SELECT size, root, note, created_us FROM log_checkpoints WHERE ? IS NULL OR size = ? ORDER BY size DESC LIMIT 1")
                    .bind(size)
                    .bind(size)
                    .fetch_optional(p)
                    .await?
                    .map(|r| checkpoint_row(&r))
            }
            Self::Postgres(p) => {
                sqlx::query("SELECT size, root, note, created_us FROM log_checkpoints WHERE $1::bigint IS NULL OR size = $1 ORDER BY size DESC LIMIT 1")
                    .bind(size)
                    .fetch_optional(p)
                    .await?
                    .map(|r| checkpoint_row(&r))
            }
        };
        row.transpose()
    }

    /// The sizes of every kept checkpoint, ascending.
    pub async fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        let sizes: Vec<i64> = match self {
            Self::Sqlite(p) => {
                sqlx::query_scalar("SELECT size FROM log_checkpoints ORDER BY size")
                    .fetch_all(p)
                    .await?
            }
            Self::Postgres(p) => {
                sqlx::query_scalar("SELECT size FROM log_checkpoints ORDER BY size")
                    .fetch_all(p)
                    .await?
            }
        };
        Ok(sizes.into_iter().map(|s| s as u64).collect())
    }

    /// Keeps a signed checkpoint (a replica that signed the same size first wins).
    pub async fn insert_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        let (size, root) = (cp.size as i64, cp.root.as_slice());
        match self {
            Self::Sqlite(p) => {
                sqlx::query("INSERT INTO log_checkpoints (size, root, note, created_us) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING")
                    .bind(size)
                    .bind(root)
                    .bind(&cp.note)
                    .bind(cp.created_us)
                    .execute(p)
                    .await?;
            }
            Self::Postgres(p) => {
                sqlx::query("INSERT INTO log_checkpoints (size, root, note, created_us) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING")
                    .bind(size)
                    .bind(root)
                    .bind(&cp.note)
                    .bind(cp.created_us)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// The signer key kept in the store under `name`, if any (its text).
    pub async fn stored_key(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(match self {
            Self::Sqlite(p) => {
                sqlx::query_scalar("SELECT signer FROM log_signing_keys WHERE name = ?")
                    .bind(name)
                    .fetch_optional(p)
                    .await?
            }
            Self::Postgres(p) => {
                sqlx::query_scalar("SELECT signer FROM log_signing_keys WHERE name = $1")
                    .bind(name)
                    .fetch_optional(p)
                    .await?
            }
        })
    }

    /// Keeps a generated signer key unless one is already kept under its name.
    pub async fn keep_key(&self, name: &str, signer: &str, now: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(p) => {
                sqlx::query("INSERT INTO log_signing_keys (name, signer, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(signer)
                    .bind(now)
                    .execute(p)
                    .await?;
            }
            Self::Postgres(p) => {
                sqlx::query("INSERT INTO log_signing_keys (name, signer, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(signer)
                    .bind(now)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// The `seq` of an event id (kept after retention, in `event_ids`).
    pub async fn seq_of_id(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Self::Sqlite(p) => {
                sqlx::query_scalar("SELECT seq FROM event_ids WHERE id = ?")
                    .bind(id)
                    .fetch_optional(p)
                    .await?
            }
            Self::Postgres(p) => {
                sqlx::query_scalar("SELECT seq FROM event_ids WHERE id = $1")
                    .bind(id)
                    .fetch_optional(p)
                    .await?
            }
        })
    }
}

fn checkpoint_row<R: CheckpointRow>(r: &R) -> Result<StoredCheckpoint, StoreError> {
    let (size, root, note, created_us) = r.fields()?;
    Ok(StoredCheckpoint {
        size: size as u64,
        root: to_hash(root)?,
        note,
        created_us,
    })
}

/// The columns of a `log_checkpoints` row, on either backend.
trait CheckpointRow {
    fn fields(&self) -> Result<(i64, Vec<u8>, String, i64), sqlx::Error>;
}

impl CheckpointRow for sqlx::sqlite::SqliteRow {
    fn fields(&self) -> Result<(i64, Vec<u8>, String, i64), sqlx::Error> {
        Ok((
            self.try_get("size")?,
            self.try_get("root")?,
            self.try_get("note")?,
            self.try_get("created_us")?,
        ))
    }
}

impl CheckpointRow for sqlx::postgres::PgRow {
    fn fields(&self) -> Result<(i64, Vec<u8>, String, i64), sqlx::Error> {
        Ok((
            self.try_get("size")?,
            self.try_get("root")?,
            self.try_get("note")?,
            self.try_get("created_us")?,
        ))
    }
}
