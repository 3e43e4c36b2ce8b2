//! Batch signatures and per-event Ed25519 signatures checked against keys
//! (SPEC §10), as pure functions: the ingest hook fetches the key, these
//! decide. A refusal's message never holds key material.

use super::registry::{KeyRecord, Unusable};
use meshaudit_event::integrity::{batch_digest_hex, ct_eq, Verification};
use meshaudit_event::value::{parse, Value};
use meshaudit_event::workload_key::BatchSignature;
use serde::Serialize;

/// A verified batch, as stored and as `GET /v1/events/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRecord {
    pub keyid: String,
    pub source: String,
    pub batch_seq: i64,
    /// `X-Signature-Ts` of the attempt that was stored.
    pub signature_ts: Option<String>,
    /// base64 Ed25519 signature.
    pub signature: String,
    /// hex `batch_digest`.
    pub batch_digest: String,
    /// The recomputed event hashes, in line order.
    pub event_hashes: Vec<String>,
}

/// Why a batch is refused (`401 batch_signature`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("X-Meshaudit-Batch-Signature is required (AUDIT_RECEIVER_REQUIRE_BATCH_SIGNATURE)")]
    Missing,
    #[error("X-Meshaudit-Batch-Signature: {0}")]
    Malformed(String),
    #[error("the batch signature key {0:?} is not registered")]
    UnknownKey(String),
    #[error("the batch signature key {0:?} {1}")]
    Unusable(String, &'static str),
    #[error("the batch signature does not verify with the key {0:?}")]
    BadSignature(String),
}

/// The header and its companions, as received.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub header: &'a str,
    pub source: Option<&'a str>,
    pub batch_seq: Option<&'a str>,
    pub signature_ts: Option<&'a str>,
}

/// A parsed claim: which key to fetch, and what it must verify.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub signature: BatchSignature,
    pub source: String,
    pub batch_seq: i64,
    /// The source's namespace (`namespace/pod`), checked against the key's scope.
    pub namespace: String,
    pub signature_ts: Option<String>,
}

/// Parses the header, `X-Meshaudit-Source` (`namespace/pod`) and
/// `X-Meshaudit-Batch-Seq` (a decimal integer in its plain form, because its
/// text is part of the signed bytes).
pub fn parse_claim(claim: Claim<'_>) -> Result<Parsed, Refusal> {
    let signature =
        BatchSignature::parse(claim.header).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let source = claim
        .source
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Refusal::Malformed("X-Meshaudit-Source is missing".into()))?;
    let namespace = source
        .split_once('/')
        .map(|(ns, _)| ns)
        .filter(|ns| !ns.is_empty())
        .ok_or_else(|| Refusal::Malformed("X-Meshaudit-Source must be namespace/pod".into()))?;
    let seq_text = claim.batch_seq.map(str::trim).unwrap_or("");
    let batch_seq = seq_text
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0 && n.to_string() == seq_text)
        .ok_or_else(|| {
            Refusal::Malformed("X-Meshaudit-Batch-Seq must be a plain decimal integer".into())
        })?;
    Ok(Parsed {
        signature,
        source: source.to_owned(),
        batch_seq,
        namespace: namespace.to_owned(),
        signature_ts: claim.signature_ts.map(|t| t.trim().to_owned()),
    })
}

