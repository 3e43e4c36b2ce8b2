//! What `retain` asks before removing records: every enabled exporter must
//! have delivered them (its cursor at or past the last removed seq), unless
//! the operator says `--force`. Exporters no longer configured are disabled
//! at `serve` start-up and do not hold records back.

use super::state::ExportDb;
use crate::store::StoreError;

/// Exporters that have not yet delivered `seq`: `(name, cursor)`.
pub async fn behind(database_url: &str, seq: i64) -> Result<Vec<(String, i64)>, StoreError> {
    let db = ExportDb::connect(database_url).await?;
    Ok(db
        .all()
        .await?
        .into_iter()
        .filter(|s| s.enabled && s.cursor < seq)
        .map(|s| (s.exporter, s.cursor))
        .collect())
}

/// `Err(message)` when removing every record up to `last_removed` would cut
/// records an exporter has not delivered.
pub async fn check_retain(database_url: &str, last_removed: i64) -> Result<(), String> {
    if last_removed < 1 {
        return Ok(());
    }
    let lagging = behind(database_url, last_removed)
        .await
        .map_err(|e| format!("cannot read the exporters' cursors: {e}"))?;
    if lagging.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = lagging
        .iter()
        .map(|(n, c)| format!("{n} (delivered up to seq {c})"))
        .collect();
    Err(format!(
        "refusing to remove events up to seq {last_removed}: not yet delivered by exporter(s) {}; \
         wait for them, or pass --force",
        list.join(", ")
    ))
}

/// [`check_retain`] for `retain --before CUTOFF`: the records it would remove
/// are those received before `cutoff`.
pub async fn check_retain_before(
    store: &dyn crate::store::EventStore,
    database_url: &str,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let first_kept = store
        .first_seq_received_from(cutoff)
        .await
        .map_err(|e| format!("cannot find the first kept seq: {e}"))?;
    check_retain(database_url, first_kept - 1).await
}
