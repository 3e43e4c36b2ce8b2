//! One story, generic over `EventStore`, run against SQLite and a real
//! PostgreSQL: migrate, append with dedupe and idempotency, group commit,
//! chain, queries, retention with its anchor, append-only triggers.

use crate::support::{pg_test_db, temp_sqlite};
use chrono::{TimeZone, Utc};
use meshaudit_collector::chain::{next_chain_hash, ChainHead, GENESIS};
use meshaudit_collector::ingest::body::RawEvent;
use meshaudit_collector::prepare::{prepare, PreparedEvent};
use meshaudit_collector::retain::{retain, verify_archives, RetainOutcome};
use meshaudit_collector::store::postgres::PgStore;
use meshaudit_collector::store::sqlite::SqliteStore;
use meshaudit_collector::store::{
    BatchAnswer, BatchWrite, EventQuery, EventStore, IdempotencyKey, WriteOutcome,
};
use meshaudit_collector::verify::{verify_store, AnchorStatus, VerifyOptions};
use meshaudit_event::integrity::EventKeys;
use meshaudit_event::value::{parse, Value};

fn ev(json: &str) -> PreparedEvent {
    match parse(json.as_bytes()).expect("test JSON") {
        Value::Object(event) => prepare(RawEvent { line: 1, event }, &EventKeys::default()),
        _ => unreachable!("objects only"),
    }
}

fn filter_event(
    id: &str,
    ns: &str,
    method: &str,
    path: &str,
    status: i64,
    ts: &str,
) -> PreparedEvent {
    ev(&format!(
        r#"{{"id":"{id}","schemaid":"meshaudit.http/v1","specversion":"1.0","timestamp":"{ts}","tenantid":"t1",
            "httpmethod":"{method}","action":{{"name":"{path}","method":"{method}"}},
            "kubernetes":{{"namespacename":"{ns}","podname":"{ns}-pod"}},"subject":{{"userid":"u-{id}"}},
            "http":{{"statuscode":{status}}}}}"#
    ))
}

fn idem(key: &str, body: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        scope: "scope".into(),
        key: key.into(),
        body_sha256: body.into(),
    })
}

