//! A real Envoy process (`--concurrency 1`, hot restart off so tests run side by side).

use crate::bootstrap::{bootstrap, BootstrapOptions};
use crate::{artifact, http_client, wait_for, ChildGuard};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Envoy {
    pub listener_port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    child: ChildGuard,
}

impl Envoy {
    /// The Envoy binary (`MESHAUDIT_ENVOY`, default `.venv/bin/envoy` from `make setup`).
    pub fn binary() -> Result<PathBuf> {
        artifact("MESHAUDIT_ENVOY", ".venv/bin/envoy", "setup")
    }

    /// The built filter (`MESHAUDIT_WASM`, default `dist/meshaudit_filter.wasm` from `make wasm`).
    pub fn wasm() -> Result<PathBuf> {
        artifact("MESHAUDIT_WASM", "dist/meshaudit_filter.wasm", "wasm")
    }

    /// Starts Envoy with `opts` and `env` (e.g. `POD_NAME`) and waits until it is ready.
    pub async fn start(opts: &BootstrapOptions, env: &[(&str, &str)]) -> Result<Envoy> {
        let bin = Self::binary()?;
        let dir = tempfile::tempdir().context("creating a temp dir for Envoy")?;
        let config = dir.path().join("bootstrap.yaml");
        std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap(opts))?)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .args(["--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildGuard::new(
            "envoy",
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
        let mut envoy = Envoy {
            listener_port: opts.listener_port,
            admin_port: opts.admin_port,
            dir,
            child,
        };
        let client = http_client();
        let ready_url = format!("http://127.0.0.1:{}/ready", envoy.admin_port);
        let ready = wait_for("Envoy /ready", Duration::from_secs(30), || {
            let client = client.clone();
            let url = ready_url.clone();
            async move {
                let r = client.get(&url).send().await.ok()?;
                (r.status().as_u16() == 200).then_some(())
            }
        })
        .await;
        if let Err(e) = ready {
            let exited = envoy.child.try_wait();
            anyhow::bail!("{e}; envoy exit status {exited:?}; log:\n{}", envoy.log());
        }
        Ok(envoy)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listener_port, path)
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }

    /// The admin `/stats/prometheus` text.
    pub async fn stats_prometheus(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/stats/prometheus", self.admin_port);
        Ok(http_client().get(url).send().await?.text().await?)
    }

    /// One stat's value from the admin `/stats?format=json`, by the name `/stats/prometheus`
    /// prints (e.g. `meshaudit_events_captured`; Envoy keeps wasm stats as `wasmcustom.NAME`);
    /// `None` when Envoy does not have it.
    pub async fn stat(&self, name: &str) -> Result<Option<i64>> {
        let url = format!(
            "http://127.0.0.1:{}/stats?format=json&filter=^(wasmcustom\\.)?{}$",
            self.admin_port, name
        );
        let v: serde_json::Value = http_client().get(url).send().await?.json().await?;
        let wasm_name = format!("wasmcustom.{name}");
        Ok(v["stats"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["name"] == name || s["name"] == wasm_name.as_str())
            })
            .and_then(|s| s["value"].as_i64()))
    }

    /// SIGTERM with a grace period (Envoy runs `on_done` of the filter).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.child.terminate(grace)
    }
}
