//! Raw database ceiling on the collector's rows; prints one JSON report. See
//! `meshaudit_bench::ceiling`.

use anyhow::{Context, Result};
use clap::Parser;
use meshaudit_bench::ceiling::{self, CeilingRun, Mode};
use meshaudit_bench::events::EventFactory;
use meshaudit_bench::rows::RowSource;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// `sqlite://PATH` (a new file) or `postgres://…/DB` (an empty scratch database).
    #[arg(long)]
    database_url: String,
    /// The collector's migrations for this backend (collector/migrations/sqlite or …/postgres).
    #[arg(long)]
    migrations: PathBuf,
    /// `insert` (multi-row INSERT) or `copy` (PostgreSQL only).
    #[arg(long, value_enum, default_value_t = Mode::Insert)]
    mode: Mode,
    /// Rows to write in total.
    #[arg(long, default_value_t = 50_000)]
    rows: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 500)]
    batch_rows: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let factory = EventFactory::new(
        format!("ceiling-{}-{}", t.as_nanos(), std::process::id()).as_bytes(),
        b"bench",
        None,
    );
    let ids = (0..a.rows).map(|i| factory.id(1_000_000 + i)).collect();
    let run = CeilingRun {
        rows: a.rows,
        batch_rows: a.batch_rows.max(1),
        mode: a.mode,
        source: RowSource::new(&factory, 1000, t.as_micros() as i64),
        ids,
    };
    let report = if let Some(path) = a.database_url.strip_prefix("sqlite://") {
        ceiling::sqlite::run(path.as_ref(), &a.migrations, run).await
    } else {
        ceiling::postgres::run(&a.database_url, &a.migrations, run).await
    }
    .context("running the ceiling")?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
