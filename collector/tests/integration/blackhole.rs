//! A PostgreSQL that stops answering (a network partition, a hung server):
//! the collector binary talks to the database through a TCP proxy this test
//! controls; while the proxy holds every byte, ingest answers `503` within a
//! bound and `/readyz` says not ready; once it lets them through again the
//! collector recovers by itself, and every event it acknowledged is stored.

use crate::support::{http, ndjson_events, pg_test_db, sign, CollectorProcess, API_KEY};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy that can blackhole: while closed it forwards nothing (bytes
/// are held, new connections wait), as a partitioned network would.
struct Proxy {
    addr: SocketAddr,
    closed: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn wait_open(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|closed| !closed).await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_open(&mut rx).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    wait_open(&mut rx).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, rx.clone()));
                    tokio::spawn(pump(sr, cw, rx));
                });
            }
        });
        Self { addr, closed, task }
    }

    fn blackhole(&self, on: bool) {
        let _ = self.closed.send(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `postgres://user@HOST:PORT/db` → (HOST:PORT, the URL through `via`).
fn through(url: &str, via: SocketAddr) -> (SocketAddr, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.split_once('@').unwrap();
    let (hostport, path) = rest.split_once('/').unwrap();
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .unwrap()
        .next()
        .unwrap();
    (upstream, format!("{scheme}://{userinfo}@{via}/{path}"))
}

/// One signed batch with an idempotency key, as the filter sends it.
async fn post(addr: SocketAddr, prefix: &str) -> (u16, Duration) {
    let body = ndjson_events(prefix, 5);
    let (ts, sig) = sign(&body);
    let started = Instant::now();
    let headers = [
        ("Content-Type", "application/x-ndjson"),
        ("X-API-Key", API_KEY),
        ("X-Signature-Ts", ts.as_str()),
        ("X-Signature", sig.as_str()),
        ("X-Idempotency-Key", prefix),
    ];
    let sent = http(addr, "POST", "/v1/events", &headers, &body);
    // Far above the bound the collector keeps (timeout + 1 s): a hang fails here.
    match tokio::time::timeout(Duration::from_secs(30), sent).await {
        Ok(Ok(r)) => (r.status, started.elapsed()),
        Ok(Err(e)) => panic!("ingest connection failed: {e}"),
        Err(_) => panic!("ingest hung for 30 s with the database blackholed"),
    }
}

async fn ready(addr: SocketAddr) -> u16 {
    match tokio::time::timeout(
        Duration::from_secs(30),
        http(addr, "GET", "/readyz", &[], b""),
    )
    .await
    {
        Ok(Ok(r)) => r.status,
        Ok(Err(e)) => panic!("/readyz connection failed: {e}"),
        Err(_) => panic!("/readyz hung for 30 s with the database blackholed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_postgres_gives_503_then_recovers_losing_nothing() {
    let db = pg_test_db().await;
    let (upstream, _) = through(&db.url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream).await;
    let (_, proxied) = through(&db.url, proxy.addr);
    let collector = CollectorProcess::start(&proxied, &[("MESHAUDIT_DB_TIMEOUT_MS", "1000")]).await;
    let addr = collector.addr;

    // Clients keep sending all along; every acknowledged batch is remembered.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    for c in 0..3 {
        let (acked, refused, stop_rx) = (acked.clone(), refused.clone(), stop_rx.clone());
        clients.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for b in 0.. {
                if *stop_rx.borrow() {
                    break;
                }
                let prefix = format!("c{c}-b{b}");
                let (status, took) = post(addr, &prefix).await;
                slowest = slowest.max(took);
                match status {
                    200 => acked.lock().unwrap().push(prefix),
                    503 => refused.lock().unwrap().push(prefix),
                    other => panic!("ingest answered {other}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slowest
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!acked.lock().unwrap().is_empty(), "ingest works before");
    assert_eq!(ready(addr).await, 200);

    proxy.blackhole(true);
    // Let the clients run into it, then check the probes one by one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, _) = post(addr, "during").await;
    assert_eq!(status, 503, "ingest with the database blackholed");
    assert_eq!(
        ready(addr).await,
        503,
        "/readyz with the database blackholed"
    );
    let refused_during = refused.lock().unwrap().len();
    assert!(
        refused_during > 0,
        "clients were refused during the blackhole"
    );

    proxy.blackhole(false);
    // Recovery is automatic: ingest answers 200 again without a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if post(addr, &format!("after-{}", deadline.elapsed().as_nanos()))
            .await
            .0
            == 200
            && ready(addr).await == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(true);
    let mut slowest = Duration::ZERO;
    for c in clients {
        slowest = slowest.max(c.await.unwrap());
    }
    // Generous: the collector's own bound is the 1 s timeout plus 1 s.
    assert!(
        slowest < Duration::from_secs(15),
        "an ingest request took {slowest:?}"
    );
    // The refused batches, sent again as the filter would: stored or deduped.
    let retried: Vec<String> = refused.lock().unwrap().clone();
    for prefix in &retried {
        let (status, _) = post(addr, prefix).await;
        assert_eq!(status, 200, "retry of {prefix}");
    }
    drop(collector);

    // Straight to PostgreSQL: every acknowledged event is there.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM events")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for prefix in acked.iter().chain(&retried) {
        for i in 0..5 {
            let id = format!("{prefix}-{i}");
            assert!(stored.contains(&id), "acknowledged event {id} is missing");
        }
    }
    let (code, out) = crate::support::run_cli(&db.url, &["verify"]);
    assert_eq!(code, 0, "{out}");
    pool.close().await;
}
