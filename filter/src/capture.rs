//! What the filter keeps of one request while it passes (pure; SPEC §4).
//!
//! The glue hands over the header maps exactly as the host serialised them
//! (one hostcall each), body chunks as they pass, and in `on_log` the few
//! properties it reads. Everything is copied into a [`RequestRecord`]; turning
//! it into an event (parsing bodies, redaction, hashing) happens later, on the
//! tick ([`crate::event`]).

use crate::config::{Config, IdentityField};
use meshaudit_event::append::append;
use sha2::{Digest, Sha256};

/// The proxy-wasm header map serialisation of `pairs` (the inverse of
/// [`parse_header_pairs`]): what `dispatch_http_call` takes, and what the
/// host hands out.
pub fn serialize_header_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let size: usize = 4 + pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses the proxy-wasm header map serialisation: `u32` count, then
/// (`u32` name length, `u32` value length) per pair, then each name and value
/// followed by a NUL. Malformed input yields the pairs read so far.
pub fn parse_header_pairs(buf: &[u8]) -> Vec<(&[u8], &[u8])> {
    let read_u32 = |at: usize| -> Option<usize> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(count) = read_u32(0) else {
        return Vec::new();
    };
    let Some(mut p) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return Vec::new();
    };
    let mut pairs = Vec::with_capacity(count.min(128));
    for n in 0..count {
        let (Some(name_len), Some(value_len)) = (read_u32(4 + n * 8), read_u32(8 + n * 8)) else {
            break;
        };
        let Some(name) = p.checked_add(name_len).and_then(|end| buf.get(p..end)) else {
            break;
        };
        p += name_len + 1;
        let Some(value) = p.checked_add(value_len).and_then(|end| buf.get(p..end)) else {
            break;
        };
        p += value_len + 1;
        pairs.push((name, value));
    }
    pairs
}

/// A header value as text: UTF-8 when it is, otherwise Latin-1 (obs-text
/// bytes become U+0080..U+00FF), so no byte a client sends can fail capture.
pub fn header_text(v: &[u8]) -> String {
    // Copied first, then checked once: `append` copies a short value
    // without wasm's `memory.copy` call, which `to_owned` would make.
    let mut copy = Vec::with_capacity(v.len().max(32));
    append(&mut copy, v);
    String::from_utf8(copy)
        .unwrap_or_else(|e| e.as_bytes().iter().map(|&b| char::from(b)).collect())
}

fn append_joined(slot: &mut Option<String>, value: &[u8]) {
    match slot {
        Some(s) => {
            s.push_str(", ");
            s.push_str(&header_text(value));
        }
        None => *slot = Some(header_text(value)),
    }
}

/// Identity headers (SPEC §4, `header_map`), one slot per [`IdentityField`],
/// plus the W3C `traceparent` (the trace id when `x-b3-traceid` is absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    values: [Option<String>; 9],
    pub traceparent: Option<String>,
}

impl Identity {
    pub fn get(&self, field: IdentityField) -> Option<&str> {
        self.values[field.index()].as_deref()
    }

    pub fn take(&mut self, field: IdentityField) -> Option<String> {
        self.values[field.index()].take()
    }

    fn slot(&mut self, field: IdentityField) -> &mut Option<String> {
        &mut self.values[field.index()]
    }
}

/// Where a request header goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdentitySlot {
    Field(IdentityField),
    TraceParent,
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn traceparent_trace_id(tp: &str) -> Option<String> {
    let mut parts = tp.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let valid_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_hex(version, 2) || !valid_hex(trace, 32) || !valid_hex(parent, 16) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

/// Evidence and copy of one body (SPEC §4): size and SHA-256 over every chunk,
/// the first `max_body_bytes` kept (within the VM's in-flight budget).
#[derive(Clone)]
pub struct BodyCapture {
    hasher: Sha256,
    pub total: u64,
    pub kept: Vec<u8>,
    pub truncated: bool,
    /// Has a `content-encoding`: evidence only, never parsed.
    pub encoded: bool,
    /// Media type (lowercase, no parameters).
    pub media: String,
    keep_limit: usize,
}

impl std::fmt::Debug for BodyCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCapture")
            .field("total", &self.total)
            .field("kept", &self.kept.len())
            .field("truncated", &self.truncated)
            .field("encoded", &self.encoded)
            .field("media", &self.media)
            .finish()
    }
}

