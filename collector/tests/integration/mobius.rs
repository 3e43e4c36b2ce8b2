//! The reference peer: events built and sealed by mobius-auditlog-py 1.1
//! (from the project's `.venv`, installed by `make setup`), which carry no
//! `keyid`, are checked with the key named `default`; a tampered one is
//! stored as `hash_mismatch`, one sealed with another key as `bad_signature`.

use crate::support::{http, temp_sqlite, CollectorProcess, API_KEY, SECRET};
use std::path::PathBuf;

const SCRIPT: &str = r#"
import hashlib, hmac, json, sys, time, urllib.request
from mobius_auditlog import AuditLogBuilder, seal

url, api_key, secret = sys.argv[1], sys.argv[2], sys.argv[3]

def event(name, key):
    e = (AuditLogBuilder().envelope(tenantid="t-mobius", schemaid="orders/v1")
         .subject(userid="alice", type="user").action(name=name, method="POST", severity="INFO", status="SUCCESS")
         .event_data(requestpayload={"qty": 2, "note": "caf\u00e9"}).build())
    seal(e, key)
    return json.loads(e.to_json())

good = event("/orders", "mobius-key")
tampered = event("/orders/2", "mobius-key")
tampered["action"]["name"] = "/orders/3"
other_key = event("/orders/4", "not-the-key")
body = "".join(json.dumps(e) + "\n" for e in [good, tampered, other_key]).encode()
ts = str(int(time.time()))
sig = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
req = urllib.request.Request(url, data=body, method="POST", headers={
    "Content-Type": "application/x-ndjson", "X-API-Key": api_key,
    "X-Signature-Ts": ts, "X-Signature": sig})
print(urllib.request.urlopen(req).read().decode())
print(json.dumps([good["id"], tampered["id"], other_key["id"]]))
"#;

fn venv_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import mobius_auditlog"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs mobius-auditlog-py 1.1.0 in the project's .venv: run `make setup` \
         (pip install --no-deps mobius-auditlog-py==1.1.0 pydantic starlette into .venv)"
    );
    python
}

#[tokio::test]
async fn mobius_events_without_keyid_verify_with_the_default_key() {
    let python = venv_python();
    let db = temp_sqlite();
    let collector = CollectorProcess::start(
        &db.url,
        &[(
            "AUDIT_RECEIVER_EVENT_KEYS",
            "filter-1=abc,default=mobius-key",
        )],
    )
    .await;
    let url = format!("http://{}/audit", collector.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", SCRIPT, &url, API_KEY, SECRET])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let answer: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");
    let ids: Vec<String> = serde_json::from_str(lines.next().unwrap()).unwrap();
    let expect = [
        (&ids[0], serde_json::json!(true), serde_json::Value::Null),
        (
            &ids[1],
            serde_json::json!(false),
            serde_json::json!("hash_mismatch"),
        ),
        (
            &ids[2],
            serde_json::json!(false),
            serde_json::json!("bad_signature"),
        ),
    ];
    for (id, verified, reason) in expect {
        let item = http(collector.addr, "GET", &format!("/v1/events/{id}"), &[], b"")
            .await
            .unwrap()
            .json();
        assert_eq!(item["verified"], verified, "{item}");
        assert_eq!(item["verify_reason"], reason, "{item}");
        assert_eq!(item["event"]["tenantid"], "t-mobius");
    }
    let metrics = String::from_utf8(
        http(collector.addr, "GET", "/metrics", &[], b"")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("audit_events_received_total{source=\"mobius\"} 3"),
        "{metrics}"
    );
}
