//! Test support: real PostgreSQL databases (fresh per test, dropped after; a
//! throwaway cluster when no server answers), signed requests, a tiny HTTP/1.1
//! client, and the collector binary run as a child process.

use meshaudit_collector::config::{Cli, Command, Settings};
use meshaudit_collector::http::{router, AppState};
use meshaudit_collector::metrics::Metrics;
use meshaudit_collector::store::sqlite::SqliteStore;
use meshaudit_collector::store::DynStore;
use meshaudit_event::integrity::batch_signature;
use sqlx::Connection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const API_KEY: &str = "test-api-key";
pub const SECRET: &str = "test-hmac-secret";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshaudit-collector")
}

/// Every variable the collector reads: tests clear them so the environment
/// they run in cannot change what they check.
pub const COLLECTOR_ENV: [&str; 28] = [
    "DATABASE_URL",
    "MESHAUDIT_LISTEN",
    "AUDIT_RECEIVER_REQUIRE_API_KEY",
    "AUDIT_RECEIVER_API_KEY",
    "AUDIT_RECEIVER_REQUIRE_SIGNATURE",
    "AUDIT_RECEIVER_SIGNING_SECRET",
    "AUDIT_RECEIVER_ENFORCE_TS",
    "AUDIT_RECEIVER_TS_SKEW_SEC",
    "AUDIT_RECEIVER_IDEMP_TTL_SEC",
    "AUDIT_RECEIVER_EVENT_KEYS",
    "AUDIT_RECEIVER_REJECT_UNVERIFIED",
    "MESHAUDIT_MAX_BODY_BYTES",
    "MESHAUDIT_RATE_LIMIT_RPS",
    "MESHAUDIT_MAX_BATCH_EVENTS",
    "MESHAUDIT_MAX_INFLIGHT_BYTES",
    "MESHAUDIT_HEADER_READ_TIMEOUT_SEC",
    "MESHAUDIT_BODY_READ_TIMEOUT_SEC",
    "MESHAUDIT_IDLE_TIMEOUT_SEC",
    "MESHAUDIT_MAX_CONNECTIONS",
    "MESHAUDIT_HTTP2_MAX_STREAMS",
    "MESHAUDIT_MAX_SOURCES",
    "MESHAUDIT_SOURCE_TTL_SEC",
    "MESHAUDIT_ADMIN_TOKEN",
    "MESHAUDIT_TLS_CERT",
    "MESHAUDIT_TLS_KEY",
    "MESHAUDIT_TLS_CLIENT_CA",
    "MESHAUDIT_LOG_FORMAT",
    "RUST_LOG",
];

/// The collector binary with a clean collector environment.
pub fn collector_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    for var in COLLECTOR_ENV {
        cmd.env_remove(var);
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

/// `serve` settings as the command line would give them (env ignored where
/// flags are given).
pub fn settings(database_url: &str, extra: &[&str]) -> Settings {
    // Every option given explicitly (later flags override earlier ones), so
    // variables in the test environment have no say.
    let mut argv = vec![
        "meshaudit-collector",
        "serve",
        "--database-url",
        database_url,
        "--api-key",
        API_KEY,
        "--signing-secret",
        SECRET,
        "--listen",
        "127.0.0.1:0",
        "--require-api-key=1",
        "--require-signature=1",
        "--enforce-ts=1",
        "--ts-skew-sec=300",
        "--idemp-ttl-sec=60",
        "--event-keys=",
        "--reject-unverified=0",
        "--max-body-bytes=4194304",
        "--rate-limit-rps=0",
        "--admin-token=",
        "--log-format=text",
    ];
    argv.extend_from_slice(extra);
    let cli = <Cli as clap::Parser>::try_parse_from(argv).expect("valid test arguments");
    match cli.command {
        Command::Serve(args) => args.validate().expect("valid test settings"),
        _ => unreachable!("serve"),
    }
}

/// A temporary SQLite database file.
pub struct TempSqlite {
    pub dir: tempfile::TempDir,
    pub url: String,
}

pub fn temp_sqlite() -> TempSqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    TempSqlite { dir, url }
}

/// The router over a SQLite store, in process.
pub struct InProcess {
    pub state: AppState,
    pub store: Arc<SqliteStore>,
    _db: TempSqlite,
}

impl InProcess {
    pub async fn new(extra: &[&str]) -> Self {
        let db = temp_sqlite();
        let settings = settings(&db.url, extra);
        let store = Arc::new(SqliteStore::connect(&db.url).await.expect("sqlite"));
        meshaudit_collector::store::EventStore::migrate(store.as_ref())
            .await
            .expect("migrate");
        let dyn_store: DynStore = store.clone();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let (state, _writer) = AppState::start(settings, dyn_store, metrics);
        Self {
            state,
            store,
            _db: db,
        }
    }

    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    pub async fn stored(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(self.store.pool())
            .await
            .expect("count")
    }
}

/// `(X-Signature-Ts, X-Signature)` for `body` now.
pub fn sign(body: &[u8]) -> (String, String) {
    let ts = now_secs().to_string();
    let sig = batch_signature(SECRET.as_bytes(), &ts, body);
    (ts, sig)
}

