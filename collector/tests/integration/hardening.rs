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
    use meshaudit_collector::store::{BatchWrite, EventStore};
    use meshaudit_collector::verify::{verify_store, VerifyOptions};

    let a = temp_sqlite();
    let store = SqliteStore::connect(&a.url).await.unwrap();
    store.migrate().await.unwrap();
    let old = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let events = meshaudit_collector::ingest::body::split_events(
        &crate::support::ndjson_events("i", 10),
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
