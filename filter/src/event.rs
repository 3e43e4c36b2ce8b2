//! A finished [`RequestRecord`] becomes a sealed event line (SPEC §4, §5).
//!
//! Runs on the tick, off the request path: bodies are parsed (mobius
//! `_as_object`, form fields), everything is redacted, the event is pruned in
//! the configured schema, hashed, signed with the event key and written as
//! one canonical JSON line straight into the batch body.
//!
//! The filter never writes a line the collector would refuse (issue 17): a
//! body is parsed only within the depth that stays under the collector's 128
//! levels once nested in the event (deeper bodies become `{"_raw": …}`); the
//! parser refuses `NaN`, `Infinity` and numbers that overflow a double as the
//! collector does; and a line larger than the collector accepts is written
//! again with evidence-only bodies.

use crate::capture::{traceparent_trace_id, BodyCapture, RequestRecord};
use crate::config::{Config, IdentityField};
use crate::redact::{form_decode, Redactor};
use meshaudit_event::line::{LineEncoder, Payloads, Signer};
use meshaudit_event::schema::{
    format_timestamp, http_status_for_grpc, new_uuid_v4, severity_for, status_for, HttpSection,
};
use meshaudit_event::stream::PayloadWriter;
use meshaudit_event::{HttpEvent, Map, Value};

/// The workload this VM runs in (SPEC §4 `kubernetes`), fixed per VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub node: Option<String>,
    pub service_account: Option<String>,
    pub workload: Option<String>,
}

impl Workload {
    /// `namespace/pod` for `X-Meshaudit-Source`.
    pub fn source(&self) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or(""),
            self.pod.as_deref().unwrap_or("")
        )
    }
}

/// Envoy 1.40's `response.flags` bits (`CoreResponseFlag` order) and their
/// access-log short codes.
const RESPONSE_FLAGS: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

/// `"UH,UF"` from the bitmask; empty when no flag is set.
pub fn response_flags_text(bits: u64) -> String {
    let mut out = String::new();
    for (i, code) in RESPONSE_FLAGS.iter().enumerate() {
        if bits & (1u64 << i) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(code);
        }
    }
    out
}

/// The IP of `ip:port`, `[ip6]:port` or a bare address.
pub fn ip_of(address: &str) -> String {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match address.rsplit_once(':') {
        // one colon: ip:port; more: a bare IPv6 address
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            ip.to_owned()
        }
        _ => address.to_owned(),
    }
}

/// `:path` up to the first `?`.
pub fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// The first non-empty path segment.
pub fn first_segment(path: &str) -> Option<&str> {
    path_only(path).split('/').find(|s| !s.is_empty())
}

/// The nesting a parsed body may have: the event is level 1, `eventdata` 2,
/// the payload object 3 and a wrapped non-object (`{"_value": v}`) starts at
/// 4, so a body of this depth keeps the whole event within the collector's
/// [`meshaudit_event::value::MAX_DEPTH`].
pub const MAX_PAYLOAD_DEPTH: usize = meshaudit_event::value::MAX_DEPTH - 3;

/// mobius `_as_object` over the kept bytes, form bodies as objects; then
/// redaction. `None` for an empty body.
pub fn payload(body: &BodyCapture, redactor: &Redactor) -> Option<Value> {
    if body.encoded || body.kept.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&body.kept);
    let mut v = if body.media == "application/x-www-form-urlencoded" {
        form_object(&text)
    } else {
        match meshaudit_event::parse_with_depth(text.as_bytes(), MAX_PAYLOAD_DEPTH) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(other) => {
                let mut m = Map::new();
                m.insert("_value".into(), other);
                Value::Object(m)
            }
            Err(_) => {
                let mut m = Map::new();
                m.insert("_raw".into(), Value::String(text.into_owned()));
                Value::Object(m)
            }
        }
    };
    redactor.redact_json(&mut v);
    meshaudit_event::prune::prune(&mut v);
    Some(v)
}

