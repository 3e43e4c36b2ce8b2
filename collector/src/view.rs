//! A stored event as readers see it — the `GET /v1/events` items and the
//! `query --format ndjson` lines — shared by the HTTP layer and the CLI so
//! neither depends on the other.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::store::StoredEvent;
use serde::Serialize;
use serde_json::value::RawValue;

/// One stored event as the API answers it; `event` is the stored canonical JSON.
#[derive(Serialize)]
pub struct EventItem {
    pub seq: i64,
    pub id: String,
    pub received_at: String,
    pub verified: Option<bool>,
    pub verify_reason: Option<String>,
    pub chain_hash: String,
    pub event: Box<RawValue>,
}

impl TryFrom<StoredEvent> for EventItem {
    type Error = serde_json::Error;
    fn try_from(e: StoredEvent) -> Result<Self, Self::Error> {
        Ok(Self {
            seq: e.seq,
            id: e.id,
            received_at: e.received_at,
            verified: e.verified,
            verify_reason: e.verify_reason,
            chain_hash: e.chain_hash,
            event: RawValue::from_string(e.canonical)?,
        })
    }
}
