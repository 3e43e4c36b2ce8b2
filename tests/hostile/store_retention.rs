//! Store replays, retention (issue 17 items 5 and 9): a database writer
//! forges a retention anchor and deletes the events below it; an operator
//! types a future date into `retain`.

use crate::support::{cli, events, pg_db, post_signed, temp_sqlite, Collector};

/// The attack of item 5 in SQL: an anchor at seq 6 carrying the real chain
/// hash of seq 5, and the DELETE the append-only trigger then lets through.
const FORGE: &str = "INSERT INTO retention_log (first_kept_seq, prev_chain_hash, archive_sha256, archive_name, removed, created_at) \
     VALUES (6, (SELECT chain_hash FROM events WHERE seq = 5), 'abababababababababababababababababababababababababababababababab', \
     'meshaudit-events-000000000001-000000000005.ndjson.gz', 5, '2026-01-01T00:00:00.000000+00:00')";
const DELETE_BELOW: &str = "DELETE FROM events WHERE seq < 6";

async fn forged_anchor_is_caught(url: &str, attack: impl std::future::Future<Output = ()>) {
    let collector = Collector::start(url, &[]).await;
    let r = post_signed(collector.addr, &events("h", 8), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let before = collector.admin_get("/v1/verify").await.json();
    assert_eq!(before["ok"], true, "{before}");
    attack.await;
    // Once resumed from the last verified link, once walking everything.
    for path in ["/v1/verify?incremental=1", "/v1/verify"] {
        let r = collector.admin_get(path).await.json();
        assert_eq!(
            r["ok"], false,
            "{path}: a forged anchor must not verify: {r}"
        );
        assert_eq!(r["reason"], "unproven_anchor", "{r}");
        assert_eq!(r["anchors"][0]["status"], "unproven", "{r}");
    }
    drop(collector);
    let (code, out) = cli(url, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNPROVEN"), "{out}");
    let empty = tempfile::tempdir().unwrap();
    let (code, out) = cli(
        url,
        &[
            "verify",
            "--archive-dir",
            &empty.path().display().to_string(),
        ],
    );
    assert_eq!(code, 1, "the archive is not there: {out}");
}

#[tokio::test]
async fn forged_retention_anchor_sqlite() {
    let db = temp_sqlite();
    let url = db.url.clone();
    forged_anchor_is_caught(&db.url, async move {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(FORGE).execute(&pool).await.unwrap();
        let gone = sqlx::query(DELETE_BELOW).execute(&pool).await.unwrap();
        assert_eq!(gone.rows_affected(), 5);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn forged_retention_anchor_postgres() {
    let db = pg_db().await;
    let url = db.url.clone();
    forged_anchor_is_caught(&db.url, async move {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(FORGE).execute(&pool).await.unwrap();
        // The owner may as well switch the triggers off.
        sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(DELETE_BELOW).execute(&pool).await.unwrap();
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn retain_refuses_young_and_future_dates() {
    let db = temp_sqlite();
    let collector = Collector::start(&db.url, &[]).await;
    let r = post_signed(collector.addr, &events("r", 4), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(collector);
    let archive = db.dir.path().join("archive").display().to_string();
    let in_an_hour = chrono_free_rfc3339(3600);
    let an_hour_ago = chrono_free_rfc3339(-3600);
    for before in ["2999-01-01", in_an_hour.as_str(), an_hour_ago.as_str()] {
        let (code, out) = cli(
            &db.url,
            &["retain", "--before", before, "--archive", &archive],
        );
        assert_eq!(code, 2, "--before {before} must be refused: {out}");
        assert!(out.contains("--force"), "{out}");
    }
    let (code, out) = cli(&db.url, &["verify"]);
    assert_eq!(code, 0, "nothing was removed: {out}");
    assert!(out.contains("checked 4 events"), "{out}");
    // A smaller minimum age is the operator's explicit choice.
    let (code, out) = cli(
        &db.url,
        &[
            "retain",
            "--before",
            &an_hour_ago,
            "--min-age",
            "30m",
            "--archive",
            &archive,
        ],
    );
    assert_eq!(code, 0, "{out}");
}

/// `now + offset_secs` as RFC 3339 UTC, from the system clock.
fn chrono_free_rfc3339(offset_secs: i64) -> String {
    let t = crate::support::now_secs() + offset_secs;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn verify_endpoint_is_never_open() {
    let db = temp_sqlite();
    let collector = Collector::start(&db.url, &[("MESHAUDIT_ADMIN_TOKEN", "")]).await;
    let r = crate::support::http(collector.addr, "GET", "/v1/verify", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "admin_token_not_configured");
    let with = Collector::start(&db.url, &[]).await;
    let r = crate::support::http(
        with.addr,
        "GET",
        "/v1/verify",
        &[("Authorization", "Bearer nope")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
}
