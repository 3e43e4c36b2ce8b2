//! Export (SPEC §11): store-driven exporters that deliver the audit trail to
//! SIEMs, object stores and streams at least once, in `seq` order, without
//! gaps across crashes of the collector or of the sink.
//!
//! - [`config`]: `MESHAUDIT_EXPORTERS` / `MESHAUDIT_EXPORTERS_FILE`.
//! - [`record`], [`format`], [`ocsf`]: the exported bytes (pure).
//! - [`plan`]: fixed batch ranges after the cursor (pure); [`backoff`]: retry delays (pure).
//! - [`state`]: the durable cursor, pending batch, pause and stop (`export_state`).
//! - [`runner`]: one exporter's loop; [`sink`]: webhook, Splunk HEC, NATS JetStream, S3.
//! - [`metrics`]: `audit_export_*`; [`cli`]: `export status | replay | pause | resume`;
//!   [`guard`]: what `retain` asks before removing records.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod format;
pub mod guard;
pub mod metrics;
pub mod ocsf;
pub mod plan;
pub mod record;
pub mod runner;
pub mod sink;
pub mod state;

use crate::store::DynStore;
use anyhow::Context;
use config::ExporterConfig;

/// The running exporters of `serve`; dropping or [`Exporters::stop`] ends them.
pub struct Exporters {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Exporters {
    /// Ends every exporter. A batch in flight is sent again after the next
    /// start (same range, same bytes): delivery is at least once.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Registers the metrics, records the configured exporters in the store
/// (disabling the ones no longer configured) and starts one task each.
pub async fn start(
    configs: &[ExporterConfig],
    database_url: &str,
    store: DynStore,
    registry: &prometheus::Registry,
    listen: std::net::SocketAddr,
) -> anyhow::Result<Exporters> {
    let owner = format!("{}/{listen}", hostname());
    let metrics =
        metrics::ExportMetrics::register(registry).context("registering export metrics")?;
    let db = state::ExportDb::connect(database_url)
        .await
        .context("opening the export state")?;
    let names: Vec<(String, &'static str)> = configs
        .iter()
        .map(|c| (c.name.clone(), c.sink.kind()))
        .collect();
    db.register(&names).await.context("registering exporters")?;
    let mut tasks = Vec::new();
    for cfg in configs {
        let sink = sink::build(cfg, &db)
            .await
            .map_err(|e| anyhow::anyhow!("exporter {}: {e}", cfg.name))?;
        let runner = runner::Runner {
            name: cfg.name.clone(),
            cut: runner::cut_for(cfg),
            sink,
            db: db.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            owner: owner.clone(),
            lease_until_us: std::sync::atomic::AtomicI64::new(0),
        };
        tracing::info!(exporter = %config::Describe(cfg), "exporter started");
        tasks.push(tokio::spawn(runner.run()));
    }
    Ok(Exporters { tasks })
}

/// This machine's name (`HOSTNAME`, else /etc/hostname): with the listen
/// address it tells replicas apart, and a restarted replica (same pod, same
/// address) takes its lease back at once.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
