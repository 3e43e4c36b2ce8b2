//! The sinks: each delivers one fixed batch and answers only once the far
//! side acknowledged it. [`SinkError`] tells the runner whether to retry.

pub mod http;
pub mod nats;
pub mod s3;
pub mod splunk;
pub mod webhook;

use super::config::{ExporterConfig, SinkConfig};
use super::record::Record;
use super::state::ExportDb;
use async_trait::async_trait;

/// One batch: the fixed range `first..=last`, every record in it, in order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub exporter: String,
    pub first: i64,
    pub last: i64,
    pub records: Vec<Record>,
}

/// Why a send did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: the sink is down, slow, overloaded, or asked to retry.
    #[error("{0}")]
    Transient(String),
    /// The sink refused for good (a 4xx other than 408/429): the exporter
    /// stops at `seq` (the record named by the sink, else the batch's first).
    #[error("refused at seq {seq}: {reason}")]
    Refused { seq: i64, reason: String },
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// Delivers the batch; `Ok` only after the sink acknowledged all of it.
    async fn send(&self, batch: &Batch) -> Result<(), SinkError>;
}

/// Builds the sink an exporter is configured with.
pub async fn build(cfg: &ExporterConfig, db: &ExportDb) -> Result<Box<dyn Sink>, String> {
    Ok(match &cfg.sink {
        SinkConfig::Webhook(w) => Box::new(webhook::Webhook::new(w, cfg.format)?),
        SinkConfig::SplunkHec(s) => Box::new(splunk::SplunkHec::new(s, cfg.format)?),
        SinkConfig::S3(s) => Box::new(s3::S3::new(s, cfg.format, db.clone())?),
        SinkConfig::Nats(n) => Box::new(nats::Nats::new(n, cfg.format)),
    })
}
