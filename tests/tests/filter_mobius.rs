//! `schema: "mobius-1"`: the events a real Envoy ships pass the reference
//! peer's own check, `mobius_auditlog.security.verify()` of mobius-auditlog-py
//! 1.1.0, after its pydantic model re-validated them.

mod filter_support;

use filter_support::*;
use meshaudit_e2e::collector::TEST_SIGNING_SECRET;
use meshaudit_e2e::http_client;
use serde_json::json;
use std::time::Duration;

const VERIFY: &str = r#"
import json, sys
from mobius_auditlog.models import AuditLogEvent
from mobius_auditlog.security import verify
key = sys.argv[1] if len(sys.argv) > 1 else None
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    raw = json.loads(line)
    event = AuditLogEvent.model_validate(raw)
    print("ok" if verify(event, KEY) else "FAIL " + line)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobius_events_pass_mobius_verify() -> anyhow::Result<()> {
    let mut s =
        Stack::start(json!({"schema": "mobius-1", "capture_bodies": true, "event_key_id": "k1"}))
            .await?;
    let client = http_client();
    client
        .post(s.envoy.url("/orders?x=1"))
        .header("content-type", "application/json")
        .header("tenantId", "acme")
        .header("actionLogUserId", "u-1")
        .body(r#"{"item":"b\u00fcch","n":1.5,"deep":{"password":"p","list":[1,{"k":null}]}}"#)
        .send()
        .await?;
    client.get(s.envoy.url("/status/503")).send().await?;
    client.get(s.envoy.url("/local-reply/q")).send().await?;
    client
        .post(s.envoy.url("/echo"))
        .header("content-type", "text/plain")
        .body("not json \u{fffd}")
        .send()
        .await?;
    let events = s
        .collector
        .wait_for_events(4, Duration::from_secs(20))
        .await?;
    assert_eq!(events.len(), 4);
    let mut ndjson = Vec::new();
    for e in &events {
        assert!(e.get("http").is_none(), "no meshaudit extension: {e}");
        assert!(
            e["security"].get("keyid").is_none(),
            "mobius has no keyid: {e}"
        );
        assert!(e.get("schemaid").is_some(), "{e}");
        ndjson.extend_from_slice(serde_json::to_string(e)?.as_bytes());
        ndjson.push(b'\n');
    }
    let script = VERIFY.replace("KEY", &format!("{TEST_SIGNING_SECRET:?}"));
    let out = run_python(&script, &ndjson)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["ok"; 4], "mobius verify():\n{out}");
    s.assert_healthy();
    Ok(())
}
