//! Retention anchors prove nothing by themselves (issue 17 item 5): a
//! database writer inserts a `retention_log` row and deletes every event below
//! it, as the attack would; `verify` must not report OK. An anchor counts only
//! when its archive is present with the recorded SHA-256 and an intact chain.
//! Also: the recorded head is compared by hash, not only by `seq`.

use crate::support::{ndjson_events, pg_test_db, run_cli, temp_sqlite};
use chrono::Utc;
use meshaudit_collector::chain::next_chain_hash;
use meshaudit_collector::ingest::body::{split_events, Framing};
use meshaudit_collector::prepare::{prepare, PreparedEvent};
use meshaudit_collector::store::postgres::PgStore;
use meshaudit_collector::store::sqlite::SqliteStore;
use meshaudit_collector::store::{BatchWrite, EventStore};
use meshaudit_event::integrity::EventKeys;

fn events(prefix: &str, n: usize) -> Vec<PreparedEvent> {
    split_events(&ndjson_events(prefix, n), Framing::Ndjson)
        .unwrap()
        .into_iter()
        .map(|raw| prepare(raw, &EventKeys::default()))
        .collect()
}

async fn load<S: EventStore>(store: &S, n: usize) {
    store.migrate().await.unwrap();
    store.prepare_partitions(Utc::now()).await.unwrap();
    store
        .append_batches(
            &[BatchWrite {
                events: events("a", n),
                idempotency: None,
            }],
            Utc::now(),
            60,
        )
        .await
        .unwrap();
}

const FAKE_ARCHIVE: &str = "meshaudit-events-000000000001-000000000005.ndjson.gz";

/// The attacker's statements: a forged anchor at seq 6 whose chain hash is the
/// real one of seq 5 (readable by anyone who can write), then the DELETE the
/// trigger now lets through.
fn forge_sql(placeholder: &str) -> (String, String) {
    let p = |i: usize| {
        if placeholder == "$" {
            format!("${i}")
        } else {
            "?".to_owned()
        }
    };
    (
        format!(
            "INSERT INTO retention_log (first_kept_seq, prev_chain_hash, archive_sha256, archive_name, removed, created_at) \
             VALUES (6, {}, '{}', '{FAKE_ARCHIVE}', 5, '2026-01-01T00:00:00.000000+00:00')",
            p(1),
            "ab".repeat(32)
        ),
        "DELETE FROM events WHERE seq < 6".to_owned(),
    )
}

