//! Test helpers shared by the collector's integration tests
//! (`collector/tests/integration/support.rs`) and the hostile replays
//! (`tests/hostile/support.rs`), a dev-dependency of both: a raw HTTP/1.1
//! client, signed batches, filter-like events, a temporary SQLite file, fresh
//! PostgreSQL databases, and the collector binary run as a child process.
//! What differs between the two (which binary, which credentials, how a
//! missing PostgreSQL is handled) stays in their own `support.rs`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The API key and the signing secret the collector under test is given.
pub const API_KEY: &str = "test-api-key";
pub const SECRET: &str = "test-hmac-secret";

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A temporary SQLite database file (its directory also holds logs and archives).
pub struct TempSqlite {
    pub dir: tempfile::TempDir,
    pub url: String,
}

pub fn temp_sqlite() -> TempSqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    TempSqlite { dir, url }
}

/// NDJSON of `n` filter-like events with ids `{prefix}-{i}`.
pub fn ndjson_events(prefix: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(
            format!(
                "{{\"id\":\"{prefix}-{i}\",\"specversion\":\"1.0\",\"schemaid\":\"meshaudit.http/v1\",\"timestamp\":\"2026-03-04T05:06:07.000000+00:00\",\"httpmethod\":\"POST\",\"action\":{{\"name\":\"/orders/{i}\",\"method\":\"POST\",\"status\":\"SUCCESS\"}},\"kubernetes\":{{\"namespacename\":\"shop\",\"podname\":\"api-1\"}},\"http\":{{\"statuscode\":201}}}}\n"
            )
            .as_bytes(),
        );
    }
    out
}

// ---------------------------------------------------------------- HTTP

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and the header lines.
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One request over a fresh connection (`Connection: close`), bounded by
/// 30 s so a collector that hangs fails the test instead of stalling it.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head
            .split("\r\n")
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        Ok(HttpResponse {
            status,
            head,
            body: raw[split + 4..].to_vec(),
        })
    };
    match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::other(format!(
            "{method} {path}: no answer within 30 s"
        ))),
    }
}

/// `(X-Signature-Ts, X-Signature)` for `body` now, with [`SECRET`].
pub fn sign(body: &[u8]) -> (String, String) {
    let ts = now_secs().to_string();
    let sig = meshaudit_event::integrity::batch_signature(SECRET.as_bytes(), &ts, body);
    (ts, sig)
}

/// A signed NDJSON batch, as the filter sends it (optionally with an idempotency key).
pub async fn post_signed(
    addr: SocketAddr,
    body: &[u8],
    idempotency_key: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let (ts, sig) = sign(body);
    let mut headers = vec![
        ("Content-Type", "application/x-ndjson"),
        ("X-API-Key", API_KEY),
        ("X-Signature-Ts", ts.as_str()),
        ("X-Signature", sig.as_str()),
    ];
    if let Some(k) = idempotency_key {
        headers.push(("X-Idempotency-Key", k));
    }
    http(addr, "POST", "/v1/events", &headers, body).await
}

// ---------------------------------------------------------------- processes

/// `cmd serve` on a free port with `DATABASE_URL`, [`API_KEY`] and
/// [`SECRET`], `RUST_LOG=warn`, stdout and stderr discarded (the caller may
/// redirect stderr and add variables before spawning); and the address.
pub fn serve_command(mut cmd: Command, database_url: &str) -> (Command, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    cmd.arg("serve")
        .env("DATABASE_URL", database_url)
        .env("MESHAUDIT_LISTEN", addr.to_string())
        .env("AUDIT_RECEIVER_API_KEY", API_KEY)
        .env("AUDIT_RECEIVER_SIGNING_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    (cmd, addr)
}

/// Polls plain-HTTP `/healthz` at `addr` for up to 30 s; panics when `child`
/// exits first or the time runs out.
pub async fn wait_healthy(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http(addr, "GET", "/healthz", &[], b"").await {
            if r.status == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the collector exited at start-up: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not become healthy in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `cmd ARGS` with `DATABASE_URL` and `RUST_LOG=error`: (exit code, stdout + stderr).
pub fn run_with_database(mut cmd: Command, database_url: &str, args: &[&str]) -> (i32, String) {
    let out = cmd
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "error")
        .output()
        .expect("run the collector binary");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---------------------------------------------------------------- PostgreSQL

static PG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// `base` (a server URL) with its database replaced by `db`, query kept.
pub fn url_with_db(base: &str, db: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (base, String::new()),
    };
    let (prefix, _) = main.rsplit_once('/').unwrap_or((main, ""));
    if prefix.ends_with('/') || prefix.ends_with(':') {
        // postgres://host:port with no path
        format!("{main}/{db}{query}")
    } else {
        format!("{prefix}/{db}{query}")
    }
}

/// A fresh PostgreSQL database on a server, dropped (`WITH (FORCE)`) when
/// this value is dropped.
pub struct PgDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDb {
    /// Creates `{prefix}_{pid}_{n}_{nanos}` through `admin_url` (the
    /// server's maintenance database).
    pub async fn create(admin_url: &str, prefix: &str) -> Result<PgDb, sqlx::Error> {
        use sqlx::Connection;
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            PG_COUNTER.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        Ok(PgDb {
            url: url_with_db(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
