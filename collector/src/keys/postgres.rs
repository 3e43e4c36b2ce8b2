//! The key registry and batch records in PostgreSQL (SPEC §10; tables from
//! migration `20261130100000_workload_keys.sql`): the shared SQL of
//! [`super::sql`], and the event→batch links as one array insert.

use crate::store::plan::NewRow;
use sqlx::{PgConnection, PgPool};

super::sql::registry_sql!(PgPool, sqlx::postgres::PgRow, PgConnection);

/// Inside the append transaction: the batch record of every new row that
/// came in a signed batch, once per batch, and the rows' links to it.
pub async fn link_batches(
    tx: &mut PgConnection,
    rows: &[NewRow<'_>],
    received_at: &str,
) -> Result<(), StoreError> {
    for (record, seqs) in super::rows_by_batch(rows) {
        let id = record_id(tx, record, received_at).await?;
        sqlx::query(
            "INSERT INTO event_batches (seq, batch_id) SELECT s, $2 FROM unnest($1::bigint[]) AS x(s)",
        )
        .bind(&seqs)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
