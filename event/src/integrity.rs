//! Integrity (SPEC §5): the event hash and signature (mobius `compute_hash` /
//! `sign`), the batch transport signature of seed 000, and the timestamp window.
//!
//! Keys are the UTF-8 bytes of the configured strings, never decoded. Every
//! comparison of a secret-derived value is constant-time.

use crate::canonical::write_object;
use crate::value::{Map, Value};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex of SHA-256 over `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // `new_from_slice` only fails for fixed-size-key MACs; keep no panic path.
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

/// `hex(SHA-256(canonical(event without its top-level "security")))`.
pub fn event_hash(event: &Map) -> String {
    let mut buf = Vec::with_capacity(1024);
    write_object(event, Some("security"), &mut buf);
    sha256_hex(&buf)
}

/// `hex(HMAC-SHA256(key, hash_hex))`: mobius `sign(hash, key)`.
pub fn sign_hash(key: &[u8], hash_hex: &str) -> String {
    hmac_hex(key, &[hash_hex.as_bytes()])
}

/// Constant-time equality of two ASCII strings (hex digests).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Sets `security` = {hash, signature, keyid?} on an event object.
///
/// An empty key signs nothing, as mobius `seal(event, "")` (its `if
/// signing_key` is false for `""`): the event gets its hash only, and no
/// `keyid`.
pub fn seal(event: &mut Map, key: Option<&[u8]>, key_id: Option<&str>) -> String {
    let hash = event_hash(event);
    let mut security = Map::new();
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        security.insert("signature".into(), Value::String(sign_hash(key, &hash)));
        // `keyid` names the key of a signature: without one it would say nothing.
        if let Some(id) = key_id.filter(|s| !s.is_empty()) {
            security.insert("keyid".into(), Value::String(id.to_owned()));
        }
    }
    security.insert("hash".into(), Value::String(hash.clone()));
    event.insert("security".into(), Value::Object(security));
    hash
}

/// Named event keys (`AUDIT_RECEIVER_EVENT_KEYS`, or the signing secrets).
#[derive(Clone, Default)]
pub struct EventKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for EventKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("EventKeys").field("ids", &ids).finish()
    }
}

impl EventKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    fn by_id(&self, id: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v.as_slice())
    }
}

/// The outcome of checking one event (SPEC §6 "Event verification").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The event carries no `security.hash`: `verified` is null.
    NoHash,
    Verified,
    HashMismatch,
    BadSignature,
    UnknownKey,
}

impl Verification {
    /// The stored `verified` column: `None` for no hash.
    pub fn verified(self) -> Option<bool> {
        match self {
            Verification::NoHash => None,
            Verification::Verified => Some(true),
            _ => Some(false),
        }
    }
    /// The stored reason for `verified = false`.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verification::HashMismatch => Some("hash_mismatch"),
            Verification::BadSignature => Some("bad_signature"),
            Verification::UnknownKey => Some("unknown_key"),
            _ => None,
        }
    }
}

/// Checks an event's claimed hash against `recomputed` (from [`event_hash`])
/// and its signature against `keys`: by `security.keyid`; without one, the
/// key named `default`, else every key in turn. A hash without a signature
/// verifies only when no key is configured (mobius `verify` without a key).
pub fn verify_event(event: &Map, recomputed: &str, keys: &EventKeys) -> Verification {
    let Some(security) = event.get("security").and_then(Value::as_object) else {
        return Verification::NoHash;
    };
    let Some(claimed) = security.get("hash") else {
        return Verification::NoHash;
    };
    let Some(claimed) = claimed.as_str() else {
        return Verification::HashMismatch;
    };
    if !ct_eq(claimed, recomputed) {
        return Verification::HashMismatch;
    }
    let signature = security.get("signature").and_then(Value::as_str);
    let keyid = security.get("keyid").and_then(Value::as_str);
    let candidates: Vec<&[u8]> = match keyid {
        Some(id) => match keys.by_id(id) {
            Some(k) => vec![k],
            None => return Verification::UnknownKey,
        },
        None => match keys.by_id("default") {
            Some(k) => vec![k],
            None => keys.keys.iter().map(|(_, k)| k.as_slice()).collect(),
        },
    };
    match signature {
        None if keys.is_empty() => Verification::Verified,
        None => Verification::BadSignature,
        Some(_) if candidates.is_empty() => Verification::UnknownKey,
        Some(sig) => {
            // Check every candidate so the time taken does not say which key matched.
            let ok = candidates.iter().fold(false, |ok, key| {
                ok | ct_eq(&sign_hash(key, recomputed), sig)
            });
            if ok {
                Verification::Verified
            } else {
                Verification::BadSignature
            }
        }
    }
}

/// `batch_digest = SHA-256(h1 ‖ … ‖ hn)` over the raw 32-byte event hashes of
/// a batch, in line order (SPEC §10). Under `X-Signature-Scheme: digest` the
/// batch HMAC signs `"{ts}." + hex(batch_digest)`: pass the hex digest as the
/// `body` of [`batch_signature`] / [`verify_batch_signature`], so the event
/// bytes are hashed once, not twice.
pub fn batch_digest<'a>(event_hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for eh in event_hashes {
        h.update(eh);
    }
    h.finalize().into()
}

/// [`batch_digest`] over lowercase-hex event hashes (as `security.hash` and
/// the collector's recomputed hashes are kept); `None` if one is not 64 hex
/// digits.
pub fn batch_digest_hex<'a>(event_hashes: impl IntoIterator<Item = &'a str>) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for eh in event_hashes {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(eh, &mut raw).ok()?;
        h.update(raw);
    }
    Some(h.finalize().into())
}