/// Body bytes held across all requests of one VM (`max_inflight_body_bytes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct InflightBudget {
    pub used: usize,
    pub max: usize,
}

impl InflightBudget {
    pub fn new(max: usize) -> Self {
        InflightBudget { used: 0, max }
    }
    /// Grants up to `want` bytes.
    pub fn reserve(&mut self, want: usize) -> usize {
        let granted = want.min(self.max.saturating_sub(self.used));
        self.used += granted;
        granted
    }
    pub fn release(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

impl BodyCapture {
    pub fn new(media: String, encoded: bool, keep_limit: usize) -> Self {
        BodyCapture {
            hasher: Sha256::new(),
            total: 0,
            kept: Vec::new(),
            truncated: false,
            encoded,
            media,
            keep_limit: if encoded { 0 } else { keep_limit },
        }
    }

    /// Takes one chunk as it passes. Returns the bytes newly reserved from
    /// `budget` (the caller releases `kept.len()` when the request ends).
    pub fn push(&mut self, chunk: &[u8], budget: &mut InflightBudget) -> usize {
        self.hasher.update(chunk);
        self.total += chunk.len() as u64;
        let room = self.keep_limit.saturating_sub(self.kept.len());
        let want = room.min(chunk.len());
        let granted = if want > 0 { budget.reserve(want) } else { 0 };
        self.kept.extend_from_slice(&chunk[..granted]);
        if self.kept.len() as u64 != self.total && !self.encoded {
            self.truncated = true;
        }
        granted
    }

    /// Lowercase hex SHA-256 of everything pushed.
    pub fn sha256_hex(&self) -> String {
        // The event crate's writer: `hex::encode` goes through an iterator of
        // chars, five times the instructions in V8.
        meshaudit_event::line::lower_hex(&self.hasher.clone().finalize())
    }
}

/// The request side, from `on_http_request_headers` and the request body.
#[derive(Debug, Clone, Default)]
pub struct RequestCapture {
    pub start_unix_ns: u64,
    pub method: String,
    pub scheme: String,
    pub authority: String,
    /// The whole `:path`, query included.
    pub path: String,
    pub identity: Identity,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Allow-listed headers, repeated ones joined (not yet redacted).
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
    pub body: Option<BodyCapture>,
}

/// The response side.
#[derive(Debug, Clone, Default)]
pub struct ResponseCapture {
    pub status: Option<u32>,
    pub grpc: bool,
    pub grpc_status: Option<u32>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
    pub body: Option<BodyCapture>,
}

/// What `on_log` reads from host properties.
#[derive(Debug, Clone, Default)]
pub struct LogInfo {
    pub end_unix_ns: u64,
    /// `source.address` (`ip:port` or `[ip6]:port`).
    pub source_address: Option<String>,
    pub protocol: Option<String>,
    pub upstream_cluster: Option<String>,
    pub response_flags: u64,
    pub code_details: Option<String>,
    /// `response.code` (only read when no response headers were seen).
    pub response_code: Option<u32>,
    /// SPIFFE URI SAN of the mTLS peer.
    pub principal: Option<String>,
    /// The `subject_claim` from `jwt_authn` metadata.
    pub jwt_subject: Option<String>,
}

/// One finished request, waiting in the buffer to become an event.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub request: RequestCapture,
    pub response: ResponseCapture,
    pub log: LogInfo,
}

/// The header names one VM looks for, prepared once from the config.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    identity: Vec<(IdentitySlot, String)>,
    include_request: Vec<String>,
    include_response: Vec<String>,
}

impl HeaderPlan {
    pub fn new(cfg: &Config) -> Self {
        let mut identity: Vec<(IdentitySlot, String)> = IdentityField::ALL
            .into_iter()
            .filter_map(|f| {
                cfg.header_map
                    .get(f)
                    .map(|name| (IdentitySlot::Field(f), name.to_owned()))
            })
            .collect();
        identity.push((IdentitySlot::TraceParent, "traceparent".to_owned()));
        HeaderPlan {
            identity,
            include_request: cfg.include_request_headers.clone(),
            include_response: cfg.include_response_headers.clone(),
        }
    }

