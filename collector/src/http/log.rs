//! The verifiable log's read side (SPEC §9), open like `/metrics`: hashes and
//! signatures only, never event content. Checkpoints (`text/plain`), C2SP
//! tiles and entry bundles (`application/octet-stream`), the verifier key,
//! inclusion and consistency proofs (JSON). Bad parameters are `400`/`404`
//! with the §6 error body; store failures `503`.

use super::{ApiError, AppState};
use crate::log::db::StoredCheckpoint;
use crate::log::merkle::leaf_hash;
use crate::log::service::{LogError, LogService};
use crate::log::tiles::{parse_tile_path, tile_exists, TileKind};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/checkpoint", get(latest_checkpoint))
        .route("/v1/log/checkpoint", get(checkpoint))
        .route("/v1/log/key", get(key))
        .route("/v1/log/inclusion", get(inclusion))
        .route("/v1/log/consistency", get(consistency))
        .route("/tile/{*path}", get(tile))
}

fn unavailable(e: LogError) -> ApiError {
    ApiError::store_unavailable(&e)
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
}

fn text(body: String, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// A checkpoint is mutable: cache it a moment at most (C2SP tlog-tiles).
const MUTABLE: &str = "no-cache, max-age=1";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The newest checkpoint (as this replica knows it, at most two checkpoint
/// intervals old; `from_store`: read now, for a size beyond the one known).
async fn newest(log: &LogService, from_store: bool) -> Result<StoredCheckpoint, ApiError> {
    let latest = if from_store {
        log.latest_from_store().await
    } else {
        log.latest_checkpoint().await
    };
    match latest.map_err(unavailable)? {
        Some(cp) => Ok(cp),
        // The checkpointer makes one at start-up; until then there is none.
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_checkpoint",
            "no checkpoint has been signed yet; retry in a moment",
        )),
    }
}

/// `GET /checkpoint`: the newest signed checkpoint.
async fn latest_checkpoint(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(text(newest(&app.log, false).await?.note, MUTABLE))
}

/// `GET /v1/log/checkpoint[?size=N]`.
async fn checkpoint(
    State(app): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(size) = params.get("size") else {
        return latest_checkpoint(State(app)).await;
    };
    let size = number("size", size)?;
    let db = app.log.db().map_err(unavailable)?;
    match db
        .checkpoint_of_size(size)
        .await
        .map_err(|e| unavailable(e.into()))?
    {
        Some(cp) => Ok(text(cp.note, IMMUTABLE)),
        None => Err(not_found(format!(
            "no checkpoint of tree size {size} was kept"
        ))),
    }
}

/// `GET /v1/log/key`: the verifier key.
async fn key(State(app): State<AppState>) -> Result<Response, ApiError> {
    let key = app.log.verifier().await.map_err(unavailable)?;
    Ok(text(format!("{}\n", key.to_text()), MUTABLE))
}

fn number(name: &str, v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().map_err(|_| {
        bad(format!(
            "query parameter {name}: expected a whole number ≥ 0, got {v:?}"
        ))
    })
}

#[derive(Serialize)]
struct InclusionAnswer {
    seq: u64,
    leaf_index: u64,
    tree_size: u64,
    record_hash: String,
    leaf_hash: String,
    proof: Vec<String>,
}

/// `GET /v1/log/inclusion?seq=S|id=ID[&size=N]`.
async fn inclusion(
    State(app): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<InclusionAnswer>, ApiError> {
    let log = &app.log;
    let db = log.db().map_err(unavailable)?;
    let seq = match (params.get("seq"), params.get("id")) {
        (Some(s), None) => number("seq", s)?,
        (None, Some(id)) => match db.seq_of_id(id).await.map_err(|e| unavailable(e.into()))? {
            Some(s) => s as u64,
            None => return Err(not_found("no event with this id")),
        },
        _ => return Err(bad("give exactly one of seq and id")),
    };
    if seq == 0 {
        return Err(bad("query parameter seq: sequence numbers start at 1"));
    }
    let wanted = params.get("size").map(|s| number("size", s)).transpose()?;
    let mut latest = newest(log, false).await?;
    if wanted.unwrap_or(seq) > latest.size {
        latest = newest(log, true).await?; // another replica may have signed it
    }
    let size = wanted.unwrap_or(latest.size);
    if size > latest.size {
        return Err(bad(format!(
            "query parameter size: {size} is beyond the newest checkpoint ({})",
            latest.size
        )));
    }
    if seq > size {
        return Err(bad(format!(
            "seq {seq} is not in the tree of size {size} (it must be ≤ the size)"
        )));
    }
    let index = seq - 1;
    let (record, proof) = log.inclusion(index, size).await.map_err(unavailable)?;
    Ok(Json(InclusionAnswer {
        seq,
        leaf_index: index,
        tree_size: size,
        record_hash: hex::encode(record),
        leaf_hash: hex::encode(leaf_hash(&record)),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

#[derive(Serialize)]
struct ConsistencyAnswer {
    from: u64,
    to: u64,
    proof: Vec<String>,
}

/// `GET /v1/log/consistency?from=M&to=N` (`0 < M ≤ N ≤` the newest checkpoint's size).
async fn consistency(
    State(app): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ConsistencyAnswer>, ApiError> {
    let (Some(from), Some(to)) = (params.get("from"), params.get("to")) else {
        return Err(bad("query parameters from and to are required"));
    };
    let (from, to) = (number("from", from)?, number("to", to)?);
    if from == 0 || from > to {
        return Err(bad(format!("need 0 < from ≤ to, got from={from} to={to}")));
    }
    let mut latest = newest(&app.log, false).await?;
    if to > latest.size {
        latest = newest(&app.log, true).await?; // another replica may have signed it
    }
    if to > latest.size {
        return Err(bad(format!(
            "query parameter to: {to} is beyond the newest checkpoint ({})",
            latest.size
        )));
    }
    let proof = app.log.consistency(from, to).await.map_err(unavailable)?;
    Ok(Json(ConsistencyAnswer {
        from,
        to,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// `GET /tile/<L>/<N>[.p/<W>]` and `GET /tile/entries/<N>[.p/<W>]`.
async fn tile(State(app): State<AppState>, Path(path): Path<String>) -> Result<Response, ApiError> {
    let Some(tile) = parse_tile_path(&path) else {
        return Err(not_found(
            "not a tile path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>], N as x001/x234/067)",
        ));
    };
    let db = app.log.db().map_err(unavailable)?;
    let size = db.tree_size().await.map_err(|e| unavailable(e.into()))?;
    if !tile_exists(size, &tile) {
        return Err(not_found(format!(
            "tile {path} is beyond the tree (size {size})"
        )));
    }
    let (from, to) = tile.hash_range();
    let mut body = Vec::with_capacity(((to - from) * 34) as usize);
    match tile.kind {
        TileKind::Entries => {
            let entries = db
                .entries(from, to)
                .await
                .map_err(|e| unavailable(e.into()))?;
            for (_, h) in &entries {
                body.extend_from_slice(&32u16.to_be_bytes());
                body.extend_from_slice(h);
            }
            if entries.len() as u64 != to - from {
                return Err(unavailable(LogError::Incomplete(path)));
            }
        }
        TileKind::Hashes(level) => {
            let hashes = db
                .level_hashes(level, from, to)
                .await
                .map_err(|e| unavailable(e.into()))?;
            if hashes.len() as u64 != to - from {
                return Err(unavailable(LogError::Incomplete(path)));
            }
            for (_, h) in &hashes {
                body.extend_from_slice(h);
            }
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        body,
    )
        .into_response())
}
