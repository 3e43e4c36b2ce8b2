//! One exporter's loop: read the durable state and the head, plan the next
//! fixed batch (persisted before its first send), load its records from the
//! store, deliver with retries (backoff and jitter), and move the cursor only
//! after the sink acknowledged. A refusal stops the exporter at the seq the
//! sink named; `export pause`, `resume` and `replay` act through the state
//! table, which the loop re-reads between attempts.

use super::backoff;
use super::config::{ExporterConfig, SinkConfig};
use super::metrics::ExportMetrics;
use super::plan::{self, Cut, Next, Position};
use super::record::{Record, RecordError};
use super::sink::{Batch, Sink, SinkError};
use super::state::{ExportDb, ExportState};
use crate::store::{DynStore, StoreError};
use std::time::Duration;

/// How often an idle exporter looks for new records and operator changes.
pub const POLL: Duration = Duration::from_millis(250);

/// How long a replica's claim on an exporter lasts; renewed at half-time.
pub const LEASE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("exporter {0} has no state row (were the migrations applied?)")]
    NoState(String),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now: wait [`POLL`].
    Idle,
    /// Something happened: look again at once.
    Progress,
}

pub struct Runner {
    pub name: String,
    pub cut: Cut,
    pub sink: Box<dyn Sink>,
    pub db: ExportDb,
    pub store: DynStore,
    pub metrics: ExportMetrics,
    /// This replica, for the lease: `host/listen address`.
    pub owner: String,
    /// Until when (µs since the epoch) this replica holds the lease (0: not).
    pub lease_until_us: std::sync::atomic::AtomicI64,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// How an exporter's batches are cut: S3 waits for full segments (or their age).
pub fn cut_for(cfg: &ExporterConfig) -> Cut {
    match &cfg.sink {
        SinkConfig::S3(s3) => {
            let records = s3.segment_records.unwrap_or(cfg.batch_records).max(1);
            Cut {
                max_records: records,
                min_records: records,
                max_wait_secs: s3.segment_seconds.unwrap_or(60),
            }
        }
        _ => Cut {
            max_records: cfg.batch_records,
            min_records: 1,
            max_wait_secs: 0,
        },
    }
}

impl Runner {
    /// Runs until the task is aborted (at-least-once makes that safe).
    pub async fn run(self) {
        self.metrics.touch(&self.name);
        let mut errors = 0u32;
        loop {
            match self.step().await {
                Ok(Step::Progress) => errors = 0,
                Ok(Step::Idle) => {
                    errors = 0;
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    tracing::warn!(exporter = %self.name, error = %e, "exporter step failed; retrying");
                    tokio::time::sleep(backoff::delay(errors, backoff::clock_jitter())).await;
                }
            }
        }
    }

    /// Holds (takes or renews) the lease: only its holder sends, so replicas
    /// sharing the store do not race each other on one exporter.
    async fn hold_lease(&self) -> Result<bool, ExportError> {
        use std::sync::atomic::Ordering;
        let now = now_us();
        let lease = LEASE.as_micros() as i64;
        if self.lease_until_us.load(Ordering::Relaxed) - now > lease / 2 {
            return Ok(true);
        }
        let held = self
            .db
            .claim(&self.name, &self.owner, now, now + lease)
            .await?;
        self.lease_until_us
            .store(if held { now + lease } else { 0 }, Ordering::Relaxed);
        Ok(held)
    }

    async fn state(&self) -> Result<ExportState, ExportError> {
        self.db
            .load(&self.name)
            .await?
            .ok_or_else(|| ExportError::NoState(self.name.clone()))
    }

    async fn observe(&self, state: &ExportState) -> Result<(), ExportError> {
        let head = self.store.head().await?.seq;
        self.metrics
            .observe(&self.name, state.cursor, head, state.stopped_seq.is_some());
        Ok(())
    }

