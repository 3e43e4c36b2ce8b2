//! The filter's VM as a pure state machine over a [`Host`] seam: every
//! decision the proxy-wasm callbacks make — sampling, record assembly and the
//! start-time fallback, the per-connection facts, answers to dispatches
//! (`:status`, `Retry-After`, refused lines), the `on_done` deadline — lives
//! here and is unit-tested with a mock host on the build machine. The wasm32
//! glue (`host`) only implements [`Host`] over the ABI and forwards the
//! exported callbacks.
//!
//! Per request, in the metadata-only mode, all work happens in `on_log`: one
//! header map per direction, the clock, and the properties `request.time`
//! (the start, which Envoy already tracks), `connection.id`,
//! `xds.cluster_name`, `response.flags` and `response.code_details`.
//! `source.address`, `request.protocol` and the peer certificate's URI SAN
//! belong to the connection and are read once per connection. The event is
//! then built, hashed, signed and written into the open batch at once (the
//! response has already left: `on_log` runs when the stream is complete), so
//! no per-request record waits in memory. With `capture_bodies`, the request
//! and response headers are read when they pass (Envoy shows a header map
//! only during its own callback and in `on_log`; the content type decides
//! about the body) and chunks are hashed and copied as they flow. Without
//! it, the header callbacks return at once.

use crate::batch::{parse_answer, Answer, Shipper, MAX_LINE_BYTES};
use crate::capture::{
    body_capture_for, parse_header_pairs, HeaderPlan, InflightBudget, LogInfo, RequestCapture,
    RequestRecord, ResponseCapture,
};
use crate::config::{self, Config, EnvSource};
use crate::event::{build, path_only, write_line, Workload};
use crate::redact::Redactor;
use crate::rng::RandomPool;
use crate::stats::{Stat, StatKind};
use meshaudit_event::line::{LineEncoder, Signer};
use meshaudit_event::schema::new_uuid_v4;
use meshaudit_event::stream::PayloadWriter;
use meshaudit_event::Schema;
use std::cell::RefCell;
use std::collections::HashMap;

/// Header maps the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    RequestHeaders,
    ResponseHeaders,
    ResponseTrailers,
    HttpCallResponseHeaders,
}

/// Buffers the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    HttpCallResponseBody,
    PluginConfiguration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// What the filter asks of its host (proxy-wasm hostcalls and WASI env).
/// Every call may fail; none may panic.
pub trait Host {
    /// Nanoseconds since the Unix epoch (0 if refused).
    fn now_ns(&self) -> u64;
    /// A header map in the host's pairs serialisation.
    fn header_map(&self, map: MapType) -> Option<Vec<u8>>;
    /// Up to `size` bytes of a buffer.
    fn buffer(&self, buffer: BufferType, size: usize) -> Option<Vec<u8>>;
    /// A property by path.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// `dispatch_http_call`: the token, or `None` when refused.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32>;
    fn define_metric(&self, kind: StatKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn set_tick_period_ms(&self, ms: u64);
    fn log(&self, level: LogLevel, message: &str);
    /// The root context has finished its `on_done` work.
    fn done(&self);
    /// A variable of the VM's environment (WASI, `host_env_keys`).
    fn env(&self, name: &str) -> Option<String>;
}

/// A string property (`None` when absent, empty or not UTF-8).
pub fn property_string(host: &impl Host, path: &[&str]) -> Option<String> {
    host.property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// An integer property (Envoy serialises int64/uint64, timestamps and
/// durations as 8 little-endian bytes).
pub fn property_u64(host: &impl Host, path: &[&str]) -> Option<u64> {
    let b = host.property(path)?;
    let bytes: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

struct HostEnv<'a, H: Host>(&'a H);

impl<H: Host> EnvSource for HostEnv<'_, H> {
    fn var(&self, name: &str) -> Option<String> {
        self.0.env(name)
    }
}

/// The answer to a dispatch, read from the host (its body only for a
/// refusal that may name lines).
pub fn read_answer(host: &impl Host, body_size: usize) -> Answer {
    let Some(buf) = host.header_map(MapType::HttpCallResponseHeaders) else {
        return Answer::Failed;
    };
    parse_answer(&parse_header_pairs(&buf), || {
        (body_size > 0)
            .then(|| host.buffer(BufferType::HttpCallResponseBody, body_size.min(65_536)))
            .flatten()
    })
}

/// Context ids are small integers the host hands out: a multiplicative hash
/// is enough (no attacker chooses them) and much cheaper than SipHash on the
/// callbacks every request makes.
#[derive(Default, Clone, Copy)]
pub struct ContextIdHasher(u64);

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

/// What belongs to a downstream connection, read once per connection.
#[derive(Debug, Clone, Default, PartialEq)]
struct ConnectionFacts {
    id: u64,
    source_address: Option<String>,
    protocol: Option<String>,
    principal: Option<String>,
}

/// Connections remembered per VM (direct-mapped by id): keep-alive and
/// HTTP/2 connections carry many requests; a slot reused by another
/// connection is simply read again. Envoy numbers connections in order, so
/// up to this many open at once never evict each other; past it, requests
/// spread over the connections miss every time (three reads more each), so
/// the table is sized for a busy sidecar's inbound side (~100 KB per VM).
const CONNECTION_SLOTS: usize = 1024;

struct Plugin {
    cfg: Config,
    encoder: LineEncoder,
    /// The body writer's buffers, kept from one event to the next.
    bodies: PayloadWriter,
    plan: HeaderPlan,
    redactor: Redactor,
    workload: Workload,
    shipper: Shipper,
    rng: RefCell<RandomPool>,
    budget: InflightBudget,
    metrics: [Option<u32>; Stat::COUNT],
    done_deadline_ns: Option<u64>,
    done_called: bool,
    /// Whether the "Envoy refused a dispatch" warning was logged (once per VM).
    warned_refused: bool,
}

#[derive(Default)]
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
}