    /// Reads the request headers (one pass over the pairs).
    pub fn request(&self, pairs: &[(&[u8], &[u8])], start_unix_ns: u64) -> RequestCapture {
        let mut r = RequestCapture {
            start_unix_ns,
            ..RequestCapture::default()
        };
        let mut included: Vec<(usize, String)> = Vec::new();
        for &(name, value) in pairs {
            match name {
                b":method" => r.method = header_text(value),
                b":scheme" => r.scheme = header_text(value),
                b":authority" => r.authority = header_text(value),
                b":path" => r.path = header_text(value),
                b"user-agent" => append_joined(&mut r.user_agent, value),
                b"content-type" => append_joined(&mut r.content_type, value),
                b"content-encoding" => append_joined(&mut r.content_encoding, value),
                _ => {}
            }
            for (slot, header) in &self.identity {
                if header.as_bytes() == name {
                    let slot = match *slot {
                        IdentitySlot::Field(f) => r.identity.slot(f),
                        IdentitySlot::TraceParent => &mut r.identity.traceparent,
                    };
                    append_joined(slot, value);
                }
            }
            collect_included(&self.include_request, name, value, &mut included);
        }
        r.headers = finish_included(&self.include_request, included);
        r
    }

    /// Reads the response headers.
    pub fn response(&self, pairs: &[(&[u8], &[u8])], resp: &mut ResponseCapture) {
        let mut included: Vec<(usize, String)> = Vec::new();
        for &(name, value) in pairs {
            match name {
                b":status" => {
                    resp.status = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                }
                b"content-type" => append_joined(&mut resp.content_type, value),
                b"content-encoding" => append_joined(&mut resp.content_encoding, value),
                b"grpc-status" => resp.grpc_status = parse_grpc_status(value),
                _ => {}
            }
            collect_included(&self.include_response, name, value, &mut included);
        }
        resp.grpc = resp.content_type.as_deref().is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/grpc")
        });
        resp.headers = finish_included(&self.include_response, included);
    }

    /// Reads the response trailers (gRPC status arrives there).
    pub fn response_trailers(&self, pairs: &[(&[u8], &[u8])], resp: &mut ResponseCapture) {
        for &(name, value) in pairs {
            if name == b"grpc-status" {
                resp.grpc_status = parse_grpc_status(value);
            }
        }
    }
}

fn parse_grpc_status(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn collect_included(list: &[String], name: &[u8], value: &[u8], out: &mut Vec<(usize, String)>) {
    if let Some(i) = list.iter().position(|h| h.as_bytes() == name) {
        match out.iter_mut().find(|(j, _)| *j == i) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&header_text(value));
            }
            None => out.push((i, header_text(value))),
        }
    }
}

fn finish_included(list: &[String], included: Vec<(usize, String)>) -> Vec<(String, String)> {
    included
        .into_iter()
        .filter_map(|(i, v)| list.get(i).map(|name| (name.clone(), v)))
        .collect()
}