fn stored(outcome: &WriteOutcome) -> BatchAnswer {
    match outcome {
        WriteOutcome::Stored { answer, .. } => *answer,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn q() -> EventQuery {
    EventQuery {
        limit: 100,
        ..EventQuery::default()
    }
}

async fn story<S: EventStore>(store: S) {
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate twice");
    let old = Utc.with_ymd_and_hms(2020, 5, 17, 12, 0, 0).unwrap();
    let now = Utc::now();
    store.prepare_partitions(now).await.expect("partitions");
    assert_eq!(store.head().await.unwrap(), ChainHead::genesis());
    let report = verify_store(&store, &VerifyOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.ok && report.checked == 0);

    // An old batch (received in 2020) with a duplicate inside.
    let a = filter_event(
        "a",
        "shop",
        "GET",
        "/orders/1",
        200,
        "2020-05-17T11:59:00.000000+00:00",
    );
    let b = filter_event(
        "b",
        "shop",
        "POST",
        "/orders",
        201,
        "2020-05-17T11:59:01.000000+00:00",
    );
    let first = BatchWrite {
        events: vec![a.clone(), b.clone(), a.clone()],
        idempotency: idem("k1", "body1"),
    };
    let out = store
        .append_batches(std::slice::from_ref(&first), old, 60)
        .await
        .unwrap()
        .outcomes;
    assert_eq!(
        stored(&out[0]),
        BatchAnswer {
            accepted: 2,
            duplicates: 1,
            conflicts: 0,
            deduped: false
        }
    );

    // Replay within the TTL, and the same key with another body.
    let replay = store
        .append_batches(std::slice::from_ref(&first), old, 60)
        .await
        .unwrap()
        .outcomes;
    assert_eq!(
        replay[0],
        WriteOutcome::Replay(BatchAnswer {
            accepted: 2,
            duplicates: 1,
            conflicts: 0,
            deduped: true
        })
    );
    let other_body = BatchWrite {
        events: vec![filter_event(
            "zz",
            "x",
            "GET",
            "/",
            200,
            "2020-05-17T11:59:00Z",
        )],
        idempotency: idem("k1", "body2"),
    };
    let out = store
        .append_batches(std::slice::from_ref(&other_body), old, 60)
        .await
        .unwrap()
        .outcomes;
    assert_eq!(out[0], WriteOutcome::IdempotencyConflict);
    assert!(
        store.get("zz").await.unwrap().is_none(),
        "a 409 stores nothing"
    );
    let rec = store
        .idempotency_lookup("scope", "k1", old)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.body_sha256, "body1");
    // After the TTL the key is free again (and another scope never collided).
    let later = old + chrono::Duration::seconds(61);
    assert!(store
        .idempotency_lookup("scope", "k1", later)
        .await
        .unwrap()
        .is_none());

    // A group of batches in one transaction: new, duplicate, conflict.
    let c = filter_event(
        "c",
        "billing",
        "DELETE",
        "/invoices/9",
        500,
        "2026-01-01T00:00:00.000000+00:00",
    );
    let d = filter_event(
        "d",
        "billing",
        "GET",
        "/invoices",
        404,
        "2026-01-02T00:00:00+00:00",
    );
    let a_forged = filter_event(
        "a",
        "shop",
        "GET",
        "/orders/1",
        500,
        "2020-05-17T11:59:00.000000+00:00",
    );
    let out = store
        .append_batches(
            &[
                BatchWrite {
                    events: vec![c.clone()],
                    idempotency: None,
                },
                BatchWrite {
                    events: vec![b.clone(), d.clone()],
                    idempotency: idem("k2", "x"),
                },
                BatchWrite {
                    events: vec![a_forged],
                    idempotency: None,
                },
            ],
            now,
            60,
        )
        .await
        .unwrap()
        .outcomes;
    assert_eq!(stored(&out[0]).accepted, 1);
    assert_eq!(
        stored(&out[1]),
        BatchAnswer {
            accepted: 1,
            duplicates: 1,
            conflicts: 0,
            deduped: false
        }
    );
    match &out[2] {
        WriteOutcome::Stored {
            answer,
            conflict_ids,
        } => {
            assert_eq!(answer.conflicts, 1);
            assert_eq!(conflict_ids, &vec!["a".to_owned()]);
        }
        other => panic!("{other:?}"),
    }

    // seq is gap-free in commit order and the chain is SPEC §5's.
    let all = store.scan(0, 100).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    let mut prev = GENESIS.to_owned();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        prev = next_chain_hash(&prev, e.seq, &e.event_hash);
        assert_eq!(e.chain_hash, prev);
    }
    assert_eq!(
        store.head().await.unwrap(),
        ChainHead {
            seq: 4,
            chain_hash: prev.clone()
        }
    );
    assert_eq!(
        all[0].canonical.as_bytes(),
        a.canonical.as_slice(),
        "stored byte-exact"
    );
    assert!(all[0]
        .received_at
        .starts_with("2020-05-17T12:00:00.000000+00:00"));

    // Query filters and the cursor.
    let got = |v: Vec<meshaudit_collector::store::StoredEvent>| -> Vec<String> {
        v.into_iter().map(|e| e.id).collect()
    };
    assert_eq!(
        got(store
            .query(&EventQuery {
                namespace: Some("billing".into()),
                ..q()
            })
            .await
            .unwrap()),
        ["c", "d"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                pod: Some("shop-pod".into()),
                ..q()
            })
            .await
            .unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                method: Some("post".into()),
                ..q()
            })
            .await
            .unwrap()),
        ["b"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                status: Some(404),
                ..q()
            })
            .await
            .unwrap()),
        ["d"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                user: Some("u-c".into()),
                ..q()
            })
            .await
            .unwrap()),
        ["c"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                tenant: Some("t1".into()),
                ..q()
            })
            .await
            .unwrap())
        .len(),
        4
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                path_prefix: Some("/invoices".into()),
                ..q()
            })
            .await
            .unwrap()),
        ["c", "d"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                path_prefix: Some("/orders/".into()),
                ..q()
            })
            .await
            .unwrap()),
        ["a"]
    );
    let since = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .unwrap()
        .timestamp_micros();
    assert_eq!(
        got(store
            .query(&EventQuery {
                since_us: Some(since),
                ..q()
            })
            .await
            .unwrap()),
        ["d"]
    );
    let until = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    assert_eq!(
        got(store
            .query(&EventQuery {
                until_us: Some(until),
                ..q()
            })
            .await
            .unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        got(store
            .query(&EventQuery {
                after: Some(1),
                limit: 2,
                ..q()
            })
            .await
            .unwrap()),
        ["b", "c"]
    );
    assert_eq!(store.get("c").await.unwrap().map(|e| e.seq), Some(3));
    assert!(store.get("nope").await.unwrap().is_none());

    let report = verify_store(&store, &VerifyOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 4);

    // Retention: the 2020 rows go to an archive, an anchor keeps verify whole.
    let dir = tempfile::tempdir().unwrap();
    let cutoff = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
    let outcome = retain(&store, cutoff, dir.path(), now).await.unwrap();
    let RetainOutcome::Removed { anchor, archive } = outcome else {
        panic!("expected removal");
    };
    assert_eq!(anchor.first_kept_seq, 3);
    assert_eq!(anchor.removed, 2);
    assert_eq!(anchor.prev_chain_hash, all[1].chain_hash);
    assert!(archive.exists());
    assert_eq!(store.scan(0, 100).await.unwrap().len(), 2);
    // Without the archive the anchor proves nothing: not ok, but the rows are.
    let report = verify_store(&store, &VerifyOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("unproven_anchor"));
    assert_eq!(report.anchors[0].status, AnchorStatus::Unproven);
    assert_eq!(report.checked, 2);
    let with_archive = VerifyOptions {
        archive_dir: Some(dir.path().to_owned()),
        ..VerifyOptions::default()
    };
    let report = verify_store(&store, &with_archive, |_| {}).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.anchors[0].status, AnchorStatus::Proven);
    assert_eq!(report.checked, 2);
    assert_eq!(verify_archives(&store, dir.path()).await.unwrap(), None);
    assert_eq!(
        retain(&store, cutoff, dir.path(), now).await.unwrap(),
        RetainOutcome::Nothing
    );
    // Ids stay unique forever: a removed event sent again is a duplicate.
    let out = store
        .append_batches(
            &[BatchWrite {
                events: vec![a.clone()],
                idempotency: None,
            }],
            now,
            60,
        )
        .await
        .unwrap()
        .outcomes;
    assert_eq!(stored(&out[0]).duplicates, 1);
    // A changed archive is caught.
    std::fs::write(&archive, b"not the archive").unwrap();
    assert!(verify_archives(&store, dir.path()).await.unwrap().is_some());
}

