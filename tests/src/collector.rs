//! The built collector binary on a temporary SQLite database.

use crate::{artifact, free_port, http_client, wait_for, ChildGuard};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const TEST_API_KEY: &str = "test-api-key";
pub const TEST_SIGNING_SECRET: &str = "test-signing-secret";

#[derive(Debug, Clone, Default)]
pub struct CollectorOptions {
    /// Extra environment (overrides the defaults below).
    pub env: Vec<(String, String)>,
    /// Listen on this port (to restart on the same one); a free one when `None`.
    pub port: Option<u16>,
}

pub struct Collector {
    pub port: u16,
    pub dir: tempfile::TempDir,
    opts: CollectorOptions,
    child: Option<ChildGuard>,
}

impl Collector {
    /// `MESHAUDIT_COLLECTOR_BIN`, default `target/release/meshaudit-collector` from `make build`.
    pub fn binary() -> Result<PathBuf> {
        artifact(
            "MESHAUDIT_COLLECTOR_BIN",
            "target/release/meshaudit-collector",
            "build",
        )
    }

    pub async fn start(opts: CollectorOptions) -> Result<Collector> {
        let dir = tempfile::tempdir().context("creating a temp dir for the collector")?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut c = Collector {
            port,
            dir,
            opts,
            child: None,
        };
        c.spawn().await?;
        Ok(c)
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("audit.db").display())
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin = Self::binary()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("collector.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .env("DATABASE_URL", self.database_url())
            .env("MESHAUDIT_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("AUDIT_RECEIVER_API_KEY", TEST_API_KEY)
            .env("AUDIT_RECEIVER_SIGNING_SECRET", TEST_SIGNING_SECRET)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = ChildGuard::new(
            "collector",
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
        self.child = Some(child);
        let client = http_client();
        let url = self.url("/healthz");
        let ready = wait_for("collector /healthz", Duration::from_secs(20), || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}; collector log:\n{}", self.log());
        }
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default()
    }

    /// SIGKILL (a crash); the database stays for [`Collector::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts again on the same port and database.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Every stored item (`{"seq","id","event",...}`), following the cursor.
    pub async fn items(&self) -> Result<Vec<Value>> {
        let client = http_client();
        let mut out = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let mut url = self.url("/v1/events?limit=1000");
            if let Some(a) = after {
                url.push_str(&format!("&after={a}"));
            }
            let resp = client.get(&url).send().await?;
            let status = resp.status();
            let body: Value = resp.json().await.with_context(|| format!("GET {url}"))?;
            if !status.is_success() {
                bail!("GET {url}: {status} {body}");
            }
            let page = body["events"].as_array().cloned().unwrap_or_default();
            out.extend(page);
            match body["next_cursor"].as_i64() {
                Some(c) => after = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// The stored events themselves.
    pub async fn events(&self) -> Result<Vec<Value>> {
        Ok(self
            .items()
            .await?
            .into_iter()
            .map(|mut i| i["event"].take())
            .collect())
    }

    /// Waits until at least `n` events are stored, then a little longer to catch extras.
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        let got = wait_for(&format!("{n} stored events"), timeout, || async {
            let ev = self.events().await.ok()?;
            (ev.len() >= n).then_some(ev)
        })
        .await;
        match got {
            Ok(_) => {
                // A filter flushes on its tick: give a duplicate the chance to show up.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                self.events().await
            }
            Err(e) => {
                let have = self.events().await.map(|e| e.len()).unwrap_or(0);
                bail!("{e} (have {have}); collector log:\n{}", self.log())
            }
        }
    }
}
