//! `webhook`: NDJSON batches signed as §6 (`X-API-Key`, `X-Signature-Ts`,
//! `X-Signature`), each with `X-Idempotency-Key: <exporter>:<first>-<last>`,
//! so another meshaudit collector can be the receiver and answer a retry as a
//! replay. A refusal that names a line (`{"line": n}`, §6) names its seq.

use super::http::{client, exchange};
use super::{Batch, Sink, SinkError};
use crate::export::config::{Format, WebhookConfig};
use crate::export::format::ndjson;
use async_trait::async_trait;
use meshaudit_event::integrity::batch_signature;

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    api_key: String,
    secret: Vec<u8>,
    format: Format,
}

impl Webhook {
    pub fn new(cfg: &WebhookConfig, format: Format) -> Result<Self, String> {
        Ok(Self {
            client: client()?,
            url: cfg.url.clone(),
            api_key: cfg.api_key.0.clone(),
            secret: cfg.signing_secret.0.as_bytes().to_vec(),
            format,
        })
    }
}

/// The idempotency key of a batch.
pub fn idempotency_key(batch: &Batch) -> String {
    format!("{}:{}-{}", batch.exporter, batch.first, batch.last)
}

/// The seq of the line a §6 error body names (1-based NDJSON line).
pub fn seq_of_line(body: &str, first: i64) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let line = v.get("line")?.as_i64()?;
    (line >= 1).then(|| first + line - 1)
}

#[async_trait]
impl Sink for Webhook {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let body = ndjson(&batch.records, self.format);
        // Signed afresh on every attempt, with its own ts (§5).
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = batch_signature(&self.secret, &ts, &body);
        let req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/x-ndjson")
            .header("X-API-Key", &self.api_key)
            .header("X-Signature-Ts", ts)
            .header("X-Signature", signature)
            .header("X-Idempotency-Key", idempotency_key(batch))
            .body(body);
        exchange(req, batch.first, |b| seq_of_line(b, batch.first)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_lines() {
        let b = Batch {
            exporter: "central".into(),
            first: 11,
            last: 20,
            records: vec![],
        };
        assert_eq!(idempotency_key(&b), "central:11-20");
        assert_eq!(
            seq_of_line(r#"{"error":"malformed","line":3}"#, 11),
            Some(13)
        );
        assert_eq!(seq_of_line(r#"{"error":"x"}"#, 11), None);
        assert_eq!(seq_of_line("not json", 11), None);
    }
}
