//! Issue 17 items 4, 6 and 8, replayed against the release binary: metric
//! labels bounded, the rate limit keyed on who the client is (not on a header
//! it can rotate), and an absurd `MESHAUDIT_RATE_LIMIT_RPS` refused at start-up
//! instead of panicking on the request path.

use crate::support::{command, http, now_secs, temp_sqlite, Collector, SECRET};
use meshaudit_event::integrity::batch_signature;

async fn post_with(c: &Collector, body: &[u8], extra: &[(&str, &str)]) -> crate::support::Response {
    let ts = now_secs().to_string();
    let sig = batch_signature(SECRET.as_bytes(), &ts, body);
    let mut headers = vec![
        ("Content-Type", "application/x-ndjson"),
        ("X-Signature-Ts", ts.as_str()),
        ("X-Signature", sig.as_str()),
    ];
    headers.extend_from_slice(extra);
    http(c.addr, "POST", "/v1/events", &headers, body)
        .await
        .unwrap()
}

/// Item 4: every distinct `X-Meshaudit-Source` made two series forever.
#[tokio::test]
async fn source_labels_are_validated_and_bounded() {
    let db = temp_sqlite();
    let c = Collector::start(&db.url, &[("MESHAUDIT_MAX_SOURCES", "20")]).await;
    let key = ("X-API-Key", crate::support::API_KEY);
    for i in 0..60 {
        let source = format!("shop/api-{i}");
        let r = post_with(
            &c,
            b"{}\n",
            &[
                key,
                ("X-Meshaudit-Source", &source),
                ("X-Meshaudit-Dropped", "1"),
            ],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    for junk in ["x", "UPPER/case", "a/b/c", "ns/pod_1"] {
        let r = post_with(&c, b"{}\n", &[key, ("X-Meshaudit-Source", junk)]).await;
        assert_eq!(r.status, 200, "a bad source header never costs the batch");
    }
    let m = http(c.addr, "GET", "/metrics", &[], b"").await.unwrap();
    let text = String::from_utf8_lossy(&m.body);
    let last_seen = text
        .lines()
        .filter(|l| l.starts_with("audit_source_last_seen_timestamp_seconds{"))
        .count();
    let dropped = text
        .lines()
        .filter(|l| l.starts_with("audit_source_dropped_events{"))
        .count();
    assert_eq!((last_seen, dropped), (20, 20), "{text}");
    assert!(text.contains("source=\"shop/api-59\""));
    assert!(!text.contains("source=\"shop/api-0\""));
    assert!(!text.contains("UPPER"));
}

/// Item 6: with keys not required, buckets were keyed on the unchecked
/// `X-API-Key`, so rotating it escaped the limit.
#[tokio::test]
async fn rotating_api_keys_does_not_escape_the_rate_limit() {
    let db = temp_sqlite();
    let c = Collector::start(
        &db.url,
        &[
            ("AUDIT_RECEIVER_REQUIRE_API_KEY", "0"),
            ("MESHAUDIT_RATE_LIMIT_RPS", "0.5"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let k = format!("made-up-{i}");
        statuses.push(post_with(&c, b"{}\n", &[("X-API-Key", &k)]).await.status);
    }
    // Burst of one (twice 0.5) then limited, whatever the header says.
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses[2..].iter().all(|&s| s == 429), "{statuses:?}");
}

/// Item 8: `MESHAUDIT_RATE_LIMIT_RPS=1e-30` panicked on the request path.
#[tokio::test]
async fn absurd_rates_stop_start_up_with_one_line() {
    let db = temp_sqlite();
    for rps in ["1e-30", "NaN", "inf"] {
        let out = command()
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("MESHAUDIT_LISTEN", "127.0.0.1:0")
            .env("AUDIT_RECEIVER_API_KEY", "k")
            .env("AUDIT_RECEIVER_SIGNING_SECRET", "s")
            .env("MESHAUDIT_RATE_LIMIT_RPS", rps)
            .output()
            .expect("run the collector");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rps}: {stderr}");
        assert!(
            stderr.contains("MESHAUDIT_RATE_LIMIT_RPS"),
            "{rps}: {stderr}"
        );
    }
    // The smallest accepted rate serves and answers 429 with a Retry-After,
    // never a dropped connection.
    let c = Collector::start(&db.url, &[("MESHAUDIT_RATE_LIMIT_RPS", "0.001")]).await;
    let key = ("X-API-Key", crate::support::API_KEY);
    let mut last = None;
    for _ in 0..3 {
        last = Some(post_with(&c, b"{}\n", &[key]).await);
    }
    let r = last.unwrap();
    assert_eq!(r.status, 429);
    assert!(r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some());
}
