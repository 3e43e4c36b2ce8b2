//! `POST /v1/events` and `POST /audit` (SPEC §6): the checks in order —
//! content type, size, API key, timestamp, signature, rate, parsing,
//! idempotency, event verification — each refusing with its status and
//! storing nothing, then the group-commit writer; `200` only after commit.

use super::{ApiError, AppState};
use crate::auth::{api_key_matches, idempotency_scope};
use crate::intake::{self, DecodeError, Encoding};
use crate::prepare::{prepare, PreparedEvent};
use crate::rate_limit::retry_after_secs;
use crate::store::writer::WriterError;
use crate::store::{BatchAnswer, BatchWrite, IdempotencyKey, WriteOutcome};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt;
use meshaudit_event::integrity::{
    batch_digest_hex, check_timestamp, sha256_hex, verify_batch_signature,
};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(ingest))
        .route("/audit", post(ingest))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What `X-Signature` signs (`X-Signature-Scheme`, SPEC §5 and §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureScheme {
    /// No header: `"{ts}." + raw body` (seed 000).
    RawBody,
    /// `digest`: `"{ts}." + hex(batch_digest)` over the recomputed event hashes.
    Digest,
}

fn signature_scheme(value: Option<&str>) -> Result<SignatureScheme, String> {
    match value.map(str::trim) {
        None => Ok(SignatureScheme::RawBody),
        Some(v) if v.eq_ignore_ascii_case("digest") => Ok(SignatureScheme::Digest),
        Some(_) => Err(
            "unknown X-Signature-Scheme: the only scheme is `digest` (or no header for the raw body)"
                .to_owned(),
        ),
    }
}

async fn ingest(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match ingest_checked(&app, &headers, body).await {
        Ok(answer) => {
            app.metrics
                .request(if answer.deduped { "deduped" } else { "ok" });
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(err) => {
            app.metrics.request(if err.status.is_server_error() {
                "error"
            } else {
                "refused"
            });
            err.into_response()
        }
    }
}

/// Refuses with `status`/`reason`, counting one rejection per request.
fn refuse(app: &AppState, status: StatusCode, reason: &'static str, message: String) -> ApiError {
    app.metrics.reject(reason, 1);
    tracing::debug!(reason, %message, "ingest refused");
    ApiError::new(status, reason, message)
}

async fn read_body_bounded(body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf))
}

