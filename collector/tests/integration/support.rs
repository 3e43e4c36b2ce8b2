//! Test support: real PostgreSQL databases (fresh per test, dropped after; a
//! throwaway cluster when no server answers), signed requests, a tiny HTTP/1.1
//! client, and the collector binary run as a child process. The pieces the
//! hostile replays use too come from `meshaudit-test-support` (`tests/support`).

use meshaudit_collector::config::{Cli, Command, Settings};
use meshaudit_collector::http::{router, AppState};
use meshaudit_collector::metrics::Metrics;
use meshaudit_collector::store::sqlite::SqliteStore;
use meshaudit_collector::store::DynStore;
pub use meshaudit_test_support::{
    free_port, http, ndjson_events, now_secs, post_signed, sign, temp_sqlite, PgDb as PgTestDb,
    TempSqlite, API_KEY, SECRET,
};
use meshaudit_test_support::{run_with_database, serve_command, wait_healthy};
use sqlx::Connection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let (mut cmd, addr) = serve_command(collector_command(), database_url);
        if let Some(path) = log {
            cmd.stderr(Stdio::from(std::fs::File::create(path).expect("log file")));
        }
        cmd.envs(extra_env.iter().copied());
        let child = cmd.spawn().expect("start the collector binary");
        Self { child, addr }
    }

    /// Polls plain-HTTP `/healthz` for up to 30 s.
    pub async fn wait_healthy(mut self) -> Self {
        wait_healthy(self.addr, &mut self.child).await;
        self
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
    run_with_database(collector_command(), database_url, args)
}

// ----------------------------------------------------------------- PostgreSQL

const INSTALL_HINT: &str = "PostgreSQL is required for these tests and none could be had: \
set MESHAUDIT_TEST_PG_URL to a reachable server, or install PostgreSQL \
(Debian: apt-get install -y postgresql, which provides initdb and postgres under `pg_config --bindir`) \
so that a throwaway cluster can be started";

static PG_BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn answers(url: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url)).await,
        Ok(Ok(_))
    )
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
pub async fn pg_test_db() -> PgTestDb {
    PgTestDb::create(&pg_base_url().await, "meshaudit_test")
        .await
        .unwrap_or_else(|e| panic!("{INSTALL_HINT}: {e}"))
}
