//! Turns one received event object into what the store keeps (pure): its
//! canonical JSON, the recomputed hash, its id, the indexed query columns and
//! the outcome of its hash/signature check.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::ingest::body::RawEvent;
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
    let hash = event_hash(&raw.event);
    prepare_hashed(raw, hash, keys)
}

/// [`prepare`] for ingest: an explicit id it cannot store exactly, or one
/// squatting a derived id, refuses the event ([`check_id`]).
pub fn prepare_checked(raw: RawEvent, keys: &EventKeys) -> Result<PreparedEvent, IdProblem> {
    let hash = event_hash(&raw.event);
    check_id(&raw.event, &hash)?;
    Ok(prepare_hashed(raw, hash, keys))
}

fn prepare_hashed(raw: RawEvent, hash: String, keys: &EventKeys) -> PreparedEvent {
    let event = raw.event;
    let verification = verify_event(&event, &hash, keys);
    let id = id_column(&event, &hash);
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

/// The prefix of ids derived from the event's own hash.
pub const DERIVED_ID_PREFIX: &str = "sha256:";

/// The one rule for an event's id column (ingest and the chain verifier): its
/// `id` when that is a non-empty string, otherwise `"sha256:" + hash`.
///
/// Ingest refuses the ids this could not store exactly ([`check_id`]), so the
/// NUL mapping of [`column_text`] only ever applies to rows stored before.
pub fn id_column(event: &Map, hash: &str) -> String {
    match event.get("id") {
        Some(Value::String(s)) if !s.is_empty() => column_text(s),
        _ => format!("{DERIVED_ID_PREFIX}{hash}"),
    }
}

/// Why an explicit id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    /// `sha256:` is reserved for ids derived from the event's own hash, so an
    /// explicit one cannot pre-empt (squat) the id of another, id-less event.
    #[error(
        "the id uses the reserved \"sha256:\" prefix but is not \"sha256:\" + this event's hash"
    )]
    ReservedPrefix,
    /// The id column could not hold it exactly (PostgreSQL TEXT has no NUL),
    /// and a lossy mapping would let distinct ids collide.
    #[error("the id contains a NUL character")]
    Nul,
}

/// Checks an explicit id: stored exactly, and never squatting a derived one.
pub fn check_id(event: &Map, hash: &str) -> Result<(), IdProblem> {
    let Some(Value::String(id)) = event.get("id") else {
        return Ok(());
    };
    if id.contains('\0') {
        return Err(IdProblem::Nul);
    }
    match id.strip_prefix(DERIVED_ID_PREFIX) {
        Some(rest) if rest != hash => Err(IdProblem::ReservedPrefix),
        _ => Ok(()),
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
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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
    fn explicit_ids_are_exact_and_never_squat_a_derived_one() {
        let ev = |json: &str| raw(json).event;
        let plain = ev(r#"{"event":"ping"}"#);
        let hash = event_hash(&plain);
        assert_eq!(check_id(&plain, &hash), Ok(()));
        assert_eq!(id_column(&plain, &hash), format!("sha256:{hash}"));
        let squat = ev(&format!(r#"{{"id":"sha256:{hash}","event":"other"}}"#));
        let squat_hash = event_hash(&squat);
        assert_eq!(
            check_id(&squat, &squat_hash),
            Err(IdProblem::ReservedPrefix)
        );
        // Its own hash (the id is part of the hashed event, so this only
        // happens for an event re-sent with the id it was given): fine.
        let own = ev(&format!(r#"{{"id":"sha256:{hash}"}}"#));
        assert_eq!(check_id(&own, &hash), Ok(()), "its own hash is allowed");
        assert_eq!(
            check_id(&ev(r#"{"id":"a\u0000b"}"#), "h"),
            Err(IdProblem::Nul)
        );
        assert_eq!(check_id(&ev(r#"{"id":"SHA256:x"}"#), "h"), Ok(()));
        assert_eq!(check_id(&ev(r#"{"id":7}"#), "h"), Ok(()));
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
