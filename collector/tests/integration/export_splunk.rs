//! Export to Splunk's HTTP Event Collector (SPEC §11) in the OCSF format.
//! The receiver is written here from Splunk's documented HEC contract:
//! `POST /services/collector/event`, `Authorization: Splunk <token>`,
//! back-to-back JSON event objects each with an `event` field; answers
//! `200 {"text":"Success","code":0}`, `401`/`403` for a missing or wrong
//! token, `400 {"code":12,"invalid-event-number":n}` for an event without
//! `event`, and `503 {"text":"Server is busy","code":9}` under back-pressure.
//! The edge collector is killed -9 mid-export and the receiver pushes back
//! for a while: every record arrives, in seq order, duplicates bounded by
//! one batch per fault.

use crate::export_support::{
    all_events, head, kill_with_batch_in_flight, metric, post_events, wait_for, Served,
};
use crate::support::temp_sqlite;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "hec-token-0000";
const BATCH: i64 = 4;

#[derive(Default)]
struct Hec {
    busy: bool,
    /// Hold every request unanswered until cleared.
    hang: bool,
    events: Vec<serde_json::Value>,
    busy_answers: u64,
}

async fn collector_event(
    state: axum::extract::State<Arc<Mutex<Hec>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(token) = auth.strip_prefix("Splunk ") else {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"text":"Token is required","code":2}"#.into(),
        );
    };
    if token != TOKEN {
        return (
            StatusCode::FORBIDDEN,
            r#"{"text":"Invalid token","code":4}"#.into(),
        );
    }
    while state.lock().unwrap().hang {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut hec = state.lock().unwrap();
    if hec.busy {
        hec.busy_answers += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"text":"Server is busy","code":9}"#.into(),
        );
    }
    let mut parsed = Vec::new();
    for (i, v) in serde_json::Deserializer::from_slice(&body)
        .into_iter::<serde_json::Value>()
        .enumerate()
    {
        match v {
            Ok(v) if v.get("event").is_some() => parsed.push(v),
            Ok(_) => {
                let answer = serde_json::json!({"text": "Event field is required", "code": 12, "invalid-event-number": i});
                return (StatusCode::BAD_REQUEST, answer.to_string());
            }
            Err(_) => {
                let answer = serde_json::json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i});
                return (StatusCode::BAD_REQUEST, answer.to_string());
            }
        }
    }
    hec.events.extend(parsed);
    (StatusCode::OK, r#"{"text":"Success","code":0}"#.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_in_ocsf_survives_kill9_back_pressure_and_an_outage() {
    let state = Arc::new(Mutex::new(Hec::default()));
    let app = axum::Router::new()
        .route(
            "/services/collector/event",
            axum::routing::post(collector_event),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hec_addr = listener.local_addr().unwrap();
    // Stops on `stop`, closing its connections (kept-alive ones included).
    let serve = |listener: tokio::net::TcpListener, app: axum::Router| {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.notified().await })
                .await;
        });
        (stop, task)
    };
    let (stop, server) = serve(listener, app.clone());

    let db = temp_sqlite();
    let exporters = serde_json::json!([{
        "name": "siem", "type": "splunk_hec", "format": "ocsf",
        "url": format!("http://{hec_addr}/services/collector/event"),
        "token": TOKEN, "index": "audit", "batch_records": BATCH
    }])
    .to_string();
    let mut edge = Served::new(
        &db.url,
        &[("MESHAUDIT_EXPORTERS", exporters.as_str())],
        None,
    );
    edge.start().await;

    // Kill -9 the edge with a batch in flight: the receiver holds its answer
    // (and indexes the batch after all: its resend is the one duplicate batch).
    kill_with_batch_in_flight(
        &mut edge,
        "siem",
        5,
        || state.lock().unwrap().hang = true,
        || state.lock().unwrap().hang = false,
    )
    .await;

    // Back-pressure: 503s are retried, never skipped.
    state.lock().unwrap().busy = true;
    post_events(edge.addr, "b", 5, 10).await;
    wait_for(30, "503 answers retried", || async {
        (state.lock().unwrap().busy_answers >= 2).then_some(())
    })
    .await;
    assert!(
        metric(edge.addr, "audit_export_failures_total", "siem")
            .await
            .unwrap()
            >= 2
    );
    state.lock().unwrap().busy = false;

    // The receiver goes away (connections refused), then comes back at its address.
    stop.notify_one();
    server.await.expect("the receiver stopped");
    let failures = metric(edge.addr, "audit_export_failures_total", "siem")
        .await
        .unwrap();
    post_events(edge.addr, "c", 5, 10).await;
    wait_for(30, "failures while the receiver is gone", || async {
        metric(edge.addr, "audit_export_failures_total", "siem")
            .await
            .filter(|f| *f > failures)
    })
    .await;
    let listener = tokio::net::TcpListener::bind(hec_addr).await.unwrap();
    let _server = serve(listener, app);

    let total = head(edge.addr).await;
    assert_eq!(total, 200);
    wait_for(120, "the cursor reaching the head", || async {
        metric(edge.addr, "audit_export_cursor_seq", "siem")
            .await
            .filter(|c| *c == total)
    })
    .await;
    let edge_events = all_events(edge.addr).await;
    edge.kill9();

    let events = state.lock().unwrap().events.clone();
    // In order without gaps, every seq present; a resend repeats at most one batch.
    let mut highest = 0i64;
    for e in &events {
        assert_eq!(e["sourcetype"], "meshaudit:http");
        assert_eq!(e["index"], "audit");
        assert_eq!(e["source"], "meshaudit");
        assert_eq!(e["host"], "api-1");
        assert!(e["time"].as_f64().is_some());
        let o = &e["event"];
        assert_eq!(o["class_uid"], 4002);
        assert_eq!(o["activity_id"], 6, "POST");
        assert_eq!(o["http_response"]["code"], 201);
        let seq = o["unmapped"]["meshaudit"]["seq"].as_i64().unwrap();
        assert!(seq <= highest + 1, "seq {seq} before {}", highest + 1);
        highest = highest.max(seq);
        let original = &edge_events[(seq - 1) as usize]["event"];
        let raw: serde_json::Value = serde_json::from_str(o["raw_data"].as_str().unwrap()).unwrap();
        assert_eq!(&raw, original, "raw_data is the original event");
        assert_eq!(o["metadata"]["uid"], original["id"]);
    }
    assert_eq!(highest, 200);
    let duplicates = events.len() as i64 - 200;
    assert!(
        (0..=BATCH).contains(&duplicates),
        "at most one batch resent after the kill: {duplicates} duplicates"
    );
}
