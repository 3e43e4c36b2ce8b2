//! Against the real peer, mobius-auditlog-py 1.1.0 (SPEC §4, §5): events it
//! builds and seals verify with our crate, and our `mobius-1` events pass its
//! `verify()`, which re-validates them with its pydantic model.
//!
//! Needs the project virtualenv (`make setup`) or `MESHAUDIT_PYTHON`.
//! `MESHAUDIT_WRITE_GOLDEN=1` rewrites the golden files in `testdata/` (after
//! checking them against the peer); `tests/golden.rs` replays them without Python.

mod common;

use common::{
    arb_http_event, arb_key, fixed_events, mobius_python, run_peer, split_line, testdata,
};
use meshaudit_event::integrity::{event_hash, seal, verify_event, EventKeys, Verification};
use meshaudit_event::prune::prune;
use meshaudit_event::{canonical, parse, HttpEvent, Map, Schema, Value};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

fn keys_for(key: &[u8]) -> EventKeys {
    if key.is_empty() {
        EventKeys::default()
    } else {
        EventKeys::new([("default".to_owned(), key.to_vec())])
    }
}

/// `<hex key> <sealed event>` for one of our events.
fn sealed_line(event: &HttpEvent, schema: Schema, key: &str, key_id: Option<&str>) -> String {
    let mut v = event.to_value(schema);
    let map = v.as_object_mut().expect("to_value gives an object");
    seal(map, Some(key.as_bytes()), key_id);
    format!(
        "{} {}",
        hex::encode(key),
        String::from_utf8(canonical(&v)).expect("ASCII")
    )
}

/// Python's answers, `(hash, verified)` per line.
fn peer_verdicts(py: &str, command: &str, lines: &str) -> Vec<(String, String)> {
    run_peer(py, &[command], lines.as_bytes())
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap_or((l, ""));
            (a.to_owned(), b.to_owned())
        })
        .collect()
}

fn claimed_hash(doc: &str) -> String {
    parse(doc.as_bytes())
        .expect("event JSON")
        .pointer(&["security", "hash"])
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn events_sealed_by_mobius_verify_with_our_crate() {
    let py = mobius_python();
    let out = run_peer(&py, &["make", "11", "1500"], b"");
    let mut signed = 0;
    for line in out.lines() {
        let (key, doc) = split_line(line);
        let v = parse(doc.as_bytes()).expect("mobius writes JSON we can parse");
        // mobius `to_json()` is already canonical: we print it back unchanged.
        assert_eq!(String::from_utf8(canonical(&v)).unwrap(), doc);
        let map = v.as_object().expect("object");
        let hash = event_hash(map);
        assert_eq!(hash, claimed_hash(doc), "hash of {doc}");
        assert_eq!(
            verify_event(map, &hash, &keys_for(&key)),
            Verification::Verified,
            "{doc}"
        );
        if !key.is_empty() {
            signed += 1;
            let wrong = EventKeys::new([("default".to_owned(), [key.as_slice(), b"x"].concat())]);
            assert_eq!(verify_event(map, &hash, &wrong), Verification::BadSignature);
        }
    }
    assert_eq!(out.lines().count(), 1500);
    assert!(signed > 1000, "only {signed} signed events were generated");
}

#[test]
fn our_mobius1_events_pass_mobius_verify() {
    let py = mobius_python();
    let mut runner = TestRunner::deterministic();
    let strategy = (arb_http_event(), arb_key());
    let mut lines = String::new();
    let mut hashes = Vec::new();
    for _ in 0..1000 {
        let (event, key) = strategy.new_tree(&mut runner).expect("tree").current();
        let line = sealed_line(&event, Schema::Mobius1, &key, None);
        hashes.push(claimed_hash(split_line(&line).1));
        lines.push_str(&line);
        lines.push('\n');
    }
    for (event, key) in fixed_events() {
        let line = sealed_line(&event, Schema::Mobius1, key, None);
        hashes.push(claimed_hash(split_line(&line).1));
        lines.push_str(&line);
        lines.push('\n');
    }
    let verdicts = peer_verdicts(&py, "verify", &lines);
    assert_eq!(verdicts.len(), hashes.len());
    for ((line, (their_hash, ok)), ours) in lines.lines().zip(&verdicts).zip(&hashes) {
        assert_eq!(
            (their_hash, ok.as_str()),
            (ours, "True"),
            "mobius refuses {line}"
        );
    }
}

#[test]
fn mobius_refuses_what_it_should() {
    let py = mobius_python();
    let (event, key) = fixed_events().remove(0);
    let mut lines = Vec::new();
    // The full meshaudit-1 shape: mobius drops `http` and the extra keys, so
    // its hash differs. This is why `schema: "mobius-1"` exists.
    lines.push(sealed_line(&event, Schema::Meshaudit1, key, Some("k1")));
    // A mobius-1 event with one changed character.
    let good = sealed_line(&event, Schema::Mobius1, key, None);
    lines.push(good.replacen("\"acme\"", "\"acmf\"", 1));
    // The wrong key.
    let (_, doc) = split_line(&good);
    lines.push(format!("{} {doc}", hex::encode("not-the-key")));
    // A number where the model wants a string: refused by the model itself.
    lines.push(good.replacen("\"tenantid\":\"acme\"", "\"tenantid\":7", 1));
    let verdicts = peer_verdicts(&py, "verify", &(lines.join("\n") + "\n"));
    let answers: Vec<&str> = verdicts.iter().map(|(_, ok)| ok.as_str()).collect();
    assert_eq!(answers, ["False", "False", "False", "ValidationError"]);
    // And the untouched one passes.
    let verdicts = peer_verdicts(&py, "verify", &(good + "\n"));
    assert_eq!(verdicts[0].1, "True");
}

/// Values full of what pruning is about: empties, `schemaid`, `false`, `0`.
fn arb_prunable() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        Just(Value::String(String::new())),
        Just(Value::Array(Vec::new())),
        Just(Value::Object(Map::new())),
        Just(Value::Bool(false)),
        Just(Value::from(0i64)),
        Just(Value::from("x")),
        Just(Value::Number(meshaudit_event::Number::Float(-0.0))),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("schemaid".to_owned()),
                    Just("a".to_owned()),
                    Just(String::new()),
                    "[a-c]{1,2}"
                ],
                inner,
                0..5
            )
            .prop_map(Value::Object),
        ]
    })
}

