//! How long the collector waits on its database (issue 17): a hung,
//! partitioned or locked database must turn into a `503` the filter can retry,
//! within a bound shorter than the filter's own 5 s timeout, never into a
//! request that hangs.
//!
//! One knob, `MESHAUDIT_DB_TIMEOUT_MS` (default 3000), bounds every wait:
//! taking a pooled connection, each PostgreSQL statement and lock wait of an
//! append or `retain` transaction (`statement_timeout`, `lock_timeout`, set
//! per transaction so a transaction-pooling pgbouncer cannot lose them; not
//! for the session, so long migrations still run), SQLite's busy wait for the
//! write lock, and, on the collector's side, a whole append transaction, the
//! readiness ping and the idempotency lookup (a blackholed server cannot
//! enforce its own timeouts).

use super::StoreError;
use std::future::Future;
use std::time::Duration;

/// `MESHAUDIT_DB_TIMEOUT_MS` when unset.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_millis(3000);

/// Rows `retain` deletes per transaction.
pub const RETAIN_CHUNK_ROWS: i64 = 2000;

/// Pause between two `retain` chunks, so waiting appends take the write lock
/// (SQLite's busy handler polls; a tight loop could starve it).
pub const RETAIN_CHUNK_PAUSE: Duration = Duration::from_millis(20);

/// How long `retain` keeps retrying one step (its anchor, or one chunk of
/// deletes) that the database turns away as busy, locked or timed out, by
/// default (`--patience`). Retention is a batch job beside live ingest: on
/// SQLite, appends hold the one write lock often enough that a step can miss
/// it for longer than `MESHAUDIT_DB_TIMEOUT_MS`, which is sized for answering
/// a request, not for waiting one's turn.
pub const RETAIN_PATIENCE: Duration = Duration::from_secs(300);

/// The first and the longest pause between two tries of a `retain` step.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(50);
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// The database timeouts of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    /// Each wait on the database, and one whole append transaction.
    pub op: Duration,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        Self {
            op: DEFAULT_DB_TIMEOUT,
        }
    }
}

impl DbTimeouts {
    /// From `MESHAUDIT_DB_TIMEOUT_MS` (milliseconds, 100 to 600000), default 3000.
    pub fn from_env() -> Result<Self, StoreError> {
        Self::parse(std::env::var("MESHAUDIT_DB_TIMEOUT_MS").ok().as_deref())
    }

    /// The value of `MESHAUDIT_DB_TIMEOUT_MS` (pure).
    pub fn parse(value: Option<&str>) -> Result<Self, StoreError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Self::default()),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if (100..=600_000).contains(&ms) => Ok(Self {
                    op: Duration::from_millis(ms),
                }),
                _ => Err(StoreError::Refused(format!(
                    "MESHAUDIT_DB_TIMEOUT_MS: expected milliseconds from 100 to 600000, got {v:?}"
                ))),
            },
        }
    }

    /// Milliseconds, as PostgreSQL settings take them.
    pub fn op_ms(&self) -> String {
        self.op.as_millis().to_string()
    }
}

/// Runs `fut`, or gives up after `limit` with [`StoreError::Timeout`].
pub async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout {
            what,
            after_ms: limit.as_millis() as u64,
        }),
    }
}

/// Runs `step` until it succeeds, fails with an error that is not
/// [`StoreError::is_unavailable`], or has been turned away for `patience`
/// since its first try; pauses between tries grow from 50 ms to 2 s. Only for
/// steps that are safe to repeat.
pub async fn retry_unavailable<T, F, Fut>(
    patience: Duration,
    what: &'static str,
    mut step: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = RETRY_FIRST_PAUSE;
    let mut tries = 0u32;
    loop {
        match step().await {
            Err(e) if e.is_unavailable() && started.elapsed() < patience => {
                tries += 1;
                if tries == 1 {
                    tracing::warn!(
                        step = what,
                        error = %e,
                        patience_s = patience.as_secs(),
                        "database busy; retrying"
                    );
                }
                let left = patience.saturating_sub(started.elapsed());
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
            }
            Err(e) if e.is_unavailable() => {
                return Err(StoreError::Refused(format!(
                    "{what}: the database stayed busy for {} s ({tries} retries): {e}; \
                     nothing is lost, run again (or with a longer --patience)",
                    patience.as_secs()
                )))
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_values() {
        assert_eq!(DbTimeouts::parse(None).unwrap(), DbTimeouts::default());
        assert_eq!(DbTimeouts::parse(Some(" ")).unwrap(), DbTimeouts::default());
        assert_eq!(
            DbTimeouts::parse(Some("1500")).unwrap().op,
            Duration::from_millis(1500)
        );
        for bad in ["0", "99", "600001", "3s", "-1"] {
            assert!(DbTimeouts::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn bounded_gives_up() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let r = bounded(Duration::from_millis(10), "test", slow).await;
        assert!(matches!(r, Err(StoreError::Timeout { .. })));
        assert!(r.unwrap_err().is_unavailable());
    }

    fn busy() -> StoreError {
        StoreError::Timeout {
            what: "test",
            after_ms: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_out_a_busy_database() {
        let tries = std::cell::Cell::new(0);
        let r = retry_unavailable(Duration::from_secs(60), "chunk", || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n < 5 {
                    Err(busy())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_its_patience() {
        let started = tokio::time::Instant::now();
        let tries = std::cell::Cell::new(0u32);
        let r: Result<(), _> = retry_unavailable(Duration::from_secs(10), "chunk", || {
            tries.set(tries.get() + 1);
            async { Err(busy()) }
        })
        .await;
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("stayed busy for 10 s"), "{msg}");
        assert!(msg.contains("--patience"), "{msg}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
        // 50 ms doubling to 2 s: 0.05+0.1+0.2+0.4+0.8+1.6 = 3.15 s, then 2 s pauses.
        assert_eq!(tries.get(), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_does_not_repeat_a_refusal() {
        let tries = std::cell::Cell::new(0);
        let r: Result<(), _> = retry_unavailable(Duration::from_secs(60), "anchor", || {
            tries.set(tries.get() + 1);
            async { Err(StoreError::Refused("anchor not beyond the last".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.get(), 1);
    }
}
