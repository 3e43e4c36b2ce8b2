//! meshaudit collector: the audit sink of the mesh (SPEC §6, §7).
//!
//! - [`config`]: flags and env variables, validated into [`config::Settings`]; `Debug` hides secrets.
//! - [`ingest`]: `POST /v1/events`, the SPEC §6 checks in order, one file per step, [`ingest::Refusal`].
//! - [`lru`]: a map bounded by least-recent use (rate-limit buckets, sources).
//! - [`prepare`]: one event → canonical JSON, recomputed hash, id, query columns, verification.
//! - [`auth`]: API keys, admin token, idempotency scope (constant-time).
//! - [`rate_limit`]: per-key token buckets.
//! - [`chain`]: the storage hash chain and its verifier (pure).
//! - [`store`]: `trait EventStore`, SQLite and PostgreSQL, the group-commit writer.
//! - [`verify`]: whole-store verification (HTTP and CLI).
//! - [`log`]: the verifiable log (SPEC §9): Merkle tree, checkpoints, tiles, proofs.
//! - [`export`]: exporters to webhooks, Splunk HEC, NATS JetStream and S3 (SPEC §11).
//! - [`retain`]: archive and remove old events, leaving an anchor.
//! - [`keys`]: workload keys (SPEC §10): key registry, batch signatures, batch records.
//! - [`search`]: full-text search (`q`) and `GET /v1/stats` counts.
//! - [`http`]: the router, handlers and the API error type.
//! - [`metrics`]: Prometheus metrics with SPEC §7's names.
//! - [`server`]: `serve` (TLS, graceful shutdown, head publication); [`conn`]: connection limits.
//! - [`view`]: a stored event as readers see it (API items, `query` NDJSON), shared by [`http`] and [`cli`].
//! - [`cli`]: the `verify`, `query`, `retain` and `migrate` commands.
#![forbid(unsafe_code)]

pub mod auth;
pub mod chain;
pub mod cli;
pub mod config;
pub mod conn;
pub mod export;
pub mod http;
pub mod ingest;
/// The body functions under their former name, for code written against it.
pub use ingest::body as intake;
pub mod keys;
pub mod log;
pub mod lru;
pub mod metrics;
pub mod prepare;
pub mod rate_limit;
pub mod retain;
pub mod search;
pub mod server;
pub mod store;
pub mod verify;
pub mod view;
