//! Raw ceilings: how fast the database itself commits the collector's rows, with no HTTP, no
//! parsing, no verification. Each run applies the collector's own migrations (so the tables,
//! indexes and triggers are the ones the collector writes to) to a scratch database, then
//! commits `events` + `event_ids` rows in transactions of `batch_rows`, like the collector's
//! group commit, and reports rows/s.

pub mod postgres;
pub mod sqlite;

use crate::rows::RowSource;
use crate::summary::Latency;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One multi-row `INSERT` per table and batch.
    Insert,
    /// PostgreSQL `COPY … FROM STDIN` per table and batch.
    Copy,
}

/// What one ceiling run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    pub backend: &'static str,
    pub mode: Mode,
    pub rows: u64,
    pub batch_rows: usize,
    pub elapsed_s: f64,
    pub rows_per_s: f64,
    pub batch: Latency,
}

/// Errors of a ceiling run.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("reading migrations in {dir}: {source}")]
    Migrations {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The `.sql` files of `dir` in name order (sqlx's `<version>_<name>.sql` sort by version).
pub fn migration_scripts(dir: &Path) -> Result<Vec<String>, CeilingError> {
    let read = |e| CeilingError::Migrations {
        dir: dir.to_owned(),
        source: e,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(read(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no .sql files",
        )));
    }
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).map_err(read))
        .collect()
}

/// Rows to write and how.
#[derive(Debug)]
pub struct CeilingRun {
    pub rows: u64,
    pub batch_rows: usize,
    pub mode: Mode,
    pub source: RowSource,
    /// Ids of the rows, indexed by seq - 1 (made before timing starts).
    pub ids: Vec<String>,
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
