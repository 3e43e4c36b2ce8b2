//! meshaudit benchmark tools, driven by `scripts/bench.sh` (see `docs/BENCHMARKS.md`).
//!
//! - [`events`]: realistic `meshaudit.http/v1` events (~800 bytes of canonical JSON), each with a
//!   unique id, sealed with the event crate's integrity functions exactly as the filter does.
//! - [`rows`]: the columns the collector derives from an event, for the raw database ceilings.
//! - [`loadgen`]: the collector load generator: signed NDJSON batches over several connections;
//!   events/s committed and batch latency.
//! - [`ceiling`]: the raw ceiling of each database on the same rows: SQLite batched inserts
//!   (WAL, `synchronous=FULL`); PostgreSQL multi-row `INSERT` and `COPY` in batches.
//! - [`delay`]: end-to-end delay, request through Envoy → event visible in `GET /v1/events`.
//! - [`summary`]: percentiles and the JSON reports every binary prints.
//!
//! Each binary in `src/bin/` parses flags, runs one of these and prints one JSON object.

pub mod ceiling;
pub mod delay;
pub mod events;
pub mod loadgen;
pub mod rows;
pub mod summary;
