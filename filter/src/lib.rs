//! meshaudit proxy-wasm HTTP filter: one audit event per request, batched and
//! shipped to the collector (SPEC §4, §6, §8).
//!
//! - [`config`]: plugin configuration, `AUDIT_FORWARD_*` env overrides, validation.
//! - [`capture`]: headers, body chunks and `on_log` properties → a [`capture::RequestRecord`].
//! - [`event`]: a record → the pruned, redacted event, written as its sealed
//!   line (the encoder is `meshaudit_event::line`) within the collector's limits.
//! - [`redact`]: header, body-key and query redaction (mask / hmac).
//! - [`batch`]: the bounded buffer, NDJSON batches, retry schedule and window,
//!   refused lines, the batch signature.
//! - [`stats`]: the stats, by name and kind.
//! - [`rng`]: pooled WASI randomness for ids, sampling and jitter.
//! - [`alloc_cache`]: free lists of small blocks over the system allocator
//!   (the wasm build's global allocator).
//! - [`vm`]: the VM's decisions as a state machine over the [`vm::Host`] seam.
//! - `host` and `hostcalls` (wasm32 only): the proxy-wasm exports and
//!   hostcalls; nothing else touches the ABI, and only they and
//!   `alloc_cache` may use `unsafe`.
//!
//! Everything but `host` and `hostcalls` is pure and unit-tested on the
//! build machine (the VM with a mock host).
//!
//! A panic would kill the VM and with it auditing: outside tests the filter's
//! code may not `unwrap`, `expect` or `panic!` (enforced below), and slices
//! are only indexed within bounds checked just before.
#![deny(unsafe_code)]
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

pub mod alloc_cache;
pub mod batch;
pub mod capture;
pub mod config;
pub mod event;
pub mod redact;
pub mod rng;
pub mod stats;
pub mod vm;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod hostcalls;

/// Small blocks from free lists: ~8 % fewer wasm instructions per metadata
/// request than dlmalloc alone (docs/BENCHMARKS.md).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc_cache::SmallBlockCache<std::alloc::System> =
    alloc_cache::SmallBlockCache::new(std::alloc::System);
