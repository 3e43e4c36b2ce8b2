//! Known answers for the event and batch signatures (computed with
//! `openssl dgst -sha256 -hmac` and Python `hmac`), and mutation tests: any
//! changed byte of a batch's body, timestamp, signature or key is refused,
//! and so is any change to a sealed event that changes what it says.

mod common;

use meshaudit_event::integrity::{
    batch_signature, event_hash, seal, sha256_hex, sign_hash, verify_batch_signature, verify_event,
    EventKeys, Verification,
};
use meshaudit_event::{canonical, parse, Schema};

const SECRET: &[u8] = b"s3cret";
const TS: &str = "1700000000";
const BODY: &[u8] = b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n";

#[test]
fn batch_signature_known_answers() {
    // printf '%s' '1700000000.{"id":"1"}' | openssl dgst -sha256 -hmac 's3cret'
    assert_eq!(
        batch_signature(SECRET, TS, br#"{"id":"1"}"#),
        "sha256=2b9dee6c893e4bf012ad34ee7b89d492b9567b4f47740ccbf0f161ba3717dc08"
    );
    // python3: hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert_eq!(
        batch_signature(SECRET, TS, BODY),
        "sha256=239167f288a683198a416baaf648f969358662381403c408e447c3656325726b"
    );
    // A non-ASCII secret is its UTF-8 bytes.
    assert_eq!(
        batch_signature("clé-ü-🔑".as_bytes(), "1763940000", BODY),
        "sha256=4d0ad9a1610ca5b43588244d4bc0a8329a506886d14ae4cd804074216aca2191"
    );
    // An empty body.
    assert_eq!(
        batch_signature(SECRET, TS, b""),
        "sha256=21948100f1d7a89f3338f6b1106fc4f7a702fbe1493b833a3382f80193bde3fe"
    );
    // Arbitrary bytes (a gzip body is signed as sent, not as text).
    let all_bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(
        batch_signature(b"k", "1", &all_bytes),
        "sha256=e4cc76db4b89eeaf21b509e33282f4f0af90668d807ead4797fac91f4dd85110"
    );
}

#[test]
fn event_signature_known_answer() {
    // printf '%s' '{}' | sha256sum; printf '%s' <hash> | openssl dgst -sha256 -hmac 's3cret'
    let hash = sha256_hex(b"{}");
    assert_eq!(
        hash,
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(
        sign_hash(SECRET, &hash),
        "1642e72ffcfaf62727f0be32779620276cfe0e23c3bb0159d5522d7b891d2ffc"
    );
    let mut v = parse(b"{}").unwrap();
    assert_eq!(seal(v.as_object_mut().unwrap(), Some(SECRET), None), hash);
    assert_eq!(
        String::from_utf8(canonical(&v)).unwrap(),
        format!(
            r#"{{"security":{{"hash":"{hash}","signature":"1642e72ffcfaf62727f0be32779620276cfe0e23c3bb0159d5522d7b891d2ffc"}}}}"#
        )
    );
}

/// Every way of changing one byte: each other value of that byte.
fn each_changed_byte(original: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..original.len()).flat_map(move |i| {
        (0..=255u8)
            .filter(move |b| *b != original[i])
            .map(move |b| {
                let mut m = original.to_vec();
                m[i] = b;
                m
            })
    })
}

