//! The proxy-wasm ABI 0.2.1 hostcalls the filter uses, wrapped so that no
//! status the host returns can panic (SPEC §8): every call answers a `Result`
//! or an `Option`, and memory the host hands back is owned by a `Vec`.
//!
//! The Rust SDK's helpers `panic!` on unexpected statuses, `unwrap` UTF-8 in
//! header maps and its dispatcher `expect`s every HTTP-call token to be known
//! (an answer delivered inline while a dispatch is still being made is not):
//! one of those kills the VM and with it auditing, so the filter speaks the
//! ABI itself. With the exports in `host`, the only modules allowed `unsafe`.
#![allow(unsafe_code)]

use crate::stats::StatKind;
use crate::vm::{BufferType, Host, LogLevel, MapType};
use std::ptr::null_mut;

const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_RESPONSE_TRAILERS: u32 = 3;
const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

const BUFFER_REQUEST_BODY: u32 = 0;
const BUFFER_RESPONSE_BODY: u32 = 1;
const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;

const LOG_INFO: u32 = 2;
const LOG_WARN: u32 = 3;
const LOG_ERROR: u32 = 4;

const STATUS_OK: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_done() -> u32;
}

/// Memory the host fills for us: allocated here, handed back as a `Vec`.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut boxed = vec![0u8; size].into_boxed_slice();
    let ptr = boxed.as_mut_ptr();
    std::mem::forget(boxed);
    ptr
}

/// Takes ownership of a buffer the host allocated through
/// [`proxy_on_memory_allocate`].
fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the host allocated `data` with `proxy_on_memory_allocate(size)`,
    // i.e. a boxed slice of exactly `size` bytes, and hands ownership to us.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length of a live string.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The host clock in nanoseconds since the Unix epoch (0 if refused).
pub fn now_ns() -> u64 {
    let mut t = 0u64;
    // SAFETY: `t` outlives the call.
    match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
        STATUS_OK => t,
        _ => 0,
    }
}

pub fn set_tick_period_ms(ms: u64) -> bool {
    let ms = u32::try_from(ms).unwrap_or(u32::MAX);
    // SAFETY: plain value call.
    unsafe { proxy_set_tick_period_milliseconds(ms) == STATUS_OK }
}

pub fn buffer(buffer_type: u32, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers outlive the call; see `take`.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) };
    match status {
        STATUS_OK => take(data, size),
        _ => None,
    }
}

/// A header map in the host's serialisation (parse with
/// [`crate::capture::parse_header_pairs`]).
pub fn header_map(map_type: u32) -> Option<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers outlive the call; see `take`.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    match status {
        STATUS_OK => take(data, size),
        _ => None,
    }
}

/// A property by path (segments joined with NUL, as the ABI wants).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: `joined` and the out-pointers outlive the call; see `take`.
    let status = unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) };
    match status {
        STATUS_OK => take(data, size),
        _ => None,
    }
}

/// `dispatch_http_call`: the token, or `None` when the host refused it.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u64,
) -> Option<u32> {
    let headers = crate::capture::serialize_header_pairs(headers);
    let trailers = crate::capture::serialize_header_pairs::<&str, &str>(&[]);
    let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
    let mut token = 0u32;
    // SAFETY: every pointer refers to a live buffer for the duration of the call.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout,
            &mut token,
        )
    };
    (status == STATUS_OK).then_some(token)
}

pub fn define_metric(metric_type: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: `name` and `id` outlive the call.
    let status = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    (status == STATUS_OK).then_some(id)
}

pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: plain value call.
    let _ = unsafe { proxy_increment_metric(id, offset) };
}

pub fn done() {
    // SAFETY: plain call.
    let _ = unsafe { proxy_done() };
}

/// The host over the proxy-wasm ABI and WASI.
pub struct WasmHost;

impl Host for WasmHost {
    fn now_ns(&self) -> u64 {
        now_ns()
    }
    fn header_map(&self, map: MapType) -> Option<Vec<u8>> {
        header_map(match map {
            MapType::RequestHeaders => MAP_REQUEST_HEADERS,
            MapType::ResponseHeaders => MAP_RESPONSE_HEADERS,
            MapType::ResponseTrailers => MAP_RESPONSE_TRAILERS,
            MapType::HttpCallResponseHeaders => MAP_HTTP_CALL_RESPONSE_HEADERS,
        })
    }
    fn buffer(&self, which: BufferType, size: usize) -> Option<Vec<u8>> {
        let t = match which {
            BufferType::RequestBody => BUFFER_REQUEST_BODY,
            BufferType::ResponseBody => BUFFER_RESPONSE_BODY,
            BufferType::HttpCallResponseBody => BUFFER_HTTP_CALL_RESPONSE_BODY,
            BufferType::PluginConfiguration => BUFFER_PLUGIN_CONFIGURATION,
        };
        buffer(t, 0, size)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        property(path)
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        http_call(cluster, headers, body, timeout_ms)
    }
    fn define_metric(&self, kind: StatKind, name: &str) -> Option<u32> {
        let kind = match kind {
            StatKind::Counter => METRIC_COUNTER,
            StatKind::Gauge => METRIC_GAUGE,
        };
        define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        increment_metric(id, delta);
    }
    fn set_tick_period_ms(&self, ms: u64) {
        set_tick_period_ms(ms);
    }
    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Info => LOG_INFO,
            LogLevel::Warn => LOG_WARN,
            LogLevel::Error => LOG_ERROR,
        };
        log(level, message);
    }
    fn done(&self) {
        done();
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}
