//! The ingest hook of SPEC §10, run after parsing (the event hashes are
//! recomputed) and before idempotency: per-event Ed25519 signatures checked
//! with the registry, then `X-Meshaudit-Batch-Signature`. A refused batch is
//! [`Refusal::BatchSignature`]: `401 {"error": "batch_signature"}`, nothing
//! stored, counted under `audit_events_rejected_total{reason="batch_signature"}`.

use super::batch::{self, Claim};
use super::registry::{static_record, KeyRecord};
use crate::http::AppState;
use crate::ingest::Refusal;
use crate::prepare::PreparedEvent;
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A key by id: the registry first (it can retire and scope keys), then
/// `AUDIT_RECEIVER_BATCH_KEYS`.
async fn lookup(
    app: &AppState,
    keyid: &str,
    n_events: usize,
) -> Result<Option<KeyRecord>, Refusal> {
    if app.store.raw_pool().is_some() {
        if let Some(k) = super::key(&app.store, keyid)
            .await
            .map_err(|e| Refusal::store_unavailable(&e, n_events as u64))?
        {
            return Ok(Some(k));
        }
    }
    Ok(app
        .settings
        .batch_keys
        .iter()
        .find(|k| k.name() == keyid)
        .map(static_record))
}

/// Checks the batch and its Ed25519 events; on success each event of a
/// signed batch carries the batch record the writer stores with it.
pub async fn check(
    app: &AppState,
    headers: &HeaderMap,
    events: &mut [PreparedEvent],
) -> Result<(), Refusal> {
    verify_ed25519_events(app, events).await?;
    let Some(value) = header(headers, "x-meshaudit-batch-signature") else {
        if app.settings.require_batch_signature {
            return Err(refuse(events.len(), batch::Refusal::Missing));
        }
        return Ok(());
    };
    let claim = Claim {
        header: value,
        source: header(headers, "x-meshaudit-source"),
        batch_seq: header(headers, "x-meshaudit-batch-seq"),
        signature_ts: header(headers, "x-signature-ts"),
    };
    let parsed = batch::parse_claim(claim).map_err(|r| refuse(events.len(), r))?;
    let key = lookup(app, &parsed.signature.keyid, events.len()).await?;
    let hashes: Vec<&str> = events.iter().map(|e| e.event_hash.as_str()).collect();
    let record = batch::check(&parsed, key.as_ref(), &hashes, now_us())
        .map_err(|r| refuse(events.len(), r))?;
    let record = Arc::new(record);
    for ev in events.iter_mut() {
        ev.batch = Some(record.clone());
    }
    Ok(())
}

/// The ingest layer counts and answers it (`401 batch_signature`); logged
/// here at info because a forged or stale key is worth an operator's look.
fn refuse(n_events: usize, why: batch::Refusal) -> Refusal {
    tracing::info!(reason = "batch_signature", message = %why, "ingest refused");
    Refusal::BatchSignature {
        message: why.to_string(),
        events: n_events as u64,
    }
}

/// `security.alg = "ed25519"` events (seed 001 publishers): their signature
/// is checked with the registry instead of the HMAC event keys.
async fn verify_ed25519_events(
    app: &AppState,
    events: &mut [PreparedEvent],
) -> Result<(), Refusal> {
    let mut keys: HashMap<String, Option<KeyRecord>> = HashMap::new();
    let now = now_us();
    let events_len = events.len();
    for ev in events.iter_mut() {
        let Some(sig) = batch::ed25519_security(&ev.canonical) else {
            continue;
        };
        if !keys.contains_key(&sig.keyid) {
            let k = lookup(app, &sig.keyid, events_len).await?;
            keys.insert(sig.keyid.clone(), k);
        }
        let key = keys.get(&sig.keyid).and_then(Option::as_ref);
        ev.verification = batch::verify_event_signature(&sig, &ev.event_hash, key, now);
    }
    Ok(())
}