/// Checks a parsed claim with its key (`None`: unknown) at `now_us`, over the
/// recomputed event hashes in line order.
pub fn check(
    parsed: &Parsed,
    key: Option<&KeyRecord>,
    event_hashes: &[&str],
    now_us: i64,
) -> Result<BatchRecord, Refusal> {
    let keyid = &parsed.signature.keyid;
    let key = key.ok_or_else(|| Refusal::UnknownKey(keyid.clone()))?;
    key.usable(Some(&parsed.namespace), now_us)
        .map_err(|u: Unusable| Refusal::Unusable(keyid.clone(), u.describe()))?;
    let digest = batch_digest_hex(event_hashes.iter().copied())
        .ok_or_else(|| Refusal::BadSignature(keyid.clone()))?;
    let verifier = key
        .key
        .verifier()
        .ok_or_else(|| Refusal::BadSignature(keyid.clone()))?;
    let seq_text = parsed.batch_seq.to_string();
    if !parsed
        .signature
        .verify(&verifier, &parsed.source, &seq_text, &digest)
    {
        return Err(Refusal::BadSignature(keyid.clone()));
    }
    Ok(BatchRecord {
        keyid: keyid.clone(),
        source: parsed.source.clone(),
        batch_seq: parsed.batch_seq,
        signature_ts: parsed.signature_ts.clone(),
        signature: parsed.signature.signature_base64(),
        batch_digest: hex::encode(digest),
        event_hashes: event_hashes.iter().map(|h| (*h).to_owned()).collect(),
    })
}

/// `security` of a per-event Ed25519 event (seed 001): `alg`, `keyid`,
/// `signature`, `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSignature {
    pub keyid: String,
    pub signature: String,
    pub hash: String,
}

/// The Ed25519 `security` of a stored canonical event, if it has one. Cheap
/// for every other event: canonical JSON has no spaces, so the marker is exact.
pub fn ed25519_security(canonical: &[u8]) -> Option<EventSignature> {
    const MARKER: &[u8] = br#""alg":"ed25519""#;
    if !canonical.windows(MARKER.len()).any(|w| w == MARKER) {
        return None;
    }
    let Ok(Value::Object(event)) = parse(canonical) else {
        return None;
    };
    let security = event.get("security")?.as_object()?;
    if security.get("alg")?.as_str()? != "ed25519" {
        return None;
    }
    let text = |k: &str| security.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(EventSignature {
        keyid: text("keyid")?,
        signature: text("signature").unwrap_or_default(),
        hash: text("hash")?,
    })
}

