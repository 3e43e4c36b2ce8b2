//! meshaudit proxy-wasm HTTP filter: one audit event per request, batched and
//! shipped to the collector (SPEC §4, §6, §8).
//!
//! - [`config`]: plugin configuration, `AUDIT_FORWARD_*` env overrides, validation.
//! - [`capture`]: headers, body chunks and `on_log` properties → a [`capture::RequestRecord`].
//! - [`event`]: a record → the pruned, redacted, sealed event line (on the tick).
//! - [`line`]: the sealed canonical line of an event, written in one pass.
//! - [`redact`]: header, body-key and query redaction (mask / hmac).
//! - [`batch`]: the bounded buffer, NDJSON batches, retry schedule, stat deltas.
//! - [`rng`]: pooled WASI randomness for ids, sampling and jitter.
//! - `host` (wasm32 only): the thin proxy-wasm glue; nothing else touches the host.
//!
//! Everything but `host` is pure and unit-tested on the host.
//!
//! A panic would kill the VM and with it auditing: outside tests the filter's
//! code may not `unwrap`, `expect` or `panic!` (enforced below), and slices
//! are only indexed within bounds checked just before.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod batch;
pub mod capture;
pub mod config;
pub mod event;
pub mod line;
pub mod redact;
pub mod rng;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod hostcalls;
