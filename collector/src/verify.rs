//! Whole-store verification, shared by `GET /v1/verify` and the `verify`
//! command: from the newest retention anchor (or genesis), page through the
//! rows in `seq` order and feed them to the [`ChainVerifier`].

use crate::chain::{ChainBreak, ChainHead, ChainRow, ChainVerifier};
use crate::store::{EventStore, StoreError};
use serde::Serialize;

/// Rows read per page.
pub const PAGE: i64 = 1000;

/// `GET /v1/verify`'s answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    pub checked: u64,
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    pub head: ChainHead,
}

/// Checks the whole store; `progress(checked)` is called after each page.
pub async fn verify_store(
    store: &dyn EventStore,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let recorded_head = store.head().await?;
    let anchor = match store.retention_anchor().await? {
        Some(a) => a.as_head(),
        None => ChainHead::genesis(),
    };
    let mut verifier = ChainVerifier::new(anchor);
    // From the very first row: rows left below the anchor are a break too.
    let mut after = 0;
    let broken = 'pages: loop {
        let rows = store.scan(after, PAGE).await?;
        if rows.is_empty() {
            break None;
        }
        for row in &rows {
            let r = ChainRow {
                seq: row.seq,
                id: &row.id,
                event_hash: &row.event_hash,
                chain_hash: &row.chain_hash,
                canonical: row.canonical.as_bytes(),
                index: Some(&row.index),
            };
            if let Err(b) = verifier.feed(&r) {
                break 'pages Some(b);
            }
            after = row.seq;
        }
        progress(verifier.checked());
    };
    let broken: Option<ChainBreak> = broken.or_else(|| verifier.finish(&recorded_head).err());
    Ok(VerifyReport {
        ok: broken.is_none(),
        checked: verifier.checked(),
        first_bad_seq: broken.as_ref().map(|b| b.seq),
        reason: broken.map(|b| b.reason),
        head: verifier.head().clone(),
    })
}
