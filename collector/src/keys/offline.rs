//! `verify-offline --batch-key VKEY --batch FILE` (SPEC §10): with nothing
//! but the workload's verifier key, check that an event belongs to a batch
//! record and that the workload's key signed that batch. Pure.

use super::batch::BatchRecord;
use meshaudit_event::integrity::{batch_digest_hex, event_hash};
use meshaudit_event::value::Map;
use meshaudit_event::workload_key::{BatchSignature, VerifierKey};

/// Why the check could not pass: a failed check (exit 1) or unreadable input (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineError {
    Invalid(String),
    Unreadable(String),
}

/// The batch record from `--batch`: the `batch` object itself, or a whole
/// `GET /v1/events/{id}` answer holding one.
pub fn batch_from_json(v: &serde_json::Value) -> Result<BatchRecord, OfflineError> {
    let b = if v.get("batch").is_some() {
        &v["batch"]
    } else {
        v
    };
    let text = |k: &str| {
        b[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| OfflineError::Unreadable(format!("the batch record has no {k:?}")))
    };
    let event_hashes = b["event_hashes"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|h| h.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            OfflineError::Unreadable("the batch record has no \"event_hashes\"".into())
        })?;
    Ok(BatchRecord {
        keyid: text("keyid")?,
        source: text("source")?,
        batch_seq: b["batch_seq"].as_i64().ok_or_else(|| {
            OfflineError::Unreadable("the batch record has no \"batch_seq\"".into())
        })?,
        signature_ts: b["signature_ts"].as_str().map(str::to_owned),
        signature: text("signature")?,
        batch_digest: b["batch_digest"].as_str().unwrap_or_default().to_owned(),
        event_hashes,
    })
}

/// `--batch-key VKEY` (a key text or `@PATH`) and `--batch FILE` read, then [`check`].
pub fn check_files(
    event: &Map,
    key: &str,
    batch_path: &std::path::Path,
) -> Result<String, OfflineError> {
    let key_text = crate::log::config::read_key_text(key).map_err(OfflineError::Unreadable)?;
    let text = std::fs::read_to_string(batch_path).map_err(|e| {
        OfflineError::Unreadable(format!("cannot read {}: {e}", batch_path.display()))
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        OfflineError::Unreadable(format!("{} is not JSON: {e}", batch_path.display()))
    })?;
    check(event, &batch_from_json(&json)?, &key_text)
}

/// Checks `event` (as stored) against `batch` with the verifier key text.
/// On success, the line `verify-offline` prints.
pub fn check(event: &Map, batch: &BatchRecord, key_text: &str) -> Result<String, OfflineError> {
    let key = VerifierKey::parse(key_text)
        .map_err(|e| OfflineError::Unreadable(format!("--batch-key: {e}")))?;
    if key.name() != batch.keyid {
        return Err(OfflineError::Invalid(format!(
            "batch signature: the batch was signed by {:?}, the key given is {:?}",
            batch.keyid,
            key.name()
        )));
    }
    let hash = event_hash(event);
    if !batch.event_hashes.contains(&hash) {
        return Err(OfflineError::Invalid(format!(
            "batch membership: the event hashes to {hash}, which is not in the batch record"
        )));
    }
    let digest =
        batch_digest_hex(batch.event_hashes.iter().map(String::as_str)).ok_or_else(|| {
            OfflineError::Unreadable("the batch record's event_hashes are not 64 hex digits".into())
        })?;
    let header = format!("keyid={}, sig={}", batch.keyid, batch.signature);
    let sig = BatchSignature::parse(&header)
        .map_err(|e| OfflineError::Unreadable(format!("the batch record's signature: {e}")))?;
    if !sig.verify(&key, &batch.source, &batch.batch_seq.to_string(), &digest) {
        return Err(OfflineError::Invalid(format!(
            "batch signature: does not verify with {} over the batch's event hashes",
            key.name()
        )));
    }
    Ok(format!(
        "batch signature by {} ({} batch {}, {} events, this one included)",
        key.name(),
        batch.source,
        batch.batch_seq,
        batch.event_hashes.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaudit_event::value::{parse, Value};
    use meshaudit_event::workload_key::SignerKey;

    fn event(json: &str) -> Map {
        match parse(json.as_bytes()) {
            Ok(Value::Object(m)) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn an_event_checks_against_its_signed_batch_and_nothing_else() {
        let k = SignerKey::from_seed("shop-k1", &[9; 32]).unwrap();
        let (a, b) = (event(r#"{"id":"a"}"#), event(r#"{"id":"b"}"#));
        let hashes = vec![event_hash(&a), event_hash(&b)];
        let d = batch_digest_hex(hashes.iter().map(String::as_str)).unwrap();
        let sig = BatchSignature::sign(&k, "shop/pod", "4", &d);
        let answer = serde_json::json!({"id": "a", "batch": {
            "keyid": "shop-k1", "source": "shop/pod", "batch_seq": 4,
            "signature": sig.signature_base64(), "event_hashes": hashes}});
        let batch = batch_from_json(&answer).unwrap();
        let vk = k.verifier().to_text();
        assert!(check(&a, &batch, &vk).unwrap().contains("shop-k1"));
        assert!(check(&b, &batch, &vk).is_ok());
        let c = event(r#"{"id":"c"}"#);
        assert!(
            matches!(check(&c, &batch, &vk), Err(OfflineError::Invalid(m)) if m.contains("membership"))
        );
        let other = SignerKey::from_seed("shop-k1", &[8; 32])
            .unwrap()
            .verifier()
            .to_text();
        assert!(
            matches!(check(&a, &batch, &other), Err(OfflineError::Invalid(m)) if m.contains("batch signature"))
        );
        let mut moved = batch.clone();
        moved.batch_seq = 5;
        assert!(matches!(
            check(&a, &moved, &vk),
            Err(OfflineError::Invalid(_))
        ));
        assert!(matches!(
            check(&a, &batch, "garbage"),
            Err(OfflineError::Unreadable(_))
        ));
    }
}
