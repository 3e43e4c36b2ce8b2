//! Full-text search (`GET /v1/events?q=`), `GET /v1/stats`, `GET /v1/overview`
//! and the byte-exact canonical endpoint, on SQLite and on the real
//! PostgreSQL: events go in through the signed ingest and the writer, so the
//! index triggers run as in production. Also: every data call the page makes
//! needs the admin token, and a redacted secret cannot be found.

use crate::support::{pg_test_db, settings, sign, temp_sqlite, API_KEY};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use meshaudit_collector::http::{router, AppState};
use meshaudit_collector::ingest::body::{split_events, Framing};
use meshaudit_collector::metrics::Metrics;
use meshaudit_collector::prepare::prepare;
use meshaudit_collector::retain::{retain, RetainOutcome};
use meshaudit_collector::store::limits::RETAIN_CHUNK_ROWS;
use meshaudit_collector::store::{
    open, BatchWrite, DynStore, EventQuery, RawPool, RetentionAnchor,
};
use meshaudit_event::integrity::EventKeys;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

pub const TOKEN: &str = "ui-admin-token";

/// The events of the search story: what the filter would send, redaction done.
pub fn story_events() -> Vec<Value> {
    let ev = |id: &str,
              method: &str,
              path: &str,
              status: i64,
              ns: &str,
              pod: &str,
              user: &str,
              ua: &str| {
        json!({
            "id": id, "specversion": "1.0", "schemaid": "meshaudit.http/v1",
            "timestamp": "2026-03-04T05:06:07.000000+00:00",
            "tenantid": "acme", "httpmethod": method,
            "httpurl": format!("https://shop.example{path}"),
            "subject": {"userid": user},
            "kubernetes": {"namespacename": ns, "podname": pod},
            "action": {"name": path, "method": method,
                       "status": if status < 400 { "SUCCESS" } else { "FAILURE" }},
            "network": {"useragent": ua, "sourceip": "10.0.0.7"},
            "http": {"statuscode": status, "requestheaders": {"authorization": "[REDACTED]"}},
        })
    };
    let mut order = ev(
        "order",
        "POST",
        "/api/orders/17",
        201,
        "shop",
        "api-1",
        "alice",
        "curl/8.5.0",
    );
    // The filter masked the password ("hunter2") and an HMAC-mode token.
    order["eventdata"] = json!({"requestpayload": {"item": "Blue Widget", "password": "[REDACTED]",
        "token": "hmac-sha256:0123456789abcdef0123456789abcdef"}});
    let mut pay = ev(
        "payment",
        "POST",
        "/api/payments",
        402,
        "billing",
        "pay-0",
        "bob",
        "Mozilla/5.0 (X11)",
    );
    pay["eventdata"] = json!({"responsepayload": {"error": "Payment declined by issuer"}});
    let jose = ev(
        "jose",
        "GET",
        "/api/profile",
        200,
        "shop",
        "api-2",
        "José",
        "curl/8.5.0",
    );
    let mut out = vec![order, pay, jose];
    for i in 0..5 {
        out.push(ev(
            &format!("bulk-{i}"),
            "GET",
            &format!("/api/bulkexport/{i}"),
            200,
            "batch",
            "job-0",
            "cron",
            "bulker",
        ));
    }
    // A forwarder-shaped event (seed 000): no meshaudit fields at all.
    out.push(json!({"event": "ping", "request_id": "demo-1", "direction": "ingress", "ts": 1}));
    // An event whose claimed hash is wrong: stored unverified.
    out.push(
        json!({"id": "forged", "timestamp": "2026-03-04T05:30:00.000000+00:00",
        "security": {"hash": "00".repeat(32)}}),
    );
    out
}

/// The router over a migrated store at `url`, admin token [`TOKEN`].
pub async fn app(url: &str) -> (axum::Router, DynStore) {
    let store = open(url).await.expect("open store");
    store.migrate().await.expect("migrate");
    store
        .prepare_partitions(chrono::Utc::now())
        .await
        .expect("partitions");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let settings = settings(url, &[&format!("--admin-token={TOKEN}")]);
    let (state, _writer) = AppState::start(settings, store.clone(), metrics);
    (router(state), store)
}

