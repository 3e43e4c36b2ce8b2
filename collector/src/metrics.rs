//! Prometheus metrics with the names and labels of SPEC §7, in one registry
//! served at `/metrics`. Label values come from small fixed sets, except the
//! per-source gauges whose `source` is the filter's `namespace/pod`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub events_received: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub events_deduped: IntCounter,
    pub events_unverified: IntCounterVec,
    pub requests: IntCounterVec,
    pub chain_head_seq: IntGauge,
    pub source_last_seen: GaugeVec,
    pub source_dropped: GaugeVec,
    pub signature_verification_seconds: Histogram,
    pub db_write_seconds: Histogram,
    pub up: Gauge,
    /// `X-Meshaudit-Source` values ignored as invalid.
    pub sources_invalid: IntCounter,
    pub connections_open: IntGauge,
    /// Connections closed at once because `MESHAUDIT_MAX_CONNECTIONS` were open.
    pub connections_refused: IntCounter,
    /// Body bytes of the ingest requests being processed.
    pub ingest_inflight_bytes: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events_received = IntCounterVec::new(
            Opts::new(
                "audit_events_received_total",
                "Events received, by source kind",
            ),
            &["source"],
        )?;
        let events_rejected = IntCounterVec::new(
            Opts::new(
                "audit_events_rejected_total",
                "Events refused or not stored, by reason (one per refused request before parsing)",
            ),
            &["reason"],
        )?;
        let events_deduped = IntCounter::new(
            "audit_events_deduped_total",
            "Events not stored again: duplicates by id and idempotent replays",
        )?;
        let events_unverified = IntCounterVec::new(
            Opts::new(
                "audit_events_unverified_total",
                "Events whose hash or signature did not verify, by reason",
            ),
            &["reason"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "audit_receiver_requests_total",
                "Ingest requests, by result",
            ),
            &["result"],
        )?;
        let chain_head_seq = IntGauge::new(
            "audit_chain_head_seq",
            "Sequence number of the newest stored event",
        )?;
        let source_last_seen = GaugeVec::new(
            Opts::new(
                "audit_source_last_seen_timestamp_seconds",
                "When a filter (X-Meshaudit-Source) last sent a batch, POSIX seconds",
            ),
            &["source"],
        )?;
        let source_dropped = GaugeVec::new(
            Opts::new(
                "audit_source_dropped_events",
                "Events a filter VM reports having dropped so far (X-Meshaudit-Dropped)",
            ),
            &["source"],
        )?;
        let signature_verification_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "signature_verification_seconds",
                "Time to check a batch signature and its events' hashes and signatures",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
        )?;
        let db_write_seconds = Histogram::with_opts(
            HistogramOpts::new("db_write_seconds", "Time of one group-commit transaction").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
        )?;
        let up = Gauge::new("audit_collector_up", "1 while the collector serves")?;
        let sources_invalid = IntCounter::new(
            "audit_invalid_source_headers_total",
            "Batches whose X-Meshaudit-Source is not namespace/pod (the header is ignored)",
        )?;
        let connections_open =
            IntGauge::new("audit_connections_open", "Client connections open now")?;
        let connections_refused = IntCounter::new(
            "audit_connections_refused_total",
            "Connections closed at once because MESHAUDIT_MAX_CONNECTIONS were open",
        )?;
        let ingest_inflight_bytes = IntGauge::new(
            "audit_ingest_inflight_bytes",
            "Body bytes of the ingest requests being processed (bounded by MESHAUDIT_MAX_INFLIGHT_BYTES)",
        )?;
        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(events_deduped.clone()))?;
        registry.register(Box::new(events_unverified.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(chain_head_seq.clone()))?;
        registry.register(Box::new(source_last_seen.clone()))?;
        registry.register(Box::new(source_dropped.clone()))?;
        registry.register(Box::new(signature_verification_seconds.clone()))?;
        registry.register(Box::new(db_write_seconds.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(sources_invalid.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(ingest_inflight_bytes.clone()))?;
        // Make every fixed label visible at 0 so rates work from the first scrape.
        for reason in crate::ingest::Reason::ALL {
            events_rejected.with_label_values(&[reason.label()]);
        }
        for source in ["filter", "mobius", "forwarder"] {
            events_received.with_label_values(&[source]);
        }
        for result in ["ok", "deduped", "refused", "error"] {
            requests.with_label_values(&[result]);
        }
        for reason in ["hash_mismatch", "bad_signature", "unknown_key"] {
            events_unverified.with_label_values(&[reason]);
        }
        Ok(Self {
            registry,
            events_received,
            events_rejected,
            events_deduped,
            events_unverified,
            requests,
            chain_head_seq,
            source_last_seen,
            source_dropped,
            signature_verification_seconds,
            db_write_seconds,
            up,
            sources_invalid,
            connections_open,
            connections_refused,
            ingest_inflight_bytes,
        })
    }

    pub fn reject(&self, reason: &str, n: u64) {
        self.events_rejected.with_label_values(&[reason]).inc_by(n);
    }

    pub fn request(&self, result: &str) {
        self.requests.with_label_values(&[result]).inc();
    }

    /// The registry, for metrics registered elsewhere (the exporters').
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
