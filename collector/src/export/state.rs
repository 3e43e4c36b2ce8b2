//! The exporters' durable state (table `export_state`, created by the
//! migrations): cursor, pending batch, pause and stop. Every change is one
//! statement, so it is atomic on both backends; the runner's writes are
//! conditional on the `generation` it read, so an `export replay` made while
//! a batch is in flight wins over that batch's late acknowledgement.
//!
//! It has its own small pool on `DATABASE_URL`: the exporters and the
//! `export` commands never wait behind the ingest writer's connections.

use crate::store::{format_time, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// One exporter's durable state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportState {
    pub exporter: String,
    pub sink: String,
    pub cursor: i64,
    pub pending: Option<(i64, i64)>,
    pub paused: bool,
    pub stopped_seq: Option<i64>,
    pub stopped_reason: Option<String>,
    pub enabled: bool,
    pub generation: i64,
    pub delivered: i64,
    pub updated_at: String,
    /// The replica holding the lease (`host/listen address`), if any.
    pub owner: Option<String>,
}

impl ExportState {
    /// `running`, `paused`, `stopped` or `disabled` (no longer configured).
    pub fn status(&self) -> &'static str {
        if !self.enabled {
            "disabled"
        } else if self.stopped_seq.is_some() {
            "stopped"
        } else if self.paused {
            "paused"
        } else {
            "running"
        }
    }
}

type Row = (
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    i64,
    String,
    Option<String>,
);

const COLUMNS: &str = "exporter, sink, cursor_seq, pending_first, pending_last, paused, \
     stopped_seq, stopped_reason, enabled, generation, delivered, updated_at, owner";

fn from_row(r: Row) -> ExportState {
    ExportState {
        exporter: r.0,
        sink: r.1,
        cursor: r.2,
        pending: r.3.zip(r.4),
        paused: r.5 != 0,
        stopped_seq: r.6,
        stopped_reason: r.7,
        enabled: r.8 != 0,
        generation: r.9,
        delivered: r.10,
        updated_at: r.11,
        owner: r.12,
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Runs the same statement on whichever backend (`$n` placeholders work on both).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Pg($p) => $body,
        }
    };
}

/// One statement with its binds; true when it changed a row.
macro_rules! run {
    ($self:expr, $sql:expr $(, $b:expr)* $(,)?) => {
        on_pool!(&$self.pool, p => sqlx::query($sql)$(.bind($b))*.execute(p).await
            .map(|done| done.rows_affected() > 0))
            .map_err(StoreError::from)
    };
}

/// Access to `export_state`.
#[derive(Clone)]
pub struct ExportDb {
    pool: Pool,
}

fn now() -> String {
    format_time(chrono::Utc::now())
}

