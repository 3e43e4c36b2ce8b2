//! The tree's storage, on SQLite and PostgreSQL (tables of the `…_verifiable_log`
//! migrations): `log_entries` (leaf index → record hash), `log_nodes` (tile
//! level ≥ 1 hashes, by level and index), `log_checkpoints` (every signed
//! checkpoint) and `log_signing_keys` (a key generated on first start). All
//! append-only, refused UPDATE and DELETE by triggers.
//!
//! [`grow_sqlite`] and [`grow_postgres`] ([`super::grow`]) run inside the
//! writer's transaction, under the lock that orders `seq`: the tree grows with
//! the events it covers or not at all. [`LogDb`] is the read side (and the
//! checkpoint writer).

pub use super::grow::{grow_postgres, grow_sqlite};
use super::merkle::{leaf_hash, sha256, Hash};
use crate::store::{RawPool, StoreError};
use sqlx::{PgPool, Row, SqlitePool};

/// The record hash of a stored event: SHA-256 of its stored canonical JSON.
pub fn record_hash(canonical: &[u8]) -> Hash {
    // The stores keep the canonical bytes as text; it is ASCII (§5 escapes
    // everything else), so the bytes hashed are the bytes stored.
    sha256(String::from_utf8_lossy(canonical).as_bytes())
}

pub(super) fn to_hash(v: Vec<u8>) -> Result<Hash, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Refused("a stored tree hash is not 32 bytes".to_owned()))
}

/// One statement reading the stored hashes of `(level, from, to)` ranges
/// (level 0: record hashes from `log_entries`; others: `log_nodes`), one row
/// per range with its hashes concatenated in index order: a proof needs a
/// few hundred hashes, and one row each would cost a round trip from SQLite's
/// worker thread each. Written once for both backends: `$N` placeholders
/// (sqlx binds them on SQLite and PostgreSQL alike), `string_agg(… ORDER BY
/// idx)` (PostgreSQL; SQLite ≥ 3.44), and `substr(h, 1, 0)` as the empty
/// separator of the hash's own type (bytea; a blob). Bound by
/// [`ranges_query!`] in the same order.
fn ranges_sql(ranges: &[(u8, u64, u64)]) -> String {
    let mut n = 0;
    let mut parts = Vec::with_capacity(ranges.len());
    for &(level, _, _) in ranges {
        parts.push(if level == 0 {
            n += 2;
            format!(
                "SELECT 0 AS level, min(idx) AS first, max(idx) AS last, count(*) AS n, \
                 string_agg(record_hash, substr(record_hash, 1, 0) ORDER BY idx) AS hs \
                 FROM log_entries WHERE idx >= ${} AND idx < ${}",
                n - 1,
                n
            )
        } else {
            n += 3;
            format!(
                "SELECT min(level) AS level, min(idx) AS first, max(idx) AS last, count(*) AS n, \
                 string_agg(hash, substr(hash, 1, 0) ORDER BY idx) AS hs \
                 FROM log_nodes WHERE level = ${} AND idx >= ${} AND idx < ${}",
                n - 2,
                n - 1,
                n
            )
        });
    }
    parts.join(" UNION ALL ")
}

/// The hashes of one range: `(level, first index, hashes from it on)`.
pub type Run = (u8, u64, Vec<Hash>);

/// One [`ranges_sql`] row as a [`Run`] (`None` for an empty range); a range
/// with a hole in it is refused (the tables are append-only: an edited store).
fn run_of(
    level: Option<i32>,
    first: Option<i64>,
    last: Option<i64>,
    n: i64,
    hs: Option<Vec<u8>>,
) -> Result<Option<Run>, StoreError> {
    let (Some(level), Some(first), Some(last), Some(hs)) = (level, first, last, hs) else {
        return Ok(None);
    };
    if n < 1 || last - first + 1 != n || hs.len() as i64 != 32 * n {
        return Err(StoreError::Refused(format!(
            "the stored tree has a hole at tile level {level} between {first} and {last} (was the database edited?)"
        )));
    }
    let hashes = hs
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok(Some((level as u8, first as u64, hashes)))
}

/// Runs [`ranges_sql`] on an executor of either backend: one [`Run`] per
/// range that has stored hashes.
macro_rules! ranges_query {
    ($exec:expr, $ranges:expr) => {{
        let ranges: &[(u8, u64, u64)] = $ranges;
        if ranges.is_empty() {
            Ok(Vec::new())
        } else {
            let sql = ranges_sql(ranges);
            let mut q = sqlx::query(&sql);
            for &(level, from, to) in ranges {
                if level > 0 {
                    q = q.bind(i32::from(level));
                }
                q = q.bind(from as i64).bind(to as i64);
            }
            q.fetch_all($exec)
                .await
                .map_err(StoreError::from)
                .and_then(|rows| {
                    let mut runs = Vec::with_capacity(rows.len());
                    for r in &rows {
                        if let Some(run) = run_of(
                            r.try_get("level")?,
                            r.try_get("first")?,
                            r.try_get("last")?,
                            r.try_get("n")?,
                            r.try_get("hs")?,
                        )? {
                            runs.push(run);
                        }
                    }
                    Ok(runs)
                })
        }
    }};
}

/// The stored hashes of `ranges` on a SQLite connection (the writer's, in [`super::grow`]).
pub(super) async fn load_ranges_sqlite(
    conn: &mut sqlx::SqliteConnection,
    ranges: &[(u8, u64, u64)],
) -> Result<Vec<Run>, StoreError> {
    ranges_query!(conn, ranges)
}

