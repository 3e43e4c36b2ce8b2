//! The harness of the hostile replays: the release collector binary started
//! on a free port with a clean environment, a raw HTTP/1.1 client (an
//! attacker does not use a polite one), signed batches, fresh PostgreSQL
//! databases and a temporary SQLite file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const API_KEY: &str = "hostile-api-key";
pub const SECRET: &str = "hostile-hmac-secret";
pub const ADMIN: &str = "hostile-admin-token";

/// The release binary: `MESHAUDIT_COLLECTOR_BIN`, else `target/release/meshaudit-collector`.
pub fn bin() -> PathBuf {
    let path = std::env::var_os("MESHAUDIT_COLLECTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/release/meshaudit-collector")
        });
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release -p meshaudit-collector` (make build) or set MESHAUDIT_COLLECTOR_BIN",
        path.display()
    );
    path
}

/// The binary with every `AUDIT_*`/`MESHAUDIT_*`/`DATABASE_URL` variable of
/// the test environment removed, so only what a replay sets counts.
pub fn command() -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AUDIT_")
            || k.starts_with("MESHAUDIT_")
            || k == "DATABASE_URL"
            || k == "RUST_LOG"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

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

/// A temporary SQLite database (its directory also holds logs and archives).
pub struct TempSqlite {
    pub dir: tempfile::TempDir,
    pub url: String,
}

pub fn temp_sqlite() -> TempSqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    TempSqlite { dir, url }
}

// ---------------------------------------------------------------- HTTP

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// A response header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request on a fresh connection (`Connection: close`), bounded by 30 s
/// so a collector that hangs fails the replay instead of stalling it.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
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
        Ok(Response {
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

/// A signed NDJSON batch, as the filter sends it (optionally with an idempotency key).
pub async fn post_signed(
    addr: SocketAddr,
    body: &[u8],
    idempotency_key: Option<&str>,
) -> std::io::Result<Response> {
    let ts = now_secs().to_string();
    let sig = meshaudit_event::integrity::batch_signature(SECRET.as_bytes(), &ts, body);
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

/// NDJSON of `n` filter-like events with ids `{prefix}-{i}`.
pub fn events(prefix: &str, n: usize) -> Vec<u8> {
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

// ---------------------------------------------------------------- processes

/// `serve` from the release binary on a free port; killed on drop.
pub struct Collector {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Collector {
    /// Starts with an API key, a signing secret and the admin token, plus `env`.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = command();
        cmd.arg("serve")
            .env("DATABASE_URL", database_url)
            .env("MESHAUDIT_LISTEN", addr.to_string())
            .env("AUDIT_RECEIVER_API_KEY", API_KEY)
            .env("AUDIT_RECEIVER_SIGNING_SECRET", SECRET)
            .env("MESHAUDIT_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the collector binary");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(addr, "GET", "/healthz", &[], b"").await {
                if r.status == 200 {
                    return Self { child, addr };
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the collector exited at start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not start in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` with the admin token.
    pub async fn admin_get(&self, path: &str) -> Response {
        let auth = format!("Bearer {ADMIN}");
        http(self.addr, "GET", path, &[("Authorization", &auth)], b"")
            .await
            .expect("admin GET")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `meshaudit-collector ARGS` with `DATABASE_URL`: (exit code, stdout + stderr).
pub fn cli(database_url: &str, args: &[&str]) -> (i32, String) {
    let out = command()
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

/// The server of `MESHAUDIT_TEST_PG_URL` (default the project's local one).
pub fn pg_server() -> String {
    std::env::var("MESHAUDIT_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh PostgreSQL database, dropped on drop.
pub struct PgDb {
    pub url: String,
    server: String,
    name: String,
}

pub async fn pg_db() -> PgDb {
    use sqlx::Connection;
    let server = pg_server();
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is needed at {server} (set MESHAUDIT_TEST_PG_URL; Debian: apt-get install -y postgresql): {e}"
        )
    });
    let name = format!(
        "meshaudit_hostile_{}_{}",
        std::process::id(),
        PG_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
    PgDb {
        url: format!("{base}/{name}"),
        server,
        name,
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
