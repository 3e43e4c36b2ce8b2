//! End-to-end delay: requests sent through Envoy (with the meshaudit filter) at a fixed rate,
//! each with a unique `x-request-id`; the collector's `GET /v1/events` is polled from a cursor
//! and each event's `requestid` is matched to its request. The delay is the time from sending
//! the request to seeing its event in the query API.

use crate::summary::Latency;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where to send and where to look.
#[derive(Debug, Clone)]
pub struct DelayConfig {
    /// Envoy listener, e.g. `http://127.0.0.1:10000`.
    pub envoy_url: String,
    /// Collector base URL, e.g. `http://127.0.0.1:18080`.
    pub collector_url: String,
    pub admin_token: Option<String>,
    pub rate_per_s: u32,
    pub duration: Duration,
    /// How long to wait for the last events after the last request.
    pub settle: Duration,
    pub poll_interval: Duration,
    pub run_seed: String,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DelayReport {
    pub requests_sent: usize,
    pub requests_ok: usize,
    pub events_seen: usize,
    pub events_missing: usize,
    pub achieved_rate_per_s: f64,
    pub delay: Latency,
}

#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("collector query answered {0}")]
    Query(String),
}

type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// The newest `seq` already stored, so the run only looks at its own events.
async fn head_cursor(client: &reqwest::Client, cfg: &DelayConfig) -> Result<i64, DelayError> {
    let mut after = 0i64;
    loop {
        let page = query(client, cfg, after).await?;
        let (last, next) = page;
        match (last.last(), next) {
            (Some((seq, _)), _) => after = *seq,
            (None, _) => return Ok(after),
        }
    }
}

/// `(seq, requestid)` of the events after `after`, and the next cursor.
async fn query(
    client: &reqwest::Client,
    cfg: &DelayConfig,
    after: i64,
) -> Result<(Vec<(i64, Option<String>)>, Option<i64>), DelayError> {
    let mut req = client.get(format!(
        "{}/v1/events?after={after}&limit=1000",
        cfg.collector_url
    ));
    if let Some(t) = &cfg.admin_token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    if !status.is_success() {
        return Err(DelayError::Query(format!("{status}: {body}")));
    }
    let items = body["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["seq"].as_i64().unwrap_or(after),
                        e["event"]["requestid"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((items, body["next_cursor"].as_i64()))
}

/// Runs the load and the poller together.
pub async fn run(cfg: &DelayConfig) -> Result<DelayReport, DelayError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut after = head_cursor(&client, cfg).await?;
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let load = {
        let (client, cfg, sent, ok) = (client.clone(), cfg.clone(), sent.clone(), ok.clone());
        tokio::spawn(async move {
            let total = (cfg.rate_per_s as f64 * cfg.duration.as_secs_f64()).round() as usize;
            let period = Duration::from_secs_f64(1.0 / f64::from(cfg.rate_per_s.max(1)));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut inflight = Vec::with_capacity(total);
            for i in 0..total {
                tick.tick().await;
                let id = format!("delay-{}-{i}", cfg.run_seed);
                let url = format!("{}/api/v1/orders/{i}", cfg.envoy_url);
                let (client, sent, ok) = (client.clone(), sent.clone(), ok.clone());
                inflight.push(tokio::spawn(async move {
                    if let Ok(mut m) = sent.lock() {
                        m.insert(id.clone(), Instant::now());
                    }
                    let r = client
                        .get(url)
                        .header("x-request-id", id)
                        .header("tenantId", "acme")
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
            (total, started.elapsed())
        })
    };

    let mut delays: Vec<f64> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut load_done: Option<(usize, Duration)> = None;
    let mut load = Some(load);
    let mut deadline: Option<Instant> = None;
    loop {
        let (items, _) = query(&client, cfg, after).await?;
        let now = Instant::now();
        let empty = items.is_empty();
        for (seq, rid) in items {
            after = after.max(seq);
            let Some(rid) = rid else { continue };
            let t = sent.lock().ok().and_then(|m| m.get(&rid).copied());
            if let Some(t) = t {
                if seen.insert(rid) {
                    delays.push(now.duration_since(t).as_secs_f64() * 1e3);
                }
            }
        }
        if load_done.is_none() && load.as_ref().is_some_and(|l| l.is_finished()) {
            if let Some(l) = load.take() {
                load_done = Some(l.await.unwrap_or((0, Duration::ZERO)));
                deadline = Some(Instant::now() + cfg.settle);
            }
        }
        if let Some((total, _)) = load_done {
            if seen.len() >= total || deadline.is_some_and(|d| Instant::now() > d) {
                break;
            }
        }
        if empty {
            tokio::time::sleep(cfg.poll_interval).await;
        }
    }
    let (total, elapsed) = load_done.unwrap_or((0, Duration::ZERO));
    Ok(DelayReport {
        requests_sent: total,
        requests_ok: ok.load(std::sync::atomic::Ordering::Relaxed),
        events_seen: seen.len(),
        events_missing: total.saturating_sub(seen.len()),
        achieved_rate_per_s: total as f64 / elapsed.as_secs_f64().max(1e-9),
        delay: Latency::of(&mut delays),
    })
}
