//! Store replays, outages: a database locked by someone else, and `retain`
//! removing many rows, must not hang ingest past the filter's 5 s timeout nor
//! stop it; what was acknowledged stays.

use crate::support::{cli, events, post_signed, temp_sqlite, Collector};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Another process holds SQLite's write lock (a long transaction, a backup
/// tool): ingest answers `503` after the busy timeout (3 s by default), well
/// before the filter gives up at 5 s, and recovers when the lock goes.
#[tokio::test]
async fn sqlite_locked_by_another_writer_gives_503_not_a_hang() {
    use sqlx::{Connection, Executor};
    let db = temp_sqlite();
    let collector = Collector::start(&db.url, &[]).await;
    assert_eq!(
        post_signed(collector.addr, &events("before", 3), None)
            .await
            .unwrap()
            .status,
        200
    );
    let mut locker = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let started = Instant::now();
    let r = post_signed(collector.addr, &events("locked", 3), Some("locked"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // Generous (the bound is the 3 s busy timeout plus 1 s); the old 10 s
    // busy timeout outlasted the filter's 5 s.
    assert!(took < Duration::from_secs(8), "503 only after {took:?}");
    locker.execute("ROLLBACK").await.unwrap();
    drop(locker);
    let r = post_signed(collector.addr, &events("locked", 3), Some("locked"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "the retry is stored once the lock is gone");
    assert_eq!(r.json()["accepted"], 3);
}

/// `retain` removing 20 000 rows while clients keep sending: every request is
/// answered `200`, some while the removal runs, and the chain verifies with
/// the archive afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_served_while_retain_removes_many_rows() {
    let db = temp_sqlite();
    let collector = Collector::start(&db.url, &[]).await;
    for b in 0..20 {
        let r = post_signed(collector.addr, &events(&format!("old{b}"), 1000), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = crate::support::now_secs();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let addr = collector.addr;
    let acks: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    for c in 0..2 {
        let (acks, running) = (acks.clone(), running.clone());
        clients.push(tokio::spawn(async move {
            let mut b = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let prefix = format!("new{c}-{b}");
                let r = post_signed(addr, &events(&prefix, 20), Some(&prefix))
                    .await
                    .expect("ingest during retain");
                assert_eq!(
                    r.status,
                    200,
                    "ingest during retain: {}",
                    String::from_utf8_lossy(&r.body)
                );
                acks.lock().unwrap().push((Instant::now(), prefix));
                b += 1;
            }
        }));
    }
    let url = db.url.clone();
    let archive = db.dir.path().join("archive").display().to_string();
    let before = format!("@{cutoff}");
    let before = date_rfc3339(&before);
    let started = Instant::now();
    let (code, out) = tokio::task::spawn_blocking(move || {
        // The defaults: on a slow machine the ingest below can keep the
        // write lock busy past MESHAUDIT_DB_TIMEOUT_MS (3 s), and retain must
        // wait its turn (--patience), not fail with "database is locked".
        cli(
            &url,
            &[
                "retain",
                "--before",
                &before,
                "--min-age",
                "0s",
                "--archive",
                &archive,
            ],
        )
    })
    .await
    .unwrap();
    let ended = Instant::now();
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 20000 events"), "{out}");
    let during = acks
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > started && *t < ended)
        .count();
    assert!(
        during > 0,
        "no batch was acknowledged while retain ran ({:?})",
        ended - started
    );
    drop(collector);
    let dir = db.dir.path().join("archive").display().to_string();
    let (code, out) = cli(&db.url, &["verify", "--archive-dir", &dir]);
    assert_eq!(code, 0, "{out}");
    let acked = acks.lock().unwrap().len();
    assert!(
        out.contains(&format!("checked {} events", acked * 20)),
        "every acknowledged event kept: {out}"
    );
}

/// `date -u -d @SECS` as RFC 3339.
fn date_rfc3339(at: &str) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", at, "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
