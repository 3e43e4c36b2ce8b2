//! Store and CLI hardening (issue 17): the `query` table escapes what clients
//! wrote; `retain` removes in bounded chunks while ingest keeps being served.

use crate::support::{post_signed, run_cli, temp_sqlite, CollectorProcess};

/// An event full of terminal escape sequences, as a hostile client sends it.
const HOSTILE: &str = "{\"id\":\"evil\\r\\u001b[2K\",\"httpmethod\":\"GET\\u001b]0;pwned\\u0007\",\
\"action\":{\"name\":\"/x\\u001b[31m\\u009b2J\\u202e\\n\\tfake row\"},\"http\":{\"statuscode\":\"\\u001bc\"}}\n";

#[tokio::test]
async fn query_table_escapes_control_characters() {
    let db = temp_sqlite();
    let collector = CollectorProcess::start(&db.url, &[]).await;
    let r = post_signed(collector.addr, HOSTILE.as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(collector);
    let out = crate::support::collector_command()
        .args(["query"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(bad.is_empty(), "raw control characters {bad:?} in:\n{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "header + one row, no injected line: {text}"
    );
    assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "{text}");
    assert!(text.contains("evil\\r\\u{1b}[2K"), "{text}");
    // NDJSON is JSON: its escapes already keep the terminal safe, and it stays exact.
    let (code, out) = run_cli(&db.url, &["query", "--format", "ndjson"]);
    assert_eq!(code, 0);
    assert!(!out.contains('\u{1b}'), "{out}");
    let item: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(item["id"], "evil\r\u{1b}[2K");
}

/// `retain` removes rows in chunks after recording its anchor, so a run can
/// stop half-way: the rows left below the anchor still verify (the walk
/// starts below them and must meet the anchor), and the next run finishes.
#[tokio::test]
async fn an_interrupted_retain_verifies_and_is_finished_by_the_next() {
    use chrono::{TimeZone, Utc};
    use meshaudit_collector::retain::{retain, RetainOutcome};
    use meshaudit_collector::store::sqlite::SqliteStore;
    use meshaudit_collector::store::EventStore;
    use meshaudit_collector::verify::{verify_store, VerifyOptions};

    let a = temp_sqlite();
    let store = SqliteStore::connect(&a.url).await.unwrap();
    append_in_2020(&store, 10).await;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    store.pool().close().await;
    // The same store twice: one retains fully, the other is "interrupted".
    let b = temp_sqlite();
    std::fs::copy(
        a.dir.path().join("events.db"),
        b.dir.path().join("events.db"),
    )
    .unwrap();
    let whole = SqliteStore::connect(&a.url).await.unwrap();
    let archive = a.dir.path().join("archive");
    let cutoff = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
    let RetainOutcome::Removed { anchor, .. } =
        retain(&whole, cutoff, &archive, Utc::now()).await.unwrap()
    else {
        panic!("expected a removal");
    };
    assert_eq!(anchor.first_kept_seq, 11);

    let cut = SqliteStore::connect(&b.url).await.unwrap();
    cut.record_anchor(&anchor).await.unwrap();
    assert_eq!(
        cut.delete_chunk_below(anchor.first_kept_seq, 4)
            .await
            .unwrap(),
        4
    );
    let proven = VerifyOptions {
        archive_dir: Some(archive.clone()),
        ..VerifyOptions::default()
    };
    let report = verify_store(&cut, &proven, |_| {}).await.unwrap();
    assert!(
        report.ok,
        "rows 1..6 left below the anchor still verify: {report:?}"
    );
    assert_eq!(report.checked, 6);
    // The next run removes the rest first (nothing newer to archive here).
    assert_eq!(
        retain(&cut, cutoff, &archive, Utc::now()).await.unwrap(),
        RetainOutcome::Nothing
    );
    assert!(cut.scan(0, 100).await.unwrap().is_empty());
    let report = verify_store(&cut, &proven, |_| {}).await.unwrap();
    assert!(report.ok, "{report:?}");
}

/// Migrates `store` and appends `n` events received on 2020-01-01.
async fn append_in_2020(store: &dyn meshaudit_collector::store::EventStore, n: usize) {
    use chrono::{TimeZone, Utc};
    use meshaudit_collector::store::BatchWrite;
    store.migrate().await.unwrap();
    let old = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let events = meshaudit_collector::ingest::body::split_events(
        &crate::support::ndjson_events("i", n),
        meshaudit_collector::ingest::body::Framing::Ndjson,
    )
    .unwrap()
    .into_iter()
    .map(|raw| {
        meshaudit_collector::prepare::prepare(
            raw,
            &meshaudit_event::integrity::EventKeys::default(),
        )
    })
    .collect();
    let batch = [BatchWrite {
        events,
        idempotency: None,
    }];
    store.append_batches(&batch, old, 60).await.unwrap();
}

/// Every wait of the stores under test gives up after 200 ms.
const IMPATIENT: meshaudit_collector::store::limits::DbTimeouts =
    meshaudit_collector::store::limits::DbTimeouts {
        op: std::time::Duration::from_millis(200),
    };

/// What a busy ingest holds: SQLite's one write lock, or PostgreSQL's append
/// lock (which recording an anchor takes), from a connection of its own.
enum Locker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Locker {
    async fn take(url: &str) -> Self {
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            Locker::Sqlite(c)
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(meshaudit_collector::store::postgres::APPEND_LOCK)
                .execute(&mut c)
                .await
                .unwrap();
            Locker::Postgres(c)
        }
    }

    async fn release(self) {
        match self {
            Locker::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Locker::Postgres(mut c) => {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(meshaudit_collector::store::postgres::APPEND_LOCK)
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

/// A busy store's lock can be out of reach for longer than
/// `MESHAUDIT_DB_TIMEOUT_MS` (here 7× the store's 200 ms): `retain` waits its
/// turn instead of failing with "database is locked" (SQLite) or a lock
/// timeout (PostgreSQL), and the removal completes and verifies.
async fn retain_waits_its_turn(store: &dyn meshaudit_collector::store::EventStore, url: &str) {
    use chrono::{TimeZone, Utc};
    use meshaudit_collector::retain::{retain_with_patience, RetainOutcome};
    use meshaudit_collector::verify::{verify_store, VerifyOptions};
    use std::time::Duration;

    append_in_2020(store, 10).await;
    let locker = Locker::take(url).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let cutoff = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
    let run = retain_with_patience(store, cutoff, &archive, Utc::now(), Duration::from_secs(60));
    let release = async {
        tokio::time::sleep(Duration::from_millis(1400)).await;
        locker.release().await;
    };
    let (outcome, ()) = tokio::join!(run, release);
    let RetainOutcome::Removed { anchor, .. } = outcome.expect("retain waited for the lock") else {
        panic!("expected a removal");
    };
    assert_eq!((anchor.first_kept_seq, anchor.removed), (11, 10));
    assert!(store.scan(0, 100).await.unwrap().is_empty());
    let proven = VerifyOptions {
        archive_dir: Some(archive),
        ..VerifyOptions::default()
    };
    let report = verify_store(store, &proven, |_| {}).await.unwrap();
    assert!(report.ok, "{report:?}");
}

/// A lock that outlasts `--patience` ends `retain` with an error that says
/// what it was doing; nothing was recorded or removed, and the store verifies.
async fn retain_gives_up_and_changes_nothing(
    store: &dyn meshaudit_collector::store::EventStore,
    url: &str,
) {
    use chrono::{TimeZone, Utc};
    use meshaudit_collector::retain::retain_with_patience;
    use meshaudit_collector::verify::{verify_store, VerifyOptions};
    use std::time::Duration;

    append_in_2020(store, 10).await;
    let locker = Locker::take(url).await;
    let dir = tempfile::tempdir().unwrap();
    let cutoff = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
    let err = retain_with_patience(
        store,
        cutoff,
        &dir.path().join("archive"),
        Utc::now(),
        Duration::from_secs(1),
    )
    .await
    .expect_err("the lock outlasts the patience");
    let msg = err.to_string();
    assert!(
        msg.contains("recording the retention anchor") && msg.contains("stayed busy for 1 s"),
        "{msg}"
    );
    locker.release().await;
    assert!(store.retention_anchor().await.unwrap().is_none());
    assert_eq!(store.scan(0, 100).await.unwrap().len(), 10);
    let report = verify_store(store, &VerifyOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.ok && report.checked == 10, "{report:?}");
}

#[tokio::test]
async fn retain_waits_its_turn_sqlite() {
    use meshaudit_collector::store::sqlite::SqliteStore;
    let db = temp_sqlite();
    let store = SqliteStore::connect_with(&db.url, IMPATIENT).await.unwrap();
    retain_waits_its_turn(&store, &db.url).await;
}

#[tokio::test]
async fn retain_waits_its_turn_postgres() {
    use meshaudit_collector::store::postgres::PgStore;
    let db = crate::support::pg_test_db().await;
    let store = PgStore::connect_with(&db.url, IMPATIENT).await.unwrap();
    retain_waits_its_turn(&store, &db.url).await;
}

#[tokio::test]
async fn retain_gives_up_after_its_patience_sqlite() {
    use meshaudit_collector::store::sqlite::SqliteStore;
    let db = temp_sqlite();
    let store = SqliteStore::connect_with(&db.url, IMPATIENT).await.unwrap();
    retain_gives_up_and_changes_nothing(&store, &db.url).await;
}

#[tokio::test]
async fn retain_gives_up_after_its_patience_postgres() {
    use meshaudit_collector::store::postgres::PgStore;
    let db = crate::support::pg_test_db().await;
    let store = PgStore::connect_with(&db.url, IMPATIENT).await.unwrap();
    retain_gives_up_and_changes_nothing(&store, &db.url).await;
}