/// The stored hashes of `ranges` on a PostgreSQL connection (the writer's, in [`super::grow`]).
pub(super) async fn load_ranges_postgres(
    conn: &mut sqlx::PgConnection,
    ranges: &[(u8, u64, u64)],
) -> Result<Vec<Run>, StoreError> {
    ranges_query!(conn, ranges)
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

/// Runs `$body` with `$p` bound to the pool of either backend: the SQL is
/// written once (`$N` placeholders, which sqlx binds on SQLite and PostgreSQL
/// alike) and type-checked for each backend.
macro_rules! on_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            LogDb::Sqlite($p) => $body,
            LogDb::Postgres($p) => $body,
        }
    };
}

const CHECKPOINT_SELECT: &str = "SELECT size, root, note, created_us FROM log_checkpoints";

/// `(index, hash)` rows as stored.
fn indexed(rows: Vec<(i64, Vec<u8>)>) -> Result<Vec<(u64, Hash)>, StoreError> {
    rows.into_iter()
        .map(|(i, h)| Ok((i as u64, to_hash(h)?)))
        .collect()
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
        let n: i64 = on_pool!(self, |p| {
            sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
                .fetch_one(p)
                .await?
        });
        Ok(n as u64)
    }

    /// Record hashes of leaves `[from, to)` that are stored, by index.
    pub async fn entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Hash)>, StoreError> {
        indexed(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT idx, record_hash FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            )
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(p)
            .await?
        }))
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
        indexed(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT idx, hash FROM log_nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
            )
            .bind(i32::from(level))
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(p)
            .await?
        }))
    }

    /// The stored hashes of `(level, from, to)` ranges, in one statement:
    /// a [`Run`] per range, level 0 giving record hashes (not leaf hashes).
    pub async fn load_ranges(&self, ranges: &[(u8, u64, u64)]) -> Result<Vec<Run>, StoreError> {
        on_pool!(self, |p| ranges_query!(p, ranges))
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
        let sql = match size {
            None => format!("{CHECKPOINT_SELECT} ORDER BY size DESC LIMIT 1"),
            Some(_) => format!("{CHECKPOINT_SELECT} WHERE size = $1"),
        };
        let row: Option<(i64, Vec<u8>, String, i64)> = on_pool!(self, |p| {
            let mut q = sqlx::query_as(&sql);
            if let Some(s) = size {
                q = q.bind(s as i64);
            }
            q.fetch_optional(p).await?
        });
        row.map(|(size, root, note, created_us)| {
            Ok(StoredCheckpoint {
                size: size as u64,
                root: to_hash(root)?,
                note,
                created_us,
            })
        })
        .transpose()
    }

    /// The sizes of every kept checkpoint, ascending.
    pub async fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        let sizes: Vec<i64> = on_pool!(self, |p| {
            sqlx::query_scalar("SELECT size FROM log_checkpoints ORDER BY size")
                .fetch_all(p)
                .await?
        });
        Ok(sizes.into_iter().map(|s| s as u64).collect())
    }

    /// Keeps a signed checkpoint (a replica that signed the same size first wins).
    pub async fn insert_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO log_checkpoints (size, root, note, created_us) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (size) DO NOTHING",
            )
            .bind(cp.size as i64)
            .bind(cp.root.as_slice())
            .bind(&cp.note)
            .bind(cp.created_us)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The signer key kept in the store under `name`, if any (its text).
    pub async fn stored_key(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_scalar("SELECT signer FROM log_signing_keys WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Keeps a generated signer key unless one is already kept under its name.
    pub async fn keep_key(&self, name: &str, signer: &str, now: &str) -> Result<(), StoreError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO log_signing_keys (name, signer, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(signer)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The `seq` of an event id (kept after retention, in `event_ids`).
    pub async fn seq_of_id(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_scalar("SELECT seq FROM event_ids WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_whole_or_refused() {
        let hs: Vec<u8> = (0..3u8).flat_map(|i| [i; 32]).collect();
        assert_eq!(
            run_of(Some(1), Some(256), Some(258), 3, Some(hs.clone())).unwrap(),
            Some((1, 256, vec![[0; 32], [1; 32], [2; 32]]))
        );
        // An empty range (aggregates over no rows are NULL).
        assert_eq!(run_of(Some(0), None, None, 0, None).unwrap(), None);
        // A hole (3 rows from 256 to 259), or bytes that are not 32 per row: refused.
        assert!(run_of(Some(1), Some(256), Some(259), 3, Some(hs.clone())).is_err());
        assert!(run_of(Some(1), Some(256), Some(258), 3, Some(hs[..95].to_vec())).is_err());
    }

    #[test]
    fn one_statement_numbers_its_placeholders_in_bind_order() {
        let sql = ranges_sql(&[(0, 0, 256), (2, 0, 3), (1, 256, 512)]);
        assert_eq!(sql.matches(" UNION ALL ").count(), 2);
        for (n, part) in ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"]
            .iter()
            .enumerate()
        {
            assert!(sql.contains(part), "{n}: {sql}");
        }
        assert!(!sql.contains("$9"));
        assert!(sql
            .find("FROM log_entries WHERE idx >= $1 AND idx < $2")
            .is_some());
        assert!(sql
            .find("FROM log_nodes WHERE level = $6 AND idx >= $7 AND idx < $8")
            .is_some());
    }
}
