//! Seed 000's smoke test, run as the shell script it is (its receiver env,
//! its body, headers, curl and python signature recipe) against `POST /audit`
//! of the real collector binary. The only change: `BODY`, `TS` and
//! `HMAC_SECRET` are exported, because the python snippet reads them from
//! the environment; the same curl is then run a second time.

use crate::support::{temp_sqlite, CollectorProcess};

const SCRIPT: &str = r#"
# minimal happy-path payload
export BODY='{"event":"ping","request_id":"demo-1","direction":"ingress","ts":'$(date +%s)'}'
export TS="$(date +%s)"
SIG="sha256=$(python - <<'PY'
import os,sys,hmac,hashlib
secret=os.environ["HMAC_SECRET"].encode()
ts=os.environ["TS"].encode()
body=os.environ["BODY"].encode()
print(hmac.new(secret, ts+b"."+body, hashlib.sha256).hexdigest())
PY
)"
curl -i -X POST "$FORWARD_URL" \
  -H "Content-Type: application/json" \
  -H "X-API-Key: $FORWARD_KEY" \
  -H "X-Signature-Ts: $TS" \
  -H "X-Signature: $SIG" \
  -H "X-Idempotency-Key: demo-key-1" \
  --data "$BODY"
echo
echo "=== the very same bytes again ==="
curl -i -X POST "$FORWARD_URL" \
  -H "Content-Type: application/json" \
  -H "X-API-Key: $FORWARD_KEY" \
  -H "X-Signature-Ts: $TS" \
  -H "X-Signature: $SIG" \
  -H "X-Idempotency-Key: demo-key-1" \
  --data "$BODY"
"#;

fn status_and_body(part: &str) -> (u16, serde_json::Value) {
    let status = part
        .lines()
        .find(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in:\n{part}"));
    let body = part
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON body in:\n{part}"));
    (
        status,
        serde_json::from_str(body.trim()).expect("JSON answer"),
    )
}

#[tokio::test]
async fn seed_000_smoke_test_against_post_audit() {
    for tool in ["bash", "curl", "python"] {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "the seed 000 smoke test needs `{tool}` on PATH: install it (Debian: apt-get install -y {tool})");
    }
    let db = temp_sqlite();
    // The receiver env of seed 000, verbatim.
    let collector = CollectorProcess::start(
        &db.url,
        &[
            ("AUDIT_RECEIVER_REQUIRE_API_KEY", "1"),
            ("AUDIT_RECEIVER_API_KEY", "YOUR_SHARED_KEY"),
            ("AUDIT_RECEIVER_REQUIRE_SIGNATURE", "1"),
            ("AUDIT_RECEIVER_SIGNING_SECRET", "YOUR_SHARED_HMAC_SECRET"),
            ("AUDIT_RECEIVER_ENFORCE_TS", "1"),
            ("AUDIT_RECEIVER_TS_SKEW_SEC", "300"),
            ("AUDIT_RECEIVER_IDEMP_TTL_SEC", "60"),
        ],
    )
    .await;
    let script = db.dir.path().join("smoke.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let addr = collector.addr;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(&script)
            .env("FORWARD_URL", format!("http://{addr}/audit"))
            .env("FORWARD_KEY", "YOUR_SHARED_KEY")
            .env("HMAC_SECRET", "YOUR_SHARED_HMAC_SECRET")
            .output()
            .expect("run bash")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (first, second) = stdout
        .split_once("=== the very same bytes again ===")
        .expect("two answers");
    let (status, body) = status_and_body(first);
    assert_eq!(status, 200, "{first}");
    assert_eq!(body["deduped"], false, "{first}");
    assert_eq!(body["accepted"], 1, "{first}");
    let (status, body) = status_and_body(second);
    assert_eq!(status, 200, "{second}");
    assert_eq!(body["deduped"], true, "{second}");

    let page = crate::support::http(addr, "GET", "/v1/events?limit=1000", &[], b"")
        .await
        .unwrap()
        .json();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "stored once: {page}");
    assert_eq!(events[0]["event"]["event"], "ping");
    assert_eq!(events[0]["event"]["request_id"], "demo-1");
    assert!(events[0]["id"].as_str().unwrap().starts_with("sha256:"));
}
