//! The workload key registry as pure logic (SPEC §10): what a registration
//! must hold (refusals say why, for a `400`), a stored key, and whether a key
//! may sign for a namespace at a time.

use crate::prepare::parse_rfc3339_us;
use meshaudit_event::workload_key::{valid_name, VerifierKey};
use serde::{Deserialize, Serialize};

/// The only algorithm of workload keys.
pub const ED25519: &str = "ed25519";

/// `POST /v1/admin/keys` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub keyid: String,
    pub algorithm: String,
    /// A verifier key text (`<name>+<id>+<base64>`) or base64 of the 32 bytes.
    pub public_key: String,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub not_before: Option<String>,
}

/// `POST /v1/admin/keys/{keyid}/retire` body (`not_after` defaults to now).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retirement {
    #[serde(default)]
    pub not_after: Option<String>,
}

/// A key as registered (before the store gives it a creation time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub keyid: String,
    pub public_key: [u8; 32],
    /// Sorted, deduplicated; empty = any namespace.
    pub namespaces: Vec<String>,
    pub not_before_us: Option<i64>,
}

/// A stored key and, once retired, the end of its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key: NewKey,
    pub created_at: String,
    pub not_after_us: Option<i64>,
    pub retired_at: Option<String>,
}

/// Why a key may not sign here and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    NotYetValid,
    Retired,
    OutOfScope,
}

impl Unusable {
    pub fn describe(self) -> &'static str {
        match self {
            Unusable::NotYetValid => "is not valid yet (not_before)",
            Unusable::Retired => "is retired",
            Unusable::OutOfScope => "is not registered for this namespace",
        }
    }
}

impl NewKey {
    pub fn verifier(&self) -> Option<VerifierKey> {
        VerifierKey::from_public(&self.keyid, &self.public_key).ok()
    }
}

impl KeyRecord {
    /// May this key sign for `namespace` (from `X-Meshaudit-Source`; `None`
    /// when there is none, which no scoped key accepts) at `at_us`?
    pub fn usable(&self, namespace: Option<&str>, at_us: i64) -> Result<(), Unusable> {
        self.window(at_us)?;
        let ns = &self.key.namespaces;
        if !ns.is_empty() && !namespace.is_some_and(|n| ns.iter().any(|s| s == n)) {
            return Err(Unusable::OutOfScope);
        }
        Ok(())
    }

    /// Inside `not_before`..=`not_after` at `at_us`.
    pub fn in_window(&self, at_us: i64) -> bool {
        self.window(at_us).is_ok()
    }

    fn window(&self, at_us: i64) -> Result<(), Unusable> {
        if self.key.not_before_us.is_some_and(|nb| at_us < nb) {
            return Err(Unusable::NotYetValid);
        }
        if self.not_after_us.is_some_and(|na| at_us > na) {
            return Err(Unusable::Retired);
        }
        Ok(())
    }
}

/// `<name>+<8 hex>+…`: a verifier key text rather than bare base64 (which
/// may hold '+' too, but not around 8 hex digits at that place).
fn looks_like_verifier_text(text: &str) -> bool {
    let mut parts = text.splitn(3, '+');
    let (Some(_), Some(id), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a registration; the error is the `400` message.
pub fn validate(reg: &Registration) -> Result<NewKey, String> {
    if !reg.algorithm.eq_ignore_ascii_case(ED25519) {
        return Err(format!(
            "algorithm {:?} is not supported: only \"ed25519\"",
            reg.algorithm
        ));
    }
    if !valid_name(&reg.keyid) {
        return Err("keyid must be non-empty, without white space, '+' or ','".to_owned());
    }
    let text = reg.public_key.trim();
    let verifier = if looks_like_verifier_text(text) {
        let vk = VerifierKey::parse(text)
            .map_err(|e| format!("public_key is not a valid verifier key: {e}"))?;
        if vk.name() != reg.keyid {
            return Err(format!(
                "public_key names the key {:?}, not the keyid {:?}",
                vk.name(),
                reg.keyid
            ));
        }
        vk
    } else {
        VerifierKey::from_base64(&reg.keyid, text).map_err(|e| {
            format!("public_key must be a verifier key text or base64 of 32 bytes: {e}")
        })?
    };
    let mut namespaces: Vec<String> = reg
        .namespaces
        .iter()
        .flatten()
        .map(|n| n.trim().to_owned())
        .collect();
    if namespaces.iter().any(String::is_empty) {
        return Err("namespaces must not hold an empty name".to_owned());
    }
    namespaces.sort();
    namespaces.dedup();
    let not_before_us = match reg.not_before.as_deref() {
        None => None,
        Some(t) => Some(
            parse_rfc3339_us(t)
                .ok_or_else(|| "not_before must be an RFC 3339 date-time".to_owned())?,
        ),
    };
    Ok(NewKey {
        keyid: reg.keyid.clone(),
        public_key: verifier.public_bytes(),
        namespaces,
        not_before_us,
    })
}

/// `GET /v1/admin/keys` item.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub keyid: String,
    pub algorithm: &'static str,
    /// base64 of the 32 bytes.
    pub public_key: String,
    /// The verifier key text (SPEC §9 format).
    pub verifier_key: String,
    pub namespaces: Vec<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub created_at: String,
    pub retired_at: Option<String>,
    /// Where the key comes from: `registry` or `config` (`AUDIT_RECEIVER_BATCH_KEYS`).
    pub origin: &'static str,
}

fn time_text(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us).map(crate::store::format_time)
}

