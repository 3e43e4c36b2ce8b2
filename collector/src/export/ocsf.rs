//! `meshaudit.http/v1` → OCSF HTTP Activity (`class_uid` 4002, category
//! Network Activity), pure. docs/export.md lists every field. The original
//! event is kept byte-exact as its canonical JSON in `raw_data`, and the
//! §11 record fields (seq, chain and record hash) under `unmapped.meshaudit`,
//! so nothing the mapping leaves out is lost and membership stays checkable.

use super::record::Record;
use meshaudit_event::{Map, Number, Value};

pub const CLASS_UID: i64 = 4002;
pub const CATEGORY_UID: i64 = 4;
/// The OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn int(i: i64) -> Value {
    Value::Number(Number::Int(i))
}

/// Inserts `v` when present (OCSF omits unknown attributes).
fn put(m: &mut Map, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v);
    }
}

fn obj(m: Map) -> Option<Value> {
    (!m.is_empty()).then_some(Value::Object(m))
}

/// OCSF HTTP Activity `activity_id` for an HTTP method.
pub fn activity(method: Option<&str>) -> (i64, &'static str) {
    match method.map(str::to_ascii_uppercase).as_deref() {
        Some("CONNECT") => (1, "Connect"),
        Some("DELETE") => (2, "Delete"),
        Some("GET") => (3, "Get"),
        Some("HEAD") => (4, "Head"),
        Some("OPTIONS") => (5, "Options"),
        Some("POST") => (6, "Post"),
        Some("PUT") => (7, "Put"),
        Some("TRACE") => (8, "Trace"),
        None => (0, "Unknown"),
        Some(_) => (99, "Other"),
    }
}

/// `action.severity` → OCSF `severity_id`.
fn severity(sev: Option<&str>) -> (i64, &'static str) {
    match sev {
        Some("INFO") => (1, "Informational"),
        Some("WARNING") => (3, "Medium"),
        Some("ERROR") => (4, "High"),
        _ => (0, "Unknown"),
    }
}