    /// One planning and delivery round.
    pub async fn step(&self) -> Result<Step, ExportError> {
        let state = self.state().await?;
        let head = self.store.head().await?.seq;
        self.metrics
            .observe(&self.name, state.cursor, head, state.stopped_seq.is_some());
        if state.paused || state.stopped_seq.is_some() || !state.enabled {
            return Ok(Step::Idle);
        }
        if !self.hold_lease().await? {
            return Ok(Step::Idle); // another replica runs this exporter
        }
        let oldest_age = if self.cut.min_records > 1 {
            self.age_of(state.cursor + 1).await?
        } else {
            None
        };
        let pos = Position {
            cursor: state.cursor,
            pending: state.pending,
        };
        let (first, last) = match plan::next(pos, head, self.cut, oldest_age) {
            Next::Wait => return Ok(Step::Idle),
            Next::Resend { first, last } => (first, last),
            Next::Plan { first, last } => {
                if !self
                    .db
                    .set_pending(&self.name, state.generation, first, last)
                    .await?
                {
                    return Ok(Step::Progress); // replayed meanwhile
                }
                (first, last)
            }
        };
        let records = match self.load(first, last).await? {
            Ok(records) => records,
            Err(missing) => {
                let reason = format!(
                    "seq {missing} is no longer in the store (removed by retain --force?); \
                     replay from a later seq to go on"
                );
                self.halt(&state, missing, &reason).await?;
                return Ok(Step::Progress);
            }
        };
        let batch = Batch {
            exporter: self.name.clone(),
            first,
            last,
            records,
        };
        self.deliver(&state, &batch).await
    }

    /// How many seconds ago `seq` was received (`None` when not stored).
    async fn age_of(&self, seq: i64) -> Result<Option<u64>, ExportError> {
        let rows = self.store.scan(seq - 1, 1).await?;
        Ok(rows.first().filter(|e| e.seq == seq).and_then(|e| {
            let t = chrono::DateTime::parse_from_rfc3339(&e.received_at).ok()?;
            let age = chrono::Utc::now().signed_duration_since(t).num_seconds();
            Some(age.max(0) as u64)
        }))
    }

    /// The records `first..=last`, or the first seq missing from the store.
    async fn load(&self, first: i64, last: i64) -> Result<Result<Vec<Record>, i64>, ExportError> {
        let rows = self.store.scan(first - 1, last - first + 1).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (expected, row) in (first..=last).zip(rows.iter()) {
            if row.seq != expected {
                return Ok(Err(expected));
            }
            out.push(Record::from_stored(row)?);
        }
        if (out.len() as i64) < last - first + 1 {
            return Ok(Err(first + out.len() as i64));
        }
        Ok(Ok(out))
    }

    async fn halt(&self, state: &ExportState, seq: i64, reason: &str) -> Result<(), ExportError> {
        tracing::error!(exporter = %self.name, seq, reason, "exporter stopped");
        self.db
            .stop(&self.name, state.generation, seq, reason)
            .await?;
        Ok(())
    }

    /// Sends until acknowledged, refused, or the operator changed the state.
    async fn deliver(&self, state: &ExportState, batch: &Batch) -> Result<Step, ExportError> {
        let n = batch.records.len() as i64;
        let mut attempt = 0u32;
        loop {
            match self.sink.send(batch).await {
                Ok(()) => {
                    if self
                        .db
                        .ack(&self.name, state.generation, batch.last, n)
                        .await?
                    {
                        self.metrics
                            .records
                            .with_label_values(&[&self.name])
                            .inc_by(n as u64);
                        tracing::debug!(exporter = %self.name, first = batch.first, last = batch.last, "batch delivered");
                    }
                    return Ok(Step::Progress);
                }
                Err(SinkError::Refused { seq, reason }) => {
                    self.metrics.failures.with_label_values(&[&self.name]).inc();
                    // The sink names the record; a seq outside the batch is its mistake.
                    let seq = seq.clamp(batch.first, batch.last);
                    let reason = format!(
                        "the sink refused batch {}-{} at seq {seq}: {reason}",
                        batch.first, batch.last
                    );
                    self.halt(state, seq, &reason).await?;
                    return Ok(Step::Progress);
                }
                Err(SinkError::Transient(why)) => {
                    self.metrics.failures.with_label_values(&[&self.name]).inc();
                    attempt = attempt.saturating_add(1);
                    let wait = backoff::delay(attempt, backoff::clock_jitter());
                    tracing::warn!(
                        exporter = %self.name, first = batch.first, last = batch.last,
                        attempt, retry_in_ms = wait.as_millis() as u64, error = %why,
                        "batch not delivered; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    let now = self.state().await?;
                    self.observe(&now).await?;
                    if now.generation != state.generation
                        || now.paused
                        || now.stopped_seq.is_some()
                        || !now.enabled
                        || !self.hold_lease().await?
                    {
                        return Ok(Step::Progress);
                    }
                }
            }
        }
    }
}
