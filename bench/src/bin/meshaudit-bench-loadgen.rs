//! Collector load generator: posts signed NDJSON batches of sealed events and prints one JSON
//! report (events/s committed, batch latency). See `meshaudit_bench::loadgen`.

use anyhow::{Context, Result};
use clap::Parser;
use meshaudit_bench::loadgen::{make_batches, run, LoadConfig};

/// Flags; secrets also from the environment, never printed.
#[derive(Parser)]
struct Args {
    /// Collector ingest URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1/events")]
    url: String,
    /// `X-API-Key` to send.
    #[arg(long, env = "AUDIT_FORWARD_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Batch HMAC secret; also the per-event signing key.
    #[arg(long, env = "AUDIT_FORWARD_SIGNING_SECRET", hide_env_values = true)]
    signing_secret: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Batches to send in total.
    #[arg(long, default_value_t = 500)]
    batches: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    events_per_batch: usize,
    /// Distinguishes runs (ids never repeat); default: time and process id.
    #[arg(long)]
    run_seed: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let seed = a.run_seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{t}-{}", std::process::id())
    });
    let cfg = LoadConfig {
        url: a.url,
        api_key: a.api_key,
        signing_secret: a.signing_secret,
        connections: a.connections,
        batches: a.batches,
        events_per_batch: a.events_per_batch,
        run_seed: seed,
    };
    let batches = make_batches(&cfg);
    let report = run(&cfg, batches).await.context("running the load")?;
    println!("{}", serde_json::to_string(&report)?);
    if report.batches_ok != report.batches_sent {
        anyhow::bail!(
            "{} of {} batches failed: {:?}",
            report.batches_sent - report.batches_ok,
            report.batches_sent,
            report.failures
        );
    }
    Ok(())
}