/// `action.status` → OCSF `status_id`.
fn status(st: Option<&str>) -> (i64, &'static str) {
    match st {
        Some("SUCCESS") => (1, "Success"),
        Some("FAILURE") => (2, "Failure"),
        _ => (0, "Unknown"),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn millis(t: &str) -> Option<i64> {
    crate::prepare::parse_rfc3339_us(t).map(|us| us.div_euclid(1000))
}

/// `http.requestheaders` (an object) → OCSF `http_headers` (`[{name, value}]`).
fn headers(v: Option<&Value>) -> Option<Value> {
    let m = v?.as_object()?;
    let list: Vec<Value> = m
        .iter()
        .filter_map(|(k, v)| {
            v.as_str().map(|val| {
                let mut h = Map::new();
                h.insert("name".into(), s(k));
                h.insert("value".into(), s(val));
                Value::Object(h)
            })
        })
        .collect();
    (!list.is_empty()).then_some(Value::Array(list))
}

/// The OCSF object for one record.
pub fn map(r: &Record) -> Value {
    let e = &r.event;
    let text = |path: &[&str]| e.pointer(path).and_then(Value::as_str).map(str::to_owned);
    let number = |path: &[&str]| e.pointer(path).and_then(Value::as_i64);
    let method = text(&["httpmethod"]).or_else(|| text(&["action", "method"]));
    let (activity_id, activity_name) = activity(method.as_deref());
    let (severity_id, severity_name) = severity(text(&["action", "severity"]).as_deref());
    let (status_id, status_name) = status(text(&["action", "status"]).as_deref());
    let received_ms = millis(&r.received_at).unwrap_or(0);
    let time = text(&["timestamp"])
        .and_then(|t| millis(&t))
        .unwrap_or(received_ms);

    let mut out = Map::new();
    out.insert("class_uid".into(), int(CLASS_UID));
    out.insert("class_name".into(), s("HTTP Activity"));
    out.insert("category_uid".into(), int(CATEGORY_UID));
    out.insert("category_name".into(), s("Network Activity"));
    out.insert("activity_id".into(), int(activity_id));
    out.insert("activity_name".into(), s(activity_name));
    out.insert("type_uid".into(), int(CLASS_UID * 100 + activity_id));
    out.insert(
        "type_name".into(),
        s(&format!("HTTP Activity: {activity_name}")),
    );
    out.insert("severity_id".into(), int(severity_id));
    out.insert("severity".into(), s(severity_name));
    out.insert("status_id".into(), int(status_id));
    out.insert("status".into(), s(status_name));
    out.insert("time".into(), int(time));
    put(
        &mut out,
        "status_detail",
        text(&["http", "codedetails"]).map(Value::String),
    );

    // metadata
    let mut product = Map::new();
    product.insert("name".into(), s("meshaudit"));
    product.insert("vendor_name".into(), s("meshaudit"));
    product.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    let mut metadata = Map::new();
    metadata.insert("version".into(), s(OCSF_VERSION));
    metadata.insert("product".into(), Value::Object(product));
    metadata.insert("logged_time".into(), int(received_ms));
    metadata.insert("sequence".into(), int(r.seq));
    put(&mut metadata, "uid", text(&["id"]).map(Value::String));
    put(
        &mut metadata,
        "correlation_uid",
        text(&["traceid"]).map(Value::String),
    );
    put(
        &mut metadata,
        "tenant_uid",
        text(&["tenantid"]).map(Value::String),
    );
    put(
        &mut metadata,
        "original_time",
        text(&["timestamp"]).map(Value::String),
    );
    out.insert("metadata".into(), Value::Object(metadata));

    // http_request
    let mut url = Map::new();
    put(
        &mut url,
        "url_string",
        text(&["httpurl"]).map(Value::String),
    );
    put(
        &mut url,
        "path",
        text(&["action", "name"]).map(Value::String),
    );
    put(
        &mut url,
        "hostname",
        text(&["http", "authority"]).map(Value::String),
    );
    let mut req = Map::new();
    put(&mut req, "http_method", method.map(Value::String));
    put(&mut req, "url", obj(url));
    put(
        &mut req,
        "user_agent",
        text(&["network", "useragent"]).map(Value::String),
    );
    put(
        &mut req,
        "version",
        text(&["http", "protocol"]).map(Value::String),
    );
    put(&mut req, "uid", text(&["requestid"]).map(Value::String));
    put(
        &mut req,
        "length",
        number(&["http", "requestbytes"]).map(int),
    );
    put(
        &mut req,
        "http_headers",
        headers(e.pointer(&["http", "requestheaders"])),
    );
    put(&mut out, "http_request", obj(req));

    // http_response
    let mut resp = Map::new();
    put(&mut resp, "code", number(&["http", "statuscode"]).map(int));
    put(
        &mut resp,
        "length",
        number(&["http", "responsebytes"]).map(int),
    );
    put(
        &mut resp,
        "latency",
        number(&["http", "durationms"]).map(int),
    );
    put(
        &mut resp,
        "status",
        text(&["action", "status"]).map(Value::String),
    );
    put(
        &mut resp,
        "http_headers",
        headers(e.pointer(&["http", "responseheaders"])),
    );
    put(&mut out, "http_response", obj(resp));
    put(
        &mut out,
        "duration",
        number(&["http", "durationms"]).map(int),
    );

    // endpoints
    let mut src = Map::new();
    put(
        &mut src,
        "ip",
        text(&["network", "sourceip"]).map(Value::String),
    );
    put(&mut out, "src_endpoint", obj(src));
    let mut dst = Map::new();
    put(
        &mut dst,
        "hostname",
        text(&["http", "authority"]).map(Value::String),
    );
    put(
        &mut dst,
        "svc_name",
        text(&["http", "upstreamcluster"]).map(Value::String),
    );
    put(
        &mut dst,
        "namespace",
        text(&["kubernetes", "namespacename"]).map(Value::String),
    );
    put(
        &mut dst,
        "name",
        text(&["kubernetes", "podname"]).map(Value::String),
    );
    put(&mut out, "dst_endpoint", obj(dst));

    // actor.user
    let mut user = Map::new();
    put(
        &mut user,
        "uid",
        text(&["subject", "userid"]).map(Value::String),
    );
    put(
        &mut user,
        "type",
        text(&["subject", "type"]).map(Value::String),
    );
    put(
        &mut user,
        "credential_uid",
        text(&["subject", "principal"]).map(Value::String),
    );
    let groups: Vec<Value> = match e.pointer(&["subject", "groups"]) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(group).collect(),
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(group)
            .collect(),
        _ => Vec::new(),
    };
    if !groups.is_empty() {
        user.insert("groups".into(), Value::Array(groups));
    }
    let mut actor = Map::new();
    put(&mut actor, "user", obj(user));
    put(&mut out, "actor", obj(actor));

    // what OCSF has no place for
    let mut ours = Map::new();
    ours.insert("seq".into(), int(r.seq));
    ours.insert("chain_hash".into(), s(&r.chain_hash));
    ours.insert("record_hash".into(), s(&r.record_hash));
    ours.insert("received_at".into(), s(&r.received_at));
    ours.insert(
        "schemaid".into(),
        r.schemaid.as_deref().map_or(Value::Null, s),
    );
    ours.insert(
        "verified".into(),
        r.verified.map_or(Value::Null, Value::Bool),
    );
    let mut unmapped = Map::new();
    unmapped.insert("meshaudit".into(), Value::Object(ours));
    out.insert("unmapped".into(), Value::Object(unmapped));
    out.insert("raw_data".into(), s(&r.canonical));
    Value::Object(out)
}

fn group(name: &str) -> Value {
    let mut g = Map::new();
    g.insert("name".into(), s(name));
    Value::Object(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::record::tests::stored;

    #[test]
    fn maps_an_http_event_and_keeps_the_original() {
        let ev = r#"{"action":{"method":"POST","name":"/orders/1","severity":"WARNING","status":"FAILURE"},"http":{"authority":"shop.local","durationms":12,"protocol":"HTTP/1.1","requestheaders":{"user-agent":"curl"},"statuscode":403},"httpmethod":"POST","httpurl":"http://shop.local/orders/1?x=1","id":"e-1","kubernetes":{"namespacename":"shop","podname":"api-1"},"network":{"sourceip":"10.0.0.7","useragent":"curl"},"requestid":"r-1","schemaid":"meshaudit.http/v1","subject":{"groups":["ops","dev"],"principal":"spiffe://c/ns/shop/sa/x","type":"user","userid":"alice"},"tenantid":"t1","timestamp":"2026-03-04T05:06:07.000000+00:00","traceid":"tr"}"#;
        let r = Record::from_stored(&stored(9, ev)).unwrap();
        let o = map(&r);
        let at = |p: &[&str]| o.pointer(p).cloned();
        assert_eq!(at(&["class_uid"]), Some(int(4002)));
        assert_eq!(at(&["activity_id"]), Some(int(6)));
        assert_eq!(at(&["type_uid"]), Some(int(400206)));
        assert_eq!(at(&["severity_id"]), Some(int(3)));
        assert_eq!(at(&["status_id"]), Some(int(2)));
        assert_eq!(at(&["time"]), Some(int(1_772_600_767_000)));
        assert_eq!(at(&["http_request", "http_method"]), Some(s("POST")));
        assert_eq!(
            at(&["http_request", "url", "url_string"]),
            Some(s("http://shop.local/orders/1?x=1"))
        );
        assert_eq!(at(&["http_response", "code"]), Some(int(403)));
        assert_eq!(at(&["src_endpoint", "ip"]), Some(s("10.0.0.7")));
        assert_eq!(at(&["actor", "user", "uid"]), Some(s("alice")));
        assert_eq!(
            at(&["actor", "user", "groups"]),
            Some(Value::Array(vec![group("ops"), group("dev")]))
        );
        assert_eq!(at(&["metadata", "product", "name"]), Some(s("meshaudit")));
        assert_eq!(at(&["metadata", "uid"]), Some(s("e-1")));
        assert_eq!(at(&["metadata", "sequence"]), Some(int(9)));
        assert_eq!(at(&["unmapped", "meshaudit", "seq"]), Some(int(9)));
        assert_eq!(at(&["raw_data"]), Some(s(ev)));
    }

    #[test]
    fn an_event_of_another_shape_still_maps_with_its_raw_data() {
        let r = Record::from_stored(&stored(1, r#"{"event":"ping"}"#)).unwrap();
        let o = map(&r);
        assert_eq!(o.pointer(&["activity_id"]), Some(&int(0)));
        assert_eq!(o.pointer(&["raw_data"]), Some(&s(r#"{"event":"ping"}"#)));
        assert!(o.pointer(&["http_request"]).is_none());
    }
}
