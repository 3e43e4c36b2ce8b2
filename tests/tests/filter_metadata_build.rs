//! The metadata-only build (`dist/meshaudit_filter_metadata.wasm`, docs/filter.md) in a real
//! Envoy. It exports no header callbacks (Envoy then skips those VM entries), so it must
//! read both header maps in `on_log` and still count body bytes: for the same requests it
//! ships the same events as the full build, field for field, and it refuses
//! `capture_bodies` at configuration.

mod filter_support;

use filter_support::*;
use meshaudit_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// An event without what differs between two captures of the same request
/// (the two Envoys listen on different ports: the authority is compared
/// without it).
fn comparable(e: &Value) -> Value {
    let mut e = e.clone();
    if let Some(o) = e.as_object_mut() {
        for k in ["id", "timestamp", "security"] {
            o.remove(k);
        }
        if let Some(url) = o.get("httpurl").and_then(Value::as_str) {
            let without_port: String = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('/'))
                .map(|(_, path)| format!("/{path}"))
                .unwrap_or_default();
            o.insert("httpurl".into(), Value::String(without_port));
        }
    }
    if let Some(h) = e.get_mut("http").and_then(Value::as_object_mut) {
        h.remove("durationms");
        if let Some(a) = h.get("authority").and_then(Value::as_str) {
            let host = a.split(':').next().unwrap_or_default().to_owned();
            h.insert("authority".into(), Value::String(host));
        }
    }
    e
}

/// The three kinds of request: a GET, a JSON POST with a body, and a local reply.
async fn traffic(envoy: &Envoy, tag: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let client = http_client();
    let mut out = Vec::new();
    let r = client
        .get(envoy.url("/orders/1?x=1"))
        .header("x-request-id", format!("{tag}-get"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    out.push(("GET".to_owned(), r.bytes().await?.len()));
    let body = r#"{"item":"book","qty":2,"note":"a metadata build counts these bytes"}"#;
    let r = client
        .post(envoy.url("/orders"))
        .header("x-request-id", format!("{tag}-post"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    out.push(("POST".to_owned(), r.bytes().await?.len()));
    let r = client
        .get(envoy.url("/local-reply/x"))
        .header("x-request-id", format!("{tag}-local"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);
    out.push(("LOCAL".to_owned(), r.bytes().await?.len()));
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_build_ships_what_the_full_build_ships() -> anyhow::Result<()> {
    let collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let full_opts = options(upstream.port, collector.port, json!({}))?;
    let mut meta_opts = options(upstream.port, collector.port, json!({}))?;
    if let FilterSetup::Meshaudit { wasm, .. } = &mut meta_opts.filter {
        *wasm = Envoy::wasm_metadata()?;
    }
    let mut full = start_envoy(&full_opts, &[]).await?;
    let mut meta = start_envoy(&meta_opts, &[]).await?;

    // The same requests (the same x-request-id) through each build, one after the other.
    let sizes_full = traffic(&full, "same").await?;
    let sizes_meta = traffic(&meta, "same").await?;
    assert_eq!(sizes_full, sizes_meta);
    let events = collector.wait_for_events(6, WAIT).await?;
    assert_eq!(events.len(), 6, "one event per request: {events:#?}");
    assert_eq!(stat(&meta, "meshaudit_events_captured").await?, 3);
    assert_eq!(stat(&full, "meshaudit_events_captured").await?, 3);

    let post_body_len =
        r#"{"item":"book","qty":2,"note":"a metadata build counts these bytes"}"#.len();
    for (path, method, status) in [
        ("/orders/1", "GET", 200),
        ("/orders", "POST", 200),
        ("/local-reply/x", "GET", 404),
    ] {
        let at: Vec<&Value> = events
            .iter()
            .filter(|e| e["http"]["path"] == path || e["action"]["name"] == path)
            .collect();
        assert_eq!(at.len(), 2, "{path}: one event per build: {events:#?}");
        assert_eq!(
            comparable(at[0]),
            comparable(at[1]),
            "{path}: the two builds disagree"
        );
        for e in &at {
            assert_eq!(e["httpmethod"], method, "{e:#}");
            assert_eq!(e["http"]["statuscode"], status, "{e:#}");
            assert!(
                e["eventdata"]["requestpayload"].is_null()
                    && e["eventdata"]["responsepayload"].is_null(),
                "metadata only: {e:#}"
            );
        }
        // The byte counts come from the body callbacks, which both builds keep.
        let (want_req, want_resp) = match path {
            "/orders" => (post_body_len, sizes_meta[1].1),
            "/orders/1" => (0, sizes_meta[0].1),
            _ => (0, sizes_meta[2].1),
        };
        assert_eq!(
            at[1]["http"]["requestbytes"], want_req,
            "{path}: {:#}",
            at[1]
        );
        assert_eq!(
            at[1]["http"]["responsebytes"], want_resp,
            "{path}: {:#}",
            at[1]
        );
    }
    // The response headers were read in `on_log` (no response-header callback).
    let get = events
        .iter()
        .find(|e| e["requestid"] == "same-get")
        .expect("the GET's event");
    assert!(
        get["http"]["responseheaders"]["content-type"].is_string(),
        "{get:#}"
    );
    assert_healthy(&mut full);
    assert_healthy(&mut meta);
    Ok(())
}

#[test]
fn the_metadata_build_refuses_capture_bodies() -> anyhow::Result<()> {
    let mut opts = options(free_port()?, free_port()?, json!({"capture_bodies": true}))?;
    if let FilterSetup::Meshaudit { wasm, .. } = &mut opts.filter {
        *wasm = Envoy::wasm_metadata()?;
    }
    let log = envoy_refusing(&opts)?;
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("capture_bodies needs meshaudit_filter.wasm"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line:\n{log}");
    assert!(lines[0].contains("[error]"), "{}", lines[0]);
    Ok(())
}