async fn ingest_checked(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<BatchAnswer, ApiError> {
    let settings = &app.settings;

    // 1. Content type (and an encoding we can read).
    let Some(framing) = intake::framing(header(headers, "content-type")) else {
        return Err(refuse(
            app,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "Content-Type must be application/x-ndjson, application/ndjson or application/json"
                .to_owned(),
        ));
    };
    let Some(encoding) = intake::encoding(header(headers, "content-encoding")) else {
        return Err(refuse(
            app,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "Content-Encoding must be gzip or absent".to_owned(),
        ));
    };

    // 2. Size on the wire.
    let limit = settings.max_body_bytes;
    let too_large = |app: &AppState| {
        refuse(
            app,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    if let Some(len) = header(headers, "content-length").and_then(|l| l.trim().parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large(app));
        }
    }
    let raw = match read_body_bounded(body, limit).await {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(too_large(app)),
        Err(e) => {
            return Err(refuse(
                app,
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("the body could not be read: {e}"),
            ))
        }
    };

    // 3. API key.
    let api_key = header(headers, "x-api-key");
    if settings.require_api_key && !api_key_matches(&settings.api_keys, api_key) {
        return Err(refuse(
            app,
            StatusCode::UNAUTHORIZED,
            "api_key",
            "missing or unknown X-API-Key".to_owned(),
        ));
    }

    // 4. Timestamp window.
    let ts = header(headers, "x-signature-ts");
    if settings.enforce_ts {
        if let Err(e) = check_timestamp(ts, now_secs(), settings.ts_skew_secs) {
            return Err(refuse(
                app,
                StatusCode::UNAUTHORIZED,
                "timestamp",
                e.to_string(),
            ));
        }
    }

    // 5. Batch signature over the exact bytes received, or (scheme `digest`,
    // SPEC §10) over the batch digest, checked once the events are hashed.
    let verify_started = Instant::now();
    let signature = header(headers, "x-signature").unwrap_or("");
    let ts_text = ts.map(str::trim).unwrap_or("");
    let scheme = match signature_scheme(header(headers, "x-signature-scheme")) {
        Ok(scheme) => scheme,
        Err(message) if settings.require_signature => {
            return Err(refuse(app, StatusCode::UNAUTHORIZED, "signature", message))
        }
        Err(_) => SignatureScheme::RawBody,
    };
    if settings.require_signature
        && scheme == SignatureScheme::RawBody
        && !verify_batch_signature(&settings.signing_secrets, ts_text, &raw, signature)
    {
        return Err(refuse(
            app,
            StatusCode::UNAUTHORIZED,
            "signature",
            "missing or invalid X-Signature".to_owned(),
        ));
    }
    let mut verify_elapsed = verify_started.elapsed();

    // 6. Rate, per API key.
    let scope = idempotency_scope(api_key);
    if let Err(wait) = app.rate_limiter.check(&scope, Instant::now()) {
        let mut err = refuse(
            app,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this API key".to_owned(),
        );
        err.retry_after_secs = Some(retry_after_secs(wait));
        return Err(err);
    }
    record_source(app, headers);

    // 7. Decompression (bounded) and parsing.
    let decoded;
    let body_bytes: &[u8] = match encoding {
        Encoding::Identity => &raw,
        Encoding::Gzip => match intake::gunzip_bounded(&raw, limit) {
            Ok(d) => {
                decoded = d;
                &decoded
            }
            Err(DecodeError::TooLarge(_)) => return Err(too_large(app)),
            Err(DecodeError::Corrupt) => {
                return Err(refuse(
                    app,
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "the gzip body is corrupt".to_owned(),
                ))
            }
        },
    };
    let raw_events = match intake::split_events(body_bytes, framing) {
        Ok(events) => events,
        Err(m) => {
            let mut err = refuse(app, StatusCode::BAD_REQUEST, "malformed", m.message);
            err.line = m.line;
            return Err(err);
        }
    };
    let n_events = raw_events.len() as u64;

    // Hash and check every event (the costly part), then, under the digest
    // scheme, the batch signature over the recomputed hashes.
    let verify_started = Instant::now();
    let events: Vec<PreparedEvent> = raw_events
        .into_iter()
        .map(|raw| prepare(raw, &settings.event_keys))
        .collect();
    if settings.require_signature && scheme == SignatureScheme::Digest {
        let digest = batch_digest_hex(events.iter().map(|e| e.event_hash.as_str()));
        let ok = digest.is_some_and(|d| {
            verify_batch_signature(
                &settings.signing_secrets,
                ts_text,
                hex::encode(d).as_bytes(),
                signature,
            )
        });
        if !ok {
            return Err(refuse(
                app,
                StatusCode::UNAUTHORIZED,
                "signature",
                "missing or invalid X-Signature (scheme digest: HMAC of \"{ts}.\" + hex(batch_digest))"
                    .to_owned(),
            ));
        }
    }
    verify_elapsed += verify_started.elapsed();

    // 8. Idempotency: a replay answers the first answer; another body is 409.
    let idempotency = header(headers, "x-idempotency-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|key| IdempotencyKey {
            scope: scope.clone(),
            key: key.to_owned(),
            body_sha256: sha256_hex(&raw),
        });
    let _inflight = match &idempotency {
        Some(idem) => Some(app.inflight.acquire(&idem.scope, &idem.key).await),
        None => None,
    };
    if let Some(idem) = &idempotency {
        match app
            .store
            .idempotency_lookup(&idem.scope, &idem.key, chrono::Utc::now())
            .await
        {
            Ok(Some(record)) if record.body_sha256 == idem.body_sha256 => {
                app.metrics.events_deduped.inc_by(n_events);
                return Ok(BatchAnswer {
                    deduped: true,
                    ..record.answer
                });
            }
            Ok(Some(_)) => return Err(idempotency_conflict(app, n_events)),
            Ok(None) => {}
            Err(e) => {
                app.metrics.reject("store_unavailable", n_events.max(1));
                return Err(ApiError::store_unavailable(&e));
            }
        }
    }

    // 9. Event verification (the events were checked above).
    app.metrics
        .signature_verification_seconds
        .observe(verify_elapsed.as_secs_f64());
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
    if settings.reject_unverified && !unverified.is_empty() {
        app.metrics.reject("unverified", n_events);
        let lines: Vec<usize> = unverified.iter().map(|e| e.line).collect();
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unverified",
            format!(
                "{} event(s) failed hash or signature verification; nothing was stored",
                lines.len()
            ),
        );
        err.lines = Some(lines);
        return Err(err);
    }

    // 10. Durable append.
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
                app.metrics.reject("id_conflict", answer.conflicts);
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
        Ok(WriteOutcome::IdempotencyConflict) => Err(idempotency_conflict(app, n_events)),
        Err(e @ (WriterError::Unavailable(_) | WriterError::Stopped)) => {
            app.metrics.reject("store_unavailable", n_events.max(1));
            Err(ApiError::store_unavailable(&e))
        }
    }
}

fn idempotency_conflict(app: &AppState, n_events: u64) -> ApiError {
    app.metrics.reject("idempotency_conflict", n_events.max(1));
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this X-Idempotency-Key was used with a different body",
    )
}

/// `X-Meshaudit-Source`, `X-Meshaudit-Dropped`: lets the collector tell "no
/// traffic" from "a filter that loses events". Only authenticated requests get here.
fn record_source(app: &AppState, headers: &HeaderMap) {
    let Some(source) = header(headers, "x-meshaudit-source")
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 253)
    else {
        return;
    };
    app.metrics
        .source_last_seen
        .with_label_values(&[source])
        .set(now_secs() as f64);
    if let Some(dropped) =
        header(headers, "x-meshaudit-dropped").and_then(|d| d.trim().parse::<u64>().ok())
    {
        app.metrics
            .source_dropped
            .with_label_values(&[source])
            .set(dropped as f64);
    }
}
