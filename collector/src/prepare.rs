//! Turns one received event object into what the store keeps (pure): its
//! canonical JSON, the recomputed hash, its id, the indexed query columns and
//! the outcome of its hash/signature check.

use crate::intake::RawEvent;
use meshaudit_event::canonical::canonical;
use meshaudit_event::integrity::{event_hash, verify_event, EventKeys, Verification};
use meshaudit_event::value::{Map, Number, Value};

/// The schema id of events built by the meshaudit filter.
pub const FILTER_SCHEMA: &str = "meshaudit.http/v1";

/// The query columns (SPEC §7 filters), filled when the event has the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexColumns {
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub user: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    /// The event `timestamp` in microseconds since the epoch.
    pub event_time_us: Option<i64>,
}

/// Which peer an event came from, for `audit_events_received_total{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Filter,
    Mobius,
    Forwarder,
}

impl SourceKind {
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Filter => "filter",
            SourceKind::Mobius => "mobius",
            SourceKind::Forwarder => "forwarder",
        }
    }
}

/// One event ready to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedEvent {
    /// Where it was in the body (for 422 `lines`).
    pub line: usize,
    pub id: String,
    /// `hex(SHA-256(canonical(event without "security")))`, recomputed here.
    pub event_hash: String,
    /// Canonical JSON of the whole object as received, `security` included.
    pub canonical: Vec<u8>,
    pub verification: Verification,
    pub index: IndexColumns,
    pub source: SourceKind,
    /// The verified signed batch it came in (SPEC §10), set by [`crate::keys::hook`].
    pub batch: Option<std::sync::Arc<crate::keys::batch::BatchRecord>>,
}

/// Prepares one event. Hashing and signature checking are the costly part.
pub fn prepare(raw: RawEvent, keys: &EventKeys) -> PreparedEvent {
    let event = raw.event;
    let hash = event_hash(&event);
    let verification = verify_event(&event, &hash, keys);
    let id = match event.get("id") {
        Some(Value::String(s)) if !s.is_empty() => column_text(s),
        _ => format!("sha256:{hash}"),
    };
    let index = index_columns(&event);
    let source = source_kind(&event);
    let canonical = canonical(&Value::Object(event));
    PreparedEvent {
        line: raw.line,
        id,
        event_hash: hash,
        canonical,
        verification,
        index,
        source,
        batch: None,
    }
}

fn source_kind(event: &Map) -> SourceKind {
    match event.get("schemaid") {
        Some(Value::String(s)) if s == FILTER_SCHEMA => SourceKind::Filter,
        _ if event.contains_key("specversion") => SourceKind::Mobius,
        _ => SourceKind::Forwarder,
    }
}

fn text(event: &Map, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let v = rest.iter().try_fold(event.get(*first)?, |v, k| v.get(k))?;
    v.as_str().filter(|s| !s.is_empty()).map(column_text)
}

/// Text for a database column: PostgreSQL TEXT cannot hold NUL, so it becomes
/// U+FFFD (the stored event JSON keeps it, escaped, byte-exact).
pub fn column_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_owned()
    }
}

fn integer(event: &Map, path: &[&str]) -> Option<i64> {
    let (first, rest) = path.split_first()?;
    let v = rest.iter().try_fold(event.get(*first)?, |v, k| v.get(k))?;
    match v {
        Value::Number(Number::Int(i)) => Some(*i),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The query columns of an event; absent fields stay `None`.
pub fn index_columns(event: &Map) -> IndexColumns {
    IndexColumns {
        tenant: text(event, &["tenantid"]),
        namespace: text(event, &["kubernetes", "namespacename"]),
        pod: text(event, &["kubernetes", "podname"]),
        user: text(event, &["subject", "userid"]),
        method: text(event, &["httpmethod"])
            .or_else(|| text(event, &["action", "method"]))
            .map(|m| m.to_ascii_uppercase()),
        path: text(event, &["action", "name"]),
        status: integer(event, &["http", "statuscode"]),
        event_time_us: text(event, &["timestamp"]).and_then(|t| parse_rfc3339_us(&t)),
    }
}

/// RFC 3339 (with or without fraction, any offset) to microseconds since the epoch.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaudit_event::integrity::seal;
    use meshaudit_event::value::parse;

    fn raw(json: &str) -> RawEvent {
        match parse(json.as_bytes()).unwrap() {
            Value::Object(event) => RawEvent { line: 1, event },
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn filter_event_fills_the_columns() {
        let p = prepare(
            raw(
                r#"{"id":"e1","schemaid":"meshaudit.http/v1","tenantid":"t","timestamp":"2026-01-02T03:04:05.000006+00:00",
                "kubernetes":{"namespacename":"ns","podname":"p"},"subject":{"userid":"u"},
                "httpmethod":"get","action":{"name":"/a/b","method":"GET"},"http":{"statuscode":503}}"#,
            ),
            &EventKeys::default(),
        );
        assert_eq!(p.id, "e1");
        assert_eq!(p.source, SourceKind::Filter);
        assert_eq!(p.index.tenant.as_deref(), Some("t"));
        assert_eq!(p.index.namespace.as_deref(), Some("ns"));
        assert_eq!(p.index.method.as_deref(), Some("GET"));
        assert_eq!(p.index.path.as_deref(), Some("/a/b"));
        assert_eq!(p.index.status, Some(503));
        assert_eq!(p.index.event_time_us, Some(1_767_323_045_000_006));
        assert_eq!(p.verification, Verification::NoHash);
    }

    #[test]
    fn event_without_id_gets_its_hash_and_canonical_keeps_everything() {
        let p = prepare(raw(r#"{"event":"ping", "ts": 1}"#), &EventKeys::default());
        assert_eq!(p.id, format!("sha256:{}", p.event_hash));
        assert_eq!(p.canonical, br#"{"event":"ping","ts":1}"#);
        assert_eq!(p.source, SourceKind::Forwarder);
    }

    #[test]
    fn signed_events_verify_and_tampered_ones_do_not() {
        let keys = EventKeys::new([("k1".to_owned(), b"secret".to_vec())]);
        let mut ev = raw(r#"{"id":"x","specversion":"1.0"}"#).event;
        seal(&mut ev, Some(b"secret"), Some("k1"));
        let good = prepare(
            RawEvent {
                line: 1,
                event: ev.clone(),
            },
            &keys,
        );
        assert_eq!(good.verification, Verification::Verified);
        assert_eq!(good.source, SourceKind::Mobius);
        ev.insert("extra".into(), Value::Bool(true));
        let bad = prepare(RawEvent { line: 1, event: ev }, &keys);
        assert_eq!(bad.verification, Verification::HashMismatch);
    }
}