#[test]
fn prune_matches_mobius_prune_empty() {
    let py = mobius_python();
    let mut runner = TestRunner::deterministic();
    let strategy = arb_prunable();
    let mut input = String::new();
    let mut ours = Vec::new();
    for _ in 0..2000 {
        let mut v = strategy.new_tree(&mut runner).expect("tree").current();
        input.push_str(std::str::from_utf8(&canonical(&v)).expect("ASCII"));
        input.push('\n');
        prune(&mut v);
        ours.push(String::from_utf8(canonical(&v)).expect("ASCII"));
    }
    let out = run_peer(&py, &["prune"], input.as_bytes());
    let theirs: Vec<&str> = out.lines().collect();
    assert_eq!(theirs.len(), ours.len());
    for ((line, ours), theirs) in input.lines().zip(&ours).zip(theirs) {
        assert_eq!(ours, theirs, "prune of {line}");
    }
}

#[test]
fn meshaudit1_events_verify_with_plain_python() {
    let py = mobius_python();
    let mut runner = TestRunner::deterministic();
    let strategy = (arb_http_event(), arb_key());
    let mut lines = String::new();
    let mut hashes = Vec::new();
    for _ in 0..500 {
        let (event, key) = strategy.new_tree(&mut runner).expect("tree").current();
        let line = sealed_line(&event, Schema::Meshaudit1, &key, Some("k1"));
        hashes.push(claimed_hash(split_line(&line).1));
        lines.push_str(&line);
        lines.push('\n');
    }
    let verdicts = peer_verdicts(&py, "verify-plain", &lines);
    assert_eq!(verdicts.len(), hashes.len());
    for ((line, (their_hash, ok)), ours) in lines.lines().zip(&verdicts).zip(&hashes) {
        assert_eq!(
            (their_hash, ok.as_str()),
            (ours, "True"),
            "python refuses {line}"
        );
    }
}

/// The golden files are what the peer says today: mobius still produces the
/// same sealed events from the same seed, and accepts our committed ones.
#[test]
fn golden_files_agree_with_the_peer() {
    let py = mobius_python();
    let mobius_now = run_peer(&py, &["make", "2026", "40"], b"");
    let ours_mobius1: String = fixed_events()
        .iter()
        .map(|(e, k)| sealed_line(e, Schema::Mobius1, k, None) + "\n")
        .collect();
    let ours_meshaudit1: String = fixed_events()
        .iter()
        .map(|(e, k)| sealed_line(e, Schema::Meshaudit1, k, Some("k1")) + "\n")
        .collect();
    for (_, ok) in peer_verdicts(&py, "verify", &ours_mobius1) {
        assert_eq!(ok, "True");
    }
    for (_, ok) in peer_verdicts(&py, "verify-plain", &ours_meshaudit1) {
        assert_eq!(ok, "True");
    }
    let files = [
        ("mobius_sealed.ndjson", mobius_now),
        ("meshaudit_mobius1_sealed.ndjson", ours_mobius1),
        ("meshaudit1_sealed.ndjson", ours_meshaudit1),
    ];
    for (name, content) in files {
        let path = testdata(name);
        if std::env::var_os("MESHAUDIT_WRITE_GOLDEN").is_some() {
            std::fs::write(&path, &content).expect("write golden file");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (MESHAUDIT_WRITE_GOLDEN=1 writes it)",
                path.display()
            )
        });
        assert_eq!(
            committed, content,
            "{name} differs from what the peer gives today"
        );
    }
}
