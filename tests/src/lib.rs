//! End-to-end harness: the real pieces, wired on free loopback ports.
//!
//! - [`Collector`]: the built `meshaudit-collector` (`make build`) on a temporary SQLite database.
//! - [`Upstream`]: a small in-process HTTP app whose answers the test controls by path.
//! - [`Envoy`]: the real Envoy (`make setup`) with a bootstrap generated per test, loading the
//!   built `dist/meshaudit_filter.wasm` (`make wasm`).
//!
//! Nothing here builds anything. Every process started is killed when its guard drops, so a
//! failing test leaves nothing behind. Missing artifacts fail with the `make` target to run.

pub mod bootstrap;
pub mod collector;
pub mod envoy;
pub mod upstream;

pub use bootstrap::{BootstrapOptions, FilterSetup};
pub use collector::{Collector, CollectorOptions};
pub use envoy::Envoy;
pub use upstream::{RecordedRequest, Upstream};

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// An artifact path from `env_var`, else `default` under the workspace root; an error naming the
/// make target when it does not exist.
pub fn artifact(env_var: &str, default: &str, make_target: &str) -> Result<PathBuf> {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default));
    if !path.exists() {
        bail!(
            "{} not found (set {env_var} or run `make {make_target}` first)",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP client without proxies or pooling surprises.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// Kills a child process when dropped.
pub struct ChildGuard {
    child: Option<std::process::Child>,
    name: String,
}

impl ChildGuard {
    pub fn new(name: &str, child: std::process::Child) -> Self {
        Self {
            child: Some(child),
            name: name.to_string(),
        }
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    /// Whether the process has exited (and how).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM, then wait up to `grace` before SIGKILL; returns the exit status if it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not exit within {grace:?} of SIGTERM; killing",
            self.name
        );
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
