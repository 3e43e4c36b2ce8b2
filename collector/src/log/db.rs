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
