//! The exporter metrics of SPEC §11, registered in the collector's registry:
//! `audit_export_records_total`, `audit_export_failures_total`,
//! `audit_export_lag_records` (head seq − cursor), `audit_export_cursor_seq`,
//! and `audit_export_stopped` (1 while a refusal holds the exporter), which
//! the alert rules use.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ExportMetrics {
    pub records: IntCounterVec,
    pub failures: IntCounterVec,
    pub lag: IntGaugeVec,
    pub cursor: IntGaugeVec,
    pub stopped: IntGaugeVec,
}

impl ExportMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let label = &["exporter"];
        let m = Self {
            records: IntCounterVec::new(
                Opts::new(
                    "audit_export_records_total",
                    "Records the sink acknowledged, by exporter (resent records count again)",
                ),
                label,
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "audit_export_failures_total",
                    "Failed batch deliveries (retried or refused), by exporter",
                ),
                label,
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "audit_export_lag_records",
                    "Stored records the exporter has not delivered yet (head seq - cursor)",
                ),
                label,
            )?,
            cursor: IntGaugeVec::new(
                Opts::new(
                    "audit_export_cursor_seq",
                    "The last seq the sink acknowledged, by exporter",
                ),
                label,
            )?,
            stopped: IntGaugeVec::new(
                Opts::new(
                    "audit_export_stopped",
                    "1 while the exporter is stopped by a record the sink refused",
                ),
                label,
            )?,
        };
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.cursor.clone()))?;
        registry.register(Box::new(m.stopped.clone()))?;
        Ok(m)
    }

    /// Makes the exporter's series visible at 0 from the first scrape.
    pub fn touch(&self, exporter: &str) {
        self.records.with_label_values(&[exporter]);
        self.failures.with_label_values(&[exporter]);
    }

    pub fn observe(&self, exporter: &str, cursor: i64, head: i64, stopped: bool) {
        self.cursor.with_label_values(&[exporter]).set(cursor);
        self.lag
            .with_label_values(&[exporter])
            .set((head - cursor).max(0));
        self.stopped
            .with_label_values(&[exporter])
            .set(i64::from(stopped));
    }
}