fn assert_unproven(url: &str, dir: &std::path::Path) {
    let (code, out) = run_cli(url, &["verify"]);
    assert_eq!(code, 1, "a forged anchor must not verify: {out}");
    assert!(out.contains("UNPROVEN"), "{out}");
    assert!(out.contains("first_kept_seq 6"), "{out}");
    // Told where the archives are: the file is not there.
    let dir_s = dir.display().to_string();
    let (code, out) = run_cli(url, &["verify", "--archive-dir", &dir_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not found"), "{out}");
    // The attacker also drops a file of that name: its hash gives it away.
    std::fs::write(dir.join(FAKE_ARCHIVE), b"forged").unwrap();
    let (code, out) = run_cli(url, &["verify", "--archive", &dir_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("archive_sha256_mismatch"), "{out}");
    // Only an explicit acceptance lets it pass, and it still says so.
    let (code, out) = run_cli(url, &["verify", "--accept-unproven-anchor"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WARNING: accepted unproven"), "{out}");
}

#[tokio::test]
async fn forged_anchor_sqlite() {
    let db = temp_sqlite();
    let store = SqliteStore::connect(&db.url).await.unwrap();
    load(&store, 8).await;
    let prev: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 5")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let (insert, delete) = forge_sql("?");
    sqlx::query(&insert)
        .bind(&prev)
        .execute(store.pool())
        .await
        .unwrap();
    let gone = sqlx::query(&delete).execute(store.pool()).await.unwrap();
    assert_eq!(
        gone.rows_affected(),
        5,
        "the trigger lets the delete through"
    );
    assert_unproven(&db.url, db.dir.path());
}

#[tokio::test]
async fn forged_anchor_postgres() {
    let db = pg_test_db().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    load(&store, 8).await;
    let prev: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 5")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let (insert, delete) = forge_sql("$");
    sqlx::query(&insert)
        .bind(&prev)
        .execute(store.pool())
        .await
        .unwrap();
    // The database owner can also switch the triggers off altogether.
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&delete).execute(store.pool()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_unproven(&db.url, dir.path());
    store.pool().close().await;
}

/// A forged archive name cannot send the verifier outside the archive directory.
#[tokio::test]
async fn archive_names_stay_in_the_directory() {
    let db = temp_sqlite();
    let store = SqliteStore::connect(&db.url).await.unwrap();
    load(&store, 3).await;
    let prev: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 2")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO retention_log (first_kept_seq, prev_chain_hash, archive_sha256, archive_name, removed, created_at) \
         VALUES (3, ?, 'x', '../../etc/passwd', 2, 'now')",
    )
    .bind(&prev)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("DELETE FROM events WHERE seq < 3")
        .execute(store.pool())
        .await
        .unwrap();
    let dir = db.dir.path().display().to_string();
    let (code, out) = run_cli(&db.url, &["verify", "--archive-dir", &dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("archive_name_invalid"), "{out}");
}

/// The newest row (seq 4, after `prev` at seq 3) rewritten consistently: its
/// event hash, chain hash and columns recomputed, the triggers out of the way.
fn rewrite_newest(prev: &str, disable_triggers: &str) -> Vec<String> {
    let forged = events("forged", 1).remove(0);
    let chain = next_chain_hash(prev, 4, &forged.event_hash);
    let canonical = String::from_utf8(forged.canonical)
        .unwrap()
        .replace('\'', "''");
    vec![
        disable_triggers.to_owned(),
        format!(
            "UPDATE events SET id = '{}', event_hash = '{}', chain_hash = '{chain}', canonical = '{canonical}', \
             path = '/orders/0' WHERE seq = 4",
            forged.id, forged.event_hash
        ),
    ]
}

/// Such a rewrite still disagrees with the recorded head's hash.
fn assert_head_mismatch(url: &str) {
    let (code, out) = run_cli(url, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first bad seq 4 (head_mismatch)"), "{out}");
}

const PREV_OF_NEWEST: &str = "SELECT chain_hash FROM events WHERE seq = 3";

#[tokio::test]
async fn head_hash_is_compared_sqlite() {
    let db = temp_sqlite();
    let store = SqliteStore::connect(&db.url).await.unwrap();
    load(&store, 4).await;
    // One connection for the schema change and the write (see tamper.rs).
    let mut conn = store.pool().acquire().await.unwrap();
    let prev: String = sqlx::query_scalar(PREV_OF_NEWEST)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    for sql in rewrite_newest(&prev, "DROP TRIGGER events_no_update") {
        sqlx::query(&sql).execute(&mut *conn).await.unwrap();
    }
    assert_head_mismatch(&db.url);
}

#[tokio::test]
async fn head_hash_is_compared_postgres() {
    let db = pg_test_db().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    load(&store, 4).await;
    let pool = store.pool();
    let prev: String = sqlx::query_scalar(PREV_OF_NEWEST)
        .fetch_one(pool)
        .await
        .unwrap();
    for sql in rewrite_newest(&prev, "ALTER TABLE events DISABLE TRIGGER USER") {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
    assert_head_mismatch(&db.url);
    pool.close().await;
}

async fn get_verify(
    app: &crate::support::InProcess,
    query: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::get(format!("/v1/verify{query}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .router()
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn append(store: &SqliteStore, prefix: &str, n: usize) {
    store
        .append_batches(
            &[BatchWrite {
                events: events(prefix, n),
                idempotency: None,
            }],
            Utc::now(),
            60,
        )
        .await
        .unwrap();
}

/// `GET /v1/verify` is never open, resumes from where it last got, reports
/// unproven anchors, and still sees rows cut off below its watermark.
#[tokio::test]
async fn verify_endpoint_needs_a_token_resumes_and_reports_anchors() {
    let open = crate::support::InProcess::new(&[]).await;
    let (status, body) = get_verify(&open, "", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "admin_token_not_configured");

    let app = crate::support::InProcess::new(&["--admin-token", "adm1n"]).await;
    let (status, _) = get_verify(&app, "", None).await;
    assert_eq!(status, 401);
    append(&app.store, "x", 5).await;
    let (status, r) = get_verify(&app, "", Some("adm1n")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            r["ok"].as_bool(),
            r["checked"].as_u64(),
            r["from_seq"].as_i64()
        ),
        (Some(true), Some(5), Some(0)),
        "{r}"
    );
    append(&app.store, "y", 3).await;
    let (_, r) = get_verify(&app, "?incremental=1", Some("adm1n")).await;
    assert_eq!(
        (
            r["ok"].as_bool(),
            r["checked"].as_u64(),
            r["from_seq"].as_i64()
        ),
        (Some(true), Some(3), Some(5)),
        "incremental: {r}"
    );
    let (_, r) = get_verify(&app, "", Some("adm1n")).await;
    assert_eq!(
        (r["checked"].as_u64(), r["from_seq"].as_i64()),
        (Some(8), Some(0)),
        "{r}"
    );
    let (status, _) = get_verify(&app, "?incremental=maybe", Some("adm1n")).await;
    assert_eq!(status, 400);

    // The forged anchor of item 5.
    let pool = app.store.pool();
    let prev: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 5")
        .fetch_one(pool)
        .await
        .unwrap();
    let (insert, delete) = forge_sql("?");
    sqlx::query(&insert)
        .bind(&prev)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(&delete).execute(pool).await.unwrap();
    for query in ["?incremental=1", ""] {
        let (_, r) = get_verify(&app, query, Some("adm1n")).await;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["reason"], "unproven_anchor", "{r}");
        assert_eq!(r["first_bad_seq"], 1, "{r}");
        assert_eq!(r["anchors"][0]["status"], "unproven", "{r}");
        assert_eq!(r["anchors"][0]["first_kept_seq"], 6, "{r}");
    }

    // The head rolled back below the watermark (as when the newest rows are
    // cut off together with the head row): the rows beyond it are caught.
    let prev7: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 7")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE chain_head SET seq = 7, chain_hash = '{prev7}'"
    ))
    .execute(pool)
    .await
    .unwrap();
    for query in ["?incremental=1", ""] {
        let (_, r) = get_verify(&app, query, Some("adm1n")).await;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["first_bad_seq"], 8, "{r}");
    }
}
