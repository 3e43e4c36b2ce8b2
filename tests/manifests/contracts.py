"""The names meshaudit's contracts fix (SPEC §7 collector env and metrics, §8 filter keys, env and
stats), and the labels that tie the manifests together: what every check compares against."""

from __future__ import annotations



# SPEC §7: the collector's environment.
COLLECTOR_ENV = {
    "DATABASE_URL", "MESHAUDIT_LISTEN", "AUDIT_RECEIVER_REQUIRE_API_KEY", "AUDIT_RECEIVER_API_KEY",
    "AUDIT_RECEIVER_REQUIRE_SIGNATURE", "AUDIT_RECEIVER_SIGNING_SECRET", "AUDIT_RECEIVER_ENFORCE_TS",
    "AUDIT_RECEIVER_TS_SKEW_SEC", "AUDIT_RECEIVER_IDEMP_TTL_SEC", "AUDIT_RECEIVER_EVENT_KEYS",
    "AUDIT_RECEIVER_REJECT_UNVERIFIED", "MESHAUDIT_MAX_BODY_BYTES", "MESHAUDIT_RATE_LIMIT_RPS",
    "MESHAUDIT_ADMIN_TOKEN", "MESHAUDIT_TLS_CERT", "MESHAUDIT_TLS_KEY", "MESHAUDIT_TLS_CLIENT_CA",
    "MESHAUDIT_LOG_FORMAT",
    # SPEC §10 workload keys
    "AUDIT_RECEIVER_BATCH_KEYS", "AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE",
    # SPEC §9 verifiable log
    "MESHAUDIT_LOG_ORIGIN", "MESHAUDIT_LOG_SIGNING_KEY", "MESHAUDIT_CHECKPOINT_INTERVAL_MS",
}
# Not the collector's settings: only referenced by $(...) in DATABASE_URL (k8s/postgres).
COLLECTOR_ENV_HELPERS = {"POSTGRES_PASSWORD"}
# SPEC §8: the filter's configuration keys, and the env vars it reads.
FILTER_KEYS = {
    "enabled", "collector_cluster", "collector_authority", "collector_path", "api_key",
    "signing_secret", "event_key", "event_key_id", "schema", "batch_max_events", "batch_max_bytes",
    "flush_interval_ms", "max_buffered_events", "max_buffered_bytes", "retries", "backoff_ms",
    "max_backoff_ms", "timeout_ms", "capture_bodies", "max_body_bytes", "max_inflight_body_bytes",
    "body_content_types", "sample_rate", "body_sample_rate", "skip_paths", "header_map",
    "tenant_id", "subject_claim", "include_request_headers", "include_response_headers",
    "redact_headers", "redact_keys", "redact_mode", "is_sensitive", "compliance_category",
    "batch_signing_key",
}
FILTER_SECRET_KEYS = {"api_key", "signing_secret", "event_key", "batch_signing_key"}
FILTER_ENV = {
    "POD_NAME", "POD_NAMESPACE", "NODE_NAME", "CONTAINER_NAME", "SERVICE_ACCOUNT",
    "AUDIT_FORWARD_ENABLED", "AUDIT_FORWARD_API_KEY", "AUDIT_FORWARD_SIGNING_SECRET",
    "AUDIT_FORWARD_EVENT_KEY", "AUDIT_FORWARD_REDACTION_KEY", "AUDIT_FORWARD_RETRIES",
    "AUDIT_FORWARD_BACKOFF_MS", "AUDIT_FORWARD_BATCH_SIGNING_KEY",
}
# What stock Istio injection puts in istio-proxy's environment, of the names above.
ISTIO_PROXY_STOCK_ENV = {"POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT"}
TEMPLATE_REQUIRED_ENV = {
    "NODE_NAME", "CONTAINER_NAME", "AUDIT_FORWARD_API_KEY", "AUDIT_FORWARD_SIGNING_SECRET",
}
# Metric names the alerts and the dashboard may use.
HISTOGRAMS = {"signature_verification_seconds", "db_write_seconds"}
KNOWN_METRICS = {
    # collector, SPEC §7
    "audit_events_received_total", "audit_events_rejected_total", "audit_events_deduped_total",
    "audit_events_unverified_total", "audit_receiver_requests_total", "audit_chain_head_seq",
    "audit_source_last_seen_timestamp_seconds", "audit_source_dropped_events",
    # collector verifiable log, SPEC §9
    "audit_log_tree_size", "audit_log_checkpoint_size", "audit_log_checkpoint_age_seconds",
    # collector exporters, SPEC §11 (audit_export_stopped: 1 while a refusal holds one)
    "audit_export_records_total", "audit_export_failures_total", "audit_export_lag_records",
    "audit_export_cursor_seq", "audit_export_stopped",
    *(h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")),
    # filter, SPEC §8 (Envoy exports wasm custom stats without a prefix)
    "meshaudit_events_captured", "meshaudit_events_skipped", "meshaudit_events_dropped_buffer_full",
    "meshaudit_events_dropped_retries_exhausted", "meshaudit_events_dropped_rejected",
    "meshaudit_events_dropped_too_large", "meshaudit_batches_ok", "meshaudit_batches_failed",
    "meshaudit_batch_retries", "meshaudit_bytes_shipped", "meshaudit_buffered_events",
    # Istio agent, istiod, Istio standard metrics
    "istio_agent_wasm_remote_fetch_count", "istio_agent_wasm_config_conversion_count",
    "istio_agent_wasm_cache_lookup_count", "istio_agent_wasm_cache_entries",
    "istio_requests_total", "pilot_total_xds_rejects",
    # kube-state-metrics, Prometheus
    "kube_job_status_failed", "kube_cronjob_status_last_successful_time", "up",
}
METRIC_PREFIXES = ("audit_", "meshaudit_", "db_write_", "signature_verification_", "istio_",
                   "pilot_", "kube_")
# Metrics selected by a __name__ regex that are not ours (Envoy's, named after the plugin).
FOREIGN_NAME_PATTERNS = ("envoy_extension_config_discovery_",)
REJECT_REASONS = {
    "content_type", "too_large", "api_key", "timestamp", "signature", "rate_limited", "malformed",
    "idempotency_conflict", "id_conflict", "unverified", "store_unavailable", "batch_signature",
}
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
AUDIT_LABEL = ("meshaudit.io/audit", "enabled")
COLLECTOR_POD = "meshaudit-collector"
