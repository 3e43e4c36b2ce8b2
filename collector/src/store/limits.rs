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
}
