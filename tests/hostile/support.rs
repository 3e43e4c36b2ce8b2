//! The harness of the hostile replays: the release collector binary started
//! on a free port with a clean environment, a raw HTTP/1.1 client (an
//! attacker does not use a polite one), signed batches, fresh PostgreSQL
//! databases and a temporary SQLite file. The pieces the collector's own
//! integration tests use too come from `meshaudit-test-support`.

pub use meshaudit_test_support::{
    http, ndjson_events as events, now_secs, post_signed, temp_sqlite, HttpResponse as Response,
    API_KEY, SECRET,
};
use meshaudit_test_support::{run_with_database, serve_command, wait_healthy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;

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

// ---------------------------------------------------------------- processes

/// `serve` from the release binary on a free port; killed on drop.
pub struct Collector {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Collector {
    /// Starts with an API key, a signing secret and the admin token, plus `env`.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let (mut cmd, addr) = serve_command(command(), database_url);
        cmd.env("MESHAUDIT_ADMIN_TOKEN", ADMIN)
            .envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start the collector binary");
        wait_healthy(addr, &mut child).await;
        Self { child, addr }
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
    run_with_database(command(), database_url, args)
}

// ---------------------------------------------------------------- PostgreSQL

/// The server of `MESHAUDIT_TEST_PG_URL` (default the project's local one).
pub fn pg_server() -> String {
    std::env::var("MESHAUDIT_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh PostgreSQL database, dropped on drop.
pub use meshaudit_test_support::PgDb;

pub async fn pg_db() -> PgDb {
    let server = pg_server();
    PgDb::create(&server, "meshaudit_hostile").await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is needed at {server} (set MESHAUDIT_TEST_PG_URL; Debian: apt-get install -y postgresql): {e}"
        )
    })
}
