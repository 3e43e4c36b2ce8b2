//! The proxy-wasm glue (ABI 0.2.1, wasm32 only): routes host callbacks to
//! per-VM state, reads what the pure modules need through [`hostcalls`] and
//! applies their results. Nothing here blocks or changes traffic: every
//! callback answers `Continue`, whatever happens.
//!
//! Per request, in the metadata-only mode, all work happens in `on_log`: one
//! `get_header_map_pairs` per direction and a handful of properties, then the
//! record is queued. Events are built, redacted, hashed, signed and batched
//! on the tick. With `capture_bodies`, request and response headers are read
//! when they pass (the content type decides about the body), and body chunks
//! are hashed and copied as they flow. Callbacks the filter has no use for
//! (trailers, connections, queues) are not exported, so Envoy skips them.

use crate::batch::{attempt_headers, Answer, Shipper};
use crate::capture::{
    body_capture_for, parse_header_pairs, HeaderPlan, InflightBudget, LogInfo, RequestCapture,
    RequestRecord, ResponseCapture,
};
use crate::config::{self, Config, ProcessEnv};
use crate::event::{build_event, path_only, sealed_line, signer, Workload};
use crate::hostcalls as hc;
use crate::line::Signer;
use crate::redact::Redactor;
use crate::rng::RandomPool;
use meshaudit_event::schema::new_uuid_v4;
use std::cell::RefCell;
use std::collections::HashMap;

extern "C" {
    fn __wasm_call_ctors();
}

/// Reactor entry point: run static constructors once.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the linker-provided constructor function, called once by the host.
    unsafe { __wasm_call_ctors() };
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static FILTER: RefCell<Filter> = RefCell::new(Filter::default());
    /// Answers delivered while the state was borrowed (an HTTP call failing
    /// inline during its own dispatch); applied on the next callback.
    static DEFERRED: RefCell<Vec<(u32, u32, Answer)>> = const { RefCell::new(Vec::new()) };
}

const STAT_NAMES: [&str; 11] = [
    "meshaudit_events_captured",
    "meshaudit_events_skipped",
    "meshaudit_events_dropped_buffer_full",
    "meshaudit_events_dropped_retries_exhausted",
    "meshaudit_events_dropped_rejected",
    "meshaudit_events_dropped_too_large",
    "meshaudit_batches_ok",
    "meshaudit_batches_failed",
    "meshaudit_batch_retries",
    "meshaudit_bytes_shipped",
    "meshaudit_buffered_events",
];

/// Context ids are small integers the host hands out: a multiplicative hash
/// is enough (no attacker chooses them) and much cheaper than SipHash on the
/// callbacks every request makes.
#[derive(Default, Clone, Copy)]
struct ContextIdHasher(u64);

impl std::hash::Hasher for ContextIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ContextMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<ContextIdHasher>>;

#[derive(Default)]
struct Filter {
    plugins: ContextMap<Plugin>,
    streams: ContextMap<Stream>,
}

struct Plugin {
    cfg: Config,
    signer: Signer,
    plan: HeaderPlan,
    redactor: Redactor,
    workload: Workload,
    source: String,
    shipper: Shipper,
    rng: RefCell<RandomPool>,
    budget: InflightBudget,
    metrics: [Option<u32>; 11],
    done_deadline_ns: Option<u64>,
    done_called: bool,
    /// Whether the "Envoy refused a dispatch" warning was logged (once per VM).
    warned_refused: bool,
}

struct Stream {
    root: u32,
    /// `None` until decided; `Some(false)` for skipped or unsampled requests.
    audited: Option<bool>,
    bodies_sampled: bool,
    request: Option<RequestCapture>,
    response: ResponseCapture,
    response_read: bool,
    request_bytes: u64,
    response_bytes: u64,
    reserved: usize,
    /// When the request headers reached the filter (the event timestamp).
    start_ns: u64,
}

