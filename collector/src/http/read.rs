//! Read and verify endpoints (SPEC §7): `GET /v1/events` with filters and a
//! `seq` cursor, `GET /v1/events/{id}`, `GET /v1/verify`. They need the admin
//! token when `MESHAUDIT_ADMIN_TOKEN` is set; `/v1/verify` refuses to run at
//! all without one.

use super::{ApiError, AppState};
use crate::auth::admin_token_matches;
use crate::config::parse_bool;
use crate::prepare::parse_rfc3339_us;
use crate::store::{EventQuery, StoredEvent};
use crate::verify::{verify_store_cached, VerifyOptions, VerifyReport};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;

/// Most events one page answers.
pub const MAX_LIMIT: i64 = 1000;
/// Events per page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/verify", get(verify))
}

/// Kept here too: the keys module and older callers name it by this path.
pub use crate::view::EventItem;

#[derive(Serialize)]
pub struct EventPage {
    pub events: Vec<EventItem>,
    pub next_cursor: Option<i64>,
}

pub(crate) fn require_admin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &app.settings.admin_token else {
        return Ok(());
    };
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if admin_token_matches(token, h("authorization"), h("x-admin-token")) {
        Ok(())
    } else {
        Err(ApiError::unauthorized_admin())
    }
}

fn bad_param(name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_query",
        format!("query parameter {name}: {why}"),
    )
}

/// Builds the store query from the URL parameters (pure).
pub fn event_query(params: &HashMap<String, String>) -> Result<EventQuery, ApiError> {
    let text = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        match params.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| bad_param(k, "expected a whole number")),
        }
    };
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        match params.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_rfc3339_us(v)
                .map(Some)
                .ok_or_else(|| bad_param(k, "expected an RFC 3339 date-time")),
        }
    };
    let limit = int("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad_param("limit", "expected 1 to 1000"));
    }
    Ok(EventQuery {
        tenant: text("tenant"),
        namespace: text("namespace"),
        pod: text("pod"),
        user: text("user"),
        method: text("method"),
        path_prefix: text("path_prefix"),
        status: int("status")?,
        since_us: time("since")?,
        until_us: time("until")?,
        after: int("after")?,
        limit,
        text: match text("q") {
            None => None,
            Some(q) => {
                Some(crate::search::query::parse(&q).map_err(|e| bad_param("q", &e.to_string()))?)
            }
        },
    })
}

fn item(event: StoredEvent) -> Result<EventItem, ApiError> {
    EventItem::try_from(event).map_err(|e| {
        tracing::error!(error = %e, "a stored event is not JSON");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a stored event could not be read; run verify",
        )
    })
}

async fn list_events(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<EventPage>, ApiError> {
    require_admin(&app, &headers)?;
    let q = event_query(&params)?;
    let events = app
        .store
        .query(&q)
        .await
        .map_err(|e| ApiError::store_unavailable(&e))?;
    let next_cursor = if events.len() as i64 == q.limit {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(EventPage {
        events: events.into_iter().map(item).collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

async fn get_event(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    require_admin(&app, &headers)?;
    let found = app
        .store
        .get(&id)
        .await
        .map_err(|e| ApiError::store_unavailable(&e))?;
    match found {
        // With the `batch` object of a signed batch (SPEC §10).
        Some(ev) => crate::keys::http::with_batch(&app, item(ev)?).await,
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no event with this id",
        )),
    }
}

/// `GET /v1/verify[?incremental=1]`. Unlike the other reads it is never open:
/// with no admin token configured it answers `403`, because each call reads
/// the store (and the archives) and an open one is a way to load the
/// database. Runs are serialised (one scan at a time, whoever asks). A run
/// walks every row; `incremental=1` resumes after the last link an earlier
/// run verified instead (cheap, but blind to later changes below it).
async fn verify(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<VerifyReport>, ApiError> {
    if app.settings.admin_token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_token_not_configured",
            "GET /v1/verify needs MESHAUDIT_ADMIN_TOKEN to be set on the collector; \
             without it, run `meshaudit-collector verify`",
        ));
    }
    require_admin(&app, &headers)?;
    let incremental = match params.get("incremental").map(|v| parse_bool(v)) {
        None => false,
        Some(Some(b)) => b,
        Some(None) => return Err(bad_param("incremental", "expected 1, 0, true or false")),
    };
    let mut cache = app.verify_cache.lock().await;
    let options = VerifyOptions {
        archive_dir: app.settings.archive_dir.clone(),
        accept_unproven_anchor: app.settings.accept_unproven_anchor,
        resume_from: if incremental {
            cache.watermark.clone()
        } else {
            None
        },
    };
    let report = verify_store_cached(app.store.as_ref(), &options, &mut cache, |_| {})
        .await
        .map_err(|e| ApiError::store_unavailable(&e))?;
    cache.watermark = report.rows_intact.then(|| report.head.clone());
    if !report.ok {
        tracing::error!(first_bad_seq = ?report.first_bad_seq, reason = ?report.reason, "chain verification failed");
    }
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_limits() {
        let q = event_query(&params(&[])).unwrap();
        assert_eq!(q.limit, 100);
        assert!(event_query(&params(&[("limit", "1001")])).is_err());
        assert!(event_query(&params(&[("limit", "0")])).is_err());
        assert!(event_query(&params(&[("status", "abc")])).is_err());
        assert!(event_query(&params(&[("since", "yesterday")])).is_err());
        let q = event_query(&params(&[
            ("since", "2026-01-01T00:00:00Z"),
            ("after", "7"),
            ("method", "get"),
        ]))
        .unwrap();
        assert_eq!(q.since_us, Some(1_767_225_600_000_000));
        assert_eq!(q.after, Some(7));
    }
}
