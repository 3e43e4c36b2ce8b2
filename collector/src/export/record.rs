//! One exported record (SPEC §11), as pure functions of the stored row:
//! `{"chain_hash","event","received_at","record_hash","schemaid","seq","verified"}`
//! in canonical JSON (§5), so a batch sent again is the same bytes. The
//! `record_hash` is the SHA-256 of the stored canonical JSON, the leaf data of
//! the §9 log, so a consumer can check membership as well as continuity.

use crate::store::StoredEvent;
use meshaudit_event::integrity::sha256_hex;
use meshaudit_event::value::{parse, Value};
use meshaudit_event::{canonical, Map, Number};

/// A stored row made ready for the sinks.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: i64,
    pub chain_hash: String,
    pub record_hash: String,
    pub received_at: String,
    /// The event's top-level `schemaid` when it is a string.
    pub schemaid: Option<String>,
    pub verified: Option<bool>,
    /// The stored canonical JSON of the event (already canonical).
    pub canonical: String,
    /// The parsed event, for mappings.
    pub event: Value,
}

/// Why a stored row cannot be exported (the store holds something it never
/// accepted: only a damaged database gets here).
#[derive(Debug, thiserror::Error)]
#[error("seq {seq}: the stored event is not valid JSON ({why})")]
pub struct RecordError {
    pub seq: i64,
    pub why: String,
}

impl Record {
    pub fn from_stored(e: &StoredEvent) -> Result<Self, RecordError> {
        let event = parse(e.canonical.as_bytes()).map_err(|err| RecordError {
            seq: e.seq,
            why: err.to_string(),
        })?;
        let schemaid = event
            .get("schemaid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            seq: e.seq,
            chain_hash: e.chain_hash.clone(),
            record_hash: sha256_hex(e.canonical.as_bytes()),
            received_at: e.received_at.clone(),
            schemaid,
            verified: e.verified,
            canonical: e.canonical.clone(),
            event,
        })
    }

    /// The §11 record as a value (the event inside it as parsed).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("seq".into(), Value::Number(Number::Int(self.seq)));
        m.insert("chain_hash".into(), Value::String(self.chain_hash.clone()));
        m.insert(
            "record_hash".into(),
            Value::String(self.record_hash.clone()),
        );
        m.insert(
            "received_at".into(),
            Value::String(self.received_at.clone()),
        );
        m.insert(
            "schemaid".into(),
            self.schemaid.clone().map_or(Value::Null, Value::String),
        );
        m.insert(
            "verified".into(),
            self.verified.map_or(Value::Null, Value::Bool),
        );
        m.insert("event".into(), self.event.clone());
        Value::Object(m)
    }

    /// The record's canonical JSON bytes.
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical(&self.to_value())
    }

    /// `received_at` as POSIX seconds with microseconds (Splunk's `time`).
    pub fn received_epoch(&self) -> Option<(i64, u32)> {
        let t = chrono::DateTime::parse_from_rfc3339(&self.received_at).ok()?;
        Some((t.timestamp(), t.timestamp_subsec_micros()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prepare::IndexColumns;

    pub fn stored(seq: i64, canonical: &str) -> StoredEvent {
        StoredEvent {
            seq,
            id: format!("id-{seq}"),
            received_at: "2026-11-30T08:00:00.123456+00:00".into(),
            verified: Some(true),
            verify_reason: None,
            event_hash: "e".repeat(64),
            chain_hash: "c".repeat(64),
            canonical: canonical.into(),
            index: IndexColumns::default(),
        }
    }

    #[test]
    fn record_is_canonical_with_the_hash_of_the_stored_bytes() {
        let ev = r#"{"id":"x","schemaid":"meshaudit.http/v1","u":"\u00e9"}"#;
        let r = Record::from_stored(&stored(7, ev)).unwrap();
        let out = String::from_utf8(r.to_canonical()).unwrap();
        assert_eq!(
            out,
            format!(
                r#"{{"chain_hash":"{c}","event":{ev},"received_at":"2026-11-30T08:00:00.123456+00:00","record_hash":"{h}","schemaid":"meshaudit.http/v1","seq":7,"verified":true}}"#,
                c = "c".repeat(64),
                h = sha256_hex(ev.as_bytes()),
            )
        );
        assert_eq!(r.received_epoch(), Some((1_796_025_600, 123_456)));
    }

    #[test]
    fn missing_schemaid_and_unverified_are_null() {
        let mut s = stored(1, r#"{"event":"ping"}"#);
        s.verified = None;
        let out = String::from_utf8(Record::from_stored(&s).unwrap().to_canonical()).unwrap();
        assert!(out.contains(r#""schemaid":null"#) && out.contains(r#""verified":null"#));
    }
}