#[tokio::test]
async fn story_sqlite() {
    let db = temp_sqlite();
    let store = SqliteStore::connect(&db.url).await.expect("sqlite");
    story(store).await;

    // Append-only: the triggers refuse UPDATE and DELETE above the anchor.
    let store = SqliteStore::connect(&db.url).await.unwrap();
    for sql in [
        "UPDATE events SET canonical = '{}' WHERE seq = 3",
        "DELETE FROM events WHERE seq = 3",
        "DELETE FROM event_ids",
        "DELETE FROM retention_log",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await;
        assert!(err.is_err(), "{sql} must be refused");
    }
}

#[tokio::test]
async fn story_postgres() {
    let db = pg_test_db().await;
    let store = PgStore::connect(&db.url).await.expect("postgres");
    story(store).await;

    let store = PgStore::connect(&db.url).await.unwrap();
    for sql in [
        "UPDATE events SET canonical = '{}' WHERE seq = 3",
        "DELETE FROM events WHERE seq = 3",
        "TRUNCATE events",
        "TRUNCATE events_default",
        "DELETE FROM event_ids",
        "TRUNCATE retention_log",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await;
        assert!(err.is_err(), "{sql} must be refused");
    }
    // Partitions exist ahead: this month and the next two, plus DEFAULT.
    let parts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(parts, 4);
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, "on");
    // Every partition refuses TRUNCATE on its own.
    let name = meshaudit_collector::store::postgres::partition_for(
        chrono::Datelike::year(&Utc::now()),
        chrono::Datelike::month(&Utc::now()),
    )
    .unwrap()
    .0;
    assert!(sqlx::query(&format!("TRUNCATE {name}"))
        .execute(store.pool())
        .await
        .is_err());
}

/// A server running with `fsync = off` cannot make a commit durable: refused.
#[tokio::test]
async fn postgres_with_fsync_off_is_refused() {
    let url = tokio::task::spawn_blocking(|| crate::support::start_throwaway_cluster("off"))
        .await
        .unwrap()
        .unwrap_or_else(|why| {
            panic!("a throwaway PostgreSQL cluster is needed (install postgresql): {why}")
        });
    let mut last = None;
    for _ in 0..50 {
        match PgStore::connect(&url).await {
            Err(meshaudit_collector::store::StoreError::Refused(msg)) => {
                assert!(msg.contains("fsync = off"), "{msg}");
                let (code, out) = crate::support::run_cli(&url, &["migrate"]);
                assert_eq!(code, 2, "{out}");
                assert!(out.contains("fsync = off"), "{out}");
                return;
            }
            Err(e) => last = Some(e.to_string()), // still starting
            Ok(_) => panic!("a server with fsync = off must be refused"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the fsync=off cluster never answered: {last:?}");
}

/// NUL inside an id or a query field is stored (as U+FFFD in the columns,
/// escaped in the event JSON) on both backends, and verify still passes.
async fn nul_in_columns<S: EventStore>(store: S) {
    store.migrate().await.unwrap();
    store.prepare_partitions(Utc::now()).await.unwrap();
    let e = ev(r#"{"id":"nul\u0000id","tenantid":"t\u0000","schemaid":"meshaudit.http/v1"}"#);
    let out = store
        .append_batches(
            &[BatchWrite {
                events: vec![e],
                idempotency: None,
            }],
            Utc::now(),
            60,
        )
        .await
        .unwrap()
        .outcomes;
    assert_eq!(stored(&out[0]).accepted, 1);
    let got = store.get("nul\u{fffd}id").await.unwrap().expect("stored");
    assert!(got.canonical.contains("nul\\u0000id"), "{}", got.canonical);
    let by_tenant = store
        .query(&EventQuery {
            tenant: Some("t\u{fffd}".into()),
            ..q()
        })
        .await
        .unwrap();
    assert_eq!(by_tenant.len(), 1);
    assert!(
        verify_store(&store, &VerifyOptions::default(), |_| {})
            .await
            .unwrap()
            .ok
    );
}

#[tokio::test]
async fn nul_in_columns_sqlite() {
    let db = temp_sqlite();
    nul_in_columns(SqliteStore::connect(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn nul_in_columns_postgres() {
    let db = pg_test_db().await;
    nul_in_columns(PgStore::connect(&db.url).await.unwrap()).await;
}
