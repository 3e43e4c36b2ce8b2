//! `nats`: NATS JetStream, one message per record on `subject`, with
//! `Nats-Msg-Id: <exporter>:<seq>` so the stream's duplicate window absorbs
//! a resent batch, and `Nats-Expected-Stream` so a record lands only in the
//! configured stream. The batch is acknowledged when every message's
//! JetStream ack came back (publishes are pipelined, acks awaited in order).

use super::{Batch, Sink, SinkError};
use crate::export::config::{Format, NatsConfig};
use crate::export::format::encode;
use async_nats::jetstream;
use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::Mutex;

pub struct Nats {
    url: String,
    subject: String,
    stream: String,
    format: Format,
    /// Connected on first use, kept while it works (the client reconnects by itself).
    context: Mutex<Option<jetstream::Context>>,
}

impl Nats {
    pub fn new(cfg: &NatsConfig, format: Format) -> Self {
        Self {
            url: cfg.url.clone(),
            subject: cfg.subject.clone(),
            stream: cfg.stream.clone(),
            format,
            context: Mutex::new(None),
        }
    }

    async fn context(&self) -> Result<jetstream::Context, SinkError> {
        let mut guard = self.context.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.as_str())
            .await
            .map_err(|e| SinkError::Transient(format!("connecting to NATS: {e}")))?;
        let mut ctx = jetstream::new(client);
        ctx.set_timeout(Duration::from_secs(10));
        *guard = Some(ctx.clone());
        Ok(ctx)
    }
}

/// The message id of a record.
pub fn msg_id(exporter: &str, seq: i64) -> String {
    format!("{exporter}:{seq}")
}

#[async_trait]
impl Sink for Nats {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let ctx = self.context().await?;
        let mut acks = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id(&batch.exporter, r.seq).as_str());
            headers.insert("Nats-Expected-Stream", self.stream.as_str());
            let ack = ctx
                .publish_with_headers(self.subject.clone(), headers, encode(r, self.format).into())
                .await
                .map_err(|e| SinkError::Transient(format!("publishing seq {}: {e}", r.seq)))?;
            acks.push((r.seq, ack));
        }
        for (seq, ack) in acks {
            ack.await
                .map_err(|e| SinkError::Transient(format!("JetStream ack for seq {seq}: {e}")))?;
        }
        Ok(())
    }
}
