//! The collector load generator: signed NDJSON batches of sealed events, sent over several
//! keep-alive connections at once, each batch with `X-API-Key`, `X-Signature-Ts`,
//! `X-Signature` (SPEC §5) and a unique `X-Idempotency-Key`, as the filter sends them.
//!
//! Batches are made before the clock starts (the collector, not the generator, is measured);
//! only the batch signature is computed at send time, because it covers a fresh timestamp.
//! A batch counts as committed when the answer is `200` with every event `accepted`.

use crate::events::EventFactory;
use crate::summary::Latency;
use meshaudit_event::integrity::batch_signature;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to send and where.
#[derive(Clone)]
pub struct LoadConfig {
    /// `http://HOST:PORT/v1/events`.
    pub url: String,
    pub api_key: String,
    pub signing_secret: String,
    pub connections: usize,
    pub batches: usize,
    pub events_per_batch: usize,
    /// Distinguishes runs so ids never repeat.
    pub run_seed: String,
}

impl std::fmt::Debug for LoadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadConfig")
            .field("url", &self.url)
            .field("connections", &self.connections)
            .field("batches", &self.batches)
            .field("events_per_batch", &self.events_per_batch)
            .finish_non_exhaustive()
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub batches_sent: usize,
    pub batches_ok: usize,
    pub events_committed: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub batch: Latency,
    pub bytes_per_event: f64,
    /// Status codes (or transport errors) of failed batches, with counts.
    pub failures: Vec<(String, usize)>,
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One NDJSON body per batch, each with its idempotency key.
pub fn make_batches(cfg: &LoadConfig) -> Vec<(String, Vec<u8>)> {
    let factory = EventFactory::new(cfg.run_seed.as_bytes(), cfg.signing_secret.as_bytes(), None);
    let now = now_us();
    (0..cfg.batches)
        .map(|b| {
            let mut body = Vec::with_capacity(cfg.events_per_batch * 900);
            for j in 0..cfg.events_per_batch {
                let e = factory.event((b * cfg.events_per_batch + j) as u64, now);
                body.extend_from_slice(&e.line);
                body.push(b'\n');
            }
            (format!("bench-{}-{b}", cfg.run_seed), body)
        })
        .collect()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

struct Outcome {
    latency_ms: f64,
    accepted: u64,
    failure: Option<String>,
}

async fn send(client: &reqwest::Client, cfg: &LoadConfig, key: &str, body: &[u8]) -> Outcome {
    let ts = (now_us() / 1_000_000).to_string();
    let signature = batch_signature(cfg.signing_secret.as_bytes(), &ts, body);
    let t0 = Instant::now();
    let result = client
        .post(&cfg.url)
        .header("content-type", "application/x-ndjson")
        .header("x-api-key", &cfg.api_key)
        .header("x-signature-ts", ts)
        .header("x-signature", signature)
        .header("x-idempotency-key", key)
        .header("x-meshaudit-source", "bench/loadgen")
        .body(body.to_vec())
        .send()
        .await;
    let (accepted, failure) = match result {
        Err(e) => (0, Some(format!("transport: {}", e.without_url()))),
        Ok(r) => {
            let status = r.status().as_u16();
            let answer: Option<serde_json::Value> = r.json().await.ok();
            let accepted = answer
                .as_ref()
                .and_then(|a| a.get("accepted"))
                .and_then(|a| a.as_u64())
                .unwrap_or(0);
            if status == 200 && accepted as usize == cfg.events_per_batch {
                (accepted, None)
            } else {
                (
                    accepted,
                    Some(format!(
                        "status {status}: {}",
                        answer.map(|a| a.to_string()).unwrap_or_default()
                    )),
                )
            }
        }
    };
    Outcome {
        latency_ms: t0.elapsed().as_secs_f64() * 1e3,
        accepted,
        failure,
    }
}

/// Sends `batches` over `cfg.connections` concurrent connections and measures.
pub async fn run(
    cfg: &LoadConfig,
    batches: Vec<(String, Vec<u8>)>,
) -> Result<LoadReport, LoadError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.connections)
        .timeout(Duration::from_secs(60))
        .build()?;
    let bytes: usize = batches.iter().map(|(_, b)| b.len()).sum();
    let events = (batches.len() * cfg.events_per_batch).max(1);
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cfg.connections.max(1) {
        let (client, cfg, batches, next) =
            (client.clone(), cfg.clone(), batches.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, body)) = batches.get(i) else {
                    break;
                };
                outcomes.push(send(&client, &cfg, key, body).await);
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        match t.await {
            Ok(o) => outcomes.extend(o),
            Err(e) => outcomes.push(Outcome {
                latency_ms: 0.0,
                accepted: 0,
                failure: Some(format!("task: {e}")),
            }),
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut committed = 0u64;
    let mut ok = 0usize;
    for o in &outcomes {
        latencies.push(o.latency_ms);
        committed += o.accepted;
        match &o.failure {
            None => ok += 1,
            Some(f) => *failures.entry(f.chars().take(200).collect()).or_default() += 1,
        }
    }
    Ok(LoadReport {
        batches_sent: outcomes.len(),
        batches_ok: ok,
        events_committed: committed,
        elapsed_s,
        events_per_s: committed as f64 / elapsed_s,
        batch: Latency::of(&mut latencies),
        bytes_per_event: bytes as f64 / events as f64,
        failures: failures.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_ndjson_with_unique_keys_and_ids() {
        let cfg = LoadConfig {
            url: String::new(),
            api_key: "k".into(),
            signing_secret: "s".into(),
            connections: 1,
            batches: 3,
            events_per_batch: 5,
            run_seed: "t".into(),
        };
        let batches = make_batches(&cfg);
        assert_eq!(batches.len(), 3);
        let keys: std::collections::BTreeSet<_> = batches.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.len(), 3);
        let mut ids = std::collections::BTreeSet::new();
        for (_, body) in &batches {
            assert_eq!(body.last(), Some(&b'\n'));
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).expect("each line is JSON");
                ids.insert(v["id"].as_str().expect("id").to_owned());
            }
        }
        assert_eq!(ids.len(), 15);
    }
}