/// Verifies one per-event Ed25519 signature (base64, over the ASCII hex of
/// `security.hash`) against the recomputed hash and its key.
pub fn verify_event_signature(
    sig: &EventSignature,
    recomputed: &str,
    key: Option<&KeyRecord>,
    now_us: i64,
) -> Verification {
    if !ct_eq(&sig.hash, recomputed) {
        return Verification::HashMismatch;
    }
    // An event carries no source to scope by: only the validity window counts.
    let Some(verifier) = key
        .filter(|k| k.in_window(now_us))
        .and_then(|k| k.key.verifier())
    else {
        return Verification::UnknownKey;
    };
    if verifier.verify_base64(sig.hash.as_bytes(), &sig.signature) {
        Verification::Verified
    } else {
        Verification::BadSignature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::registry::NewKey;
    use base64::Engine as _;
    use meshaudit_event::workload_key::SignerKey;

    fn record(signer: &SignerKey, namespaces: &[&str], not_after_us: Option<i64>) -> KeyRecord {
        KeyRecord {
            key: NewKey {
                keyid: signer.name().to_owned(),
                public_key: signer.verifier().public_bytes(),
                namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
                not_before_us: None,
            },
            created_at: String::new(),
            not_after_us,
            retired_at: None,
        }
    }

    fn hashes() -> Vec<String> {
        vec!["11".repeat(32), "22".repeat(32)]
    }

    fn signed(signer: &SignerKey, source: &str, seq: &str, hashes: &[String]) -> String {
        let d = batch_digest_hex(hashes.iter().map(String::as_str)).unwrap();
        BatchSignature::sign(signer, source, seq, &d).header_value()
    }

    fn claim<'a>(header: &'a str, source: &'a str, seq: &'a str) -> Claim<'a> {
        Claim {
            header,
            source: Some(source),
            batch_seq: Some(seq),
            signature_ts: Some("1700000000"),
        }
    }

    #[test]
    fn a_good_batch_becomes_a_record() {
        let k = SignerKey::from_seed("ns1-k1", &[1; 32]).unwrap();
        let h = hashes();
        let header = signed(&k, "ns1/pod-a", "5", &h);
        let parsed = parse_claim(claim(&header, "ns1/pod-a", "5")).unwrap();
        let hs: Vec<&str> = h.iter().map(String::as_str).collect();
        let rec = check(&parsed, Some(&record(&k, &["ns1"], None)), &hs, 0).unwrap();
        assert_eq!(rec.keyid, "ns1-k1");
        assert_eq!(rec.batch_seq, 5);
        assert_eq!(rec.event_hashes, h);
        assert_eq!(rec.signature_ts.as_deref(), Some("1700000000"));
    }

    #[test]
    fn every_refusal_reason() {
        let k = SignerKey::from_seed("ns1-k1", &[1; 32]).unwrap();
        let h = hashes();
        let hs: Vec<&str> = h.iter().map(String::as_str).collect();
        let header = signed(&k, "ns1/pod-a", "5", &h);
        let ok = parse_claim(claim(&header, "ns1/pod-a", "5")).unwrap();
        assert!(matches!(
            check(&ok, None, &hs, 0),
            Err(Refusal::UnknownKey(_))
        ));
        let retired = record(&k, &[], Some(10));
        assert!(matches!(
            check(&ok, Some(&retired), &hs, 11),
            Err(Refusal::Unusable(..))
        ));
        assert!(check(&ok, Some(&retired), &hs, 10).is_ok());
        let scoped = record(&k, &["ns2"], None);
        assert!(matches!(
            check(&ok, Some(&scoped), &hs, 0),
            Err(Refusal::Unusable(..))
        ));
        // One event altered: another hash.
        let altered = [hs[0], &"33".repeat(32)[..]];
        let good = record(&k, &[], None);
        assert!(matches!(
            check(&ok, Some(&good), &altered, 0),
            Err(Refusal::BadSignature(_))
        ));
        // The signature was made for another source or seq.
        let moved = parse_claim(claim(&header, "ns1/pod-b", "5")).unwrap();
        assert!(matches!(
            check(&moved, Some(&good), &hs, 0),
            Err(Refusal::BadSignature(_))
        ));
        // A wrong key under the same name.
        let other = SignerKey::from_seed("ns1-k1", &[2; 32]).unwrap();
        assert!(matches!(
            check(&ok, Some(&record(&other, &[], None)), &hs, 0),
            Err(Refusal::BadSignature(_))
        ));
        for (src, seq) in [
            ("nopod", "5"),
            ("ns1/pod-a", "05"),
            ("ns1/pod-a", "-1"),
            ("", "5"),
        ] {
            assert!(
                matches!(
                    parse_claim(claim(&header, src, seq)),
                    Err(Refusal::Malformed(_))
                ),
                "{src} {seq}"
            );
        }
        assert!(matches!(
            parse_claim(claim("keyid=x", "a/b", "1")),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn per_event_ed25519() {
        let k = SignerKey::from_seed("pub-1", &[4; 32]).unwrap();
        let hash = "ab".repeat(32);
        let sig = base64::engine::general_purpose::STANDARD.encode(k.sign(hash.as_bytes()));
        let canonical = format!(
            r#"{{"id":"x","security":{{"alg":"ed25519","hash":"{hash}","keyid":"pub-1","signature":"{sig}"}}}}"#
        );
        let es = ed25519_security(canonical.as_bytes()).unwrap();
        let rec = record(&k, &[], None);
        assert_eq!(
            verify_event_signature(&es, &hash, Some(&rec), 0),
            Verification::Verified
        );
        assert_eq!(
            verify_event_signature(&es, &hash, None, 0),
            Verification::UnknownKey
        );
        assert_eq!(
            verify_event_signature(&es, &"cd".repeat(32), Some(&rec), 0),
            Verification::HashMismatch
        );
        let other = record(&SignerKey::from_seed("pub-1", &[5; 32]).unwrap(), &[], None);
        assert_eq!(
            verify_event_signature(&es, &hash, Some(&other), 0),
            Verification::BadSignature
        );
        assert!(ed25519_security(br#"{"security":{"hash":"x"}}"#).is_none());
    }
}
