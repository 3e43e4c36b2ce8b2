//! Property tests: the canonical form reads back as the same value and is a
//! fixed point; it is printable ASCII; floats survive bit for bit; pruning is
//! idempotent and leaves no empty member; sealing then verifying succeeds for
//! any event and any key.

mod common;

use meshaudit_event::canonical::write_float;
use meshaudit_event::integrity::{event_hash, seal, verify_event, EventKeys, Verification};
use meshaudit_event::prune::prune;
use meshaudit_event::{canonical, parse, Map, Number, Schema, Value};
use proptest::prelude::*;

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::Float(f))),
        (any::<bool>(), "[1-9][0-9]{19,80}").prop_map(|(neg, d)| {
            Value::Number(Number::BigInt(if neg { format!("-{d}") } else { d }.into()))
        }),
        any::<String>().prop_map(Value::String),
        Just(Value::String(String::new())),
        Just(Value::String("schemaid".into())),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    any::<String>(),
                    Just("schemaid".to_owned()),
                    Just("security".to_owned())
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(Map::from_iter(m))),
        ]
    })
}

/// Values compared with floats by bits (so `-0.0` and `0.0` differ).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(Number::Float(x)), Value::Number(Number::Float(y))) => {
            x.to_bits() == y.to_bits()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

fn no_empty_members(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, v)| {
            let empty = match v {
                Value::Null => true,
                Value::String(s) => s.is_empty() && k != "schemaid",
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            !empty && no_empty_members(v)
        }),
        Value::Array(items) => items.iter().all(no_empty_members),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_reads_back_as_the_same_value(v in arb_value()) {
        let bytes = canonical(&v);
        prop_assert!(bytes.iter().all(|b| (0x20..0x7f).contains(b)), "not printable ASCII");
        let back = parse(&bytes).expect("canonical output parses");
        prop_assert!(same(&back, &v));
        prop_assert_eq!(canonical(&back), bytes);
    }

    #[test]
    fn floats_survive_bit_for_bit(bits in any::<u64>()) {
        let f = f64::from_bits(bits);
        prop_assume!(f.is_finite());
        let mut text = Vec::new();
        write_float(f, &mut text);
        match parse(&text).expect("a float parses") {
            Value::Number(Number::Float(g)) => prop_assert_eq!(g.to_bits(), f.to_bits()),
            other => prop_assert!(false, "{:?} read back as {:?}", String::from_utf8_lossy(&text), other),
        }
    }

    #[test]
    fn strings_survive(s in any::<String>()) {
        let v = Value::String(s.clone());
        let back = parse(&canonical(&v)).expect("parses");
        prop_assert_eq!(back.as_str(), Some(s.as_str()));
    }

    #[test]
    fn prune_is_idempotent_and_leaves_nothing_empty(v in arb_value()) {
        let mut once = v.clone();
        prune(&mut once);
        let mut twice = once.clone();
        prune(&mut twice);
        prop_assert!(same(&once, &twice));
        prop_assert!(no_empty_members(&once));
    }

    #[test]
    fn any_event_seals_and_verifies(e in common::arb_http_event(), key in common::arb_key(), mobius in any::<bool>()) {
        let schema = if mobius { Schema::Mobius1 } else { Schema::Meshaudit1 };
        let mut v = e.to_value(schema);
        prop_assert!(no_empty_members(&v));
        let map = v.as_object_mut().expect("object");
        let hash = seal(map, Some(key.as_bytes()), Some("k1"));
        // On the wire and back: parse(canonical) verifies the same.
        let back = parse(&canonical(&v)).expect("parses");
        let map = back.as_object().expect("object");
        prop_assert_eq!(event_hash(map), hash.clone());
        let keys = if key.is_empty() {
            EventKeys::default()
        } else {
            EventKeys::new([("k1".to_owned(), key.as_bytes().to_vec())])
        };
        prop_assert_eq!(verify_event(map, &hash, &keys), Verification::Verified);
    }
}