fn with_filter<R>(f: impl FnOnce(&mut Filter) -> R) -> Option<R> {
    FILTER.with(|cell| cell.try_borrow_mut().ok().map(|mut filter| f(&mut filter)))
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

// ---------------------------------------------------------------- lifecycle

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with_filter(|f| {
        if parent_id == 0 {
            return;
        }
        let enabled = f.plugins.get(&parent_id).is_some_and(|p| p.cfg.enabled);
        if enabled {
            f.streams.insert(
                context_id,
                Stream {
                    root: parent_id,
                    audited: None,
                    bodies_sampled: false,
                    request: None,
                    response: ResponseCapture::default(),
                    response_read: false,
                    request_bytes: 0,
                    response_bytes: 0,
                    reserved: 0,
                    start_ns: 0,
                },
            );
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> u32 {
    let raw = hc::buffer(hc::BUFFER_PLUGIN_CONFIGURATION, 0, size).unwrap_or_default();
    let cfg = match config::parse(&raw, &ProcessEnv) {
        Ok(cfg) => cfg,
        Err(e) => {
            hc::log(hc::LOG_ERROR, &e.to_string());
            return 0;
        }
    };
    let now = hc::now_ns();
    let workload = read_workload();
    let mut metrics = [None; 11];
    for (slot, name) in metrics.iter_mut().zip(STAT_NAMES) {
        let kind = if name == "meshaudit_buffered_events" {
            hc::METRIC_GAUGE
        } else {
            hc::METRIC_COUNTER
        };
        *slot = hc::define_metric(kind, name);
    }
    if cfg.enabled {
        hc::set_tick_period_ms(cfg.tick_period_ms());
        hc::log(
            hc::LOG_INFO,
            &format!(
                "meshaudit: auditing to cluster {:?} (schema {}, source {})",
                cfg.collector_cluster,
                cfg.schema.name(),
                workload.source()
            ),
        );
    } else {
        hc::log(hc::LOG_INFO, "meshaudit: disabled, passing traffic through");
    }
    let plugin = Plugin {
        signer: signer(&cfg),
        plan: HeaderPlan::new(&cfg),
        redactor: Redactor::new(&cfg),
        source: workload.source(),
        workload,
        shipper: Shipper::new(&cfg, ms(now)),
        rng: RefCell::new(RandomPool::new()),
        budget: InflightBudget::new(cfg.max_inflight_body_bytes),
        metrics,
        done_deadline_ns: None,
        done_called: false,
        warned_refused: false,
        cfg,
    };
    let stored = with_filter(|f| {
        f.plugins.insert(context_id, plugin);
    });
    u32::from(stored.is_some())
}

fn read_workload() -> Workload {
    let env = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
    // Envoy 1.40 serves the node as `xds.node`; older ones as `node`.
    let node = |key: &str| {
        hc::property_string(&["xds", "node", "metadata", key])
            .or_else(|| hc::property_string(&["node", "metadata", key]))
    };
    Workload {
        namespace: env("POD_NAMESPACE").or_else(|| node("NAMESPACE")),
        pod: env("POD_NAME").or_else(|| node("NAME")),
        container: env("CONTAINER_NAME").or_else(|| {
            node("APP_CONTAINERS").and_then(|c| {
                c.split(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty())
                    .map(str::to_owned)
            })
        }),
        node: env("NODE_NAME").or_else(|| node("NODE_NAME")),
        service_account: env("SERVICE_ACCOUNT").or_else(|| node("SERVICE_ACCOUNT")),
        workload: node("WORKLOAD_NAME"),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    let answer = with_filter(|f| {
        let Some(p) = f.plugins.get_mut(&context_id) else {
            return true;
        };
        if !p.cfg.enabled {
            return true;
        }
        let now = hc::now_ns();
        p.shipper.begin_shutdown();
        ship(p, now);
        if p.shipper.is_idle() {
            p.done_called = true;
            return true;
        }
        let wait_ms = p.cfg.timeout_ms.min(5_000);
        p.done_deadline_ns = Some(now.saturating_add(wait_ms * 1_000_000));
        false
    });
    u32::from(answer.unwrap_or(true))
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with_filter(|f| {
        if let Some(s) = f.streams.remove(&context_id) {
            if let Some(p) = f.plugins.get_mut(&s.root) {
                p.budget.release(s.reserved);
            }
        } else {
            f.plugins.remove(&context_id);
        }
    });
}

// ---------------------------------------------------------------- requests

/// Reads the request headers and decides whether this request is audited.
fn open_request(p: &mut Plugin, s: &mut Stream) {
    let buf = hc::header_map(hc::MAP_REQUEST_HEADERS).unwrap_or_default();
    let mut request = p.plan.request(&parse_header_pairs(&buf), 0);
    let mut rng = p.rng.borrow_mut();
    let salt = request.path.len() as u64;
    let audited =
        !p.cfg.is_skipped(path_only(&request.path)) && rng.sample(p.cfg.sample_rate, salt);
    if !audited {
        p.shipper.count_skipped();
        s.audited = Some(false);
        return;
    }
    s.audited = Some(true);
    s.bodies_sampled = p.cfg.capture_bodies && rng.sample(p.cfg.body_sample_rate, salt);
    if s.bodies_sampled {
        request.body = body_capture_for(
            &p.cfg,
            request.content_type.as_deref(),
            request.content_encoding.as_deref(),
        );
    }
    s.request = Some(request);
}

fn read_response(p: &Plugin, s: &mut Stream) {
    let buf = hc::header_map(hc::MAP_RESPONSE_HEADERS).unwrap_or_default();
    p.plan.response(&parse_header_pairs(&buf), &mut s.response);
    s.response_read = true;
    if s.bodies_sampled {
        s.response.body = body_capture_for(
            &p.cfg,
            s.response.content_type.as_deref(),
            s.response.content_encoding.as_deref(),
        );
    }
}

fn with_stream(context_id: u32, f: impl FnOnce(&mut Plugin, &mut Stream)) {
    with_filter(|filter| {
        let Some(s) = filter.streams.get_mut(&context_id) else {
            return;
        };
        if let Some(p) = filter.plugins.get_mut(&s.root) {
            f(p, s);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    with_stream(context_id, |p, s| {
        s.start_ns = hc::now_ns();
        if p.cfg.capture_bodies && s.audited.is_none() {
            open_request(p, s);
        }
    });
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, _eos: u32) -> u32 {
    with_stream(context_id, |p, s| {
        s.request_bytes += size as u64;
        if let Some(body) = s.request.as_mut().and_then(|r| r.body.as_mut()) {
            if size > 0 {
                if let Some(chunk) = hc::buffer(hc::BUFFER_REQUEST_BODY, 0, size) {
                    s.reserved += body.push(&chunk, &mut p.budget);
                }
            }
        }
    });
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    with_stream(context_id, |p, s| {
        if s.bodies_sampled && s.audited == Some(true) {
            read_response(p, s);
        }
    });
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, _eos: u32) -> u32 {
    with_stream(context_id, |p, s| {
        s.response_bytes += size as u64;
        if let Some(body) = s.response.body.as_mut() {
            if size > 0 {
                if let Some(chunk) = hc::buffer(hc::BUFFER_RESPONSE_BODY, 0, size) {
                    s.reserved += body.push(&chunk, &mut p.budget);
                }
            }
        }
    });
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with_stream(context_id, |p, s| {
        if s.audited.is_none() {
            open_request(p, s);
        }
        if s.audited != Some(true) {
            return;
        }
        let Some(mut request) = s.request.take() else {
            return;
        };
        if !s.response_read {
            read_response(p, s);
        }
        if s.response.grpc && s.response.grpc_status.is_none() {
            let buf = hc::header_map(hc::MAP_RESPONSE_TRAILERS).unwrap_or_default();
            p.plan
                .response_trailers(&parse_header_pairs(&buf), &mut s.response);
        }
        let end = hc::now_ns();
        // A stream that never passed its request headers through us (a local
        // reply from an earlier filter) starts at its end.
        request.start_unix_ns = if s.start_ns > 0 && s.start_ns <= end {
            s.start_ns
        } else {
            end
        };
        request.body_bytes = s.request_bytes;
        let mut response = std::mem::take(&mut s.response);
        response.body_bytes = s.response_bytes;
        let log = LogInfo {
            end_unix_ns: end,
            source_address: hc::property_string(&["source", "address"]),
            protocol: hc::property_string(&["request", "protocol"]),
            upstream_cluster: hc::property_string(&["xds", "cluster_name"]),
            response_flags: hc::property_u64(&["response", "flags"]).unwrap_or(0),
            code_details: hc::property_string(&["response", "code_details"]),
            response_code: match response.status {
                Some(_) => None,
                None => hc::property_u64(&["response", "code"])
                    .and_then(|c| u32::try_from(c).ok())
                    .filter(|&c| c > 0),
            },
            principal: hc::property_string(&["connection", "uri_san_peer_certificate"]),
            jwt_subject: p.cfg.subject_claim.as_ref().and_then(|c| {
                hc::property_string(&[
                    "metadata",
                    "filter_metadata",
                    "envoy.filters.http.jwt_authn",
                    &c.provider,
                    &c.claim,
                ])
            }),
        };
        p.budget.release(s.reserved);
        s.reserved = 0;
        p.shipper.admit(RequestRecord {
            request,
            response,
            log,
        });
    });
}

// ---------------------------------------------------------------- shipping

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with_filter(|f| {
        apply_deferred(f);
        if let Some(p) = f.plugins.get_mut(&context_id) {
            ship(p, hc::now_ns());
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _headers: usize,
    _body_size: usize,
    _trailers: usize,
) {
    let answer = read_call_answer();
    let handled = with_filter(|f| {
        apply_deferred(f);
        if let Some(p) = f.plugins.get_mut(&context_id) {
            let now = hc::now_ns();
            let random = p.rng.borrow_mut().next_u64(now);
            p.shipper.on_answer(token, answer, ms(now), random);
            pump(p, now);
        }
    });
    if handled.is_none() {
        DEFERRED.with(|d| {
            if let Ok(mut d) = d.try_borrow_mut() {
                d.push((context_id, token, answer));
            }
        });
    }
}

fn read_call_answer() -> Answer {
    let Some(buf) = hc::header_map(hc::MAP_HTTP_CALL_RESPONSE_HEADERS) else {
        return Answer::Failed;
    };
    let mut status = None;
    let mut retry_after_s = None;
    for (name, value) in parse_header_pairs(&buf) {
        let value = std::str::from_utf8(value).map(str::trim).unwrap_or("");
        match name {
            b":status" => status = value.parse::<u32>().ok().filter(|s| (100..600).contains(s)),
            b"retry-after" => retry_after_s = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    match status {
        Some(status) => Answer::Status {
            status,
            retry_after_s,
        },
        None => Answer::Failed,
    }
}

fn apply_deferred(f: &mut Filter) {
    let pending = DEFERRED.with(|d| d.try_borrow_mut().map(|mut d| std::mem::take(&mut *d)));
    let Ok(pending) = pending else {
        return;
    };
    for (context_id, token, answer) in pending {
        if let Some(p) = f.plugins.get_mut(&context_id) {
            let now = hc::now_ns();
            let random = p.rng.borrow_mut().next_u64(now);
            p.shipper.on_answer(token, answer, ms(now), random);
        }
    }
}

/// Turns due records into batches, dispatches what is due, publishes stats.
fn ship(p: &mut Plugin, now_ns: u64) {
    if !p.cfg.enabled {
        return;
    }
    let now_ms = ms(now_ns);
    if p.shipper.should_flush(now_ms) {
        let Plugin {
            cfg,
            signer,
            redactor,
            workload,
            shipper,
            rng,
            ..
        } = p;
        shipper.flush(
            now_ms,
            |record| {
                let random = rng.borrow_mut().bytes16(now_ns);
                sealed_line(
                    &build_event(record, cfg, workload, redactor, random),
                    cfg,
                    signer,
                )
            },
            || new_uuid_v4(rng.borrow_mut().bytes16(now_ns)),
        );
    }
    pump(p, now_ns);
}

/// Dispatches every due batch (within the in-flight limit), publishes stat
/// deltas and completes a pending shutdown.
fn pump(p: &mut Plugin, now_ns: u64) {
    let now_ms = ms(now_ns);
    let ts = now_ns / 1_000_000_000;
    while let Some(seq) = p.shipper.next_dispatch(now_ms) {
        let token = match p.shipper.batch(seq) {
            Some(batch) => {
                let headers =
                    attempt_headers(&p.cfg, batch, ts, &p.source, p.shipper.dropped_total());
                let refs: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                hc::http_call(
                    &p.cfg.collector_cluster,
                    &refs,
                    &batch.body,
                    p.cfg.timeout_ms,
                )
            }
            None => break,
        };
        if token.is_none() && !p.warned_refused {
            p.warned_refused = true;
            hc::log(
                hc::LOG_WARN,
                &format!(
                    "meshaudit: Envoy refused to call cluster {:?} (is it defined?); batches are retried, then dropped and counted",
                    p.cfg.collector_cluster
                ),
            );
        }
        let random = p.rng.borrow_mut().next_u64(now_ns);
        p.shipper.dispatched(seq, token, now_ms, random);
    }
    publish_stats(p);
    // Only once `on_done` has answered "not yet" (it set the deadline) does
    // the host wait for `done()`.
    if let (true, false, Some(deadline)) =
        (p.shipper.shutting_down(), p.done_called, p.done_deadline_ns)
    {
        if p.shipper.is_idle() || now_ns >= deadline {
            p.done_called = true;
            hc::done();
        }
    }
}

fn publish_stats(p: &mut Plugin) {
    let d = p.shipper.take_stats();
    let values: [i64; 11] = [
        d.captured as i64,
        d.skipped as i64,
        d.dropped_buffer_full as i64,
        d.dropped_retries_exhausted as i64,
        d.dropped_rejected as i64,
        d.dropped_too_large as i64,
        d.batches_ok as i64,
        d.batches_failed as i64,
        d.batch_retries as i64,
        d.bytes_shipped as i64,
        d.buffered_events,
    ];
    for (id, value) in p.metrics.iter().zip(values) {
        if let (Some(id), true) = (id, value != 0) {
            hc::increment_metric(*id, value);
        }
    }
}