/// The payload of a body as canonical JSON, as [`payload`] would write it:
/// a JSON body in one pass without a tree
/// ([`meshaudit_event::stream::write_payload`]); forms, text and bodies
/// that are not UTF-8 through the tree. `None` for an empty payload.
///
/// A body is not checked for UTF-8 first: the one-pass writer refuses any
/// byte that is not (non-ASCII outside a string, a string that is not
/// UTF-8), so what it accepts is UTF-8 and the rest falls to the tree.
pub fn payload_bytes(
    body: &BodyCapture,
    redactor: &Redactor,
    writer: &mut PayloadWriter,
) -> Option<Vec<u8>> {
    if body.encoded || body.kept.is_empty() {
        return None;
    }
    if body.media != "application/x-www-form-urlencoded" {
        let mut out = Vec::with_capacity(body.kept.len() + 16);
        match writer.write(&body.kept, MAX_PAYLOAD_DEPTH, redactor, &mut out) {
            Ok(true) => return Some(out),
            Ok(false) => return None,
            // Not JSON (or too deep): `_raw`, through the tree.
            Err(_) => {}
        }
    }
    match payload(body, redactor)? {
        Value::Object(m) if m.is_empty() => None,
        v => Some(meshaudit_event::canonical(&v)),
    }
}

/// Form fields: one value a string, a repeated field an array of strings.
fn form_object(text: &str) -> Value {
    let mut m = Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        let value = Value::String(form_decode(value));
        match m.get_mut(&name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = std::mem::replace(existing, Value::Null);
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                m.insert(name, value);
            }
        }
    }
    Value::Object(m)
}

/// An event and its payloads, already written as canonical JSON.
#[derive(Debug, Clone)]
pub struct Built {
    pub event: HttpEvent,
    pub request_payload: Option<Vec<u8>>,
    pub response_payload: Option<Vec<u8>>,
}

/// Builds the event for `rec` with its payloads written in one pass each
/// ([`payload_bytes`], with `writer`'s buffers): what the filter ships.
pub fn build(
    rec: RequestRecord,
    cfg: &Config,
    workload: &Workload,
    redactor: &Redactor,
    writer: &mut PayloadWriter,
    random: [u8; 16],
) -> Built {
    assemble(rec, cfg, workload, redactor, random, Some(writer))
}

/// Builds the event (not yet sealed) for `rec` with its payloads as JSON
/// trees ([`payload`]): the reference [`build`] is tested against.
pub fn build_event(
    rec: RequestRecord,
    cfg: &Config,
    workload: &Workload,
    redactor: &Redactor,
    random: [u8; 16],
) -> HttpEvent {
    assemble(rec, cfg, workload, redactor, random, None).event
}

