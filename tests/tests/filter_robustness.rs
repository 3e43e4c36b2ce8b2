//! What clients send cannot hurt the filter (SPEC §8): a Latin-1 header byte,
//! a huge header, HTTP/2, HEAD, a chunked upload and gzip bodies each yield one
//! event, Envoy and the VM survive, and the exchange is proxied unchanged.

mod filter_support;

use filter_support::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_each_yield_one_event_and_no_panic() -> anyhow::Result<()> {
    let mut s = Stack::start(json!({
        "capture_bodies": true,
        "include_request_headers": ["x-latin", "x-huge", "user-agent"],
        "header_map": {"userid": "x-latin"}
    }))
    .await?;
    let port = s.envoy.listener_port;

    // a header value with an obs-text (Latin-1) byte
    let latin = raw_exchange(
        port,
        b"GET /latin HTTP/1.1\r\nhost: x\r\nx-latin: caf\xe9\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await?;
    assert!(
        latin.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&latin)
    );

    // a huge header (Envoy's default limit is 60 KiB for all headers)
    let huge = "h".repeat(50_000);
    let resp = meshaudit_e2e::http_client()
        .get(s.envoy.url("/huge"))
        .header("x-huge", huge.as_str())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);

    // HEAD
    let resp = meshaudit_e2e::http_client()
        .head(s.envoy.url("/head"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);

    // a chunked upload
    let chunked = raw_exchange(
        port,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\n{\"a\":\r\n4\r\n\"b\"}\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await?;
    assert!(
        chunked.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&chunked)
    );

    // HTTP/2 (prior knowledge) through curl
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(s.envoy.url("/h2"))
        .output()
        .map_err(|e| {
            anyhow::anyhow!("curl is needed for the HTTP/2 case (apt-get install curl): {e}")
        })?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");

    // a gzip body: evidence only, never parsed
    let gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV*I-.Q\xb2R*K\xcc)MU\xaa\x05\x00\x8b\x8e\x1c\x8d\x13\x00\x00\x00";
    let resp = meshaudit_e2e::http_client()
        .post(s.envoy.url("/gz"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.to_vec())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);

    let events = s.collector.wait_for_events(6, WAIT).await?;
    assert_eq!(events.len(), 6, "{events:#?}");
    for path in ["/latin", "/huge", "/head", "/echo", "/h2", "/gz"] {
        assert_eq!(events_at(&events, path).len(), 1, "{path}");
    }
    let latin = events_at(&events, "/latin")[0];
    assert_eq!(
        latin["http"]["requestheaders"]["x-latin"], "caf\u{e9}",
        "Latin-1 decoded"
    );
    assert_eq!(latin["subject"]["userid"], "caf\u{e9}");
    assert_eq!(
        events_at(&events, "/huge")[0]["http"]["requestheaders"]["x-huge"]
            .as_str()
            .map(str::len),
        Some(50_000)
    );
    assert_eq!(events_at(&events, "/head")[0]["httpmethod"], "HEAD");
    assert_eq!(events_at(&events, "/h2")[0]["http"]["protocol"], "HTTP/2");
    let echo = events_at(&events, "/echo")[0];
    assert_eq!(echo["eventdata"]["requestpayload"], json!({"a": "b"}));
    assert_eq!(echo["http"]["requestbytes"], 9);
    let gz_event = events_at(&events, "/gz")[0];
    let md = &gz_event["eventdata"]["metadata"];
    assert_eq!(md["requestencoded"], true);
    assert_eq!(md["requestbodybytes"], gz.len());
    assert_eq!(md["requestbodysha256"], sha256_hex(gz)?);
    assert!(
        gz_event["eventdata"].get("requestpayload").is_none(),
        "{gz_event}"
    );
    s.assert_healthy();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_deep_for_the_collector_is_kept_as_text_and_costs_nothing_else(
) -> anyhow::Result<()> {
    // Issue 17: 127 levels parse as JSON, but nested in the event they would
    // pass the collector's 128 and cost the whole batch; the filter keeps
    // such a body as `{"_raw": …}`.
    let mut s = Stack::start(json!({"capture_bodies": true, "batch_max_events": 3})).await?;
    let deep = "{\"a\":".repeat(127) + "1" + &"}".repeat(127);
    for (path, body) in [
        ("/before", "{}"),
        ("/deep", deep.as_str()),
        ("/after", "{}"),
    ] {
        let resp = meshaudit_e2e::http_client()
            .post(s.envoy.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200);
    }
    let events = s.collector.wait_for_events(3, WAIT).await?;
    let deep_events = events_at(&events, "/deep");
    assert_eq!(deep_events.len(), 1);
    assert_eq!(
        deep_events[0]["eventdata"]["requestpayload"]["_raw"].as_str(),
        Some(deep.as_str())
    );
    assert_eq!(events_at(&events, "/before").len(), 1);
    assert_eq!(events_at(&events, "/after").len(), 1);
    assert_eq!(
        stat(&s.envoy, "meshaudit_events_dropped_rejected").await?,
        0
    );
    s.assert_healthy();
    Ok(())
}
