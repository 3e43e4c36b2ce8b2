//! The read endpoints the auditor's page needs beyond SPEC §7, all behind the
//! admin token like the other read endpoints:
//! - `GET /v1/stats?since=&until=&by=&bucket=` (counts per time bucket),
//! - `GET /v1/overview` (integrity at a glance: chain head, unverified count,
//!   rejections by reason, sources that reported drops, log checkpoint age),
//! - `GET /v1/events/{id}/canonical` (the stored canonical JSON, byte-exact,
//!   so a browser can hash exactly what the chain and the log hashed).

use super::read::require_admin;
use super::{ApiError, AppState};
use crate::prepare::parse_rfc3339_us;
use crate::search::stats::{
    event_time_range, stats as run_stats, unverified_count, StatsAnswer, StatsBy, StatsQuery,
};
use crate::store::StoreError;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The default stats window when `since` is not given.
const DEFAULT_WINDOW_US: i64 = 24 * 3600 * 1_000_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/overview", get(overview))
        .route("/v1/events/{id}/canonical", get(canonical))
}

fn bad(name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_query",
        format!("query parameter {name}: {why}"),
    )
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::store_unavailable(&e)
}

/// Builds the stats query from the URL parameters (pure). Without `since`
/// and `until` the window is every stored event (`range`, oldest to newest
/// `timestamp`), or the last 24 hours of an empty store; with one of them,
/// the other defaults to 24 hours away (`until` at most now).
pub fn stats_query(
    params: &HashMap<String, String>,
    now_us: i64,
    range: Option<(i64, i64)>,
) -> Result<StatsQuery, ApiError> {
    let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        get(k)
            .map(|v| parse_rfc3339_us(v).ok_or_else(|| bad(k, "expected an RFC 3339 date-time")))
            .transpose()
    };
    let (since, until) = match (time("since")?, time("until")?, range) {
        (None, None, Some((lo, hi))) => (lo, hi.saturating_add(1)),
        (None, None, None) => (now_us.saturating_sub(DEFAULT_WINDOW_US), now_us),
        (Some(s), None, _) => (
            s,
            s.saturating_add(DEFAULT_WINDOW_US).min(now_us.max(s + 1)),
        ),
        (None, Some(u), _) => (u.saturating_sub(DEFAULT_WINDOW_US), u),
        (Some(s), Some(u), _) => (s, u),
    };
    let by = get("by")
        .map(|b| {
            StatsBy::parse(b)
                .ok_or_else(|| bad("by", "expected namespace, pod, user, status or method"))
        })
        .transpose()?;
    let bucket = get("bucket")
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| bad("bucket", "expected whole seconds"))
        })
        .transpose()?;
    StatsQuery::new(since, until, bucket, by).map_err(|why| bad("since/until/bucket", &why))
}

async fn stats(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<StatsAnswer>, ApiError> {
    require_admin(&app, &headers)?;
    let range = if params.contains_key("since") || params.contains_key("until") {
        None
    } else {
        event_time_range(app.store.as_ref())
            .await
            .map_err(store_error)?
    };
    let q = stats_query(&params, chrono::Utc::now().timestamp_micros(), range)?;
    Ok(Json(
        run_stats(app.store.as_ref(), &q)
            .await
            .map_err(store_error)?,
    ))
}

/// One `X-Meshaudit-Source` as the collector's gauges know it.
#[derive(Debug, Serialize, PartialEq)]
pub struct SourceStatus {
    pub source: String,
    pub dropped: f64,
    pub last_seen: Option<f64>,
}

#[derive(Serialize)]
pub struct Overview {
    pub head: crate::chain::ChainHead,
    pub unverified: i64,
    /// `audit_events_rejected_total` by reason, since this process started.
    pub rejections: BTreeMap<String, f64>,
    /// Sources that reported dropped events (`X-Meshaudit-Dropped` > 0).
    pub sources_with_drops: Vec<SourceStatus>,
    pub sources_seen: usize,
    /// `audit_log_*` gauges, when this collector keeps the verifiable log.
    pub log: Option<BTreeMap<String, f64>>,
    pub admin_token_set: bool,
}

/// Samples of one metric in a Prometheus text exposition: (labels, value).
/// A small reader for the collector's own output (pure).
pub fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
            let mut labels = BTreeMap::new();
            let mut chars = body.char_indices().peekable();
            let mut end = None;
            loop {
                // name="value",
                let mut key = String::new();
                for (i, c) in chars.by_ref() {
                    if c == '}' {
                        end = Some(i);
                        break;
                    }
                    if c == '=' {
                        break;
                    }
                    if c != ',' {
                        key.push(c);
                    }
                }
                if end.is_some() || chars.next().is_none() {
                    break;
                }
                let mut val = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => val.push('\n'),
                            Some((_, c)) => val.push(c),
                            None => break,
                        },
                        '"' => break,
                        c => val.push(c),
                    }
                }
                labels.insert(key, val);
            }
            match end {
                Some(i) => (labels, &body[i + 1..]),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            (BTreeMap::new(), rest)
        } else {
            continue; // another metric whose name starts with `name`
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            out.push((labels, v));
        }
    }
    out
}