fn assemble(
    rec: RequestRecord,
    cfg: &Config,
    workload: &Workload,
    redactor: &Redactor,
    random: [u8; 16],
    // `None`: payloads as trees.
    mut writer: Option<&mut PayloadWriter>,
) -> Built {
    let mut payloads = (None, None);
    let RequestRecord {
        request: mut req,
        response: mut resp,
        log,
    } = rec;
    let mut e = HttpEvent::new(
        new_uuid_v4(random),
        format_timestamp((req.start_unix_ns / 1000) as i64),
    );
    let mut id = std::mem::take(&mut req.identity);
    e.tenantid = id
        .take(IdentityField::TenantId)
        .or_else(|| cfg.tenant_id.clone());
    e.traceid = id
        .take(IdentityField::TraceId)
        .or_else(|| id.traceparent.as_deref().and_then(traceparent_trace_id));
    e.transactionid = id.take(IdentityField::TransactionId);
    e.requestid = id.take(IdentityField::RequestId);
    e.spanid = id.take(IdentityField::SpanId);
    e.parentservicespanid = id.take(IdentityField::ParentServiceSpanId);
    e.httpmethod = non_empty(&req.method);
    if !req.authority.is_empty() || !req.path.is_empty() {
        let scheme = if req.scheme.is_empty() {
            "http"
        } else {
            &req.scheme
        };
        // Per event: concatenation, not the formatting machinery.
        let path = redactor.redact_query(&req.path);
        let mut url = String::with_capacity(scheme.len() + 3 + req.authority.len() + path.len());
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(&req.authority);
        url.push_str(&path);
        e.httpurl = Some(url);
    }

    e.subject.userid = log.jwt_subject.or(id.take(IdentityField::UserId));
    e.subject.type_ = id.take(IdentityField::UserType);
    e.subject.groups = id
        .get(IdentityField::Groups)
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    e.subject.principal = log.principal;

    e.kubernetes.namespacename = workload.namespace.clone();
    e.kubernetes.podname = workload.pod.clone();
    e.kubernetes.containername = workload.container.clone();
    e.kubernetes.nodename = workload.node.clone();
    e.kubernetes.serviceaccount = workload.service_account.clone();
    e.kubernetes.workload = workload.workload.clone();

    let path = path_only(&req.path);
    e.objectref.resource = first_segment(&req.path).map(str::to_owned);

    let status = resp.status.or(log.response_code).unwrap_or(0);
    let (severity, outcome) = match (resp.grpc, resp.grpc_status) {
        (true, Some(g)) if g != 0 && status != 0 => {
            (severity_for(http_status_for_grpc(g)), "FAILURE")
        }
        _ => (severity_for(status), status_for(status)),
    };
    e.action.name = non_empty(path);
    e.action.method = non_empty(&req.method);
    e.action.severity = Some(severity.to_owned());
    e.action.status = Some(outcome.to_owned());

    e.network.sourceip = log.source_address.as_deref().map(ip_of);
    e.network.useragent = req.user_agent.take();

    let md = &mut e.eventdata.metadata;
    md.issensitive = cfg.is_sensitive;
    md.compliancecategory = cfg.compliance_category.clone();
    if let Some(b) = &req.body {
        md.requesttruncated = Some(b.truncated);
        md.requestbodybytes = Some(b.total);
        md.requestbodysha256 = Some(b.sha256_hex());
        md.requestencoded = b.encoded.then_some(true);
        match writer.as_deref_mut() {
            Some(w) => payloads.0 = payload_bytes(b, redactor, w),
            None => e.eventdata.requestpayload = payload(b, redactor),
        }
    }
    let md = &mut e.eventdata.metadata;
    if let Some(b) = &resp.body {
        md.responsetruncated = Some(b.truncated);
        md.responsebodybytes = Some(b.total);
        md.responsebodysha256 = Some(b.sha256_hex());
        md.responseencoded = b.encoded.then_some(true);
        match writer {
            Some(w) => payloads.1 = payload_bytes(b, redactor, w),
            None => e.eventdata.responsepayload = payload(b, redactor),
        }
    }

    let headers = |list: Vec<(String, String)>| -> Map {
        list.into_iter()
            .map(|(k, v)| {
                let v = if redactor.is_redacted_header(&k) {
                    redactor.replace_str(&v)
                } else {
                    v
                };
                (k, Value::String(v))
            })
            .collect()
    };
    e.http = Some(HttpSection {
        statuscode: status,
        durationms: log.end_unix_ns.saturating_sub(req.start_unix_ns) / 1_000_000,
        requestbytes: req.body_bytes,
        responsebytes: resp.body_bytes,
        protocol: log.protocol,
        authority: non_empty(&req.authority),
        requestheaders: headers(std::mem::take(&mut req.headers)),
        responseheaders: headers(std::mem::take(&mut resp.headers)),
        upstreamcluster: log.upstream_cluster,
        responseflags: non_empty(&response_flags_text(log.response_flags)),
        codedetails: log.code_details,
    });
    Built {
        event: e,
        request_payload: payloads.0,
        response_payload: payloads.1,
    }
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_owned())
    }
}

/// The sealed event as one NDJSON line (canonical JSON, no newline).
pub fn sealed_line(event: &HttpEvent, cfg: &Config, signer: &Signer) -> Vec<u8> {
    meshaudit_event::line::sealed_line(event, cfg.schema, signer)
}

