//! `POST /v1/events` and `POST /audit`: the HTTP face of [`crate::ingest`],
//! which runs the SPEC §6 checks; this file only answers its outcome and
//! counts it.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{ApiError, AppState};
use crate::ingest::{ingest, Refusal};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::net::SocketAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(handle))
        .route("/audit", post(handle))
}

async fn handle(State(app): State<AppState>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = request.into_parts();
    match ingest(&app, &parts.headers, peer, body).await {
        Ok(answer) => {
            app.metrics
                .request(if answer.deduped { "deduped" } else { "ok" });
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(refusal) => {
            let reason = refusal.reason().label();
            app.metrics.reject(reason, refusal.counted_events());
            app.metrics.request(if refusal.status().is_server_error() {
                "error"
            } else {
                "refused"
            });
            tracing::debug!(reason, message = %refusal.message(), "ingest refused");
            let unread = refusal.body_may_be_unread();
            let mut response = ApiError::from(refusal).into_response();
            // The body of a refused request may be unread: do not let the
            // client keep sending it on a connection we would have to drain.
            if unread && parts.version <= Version::HTTP_11 {
                response
                    .headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
            }
            response
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let mut e = ApiError::new(r.status(), r.reason().label(), r.message());
        e.line = r.line();
        e.lines = r.lines().map(<[usize]>::to_vec);
        e.retry_after_secs = r.retry_after_secs();
        e
    }
}
