//! Golden vectors, no Python needed: events sealed by mobius-auditlog-py
//! 1.1.0 (`testdata/mobius_sealed.ndjson`) verify with our crate, and our
//! fixed events still produce, byte for byte, the sealed lines the peer
//! accepted when they were written (`tests/mobius_peer.rs` rewrites and
//! re-checks them with `MESHAUDIT_WRITE_GOLDEN=1`).

mod common;

use common::{fixed_events, split_line, testdata};
use meshaudit_event::integrity::{event_hash, seal, verify_event, EventKeys, Verification};
use meshaudit_event::{canonical, parse, Schema, Value};

fn read(name: &str) -> String {
    let path = testdata(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys_for(key: &[u8]) -> EventKeys {
    if key.is_empty() {
        EventKeys::default()
    } else {
        EventKeys::new([("default".to_owned(), key.to_vec())])
    }
}

/// Every line verifies with its key, and fails with another one.
fn check_file(name: &str) -> usize {
    let text = read(name);
    let mut n = 0;
    for line in text.lines() {
        let (key, doc) = split_line(line);
        let v = parse(doc.as_bytes()).expect("golden JSON parses");
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            doc,
            "{name}: not canonical"
        );
        let map = v.as_object().expect("object");
        let hash = event_hash(map);
        assert_eq!(
            Some(hash.as_str()),
            v.pointer(&["security", "hash"]).and_then(Value::as_str),
            "{name}: {doc}"
        );
        let keys = match map
            .get("security")
            .and_then(|s| s.get("keyid"))
            .and_then(Value::as_str)
        {
            Some(id) if !key.is_empty() => EventKeys::new([(id.to_owned(), key.clone())]),
            _ => keys_for(&key),
        };
        assert_eq!(
            verify_event(map, &hash, &keys),
            Verification::Verified,
            "{name}: {doc}"
        );
        if !key.is_empty() {
            let other = EventKeys::new([("default".to_owned(), b"other".to_vec())]);
            assert_ne!(verify_event(map, &hash, &other), Verification::Verified);
        }
        n += 1;
    }
    n
}

#[test]
fn events_sealed_by_mobius_verify() {
    assert_eq!(check_file("mobius_sealed.ndjson"), 40);
}

#[test]
fn our_committed_events_verify() {
    assert_eq!(
        check_file("meshaudit_mobius1_sealed.ndjson"),
        fixed_events().len()
    );
    assert_eq!(check_file("meshaudit1_sealed.ndjson"), fixed_events().len());
}

#[test]
fn fixed_events_still_seal_to_the_golden_bytes() {
    for (file, schema, key_id) in [
        ("meshaudit_mobius1_sealed.ndjson", Schema::Mobius1, None),
        ("meshaudit1_sealed.ndjson", Schema::Meshaudit1, Some("k1")),
    ] {
        let golden = read(file);
        let golden: Vec<&str> = golden.lines().collect();
        let events = fixed_events();
        assert_eq!(golden.len(), events.len(), "{file}");
        for ((event, key), line) in events.iter().zip(golden) {
            let mut v = event.to_value(schema);
            seal(
                v.as_object_mut().expect("object"),
                Some(key.as_bytes()),
                key_id,
            );
            let ours = format!(
                "{} {}",
                hex::encode(key),
                String::from_utf8(canonical(&v)).unwrap()
            );
            assert_eq!(ours, line, "{file}");
        }
    }
}

#[test]
fn mobius_events_detect_tampering() {
    let text = read("mobius_sealed.ndjson");
    let (key, doc) = text
        .lines()
        .map(split_line)
        .find(|(k, _)| !k.is_empty())
        .expect("a signed mobius event");
    // Change one letter of the id: the hash no longer matches.
    let id = parse(doc.as_bytes())
        .unwrap()
        .get("id")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let flipped: String = id.chars().rev().collect();
    let tampered = doc.replacen(&id, &flipped, 1);
    let v = parse(tampered.as_bytes()).unwrap();
    let map = v.as_object().unwrap();
    assert_eq!(
        verify_event(map, &event_hash(map), &keys_for(&key)),
        Verification::HashMismatch
    );
}
