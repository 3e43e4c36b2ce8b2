//! Integration tests of the collector, in one binary (one link step):
//! the store story on SQLite and PostgreSQL, every ingest refusal, the seed
//! 000 smoke test as a real shell script, mobius-auditlog-py events,
//! durability under kill -9, replicas, the binary's operations (SIGTERM,
//! TLS, commands) and tamper detection.

mod anchors;
mod blackhole;
mod durability;
mod export_nats;
mod export_s3;
mod export_splunk;
mod export_support;
mod export_webhook;
mod hardening;
mod log;
mod mobius;
mod process;
mod refusals;
mod search;
mod smoke;
mod story;
mod support;
mod tamper;
mod ui_browser;
mod writer;
