//! End-to-end delay (request through Envoy → event visible in the collector's query API);
//! prints one JSON report. See `meshaudit_bench::delay`.

use anyhow::{Context, Result};
use clap::Parser;
use meshaudit_bench::delay::{run, DelayConfig};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Envoy listener URL (with the meshaudit filter in front of a route).
    #[arg(long)]
    envoy_url: String,
    /// Collector base URL (query API).
    #[arg(long)]
    collector_url: String,
    /// Bearer token for the query API (`MESHAUDIT_ADMIN_TOKEN` of the collector).
    #[arg(long, env = "MESHAUDIT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Seconds to wait for the last events.
    #[arg(long, default_value_t = 10.0)]
    settle_s: f64,
    /// Milliseconds between polls of the query API when it had nothing new.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let cfg = DelayConfig {
        envoy_url: a.envoy_url,
        collector_url: a.collector_url,
        admin_token: a.admin_token,
        rate_per_s: a.rate,
        duration: Duration::from_secs_f64(a.duration_s),
        settle: Duration::from_secs_f64(a.settle_s),
        poll_interval: Duration::from_millis(a.poll_ms),
        run_seed: format!("{}-{}", t.as_nanos(), std::process::id()),
    };
    let report = run(&cfg).await.context("measuring end-to-end delay")?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