pub async fn ingest(app: &axum::Router, events: &[Value]) {
    let mut body = Vec::new();
    for e in events {
        body.extend_from_slice(e.to_string().as_bytes());
        body.push(b'\n');
    }
    let (ts, sig) = sign(&body);
    let req = Request::post("/v1/events")
        .header("content-type", "application/x-ndjson")
        .header("x-api-key", API_KEY)
        .header("x-signature-ts", ts)
        .header("x-signature", sig)
        .body(Body::from(body))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("ingest");
    assert_eq!(resp.status(), StatusCode::OK, "ingest refused");
}

/// GET with an optional token: (status, body bytes).
pub async fn get(app: &axum::Router, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn get_json(app: &axum::Router, uri: &str) -> Value {
    let (status, body) = get(app, uri, Some(TOKEN)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("JSON")
}

/// Ids found by `q` (URL-encoded by the caller) plus extra parameters.
async fn found(app: &axum::Router, query: &str) -> Vec<String> {
    let page = get_json(app, &format!("/v1/events?{query}")).await;
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn search_story(url: &str) {
    let (app, _store) = app(url).await;
    ingest(&app, &story_events()).await;

    // Words from every indexed field, alone and combined with filters.
    assert_eq!(found(&app, "q=widget").await, ["order"]);
    assert_eq!(found(&app, "q=WIDGET").await, ["order"]);
    assert_eq!(found(&app, "q=alice").await, ["order"]);
    assert_eq!(found(&app, "q=acme&limit=2").await, ["order", "payment"]);
    assert_eq!(found(&app, "q=mozilla").await, ["payment"]);
    assert_eq!(found(&app, "q=402").await, ["payment"]);
    assert_eq!(found(&app, "q=failure").await, ["payment"]);
    assert_eq!(found(&app, "q=billing").await, ["payment"]);
    assert_eq!(found(&app, "q=pay-0").await, ["payment"]);
    assert_eq!(found(&app, "q=jos%C3%A9").await, ["jose"]);
    assert_eq!(found(&app, "q=ping").await, vec![found_id_of_ping()]);
    assert_eq!(
        found(&app, "q=declined&namespace=billing").await,
        ["payment"]
    );
    assert!(found(&app, "q=declined&namespace=shop").await.is_empty());
    assert_eq!(found(&app, "q=curl&user=Jos%C3%A9").await, ["jose"]);
    assert_eq!(found(&app, "q=curl").await, ["order", "jose"]);
    assert_eq!(found(&app, "q=curl&method=get").await, ["jose"]);
    assert_eq!(found(&app, "q=curl&status=201").await, ["order"]);
    // Phrases (order matters), prefixes, paths.
    assert_eq!(found(&app, "q=%22blue+widget%22").await, ["order"]);
    assert!(found(&app, "q=%22widget+blue%22").await.is_empty());
    assert_eq!(found(&app, "q=wid*").await, ["order"]);
    assert_eq!(found(&app, "q=%22payment+decl%22*").await, ["payment"]);
    assert_eq!(found(&app, "q=%2Fapi%2Forders%2F17").await, ["order"]);
    assert_eq!(found(&app, "q=orders+17").await, ["order"]);
    assert!(found(&app, "q=orders+18").await.is_empty());
    // Search never sees security members.
    assert!(found(&app, &format!("q={}", "00".repeat(32)))
        .await
        .is_empty());

    // Redaction: the clear secret is not in the event, so not findable; the mask is.
    assert!(found(&app, "q=hunter2").await.is_empty());
    assert_eq!(found(&app, "q=redacted+widget").await, ["order"]);
    assert_eq!(found(&app, "q=redacted").await.len(), 8);
    assert_eq!(
        found(&app, "q=0123456789abcdef0123456789abcdef").await,
        ["order"]
    );

    // The `after` cursor pages through search results.
    let p1 = get_json(&app, "/v1/events?q=bulkexport&limit=2").await;
    let ids = |p: &Value| -> Vec<String> {
        p["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&p1), ["bulk-0", "bulk-1"]);
    let c1 = p1["next_cursor"].as_i64().expect("cursor");
    let p2 = get_json(&app, &format!("/v1/events?q=bulkexport&limit=2&after={c1}")).await;
    assert_eq!(ids(&p2), ["bulk-2", "bulk-3"]);
    let c2 = p2["next_cursor"].as_i64().expect("cursor");
    let p3 = get_json(&app, &format!("/v1/events?q=bulkexport&limit=2&after={c2}")).await;
    assert_eq!(ids(&p3), ["bulk-4"]);
    assert!(p3["next_cursor"].is_null());

    // Bad queries are 400 with a message, never 500; syntax is not passed through.
    for bad in ["%22open", "a*", "*", "a*b", "%22ab%22x", "---"] {
        let (status, body) = get(&app, &format!("/v1/events?q={bad}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "q={bad}");
        let body: Value = serde_json::from_slice(&body).expect("error JSON");
        assert_eq!(body["error"], "bad_query");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("query parameter q:"),
            "{body}"
        );
    }
    for odd in [
        "NEAR(a+b)",
        "a+OR+b",
        "col%3Aval",
        "%5Ex",
        "a%27%29%3B--",
        "AND",
        "%22%22+x",
    ] {
        let (status, _) = get(&app, &format!("/v1/events?q={odd}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "q={odd}");
    }

    // Stats: counts per bucket and key, from the indexed columns.
    let s = get_json(
        &app,
        "/v1/stats?since=2026-03-04T05:00:00Z&until=2026-03-04T06:00:00Z&by=namespace&bucket=600",
    )
    .await;
    assert_eq!(s["buckets"].as_array().unwrap().len(), 6);
    assert_eq!(s["total"], 9, "{s}");
    assert_eq!(s["buckets"][0]["total"], 8);
    assert_eq!(s["buckets"][0]["counts"]["batch"], 5);
    assert_eq!(s["buckets"][0]["counts"]["shop"], 2);
    assert_eq!(s["buckets"][3]["counts"]["(none)"], 1);
    assert_eq!(s["keys"][0], "batch");
    let s = get_json(
        &app,
        "/v1/stats?since=2026-03-04T05:00:00Z&until=2026-03-04T06:00:00Z&by=status",
    )
    .await;
    assert_eq!(s["buckets"][6]["counts"]["402"], 1, "{s}");
    let s = get_json(
        &app,
        "/v1/stats?since=2026-03-04T05:00:00Z&until=2026-03-04T06:00:00Z&by=method",
    )
    .await;
    assert_eq!(s["buckets"][6]["counts"]["GET"], 6, "{s}");
    for bad in [
        "by=tenant",
        "since=nope",
        "bucket=0",
        "since=2026-03-04T06:00:00Z&until=2026-03-04T05:00:00Z",
    ] {
        let (status, _) = get(&app, &format!("/v1/stats?{bad}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Overview: head, unverified count.
    let o = get_json(&app, "/v1/overview").await;
    assert_eq!(o["head"]["seq"], 10);
    assert_eq!(o["unverified"], 1);
    assert!(o["rejections"].get("api_key").is_some());

    // The canonical JSON, byte-exact as stored: it hashes to the chain's event hash.
    let item = get_json(&app, "/v1/events/order").await;
    let (status, canonical) = get(&app, "/v1/events/order/canonical", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let parsed: Value = serde_json::from_slice(&canonical).expect("canonical is JSON");
    assert_eq!(parsed, item["event"]);
    let sent = story_events()[0].clone();
    let canon = meshaudit_event::canonical::canonical(
        &meshaudit_event::value::parse(sent.to_string().as_bytes()).expect("parse"),
    );
    assert_eq!(canonical, canon, "served bytes are the canonical form");
    let (status, _) = get(&app, "/v1/events/nope/canonical", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The forwarder event has no id: it is stored under "sha256:" + its hash.
fn found_id_of_ping() -> String {
    let ev = json!({"event": "ping", "request_id": "demo-1", "direction": "ingress", "ts": 1});
    let v = meshaudit_event::value::parse(ev.to_string().as_bytes()).expect("parse");
    format!(
        "sha256:{}",
        meshaudit_event::integrity::sha256_hex(&meshaudit_event::canonical::canonical(&v))
    )
}

#[tokio::test]
async fn search_stats_and_overview_on_sqlite() {
    let db = temp_sqlite();
    search_story(&db.url).await;
}

#[tokio::test]
async fn search_stats_and_overview_on_postgres() {
    let db = pg_test_db().await;
    search_story(&db.url).await;
}

/// The data endpoints the page calls (`collector/ui/app.js`), each refused
/// without the token and with a wrong one; and the page's script calls no
/// other `/v1/` path than these and the log's (open by SPEC §9).
#[tokio::test]
async fn every_page_data_call_needs_the_admin_token() {
    let db = temp_sqlite();
    let (app, _store) = app(&db.url).await;
    ingest(&app, &story_events()[..1]).await;
    let data = [
        "/v1/overview",
        "/v1/stats",
        "/v1/events?q=widget",
        "/v1/events",
        "/v1/events/order",
        "/v1/events/order/canonical",
        "/v1/verify",
    ];
    for uri in data {
        for token in [None, Some("wrong"), Some("")] {
            let (status, body) = get(&app, uri, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {token:?}");
            assert!(!String::from_utf8_lossy(&body).contains("widget"));
        }
        let (status, _) = get(&app, uri, Some(TOKEN)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri} with the token");
    }
    let script = include_str!("../../ui/app.js");
    let mut rest = script;
    while let Some(i) = rest.find("\"/v1/") {
        let tail = &rest[i + 1..];
        let end = tail.find(['"', '?']).unwrap_or(tail.len());
        let path = &tail[..end];
        let covered = path.starts_with("/v1/log/")
            || data.iter().any(|d| d.split('?').next() == Some(path))
            || path == "/v1/events/"; // `/v1/events/{id}` and `/canonical`, covered above
        assert!(covered, "app.js calls {path}, not covered by this test");
        rest = &tail[end..];
    }
    // The page itself holds no data and is served openly, with a strict CSP.
    let resp = app
        .clone()
        .oneshot(Request::get("/ui/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !String::from_utf8_lossy(&html).contains("<script>"),
        "no inline script"
    );
    assert!(!script.contains("innerHTML"), "app.js never uses innerHTML");
}

/// `n` prepared events `{prefix}-{i}` whose path holds `word`.
fn worded(prefix: &str, word: &str, n: usize) -> BatchWrite {
    let mut body = Vec::new();
    for i in 0..n {
        let ev = json!({"id": format!("{prefix}-{i}"), "timestamp": "2026-03-04T05:06:07.000000+00:00",
            "action": {"name": format!("/{word}/{i}"), "method": "GET"}});
        body.extend_from_slice(ev.to_string().as_bytes());
        body.push(b'\n');
    }
    let events = split_events(&body, Framing::Ndjson)
        .expect("NDJSON")
        .into_iter()
        .map(|raw| prepare(raw, &EventKeys::default()))
        .collect();
    BatchWrite {
        events,
        idempotency: None,
    }
}

/// June 1st of `year`, midnight UTC (when old batches were received).
fn june(year: i32) -> chrono::DateTime<chrono::Utc> {
    chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, year, 6, 1, 0, 0, 0).unwrap()
}

/// A migrated store at `url` holding `batches`, each received at its time.
async fn store_with(
    url: &str,
    batches: Vec<(BatchWrite, chrono::DateTime<chrono::Utc>)>,
) -> DynStore {
    let store = open(url).await.expect("open store");
    store.migrate().await.expect("migrate");
    store
        .prepare_partitions(chrono::Utc::now())
        .await
        .expect("partitions");
    for (batch, received) in batches {
        store
            .append_batches(&[batch], received, 60)
            .await
            .expect("append");
    }
    store
}

/// Rows in the search index, and those matching `word`, straight from the database.
async fn index_rows(store: &DynStore, word: &str) -> (i64, i64) {
    match store.raw_pool().expect("an SQL store") {
        RawPool::Sqlite(pool) => (
            sqlx::query_scalar("SELECT count(*) FROM events_fts")
                .fetch_one(pool)
                .await
                .expect("count the index"),
            sqlx::query_scalar("SELECT count(*) FROM events_fts WHERE events_fts MATCH ?")
                .bind(format!("\"{word}\""))
                .fetch_one(pool)
                .await
                .expect("match the index"),
        ),
        RawPool::Postgres(pool) => (
            sqlx::query_scalar("SELECT count(*) FROM events_search")
                .fetch_one(pool)
                .await
                .expect("count the index"),
            sqlx::query_scalar(
                "SELECT count(*) FROM events_search WHERE doc @@ to_tsquery('simple', $1)",
            )
            .bind(word)
            .fetch_one(pool)
            .await
            .expect("match the index"),
        ),
    }
}

/// Events search finds for `word` (at most 1000).
async fn searched(store: &DynStore, word: &str) -> usize {
    store
        .query(&EventQuery {
            text: Some(meshaudit_collector::search::query::parse(word).expect("query")),
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .expect("search")
        .len()
}

/// The index and the events agree: one index row per stored event.
async fn assert_index_matches_events(store: &DynStore, when: &str) {
    let stored = store.scan(0, 100_000).await.expect("scan").len() as i64;
    let (rows, _) = index_rows(store, "x").await;
    assert_eq!(rows, stored, "{when}: index rows vs stored events");
}

/// `retain` removes the words of the events it removes, in each chunk's own
/// transaction: search finds none of them afterwards and the index holds
/// exactly the kept events, also after a removal was interrupted and finished
/// by the next run.
async fn retain_forgets_removed_words(url: &str) {
    let now = chrono::Utc::now();
    // More old events than one chunk, so the removal takes several transactions.
    let old = RETAIN_CHUNK_ROWS as usize + 500;
    let store = store_with(
        url,
        vec![
            (worded("old", "zanzibar", old), june(2020)),
            (worded("older", "quokka", 300), june(2021)),
            (worded("new", "kept", 3), now),
        ],
    )
    .await;
    assert_eq!(index_rows(&store, "zanzibar").await.1, old as i64);
    assert_index_matches_events(&store, "before retain").await;

    let archives = tempfile::tempdir().expect("temp dir");
    let outcome = retain(store.as_ref(), june(2021), archives.path(), now)
        .await
        .expect("retain");
    let RetainOutcome::Removed { anchor, .. } = outcome else {
        panic!("expected a removal, got {outcome:?}");
    };
    assert_eq!(anchor.removed, old as i64);
    assert_eq!(searched(&store, "zanzibar").await, 0);
    assert_eq!(
        index_rows(&store, "zanzibar").await.1,
        0,
        "no removed word left"
    );
    assert_eq!(searched(&store, "quokka").await, 300);
    assert_index_matches_events(&store, "after retain").await;

    // An interrupted run: its anchor recorded, one chunk removed.
    let rows = store.scan(0, 100_000).await.expect("scan");
    let first_kept = rows[300].seq;
    store
        .record_anchor(&RetentionAnchor {
            first_kept_seq: first_kept,
            prev_chain_hash: rows[299].chain_hash.clone(),
            archive_sha256: "0".repeat(64),
            archive_name: "meshaudit-events-interrupted.ndjson.gz".to_owned(),
            removed: 300,
            created_at: meshaudit_collector::store::format_time(now),
        })
        .await
        .expect("record the anchor");
    assert_eq!(
        store
            .delete_chunk_below(first_kept, 100)
            .await
            .expect("one chunk"),
        100
    );
    assert_eq!(index_rows(&store, "quokka").await.1, 200);
    assert_index_matches_events(&store, "after one chunk").await;
    // The next run finishes the removal (and has nothing of its own to remove).
    assert_eq!(
        retain(store.as_ref(), june(2022), archives.path(), now)
            .await
            .expect("retain"),
        RetainOutcome::Nothing
    );
    assert_eq!(searched(&store, "quokka").await, 0);
    assert_eq!(
        index_rows(&store, "quokka").await.1,
        0,
        "no removed word left"
    );
    assert_eq!(searched(&store, "kept").await, 3);
    assert_index_matches_events(&store, "after the finished removal").await;
    assert_eq!(store.scan(0, 100).await.expect("scan").len(), 3);
}

#[tokio::test]
async fn retain_forgets_removed_words_on_sqlite() {
    let db = temp_sqlite();
    retain_forgets_removed_words(&db.url).await;
}

#[tokio::test]
async fn retain_forgets_removed_words_on_postgres() {
    let db = pg_test_db().await;
    retain_forgets_removed_words(&db.url).await;
}

/// SQLite: the index rows an earlier collector left behind when its `retain`
/// removed events (no delete trigger then) go with migration
/// `*_search_removed_words.sql`; and a chunk removes events and words
/// together after another connection changed the schema.
#[tokio::test]
async fn sqlite_index_leftovers_go_and_a_schema_change_does_not_trip_removal() {
    let db = temp_sqlite();
    let now = chrono::Utc::now();
    let store = store_with(
        &db.url,
        vec![
            (worded("old", "zanzibar", 50), june(2020)),
            (worded("older", "quokka", 50), june(2021)),
            (worded("new", "kept", 3), now),
        ],
    )
    .await;
    let Some(RawPool::Sqlite(pool)) = store.raw_pool() else {
        unreachable!("an SQLite store");
    };
    let rows = store.scan(0, 1000).await.expect("scan");
    let anchor = |i: usize| RetentionAnchor {
        first_kept_seq: rows[i].seq,
        prev_chain_hash: rows[i - 1].chain_hash.clone(),
        archive_sha256: "0".repeat(64),
        archive_name: format!("meshaudit-events-{i}.ndjson.gz"),
        removed: 50,
        created_at: meshaudit_collector::store::format_time(now),
    };
    // What the earlier collector did: one removal finished, one interrupted,
    // the events deleted and their words left in the index.
    store.record_anchor(&anchor(50)).await.expect("anchor");
    store.record_anchor(&anchor(100)).await.expect("anchor");
    sqlx::query("DELETE FROM events WHERE seq < ?")
        .bind(rows[50].seq)
        .execute(pool)
        .await
        .expect("remove the oldest");
    sqlx::query("DELETE FROM events WHERE seq >= ? AND seq < ?")
        .bind(rows[80].seq)
        .bind(rows[100].seq)
        .execute(pool)
        .await
        .expect("remove a chunk");
    assert_eq!(index_rows(&store, "zanzibar").await, (103, 50));
    sqlx::raw_sql(include_str!(
        "../../migrations/sqlite/20261130114000_search_removed_words.sql"
    ))
    .execute(pool)
    .await
    .expect("the migration");
    assert_eq!(index_rows(&store, "zanzibar").await.1, 0);
    assert_eq!(index_rows(&store, "quokka").await.1, 30);
    assert_index_matches_events(&store, "after the migration").await;

    // Another connection changes the schema before a pooled connection,
    // which read the schema earlier, runs a chunk: events and words still go
    // together. (The dropped trigger made SQLite 3.46 fail a DELETE prepared
    // in that state outside a write transaction; a chunk begins IMMEDIATE,
    // which reloads the schema first.)
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("another connection");
    for sql in ["CREATE TABLE scratch (x INTEGER)", "DROP TABLE scratch"] {
        sqlx::query(sql)
            .execute(&mut other)
            .await
            .expect("schema change");
    }
    assert_eq!(
        store
            .delete_chunk_below(rows[100].seq, 10)
            .await
            .expect("one chunk after the schema change"),
        10
    );
    assert_index_matches_events(&store, "after a chunk").await;
    let archives = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        retain(store.as_ref(), june(2022), archives.path(), now)
            .await
            .expect("retain finishes the removal"),
        RetainOutcome::Nothing
    );
    assert_eq!(index_rows(&store, "quokka").await.1, 0);
    assert_eq!(searched(&store, "kept").await, 3);
    assert_index_matches_events(&store, "after the finished removal").await;
}
