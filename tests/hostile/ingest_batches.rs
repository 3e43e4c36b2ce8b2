//! Issue 17 items 1, 3 and 7 and the digest scheme, replayed against the
//! release binary: one bad line is named (not a lost batch), a keyed sender
//! cannot amplify 4 MiB into a gigabyte, derived ids cannot be squatted, ids
//! are stored exactly, and `X-Signature-Scheme: digest` signs the hashes the
//! collector recomputes.

use crate::ingest_connections::rss_kib;
use crate::support::{http, now_secs, post_signed, temp_sqlite, Collector, API_KEY, SECRET};
use meshaudit_event::integrity::{batch_digest_hex, batch_signature, event_hash};
use meshaudit_event::value::{parse, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Item 1: a body the filter nested 127 levels deep, 3 levels further inside
/// the event, is one malformed line; the answer names it, the rest is kept
/// when the batch is re-sent without it.
#[tokio::test]
async fn one_too_deep_line_is_named() {
    let db = temp_sqlite();
    let c = Collector::start(&db.url, &[]).await;
    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let bad =
        format!("{{\"id\":\"deep\",\"eventdata\":{{\"requestpayload\":{{\"_value\":{deep}}}}}}}");
    let mut batch = crate::support::events("ok", 3);
    batch.extend_from_slice(bad.as_bytes());
    batch.push(b'\n');
    batch.extend_from_slice(&crate::support::events("more", 2));
    let r = post_signed(c.addr, &batch, None).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "malformed");
    assert_eq!(r.json()["line"], 4, "{}", r.json());
    let mut without: Vec<&[u8]> = batch.split(|&b| b == b'\n').collect();
    without.remove(3);
    let r = post_signed(c.addr, &without.join(&b'\n'), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["accepted"], 5);
}

/// Item 3: 4 MiB of `{}` lines was 1.4M events and +750 MB of RSS; now it
/// is refused by count before parsing, and concurrent bodies are bounded.
#[tokio::test]
async fn a_keyed_sender_cannot_amplify_memory() {
    let db = temp_sqlite();
    let c = Collector::start(
        &db.url,
        &[("MESHAUDIT_MAX_INFLIGHT_BYTES", "10485760")], // 10 MiB: two 4 MiB bodies
    )
    .await;
    let pid = c.child.id();
    let before = rss_kib(pid);
    let body = "{}\n".repeat((4 << 20) / 3).into_bytes();
    let r = post_signed(c.addr, &body, None).await.unwrap();
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("MESHAUDIT_MAX_BATCH_EVENTS"));
    let r = post_signed(c.addr, b"[{},{}]", None).await.unwrap();
    assert_eq!(r.status, 400, "a JSON array sent as NDJSON is one bad line");
    let after = rss_kib(pid);
    eprintln!("RSS around a 4 MiB batch of `{{}}` lines: {before} KiB -> {after} KiB");
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} KiB to {after} KiB for one 4 MiB batch of tiny events"
    );

    // Two keyed senders hold 4 MiB each with bodies they do not finish; a
    // third is told to come back (503 + Retry-After) instead of growing the heap.
    let ts = now_secs().to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nX-API-Key: {API_KEY}\r\nX-Signature-Ts: {ts}\r\n\r\n{{",
            4 << 20
        );
        s.write_all(head.as_bytes()).await.unwrap();
        held.push(s);
    }
    let mut third = None;
    for _ in 0..200 {
        let (status, answer) = post_refusable(c.addr, 3 << 20).await;
        if status == 503 {
            third = Some(answer);
            break;
        }
        // The two holders may not have been admitted yet.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answer = third.expect("503 once 8 of 10 MiB are held");
    assert!(answer.contains("\"overloaded\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    drop(held);
    // Released: a normal batch goes through again.
    let mut ok = false;
    for _ in 0..200 {
        let r = post_signed(c.addr, &crate::support::events("after", 2), None)
            .await
            .unwrap();
        if r.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ok, "bytes in flight are released when the holders go");
}

/// Item 7: an explicit `sha256:` id must be the event's own hash (it could
/// pre-empt a predictable id-less event); NUL in an id is refused instead of
/// colliding with U+FFFD in the id column.
#[tokio::test]
async fn derived_ids_cannot_be_squatted() {
    let db = temp_sqlite();
    let c = Collector::start(&db.url, &[]).await;
    let ping = br#"{"event":"ping","request_id":"demo-1","direction":"ingress","ts":1}"#;
    let Ok(Value::Object(m)) = parse(ping) else {
        unreachable!()
    };
    let derived = format!("sha256:{}", event_hash(&m));
    let squat = format!("{{\"id\":\"{derived}\",\"event\":\"squat\"}}\n");
    let r = post_signed(c.addr, squat.as_bytes(), None).await.unwrap();
    assert_eq!(
        (r.status, r.json()["line"].clone()),
        (400, 1.into()),
        "{}",
        r.json()
    );
    let mut body = ping.to_vec();
    body.push(b'\n');
    let r = post_signed(c.addr, &body, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["accepted"],
        1,
        "the victim is stored under its own id"
    );
    let got = c.admin_get(&format!("/v1/events/{derived}")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["event"]["event"], "ping");

    let r = post_signed(c.addr, b"{\"id\":\"x\\u0000y\"}\n", None)
        .await
        .unwrap();
    assert_eq!((r.status, r.json()["line"].clone()), (400, 1.into()));
    let r = post_signed(c.addr, b"{\"id\":\"x\\ufffdy\"}\n", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// SPEC §10: `X-Signature-Scheme: digest` over the recomputed hashes.
#[tokio::test]
async fn digest_scheme_against_the_binary() {
    let db = temp_sqlite();
    let c = Collector::start(&db.url, &[]).await;
    let body = crate::support::events("dg", 3);
    let hashes: Vec<String> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match parse(l) {
            Ok(Value::Object(m)) => event_hash(&m),
            _ => unreachable!(),
        })
        .collect();
    let digest = batch_digest_hex(hashes.iter().map(String::as_str)).unwrap();
    let ts = now_secs().to_string();
    let sig = batch_signature(SECRET.as_bytes(), &ts, hex_lower(&digest).as_bytes());
    let send = |scheme: &'static str, sig: String| {
        let ts = ts.clone();
        let body = body.clone();
        async move {
            http(
                c.addr,
                "POST",
                "/v1/events",
                &[
                    ("Content-Type", "application/x-ndjson"),
                    ("X-API-Key", API_KEY),
                    ("X-Signature-Ts", &ts),
                    ("X-Signature", &sig),
                    ("X-Signature-Scheme", scheme),
                ],
                &body,
            )
            .await
            .unwrap()
        }
    };
    let r = send("sha1", sig.clone()).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, "signature".into())
    );
    let raw_sig = batch_signature(SECRET.as_bytes(), &ts, &body);
    let r = send("digest", raw_sig).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, "signature".into())
    );
    let r = send("digest", sig).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], 3);
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed keyed POST announcing `len` bytes, whose body may be refused
/// before it is sent (the collector answers and closes; a write error then is
/// expected): the status and the raw answer.
async fn post_refusable(addr: std::net::SocketAddr, len: usize) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let body = vec![b' '; len];
    let ts = now_secs().to_string();
    let sig = batch_signature(SECRET.as_bytes(), &ts, &body);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len}\r\nX-API-Key: {API_KEY}\r\nX-Signature-Ts: {ts}\r\nX-Signature: {sig}\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await;
    let answer = String::from_utf8_lossy(&raw).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}
