//! `X-Idempotency-Key` (SPEC §6 check 9): the key scoped per API key, a
//! replay answered with the first answer, another body refused with `409`,
//! and a request whose key is still in flight here made to wait for it.

use super::body::header;
use super::refusal::Refusal;
use crate::store::plan::ScopedKey;
use crate::store::{BatchAnswer, DynStore, IdempotencyKey};
use axum::http::HeaderMap;
use meshaudit_event::integrity::sha256_hex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The request's idempotency key, if it has one.
pub fn key(headers: &HeaderMap, scope: &str, raw_body: &[u8]) -> Option<IdempotencyKey> {
    header(headers, "x-idempotency-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|key| IdempotencyKey {
            scope: scope.to_owned(),
            key: key.to_owned(),
            body_sha256: sha256_hex(raw_body),
        })
}

/// A remembered answer for the same key and body (`deduped: true`), a `409`
/// for another body, or `None` to go on.
pub async fn lookup(
    store: &DynStore,
    idem: &IdempotencyKey,
    events: u64,
) -> Result<Option<BatchAnswer>, Refusal> {
    match store
        .idempotency_lookup(&idem.scope, &idem.key, chrono::Utc::now())
        .await
    {
        Ok(Some(record)) if record.body_sha256 == idem.body_sha256 => Ok(Some(BatchAnswer {
            deduped: true,
            ..record.answer
        })),
        Ok(Some(_)) => Err(Refusal::IdempotencyConflict { events }),
        Ok(None) => Ok(None),
        Err(e) => Err(Refusal::store_unavailable(&e, events)),
    }
}

/// Idempotency keys whose first request is still being processed here: a
/// second request with the same key waits for the first, then answers as a
/// replay (replicas are serialised by the store's lock instead).
#[derive(Default)]
pub struct InflightKeys {
    keys: Mutex<HashMap<ScopedKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a request with an idempotency key is processed.
pub struct InflightGuard {
    owner: Arc<InflightKeys>,
    key: ScopedKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl InflightKeys {
    pub async fn acquire(self: &Arc<Self>, scope: &str, key: &str) -> InflightGuard {
        let k: ScopedKey = (scope.to_owned(), key.to_owned());
        let lock = {
            let mut keys = match self.keys.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            keys.entry(k.clone()).or_default().clone()
        };
        let held = lock.clone().lock_owned().await;
        InflightGuard {
            owner: self.clone(),
            key: k,
            lock,
            _held: held,
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut keys = match self.owner.keys.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // The map, this guard's `lock` and the held guard: nobody else waits.
        if Arc::strong_count(&self.lock) <= 3 {
            keys.remove(&self.key);
        }
    }
}