/// All state of one VM.
#[derive(Default)]
pub struct Vm {
    plugins: ContextMap<Plugin>,
    streams: ContextMap<Stream>,
    connections: Vec<Option<ConnectionFacts>>,
    /// Whether any plugin of this VM captures bodies (otherwise the header
    /// callbacks have nothing to do).
    captures_bodies: bool,
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The event signer of a configuration: the event key, and `event_key_id`
/// (meshaudit-1 only: mobius's `Security` model has no keyid).
pub fn signer(cfg: &Config) -> Signer {
    let key_id = match cfg.schema {
        Schema::Meshaudit1 => cfg.event_key_id.as_deref(),
        Schema::Mobius1 => None,
    };
    Signer::new(cfg.event_key.as_ref().map(|k| k.bytes()), key_id)
}

fn read_workload(host: &impl Host) -> Workload {
    let env = |name: &str| host.env(name).filter(|s| !s.is_empty());
    // Envoy 1.40 serves the node as `xds.node`; older ones as `node`.
    let node = |key: &str| {
        property_string(host, &["xds", "node", "metadata", key])
            .or_else(|| property_string(host, &["node", "metadata", key]))
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

impl Vm {
    // ------------------------------------------------------------ lifecycle

    pub fn on_context_create(&mut self, context_id: u32, parent_id: u32) {
        if parent_id == 0 {
            return;
        }
        if self.plugins.get(&parent_id).is_some_and(|p| p.cfg.enabled) {
            self.streams.insert(
                context_id,
                Stream {
                    root: parent_id,
                    ..Stream::default()
                },
            );
        }
    }

    /// `on_configure`: whether the configuration was accepted.
    pub fn on_configure(&mut self, host: &impl Host, context_id: u32, size: usize) -> bool {
        let raw = host
            .buffer(BufferType::PluginConfiguration, size)
            .unwrap_or_default();
        let cfg = match config::parse(&raw, &HostEnv(host)) {
            Ok(cfg) => cfg,
            Err(e) => {
                host.log(LogLevel::Error, &e.to_string());
                return false;
            }
        };
        let now = host.now_ns();
        let workload = read_workload(host);
        let source = workload.source();
        let metrics = Stat::ALL.map(|s| host.define_metric(s.kind(), s.name()));
        if cfg.enabled {
            host.set_tick_period_ms(cfg.tick_period_ms());
            host.log(
                LogLevel::Info,
                &format!(
                    "meshaudit: auditing to cluster {:?} (schema {}, source {})",
                    cfg.collector_cluster,
                    cfg.schema.name(),
                    source
                ),
            );
        } else {
            host.log(
                LogLevel::Info,
                "meshaudit: disabled, passing traffic through",
            );
        }
        let plugin = Plugin {
            encoder: LineEncoder::new(signer(&cfg)),
            bodies: PayloadWriter::default(),
            plan: HeaderPlan::new(&cfg),
            redactor: Redactor::new(&cfg),
            shipper: Shipper::new(&cfg, &source, ms(now)),
            workload,
            rng: RefCell::new(RandomPool::new()),
            budget: InflightBudget::new(cfg.max_inflight_body_bytes),
            metrics,
            done_deadline_ns: None,
            done_called: false,
            warned_refused: false,
            cfg,
        };
        self.captures_bodies |= plugin.cfg.enabled && plugin.cfg.capture_bodies;
        self.plugins.insert(context_id, plugin);
        if self.connections.is_empty() {
            self.connections = vec![None; CONNECTION_SLOTS];
        }
        true
    }

    /// `on_done`. For a stream, its end: Envoy calls `on_done` and then
    /// `on_delete` when a stream's filter goes, and the filter exports no
    /// `on_delete` (one VM entry less per request), so a stream is forgotten
    /// here. For a plugin, whether the VM may go at once (otherwise `done()`
    /// follows); a plugin is forgotten once its last batch has answered or
    /// the deadline passed.
    pub fn on_done(&mut self, host: &impl Host, context_id: u32) -> bool {
        if let Some(s) = self.streams.remove(&context_id) {
            if let Some(p) = self.plugins.get_mut(&s.root) {
                p.budget.release(s.reserved);
            }
            return true;
        }
        let Some(p) = self.plugins.get_mut(&context_id) else {
            return true;
        };
        if !p.cfg.enabled {
            self.plugins.remove(&context_id);
            return true;
        }
        let now = host.now_ns();
        p.shipper.begin_shutdown();
        ship(host, p, now);
        if p.shipper.is_idle() {
            self.plugins.remove(&context_id);
            return true;
        }
        let wait_ms = p.cfg.timeout_ms.min(5_000);
        p.done_deadline_ns = Some(now.saturating_add(wait_ms * 1_000_000));
        false
    }

    /// Forgets a plugin whose shutdown has called `done()` (Envoy deletes
    /// its root context next).
    fn sweep(&mut self, context_id: u32) {
        if self.plugins.get(&context_id).is_some_and(|p| p.done_called) {
            self.plugins.remove(&context_id);
        }
    }

    // ------------------------------------------------------------ requests

    /// Request headers: with `capture_bodies`, the audit decision and the
    /// body's eligibility are made here, while the map is readable.
    pub fn on_request_headers(&mut self, host: &impl Host, context_id: u32) {
        if !self.captures_bodies {
            return;
        }
        let Some((p, s)) = self.stream(context_id) else {
            return;
        };
        if p.cfg.capture_bodies && s.audited.is_none() {
            open_request(host, p, s);
        }
    }

    /// Response headers: with sampled bodies, read while the map is readable.
    pub fn on_response_headers(&mut self, host: &impl Host, context_id: u32) {
        if !self.captures_bodies {
            return;
        }
        let Some((p, s)) = self.stream(context_id) else {
            return;
        };
        if s.bodies_sampled && s.audited == Some(true) && !s.response_read {
            read_response(host, p, s);
        }
    }

    pub fn on_request_body(&mut self, host: &impl Host, context_id: u32, size: usize) {
        let Some((p, s)) = self.stream(context_id) else {
            return;
        };
        s.request_bytes += size as u64;
        if size == 0 {
            return;
        }
        if let Some(body) = s.request.as_mut().and_then(|r| r.body.as_mut()) {
            if let Some(chunk) = host.buffer(BufferType::RequestBody, size) {
                s.reserved += body.push(&chunk, &mut p.budget);
            }
        }
    }

    pub fn on_response_body(&mut self, host: &impl Host, context_id: u32, size: usize) {
        let Some((p, s)) = self.stream(context_id) else {
            return;
        };
        s.response_bytes += size as u64;
        if size == 0 {
            return;
        }
        if let Some(body) = s.response.body.as_mut() {
            if let Some(chunk) = host.buffer(BufferType::ResponseBody, size) {
                s.reserved += body.push(&chunk, &mut p.budget);
            }
        }
    }

    pub fn on_log(&mut self, host: &impl Host, context_id: u32) {
        let Vm {
            plugins,
            streams,
            connections,
            ..
        } = self;
        let Some(s) = streams.get_mut(&context_id) else {
            return;
        };
        let Some(p) = plugins.get_mut(&s.root) else {
            return;
        };
        if s.audited.is_none() {
            open_request(host, p, s);
        }
        if s.audited != Some(true) {
            return;
        }
        let Some(mut request) = s.request.take() else {
            return;
        };
        if !s.response_read {
            read_response(host, p, s);
        }
        if s.response.grpc && s.response.grpc_status.is_none() {
            let buf = host
                .header_map(MapType::ResponseTrailers)
                .unwrap_or_default();
            p.plan
                .response_trailers(&parse_header_pairs(&buf), &mut s.response);
        }
        let end = host.now_ns();
        // Envoy's own start time of the stream; without it (never seen in
        // practice) the event starts at its end.
        request.start_unix_ns = property_u64(host, &["request", "time"])
            .filter(|&t| t > 0 && t <= end)
            .unwrap_or(end);
        request.body_bytes = s.request_bytes;
        let mut response = std::mem::take(&mut s.response);
        response.body_bytes = s.response_bytes;
        let conn = connection_facts(host, connections);
        let log = LogInfo {
            end_unix_ns: end,
            source_address: conn.source_address,
            protocol: conn.protocol,
            upstream_cluster: property_string(host, &["xds", "cluster_name"]),
            response_flags: property_u64(host, &["response", "flags"]).unwrap_or(0),
            code_details: property_string(host, &["response", "code_details"]),
            response_code: match response.status {
                Some(_) => None,
                None => property_u64(host, &["response", "code"])
                    .and_then(|c| u32::try_from(c).ok())
                    .filter(|&c| c > 0),
            },
            principal: conn.principal,
            jwt_subject: p.cfg.subject_claim.as_ref().and_then(|c| {
                property_string(
                    host,
                    &[
                        "metadata",
                        "filter_metadata",
                        "envoy.filters.http.jwt_authn",
                        &c.provider,
                        &c.claim,
                    ],
                )
            }),
        };
        p.budget.release(s.reserved);
        s.reserved = 0;
        let record = RequestRecord {
            request,
            response,
            log,
        };
        let Plugin {
            cfg,
            encoder,
            redactor,
            workload,
            shipper,
            rng,
            bodies,
            ..
        } = p;
        shipper.capture(
            ms(end),
            |out| {
                let random = rng.borrow_mut().bytes16(end);
                let built = build(record, cfg, workload, redactor, bodies, random);
                write_line(built, cfg.schema, encoder, MAX_LINE_BYTES, out)
            },
            || new_uuid_v4(rng.borrow_mut().bytes16(end)),
        );
    }

    fn stream(&mut self, context_id: u32) -> Option<(&mut Plugin, &mut Stream)> {
        let s = self.streams.get_mut(&context_id)?;
        let p = self.plugins.get_mut(&s.root)?;
        Some((p, s))
    }

    // ------------------------------------------------------------ shipping

    pub fn on_tick(&mut self, host: &impl Host, context_id: u32) {
        if let Some(p) = self.plugins.get_mut(&context_id) {
            ship(host, p, host.now_ns());
        }
        self.sweep(context_id);
    }

    /// The answer to a dispatch of plugin `context_id`; `false` when the
    /// plugin is unknown.
    pub fn on_http_call_response(
        &mut self,
        host: &impl Host,
        context_id: u32,
        token: u32,
        answer: Answer,
        dispatch_more: bool,
    ) -> bool {
        let Some(p) = self.plugins.get_mut(&context_id) else {
            return false;
        };
        let now = host.now_ns();
        let random = p.rng.borrow_mut().next_u64(now);
        let fresh = p.rng.borrow_mut().bytes16(now);
        p.shipper.on_answer(token, answer, ms(now), random, fresh);
        if dispatch_more {
            pump(host, p, now);
        }
        self.sweep(context_id);
        true
    }

    /// Events held by plugin `context_id` (tests, diagnostics).
    pub fn buffered_events(&self, context_id: u32) -> Option<usize> {
        self.plugins
            .get(&context_id)
            .map(|p| p.shipper.buffered_events())
    }
}

/// The facts of the current request's downstream connection: read when the
/// connection is new to this VM, remembered otherwise.
fn connection_facts(host: &impl Host, slots: &mut [Option<ConnectionFacts>]) -> ConnectionFacts {
    let read = |id: u64| ConnectionFacts {
        id,
        source_address: property_string(host, &["source", "address"]),
        protocol: property_string(host, &["request", "protocol"]),
        principal: property_string(host, &["connection", "uri_san_peer_certificate"]),
    };
    let Some(id) = property_u64(host, &["connection", "id"]) else {
        return read(0);
    };
    let Some(slot) = slots.get_mut((id % CONNECTION_SLOTS as u64) as usize) else {
        return read(id);
    };
    match slot {
        Some(facts) if facts.id == id => facts.clone(),
        _ => {
            let facts = read(id);
            *slot = Some(facts.clone());
            facts
        }
    }
}

/// Reads the request headers and decides whether this request is audited.
fn open_request(host: &impl Host, p: &mut Plugin, s: &mut Stream) {
    let buf = host.header_map(MapType::RequestHeaders).unwrap_or_default();
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

fn read_response(host: &impl Host, p: &Plugin, s: &mut Stream) {
    let buf = host
        .header_map(MapType::ResponseHeaders)
        .unwrap_or_default();
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

/// Seals the open batch when due, dispatches what is due, publishes stats.
fn ship(host: &impl Host, p: &mut Plugin, now_ns: u64) {
    if !p.cfg.enabled {
        return;
    }
    let now_ms = ms(now_ns);
    if p.shipper.should_flush(now_ms) {
        let rng = &p.rng;
        p.shipper
            .flush(now_ms, || new_uuid_v4(rng.borrow_mut().bytes16(now_ns)));
    }
    pump(host, p, now_ns);
}

/// Dispatches every due attempt (within the in-flight limit), publishes stat
/// deltas and completes a pending shutdown.
fn pump(host: &impl Host, p: &mut Plugin, now_ns: u64) {
    let now_ms = ms(now_ns);
    // Each batch at most once per pump: a refused dispatch is due again at
    // once during shutdown (and may be after a zero backoff), and the retry
    // window would otherwise keep this loop going.
    for _ in 0..p.shipper.batch_count() {
        let Some(attempt) = p.shipper.next_attempt(now_ms) else {
            break;
        };
        let refs: Vec<(&str, &str)> = attempt
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let token = host.http_call(
            &p.cfg.collector_cluster,
            &refs,
            attempt.body,
            p.cfg.timeout_ms,
        );
        let seq = attempt.seq;
        if token.is_none() && !p.warned_refused {
            p.warned_refused = true;
            host.log(
                LogLevel::Warn,
                &format!(
                    "meshaudit: Envoy refused to call cluster {:?} (is it defined?); batches are retried, then dropped and counted",
                    p.cfg.collector_cluster
                ),
            );
        }
        let random = p.rng.borrow_mut().next_u64(now_ns);
        p.shipper.sent(seq, token, now_ms, random);
    }
    let deltas = p.shipper.take_stats();
    for (stat, value) in deltas.nonzero() {
        if let Some(Some(id)) = p.metrics.get(stat as usize) {
            host.increment_metric(*id, value);
        }
    }
    // Only once `on_done` has answered "not yet" (it set the deadline) does
    // the host wait for `done()`.
    if let (true, false, Some(deadline)) =
        (p.shipper.shutting_down(), p.done_called, p.done_deadline_ns)
    {
        if p.shipper.is_idle() || now_ns >= deadline {
            p.done_called = true;
            host.done();
        }
    }
}

#[cfg(test)]
mod tests;