#[test]
fn batch_mutations_are_refused() {
    let secrets = vec![b"older".to_vec(), SECRET.to_vec()];
    let sig = batch_signature(SECRET, TS, BODY);
    assert!(verify_batch_signature(&secrets, TS, BODY, &sig));

    for body in each_changed_byte(BODY) {
        assert!(
            !verify_batch_signature(&secrets, TS, &body, &sig),
            "body {body:?}"
        );
    }
    // Dropping or adding a byte, too.
    assert!(!verify_batch_signature(
        &secrets,
        TS,
        &BODY[..BODY.len() - 1],
        &sig
    ));
    assert!(!verify_batch_signature(
        &secrets,
        TS,
        &[BODY, b"\n"].concat(),
        &sig
    ));

    for ts in each_changed_byte(TS.as_bytes()) {
        // A timestamp header is text; bytes that are not UTF-8 cannot reach here.
        if let Ok(ts) = String::from_utf8(ts) {
            assert!(
                !verify_batch_signature(&secrets, &ts, BODY, &sig),
                "ts {ts:?}"
            );
        }
    }
    assert!(!verify_batch_signature(&secrets, "0", BODY, &sig));

    let mut checked = 0;
    for header in each_changed_byte(sig.as_bytes()) {
        let Ok(header) = String::from_utf8(header) else {
            continue;
        };
        // Whitespace around a header value is not part of it (HTTP trims it);
        // a space in place of the last digit still leaves 63 digits.
        assert!(
            !verify_batch_signature(&secrets, TS, BODY, &header),
            "signature {header:?}"
        );
        checked += 1;
    }
    assert!(checked > 71 * 100);

    for secret in each_changed_byte(SECRET) {
        assert!(
            !verify_batch_signature(std::slice::from_ref(&secret), TS, BODY, &sig),
            "secret {secret:?}"
        );
    }
    assert!(!verify_batch_signature(&[], TS, BODY, &sig));
    assert!(!verify_batch_signature(
        &[b"s3cre".to_vec()],
        TS,
        BODY,
        &sig
    ));
}

/// What a sealed event proves: its content (all but `security`), its hash and
/// its signature.
fn what_is_proved(v: &meshaudit_event::Value) -> (Vec<u8>, Option<&str>, Option<&str>) {
    let mut content = Vec::new();
    if let Some(map) = v.as_object() {
        meshaudit_event::canonical::write_object(map, Some("security"), &mut content);
    }
    let field = |name| {
        v.pointer(&["security", name])
            .and_then(meshaudit_event::Value::as_str)
    };
    (content, field("hash"), field("signature"))
}

