//! How the filter ships, checked in a real Envoy: a collector that goes away
//! and comes back gets every event exactly once; a collector answering 500 or
//! hanging up costs retries (counted) and never traffic; a full buffer drops
//! and counts; batches carry SPEC §6's headers and keep their idempotency key
//! across retries; proxied exchanges are byte-identical with and without the
//! filter.

mod filter_support;

use filter_support::*;
use meshaudit_e2e::*;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_then_back_gets_every_event_exactly_once() -> anyhow::Result<()> {
    let mut collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        collector.port,
        json!({"retries": 10, "backoff_ms": 200, "max_backoff_ms": 1000, "batch_max_events": 5}),
    )?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    collector.kill();
    let n = 20;
    for i in 0..n {
        let resp = http_client()
            .get(envoy.url(&format!("/orders/{i}")))
            .send()
            .await?;
        assert_eq!(
            resp.status().as_u16(),
            200,
            "traffic flows while the collector is down"
        );
    }
    wait_stat(&envoy, "meshaudit_batch_retries", 1, WAIT).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    collector.restart().await?;
    let items = {
        collector.wait_for_events(n, WAIT).await?;
        // retried batches that had reached the collector are answered as replays
        tokio::time::sleep(Duration::from_secs(2)).await;
        collector.items().await?
    };
    let ids: HashSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(items.len(), n, "exactly once: {items:#?}");
    assert_eq!(ids.len(), n);
    let paths: HashSet<String> = items
        .iter()
        .filter_map(|i| i["event"]["action"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(paths.len(), n, "every request");
    assert!(items.iter().all(|i| i["verified"] == true));
    assert_eq!(
        stat(&envoy, "meshaudit_events_dropped_retries_exhausted").await?,
        0
    );
    wait_stat(&envoy, "meshaudit_batches_ok", 4, WAIT).await?;
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_and_resign_with_the_same_key() -> anyhow::Result<()> {
    let fake = FakeCollector::start(FakeBehaviour::RetryAfter(429, 1)).await?;
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        fake.port,
        json!({"retries": 2, "backoff_ms": 50, "max_backoff_ms": 5000, "max_retry_window_ms": 0}),
    )?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    let resp = http_client().get(envoy.url("/orders/1")).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    wait_stat(
        &envoy,
        "meshaudit_events_dropped_retries_exhausted",
        1,
        WAIT,
    )
    .await?;
    let seen = fake.requests();
    assert_eq!(seen.len(), 3, "one attempt and two retries");
    let first = &seen[0];
    for r in &seen {
        assert_eq!(r.body, first.body, "the same bytes every attempt");
        assert_eq!(
            r.header("x-idempotency-key"),
            first.header("x-idempotency-key")
        );
        assert_eq!(r.header("x-meshaudit-batch-seq"), Some("1"));
        assert_eq!(
            r.header("x-meshaudit-source"),
            Some(format!("{NAMESPACE}/{POD}").as_str())
        );
        assert_eq!(r.header("x-api-key"), Some("test-api-key"));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let ts = r.header("x-signature-ts").unwrap_or("");
        // SPEC §10 digest scheme, recomputed with Python's json (the
        // canonical form's reference): SHA-256 of the events' raw hashes.
        let expected = run_python(
            "import hmac,hashlib,json,sys; d=sys.stdin.buffer.read(); t,b=d.split(b'\\n',1)\n\
             hs=b''\n\
             for line in b.splitlines():\n\
             \x20   e=json.loads(line); e.pop('security')\n\
             \x20   hs+=hashlib.sha256(json.dumps(e,sort_keys=True,separators=(',',':')).encode()).digest()\n\
             m=t+b'.'+hashlib.sha256(hs).hexdigest().encode()\n\
             print('sha256='+hmac.new(b'test-signing-secret',m,hashlib.sha256).hexdigest())",
            &[ts.as_bytes(), b"\n", &r.body].concat(),
        )?;
        assert_eq!(r.header("x-signature-scheme"), Some("digest"));
        assert_eq!(
            r.header("x-signature"),
            Some(expected.trim()),
            "signed over ts.hex(batch digest)"
        );
    }
    for pair in seen.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 honoured: {gap:?}"
        );
        assert_ne!(
            pair[0].header("x-signature-ts"),
            pair[1].header("x-signature-ts"),
            "each attempt re-signed with a fresh timestamp"
        );
    }
    assert_eq!(stat(&envoy, "meshaudit_batch_retries").await?, 2);
    assert_eq!(stat(&envoy, "meshaudit_batches_failed").await?, 1);

    // the next batch says how many were lost before it
    fake.set(FakeBehaviour::Status(200));
    http_client().get(envoy.url("/orders/2")).send().await?;
    wait_stat(&envoy, "meshaudit_batches_ok", 1, WAIT).await?;
    let last = fake.requests().pop().map(|r| {
        (
            r.header("x-meshaudit-dropped").map(str::to_owned),
            r.header("x-meshaudit-batch-seq").map(str::to_owned),
        )
    });
    assert_eq!(last, Some((Some("1".to_owned()), Some("2".to_owned()))));
    let prom = envoy.stats_prometheus().await?;
    assert!(prom.contains("meshaudit_batch_retries{} 2"), "{prom}");
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_hanging_up_answering_500_timing_out_or_refusing_costs_retries_not_traffic(
) -> anyhow::Result<()> {
    let fake = FakeCollector::start(FakeBehaviour::Close).await?;
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        fake.port,
        json!({"retries": 1, "max_retry_window_ms": 0}),
    )?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    for i in 0..10 {
        let resp = http_client()
            .get(envoy.url(&format!("/orders/{i}")))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200);
    }
    wait_stat(
        &envoy,
        "meshaudit_events_dropped_retries_exhausted",
        10,
        WAIT,
    )
    .await?;
    assert!(stat(&envoy, "meshaudit_batch_retries").await? >= 1);
    let prom = envoy.stats_prometheus().await?;
    assert!(prom.contains("meshaudit_batch_retries{}"), "{prom}");

    // a collector answering 500: retried, then dropped and counted
    fake.set(FakeBehaviour::Status(500));
    let retries_before = stat(&envoy, "meshaudit_batch_retries").await?;
    let resp = http_client().get(envoy.url("/orders/500")).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    wait_stat(
        &envoy,
        "meshaudit_events_dropped_retries_exhausted",
        11,
        WAIT,
    )
    .await?;
    assert_eq!(
        stat(&envoy, "meshaudit_batch_retries").await?,
        retries_before + 1
    );

    // a collector that never answers: the dispatch times out and is retried
    fake.set(FakeBehaviour::Hang);
    let resp = http_client().get(envoy.url("/orders/hang")).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    wait_stat(
        &envoy,
        "meshaudit_events_dropped_retries_exhausted",
        12,
        WAIT,
    )
    .await?;
    assert_eq!(
        stat(&envoy, "meshaudit_batch_retries").await?,
        retries_before + 2
    );

    // 4xx other than 429 is final: no retry, counted as rejected
    fake.set(FakeBehaviour::Status(401));
    let before = stat(&envoy, "meshaudit_batch_retries").await?;
    http_client().get(envoy.url("/orders/x")).send().await?;
    wait_stat(&envoy, "meshaudit_events_dropped_rejected", 1, WAIT).await?;
    assert_eq!(stat(&envoy, "meshaudit_batch_retries").await?, before);
    assert_eq!(stat(&envoy, "meshaudit_buffered_events").await?, 0);
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_new_events_and_counts_them() -> anyhow::Result<()> {
    let upstream = Upstream::start().await?;
    let closed = free_port()?;
    let opts = options(
        upstream.port,
        closed,
        json!({"max_buffered_events": 5, "retries": 50, "backoff_ms": 5000, "max_backoff_ms": 5000}),
    )?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    for i in 0..20 {
        let resp = http_client()
            .get(envoy.url(&format!("/orders/{i}")))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(
        wait_stat(&envoy, "meshaudit_events_dropped_buffer_full", 15, WAIT).await?,
        15
    );
    assert_eq!(stat(&envoy, "meshaudit_events_captured").await?, 5);
    assert_eq!(stat(&envoy, "meshaudit_buffered_events").await?, 5);
    assert_healthy(&mut envoy);
    Ok(())
}

/// Builds one request against the given Envoy.
type Case<'a> = Box<dyn Fn(&Envoy) -> reqwest::RequestBuilder + 'a>;

/// Status, headers (without the per-response ones) and body.
async fn exchange(
    req: reqwest::RequestBuilder,
) -> anyhow::Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-envoy-upstream-service-time"))
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok((status, headers, resp.bytes().await?.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_exchanges_are_identical_with_and_without_the_filter() -> anyhow::Result<()> {
    let collector = Collector::start(CollectorOptions::default()).await?;
    let upstream = Upstream::start().await?;
    let bare_opts =
        BootstrapOptions::new(free_port()?, free_port()?, upstream.port, collector.port);
    let bare = start_envoy(&bare_opts, &[]).await?;
    let with_opts = options(
        upstream.port,
        collector.port,
        json!({"capture_bodies": true, "max_body_bytes": 16}),
    )?;
    let mut with = start_envoy(&with_opts, &[]).await?;
    let big = "y".repeat(200_000);
    let client = http_client();
    {
        let (a, b) = (&bare, &with);
        let cases: Vec<Case> = vec![
            Box::new(|e: &Envoy| client.get(e.url("/orders/1?q=2"))),
            Box::new(|e: &Envoy| {
                client
                    .post(e.url("/echo"))
                    .header("content-type", "application/json")
                    .body(r#"{"password":"x","a":[1,2]}"#)
            }),
            Box::new(|e: &Envoy| {
                client
                    .post(e.url("/echo"))
                    .header("content-type", "text/plain")
                    .body(big.clone())
            }),
            Box::new(|e: &Envoy| {
                client
                    .put(e.url("/status/503"))
                    .header("authorization", "Bearer t")
            }),
            Box::new(|e: &Envoy| client.head(e.url("/orders"))),
            Box::new(|e: &Envoy| client.get(e.url("/local-reply/z"))),
        ];
        for (i, case) in cases.iter().enumerate() {
            let x = exchange(case(a)).await?;
            let y = exchange(case(b)).await?;
            assert_eq!(x, y, "case {i} differs with the filter");
        }
    }
    // what the upstream received is identical too (but for Envoy's per-request id
    // and the listener port in `host`)
    let reqs = upstream.requests();
    let strip = |h: &Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        h.iter()
            .filter(|(k, _)| k != "x-request-id" && k != "host")
            .cloned()
            .collect()
    };
    for pair in reqs.chunks(2) {
        if let [x, y] = pair {
            assert_eq!((&x.method, &x.path, &x.body), (&y.method, &y.path, &y.body));
            assert_eq!(strip(&x.headers), strip(&y.headers));
        }
    }
    collector.wait_for_events(6, WAIT).await?;
    assert_healthy(&mut with);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undefined_collector_cluster_is_logged_once_and_drops_are_counted() -> anyhow::Result<()>
{
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        free_port()?,
        json!({"collector_cluster": "no_such_cluster", "retries": 1, "max_retry_window_ms": 0}),
    )?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    for i in 0..3 {
        let resp = http_client()
            .get(envoy.url(&format!("/orders/{i}")))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_stat(
        &envoy,
        "meshaudit_events_dropped_retries_exhausted",
        3,
        WAIT,
    )
    .await?;
    let log = envoy.log();
    assert_eq!(
        log.matches("refused to call cluster \"no_such_cluster\"")
            .count(),
        1,
        "one warning per VM:\n{log}"
    );
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_answering_503_for_10_s_loses_nothing() -> anyhow::Result<()> {
    // Issue 17: `retries` alone (3 retries, backoff ≤ 400 ms here) would give
    // a batch up within about a second; the default 60 s retry window keeps
    // it while the buffer has room.
    let collector = Collector::start(CollectorOptions::default()).await?;
    let fake = FakeCollector::start(FakeBehaviour::Status(503)).await?;
    let upstream = Upstream::start().await?;
    let opts = options(upstream.port, fake.port, json!({"batch_max_events": 5}))?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    let outage = std::time::Instant::now();
    let n = 30;
    for i in 0..n {
        let resp = http_client()
            .get(envoy.url(&format!("/outage/{i}")))
            .send()
            .await?;
        assert_eq!(
            resp.status().as_u16(),
            200,
            "traffic flows during the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    fake.set(FakeBehaviour::Forward(collector.port));
    let during = fake.requests();
    let first_key = during.first().and_then(|r| r.header("x-idempotency-key"));
    let first_attempts = during
        .iter()
        .filter(|r| r.header("x-idempotency-key") == first_key)
        .count();
    assert!(
        first_attempts > 4,
        "the first batch was attempted more than `retries` + 1 times: {first_attempts}"
    );
    let events = collector.wait_for_events(n, WAIT).await?;
    assert_eq!(events_at(&events, "/outage/0").len(), 1);
    let mut paths: Vec<String> = events
        .iter()
        .filter_map(|e| e["action"]["name"].as_str().map(str::to_owned))
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), n, "every request's event is stored once");
    for dropped in [
        "meshaudit_events_dropped_retries_exhausted",
        "meshaudit_events_dropped_buffer_full",
        "meshaudit_events_dropped_rejected",
    ] {
        assert_eq!(stat(&envoy, dropped).await?, 0, "{dropped}");
    }
    if let (Some(first), Some(last)) = (during.first(), during.last()) {
        assert!(
            last.at.duration_since(first.at) >= Duration::from_secs(8),
            "the outage was retried throughout"
        );
    }
    assert_healthy(&mut envoy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_the_collector_refuses_costs_that_event_alone() -> anyhow::Result<()> {
    // Issue 17: a 400 naming a line (SPEC §6) drops that event, counted as
    // rejected, and the rest of the batch goes again under a new key.
    let collector = Collector::start(CollectorOptions::default()).await?;
    let fake =
        FakeCollector::start(FakeBehaviour::RefuseLineWith("/poison", collector.port)).await?;
    let upstream = Upstream::start().await?;
    let opts = options(
        upstream.port,
        fake.port,
        json!({"batch_max_events": 5, "flush_interval_ms": 60000}),
    )?;
    let mut envoy = start_envoy(&opts, &[]).await?;
    for path in ["/ok/1", "/ok/2", "/poison", "/ok/4", "/ok/5"] {
        let resp = http_client().get(envoy.url(path)).send().await?;
        assert_eq!(resp.status().as_u16(), 200);
    }
    let events = collector.wait_for_events(4, WAIT).await?;
    wait_stat(&envoy, "meshaudit_events_dropped_rejected", 1, WAIT).await?;
    assert!(events_at(&events, "/poison").is_empty());
    for path in ["/ok/1", "/ok/2", "/ok/4", "/ok/5"] {
        assert_eq!(events_at(&events, path).len(), 1, "{path}");
    }
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "the batch, then the batch without the line");
    let lines = |r: &SeenRequest| {
        r.body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    };
    assert_eq!((lines(&seen[0]), lines(&seen[1])), (5, 4));
    assert_ne!(
        seen[0].header("x-idempotency-key"),
        seen[1].header("x-idempotency-key"),
        "a different body gets a new idempotency key"
    );
    assert_eq!(seen[1].header("x-signature-scheme"), Some("digest"));
    wait_stat(&envoy, "meshaudit_batches_ok", 1, WAIT).await?;
    assert_eq!(stat(&envoy, "meshaudit_events_dropped_rejected").await?, 1);
    assert_eq!(stat(&envoy, "meshaudit_batches_failed").await?, 0);
    assert_healthy(&mut envoy);
    Ok(())
}
