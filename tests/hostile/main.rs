//! Hostile replays (issue 17): each confirmed defect, replayed as an attacker
//! or a careless operator would, against the release binary
//! (`cargo build --release -p meshaudit-collector`, or `MESHAUDIT_COLLECTOR_BIN`)
//! on loopback. They must stay green.
//!
//! - `store_*`: the store and CLI side (retention anchors, `retain`, verify,
//!   database outages, terminal output).
//! - `ingest_*`: the ingest side.

mod support;

mod store_outage;
mod store_retention;
mod store_terminal;

mod ingest_batches;
mod ingest_connections;
mod ingest_identity;
