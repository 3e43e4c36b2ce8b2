//! Key registry endpoints (SPEC §10), all behind the admin token — and,
//! unlike the read endpoints, never open: without `MESHAUDIT_ADMIN_TOKEN`
//! they answer `403`, because whoever registers a key may sign events.
//!
//! - `POST /v1/admin/keys` `{"keyid", "algorithm", "public_key", "namespaces"?, "not_before"?}`:
//!   `201` added, `200` the very same key again, `400` a bad key or a keyid taken by another key.
//! - `GET /v1/admin/keys`: `{"keys": [...]}`, registry and `AUDIT_RECEIVER_BATCH_KEYS`.
//! - `POST /v1/admin/keys/{keyid}/retire` `{"not_after"?}` (default now): `200`, `404`
//!   unknown, `409` retired before at another time.
//!
//! [`with_batch`] adds the `batch` object to `GET /v1/events/{id}`.

use super::registry::{self, KeyView, Registration, Retirement};
use super::{AddOutcome, RetireOutcome};
use crate::http::read::{require_admin, EventItem};
use crate::http::{ApiError, AppState};
use crate::prepare::parse_rfc3339_us;
use crate::store::format_time;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/keys", get(list).post(register))
        .route("/v1/admin/keys/{keyid}/retire", post(retire))
}

fn admin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.settings.admin_token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_token_not_configured",
            "the key registry needs MESHAUDIT_ADMIN_TOKEN to be set on the collector",
        ));
    }
    require_admin(app, headers)
}

fn bad_key(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_key", message)
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    ApiError::store_unavailable(&e)
}

async fn register(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let reg: Registration = serde_json::from_slice(&body)
        .map_err(|e| bad_key(format!("the body is not a key registration: {e}")))?;
    let new = registry::validate(&reg).map_err(bad_key)?;
    if let Some(fixed) = app
        .settings
        .batch_keys
        .iter()
        .find(|k| k.name() == new.keyid)
    {
        if fixed.public_bytes() != new.public_key {
            return Err(bad_key(format!(
                "keyid {:?} is already configured (AUDIT_RECEIVER_BATCH_KEYS) with another key",
                new.keyid
            )));
        }
    }
    let now = format_time(chrono::Utc::now());
    match super::add(&app.store, &new, &now).await.map_err(store_err)? {
        AddOutcome::Added(rec) => {
            tracing::info!(keyid = %rec.key.keyid, namespaces = ?rec.key.namespaces, "workload key registered");
            Ok((StatusCode::CREATED, Json(KeyView::new(&rec, "registry"))).into_response())
        }
        AddOutcome::Unchanged(rec) => Ok(Json(KeyView::new(&rec, "registry")).into_response()),
        AddOutcome::Conflict(_) => Err(bad_key(format!(
            "keyid {:?} is already registered with another key or other attributes; keys are never changed: register a new keyid",
            new.keyid
        ))),
    }
}

#[derive(Serialize)]
struct KeyList {
    keys: Vec<KeyView>,
}

async fn list(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<KeyList>, ApiError> {
    admin(&app, &headers)?;
    let mut keys: Vec<KeyView> = super::keys(&app.store)
        .await
        .map_err(store_err)?
        .iter()
        .map(|k| KeyView::new(k, "registry"))
        .collect();
    keys.extend(
        app.settings
            .batch_keys
            .iter()
            .map(|k| KeyView::new(&registry::static_record(k), "config")),
    );
    Ok(Json(KeyList { keys }))
}

async fn retire(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(keyid): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    admin(&app, &headers)?;
    let retirement: Retirement = if body.iter().all(u8::is_ascii_whitespace) {
        Retirement::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| bad_key(format!("the body is not a retirement: {e}")))?
    };
    let now = chrono::Utc::now();
    let not_after_us = match retirement.not_after.as_deref() {
        None => now.timestamp_micros(),
        Some(t) => {
            parse_rfc3339_us(t).ok_or_else(|| bad_key("not_after must be an RFC 3339 date-time"))?
        }
    };
    match super::retire(&app.store, &keyid, not_after_us, &format_time(now))
        .await
        .map_err(store_err)?
    {
        RetireOutcome::Retired(rec) => {
            tracing::info!(keyid = %keyid, not_after_us, "workload key retired");
            Ok(Json(KeyView::new(&rec, "registry")))
        }
        RetireOutcome::Unchanged(rec) => Ok(Json(KeyView::new(&rec, "registry"))),
        RetireOutcome::Conflict(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_retired",
            "this key was retired before with another not_after; a retirement is never changed",
        )),
        RetireOutcome::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no registered key with this keyid",
        )),
    }
}

/// `GET /v1/events/{id}`'s answer: the item, plus `"batch": {...}` when the
/// event came in a verified signed batch. The item is serialised first and
/// the member spliced in, so the stored event JSON stays byte-exact.
pub async fn with_batch(app: &AppState, item: EventItem) -> Result<Response, ApiError> {
    let batch = super::batch_of(&app.store, item.seq)
        .await
        .map_err(store_err)?;
    let internal = |e: serde_json::Error| {
        tracing::error!(error = %e, "an event answer could not be serialised");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the event could not be answered",
        )
    };
    let mut json = serde_json::to_string(&item).map_err(internal)?;
    if let Some(batch) = batch {
        let member = serde_json::to_string(&batch).map_err(internal)?;
        if json.ends_with('}') {
            json.pop();
            json.push_str(",\"batch\":");
            json.push_str(&member);
            json.push('}');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
