//! The HTTP API: [`router`] merges the ingest ([`ingest`]), read and verify
//! ([`read`]) and operational ([`health`]) routes over one [`AppState`].
//! [`ApiError`] is the one error type answered to clients (SPEC §6 bodies).

pub mod health;
pub mod ingest;
pub mod log;
pub mod read;
pub mod ui;
pub mod ui_api;

use crate::config::Settings;
use crate::ingest::admission::Admission;
use crate::ingest::idempotency::InflightKeys;
use crate::ingest::sources::Sources;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::store::writer::Writer;
use crate::store::DynStore;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: DynStore,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub rate_limiter: Arc<RateLimiter>,
    pub inflight: Arc<InflightKeys>,
    /// The verifiable log (SPEC §9) and its checkpointer.
    pub log: Arc<crate::log::service::LogService>,
    /// `X-Meshaudit-Source`s tracked in metrics.
    pub sources: Arc<Sources>,
    /// Body bytes in flight (`MESHAUDIT_MAX_INFLIGHT_BYTES`).
    pub admission: Arc<Admission>,
    /// `GET /v1/verify`: one run at a time, resuming from the last verified link.
    pub verify_cache: Arc<tokio::sync::Mutex<crate::verify::VerifyCache>>,
}

impl AppState {
    /// Builds the state over an opened, migrated store and starts the writer;
    /// the writer task ends when every clone of the state is dropped.
    pub fn start(
        settings: Settings,
        store: DynStore,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (writer, writer_task) =
            Writer::start(store.clone(), metrics.clone(), settings.idemp_ttl_secs);
        let log = crate::log::service::LogService::start(settings.log.clone(), &store, &metrics);
        let state = Self {
            log,
            rate_limiter: Arc::new(RateLimiter::new(settings.rate_limit_rps)),
            sources: Arc::new(Sources::new(
                settings.limits.max_sources,
                settings.limits.source_ttl_secs,
            )),
            admission: Arc::new(Admission::new(settings.limits.max_inflight_bytes)),
            settings: Arc::new(settings),
            store,
            writer,
            metrics,
            inflight: Arc::new(InflightKeys::default()),
            verify_cache: Arc::default(),
        };
        (state, writer_task)
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ingest::router())
        .merge(read::router())
        .merge(health::router())
        .merge(log::router())
        .merge(crate::keys::http::router())
        .merge(ui::router())
        .merge(ui_api::router())
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A refusal or failure, answered as `{"error", "message", "line"?, "lines"?}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable reason (the metric reason for ingest refusals).
    pub error: &'static str,
    pub message: String,
    pub line: Option<usize>,
    pub lines: Option<Vec<usize>>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lines: Option<&'a [usize]>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
            line: None,
            lines: None,
            retry_after_secs: None,
        }
    }

    pub fn unauthorized_admin() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "admin_token",
            "this endpoint needs the admin token (Authorization: Bearer … or X-Admin-Token)",
        )
    }

    /// A store failure: logged in full, answered generically.
    pub fn store_unavailable(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "store unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event store is unavailable; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            message: &self.message,
            line: self.line,
            lines: self.lines.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}
