//! meshaudit-event: the contract the filter and the collector share.
//!
//! - [`append`]: appending a short byte string without wasm's `memory.copy` call.
//! - [`value`]: a JSON value type that keeps numbers exact, and a strict parser
//!   (depth limit, no `NaN`/`Infinity`, no lone surrogates).
//! - [`canonical`]: the canonical bytes of SPEC §5, identical to Python's
//!   `json.dumps(v, sort_keys=True, separators=(",", ":"))`.
//! - [`prune`]: mobius `prune_empty`.
//! - [`integrity`]: event hash, event signature, batch signature, timestamp window.
//! - [`line`]: the one-pass sealed-line writer and the keyed-once signer (the
//!   single producer of event lines; `to_value` + `seal` are its test oracle).
//! - [`stream`]: a JSON body as its canonical, redacted, pruned payload in one
//!   pass, without a tree (the tree path is its test oracle).
//! - [`schema`]: the `meshaudit.http/v1` event, its `meshaudit-1` and `mobius-1`
//!   wire shapes, and the small pure helpers that fill it (status mapping,
//!   timestamps, UUIDs).
//! - [`workload_key`]: SPEC §10 Ed25519 workload keys, batch signature bytes and header.
//!
//! No I/O, no clock and no randomness: callers pass them in, so the crate builds
//! for `wasm32-wasip1` (inside the filter) and the host alike.
#![forbid(unsafe_code)]

pub mod append;
pub mod canonical;
pub mod integrity;
pub mod line;
pub mod prune;
pub mod schema;
pub mod stream;
#[cfg(test)]
mod test_gen;
pub mod value;
mod value_serde;
pub mod workload_key;

pub use canonical::{canonical, write_canonical};
pub use schema::{HttpEvent, Schema, SCHEMA_ID, SPEC_VERSION};
pub use value::{parse, parse_with_depth, Map, Number, ParseError, Value};
