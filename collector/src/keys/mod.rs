//! Workload keys (SPEC §10): batch signatures the collector cannot forge.
//!
//! - [`registry`]: registrations, stored keys, validity and namespace scope (pure).
//! - [`batch`]: batch and per-event Ed25519 checks, the batch record (pure).
//! - [`sqlite`], [`postgres`] (one SQL text for both, `sql.rs`): the append-only registry, batch records and
//!   event→batch links in each backend (the links written inside the append
//!   transaction through [`link_batches`]).
//! - [`hook`]: the ingest hook (after parsing, against the recomputed hashes).
//! - [`http`]: `POST/GET /v1/admin/keys`, `POST /v1/admin/keys/{keyid}/retire`,
//!   and the `batch` object of `GET /v1/events/{id}`.
//! - [`offline`]: `verify-offline --batch-key VKEY --batch FILE`.

pub mod batch;
pub mod hook;
pub mod http;
pub mod offline;
pub mod postgres;
pub mod registry;
mod sql;
pub mod sqlite;

use crate::store::plan::NewRow;
use crate::store::{DynStore, RawPool, StoreError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use batch::BatchRecord;
use registry::{KeyRecord, NewKey};
use std::sync::Arc;

/// What registering a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added(KeyRecord),
    /// The very same key was registered before (a re-run Job): nothing changed.
    Unchanged(KeyRecord),
    /// The keyid is taken by another key (or the same key with other
    /// attributes): keys are never changed.
    Conflict(KeyRecord),
}

/// What retiring a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireOutcome {
    Retired(KeyRecord),
    /// Retired before with the same `not_after`.
    Unchanged(KeyRecord),
    /// Retired before with another `not_after`: a retirement is never changed.
    Conflict(KeyRecord),
    Unknown,
}

fn no_sql() -> StoreError {
    StoreError::Refused("this store has no key registry".into())
}

/// The key of `keyid`, if registered.
pub async fn key(store: &DynStore, keyid: &str) -> Result<Option<KeyRecord>, StoreError> {
    match store.raw_pool().ok_or_else(no_sql)? {
        RawPool::Sqlite(p) => sqlite::key(p, keyid).await,
        RawPool::Postgres(p) => postgres::key(p, keyid).await,
    }
}

/// Every registered key, oldest first.
pub async fn keys(store: &DynStore) -> Result<Vec<KeyRecord>, StoreError> {
    match store.raw_pool().ok_or_else(no_sql)? {
        RawPool::Sqlite(p) => sqlite::keys(p).await,
        RawPool::Postgres(p) => postgres::keys(p).await,
    }
}

pub async fn add(store: &DynStore, new: &NewKey, now: &str) -> Result<AddOutcome, StoreError> {
    match store.raw_pool().ok_or_else(no_sql)? {
        RawPool::Sqlite(p) => sqlite::add(p, new, now).await,
        RawPool::Postgres(p) => postgres::add(p, new, now).await,
    }
}

pub async fn retire(
    store: &DynStore,
    keyid: &str,
    not_after_us: i64,
    now: &str,
) -> Result<RetireOutcome, StoreError> {
    match store.raw_pool().ok_or_else(no_sql)? {
        RawPool::Sqlite(p) => sqlite::retire(p, keyid, not_after_us, now).await,
        RawPool::Postgres(p) => postgres::retire(p, keyid, not_after_us, now).await,
    }
}

/// The batch record of a stored event, if it came in a signed batch.
pub async fn batch_of(store: &DynStore, seq: i64) -> Result<Option<BatchRecord>, StoreError> {
    match store.raw_pool() {
        None => Ok(None),
        Some(RawPool::Sqlite(p)) => sqlite::batch_of(p, seq).await,
        Some(RawPool::Postgres(p)) => postgres::batch_of(p, seq).await,
    }
}

/// The stored columns of a key: base64 public key and JSON namespaces.
fn key_columns(new: &NewKey) -> (String, String) {
    (
        B64.encode(new.public_key),
        serde_json::to_string(&new.namespaces).unwrap_or_else(|_| "[]".into()),
    )
}

#[allow(clippy::too_many_arguments)]
fn key_record(
    keyid: String,
    public_key: String,
    namespaces: String,
    not_before_us: Option<i64>,
    created_at: String,
    not_after_us: Option<i64>,
    retired_at: Option<String>,
) -> Result<KeyRecord, StoreError> {
    let bad = || StoreError::Refused(format!("the stored key {keyid:?} is unreadable"));
    let public_key: [u8; 32] = B64
        .decode(&public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let namespaces: Vec<String> = serde_json::from_str(&namespaces).map_err(|_| bad())?;
    Ok(KeyRecord {
        key: NewKey {
            keyid,
            public_key,
            namespaces,
            not_before_us,
        },
        created_at,
        not_after_us,
        retired_at,
    })
}

fn add_outcome(inserted: bool, new: &NewKey, stored: KeyRecord) -> AddOutcome {
    if inserted {
        AddOutcome::Added(stored)
    } else if &stored.key == new {
        AddOutcome::Unchanged(stored)
    } else {
        AddOutcome::Conflict(stored)
    }
}

fn retire_outcome(inserted: bool, not_after_us: i64, stored: KeyRecord) -> RetireOutcome {
    if inserted {
        RetireOutcome::Retired(stored)
    } else if stored.not_after_us == Some(not_after_us) {
        RetireOutcome::Unchanged(stored)
    } else {
        RetireOutcome::Conflict(stored)
    }
}

#[allow(clippy::too_many_arguments)]
fn batch_record(
    keyid: String,
    source: String,
    batch_seq: i64,
    signature_ts: Option<String>,
    signature: String,
    batch_digest: String,
    event_hashes: String,
) -> Result<BatchRecord, StoreError> {
    let event_hashes = serde_json::from_str(&event_hashes)
        .map_err(|_| StoreError::Refused("a stored batch record is unreadable".into()))?;
    Ok(BatchRecord {
        keyid,
        source,
        batch_seq,
        signature_ts,
        signature,
        batch_digest,
        event_hashes,
    })
}

fn hashes_json(record: &BatchRecord) -> String {
    serde_json::to_string(&record.event_hashes).unwrap_or_else(|_| "[]".into())
}

/// New rows grouped by the batch record they came with (one group per
/// signed batch, in first-row order); rows from unsigned batches are left out.
fn rows_by_batch<'a>(rows: &'a [NewRow<'_>]) -> Vec<(&'a BatchRecord, Vec<i64>)> {
    let mut groups: Vec<(&'a Arc<BatchRecord>, Vec<i64>)> = Vec::new();
    for row in rows {
        let Some(record) = row.event.batch.as_ref() else {
            continue;
        };
        match groups.iter_mut().find(|(r, _)| Arc::ptr_eq(r, record)) {
            Some((_, seqs)) => seqs.push(row.seq),
            None => groups.push((record, vec![row.seq])),
        }
    }
    groups.into_iter().map(|(r, s)| (r.as_ref(), s)).collect()
}
