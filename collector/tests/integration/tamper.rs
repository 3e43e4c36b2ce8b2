//! Tamper detection: an attacker with database access drops the append-only
//! triggers and modifies, deletes, inserts or reorders rows; `verify` (the
//! CLI, exit 1) names the first bad `seq` every time.

use crate::support::{ndjson_events, pg_test_db, run_cli, temp_sqlite};
use chrono::Utc;
use meshaudit_collector::ingest::body::{split_events, Framing};
use meshaudit_collector::prepare::prepare;
use meshaudit_collector::store::postgres::PgStore;
use meshaudit_collector::store::sqlite::SqliteStore;
use meshaudit_collector::store::{BatchWrite, EventStore};
use meshaudit_event::integrity::EventKeys;

const FORGED_SQLITE: &str =
    "INSERT INTO events (seq, id, received_at, received_us, event_hash, chain_hash, canonical) \
     VALUES (3, 'forged', '2026-01-01T00:00:00.000000+00:00', 0, 'x', 'y', '{\"id\":\"forged\"}')";
const FORGED_PG: &str =
    "INSERT INTO events (seq, id, received_at, event_hash, chain_hash, canonical) \
     VALUES (3, 'forged', now(), 'x', 'y', '{\"id\":\"forged\"}')";

/// (name, attack statements, first bad seq, reason)
fn attacks(
    forged_insert: &'static str,
) -> Vec<(&'static str, Vec<&'static str>, i64, &'static str)> {
    vec![
        (
            "modify",
            vec!["UPDATE events SET canonical = replace(canonical, '/orders/3', '/orders/X') WHERE seq = 4"],
            4,
            "event_hash_mismatch",
        ),
        ("delete", vec!["DELETE FROM events WHERE seq = 3"], 3, "missing_event"),
        (
            "hide from queries",
            vec!["UPDATE events SET namespace = 'elsewhere' WHERE seq = 5"],
            5,
            "index_mismatch",
        ),
        ("delete the newest", vec!["DELETE FROM events WHERE seq = 6"], 6, "missing_event"),
        (
            "insert",
            vec![
                "UPDATE events SET seq = -seq WHERE seq >= 3",
                "UPDATE events SET seq = 1 - seq WHERE seq < 0",
                forged_insert,
            ],
            3,
            "event_hash_mismatch",
        ),
        (
            "reorder",
            vec![
                "UPDATE events SET seq = -1 WHERE seq = 2",
                "UPDATE events SET seq = 2 WHERE seq = 5",
                "UPDATE events SET seq = 5 WHERE seq = -1",
            ],
            2,
            "chain_hash_mismatch",
        ),
    ]
}

async fn load<S: EventStore>(store: &S) {
    store.migrate().await.unwrap();
    store.prepare_partitions(Utc::now()).await.unwrap();
    let events = split_events(&ndjson_events("t", 6), Framing::Ndjson)
        .unwrap()
        .into_iter()
        .map(|raw| prepare(raw, &EventKeys::default()))
        .collect();
    store
        .append_batches(
            &[BatchWrite {
                events,
                idempotency: None,
            }],
            Utc::now(),
            60,
        )
        .await
        .unwrap();
}

fn check(url: &str, name: &str, seq: i64, reason: &str) {
    let (code, out) = run_cli(url, &["verify"]);
    assert_eq!(code, 1, "{name}: verify must fail: {out}");
    assert!(
        out.contains(&format!("first bad seq {seq} ({reason})")),
        "{name}: expected first bad seq {seq} ({reason}), got: {out}"
    );
}

#[tokio::test]
async fn tamper_sqlite() {
    for (name, statements, seq, reason) in attacks(FORGED_SQLITE) {
        let db = temp_sqlite();
        let store = SqliteStore::connect(&db.url).await.unwrap();
        load(&store).await;
        let (code, out) = run_cli(&db.url, &["verify"]);
        assert_eq!(code, 0, "intact before the attack: {out}");
        assert!(
            !out.contains("verifying"),
            "no progress bar off a terminal: {out}"
        );
        // One connection: after a DROP TRIGGER on one connection, SQLite
        // (with the FTS5 delete trigger) fails a DELETE prepared on another
        // with "no such table: events".
        let mut conn = store.pool().acquire().await.unwrap();
        for sql in [
            "DROP TRIGGER events_no_update",
            "DROP TRIGGER events_no_delete",
        ]
        .into_iter()
        .chain(statements)
        {
            sqlx::query(sql)
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{name}: {sql}: {e}"));
        }
        check(&db.url, name, seq, reason);
    }
}

#[tokio::test]
async fn tamper_postgres() {
    for (name, statements, seq, reason) in attacks(FORGED_PG) {
        let db = pg_test_db().await;
        let store = PgStore::connect(&db.url).await.unwrap();
        load(&store).await;
        for sql in [
            "DROP TRIGGER events_no_update ON events",
            "DROP TRIGGER events_no_delete ON events",
        ]
        .into_iter()
        .chain(statements)
        {
            sqlx::query(sql)
                .execute(store.pool())
                .await
                .unwrap_or_else(|e| panic!("{name}: {sql}: {e}"));
        }
        check(&db.url, name, seq, reason);
        store.pool().close().await;
    }
}

#[test]
fn verify_exits_2_when_it_cannot_check() {
    let (code, out) = run_cli("postgres://postgres@127.0.0.1:1/nowhere", &["verify"]);
    assert_eq!(code, 2, "{out}");
}

#[tokio::test]
async fn verify_draws_a_progress_bar_only_on_a_terminal() {
    let db = temp_sqlite();
    let store = SqliteStore::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let events: Vec<_> = split_events(&ndjson_events("p", 2500), Framing::Ndjson)
        .unwrap()
        .into_iter()
        .map(|raw| prepare(raw, &EventKeys::default()))
        .collect();
    store
        .append_batches(
            &[BatchWrite {
                events,
                idempotency: None,
            }],
            Utc::now(),
            60,
        )
        .await
        .unwrap();
    let (code, out) = run_cli(&db.url, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("verifying"), "no bar off a terminal: {out}");
    // `script` runs the command on a pseudo-terminal.
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} verify", crate::support::bin()),
            "/dev/null",
        ])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("this test needs `script` (Debian: apt-get install -y bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("verifying"),
        "a progress bar on a terminal: {text}"
    );
    assert!(text.contains("OK: checked 2500 events"), "{text}");
}
