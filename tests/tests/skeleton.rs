//! The walking skeleton, every hop real: requests through a real Envoy running the built
//! filter reach the upstream, and exactly one signed event per request lands in the collector
//! with the fields the skeleton promises, the pod name coming from the environment via WASI.

use meshaudit_e2e::bootstrap::COLLECTOR_CLUSTER;
use meshaudit_e2e::collector::{TEST_API_KEY, TEST_SIGNING_SECRET};
use meshaudit_e2e::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn is_rfc3339_micros_utc(ts: &str) -> bool {
    // 2026-11-24T03:04:05.123456+00:00
    let b = ts.as_bytes();
    b.len() == 32
        && ts.ends_with("+00:00")
        && b[10] == b'T'
        && b[19] == b'.'
        && b[20..26].iter().all(u8::is_ascii_digit)
        && b[..4].iter().all(u8::is_ascii_digit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_request_through_real_envoy() -> anyhow::Result<()> {
    let collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let mut opts = BootstrapOptions::new(free_port()?, free_port()?, upstream.port, collector.port);
    opts.filter = FilterSetup::Meshaudit {
        wasm: Envoy::wasm()?,
        plugin_config: json!({
            "collector_cluster": COLLECTOR_CLUSTER,
            "api_key": TEST_API_KEY,
            "signing_secret": TEST_SIGNING_SECRET,
            "flush_interval_ms": 200
        }),
        host_env_keys: vec!["POD_NAME".into(), "POD_NAMESPACE".into()],
        key_values: vec![],
    };
    let mut envoy = Envoy::start(
        &opts,
        &[("POD_NAME", "orders-7f9c"), ("POD_NAMESPACE", "shop")],
    )
    .await?;
    let client = http_client();

    // (method, path as sent, expected status, expected action.name)
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/orders/42", 200, "/orders/42"),
        ("POST", "/orders", 200, "/orders"),
        ("PUT", "/status/404", 404, "/status/404"),
        ("DELETE", "/status/503", 503, "/status/503"),
        ("PATCH", "/items?q=1&x=y", 200, "/items"),
        ("GET", "/local-reply/x", 404, "/local-reply/x"),
    ];
    for (method, path, status, _) in cases {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = client.request(m, envoy.url(path));
        if *method == "POST" {
            req = req
                .header("content-type", "application/json")
                .body(r#"{"item":"book"}"#);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), *status, "{method} {path}");
    }
    assert_eq!(
        upstream.requests().len(),
        cases.len() - 1,
        "the local reply never reaches the upstream"
    );

    let items = {
        collector
            .wait_for_events(cases.len(), Duration::from_secs(20))
            .await?;
        collector.items().await?
    };
    assert_eq!(
        items.len(),
        cases.len(),
        "exactly one event per request: {items:#?}"
    );

    let mut ids = HashSet::new();
    for (method, path, status, name) in cases {
        let matching: Vec<&Value> = items
            .iter()
            .filter(|i| {
                i["event"]["action"]["name"] == *name && i["event"]["httpmethod"] == *method
            })
            .collect();
        assert_eq!(matching.len(), 1, "{method} {path}: {items:#?}");
        let item = matching[0];
        let e = &item["event"];
        assert!(
            ids.insert(e["id"].as_str().unwrap_or_default().to_string()),
            "ids repeat"
        );
        assert_eq!(e["id"].as_str().map(str::len), Some(36), "uuid id: {e}");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["schemaid"], "meshaudit.http/v1");
        assert!(
            is_rfc3339_micros_utc(e["timestamp"].as_str().unwrap_or_default()),
            "timestamp: {e}"
        );
        assert_eq!(e["action"]["method"], *method);
        assert_eq!(e["http"]["statuscode"], *status);
        let (sev, st) = match status {
            500.. => ("ERROR", "FAILURE"),
            400.. => ("WARNING", "FAILURE"),
            _ => ("INFO", "SUCCESS"),
        };
        assert_eq!(e["action"]["severity"], sev, "{e}");
        assert_eq!(e["action"]["status"], st, "{e}");
        assert_eq!(e["kubernetes"]["podname"], "orders-7f9c");
        assert_eq!(e["kubernetes"]["namespacename"], "shop");
        assert_eq!(
            e["httpurl"],
            format!("http://127.0.0.1:{}{}", envoy.listener_port, path),
            "{e}"
        );
        assert!(
            e["security"]["hash"].is_string() && e["security"]["signature"].is_string(),
            "{e}"
        );
        assert_eq!(
            item["verified"], true,
            "signed with the shared secret: {item}"
        );
    }
    assert_eq!(
        envoy.stat("meshaudit_events_captured").await?,
        Some(cases.len() as i64),
        "captured counter"
    );
    assert!(envoy.is_running(), "Envoy survived");
    Ok(())
}