impl ExportDb {
    /// A small pool on `url` (the migrations must have run).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
            Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await?,
            )
        } else {
            let opts = SqliteConnectOptions::from_str(url)?
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await?,
            )
        };
        Ok(Self { pool })
    }

    /// Records the configured exporters (new ones start at cursor 0) and
    /// marks the others disabled, so `retain` no longer waits for them.
    pub async fn register(&self, exporters: &[(String, &'static str)]) -> Result<(), StoreError> {
        let ts = now();
        for (name, sink) in exporters {
            let sql = "INSERT INTO export_state (exporter, sink, enabled, updated_at) \
                       VALUES ($1, $2, 1, $3) \
                       ON CONFLICT (exporter) DO UPDATE SET enabled = 1, sink = $2, updated_at = $3";
            on_pool!(&self.pool, p => sqlx::query(sql).bind(name).bind(*sink).bind(&ts).execute(p).await.map(|_| ()))?;
        }
        for state in self.all().await? {
            if state.enabled && !exporters.iter().any(|(n, _)| *n == state.exporter) {
                let sql =
                    "UPDATE export_state SET enabled = 0, updated_at = $2 WHERE exporter = $1";
                on_pool!(&self.pool, p => sqlx::query(sql).bind(&state.exporter).bind(&ts).execute(p).await.map(|_| ()))?;
            }
        }
        Ok(())
    }

    pub async fn all(&self) -> Result<Vec<ExportState>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM export_state ORDER BY exporter");
        let rows: Vec<Row> = on_pool!(&self.pool, p => sqlx::query_as(&sql).fetch_all(p).await)?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    pub async fn load(&self, exporter: &str) -> Result<Option<ExportState>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM export_state WHERE exporter = $1");
        let row: Option<Row> =
            on_pool!(&self.pool, p => sqlx::query_as(&sql).bind(exporter).fetch_optional(p).await)?;
        Ok(row.map(from_row))
    }

    /// Persists the batch about to be sent for the first time.
    pub async fn set_pending(
        &self,
        exporter: &str,
        generation: i64,
        first: i64,
        last: i64,
    ) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET pending_first = $3, pending_last = $4, updated_at = $5 \
             WHERE exporter = $1 AND generation = $2",
            exporter,
            generation,
            first,
            last,
            now()
        )
    }

    /// The sink acknowledged the pending batch: the cursor moves to its end.
    pub async fn ack(
        &self,
        exporter: &str,
        generation: i64,
        last: i64,
        records: i64,
    ) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET cursor_seq = $3, pending_first = NULL, pending_last = NULL, \
             delivered = delivered + $4, updated_at = $5 \
             WHERE exporter = $1 AND generation = $2",
            exporter,
            generation,
            last,
            records,
            now()
        )
    }

    /// The sink refused for good: stopped at `seq`, the pending batch kept.
    pub async fn stop(
        &self,
        exporter: &str,
        generation: i64,
        seq: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET stopped_seq = $3, stopped_reason = $4, updated_at = $5 \
             WHERE exporter = $1 AND generation = $2",
            exporter,
            generation,
            seq,
            reason,
            now()
        )
    }

    /// `export pause`.
    pub async fn pause(&self, exporter: &str) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET paused = 1, updated_at = $2 WHERE exporter = $1",
            exporter,
            now()
        )
    }

    /// `export resume`: clears a pause and a stop; the pending batch is sent again.
    pub async fn resume(&self, exporter: &str) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET paused = 0, stopped_seq = NULL, stopped_reason = NULL, \
             updated_at = $2 WHERE exporter = $1",
            exporter,
            now()
        )
    }

    /// `export replay --from SEQ`: the cursor goes back to `from - 1`, the
    /// pending batch and any stop are dropped, the generation moves on.
    pub async fn replay(&self, exporter: &str, from: i64) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET cursor_seq = $2, pending_first = NULL, pending_last = NULL, \
             stopped_seq = NULL, stopped_reason = NULL, generation = generation + 1, updated_at = $3 \
             WHERE exporter = $1",
            exporter, from - 1, now()
        )
    }

    /// The newest checkpoint of the verifiable log (SPEC §9): (tree size, signed note).
    pub async fn latest_checkpoint(&self) -> Result<Option<(i64, String)>, StoreError> {
        let sql = "SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1";
        let row: Option<(i64, String)> =
            on_pool!(&self.pool, p => sqlx::query_as(sql).fetch_optional(p).await)?;
        Ok(row)
    }

    /// Takes or renews the exporter's lease for `owner` until `until_us`
    /// (µs since the epoch): true when `owner` holds it. A lease held by
    /// another replica is taken only once it expired.
    pub async fn claim(
        &self,
        exporter: &str,
        owner: &str,
        now_us: i64,
        until_us: i64,
    ) -> Result<bool, StoreError> {
        run!(
            self,
            "UPDATE export_state SET owner = $2, lease_until_us = $4 \
             WHERE exporter = $1 AND (owner IS NULL OR owner = $2 OR lease_until_us < $3)",
            exporter,
            owner,
            now_us,
            until_us
        )
    }
}