/// The `X-Signature` value: `sha256=hex(HMAC-SHA256(secret, "{ts}.{body}"))`.
pub fn batch_signature(secret: &[u8], ts: &str, body: &[u8]) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256=");
    s.push_str(&hmac_hex(secret, &[ts.as_bytes(), b".", body]));
    s
}

/// True when `signature` (the whole `X-Signature` header) matches `body`
/// signed at `ts` by any of `secrets` (a list, for rotation).
///
/// The header must be exactly `sha256=` and 64 lowercase hex digits, as
/// [`batch_signature`] (and Python's `hexdigest()`) writes it, surrounding
/// whitespace aside: any other byte is a different signature.
pub fn verify_batch_signature(secrets: &[Vec<u8>], ts: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    if hex_sig.len() != 64
        || !hex_sig
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return false;
    }
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    secrets.iter().fold(false, |ok, secret| {
        let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
            return ok;
        };
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        // `verify_slice` compares in constant time.
        ok | mac.verify_slice(&given).is_ok()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("X-Signature-Ts is missing")]
    Missing,
    #[error("X-Signature-Ts is not POSIX seconds")]
    Invalid,
    #[error("X-Signature-Ts is outside the allowed clock skew")]
    OutsideWindow,
}

/// Checks `X-Signature-Ts` (POSIX seconds) against `now_secs` ± `skew_secs`,
/// future as past.
pub fn check_timestamp(
    ts: Option<&str>,
    now_secs: i64,
    skew_secs: i64,
) -> Result<i64, TimestampError> {
    let ts = ts
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(TimestampError::Missing)?;
    if !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimestampError::Invalid);
    }
    let ts: i64 = ts.parse().map_err(|_| TimestampError::Invalid)?;
    // `abs_diff` cannot overflow, whatever clock or header value comes in.
    if ts.abs_diff(now_secs) > skew_secs.max(0).unsigned_abs() {
        return Err(TimestampError::OutsideWindow);
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn batch_signature_known_answer() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"1700000000.{}",hashlib.sha256).hexdigest())'
        let sig = batch_signature(b"s3cret", "1700000000", b"{}");
        assert_eq!(
            sig,
            "sha256=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
        let secrets = vec![b"old".to_vec(), b"s3cret".to_vec()];
        assert!(verify_batch_signature(&secrets, "1700000000", b"{}", &sig));
        assert!(!verify_batch_signature(&secrets, "1700000001", b"{}", &sig));
        assert!(!verify_batch_signature(
            &secrets,
            "1700000000",
            b"{ }",
            &sig
        ));
        assert!(!verify_batch_signature(
            &secrets,
            "1700000000",
            b"{}",
            &sig[1..]
        ));
    }

    #[test]
    fn timestamp_window_both_ways() {
        assert_eq!(check_timestamp(Some("1000"), 1000, 300), Ok(1000));
        assert_eq!(check_timestamp(Some("1300"), 1000, 300), Ok(1300));
        assert_eq!(
            check_timestamp(Some("1301"), 1000, 300),
            Err(TimestampError::OutsideWindow)
        );
        assert_eq!(
            check_timestamp(Some("699"), 1000, 300),
            Err(TimestampError::OutsideWindow)
        );
        assert_eq!(
            check_timestamp(None, 1000, 300),
            Err(TimestampError::Missing)
        );
        assert_eq!(
            check_timestamp(Some("-5"), 1000, 300),
            Err(TimestampError::Invalid)
        );
    }

    #[test]
    fn empty_key_seals_without_signature_as_mobius() {
        let mut v = parse(br#"{"id":"1"}"#).unwrap();
        let m = v.as_object_mut().unwrap();
        let hash = seal(m, Some(b""), Some("k1"));
        let security = m.get("security").and_then(Value::as_object).unwrap();
        assert_eq!(
            security.get("hash").and_then(Value::as_str),
            Some(hash.as_str())
        );
        assert!(security.get("signature").is_none());
        assert!(security.get("keyid").is_none());
    }

    #[test]
    fn seal_then_verify_and_detect_changes() {
        let mut v = parse(br#"{"id":"1","action":{"name":"/x"}}"#).unwrap();
        let m = v.as_object_mut().unwrap();
        seal(m, Some(b"k"), Some("k1"));
        let keys = EventKeys::new([("k1".to_string(), b"k".to_vec())]);
        assert_eq!(
            verify_event(m, &event_hash(m), &keys),
            Verification::Verified
        );
        m.insert("id".into(), Value::from("2"));
        assert_eq!(
            verify_event(m, &event_hash(m), &keys),
            Verification::HashMismatch
        );
        let other = EventKeys::new([("k2".to_string(), b"k".to_vec())]);
        let mut v = parse(br#"{"id":"1"}"#).unwrap();
        let m = v.as_object_mut().unwrap();
        seal(m, Some(b"k"), Some("k1"));
        assert_eq!(
            verify_event(m, &event_hash(m), &other),
            Verification::UnknownKey
        );
        let wrong = EventKeys::new([("k1".to_string(), b"nope".to_vec())]);
        assert_eq!(
            verify_event(m, &event_hash(m), &wrong),
            Verification::BadSignature
        );
    }

    #[test]
    fn batch_digest_is_sha256_of_the_raw_hashes_in_order() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut cat = Vec::new();
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        let want: [u8; 32] = Sha256::digest(&cat).into();
        assert_eq!(batch_digest([&a, &b]), want);
        assert_ne!(batch_digest([&b, &a]), want);
        let hexes = [hex::encode(a), hex::encode(b)];
        assert_eq!(
            batch_digest_hex(hexes.iter().map(String::as_str)),
            Some(want)
        );
        assert_eq!(batch_digest_hex(["zz"]), None);
        // The empty batch digests the empty string.
        assert_eq!(hex::encode(batch_digest([])), sha256_hex(b""));
    }
}
