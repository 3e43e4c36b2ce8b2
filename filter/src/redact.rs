//! Redaction (SPEC §4): deny-listed headers, body keys at any depth of JSON,
//! form fields and query-string parameters lose their values before an event
//! leaves the filter.
//!
//! `mask` writes `"[REDACTED]"`; `hmac` writes `"hmac-sha256:"` + the first 32
//! hex digits of HMAC-SHA256(redaction key, value), where the value is the
//! string itself or the canonical JSON of a non-string, so equal secrets stay
//! correlatable without being revealed.

use crate::config::{Config, RedactMode};
use hmac::{Hmac, Mac};
use meshaudit_event::{canonical, Value};
use sha2::Sha256;

/// The replacement of a masked value.
pub const MASK: &str = "[REDACTED]";

/// Redaction rules taken from the configuration once per VM.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// The redacted keys by length (the last slot: longer ones), so a body key is
    /// compared with the few of its length only.
    keys_by_len: Vec<Vec<Box<[u8]>>>,
    /// For each lowercased first byte, then last byte, the length slots of
    /// the redacted keys with that byte there (bit `length_slot`): most body
    /// keys are passed over on these two lookups, without a comparison.
    first_bytes: [u64; 256],
    last_bytes: [u64; 256],
    headers: Vec<String>,
    mode: RedactMode,
}

impl Redactor {
    pub fn new(cfg: &Config) -> Self {
        Redactor {
            keys_by_len: cfg.redact_keys.iter().fold(
                vec![Vec::new(); LENGTH_SLOTS],
                |mut by_len, k| {
                    by_len[length_slot(k.len())].push(k.as_bytes().into());
                    by_len
                },
            ),
            first_bytes: slots_by_byte(&cfg.redact_keys, |k| k.first()),
            last_bytes: slots_by_byte(&cfg.redact_keys, |k| k.last()),
            headers: cfg.redact_headers.clone(),
            mode: cfg.redact_mode.clone(),
        }
    }

    /// Whether a body key / form field / query parameter is redacted
    /// (exact name, case-insensitive).
    pub fn is_redacted_key(&self, key: &str) -> bool {
        self.is_redacted_key_bytes(key.as_bytes())
    }

    fn is_redacted_key_bytes(&self, key: &[u8]) -> bool {
        let Some(&first) = key.first() else {
            return !self.keys_by_len[0].is_empty(); // an empty key configured
        };
        let slot = length_slot(key.len());
        let last = key[key.len() - 1];
        let bit = 1u64 << slot;
        self.first_bytes[usize::from(first.to_ascii_lowercase())] & bit != 0
            && self.last_bytes[usize::from(last.to_ascii_lowercase())] & bit != 0
            && self.keys_by_len[slot]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key))
    }

    /// Whether a header (lowercase name) is redacted.
    pub fn is_redacted_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h == name)
    }

    /// The replacement for a string value.
    pub fn replace_str(&self, v: &str) -> String {
        match &self.mode {
            RedactMode::Mask => MASK.to_owned(),
            RedactMode::Hmac(key) => hmac_tag(key.bytes(), v.as_bytes()),
        }
    }

    /// The replacement for any JSON value.
    pub fn replace_value(&self, v: &Value) -> Value {
        match (&self.mode, v) {
            (RedactMode::Mask, _) => Value::String(MASK.to_owned()),
            (RedactMode::Hmac(key), Value::String(s)) => {
                Value::String(hmac_tag(key.bytes(), s.as_bytes()))
            }
            (RedactMode::Hmac(key), other) => {
                Value::String(hmac_tag(key.bytes(), &canonical(other)))
            }
        }
    }

    /// Redacts matching keys at every depth of a JSON value, in place.
    pub fn redact_json(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    if self.is_redacted_key(k) {
                        *item = self.replace_value(item);
                    } else {
                        self.redact_json(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json(i)),
            _ => {}
        }
    }

    /// `path` (with its query) with redacted query parameters' values replaced.
    pub fn redact_query(&self, path: &str) -> String {
        let Some((base, query)) = path.split_once('?') else {
            return path.to_owned();
        };
        let mut out = String::with_capacity(path.len() + 8);
        out.push_str(base);
        out.push('?');
        for (i, param) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match param.split_once('=') {
                Some((name, value)) if self.is_redacted_key(&form_decode(name)) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(&self.replace_str(&form_decode(value)));
                }
                _ => out.push_str(param),
            }
        }
        out
    }
}

/// The streaming payload writer asks the same questions as [`Redactor::redact_json`].
impl meshaudit_event::stream::Redaction for Redactor {
    fn is_redacted(&self, key: &[u8]) -> bool {
        self.is_redacted_key_bytes(key)
    }

    fn replacement(&self, original: meshaudit_event::stream::Redacted<'_>) -> String {
        use meshaudit_event::stream::Redacted;
        match (&self.mode, original) {
            (RedactMode::Mask, _) => MASK.to_owned(),
            (RedactMode::Hmac(key), Redacted::Str(s)) => hmac_tag(key.bytes(), s.as_bytes()),
            (RedactMode::Hmac(key), Redacted::Json(canonical)) => hmac_tag(key.bytes(), canonical),
        }
    }
}