// ---------------------------------------------------------------- HTTP client

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One request over a fresh connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
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
        body: raw[split + 4..].to_vec(),
    })
}

/// POSTs a signed NDJSON batch.
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

// ---------------------------------------------------------- collector process

/// The real binary, `serve`d on a free port; killed on drop.
pub struct CollectorProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl CollectorProcess {
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let me = Self::spawn(database_url, extra_env, None);
        me.wait_healthy().await
    }

    /// Starts the binary without waiting; stderr goes to `log` when given.
    pub fn spawn(
        database_url: &str,
        extra_env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = collector_command();
        cmd.arg("serve")
            .env("DATABASE_URL", database_url)
            .env("MESHAUDIT_LISTEN", addr.to_string())
            .env("AUDIT_RECEIVER_API_KEY", API_KEY)
            .env("AUDIT_RECEIVER_SIGNING_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
                None => Stdio::null(),
            });
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the collector binary");
        Self { child, addr }
    }

    /// Polls plain-HTTP `/healthz` for up to 30 s.
    pub async fn wait_healthy(mut self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(self.addr, "GET", "/healthz", &[], b"").await {
                if r.status == 200 {
                    return self;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the collector exited at start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not become healthy in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `meshaudit-collector ARGS` with `DATABASE_URL`; (exit code, stdout).
pub fn run_cli(database_url: &str, args: &[&str]) -> (i32, String) {
    let out = collector_command()
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

// ----------------------------------------------------------------- PostgreSQL

const INSTALL_HINT: &str = "PostgreSQL is required for these tests and none could be had: \
set MESHAUDIT_TEST_PG_URL to a reachable server, or install PostgreSQL \
(Debian: apt-get install -y postgresql, which provides initdb and postgres under `pg_config --bindir`) \
so that a throwaway cluster can be started";

static PG_BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static PG_COUNTER: AtomicU32 = AtomicU32::new(0);

async fn answers(url: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url)).await,
        Ok(Ok(_))
    )
}

fn url_with_db(base: &str, db: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (base, String::new()),
    };
    let (prefix, last) = main.rsplit_once('/').unwrap_or((main, ""));
    if prefix.ends_with('/') || prefix.ends_with(':') {
        // postgres://host:port with no path
        format!("{main}/{db}{query}")
    } else {
        let _ = last;
        format!("{prefix}/{db}{query}")
    }
}

/// A PostgreSQL server URL (maintenance database), found or started once per test binary.
pub async fn pg_base_url() -> String {
    if let Some(u) = PG_BASE.get() {
        return u.clone();
    }
    let configured = std::env::var("MESHAUDIT_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let url = if answers(&configured).await {
        configured
    } else {
        match tokio::task::spawn_blocking(|| start_throwaway_cluster("on"))
            .await
            .expect("cluster start task")
        {
            Ok(u) => {
                assert!(
                    answers(&u).await,
                    "{INSTALL_HINT} (the throwaway cluster at {u} does not answer)"
                );
                u
            }
            Err(why) => panic!("{INSTALL_HINT}; no server answered at {configured} and: {why}"),
        }
    };
    PG_BASE.get_or_init(|| url).clone()
}

/// Starts `initdb` + `postgres` from `pg_config --bindir` on a free port, as
/// the `postgres` user when running as root; a watchdog shell stops it when
/// this test process exits.
pub fn start_throwaway_cluster(fsync: &str) -> Result<String, String> {
    let bindir = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|e| format!("pg_config not found ({e})"))?;
    let bindir = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("meshaudit-pg-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let prefix = if as_root {
        let ok = std::process::Command::new("chown")
            .args(["-R", "postgres:", &dir.to_string_lossy()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err("cannot chown the cluster directory to the postgres user".into());
        }
        "runuser -u postgres -- ".to_owned()
    } else {
        String::new()
    };
    let data = dir.join("data");
    let initdb = bindir.join("initdb");
    let postgres = bindir.join("postgres");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{prefix}{} -D {} -U postgres --auth=trust -E UTF8 --no-sync >/dev/null",
            initdb.display(),
            data.display()
        ))
        .status()
        .map_err(|e| format!("initdb: {e}"))?;
    if !status.success() {
        return Err(format!("initdb failed ({status})"));
    }
    let watchdog = format!(
        "{prefix}{pg} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync={fsync} >/dev/null 2>&1 & P=$!; \
         while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         kill -INT $(head -n 1 {data}/postmaster.pid) 2>/dev/null; wait $P; rm -rf {dir}",
        pg = postgres.display(),
        data = data.display(),
        dir = dir.display(),
        me = std::process::id(),
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return Ok(url);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("postgres did not start on port {port} within 30 s"))
}

/// A fresh database, dropped when this value is dropped.
pub struct PgTestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

pub async fn pg_test_db() -> PgTestDb {
    let admin_url = pg_base_url().await;
    let name = format!(
        "meshaudit_test_{}_{}_{}",
        std::process::id(),
        PG_COUNTER.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("{INSTALL_HINT}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let url = url_with_db(&admin_url, &name);
    PgTestDb {
        url,
        admin_url,
        name,
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
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