/// The overview's parts read from the collector's own metrics.
#[derive(Debug, PartialEq)]
struct FromMetrics {
    rejections: BTreeMap<String, f64>,
    drops: Vec<SourceStatus>,
    seen: usize,
    log: Option<BTreeMap<String, f64>>,
}

/// Reads [`FromMetrics`] from the text exposition (pure).
fn from_metrics(text: &str) -> FromMetrics {
    let label = |l: &BTreeMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
    let rejections = samples(text, "audit_events_rejected_total")
        .into_iter()
        .map(|(l, v)| (label(&l, "reason"), v))
        .collect();
    let last_seen: HashMap<String, f64> = samples(text, "audit_source_last_seen_timestamp_seconds")
        .into_iter()
        .map(|(l, v)| (label(&l, "source"), v))
        .collect();
    let dropped = samples(text, "audit_source_dropped_events");
    let seen = last_seen.len().max(dropped.len());
    let mut drops: Vec<SourceStatus> = dropped
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(l, v)| {
            let source = label(&l, "source");
            SourceStatus {
                last_seen: last_seen.get(&source).copied(),
                source,
                dropped: v,
            }
        })
        .collect();
    drops.sort_by(|a, b| b.dropped.total_cmp(&a.dropped));
    let log: BTreeMap<String, f64> = [
        "audit_log_tree_size",
        "audit_log_checkpoint_size",
        "audit_log_checkpoint_age_seconds",
    ]
    .into_iter()
    .filter_map(|n| samples(text, n).first().map(|(_, v)| (n.to_owned(), *v)))
    .collect();
    FromMetrics {
        rejections,
        drops,
        seen,
        log: (!log.is_empty()).then_some(log),
    }
}

async fn overview(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Overview>, ApiError> {
    require_admin(&app, &headers)?;
    let head = app.store.head().await.map_err(store_error)?;
    let unverified = unverified_count(app.store.as_ref())
        .await
        .map_err(store_error)?;
    let m = from_metrics(&app.metrics.render());
    Ok(Json(Overview {
        head,
        unverified,
        rejections: m.rejections,
        sources_with_drops: m.drops,
        sources_seen: m.seen,
        log: m.log,
        admin_token_set: app.settings.admin_token.is_some(),
    }))
}

async fn canonical(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&app, &headers)?;
    match app.store.get(&id).await.map_err(store_error)? {
        Some(ev) => Ok((
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            ev.canonical,
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no event with this id",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_collectors_exposition() {
        let text = "# HELP audit_events_rejected_total x\n\
            audit_events_rejected_total{reason=\"api_key\"} 3\n\
            audit_events_rejected_total{reason=\"malformed\"} 0\n\
            audit_events_rejected_total_other 9\n\
            audit_source_dropped_events{source=\"ns/p\\\"od\"} 4\n\
            audit_source_dropped_events{source=\"ns/quiet\"} 0\n\
            audit_source_last_seen_timestamp_seconds{source=\"ns/p\\\"od\"} 17\n\
            audit_log_tree_size 12\n";
        let FromMetrics {
            rejections: rej,
            drops,
            seen,
            log,
        } = from_metrics(text);
        assert_eq!(rej.get("api_key"), Some(&3.0));
        assert_eq!(rej.len(), 2);
        assert_eq!(
            drops,
            vec![SourceStatus {
                source: "ns/p\"od".into(),
                dropped: 4.0,
                last_seen: Some(17.0)
            }]
        );
        assert_eq!(seen, 2);
        assert_eq!(log.unwrap().get("audit_log_tree_size"), Some(&12.0));
    }

    #[test]
    fn stats_parameters() {
        let p = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let q = stats_query(&p(&[]), DEFAULT_WINDOW_US * 2, None).unwrap();
        assert_eq!(q.until_us - q.since_us, DEFAULT_WINDOW_US);
        let q = stats_query(&p(&[]), DEFAULT_WINDOW_US * 2, Some((5, 9))).unwrap();
        assert_eq!((q.since_us, q.until_us), (5, 10));
        let q = stats_query(&p(&[("since", "2026-01-01T00:00:00Z")]), i64::MAX, None).unwrap();
        assert_eq!(q.until_us - q.since_us, DEFAULT_WINDOW_US);
        assert!(stats_query(&p(&[("by", "tenant")]), 0, None).is_err());
        assert!(stats_query(&p(&[("since", "nope")]), 0, None).is_err());
        let q = stats_query(
            &p(&[
                ("since", "2026-01-01T00:00:00Z"),
                ("until", "2026-01-01T01:00:00Z"),
                ("by", "status"),
            ]),
            0,
            None,
        )
        .unwrap();
        assert_eq!(q.by, Some(StatsBy::Status));
        assert_eq!(q.bucket_us, 60_000_000);
    }
}