#[test]
fn event_mutations_are_refused() {
    let (event, key) = common::fixed_events().remove(0);
    let mut v = event.to_value(Schema::Meshaudit1);
    seal(v.as_object_mut().unwrap(), Some(key.as_bytes()), Some("k1"));
    let sealed = canonical(&v);
    let keys = EventKeys::new([("k1".to_owned(), key.as_bytes().to_vec())]);

    let (mut refused, mut same_content, mut unparsable) = (0, 0, 0);
    // Every position, a few replacement bytes each (all 256 would be ~300k parses).
    for i in 0..sealed.len() {
        for b in [b'0', b'a', b'A', b'"', b'\\', b' ', b'}', 0x7f, 0xc3] {
            if sealed[i] == b {
                continue;
            }
            let mut m = sealed.clone();
            m[i] = b;
            let Ok(changed) = parse(&m) else {
                unparsable += 1;
                continue;
            };
            let Some(map) = changed.as_object() else {
                unparsable += 1;
                continue;
            };
            let verdict = verify_event(map, &event_hash(map), &keys);
            let keyid = changed.pointer(&["security", "keyid"]);
            let same_key =
                keyid.is_none() || keyid.and_then(meshaudit_event::Value::as_str) == Some("k1");
            if what_is_proved(&changed) == what_is_proved(&v) && same_key {
                // The same event written another way (say `\u00e9` as `\u00E9`),
                // or a change to `security` outside hash and signature (a mangled
                // `keyid` name: every key is then tried): it still verifies.
                assert_eq!(verdict, Verification::Verified);
                same_content += 1;
            } else {
                assert_ne!(
                    verdict,
                    Verification::Verified,
                    "accepted {}",
                    String::from_utf8_lossy(&m)
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused > 1000 && unparsable > 1000,
        "{refused} refused, {unparsable} unparsable"
    );
    assert!(same_content > 0, "no equivalent re-encoding was tried");

    // Any changed byte of the key.
    let map = v.as_object().unwrap();
    let hash = event_hash(map);
    for k in each_changed_byte(key.as_bytes()) {
        let keys = EventKeys::new([("k1".to_owned(), k)]);
        assert_eq!(verify_event(map, &hash, &keys), Verification::BadSignature);
    }
}

/// The worked example of `docs/protocol.md`: if this changes, change the doc.
#[test]
fn protocol_doc_worked_example() {
    use meshaudit_event::schema::{format_timestamp, new_uuid_v4, HttpEvent, HttpSection};
    let raw_body = br#"{"qty": 1E2, "price": 1.10}"#;
    let mut e = HttpEvent::new(
        new_uuid_v4([0xab; 16]),
        format_timestamp(1_795_478_400_000_000),
    );
    e.httpmethod = Some("POST".into());
    e.httpurl = Some("http://orders.shop/orders".into());
    e.subject.userid = Some("jürgen".into());
    e.kubernetes.namespacename = Some("shop".into());
    e.kubernetes.podname = Some("orders-1".into());
    e.action.name = Some("/orders".into());
    e.action.method = Some("POST".into());
    e.action.severity = Some("INFO".into());
    e.action.status = Some("SUCCESS".into());
    e.eventdata.requestpayload = Some(parse(raw_body).unwrap());
    e.eventdata.metadata.requesttruncated = Some(false);
    e.eventdata.metadata.requestbodybytes = Some(raw_body.len() as u64);
    e.eventdata.metadata.requestbodysha256 = Some(sha256_hex(raw_body));
    e.http = Some(HttpSection {
        statuscode: 201,
        durationms: 3,
        requestbytes: raw_body.len() as u64,
        protocol: Some("HTTP/1.1".into()),
        ..HttpSection::default()
    });
    // The mobius-1 shape of the same event: what mobius's model keeps of it.
    let mobius = String::from_utf8(canonical(&e.to_value(Schema::Mobius1))).unwrap();
    assert_eq!(
        mobius,
        concat!(
            r#"{"action":{"method":"POST","name":"/orders","severity":"INFO","status":"SUCCESS"},"#,
            r#""eventdata":{"metadata":{"issensitive":false},"requestpayload":{"price":1.1,"qty":100.0}},"#,
            r#""httpmethod":"POST","httpurl":"http://orders.shop/orders","id":"abababab-abab-4bab-abab-abababababab","#,
            r#""kubernetes":{"namespacename":"shop","podname":"orders-1"},"schemaid":"meshaudit.http/v1","#,
            r#""specversion":"1.0","subject":{"userid":"j\u00fcrgen"},"timestamp":"2026-11-24T00:00:00.000000+00:00"}"#
        )
    );
    assert_eq!(
        sha256_hex(mobius.as_bytes()),
        "5c471b3f079b5b759ac42a693b6ab888441e60421ff30828707a562bf5255781"
    );
    let mut v = e.to_value(Schema::Meshaudit1);
    let unsealed = String::from_utf8(canonical(&v)).unwrap();
    let hash = seal(v.as_object_mut().unwrap(), Some(b"event-key"), Some("k1"));
    let line = String::from_utf8(canonical(&v)).unwrap() + "\n";
    let batch = batch_signature(b"batch-secret", "1795478400", line.as_bytes());
    assert_eq!(
        unsealed,
        include_str!("../testdata/doc_example_unsealed.json")
    );
    assert_eq!(line, include_str!("../testdata/doc_example_batch.ndjson"));
    assert_eq!(
        hash,
        "5e3ab91877e6dd9299f6171c87a6f91e4e342d81e1eacabc4660c240df0ee465"
    );
    assert_eq!(
        batch,
        "sha256=fbca1748bfafc3bf841f57b112e789db4b1be08d0b234c652bda6777dcb8a632"
    );
}
