//! Export through the `webhook` sink (SPEC §11), with real processes:
//! - into a second collector (edge → central) while the edge is killed -9
//!   mid-export and the central one is down for a while: every record
//!   arrives, in seq order, and the central collector absorbs the resends;
//! - into a receiver that refuses a record: the exporter stops naming its
//!   seq, `retain` keeps what is undelivered, `resume`, `replay` and `pause`
//!   do what they say, the lag metric follows, and a resent batch is the
//!   same bytes under the same idempotency key.

use crate::export_support::{
    all_events, assert_complete_in_order, export_status, head, kill_with_batch_in_flight, metric,
    post_events, signal, wait_for, Served,
};
use crate::support::{run_cli, temp_sqlite, API_KEY, SECRET};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};

fn webhook_exporter(name: &str, url: &str, batch: usize) -> String {
    serde_json::json!([{
        "name": name, "type": "webhook", "url": url,
        "api_key": API_KEY, "signing_secret": SECRET, "batch_records": batch
    }])
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_into_a_second_collector_survives_kill9_and_a_sink_outage() {
    let edge_db = temp_sqlite();
    let log = edge_db.dir.path().join("edge.log");
    edge_to_central(&edge_db.url, Some(log)).await;
}

/// The same with the edge's store (events and cursors) on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_export_from_a_postgresql_store() {
    let edge_db = crate::support::pg_test_db().await;
    edge_to_central(&edge_db.url, None).await;
}

async fn edge_to_central(edge_url: &str, log: Option<std::path::PathBuf>) {
    let central_db = temp_sqlite();
    let mut central = Served::new(&central_db.url, &[], None);
    central.start().await;
    let url = format!("http://{}/v1/events", central.addr);
    let exporters = webhook_exporter("central", &url, 3);
    let mut edge = Served::new(
        edge_url,
        &[("MESHAUDIT_EXPORTERS", exporters.as_str())],
        log.clone(),
    );
    edge.start().await;

    // Kill -9 the edge with a batch in flight: the central collector is
    // frozen (SIGSTOP), so its answer never comes.
    let child = central.child.as_ref().expect("central");
    kill_with_batch_in_flight(
        &mut edge,
        "central",
        10,
        || signal(child, "STOP"),
        || signal(child, "CONT"),
    )
    .await;
    post_events(edge.addr, "b", 20, 10).await;

    // The sink goes away for a while: the exporter retries, the lag grows.
    central.kill9();
    post_events(edge.addr, "c", 10, 10).await;
    wait_for(30, "failed deliveries while the sink is down", || async {
        metric(edge.addr, "audit_export_failures_total", "central")
            .await
            .filter(|f| *f > 0)
    })
    .await;
    let lag = metric(edge.addr, "audit_export_lag_records", "central")
        .await
        .unwrap();
    assert!(lag > 0, "lag while the sink is down: {lag}");
    central.start().await;

    let total = head(edge.addr).await;
    assert_eq!(total, 500);
    wait_for(120, "the cursor reaching the head", || async {
        metric(edge.addr, "audit_export_cursor_seq", "central")
            .await
            .filter(|c| *c == total)
    })
    .await;
    assert_eq!(
        metric(edge.addr, "audit_export_lag_records", "central").await,
        Some(0)
    );

    // Central holds each record exactly once (resends deduped), in seq order.
    let edge_events = all_events(edge.addr).await;
    let central_events = all_events(central.addr).await;
    assert_eq!(
        central_events.len(),
        500,
        "every record once at the central collector"
    );
    let records: Vec<serde_json::Value> =
        central_events.iter().map(|e| e["event"].clone()).collect();
    assert_complete_in_order(&records, &edge_events);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"].as_i64(), Some(i as i64 + 1), "central order");
        assert_eq!(r["schemaid"], "meshaudit.http/v1");
        assert_eq!(r["verified"], serde_json::Value::Null);
    }

    let status = export_status(edge_url);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["exporter"], "central");
    assert_eq!(status[0]["status"], "running");
    assert_eq!(status[0]["cursor"], 500);
    assert_eq!(status[0]["lag"], 0);
    if let Some(log) = log {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !text.contains(SECRET) && !text.contains(API_KEY),
            "secrets in the log"
        );
    }
}

