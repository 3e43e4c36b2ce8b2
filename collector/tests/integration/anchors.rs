//! Retention anchors prove nothing by themselves (issue 17 item 5): a
//! database writer inserts a `retention_log` row and deletes every event below
//! it, as the attack would; `verify` must not report OK. An anchor counts only
//! when its archive is present with the recorded SHA-256 and an intact chain.
//! Also: the recorded head is compared by hash, not only by `seq`.

use crate::support::{ndjson_events, pg_test_db, run_cli, temp_sqlite};
use chrono::Utc;
use meshaudit_collector::chain::next_chain_hash;
use meshaudit_collector::intake::{split_events, Framing};
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
    assert_eq!(gone.rows_affected(), 5, "the trigger lets the delete through");
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

/// The newest row rewritten consistently (its event hash, chain hash and
/// columns recomputed) still disagrees with the recorded head's hash.
#[tokio::test]
async fn head_hash_is_compared_sqlite() {
    let db = temp_sqlite();
    let store = SqliteStore::connect(&db.url).await.unwrap();
    load(&store, 4).await;
    let forged = events("forged", 1).remove(0);
    let prev: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 3")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let chain = next_chain_hash(&prev, 4, &forged.event_hash);
    sqlx::query("DROP TRIGGER events_no_update")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET id = ?, event_hash = ?, chain_hash = ?, canonical = ?, path = '/orders/0' WHERE seq = 4",
    )
    .bind(&forged.id)
    .bind(&forged.event_hash)
    .bind(&chain)
    .bind(String::from_utf8(forged.canonical.clone()).unwrap())
    .execute(store.pool())
    .await
    .unwrap();
    let (code, out) = run_cli(&db.url, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first bad seq 4 (head_mismatch)"), "{out}");
}

#[tokio::test]
async fn head_hash_is_compared_postgres() {
    let db = pg_test_db().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    load(&store, 4).await;
    let forged = events("forged", 1).remove(0);
    let prev: String = sqlx::query_scalar("SELECT chain_hash FROM events WHERE seq = 3")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let chain = next_chain_hash(&prev, 4, &forged.event_hash);
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET id = $1, event_hash = $2, chain_hash = $3, canonical = $4, path = '/orders/0' WHERE seq = 4",
    )
    .bind(&forged.id)
    .bind(&forged.event_hash)
    .bind(&chain)
    .bind(String::from_utf8(forged.canonical.clone()).unwrap())
    .execute(store.pool())
    .await
    .unwrap();
    let (code, out) = run_cli(&db.url, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("first bad seq 4 (head_mismatch)"), "{out}");
    store.pool().close().await;
}
