//! Durability: kill -9 the collector binary in the middle of a load of signed
//! batches, several times, restart it on the same database: every event whose
//! batch got a `200` is stored exactly once, and `verify` passes.

use crate::support::{
    http, ndjson_events, pg_test_db, post_signed, run_cli, temp_sqlite, CollectorProcess,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENTS: usize = 4;
const EVENTS_PER_BATCH: usize = 10;
const ROUNDS: usize = 3;

async fn load_and_kill(database_url: &str) {
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut collector = CollectorProcess::start(database_url, &[]).await;
        let addr = collector.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (stop, acked) = (stop.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                let mut sent = 0usize;
                for batch in 0.. {
                    if stop.load(Ordering::Relaxed) || batch > 2000 {
                        break;
                    }
                    let prefix = format!("r{round}-c{client}-b{batch}");
                    let body = ndjson_events(&prefix, EVENTS_PER_BATCH);
                    match post_signed(addr, &body, Some(&prefix)).await {
                        Ok(r) if r.status == 200 => {
                            let answer = r.json();
                            assert_eq!(answer["accepted"], EVENTS_PER_BATCH as u64, "{answer}");
                            let mut acked = acked.lock().unwrap();
                            acked.extend((0..EVENTS_PER_BATCH).map(|i| format!("{prefix}-{i}")));
                            sent += 1;
                        }
                        Ok(r) => panic!(
                            "unexpected status {} {:?}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(_) => break, // the collector is gone
                    }
                }
                sent
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        collector.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut batches = 0;
        for c in clients {
            batches += c.await.unwrap();
        }
        assert!(
            batches > 0,
            "round {round}: no batch was acknowledged before the kill"
        );
    }

    let collector = CollectorProcess::start(database_url, &[]).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut after = 0i64;
    loop {
        let page = http(
            collector.addr,
            "GET",
            &format!("/v1/events?limit=1000&after={after}"),
            &[],
            b"",
        )
        .await
        .unwrap()
        .json();
        for e in page["events"].as_array().unwrap() {
            *seen
                .entry(e["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        match page["next_cursor"].as_i64() {
            Some(c) => after = c,
            None => break,
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for id in &acked {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "acknowledged event {id} must be stored exactly once"
        );
    }
    assert!(seen.values().all(|&n| n == 1), "no event stored twice");
    drop(collector);
    let (code, out) = run_cli(database_url, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("checked {} events", seen.len())),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_load_sqlite() {
    let db = temp_sqlite();
    load_and_kill(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_load_postgres() {
    let db = pg_test_db().await;
    load_and_kill(&db.url).await;
}

/// Two replicas on one PostgreSQL database: one gap-free `seq`, one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_one_chain_postgres() {
    let db = pg_test_db().await;
    let a = CollectorProcess::start(&db.url, &[]).await;
    let b = CollectorProcess::start(&db.url, &[]).await;
    let mut clients = Vec::new();
    for (n, addr) in [a.addr, b.addr, a.addr, b.addr].into_iter().enumerate() {
        clients.push(tokio::spawn(async move {
            for batch in 0..15 {
                let prefix = format!("rep{n}-b{batch}");
                let r = post_signed(addr, &ndjson_events(&prefix, 5), None)
                    .await
                    .unwrap();
                assert_eq!(r.status, 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    drop((a, b));
    let (code, out) = run_cli(&db.url, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checked 300 events; head seq 300"), "{out}");
}
