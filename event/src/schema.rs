//! The `meshaudit.http/v1` event (SPEC §4) as plain Rust types, and its two
//! wire shapes:
//!
//! - [`Schema::Meshaudit1`]: every field, including the `http` extension and
//!   the body evidence fields;
//! - [`Schema::Mobius1`]: exactly what `mobius-auditlog-py` 1.1.0's pydantic
//!   `AuditLogEvent` holds, so that its `verify()` (which re-validates the
//!   event, drops unknown keys, re-adds defaults, prunes and hashes) recomputes
//!   the same hash.
//!
//! [`HttpEvent::to_value`] returns the pruned event as a [`Value`] object,
//! ready for [`crate::integrity::seal`]. The small helpers beside it (status
//! mapping, timestamps, UUIDs) are pure: the caller passes clock and randomness.

use crate::prune::prune;
use crate::value::{Map, Value};
use serde::{Deserialize, Serialize};

/// `schemaid` of meshaudit events.
pub const SCHEMA_ID: &str = "meshaudit.http/v1";
/// `specversion` of every event.
pub const SPEC_VERSION: &str = "1.0";

/// Which wire shape [`HttpEvent::to_value`] produces (filter config `schema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Schema {
    /// `meshaudit-1`: the whole `meshaudit.http/v1` event.
    #[default]
    #[serde(rename = "meshaudit-1")]
    Meshaudit1,
    /// `mobius-1`: the subset `mobius-auditlog-py` 1.1.0 knows.
    #[serde(rename = "mobius-1")]
    Mobius1,
}

impl Schema {
    /// The configuration name: `meshaudit-1` or `mobius-1`.
    pub fn name(self) -> &'static str {
        match self {
            Schema::Meshaudit1 => "meshaudit-1",
            Schema::Mobius1 => "mobius-1",
        }
    }
    /// Parses a configuration name (exact, as [`Schema::name`] prints it).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "meshaudit-1" => Some(Schema::Meshaudit1),
            "mobius-1" => Some(Schema::Mobius1),
            _ => None,
        }
    }
}