const LENGTH_SLOTS: usize = 64;

fn length_slot(len: usize) -> usize {
    len.min(LENGTH_SLOTS - 1)
}

/// The length slots of `keys` (bits) by the lowercased byte `at` picks.
fn slots_by_byte(keys: &[String], at: impl Fn(&[u8]) -> Option<&u8>) -> [u64; 256] {
    keys.iter().fold([0; 256], |mut slots, k| {
        if let Some(&b) = at(k.as_bytes()) {
            slots[usize::from(b.to_ascii_lowercase())] |= 1 << length_slot(k.len());
        }
        slots
    })
}

fn hmac_tag(key: &[u8], value: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; keep a non-revealing answer anyway.
        return MASK.to_owned();
    };
    mac.update(value);
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("hmac-sha256:{}", &digest[..32])
}

/// `application/x-www-form-urlencoded` decoding of one name or value:
/// `+` is a space, `%XX` a byte, invalid UTF-8 replaced (lossy).
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Secret};
    use std::collections::BTreeMap;

    fn redactor(json: &str) -> Redactor {
        let env: BTreeMap<String, String> = BTreeMap::new();
        match parse(json.as_bytes(), &env) {
            Ok(c) => Redactor::new(&c),
            Err(e) => panic!("{e}"),
        }
    }

    fn json(s: &str) -> Value {
        match meshaudit_event::parse(s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn nested_keys_are_masked_whatever_their_type() {
        let r = redactor(r#"{"collector_cluster":"c"}"#);
        let mut v = json(
            r#"{"user":"ann","Password":"p","deep":{"list":[{"token":{"a":1}},{"cvv":123}]},"ok":{"secret":null}}"#,
        );
        r.redact_json(&mut v);
        assert_eq!(
            String::from_utf8_lossy(&canonical(&v)),
            r#"{"Password":"[REDACTED]","deep":{"list":[{"token":"[REDACTED]"},{"cvv":"[REDACTED]"}]},"ok":{"secret":"[REDACTED]"},"user":"ann"}"#
        );
    }

    #[test]
    fn keys_of_every_length_are_matched_case_insensitively() {
        let long = "k".repeat(70);
        let r = redactor(&format!(
            r#"{{"collector_cluster":"c","redact_keys":["a","Session_Id","{long}"]}}"#
        ));
        for key in [
            "a",
            "A",
            "session_id",
            "SESSION_ID",
            &long,
            &long.to_uppercase(),
        ] {
            assert!(r.is_redacted_key(key), "{key}");
        }
        let other_long = "k".repeat(64);
        for key in ["", "b", "session", "session_idx", "password", &other_long] {
            assert!(!r.is_redacted_key(key), "{key}");
        }
        let empty = redactor(r#"{"collector_cluster":"c","redact_keys":[""]}"#);
        assert!(empty.is_redacted_key(""));
        assert!(!empty.is_redacted_key("a"));
    }

    #[test]
    fn near_misses_of_the_default_keys_are_not_redacted() {
        let r = redactor(r#"{"collector_cluster":"c"}"#);
        // same first byte and length, same last byte and length, both but
        // another middle, and the keys themselves in any case
        for key in [
            "sku", "son", "ssx", "tokez", "tbken", "pAssword", "Passwd", "CVV", "Ssn",
        ] {
            let expected = ["passwd", "password", "cvv", "ssn"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key));
            assert_eq!(r.is_redacted_key(key), expected, "{key}");
        }
        for key in [
            "api_key",
            "API_KEY",
            "refresh_token",
            "Authorization",
            "secret",
        ] {
            assert!(r.is_redacted_key(key), "{key}");
        }
    }

    #[test]
    fn hmac_mode_is_correlatable_and_hides_the_value() {
        let mut r = redactor(r#"{"collector_cluster":"c"}"#);
        r.mode = RedactMode::Hmac(Secret::new("k"));
        let a = r.replace_str("hunter2");
        let b = r.replace_str("hunter2");
        let c = r.replace_str("hunter3");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("hmac-sha256:"));
        assert_eq!(a.len(), "hmac-sha256:".len() + 32);
        assert!(!a.contains("hunter2"));
        // a non-string is tagged over its canonical JSON
        let n = r.replace_value(&json("[1,2]"));
        assert_eq!(n, Value::String(hmac_tag(b"k", b"[1,2]")));
        // HMAC-SHA256("k", "hunter2") computed independently (Python hmac).
        assert_eq!(a, hmac_tag(b"k", b"hunter2"));
    }

    #[test]
    fn query_parameters_are_redacted_by_decoded_name() {
        let r = redactor(r#"{"collector_cluster":"c"}"#);
        assert_eq!(
            r.redact_query("/login?user=ann&password=x%20y&TOKEN=1&api%5Fkey=z&flag"),
            "/login?user=ann&password=[REDACTED]&TOKEN=[REDACTED]&api%5Fkey=[REDACTED]&flag"
        );
        assert_eq!(r.redact_query("/plain"), "/plain");
    }

    #[test]
    fn form_decoding_handles_plus_percent_and_garbage() {
        assert_eq!(form_decode("a+b%21"), "a b!");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert_eq!(form_decode("%FF"), "\u{fffd}");
    }
}