/// Appends the sealed line of `built` to `out` and returns its raw hash; a
/// line longer than `max_line` is written again without payloads (the
/// evidence fields stay); `None` (nothing appended) when even that is too
/// long.
pub fn write_line(
    built: Built,
    schema: meshaudit_event::Schema,
    encoder: &mut LineEncoder,
    max_line: usize,
    out: &mut Vec<u8>,
) -> Option<[u8; 32]> {
    let Built {
        mut event,
        request_payload,
        response_payload,
    } = built;
    let start = out.len();
    let payloads = Payloads {
        request: request_payload.as_deref(),
        response: response_payload.as_deref(),
    };
    let hash = encoder.write_line_with(&event, schema, payloads, out);
    if out.len() - start <= max_line {
        return Some(hash);
    }
    out.truncate(start);
    let d = &mut event.eventdata;
    let had_payload = d.requestpayload.is_some()
        || d.responsepayload.is_some()
        || request_payload.is_some()
        || response_payload.is_some();
    if !had_payload {
        return None;
    }
    d.requestpayload = None;
    d.responsepayload = None;
    let hash = encoder.write_line(&event, schema, out);
    if out.len() - start <= max_line {
        return Some(hash);
    }
    out.truncate(start);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{
        body_capture_for, parse_header_pairs, HeaderPlan, InflightBudget, LogInfo, ResponseCapture,
    };
    use crate::config::parse;
    use crate::vm::signer;
    use meshaudit_event::canonical;
    use meshaudit_event::integrity::{event_hash, sign_hash};
    use std::collections::BTreeMap;

    fn cfg(json: &str) -> Config {
        match parse(json.as_bytes(), &BTreeMap::<String, String>::new()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    use crate::capture::tests::serialize;

    fn record(c: &Config, body: &[u8], resp_body: &[u8]) -> RequestRecord {
        let plan = HeaderPlan::new(c);
        let req_headers = serialize(&[
            (":method", b"POST"),
            (":scheme", b"http"),
            (":authority", b"shop.local"),
            (":path", b"/orders/7?token=abc&x=1"),
            ("content-type", b"application/json"),
            ("authorization", b"Bearer s3cr3t"),
            ("x-request-id", b"rid-1"),
            ("tenantid", b"acme"),
            ("user-agent", b"curl/8.0"),
        ]);
        let mut request =
            plan.request(&parse_header_pairs(&req_headers), 1_700_000_000_123_456_000);
        let mut budget = InflightBudget::new(1 << 20);
        request.body = body_capture_for(c, request.content_type.as_deref(), None);
        if let Some(b) = request.body.as_mut() {
            b.push(body, &mut budget);
        }
        request.body_bytes = body.len() as u64;
        let mut response = ResponseCapture::default();
        let resp_headers = serialize(&[(":status", b"201"), ("content-type", b"application/json")]);
        plan.response(&parse_header_pairs(&resp_headers), &mut response);
        response.body = body_capture_for(c, response.content_type.as_deref(), None);
        if let Some(b) = response.body.as_mut() {
            b.push(resp_body, &mut budget);
        }
        response.body_bytes = resp_body.len() as u64;
        RequestRecord {
            request,
            response,
            log: LogInfo {
                end_unix_ns: 1_700_000_000_123_456_000 + 42_500_000,
                source_address: Some("10.1.2.3:51234".into()),
                protocol: Some("HTTP/1.1".into()),
                upstream_cluster: Some("app".into()),
                response_flags: 0,
                code_details: Some("via_upstream".into()),
                response_code: None,
                principal: None,
                jwt_subject: None,
            },
        }
    }

    fn workload() -> Workload {
        Workload {
            namespace: Some("shop".into()),
            pod: Some("orders-1".into()),
            ..Workload::default()
        }
    }

    fn line_value(line: &[u8]) -> Value {
        match meshaudit_event::parse(line) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
        v.pointer(path).and_then(Value::as_str)
    }

    #[test]
    fn full_event_for_a_json_post() {
        let c = cfg(
            r#"{"collector_cluster":"c","capture_bodies":true,"signing_secret":"k","event_key_id":"k1",
                "include_request_headers":["content-type","authorization","x-request-id"]}"#,
        );
        let rec = record(
            &c,
            br#"{"item":"book","password":"pw","nested":{"Token":[1]}}"#,
            br#"[1,2]"#,
        );
        let ev = build_event(rec, &c, &workload(), &Redactor::new(&c), [7; 16]);
        let line = sealed_line(&ev, &c, &signer(&c));
        let v = line_value(&line);
        assert_eq!(s(&v, &["schemaid"]), Some("meshaudit.http/v1"));
        assert_eq!(s(&v, &["specversion"]), Some("1.0"));
        assert_eq!(
            s(&v, &["timestamp"]),
            Some("2023-11-14T22:13:20.123456+00:00")
        );
        assert_eq!(s(&v, &["httpmethod"]), Some("POST"));
        assert_eq!(
            s(&v, &["httpurl"]),
            Some("http://shop.local/orders/7?token=[REDACTED]&x=1")
        );
        assert_eq!(s(&v, &["tenantid"]), Some("acme"));
        assert_eq!(s(&v, &["requestid"]), Some("rid-1"));
        assert_eq!(s(&v, &["action", "name"]), Some("/orders/7"));
        assert_eq!(s(&v, &["action", "status"]), Some("SUCCESS"));
        assert_eq!(s(&v, &["action", "severity"]), Some("INFO"));
        assert_eq!(s(&v, &["objectref", "resource"]), Some("orders"));
        assert_eq!(s(&v, &["network", "sourceip"]), Some("10.1.2.3"));
        assert_eq!(s(&v, &["kubernetes", "podname"]), Some("orders-1"));
        assert_eq!(
            v.pointer(&["http", "statuscode"]).and_then(Value::as_i64),
            Some(201)
        );
        assert_eq!(
            v.pointer(&["http", "durationms"]).and_then(Value::as_i64),
            Some(42)
        );
        assert_eq!(
            s(&v, &["http", "requestheaders", "authorization"]),
            Some("[REDACTED]")
        );
        assert_eq!(
            s(&v, &["eventdata", "requestpayload", "password"]),
            Some("[REDACTED]")
        );
        assert_eq!(
            s(&v, &["eventdata", "requestpayload", "nested", "Token"]),
            Some("[REDACTED]")
        );
        assert_eq!(
            v.pointer(&["eventdata", "responsepayload", "_value"]),
            Some(&line_value(b"[1,2]"))
        );
        assert_eq!(
            v.pointer(&["eventdata", "metadata", "issensitive"]),
            Some(&Value::Bool(false))
        );
        // the seal verifies
        let map = match &v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        };
        let hash = event_hash(map);
        assert_eq!(s(&v, &["security", "hash"]), Some(hash.as_str()));
        assert_eq!(
            s(&v, &["security", "signature"]),
            Some(sign_hash(b"k", &hash).as_str())
        );
        assert_eq!(s(&v, &["security", "keyid"]), Some("k1"));
        let id = s(&v, &["id"]).unwrap_or("");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn local_reply_and_reset_statuses() {
        let c = cfg(r#"{"collector_cluster":"c"}"#);
        let mut rec = record(&c, b"", b"");
        rec.response = ResponseCapture::default();
        rec.log.response_code = Some(404);
        rec.log.response_flags = 1 << 8;
        let v = build_event(rec.clone(), &c, &workload(), &Redactor::new(&c), [1; 16])
            .to_value(c.schema);
        assert_eq!(s(&v, &["action", "severity"]), Some("WARNING"));
        assert_eq!(s(&v, &["http", "responseflags"]), Some("NR"));
        rec.log.response_code = None;
        rec.log.response_flags = (1 << 28) | (1 << 14);
        let v = build_event(rec.clone(), &c, &workload(), &Redactor::new(&c), [1; 16])
            .to_value(c.schema);
        assert_eq!(
            v.pointer(&["http", "statuscode"]).and_then(Value::as_i64),
            Some(0)
        );
        assert_eq!(s(&v, &["action", "severity"]), Some("ERROR"));
        assert_eq!(s(&v, &["action", "status"]), Some("FAILURE"));
        assert_eq!(s(&v, &["http", "responseflags"]), Some("DC,DR"));
    }

    #[test]
    fn grpc_failure_is_graded_by_the_grpc_status() {
        let c = cfg(r#"{"collector_cluster":"c"}"#);
        let mut rec = record(&c, b"", b"");
        rec.response.grpc = true;
        rec.response.status = Some(200);
        rec.response.grpc_status = Some(5);
        let v = build_event(rec.clone(), &c, &workload(), &Redactor::new(&c), [1; 16])
            .to_value(c.schema);
        assert_eq!(s(&v, &["action", "status"]), Some("FAILURE"));
        assert_eq!(s(&v, &["action", "severity"]), Some("WARNING"));
        rec.response.grpc_status = Some(14);
        let v = build_event(rec.clone(), &c, &workload(), &Redactor::new(&c), [1; 16])
            .to_value(c.schema);
        assert_eq!(s(&v, &["action", "severity"]), Some("ERROR"));
    }

    #[test]
    fn truncated_body_keeps_evidence_of_the_whole() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true,"max_body_bytes":8}"#);
        let body = br#"{"long":"abcdefghijklmnop"}"#;
        let rec = record(&c, body, b"");
        let v = build_event(rec.clone(), &c, &workload(), &Redactor::new(&c), [1; 16])
            .to_value(c.schema);
        assert_eq!(
            v.pointer(&["eventdata", "metadata", "requesttruncated"]),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            v.pointer(&["eventdata", "metadata", "requestbodybytes"])
                .and_then(Value::as_i64),
            Some(body.len() as i64)
        );
        let sha = meshaudit_event::integrity::sha256_hex(body);
        assert_eq!(
            s(&v, &["eventdata", "metadata", "requestbodysha256"]),
            Some(sha.as_str())
        );
        assert_eq!(
            s(&v, &["eventdata", "requestpayload", "_raw"]),
            Some(r#"{"long":"#)
        );
    }

    #[test]
    fn form_bodies_become_objects_and_are_redacted() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true}"#);
        let mut body = match body_capture_for(&c, Some("application/x-www-form-urlencoded"), None) {
            Some(b) => b,
            None => panic!("form bodies are eligible"),
        };
        body.push(
            b"user=ann+lee&password=pw&tag=a&tag=b",
            &mut InflightBudget::new(1 << 20),
        );
        let v = payload(&body, &Redactor::new(&c));
        assert_eq!(
            v.as_ref()
                .map(|v| String::from_utf8_lossy(&canonical(v)).into_owned()),
            Some(r#"{"password":"[REDACTED]","tag":["a","b"],"user":"ann lee"}"#.to_owned())
        );
    }

    #[test]
    fn mobius_schema_drops_extensions() {
        let c = cfg(
            r#"{"collector_cluster":"c","schema":"mobius-1","signing_secret":"k","event_key_id":"k1"}"#,
        );
        let rec = record(&c, b"", b"");
        let ev = build_event(rec.clone(), &c, &workload(), &Redactor::new(&c), [1; 16]);
        let v = line_value(&sealed_line(&ev, &c, &signer(&c)));
        assert!(v.get("http").is_none());
        assert!(v.pointer(&["security", "keyid"]).is_none());
        assert!(v.get("schemaid").is_some());
    }

    #[test]
    fn bodies_the_collector_would_refuse_fall_back_to_raw() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true,"signing_secret":"k"}"#);
        // 127 levels parse as JSON here, but nested in the event they would
        // be 129 deep: the filter keeps them as text.
        for (depth, parsed) in [(125usize, true), (126, false), (127, false)] {
            let body = "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
            let rec = record(&c, body.as_bytes(), b"{}");
            let ev = build_event(rec, &c, &workload(), &Redactor::new(&c), [1; 16]);
            let line = sealed_line(&ev, &c, &signer(&c));
            let v = line_value(&line); // the collector's own parser accepts it
            let raw = v
                .pointer(&["eventdata", "requestpayload", "_raw"])
                .is_some();
            assert_eq!(raw, !parsed, "depth {depth}");
        }
        // A top-level array is wrapped one level deeper.
        let arr = "[".repeat(125) + &"]".repeat(125);
        let rec = record(&c, arr.as_bytes(), b"{}");
        let ev = build_event(rec, &c, &workload(), &Redactor::new(&c), [1; 16]);
        line_value(&sealed_line(&ev, &c, &signer(&c)));
        for bad in ["{\"n\":1e999}", "{\"n\":NaN}", "[Infinity]"] {
            let rec = record(&c, bad.as_bytes(), b"{}");
            let ev = build_event(rec, &c, &workload(), &Redactor::new(&c), [1; 16]);
            let v = line_value(&sealed_line(&ev, &c, &signer(&c)));
            assert_eq!(
                s(&v, &["eventdata", "requestpayload", "_raw"]),
                Some(bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_line_too_large_is_written_again_with_evidence_only() {
        let c = cfg(r#"{"collector_cluster":"c","capture_bodies":true,"signing_secret":"k"}"#);
        let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(5000));
        let rec = record(&c, big.as_bytes(), b"{}");
        let built = build(
            rec,
            &c,
            &workload(),
            &Redactor::new(&c),
            &mut PayloadWriter::default(),
            [1; 16],
        );
        assert!(built.request_payload.is_some());
        let mut enc = LineEncoder::new(signer(&c));
        let mut out = b"x\n".to_vec();
        let hash = write_line(built.clone(), c.schema, &mut enc, 2000, &mut out);
        let v = line_value(&out[2..]);
        assert!(v.pointer(&["eventdata", "requestpayload"]).is_none());
        assert_eq!(
            v.pointer(&["eventdata", "metadata", "requestbodybytes"])
                .and_then(Value::as_i64),
            Some(big.len() as i64)
        );
        assert_eq!(
            s(&v, &["security", "hash"]).map(str::to_owned),
            hash.map(hex::encode)
        );
        // Too large even without payloads: nothing is written.
        let len = out.len();
        assert_eq!(write_line(built, c.schema, &mut enc, 100, &mut out), None);
        assert_eq!(out.len(), len);
    }

    #[test]
    fn one_pass_payloads_write_the_same_line_as_the_tree() {
        let bodies: &[(&str, &[u8])] = &[
            (
                "application/json",
                br#"{"item":"book","password":"pw","nested":{"Token":[1,{"a":null}]},"e":""}"#,
            ),
            (
                "application/json",
                br#" {"b":2.50,"a":[1E2,-0,{}],"b":1e-7,"caf\u00e9":"\ud83d\ude00"} "#,
            ),
            ("application/json", br#"[1,{"token":{"x":1}}]"#),
            ("application/json", b"null"),
            ("application/json", b"{}"),
            ("application/json", br#"{"a":{"b":null}}"#),
            ("application/json", br#"{"a":NaN}"#),
            ("application/json", b"not json \xff\xfe"),
            ("application/json", b"{\"a\":\"caf\xc3\xa9\"}"),
            // not UTF-8 somewhere in otherwise valid JSON: `_raw`, as the tree
            ("application/json", b"{\"a\":\"\xff\"}"),
            ("application/json", b"{\"\xc3\":1}"),
            ("application/json", b"{\"password\":\"p\xffw\"}"),
            ("application/json", b"{\"token\":{\"\xfe\":1}}"),
            ("application/json", b"{\"a\":1}\xff"),
            ("application/json", b"[\"\xed\xa0\x80\"]"),
            ("text/plain", b"hello"),
            ("application/x-www-form-urlencoded", b"a=1&password=x&a=2"),
        ];
        for mode in [
            r#""redact_mode":"mask""#,
            r#""redact_mode":"hmac","redaction_key":"rk""#,
        ] {
            let c = cfg(&format!(
                r#"{{"collector_cluster":"c","capture_bodies":true,"signing_secret":"k","body_content_types":["application/json","text/plain","application/x-www-form-urlencoded"],{mode}}}"#
            ));
            let redactor = Redactor::new(&c);
            // One writer for every body, as a plugin keeps it.
            let mut writer = PayloadWriter::default();
            for (media, body) in bodies {
                let mut rec = record(&c, body, body);
                for b in [rec.request.body.as_mut(), rec.response.body.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    b.media = (*media).to_owned();
                }
                let tree = sealed_line(
                    &build_event(rec.clone(), &c, &workload(), &redactor, [5; 16]),
                    &c,
                    &signer(&c),
                );
                let mut enc = LineEncoder::new(signer(&c));
                let mut ours = Vec::new();
                let built = build(rec, &c, &workload(), &redactor, &mut writer, [5; 16]);
                write_line(built, c.schema, &mut enc, usize::MAX, &mut ours);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&tree),
                    "{mode} {media} {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn addresses_and_paths() {
        assert_eq!(ip_of("10.0.0.1:443"), "10.0.0.1");
        assert_eq!(ip_of("[::1]:8080"), "::1");
        assert_eq!(ip_of("::1"), "::1");
        assert_eq!(ip_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(first_segment("//a/b?c"), Some("a"));
        assert_eq!(first_segment("/?x"), None);
        assert_eq!(response_flags_text(0), "");
        assert_eq!(response_flags_text(0b10_0010), "UH,UF");
    }
}