/// One audited HTTP exchange. Empty strings, `None`s, empty lists and maps
/// are pruned away on the wire (SPEC §4), except `schemaid`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpEvent {
    pub id: Option<String>,
    pub specversion: Option<String>,
    pub schemaid: Option<String>,
    pub timestamp: Option<String>,
    pub tenantid: Option<String>,
    pub traceid: Option<String>,
    pub transactionid: Option<String>,
    pub requestid: Option<String>,
    pub spanid: Option<String>,
    pub parentservicespanid: Option<String>,
    pub httpmethod: Option<String>,
    pub httpurl: Option<String>,
    pub subject: Subject,
    pub kubernetes: Kubernetes,
    pub objectref: ObjectRef,
    pub action: Action,
    pub network: Network,
    pub eventdata: EventData,
    /// The meshaudit extension; never in `mobius-1`.
    pub http: Option<HttpSection>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Subject {
    pub userid: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub groups: Vec<String>,
    /// mTLS peer identity (SPIFFE URI SAN); meshaudit only.
    pub principal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Kubernetes {
    pub namespacename: Option<String>,
    pub podname: Option<String>,
    pub containername: Option<String>,
    pub nodename: Option<String>,
    /// meshaudit only.
    pub serviceaccount: Option<String>,
    /// meshaudit only.
    pub workload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectRef {
    pub resource: Option<String>,
    pub resourceid: Option<String>,
    pub apiversion: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Action {
    pub name: Option<String>,
    pub method: Option<String>,
    pub severity: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub sourceip: Option<String>,
    pub useragent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventData {
    /// A JSON object; anything else is wrapped as `{"_value": v}` on the wire
    /// (mobius `_as_object`).
    pub requestpayload: Option<Value>,
    pub responsepayload: Option<Value>,
    pub metadata: EventMetadata,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventMetadata {
    /// Always on the wire, `false` included.
    pub issensitive: bool,
    pub compliancecategory: Option<String>,
    // Body evidence (meshaudit only): set for every body eligible for capture.
    pub requesttruncated: Option<bool>,
    pub responsetruncated: Option<bool>,
    pub requestbodybytes: Option<u64>,
    pub responsebodybytes: Option<u64>,
    pub requestbodysha256: Option<String>,
    pub responsebodysha256: Option<String>,
    pub requestencoded: Option<bool>,
    pub responseencoded: Option<bool>,
}

/// The meshaudit `http` extension section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSection {
    /// `0` when there was no response.
    pub statuscode: u32,
    pub durationms: u64,
    pub requestbytes: u64,
    pub responsebytes: u64,
    pub protocol: Option<String>,
    pub authority: Option<String>,
    /// Lowercase names → string values.
    pub requestheaders: Map,
    pub responseheaders: Map,
    pub upstreamcluster: Option<String>,
    pub responseflags: Option<String>,
    pub codedetails: Option<String>,
}

impl HttpEvent {
    /// An event with `id`, `timestamp`, `specversion` = [`SPEC_VERSION`] and
    /// `schemaid` = [`SCHEMA_ID`]; everything else empty.
    pub fn new(id: String, timestamp: String) -> Self {
        HttpEvent {
            id: Some(id),
            specversion: Some(SPEC_VERSION.to_owned()),
            schemaid: Some(SCHEMA_ID.to_owned()),
            timestamp: Some(timestamp),
            ..HttpEvent::default()
        }
    }

    /// The pruned event (SPEC §4) in the given wire shape: always a
    /// [`Value::Object`], without `security` (see [`crate::integrity::seal`]).
    pub fn to_value(&self, schema: Schema) -> Value {
        let full = schema == Schema::Meshaudit1;
        let mut m = Map::new();
        put_str(&mut m, "id", &self.id);
        put_str(&mut m, "specversion", &self.specversion);
        // mobius re-adds `schemaid: ""` when it is absent, so mobius-1 always carries it.
        match (&self.schemaid, full) {
            (Some(s), _) => put(&mut m, "schemaid", Value::String(s.clone())),
            (None, false) => put(&mut m, "schemaid", Value::String(String::new())),
            (None, true) => {}
        }
        put_str(&mut m, "timestamp", &self.timestamp);
        put_str(&mut m, "tenantid", &self.tenantid);
        put_str(&mut m, "traceid", &self.traceid);
        put_str(&mut m, "transactionid", &self.transactionid);
        put_str(&mut m, "requestid", &self.requestid);
        put_str(&mut m, "spanid", &self.spanid);
        put_str(&mut m, "parentservicespanid", &self.parentservicespanid);
        put_str(&mut m, "httpmethod", &self.httpmethod);
        put_str(&mut m, "httpurl", &self.httpurl);

        let s = &self.subject;
        let mut subject = Map::new();
        put_str(&mut subject, "userid", &s.userid);
        put_str(&mut subject, "type", &s.type_);
        let groups = s.groups.iter().map(|g| Value::String(g.clone())).collect();
        put(&mut subject, "groups", Value::Array(groups));
        if full {
            put_str(&mut subject, "principal", &s.principal);
        }
        put(&mut m, "subject", Value::Object(subject));

        let k = &self.kubernetes;
        let mut kubernetes = Map::new();
        put_str(&mut kubernetes, "namespacename", &k.namespacename);
        put_str(&mut kubernetes, "podname", &k.podname);
        put_str(&mut kubernetes, "containername", &k.containername);
        put_str(&mut kubernetes, "nodename", &k.nodename);
        if full {
            put_str(&mut kubernetes, "serviceaccount", &k.serviceaccount);
            put_str(&mut kubernetes, "workload", &k.workload);
        }
        put(&mut m, "kubernetes", Value::Object(kubernetes));

        let o = &self.objectref;
        let mut objectref = Map::new();
        put_str(&mut objectref, "resource", &o.resource);
        put_str(&mut objectref, "resourceid", &o.resourceid);
        put_str(&mut objectref, "apiversion", &o.apiversion);
        put(&mut m, "objectref", Value::Object(objectref));

        let a = &self.action;
        let mut action = Map::new();
        put_str(&mut action, "name", &a.name);
        put_str(&mut action, "method", &a.method);
        put_str(&mut action, "severity", &a.severity);
        put_str(&mut action, "status", &a.status);
        put(&mut m, "action", Value::Object(action));

        let n = &self.network;
        let mut network = Map::new();
        put_str(&mut network, "sourceip", &n.sourceip);
        put_str(&mut network, "useragent", &n.useragent);
        put(&mut m, "network", Value::Object(network));

        let d = &self.eventdata;
        let md = &d.metadata;
        let mut metadata = Map::new();
        metadata.insert("issensitive".into(), Value::Bool(md.issensitive));
        put_str(&mut metadata, "compliancecategory", &md.compliancecategory);
        if full {
            put_opt(&mut metadata, "requesttruncated", md.requesttruncated);
            put_opt(&mut metadata, "responsetruncated", md.responsetruncated);
            put_opt(&mut metadata, "requestbodybytes", md.requestbodybytes);
            put_opt(&mut metadata, "responsebodybytes", md.responsebodybytes);
            put_str(&mut metadata, "requestbodysha256", &md.requestbodysha256);
            put_str(&mut metadata, "responsebodysha256", &md.responsebodysha256);
            put_opt(&mut metadata, "requestencoded", md.requestencoded);
            put_opt(&mut metadata, "responseencoded", md.responseencoded);
        }
        let mut eventdata = Map::new();
        if let Some(p) = &d.requestpayload {
            put(&mut eventdata, "requestpayload", as_object(p));
        }
        if let Some(p) = &d.responsepayload {
            put(&mut eventdata, "responsepayload", as_object(p));
        }
        eventdata.insert("metadata".into(), Value::Object(metadata));
        put(&mut m, "eventdata", Value::Object(eventdata));

        if let (true, Some(h)) = (full, &self.http) {
            let mut http = Map::new();
            http.insert("statuscode".into(), Value::from(u64::from(h.statuscode)));
            http.insert("durationms".into(), Value::from(h.durationms));
            http.insert("requestbytes".into(), Value::from(h.requestbytes));
            http.insert("responsebytes".into(), Value::from(h.responsebytes));
            put_str(&mut http, "protocol", &h.protocol);
            put_str(&mut http, "authority", &h.authority);
            put(
                &mut http,
                "requestheaders",
                Value::Object(h.requestheaders.clone()),
            );
            put(
                &mut http,
                "responseheaders",
                Value::Object(h.responseheaders.clone()),
            );
            put_str(&mut http, "upstreamcluster", &h.upstreamcluster);
            put_str(&mut http, "responseflags", &h.responseflags);
            put_str(&mut http, "codedetails", &h.codedetails);
            put(&mut m, "http", Value::Object(http));
        }

        let mut v = Value::Object(m);
        prune(&mut v);
        v
    }
}

fn put(m: &mut Map, key: &str, v: Value) {
    m.insert(key.to_owned(), v);
}

fn put_str(m: &mut Map, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        m.insert(key.to_owned(), Value::String(s.clone()));
    }
}

fn put_opt<T: Into<Value>>(m: &mut Map, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

/// mobius `_as_object`: an object as is, any other value as `{"_value": v}`.
fn as_object(v: &Value) -> Value {
    match v {
        Value::Object(_) => v.clone(),
        other => {
            let mut m = Map::new();
            m.insert("_value".into(), other.clone());
            Value::Object(m)
        }
    }
}

/// `action.severity` for an HTTP status: `ERROR` for ≥ 500 and for 0 (no
/// response), `WARNING` for ≥ 400, else `INFO`.
pub fn severity_for(status: u32) -> &'static str {
    match status {
        0 => "ERROR",
        s if s >= 500 => "ERROR",
        s if s >= 400 => "WARNING",
        _ => "INFO",
    }
}

/// `action.status` for an HTTP status: `SUCCESS` below 400, else `FAILURE`;
/// 0 (no response) is `FAILURE`.
pub fn status_for(status: u32) -> &'static str {
    match status {
        1..=399 => "SUCCESS",
        _ => "FAILURE",
    }
}

/// Envoy's gRPC-status → HTTP-status table (`Grpc::Utility::grpcToHttpStatus`),
/// used to grade gRPC calls whose HTTP status is 200.
pub fn http_status_for_grpc(grpc_status: u32) -> u32 {
    match grpc_status {
        0 => 200,
        1 => 499,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

const MIN_MICROS: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
const MAX_MICROS: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z

/// A UTC instant in microseconds since the Unix epoch, formatted as Python
/// `datetime.isoformat(timespec="microseconds")` of an aware UTC datetime:
/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`. Instants outside Python's range
/// (years 1 to 9999) are clamped to its ends.
pub fn format_timestamp(unix_micros: i64) -> String {
    let t = unix_micros.clamp(MIN_MICROS, MAX_MICROS);
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    // Fixed-width digits without the formatting machinery (this runs per
    // event in the filter). Every value is non-negative here: the clamp
    // keeps the year within 1..=9999.
    let mut out = Vec::with_capacity(32);
    push_digits(&mut out, y, 4);
    out.push(b'-');
    push_digits(&mut out, i64::from(mo), 2);
    out.push(b'-');
    push_digits(&mut out, i64::from(d), 2);
    out.push(b'T');
    push_digits(&mut out, sod / 3600, 2);
    out.push(b':');
    push_digits(&mut out, sod / 60 % 60, 2);
    out.push(b':');
    push_digits(&mut out, sod % 60, 2);
    out.push(b'.');
    push_digits(&mut out, micros, 6);
    out.extend_from_slice(b"+00:00");
    // Only ASCII was pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// The last `width` decimal digits of `v` (≥ 0), zero-padded.
fn push_digits(out: &mut Vec<u8>, v: i64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut v = v.unsigned_abs();
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A random (version 4, RFC 9562) UUID in the lowercase hyphenated form of
/// Python `str(uuid.uuid4())`, from 16 random bytes the caller supplies.
pub fn new_uuid_v4(random: [u8; 16]) -> String {
    let mut b = random;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = Vec::with_capacity(36);
    for (i, part) in [&b[0..4], &b[4..6], &b[6..8], &b[8..10], &b[10..16]]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b'-');
        }
        crate::line::push_hex(part, &mut out);
    }
    // Only ASCII was pushed.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical;

    fn text(v: &Value) -> String {
        String::from_utf8(canonical(v)).unwrap()
    }

    fn sample() -> HttpEvent {
        let mut e = HttpEvent::new(
            "5f0c6f8e-1d2a-4b3c-8d4e-5f6a7b8c9d0e".into(),
            "2026-01-02T03:04:05.000006+00:00".into(),
        );
        e.tenantid = Some("t1".into());
        e.httpmethod = Some("POST".into());
        e.httpurl = Some("http://svc/orders?x=1".into());
        e.subject.userid = Some("u1".into());
        e.subject.principal = Some("spiffe://cluster.local/ns/a/sa/b".into());
        e.kubernetes.namespacename = Some("shop".into());
        e.kubernetes.serviceaccount = Some("orders".into());
        e.kubernetes.workload = Some(String::new());
        e.objectref.resource = Some("orders".into());
        e.action.name = Some("/orders".into());
        e.action.method = Some("POST".into());
        e.action.severity = Some(severity_for(201).into());
        e.action.status = Some(status_for(201).into());
        e.network.sourceip = Some("10.0.0.1".into());
        e.eventdata.requestpayload = Some(crate::parse(br#"{"a":null,"b":[],"c":0}"#).unwrap());
        e.eventdata.responsepayload = Some(Value::from(false));
        e.eventdata.metadata.requesttruncated = Some(false);
        e.eventdata.metadata.requestbodybytes = Some(7);
        e.eventdata.metadata.requestbodysha256 = Some("ab".into());
        e.eventdata.metadata.requestencoded = Some(false);
        let mut headers = Map::new();
        headers.insert("content-type".into(), Value::from("application/json"));
        e.http = Some(HttpSection {
            statuscode: 201,
            durationms: 0,
            requestbytes: 7,
            responsebytes: 0,
            protocol: Some("HTTP/1.1".into()),
            requestheaders: headers,
            ..HttpSection::default()
        });
        e
    }

    #[test]
    fn meshaudit_shape_keeps_everything_pruned() {
        assert_eq!(
            text(&sample().to_value(Schema::Meshaudit1)),
            concat!(
                r#"{"action":{"method":"POST","name":"/orders","severity":"INFO","status":"SUCCESS"},"#,
                r#""eventdata":{"metadata":{"issensitive":false,"requestbodybytes":7,"requestbodysha256":"ab","requestencoded":false,"requesttruncated":false},"#,
                r#""requestpayload":{"c":0},"responsepayload":{"_value":false}},"#,
                r#""http":{"durationms":0,"protocol":"HTTP/1.1","requestbytes":7,"requestheaders":{"content-type":"application/json"},"responsebytes":0,"statuscode":201},"#,
                r#""httpmethod":"POST","httpurl":"http://svc/orders?x=1","id":"5f0c6f8e-1d2a-4b3c-8d4e-5f6a7b8c9d0e","#,
                r#""kubernetes":{"namespacename":"shop","serviceaccount":"orders"},"network":{"sourceip":"10.0.0.1"},"#,
                r#""objectref":{"resource":"orders"},"schemaid":"meshaudit.http/v1","specversion":"1.0","#,
                r#""subject":{"principal":"spiffe://cluster.local/ns/a/sa/b","userid":"u1"},"#,
                r#""tenantid":"t1","timestamp":"2026-01-02T03:04:05.000006+00:00"}"#
            )
        );
    }

    #[test]
    fn mobius_shape_has_only_model_fields() {
        assert_eq!(
            text(&sample().to_value(Schema::Mobius1)),
            concat!(
                r#"{"action":{"method":"POST","name":"/orders","severity":"INFO","status":"SUCCESS"},"#,
                r#""eventdata":{"metadata":{"issensitive":false},"#,
                r#""requestpayload":{"c":0},"responsepayload":{"_value":false}},"#,
                r#""httpmethod":"POST","httpurl":"http://svc/orders?x=1","id":"5f0c6f8e-1d2a-4b3c-8d4e-5f6a7b8c9d0e","#,
                r#""kubernetes":{"namespacename":"shop"},"network":{"sourceip":"10.0.0.1"},"#,
                r#""objectref":{"resource":"orders"},"schemaid":"meshaudit.http/v1","specversion":"1.0","#,
                r#""subject":{"userid":"u1"},"#,
                r#""tenantid":"t1","timestamp":"2026-01-02T03:04:05.000006+00:00"}"#
            )
        );
    }

    #[test]
    fn empty_event_keeps_schemaid_and_issensitive() {
        let e = HttpEvent::default();
        assert_eq!(
            text(&e.to_value(Schema::Mobius1)),
            r#"{"eventdata":{"metadata":{"issensitive":false}},"schemaid":""}"#
        );
        assert_eq!(
            text(&e.to_value(Schema::Meshaudit1)),
            r#"{"eventdata":{"metadata":{"issensitive":false}}}"#
        );
        let e = HttpEvent {
            schemaid: Some(String::new()),
            http: Some(HttpSection::default()),
            ..HttpEvent::default()
        };
        assert_eq!(
            text(&e.to_value(Schema::Meshaudit1)),
            concat!(
                r#"{"eventdata":{"metadata":{"issensitive":false}},"#,
                r#""http":{"durationms":0,"requestbytes":0,"responsebytes":0,"statuscode":0},"schemaid":""}"#
            )
        );
    }

    #[test]
    fn schema_names() {
        for s in [Schema::Meshaudit1, Schema::Mobius1] {
            assert_eq!(Schema::from_name(s.name()), Some(s));
        }
        assert_eq!(Schema::from_name("mobius"), None);
        assert_eq!(Schema::default(), Schema::Meshaudit1);
    }

    #[test]
    fn severity_and_status_follow_the_mobius_middleware() {
        for (code, sev, st) in [
            (0, "ERROR", "FAILURE"),
            (101, "INFO", "SUCCESS"),
            (200, "INFO", "SUCCESS"),
            (399, "INFO", "SUCCESS"),
            (400, "WARNING", "FAILURE"),
            (499, "WARNING", "FAILURE"),
            (500, "ERROR", "FAILURE"),
            (599, "ERROR", "FAILURE"),
        ] {
            assert_eq!((severity_for(code), status_for(code)), (sev, st), "{code}");
        }
        assert_eq!(http_status_for_grpc(0), 200);
        assert_eq!(http_status_for_grpc(5), 404);
        assert_eq!(http_status_for_grpc(14), 503);
        assert_eq!(http_status_for_grpc(99), 500);
    }

    #[test]
    fn timestamps_as_python_isoformat() {
        // python3 -c 'import datetime as d;print(d.datetime.fromtimestamp(0,d.timezone.utc).isoformat(timespec="microseconds"))'
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            format_timestamp(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456+00:00"
        );
        assert_eq!(
            format_timestamp(951_782_400_000_001),
            "2000-02-29T00:00:00.000001+00:00"
        );
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999999+00:00");
        assert_eq!(
            format_timestamp(i64::MIN),
            "0001-01-01T00:00:00.000000+00:00"
        );
        assert_eq!(
            format_timestamp(i64::MAX),
            "9999-12-31T23:59:59.999999+00:00"
        );
    }

    #[test]
    fn uuid_v4_sets_version_and_variant() {
        assert_eq!(new_uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(
            new_uuid_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        let id = new_uuid_v4(*b"0123456789abcdef");
        assert_eq!(id, "30313233-3435-4637-b839-616263646566");
    }

    #[test]
    fn serde_round_trip() {
        let e = sample();
        let json = serde_json::to_string(&e).unwrap();
        let back: HttpEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let s: Schema = serde_json::from_str("\"mobius-1\"").unwrap();
        assert_eq!(s, Schema::Mobius1);
    }
}
