//! Reference filters that bound what any proxy-wasm filter costs in Envoy's V8 runtime.
//!
//! The filters themselves are the examples of this crate, each its own `cdylib`:
//! - `floor_empty`: a root context and an HTTP context with every callback left at the SDK's
//!   default (continue). Its cost is Envoy calling into the VM for each request phase.
//! - `floor_trivial`: per request, one environment read (WASI) and one request header set — the
//!   smallest filter that does anything, "the V8 floor any wasm filter starts from".
//! - `floor_probe`: per request, only the building blocks named in its plugin configuration
//!   (comma-separated: `request_headers`, `response_headers`, `properties`, `one_property`,
//!   `time`, `hash`), so the harness can price each one (Envoy CPU per request minus the empty
//!   filter's).
//!
//! `scripts/bench.sh` builds them with the same wasm32-wasip1 toolchain as the meshaudit filter.
