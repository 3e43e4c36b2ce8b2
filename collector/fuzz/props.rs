//! Property-based fuzzing of what a client controls on the ingest path
//! (issue 17): the NDJSON/JSON body decoder (splitting, the JSON array
//! scanner, the event cap, parsing, hashing, id rules), canonical JSON, and
//! the header checks. `cargo fuzz` needs a nightly toolchain this project
//! does not install, so these are proptest targets: `make test` runs the
//! default 256 cases each; `make fuzz` runs many more (`PROPTEST_CASES`).
//!
//! Each property says what must hold for *any* input: never a panic, and
//! the decoder agrees with the reference parser on what it accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use meshaudit_collector::ingest::body::{
    array_elements, declared_length, media, split_batch, Framing,
};
use meshaudit_collector::ingest::events::Decode;
use meshaudit_collector::ingest::Refusal;
use meshaudit_event::integrity::{event_hash, EventKeys};
use meshaudit_event::{canonical, parse, Map, Number, Value};
use proptest::prelude::*;
use std::sync::Arc;

/// Any JSON value the collector could receive (depth bounded by the strategy).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Number(Number::Int(i))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::Float(f))),
        any::<String>().prop_map(Value::String),
        "[\\[\\]{},:\"\\\\ a-z\\n\\r\\t\u{0}\u{7f}\u{e9}\u{1F600}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6).prop_map(Value::Object),
        ]
    })
}

fn object() -> impl Strategy<Value = Map> {
    prop::collection::btree_map("[a-z]{1,6}", value(), 0..6)
}

/// JSON text of `v` with arbitrary (JSON) whitespace around the punctuation.
fn spaced(v: &Value, ws: &[u8]) -> Vec<u8> {
    let text = canonical(v);
    let mut out = Vec::with_capacity(text.len() * 2);
    let mut in_string = false;
    let mut escaped = false;
    let mut k = 0;
    for &b in &text {
        out.push(b);
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b',' | b':' | b'[' | b'{') && !ws.is_empty() {
            out.push(ws[k % ws.len()]);
            k += 1;
        }
    }
    out
}

fn decode(framing: Framing, max_events: usize) -> Decode {
    Decode {
        framing,
        max_events,
        keys: Arc::new(EventKeys::default()),
    }
}

proptest! {
    /// Canonical JSON is ASCII, parses back to the same value, and is a
    /// fixed point (what the verifier recomputes is what was stored).
    #[test]
    fn canonical_round_trips(v in value()) {
        let c = canonical(&v);
        prop_assert!(c.is_ascii());
        let back = parse(&c).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(canonical(&back), c);
    }

    /// The decoder never panics on arbitrary bytes, under either framing,
    /// and a refusal names a line that exists.
    #[test]
    fn decoder_never_panics(body in prop::collection::vec(any::<u8>(), 0..512), max in 0usize..8) {
        for framing in [Framing::Ndjson, Framing::Json] {
            match decode(framing, max).run(&body) {
                Ok(events) => prop_assert!(events.len() <= max),
                Err(Refusal::Malformed { line: Some(l), .. }) if framing == Framing::Ndjson => {
                    prop_assert!(l >= 1 && l <= body.split(|&b| b == b'\n').count());
                }
                Err(_) => {}
            }
        }
    }

    /// Bytes shaped like JSON (brackets, quotes, escapes, commas) exercise the
    /// array scanner: whenever it splits and every element parses, the whole
    /// body is that array (the scanner never accepts what the parser would not).
    #[test]
    fn array_scanner_agrees_with_the_parser(
        body in "[ \\[\\]{}\",:\\\\a0-9\\n]{0,64}",
    ) {
        let bytes = body.as_bytes();
        if let Some(Ok(elements)) = array_elements(bytes) {
            let parsed: Result<Vec<Value>, _> = elements.iter().map(|e| parse(e)).collect();
            if let Ok(items) = parsed {
                prop_assert_eq!(parse(bytes).unwrap(), Value::Array(items));
            }
        }
        if let Ok(Value::Array(items)) = parse(bytes) {
            // And what the parser accepts, the scanner splits the same way.
            let elements = array_elements(bytes).unwrap().unwrap();
            prop_assert_eq!(elements.len(), items.len());
        }
    }

    /// Arrays and NDJSON of objects, whatever the whitespace: split into the
    /// same events with the same hashes and lines, capped by count.
    #[test]
    fn batches_decode_to_their_events(
        events in prop::collection::vec(object(), 0..8),
        ws in prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'\n', b'\r']), 0..3),
        max in 0usize..10,
    ) {
        let values: Vec<Value> = events.iter().cloned().map(Value::Object).collect();
        let array = spaced(&Value::Array(values.clone()), &ws);
        let mut ndjson = Vec::new();
        for v in &values {
            ndjson.extend_from_slice(&canonical(v));
            ndjson.extend_from_slice(b"\r\n\n");
        }
        for (framing, body) in [(Framing::Json, &array), (Framing::Ndjson, &ndjson)] {
            match split_batch(body, framing, max) {
                Ok(raw) => {
                    prop_assert!(events.len() <= max);
                    let got: Vec<&Map> = raw.iter().map(|r| &r.event).collect();
                    prop_assert_eq!(got, events.iter().collect::<Vec<_>>());
                }
                Err(Refusal::TooLarge(_)) => prop_assert!(events.len() > max),
                Err(Refusal::Malformed { .. }) => {
                    prop_assert!(framing == Framing::Ndjson && events.is_empty())
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
        if events.len() <= max && !events.is_empty() {
            let prepared = decode(Framing::Ndjson, max).run(&ndjson);
            // Ids may be refused (a generated `sha256:` or NUL id); otherwise
            // the hashes are the reference hashes, lines 1, 3, 5, …
            if let Ok(prepared) = prepared {
                for (i, (p, e)) in prepared.iter().zip(&events).enumerate() {
                    prop_assert_eq!(&p.event_hash, &event_hash(e));
                    prop_assert_eq!(p.line, 2 * i + 1);
                }
            }
        }
    }

    /// Header checks on arbitrary header values never panic, and a
    /// Content-Length is accepted only when it is a number within the limit.
    #[test]
    fn header_checks_never_panic(
        content_type in prop::option::of("[ -~]{0,40}"),
        encoding in prop::option::of("[ -~]{0,12}"),
        length in prop::option::of("[0-9 +-]{0,24}"),
        limit in 0usize..10_000,
    ) {
        let mut h = HeaderMap::new();
        for (name, v) in [("content-type", &content_type), ("content-encoding", &encoding), ("content-length", &length)] {
            if let Some(v) = v {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(HeaderName::from_static(name), v);
                }
            }
        }
        let _ = media(&h);
        if let Ok(Some(n)) = declared_length(&h, limit) {
            prop_assert!(n <= limit);
        }
    }
}
