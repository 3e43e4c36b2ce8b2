//! Ingest: `POST /v1/events` (SPEC §6) as one pass over the checks, in the
//! order the SPEC lists them, each refusing with a [`Refusal`] and storing
//! nothing, then the group-commit writer (`200` only after commit).
//!
//! | step | file | refusal |
//! |---|---|---|
//! | 1 media type, encoding | [`body`] | `415 content_type` |
//! | 2 size, from `Content-Length`, before reading | [`body`] | `413 too_large` |
//! | 3 API key, before reading | [`auth`] | `401 api_key` |
//! | 4 timestamp | [`auth`] | `401 timestamp` |
//! | – memory for the body | [`admission`] | `503 overloaded` + `Retry-After` |
//! | – reading the body, in time and within the limit | [`body`] | `408 timeout`, `413` |
//! | 5 signature over the raw body | [`auth`] | `401 signature` |
//! | 6 rate of this identity | [`crate::rate_limit`] | `429 rate_limited` + `Retry-After` |
//! | 7–8 decompression, event count, parsing, hashing, ids (blocking pool) | [`events`] | `413`, `400 malformed` + `line` |
//! | 5′ signature over the batch digest (`X-Signature-Scheme: digest`) | [`auth`] | `401 signature` |
//! | 5″ workload batch signature, per-event Ed25519 (SPEC §10) | [`crate::keys::hook`] | `401 batch_signature` |
//! | 9 idempotency | [`idempotency`] | `409 idempotency_conflict` |
//! | 10 event verification | here | `422 unverified` + `lines` |
//! | – the store | here | `503 store_unavailable` |
//!
//! Nothing on this path may panic: a client must never be able to take a
//! worker down (the lints below, tests excepted).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admission;
pub mod auth;
pub mod body;
pub mod events;
pub mod idempotency;
pub mod refusal;
pub mod sources;

pub use refusal::{Reason, Refusal};

