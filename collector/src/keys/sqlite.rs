//! The key registry and batch records in SQLite (SPEC §10; tables from
//! migration `20261130100000_workload_keys.sql`): the shared SQL of
//! [`super::sql`], and the event→batch links row by row.

use crate::store::plan::NewRow;
use sqlx::{SqliteConnection, SqlitePool};

super::sql::registry_sql!(SqlitePool, sqlx::sqlite::SqliteRow, SqliteConnection);

/// Inside the append transaction: the batch record of every new row that
/// came in a signed batch, once per batch, and the rows' links to it.
pub async fn link_batches(
    tx: &mut SqliteConnection,
    rows: &[NewRow<'_>],
    received_at: &str,
) -> Result<(), StoreError> {
    for (record, seqs) in super::rows_by_batch(rows) {
        let id = record_id(tx, record, received_at).await?;
        for seq in seqs {
            sqlx::query("INSERT INTO event_batches (seq, batch_id) VALUES ($1, $2)")
                .bind(seq)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}
