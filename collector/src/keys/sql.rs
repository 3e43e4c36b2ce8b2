//! The registry's SQL (SPEC §10), written once for both backends: sqlx binds
//! `$N` placeholders in SQLite and PostgreSQL alike, so [`registry_sql!`]
//! expands the same functions over each backend's pool, row and connection
//! types in [`super::sqlite`] and [`super::postgres`]. Only the event→batch
//! link insert differs (PostgreSQL takes one array).

/// Expands `key`, `keys`, `add`, `retire`, `batch_of` and `record_id` for a
/// backend: `registry_sql!(Pool, Row, Connection)`.
macro_rules! registry_sql {
    ($pool:ty, $row:ty, $conn:ty) => {
        use super::batch::BatchRecord;
        use super::registry::{KeyRecord, NewKey};
        use super::{AddOutcome, RetireOutcome};
        use crate::store::StoreError;
        use sqlx::Row;

        const KEY_SELECT: &str =
            "SELECT k.keyid, k.public_key, k.namespaces, k.not_before_us, k.created_at, \
             r.not_after_us, r.retired_at FROM workload_keys k \
             LEFT JOIN workload_key_retirements r ON r.keyid = k.keyid";

        fn key_row(row: &$row) -> Result<KeyRecord, StoreError> {
            super::key_record(
                row.try_get("keyid")?,
                row.try_get("public_key")?,
                row.try_get("namespaces")?,
                row.try_get("not_before_us")?,
                row.try_get("created_at")?,
                row.try_get("not_after_us")?,
                row.try_get("retired_at")?,
            )
        }

        pub async fn key(pool: &$pool, keyid: &str) -> Result<Option<KeyRecord>, StoreError> {
            let row = sqlx::query(&format!("{KEY_SELECT} WHERE k.keyid = $1"))
                .bind(keyid)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(key_row).transpose()
        }

        pub async fn keys(pool: &$pool) -> Result<Vec<KeyRecord>, StoreError> {
            let rows = sqlx::query(&format!("{KEY_SELECT} ORDER BY k.created_at, k.keyid"))
                .fetch_all(pool)
                .await?;
            rows.iter().map(key_row).collect()
        }

        pub async fn add(pool: &$pool, new: &NewKey, now: &str) -> Result<AddOutcome, StoreError> {
            let (public_key, namespaces) = super::key_columns(new);
            let inserted = sqlx::query(
                "INSERT INTO workload_keys (keyid, algorithm, public_key, namespaces, not_before_us, created_at) \
                 VALUES ($1, 'ed25519', $2, $3, $4, $5) ON CONFLICT (keyid) DO NOTHING",
            )
            .bind(&new.keyid)
            .bind(&public_key)
            .bind(&namespaces)
            .bind(new.not_before_us)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            let stored = key(pool, &new.keyid)
                .await?
                .ok_or_else(|| StoreError::Refused("a registered key vanished".into()))?;
            Ok(super::add_outcome(inserted == 1, new, stored))
        }

        pub async fn retire(
            pool: &$pool,
            keyid: &str,
            not_after_us: i64,
            now: &str,
        ) -> Result<RetireOutcome, StoreError> {
            if key(pool, keyid).await?.is_none() {
                return Ok(RetireOutcome::Unknown);
            }
            let inserted = sqlx::query(
                "INSERT INTO workload_key_retirements (keyid, not_after_us, retired_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (keyid) DO NOTHING",
            )
            .bind(keyid)
            .bind(not_after_us)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            let stored = key(pool, keyid)
                .await?
                .ok_or_else(|| StoreError::Refused("a registered key vanished".into()))?;
            Ok(super::retire_outcome(inserted == 1, not_after_us, stored))
        }

        /// The batch record a stored event (by `seq`) arrived in.
        pub async fn batch_of(pool: &$pool, seq: i64) -> Result<Option<BatchRecord>, StoreError> {
            let row = sqlx::query(
                "SELECT b.keyid, b.source, b.batch_seq, b.signature_ts, b.signature, b.batch_digest, b.event_hashes \
                 FROM event_batches e JOIN batch_records b ON b.id = e.batch_id WHERE e.seq = $1",
            )
            .bind(seq)
            .fetch_optional(pool)
            .await?;
            row.map(|r| {
                super::batch_record(
                    r.try_get("keyid")?,
                    r.try_get("source")?,
                    r.try_get("batch_seq")?,
                    r.try_get("signature_ts")?,
                    r.try_get("signature")?,
                    r.try_get("batch_digest")?,
                    r.try_get("event_hashes")?,
                )
            })
            .transpose()
        }

        /// The id of `record` in `batch_records`, inserting it when new.
        async fn record_id(
            tx: &mut $conn,
            record: &BatchRecord,
            received_at: &str,
        ) -> Result<i64, StoreError> {
            sqlx::query(
                "INSERT INTO batch_records (batch_digest, keyid, source, batch_seq, signature_ts, signature, event_hashes, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (batch_digest, signature) DO NOTHING",
            )
            .bind(&record.batch_digest)
            .bind(&record.keyid)
            .bind(&record.source)
            .bind(record.batch_seq)
            .bind(record.signature_ts.as_deref())
            .bind(&record.signature)
            .bind(super::hashes_json(record))
            .bind(received_at)
            .execute(&mut *tx)
            .await?;
            Ok(sqlx::query_scalar(
                "SELECT id FROM batch_records WHERE batch_digest = $1 AND signature = $2",
            )
            .bind(&record.batch_digest)
            .bind(&record.signature)
            .fetch_one(&mut *tx)
            .await?)
        }
    };
}

pub(crate) use registry_sql;