/// Whether a body with these headers is eligible for capture, and how.
pub fn body_capture_for(
    cfg: &Config,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Option<BodyCapture> {
    let ct = content_type?;
    if !cfg.capture_bodies || !cfg.captures_content_type(ct) {
        return None;
    }
    let encoded = content_encoding
        .map(|e| e.trim())
        .is_some_and(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
    Some(BodyCapture::new(
        crate::config::media_type(ct),
        encoded,
        cfg.max_body_bytes,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::parse;
    use std::collections::BTreeMap;

    pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        serialize_header_pairs(pairs)
    }

    fn cfg(json: &str) -> Config {
        match parse(json.as_bytes(), &BTreeMap::<String, String>::new()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn header_map_round_trip_and_malformed_input() {
        let buf = serialize(&[(":path", b"/a?b=1"), ("x-latin", b"caf\xe9")]);
        let pairs = parse_header_pairs(&buf);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], (&b":path"[..], &b"/a?b=1"[..]));
        assert_eq!(header_text(pairs[1].1), "café");
        // truncated buffers never panic
        for cut in 0..buf.len() {
            let _ = parse_header_pairs(&buf[..cut]);
        }
        assert!(parse_header_pairs(&[0xff, 0xff, 0xff, 0xff]).is_empty());
    }

    #[test]
    fn request_headers_fill_identity_and_allow_list() {
        let c = cfg(
            r#"{"collector_cluster":"c","include_request_headers":["x-request-id","accept","authorization"]}"#,
        );
        let plan = HeaderPlan::new(&c);
        let buf = serialize(&[
            (":method", b"POST"),
            (":scheme", b"http"),
            (":authority", b"svc:8080"),
            (":path", b"/orders/7?x=1"),
            ("tenantid", b"t1"),
            ("x-request-id", b"rid"),
            ("actionloguserid", b"u1"),
            ("requestertype", b"human"),
            ("accept", b"a/b"),
            ("accept", b"c/d"),
            ("authorization", b"Bearer x"),
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("user-agent", b"curl/8"),
        ]);
        let r = plan.request(&parse_header_pairs(&buf), 5);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/orders/7?x=1");
        assert_eq!(r.identity.get(IdentityField::TenantId), Some("t1"));
        assert_eq!(r.identity.get(IdentityField::UserId), Some("u1"));
        assert_eq!(r.identity.get(IdentityField::UserType), Some("human"));
        assert_eq!(r.identity.get(IdentityField::RequestId), Some("rid"));
        assert_eq!(r.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(
            r.headers,
            vec![
                ("x-request-id".to_owned(), "rid".to_owned()),
                ("accept".to_owned(), "a/b, c/d".to_owned()),
                ("authorization".to_owned(), "Bearer x".to_owned()),
            ]
        );
        assert_eq!(
            r.identity
                .traceparent
                .as_deref()
                .and_then(traceparent_trace_id)
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn traceparent_is_validated() {
        assert_eq!(traceparent_trace_id("garbage"), None);
        assert_eq!(
            traceparent_trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent_trace_id("00-4bf9-00f067aa0ba902b7-01"), None);
    }

    #[test]
    fn response_headers_status_and_grpc() {
        let c = cfg(r#"{"collector_cluster":"c"}"#);
        let plan = HeaderPlan::new(&c);
        let mut resp = ResponseCapture::default();
        let buf = serialize(&[
            (":status", b"200"),
            ("content-type", b"application/grpc+proto"),
        ]);
        plan.response(&parse_header_pairs(&buf), &mut resp);
        assert_eq!(resp.status, Some(200));
        assert!(resp.grpc);
        let trailers = serialize(&[("grpc-status", b"14")]);
        plan.response_trailers(&parse_header_pairs(&trailers), &mut resp);
        assert_eq!(resp.grpc_status, Some(14));
        assert_eq!(
            resp.headers,
            vec![(
                "content-type".to_owned(),
                "application/grpc+proto".to_owned()
            )]
        );
    }

    #[test]
    fn body_over_the_cap_is_cut_but_hashed_whole() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true,"max_body_bytes":10}"#);
        let mut body = match body_capture_for(&c, Some("application/json"), None) {
            Some(b) => b,
            None => panic!("json bodies are eligible"),
        };
        let mut budget = InflightBudget::new(1 << 20);
        let full = b"{\"a\":\"0123456789abcdef\"}";
        for chunk in full.chunks(7) {
            body.push(chunk, &mut budget);
        }
        assert_eq!(body.kept, &full[..10]);
        assert!(body.truncated);
        assert_eq!(body.total, full.len() as u64);
        assert_eq!(
            body.sha256_hex(),
            meshaudit_event::integrity::sha256_hex(full)
        );
        assert_eq!(budget.used, 10);
    }

    #[test]
    fn inflight_budget_turns_bodies_into_evidence_only() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true}"#);
        let mut budget = InflightBudget::new(4);
        let mut body = match body_capture_for(&c, Some("text/plain"), None) {
            Some(b) => b,
            None => panic!("text is eligible"),
        };
        body.push(b"hello world", &mut budget);
        assert_eq!(body.kept, b"hell");
        assert!(body.truncated);
        assert_eq!(body.total, 11);
        budget.release(4);
        assert_eq!(budget.used, 0);
    }

    #[test]
    fn encoded_and_ineligible_bodies() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true}"#);
        let mut budget = InflightBudget::new(1 << 20);
        let mut gz = match body_capture_for(&c, Some("application/json"), Some("gzip")) {
            Some(b) => b,
            None => panic!("encoded bodies still get evidence"),
        };
        gz.push(b"\x1f\x8b\x08", &mut budget);
        assert!(gz.kept.is_empty());
        assert!(!gz.truncated);
        assert!(gz.encoded);
        assert_eq!(gz.total, 3);
        assert!(body_capture_for(&c, Some("image/png"), None).is_none());
        assert!(body_capture_for(&c, None, None).is_none());
        let off = cfg(r#"{"collector_cluster":"c"}"#);
        assert!(body_capture_for(&off, Some("application/json"), None).is_none());
    }
}
