//! mobius `prune_empty`: in objects, drop members whose pruned value is
//! `null`, `""`, `[]` or `{}` (a member named `schemaid` keeps `""`); arrays
//! keep every element, pruned inside; `false` and `0` stay.

use crate::value::{Map, Value};

/// Prunes `v` in place.
pub fn prune(v: &mut Value) {
    match v {
        Value::Object(map) => prune_map(map),
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn prune_map(map: &mut Map) {
    map.retain(|k, v| {
        prune(v);
        match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty() || k == "schemaid",
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical, parse};

    fn pruned(s: &str) -> String {
        let mut v = parse(s.as_bytes()).unwrap();
        prune(&mut v);
        String::from_utf8(canonical(&v)).unwrap()
    }

    #[test]
    fn prunes_as_mobius() {
        assert_eq!(
            pruned(
                r#"{"a":null,"b":"","c":[],"d":{},"e":{"x":null},"f":false,"g":0,"schemaid":"","h":{"schemaid":""}}"#
            ),
            r#"{"f":false,"g":0,"h":{"schemaid":""},"schemaid":""}"#
        );
        assert_eq!(
            pruned(r#"{"l":[null,"",{},{"x":null}]}"#),
            r#"{"l":[null,"",{},{}]}"#
        );
        assert_eq!(pruned(r#"{"schemaid":null}"#), "{}");
    }
}