impl KeyView {
    pub fn new(rec: &KeyRecord, origin: &'static str) -> Self {
        use base64::Engine as _;
        Self {
            keyid: rec.key.keyid.clone(),
            algorithm: ED25519,
            public_key: base64::engine::general_purpose::STANDARD.encode(rec.key.public_key),
            verifier_key: rec.key.verifier().map(|v| v.to_text()).unwrap_or_default(),
            namespaces: rec.key.namespaces.clone(),
            not_before: rec.key.not_before_us.and_then(time_text),
            not_after: rec.not_after_us.and_then(time_text),
            created_at: rec.created_at.clone(),
            retired_at: rec.retired_at.clone(),
            origin,
        }
    }
}

/// `AUDIT_RECEIVER_BATCH_KEYS`: verifier key texts, comma-separated (a key
/// text has no comma). The error is one configuration line.
pub fn parse_static_keys(list: Option<&str>) -> Result<Vec<VerifierKey>, String> {
    let mut keys: Vec<VerifierKey> = Vec::new();
    for (i, text) in crate::config::parse_list(list).iter().enumerate() {
        let vk = VerifierKey::parse(text).map_err(|e| {
            format!("AUDIT_RECEIVER_BATCH_KEYS: entry {} is not a verifier key (<name>+<id>+<base64>): {e}", i + 1)
        })?;
        if keys.iter().any(|k| k.name() == vk.name()) {
            return Err(format!(
                "AUDIT_RECEIVER_BATCH_KEYS: the keyid {:?} is listed twice",
                vk.name()
            ));
        }
        keys.push(vk);
    }
    Ok(keys)
}

/// A static key from `AUDIT_RECEIVER_BATCH_KEYS`: any namespace, no window.
pub fn static_record(vk: &VerifierKey) -> KeyRecord {
    KeyRecord {
        key: NewKey {
            keyid: vk.name().to_owned(),
            public_key: vk.public_bytes(),
            namespaces: Vec::new(),
            not_before_us: None,
        },
        created_at: String::new(),
        not_after_us: None,
        retired_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use meshaudit_event::workload_key::SignerKey;

    fn reg(keyid: &str, public_key: &str) -> Registration {
        Registration {
            keyid: keyid.into(),
            algorithm: "ed25519".into(),
            public_key: public_key.into(),
            namespaces: Some(vec!["b".into(), "a".into(), "a".into()]),
            not_before: None,
        }
    }

    #[test]
    fn both_key_forms_register_and_bad_ones_say_why() {
        let vk = SignerKey::from_seed("k1", &[3u8; 32]).unwrap().verifier();
        let b64 = base64::engine::general_purpose::STANDARD.encode(vk.public_bytes());
        let a = validate(&reg("k1", &vk.to_text())).unwrap();
        let b = validate(&reg("k1", &b64)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.namespaces, ["a", "b"]);
        let other_name = validate(&reg("k2", &vk.to_text())).unwrap_err();
        assert!(other_name.contains("not the keyid"), "{other_name}");
        assert!(validate(&reg("k1", "AAAA"))
            .unwrap_err()
            .contains("32 bytes"));
        assert!(validate(&reg("k1", "not base64!"))
            .unwrap_err()
            .contains("base64"));
        let mut rsa = reg("k1", &b64);
        rsa.algorithm = "rsa-pss".into();
        assert!(validate(&rsa).unwrap_err().contains("only \"ed25519\""));
        assert!(validate(&reg("a b", &b64)).is_err());
    }

    #[test]
    fn usable_checks_window_and_scope() {
        let mut rec = KeyRecord {
            key: NewKey {
                keyid: "k".into(),
                public_key: [0; 32],
                namespaces: vec!["ns1".into()],
                not_before_us: Some(100),
            },
            created_at: String::new(),
            not_after_us: Some(200),
            retired_at: None,
        };
        assert_eq!(rec.usable(Some("ns1"), 150), Ok(()));
        assert_eq!(rec.usable(Some("ns1"), 200), Ok(()));
        assert_eq!(rec.usable(Some("ns1"), 99), Err(Unusable::NotYetValid));
        assert_eq!(rec.usable(Some("ns1"), 201), Err(Unusable::Retired));
        assert_eq!(rec.usable(Some("ns2"), 150), Err(Unusable::OutOfScope));
        assert_eq!(rec.usable(None, 150), Err(Unusable::OutOfScope));
        rec.key.namespaces.clear();
        assert_eq!(rec.usable(None, 150), Ok(()));
    }
}
