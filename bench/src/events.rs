//! Realistic `meshaudit.http/v1` events for the collector benchmarks.
//!
//! Each event looks like one the filter ships for an ordinary API call (metadata, a few
//! allow-listed headers, Kubernetes fields, a small JSON request payload) and is about
//! 800 bytes of canonical JSON. Ids are UUID v4s made from a per-run nonce and a counter,
//! so they never repeat within a run nor, with overwhelming probability, across runs.
//! Events are sealed with [`meshaudit_event::integrity::seal`], as the filter seals them.

use meshaudit_event::canonical::canonical;
use meshaudit_event::integrity::seal;
use meshaudit_event::schema::{format_timestamp, new_uuid_v4};
use meshaudit_event::value::{parse, Map, Value};
use sha2::{Digest, Sha256};

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const RESOURCES: [&str; 5] = ["orders", "customers", "payments", "invoices", "shipments"];
const STATUSES: [u32; 6] = [200, 200, 201, 204, 404, 503];
const PODS: [&str; 3] = [
    "checkout-7d9f8b6c5-x2kqp",
    "checkout-7d9f8b6c5-m8wzr",
    "billing-5c6d7f9b8-q4tns",
];

/// One sealed event: its id, the object and its canonical JSON line (no newline).
#[derive(Debug, Clone)]
pub struct SealedEvent {
    pub id: String,
    pub event_hash: String,
    pub object: Map,
    pub line: Vec<u8>,
}

/// Makes the `i`-th event of a run.
#[derive(Clone)]
pub struct EventFactory {
    nonce: [u8; 32],
    key: Vec<u8>,
    key_id: Option<String>,
}

impl std::fmt::Debug for EventFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFactory")
            .field("key", &"[REDACTED]")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl EventFactory {
    /// `run_seed` distinguishes runs (e.g. the start time and process id); `key` signs each
    /// event (`security.signature`), `key_id` names it.
    pub fn new(run_seed: &[u8], key: &[u8], key_id: Option<&str>) -> Self {
        let nonce: [u8; 32] = Sha256::digest(run_seed).into();
        Self {
            nonce,
            key: key.to_vec(),
            key_id: key_id.map(str::to_owned),
        }
    }

    /// The id of the `i`-th event.
    pub fn id(&self, i: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.nonce);
        h.update(i.to_be_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        new_uuid_v4(b)
    }

    /// The `i`-th event, stamped `now_us` (Unix microseconds), sealed.
    pub fn event(&self, i: u64, now_us: i64) -> SealedEvent {
        let id = self.id(i);
        let n = i as usize;
        let method = METHODS[n % METHODS.len()];
        let resource = RESOURCES[n / 4 % RESOURCES.len()];
        let status = STATUSES[n / 3 % STATUSES.len()];
        let pod = PODS[n % PODS.len()];
        let user = format!("user-{:05}", n % 9973);
        let severity = meshaudit_event::schema::severity_for(status);
        let outcome = meshaudit_event::schema::status_for(status);
        let trace = id.replace('-', "");
        let text = format!(
            r#"{{"id":"{id}","specversion":"1.0","schemaid":"meshaudit.http/v1","timestamp":"{ts}",
"tenantid":"acme-{tenant}","traceid":"{trace}","requestid":"{id}",
"httpmethod":"{method}","httpurl":"http://{resource}.shop/api/v1/{resource}/{n}",
"subject":{{"userid":"{user}","type":"customer"}},
"kubernetes":{{"namespacename":"shop","podname":"{pod}"}},
"action":{{"name":"/api/v1/{resource}/{n}","method":"{method}","severity":"{severity}","status":"{outcome}"}},
"network":{{"sourceip":"10.12.{a}.{b}"}},
"eventdata":{{"metadata":{{"issensitive":false}}}},
"http":{{"statuscode":{status},"durationms":{dur},"responsebytes":{rb},"protocol":"HTTP/1.1"}}}}"#,
            ts = format_timestamp(now_us),
            tenant = n % 7,
            a = n / 256 % 256,
            b = n % 256,
            dur = n % 97 + 1,
            rb = 100 + n % 900,
        );
        let mut object = match parse(text.as_bytes()) {
            Ok(Value::Object(m)) => m,
            // The template is valid JSON for every i: a failure here is a bug in this file.
            other => unreachable!("event template did not parse: {other:?}"),
        };
        let event_hash = seal(&mut object, Some(&self.key), self.key_id.as_deref());
        let line = canonical(&Value::Object(object.clone()));
        SealedEvent {
            id,
            event_hash,
            object,
            line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaudit_event::integrity::{event_hash, verify_event, EventKeys, Verification};

    fn factory() -> EventFactory {
        EventFactory::new(b"test-run", b"s3cret", None)
    }

    #[test]
    fn events_are_about_800_bytes_and_verify() {
        let f = factory();
        let keys = EventKeys::new([("default".to_string(), b"s3cret".to_vec())]);
        for i in 0..50 {
            let e = f.event(i, 1_750_000_000_000_000);
            assert!(
                (700..=900).contains(&e.line.len()),
                "event {i} is {} bytes: {}",
                e.line.len(),
                String::from_utf8_lossy(&e.line)
            );
            let reparsed = match parse(&e.line) {
                Ok(Value::Object(m)) => m,
                other => panic!("line {i} does not parse back: {other:?}"),
            };
            let recomputed = event_hash(&reparsed);
            assert_eq!(recomputed, e.event_hash);
            assert_eq!(
                verify_event(&reparsed, &recomputed, &keys),
                Verification::Verified
            );
        }
    }

    #[test]
    fn ids_are_unique_and_differ_between_runs() {
        let f = factory();
        let ids: std::collections::BTreeSet<String> = (0..10_000).map(|i| f.id(i)).collect();
        assert_eq!(ids.len(), 10_000);
        let other = EventFactory::new(b"another-run", b"s3cret", None);
        assert_ne!(f.id(0), other.id(0));
        assert_eq!(f.event(7, 0).id, f.id(7));
    }
}