#[test]
fn bad_exporter_configuration_stops_start_up_naming_it() {
    let db = temp_sqlite();
    let exporters = r#"[
      {"name":"a","type":"webhook","url":"http://x/v1/events","api_key":"K-SEKRIT","signing_secret":"S-SEKRIT","colour":"red"},
      {"name":"b","type":"nats","url":"nats://x","subject":"s"},
      {"name":"c","type":"splunk_hec","url":"http://x","token":"T-SEKRIT"},
      {"name":"c","type":"splunk_hec","url":"http://x","token":"T-SEKRIT"}
    ]"#;
    let out = crate::support::collector_command()
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("AUDIT_RECEIVER_API_KEY", API_KEY)
        .env("AUDIT_RECEIVER_SIGNING_SECRET", SECRET)
        .env("MESHAUDIT_EXPORTERS", exporters)
        .output()
        .expect("run the collector");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("MESHAUDIT_EXPORTERS"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per problem:\n{stderr}");
    assert!(
        lines[0].contains("\"a\"") && lines[0].contains("colour"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("\"b\"") && lines[1].contains("stream"),
        "{stderr}"
    );
    assert!(
        lines[2].contains("duplicate") && lines[2].contains("\"c\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("SEKRIT"),
        "a secret in the output: {stderr}"
    );
}

/// What the test receiver saw: (idempotency key, body) per request.
#[derive(Default)]
struct Receiver {
    refuse_seq: Option<i64>,
    requests: Vec<(String, Bytes)>,
    /// Records acknowledged, in order.
    acked: Vec<serde_json::Value>,
}

fn seqs(body: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

async fn receive(
    state: axum::extract::State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    // Checked as a meshaudit collector checks them (SPEC §6).
    if h("x-api-key") != API_KEY
        || !meshaudit_event::integrity::verify_batch_signature(
            &[SECRET.as_bytes().to_vec()],
            &h("x-signature-ts"),
            &body,
            &h("x-signature"),
        )
    {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let s = seqs(&body);
    let key = h("x-idempotency-key");
    assert_eq!(
        key,
        format!("w:{}-{}", s[0], s[s.len() - 1]),
        "idempotency key"
    );
    let mut r = state.lock().unwrap();
    r.requests.push((key, body.clone()));
    if let Some(bad) = r.refuse_seq {
        if let Some(i) = s.iter().position(|x| *x == bad) {
            let answer =
                serde_json::json!({"error": "malformed", "message": "refused", "line": i + 1});
            return (StatusCode::BAD_REQUEST, answer.to_string());
        }
    }
    for line in String::from_utf8_lossy(&body).lines() {
        r.acked.push(serde_json::from_str(line).unwrap());
    }
    (
        StatusCode::OK,
        r#"{"accepted":1,"duplicates":0,"conflicts":0,"deduped":false}"#.into(),
    )
}

async fn start_receiver(state: Arc<Mutex<Receiver>>) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `retain` of everything received until now (no minimum age).
fn retain_now(db: &str, archive: &std::path::Path) -> (i32, String) {
    let before = chrono::Utc::now().to_rfc3339();
    let archive = archive.to_str().expect("archive path");
    let args = [
        "retain",
        "--before",
        &before,
        "--archive",
        archive,
        "--min-age",
        "0s",
    ];
    run_cli(db, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_stops_the_exporter_and_replay_resends() {
    let state = Arc::new(Mutex::new(Receiver {
        refuse_seq: Some(5),
        ..Default::default()
    }));
    let addr = start_receiver(state.clone()).await;
    let db = temp_sqlite();
    let exporters = webhook_exporter("w", &format!("http://{addr}/hook"), 3);
    let mut edge = Served::new(
        &db.url,
        &[("MESHAUDIT_EXPORTERS", exporters.as_str())],
        None,
    );
    edge.start().await;
    post_events(edge.addr, "r", 1, 10).await;

    // Stopped at seq 5 (line 2 of batch 4-6); nothing after it is skipped to.
    let stopped = wait_for(30, "the exporter to stop", || async {
        export_status(&db.url)
            .into_iter()
            .find(|s| s["status"] == "stopped")
    })
    .await;
    assert_eq!(stopped["stopped_seq"], 5);
    assert_eq!(stopped["cursor"], 3);
    assert_eq!(stopped["pending"], serde_json::json!([4, 6]));
    assert!(stopped["stopped_reason"]
        .as_str()
        .unwrap()
        .contains("HTTP 400"));
    let (code, text) = run_cli(&db.url, &["export", "status"]);
    assert_eq!(code, 0);
    assert!(text.contains("stopped at seq 5"), "{text}");
    wait_for(10, "the lag and stopped metrics", || async {
        let lag = metric(edge.addr, "audit_export_lag_records", "w").await?;
        let stopped = metric(edge.addr, "audit_export_stopped", "w").await?;
        (lag == 7 && stopped == 1).then_some(())
    })
    .await;
    assert!(
        metric(edge.addr, "audit_export_failures_total", "w")
            .await
            .unwrap()
            >= 1
    );

    // retain keeps undelivered records unless --force.
    let archive = db.dir.path().join("archive");
    let (code, out) = retain_now(&db.url, &archive);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not yet delivered") && out.contains("w (delivered up to seq 3)"),
        "{out}"
    );
    assert_eq!(all_events(edge.addr).await.len(), 10, "nothing removed");

    // resume: the refused batch is sent again, the same bytes under the same key.
    state.lock().unwrap().refuse_seq = None;
    let (code, out) = run_cli(&db.url, &["export", "resume", "--exporter", "w"]);
    assert_eq!(code, 0, "{out}");
    wait_for(30, "the cursor at 10", || async {
        metric(edge.addr, "audit_export_cursor_seq", "w")
            .await
            .filter(|c| *c == 10)
    })
    .await;
    {
        let r = state.lock().unwrap();
        let sent_4_6: Vec<&Bytes> = r
            .requests
            .iter()
            .filter(|(k, _)| k == "w:4-6")
            .map(|(_, b)| b)
            .collect();
        assert!(sent_4_6.len() >= 2, "batch 4-6 refused then resent");
        assert!(
            sent_4_6.windows(2).all(|w| w[0] == w[1]),
            "a resent batch is the same bytes"
        );
        let acked: Vec<i64> = r.acked.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
        assert_eq!(acked, (1..=10).collect::<Vec<_>>());
    }

    // replay from 2: seq 2.. is sent again, in fixed batches from 2.
    let (code, out) = run_cli(
        &db.url,
        &["export", "replay", "--exporter", "w", "--from", "2"],
    );
    assert_eq!(code, 0, "{out}");
    wait_for(30, "the replay", || async {
        let r = state.lock().unwrap();
        (r.acked.len() == 19).then_some(())
    })
    .await;
    {
        let r = state.lock().unwrap();
        assert!(
            r.requests.iter().any(|(k, _)| k == "w:2-4"),
            "replayed from 2"
        );
        let acked: Vec<i64> = r.acked[10..]
            .iter()
            .map(|v| v["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(acked, (2..=10).collect::<Vec<_>>());
    }
    let (code, _) = run_cli(
        &db.url,
        &["export", "replay", "--exporter", "nope", "--from", "1"],
    );
    assert_eq!(code, 1, "unknown exporter");

    // pause: new records wait (the lag shows them), resume delivers them.
    let (code, out) = run_cli(&db.url, &["export", "pause", "--exporter", "w"]);
    assert_eq!(code, 0, "{out}");
    wait_for(10, "paused", || async {
        export_status(&db.url)
            .into_iter()
            .find(|s| s["status"] == "paused")
    })
    .await;
    post_events(edge.addr, "p", 1, 5).await;
    wait_for(10, "the lag of the paused exporter", || async {
        metric(edge.addr, "audit_export_lag_records", "w")
            .await
            .filter(|l| *l == 5)
    })
    .await;
    assert_eq!(
        state.lock().unwrap().acked.len(),
        19,
        "nothing sent while paused"
    );
    let (code, out) = run_cli(&db.url, &["export", "resume", "--exporter", "w"]);
    assert_eq!(code, 0, "{out}");
    wait_for(30, "delivery after resume", || async {
        metric(edge.addr, "audit_export_cursor_seq", "w")
            .await
            .filter(|c| *c == 15)
    })
    .await;

    // Acknowledged records: 1-10 once, 2-10 again (replay), 11-15.
    assert_eq!(
        metric(edge.addr, "audit_export_records_total", "w").await,
        Some(24)
    );

    // Everything delivered: retain may remove it now.
    edge.kill9();
    let (code, out) = retain_now(&db.url, &archive);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 15 events"), "{out}");
}

/// Two replicas on one store, both configured with the exporter: only the
/// lease holder sends (nothing twice), and when it dies the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_at_a_time_runs_an_exporter() {
    let state = Arc::new(Mutex::new(Receiver::default()));
    let addr = start_receiver(state.clone()).await;
    let db = temp_sqlite();
    let exporters = webhook_exporter("w", &format!("http://{addr}/hook"), 3);
    let env = [("MESHAUDIT_EXPORTERS", exporters.as_str())];
    let mut a = Served::new(&db.url, &env, None);
    a.start().await;
    let mut b = Served::new(&db.url, &env, None);
    b.start().await;
    post_events(a.addr, "one", 5, 10).await;
    post_events(b.addr, "two", 5, 10).await;
    wait_for(60, "100 records delivered", || async {
        metric(a.addr, "audit_export_cursor_seq", "w")
            .await
            .filter(|c| *c == 100)
    })
    .await;
    let acked =
        |r: &Receiver| -> Vec<i64> { r.acked.iter().map(|v| v["seq"].as_i64().unwrap()).collect() };
    assert_eq!(
        acked(&state.lock().unwrap()),
        (1..=100).collect::<Vec<_>>(),
        "each record once, in order, from one replica"
    );

    // The holder dies; the other replica takes the lease once it expired.
    let owner = export_status(&db.url)[0]["owner"]
        .as_str()
        .expect("an owner")
        .to_owned();
    let (dead, survivor) = if owner.ends_with(&a.addr.to_string()) {
        (&mut a, &mut b)
    } else {
        assert!(owner.ends_with(&b.addr.to_string()), "owner {owner}");
        (&mut b, &mut a)
    };
    dead.kill9();
    post_events(survivor.addr, "three", 2, 10).await;
    wait_for(60, "delivery by the remaining replica", || async {
        metric(survivor.addr, "audit_export_cursor_seq", "w")
            .await
            .filter(|c| *c == 120)
    })
    .await;
    assert_eq!(acked(&state.lock().unwrap()), (1..=120).collect::<Vec<_>>());
    let owner_now = export_status(&db.url)[0]["owner"].clone();
    assert!(
        owner_now
            .as_str()
            .unwrap()
            .ends_with(&survivor.addr.to_string()),
        "{owner_now}"
    );
}
