//! `serde` support for [`Value`], so the schema types can derive
//! `Serialize`/`Deserialize` (configuration, tests, tooling).
//!
//! The wire form is never produced through serde: events go out as
//! [`crate::canonical`] bytes. Through serde, integers beyond 128 bits have no
//! native representation and are serialised as their decimal text; everything
//! else maps one to one.

use crate::value::{Map, Number, Value};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(Number::Int(i)) => s.serialize_i64(*i),
            Value::Number(Number::Float(f)) => s.serialize_f64(*f),
            Value::Number(Number::BigInt(text)) => {
                if let Ok(i) = text.parse::<i128>() {
                    s.serialize_i128(i)
                } else if let Ok(u) = text.parse::<u128>() {
                    s.serialize_u128(u)
                } else {
                    s.serialize_str(text)
                }
            }
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::from(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from(u))
    }
    fn visit_i128<E>(self, i: i128) -> Result<Value, E> {
        Ok(match i64::try_from(i) {
            Ok(i) => Value::from(i),
            Err(_) => Value::Number(Number::BigInt(i.to_string().into_boxed_str())),
        })
    }
    fn visit_u128<E>(self, u: u128) -> Result<Value, E> {
        Ok(match i64::try_from(u) {
            Ok(i) => Value::from(i),
            Err(_) => Value::Number(Number::BigInt(u.to_string().into_boxed_str())),
        })
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        if f.is_finite() {
            Ok(Value::Number(Number::Float(f)))
        } else {
            Err(E::custom("NaN and infinite numbers are not JSON"))
        }
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some((k, v)) = access.next_entry::<String, Value>()? {
            map.insert(k, v);
        }
        Ok(Value::Object(map))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::{canonical, parse, Value};

    #[test]
    fn serde_json_round_trip_keeps_canonical_bytes() {
        let text = br#"{"a":[1,-2,1.5,true,null,"x\u00e9"],"b":{"c":18446744073709551615}}"#;
        let v = parse(text).unwrap();
        let through: Value = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(canonical(&through), canonical(&v));
        assert_eq!(through, v);
    }

    #[test]
    fn integers_beyond_i64_become_big_integers() {
        let v: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(canonical(&v), b"18446744073709551615");
        let v: Value = serde_json::from_str("-9223372036854775808").unwrap();
        assert_eq!(v.as_i64(), Some(i64::MIN));
    }
}