use crate::http::AppState;
use crate::prepare::PreparedEvent;
use crate::rate_limit::retry_after_secs;
use crate::store::writer::WriterError;
use crate::store::{BatchAnswer, BatchWrite, WriteOutcome};
use axum::body::Body;
use axum::http::HeaderMap;
use body::header;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs every check on one request and appends its events.
pub async fn ingest(
    app: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    body: Body,
) -> Result<BatchAnswer, Refusal> {
    let settings = &app.settings;
    let limit = settings.max_body_bytes;

    // 1–4, from the headers alone: nothing of the body is read (or held) for
    // a request that would be refused anyway.
    let (framing, encoding) = body::media(headers)?;
    let declared = body::declared_length(headers, limit)?;
    let identity = auth::identify(settings, headers, peer)?;
    auth::timestamp(settings, headers, now_secs())?;
    let signature = auth::SignatureCheck::new(settings, headers)?;

    let mut admitted = admission::Admitted::new(app.metrics.clone());
    app.admission
        .admit(&mut admitted, declared.unwrap_or(limit))?;
    let raw = body::read_bounded(body, limit, declared, settings.limits.body_read_timeout).await?;

    // 5. Batch signature over the exact bytes received.
    let verify_started = Instant::now();
    signature.check_body(&settings.signing_secrets, &raw)?;
    let mut verify_elapsed = verify_started.elapsed();

    // 6. Rate, per authenticated identity.
    if let Err(wait) = app.rate_limiter.check(&identity.bucket(), Instant::now()) {
        return Err(Refusal::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }

    // 7–8. Decompression, count, parsing, hashing: off the async workers.
    let raw = Arc::new(raw);
    let decoded = match encoding {
        body::Encoding::Identity => raw.clone(),
        body::Encoding::Gzip => {
            let inflated = events::gunzip_blocking(raw.clone(), limit).await?;
            app.admission.admit(&mut admitted, inflated.len())?;
            Arc::new(inflated)
        }
    };
    let verify_started = Instant::now();
    let events = events::Decode {
        framing,
        max_events: settings.limits.max_batch_events,
        keys: Arc::new(settings.event_keys.clone()),
    }
    .run_blocking(decoded)
    .await?;
    let n_events = events.len() as u64;

    // 5′. Under `X-Signature-Scheme: digest`, the signature over the hashes
    // just recomputed.
    signature.check_digest(
        &settings.signing_secrets,
        events.iter().map(|e| e.event_hash.as_str()),
    )?;
    // 5″. SPEC §10 workload keys ([`crate::keys::hook`]): per-event Ed25519
    // and `X-Meshaudit-Batch-Signature`, over the hashes just recomputed.
    let mut events = events;
    crate::keys::hook::check(app, headers, &mut events).await?;
    verify_elapsed += verify_started.elapsed();
    app.metrics
        .signature_verification_seconds
        .observe(verify_elapsed.as_secs_f64());
    // Only authenticated batches count as a source having been seen.
    app.sources.record(
        &app.metrics,
        header(headers, "x-meshaudit-source"),
        header(headers, "x-meshaudit-dropped"),
        now_secs(),
    );

    // 9. Idempotency: a replay answers the first answer; another body is 409.
    let scope = crate::auth::idempotency_scope(header(headers, "x-api-key"));
    let idempotency = idempotency::key(headers, &scope, &raw);
    let _inflight = match &idempotency {
        Some(idem) => Some(app.inflight.acquire(&idem.scope, &idem.key).await),
        None => None,
    };
    if let Some(idem) = &idempotency {
        if let Some(answer) = idempotency::lookup(&app.store, idem, n_events).await? {
            app.metrics.events_deduped.inc_by(n_events);
            return Ok(answer);
        }
    }

    // 10. Event verification.
    verification(app, &events)?;

    // 11. Durable append.
    let sources: Vec<&'static str> = events.iter().map(|e| e.source.label()).collect();
    match app
        .writer
        .append(BatchWrite {
            events,
            idempotency,
        })
        .await
    {
        Ok(WriteOutcome::Stored {
            answer,
            conflict_ids,
        }) => {
            for source in sources {
                app.metrics
                    .events_received
                    .with_label_values(&[source])
                    .inc();
            }
            app.metrics.events_deduped.inc_by(answer.duplicates);
            if !conflict_ids.is_empty() {
                app.metrics
                    .reject(Reason::IdConflict.label(), answer.conflicts);
                tracing::warn!(
                    ids = ?conflict_ids,
                    "event id already stored with a different hash: a bug or a forgery; not stored"
                );
            }
            Ok(answer)
        }
        Ok(WriteOutcome::Replay(answer)) => {
            app.metrics.events_deduped.inc_by(n_events);
            Ok(answer)
        }
        Ok(WriteOutcome::IdempotencyConflict) => {
            Err(Refusal::IdempotencyConflict { events: n_events })
        }
        Err(e @ (WriterError::Unavailable(_) | WriterError::Stopped)) => {
            Err(Refusal::store_unavailable(&e, n_events))
        }
    }
}

/// Counts unverified events; under `AUDIT_RECEIVER_REJECT_UNVERIFIED` they
/// refuse the batch, naming their lines.
fn verification(app: &AppState, events: &[PreparedEvent]) -> Result<(), Refusal> {
    let unverified: Vec<&PreparedEvent> = events
        .iter()
        .filter(|e| e.verification.verified() == Some(false))
        .collect();
    for ev in &unverified {
        if let Some(reason) = ev.verification.reason() {
            app.metrics
                .events_unverified
                .with_label_values(&[reason])
                .inc();
        }
    }
    if app.settings.reject_unverified && !unverified.is_empty() {
        return Err(Refusal::Unverified {
            lines: unverified.iter().map(|e| e.line).collect(),
            events: events.len() as u64,
        });
    }
    Ok(())
}
