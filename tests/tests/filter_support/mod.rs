//! Shared set-up for the filter's end-to-end tests (`filter_*.rs`): a collector,
//! the sample upstream and a real Envoy running the built filter, plus a
//! scriptable fake collector, raw-socket clients and a Python helper.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use meshaudit_e2e::bootstrap::COLLECTOR_CLUSTER;
use meshaudit_e2e::collector::{TEST_API_KEY, TEST_SIGNING_SECRET};
use meshaudit_e2e::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const POD: &str = "orders-7f9c";
pub const NAMESPACE: &str = "shop";

/// The plugin configuration every test starts from, with `extra` merged in.
pub fn plugin_config(extra: Value) -> Value {
    let mut cfg = json!({
        "collector_cluster": COLLECTOR_CLUSTER,
        "api_key": TEST_API_KEY,
        "signing_secret": TEST_SIGNING_SECRET,
        "flush_interval_ms": 200,
        "backoff_ms": 100,
        "max_backoff_ms": 400,
        "timeout_ms": 1000
    });
    if let (Some(base), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    cfg
}

/// Bootstrap options for Envoy with the filter in front of `upstream_port`,
/// shipping to `collector_port`.
pub fn options(upstream_port: u16, collector_port: u16, extra: Value) -> Result<BootstrapOptions> {
    let mut opts = BootstrapOptions::new(free_port()?, free_port()?, upstream_port, collector_port);
    opts.filter = FilterSetup::Meshaudit {
        wasm: Envoy::wasm()?,
        plugin_config: plugin_config(extra),
        host_env_keys: vec![
            "POD_NAME".into(),
            "POD_NAMESPACE".into(),
            "AUDIT_FORWARD_REDACTION_KEY".into(),
        ],
        key_values: vec![],
    };
    Ok(opts)
}

pub async fn start_envoy(opts: &BootstrapOptions, env: &[(&str, &str)]) -> Result<Envoy> {
    let mut all = vec![("POD_NAME", POD), ("POD_NAMESPACE", NAMESPACE)];
    all.extend_from_slice(env);
    Envoy::start(opts, &all).await
}

/// Collector + upstream + Envoy with the filter configured by `extra`.
pub struct Stack {
    pub collector: Collector,
    pub upstream: Upstream,
    pub envoy: Envoy,
}

impl Stack {
    pub async fn start(extra: Value) -> Result<Stack> {
        let collector = Collector::start(CollectorOptions::default()).await?;
        let upstream = Upstream::start().await?;
        let opts = options(upstream.port, collector.port, extra)?;
        let envoy = start_envoy(&opts, &[]).await?;
        Ok(Stack {
            collector,
            upstream,
            envoy,
        })
    }

    /// Asserts the filter's VM is alive and never panicked.
    pub fn assert_healthy(&mut self) {
        assert_healthy(&mut self.envoy);
    }
}

pub fn assert_healthy(envoy: &mut Envoy) {
    assert!(envoy.is_running(), "Envoy died; log:\n{}", envoy.log());
    let log = envoy.log();
    for bad in [
        "panicked",
        "Function: proxy_on_",
        "wasm trap",
        "VM failed",
        "runtime error",
    ] {
        assert!(
            !log.contains(bad),
            "filter failure ({bad}) in Envoy log:\n{log}"
        );
    }
}

/// A stat of the filter as `/stats/prometheus` prints it (Envoy keeps wasm
/// stats as `wasmcustom.<name>` and prints them there without the prefix);
/// 0 when Envoy does not print it yet.
pub async fn stat(envoy: &Envoy, name: &str) -> Result<i64> {
    Ok(prometheus_value(&envoy.stats_prometheus().await?, name).unwrap_or(0))
}

/// The value of the unlabelled sample `name{} v` in a Prometheus text page.
pub fn prometheus_value(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix("{}").unwrap_or(rest).trim();
        value.parse::<f64>().ok().map(|v| v as i64)
    })
}

/// Waits until `name` reaches at least `min`.
pub async fn wait_stat(envoy: &Envoy, name: &str, min: i64, timeout: Duration) -> Result<i64> {
    let got = wait_for(&format!("{name} >= {min}"), timeout, || async {
        let v = stat(envoy, name).await.ok()?;
        (v >= min).then_some(v)
    })
    .await;
    match got {
        Ok(v) => Ok(v),
        Err(e) => bail!(
            "{e}; stats:\n{}",
            envoy.stats_prometheus().await.unwrap_or_default()
        ),
    }
}

/// The events whose `action.name` is `path`.
pub fn events_at<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["action"]["name"] == path)
        .collect()
}

/// The project's Python (`MESHAUDIT_PYTHON`, default `.venv/bin/python` from `make setup`).
pub fn python() -> Result<PathBuf> {
    artifact("MESHAUDIT_PYTHON", ".venv/bin/python", "setup")
}

/// Runs `script` with the project's Python, `stdin` on its standard input; its stdout.
pub fn run_python(script: &str, stdin: &[u8]) -> Result<String> {
    let py = python()?;
    let mut child = Command::new(&py)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", py.display()))?;
    if let Some(mut input) = child.stdin.take() {
        use std::io::Write;
        input.write_all(stdin)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "python failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lowercase hex SHA-256 (through Python's hashlib: the reference implementation).
pub fn sha256_hex(bytes: &[u8]) -> Result<String> {
    Ok(run_python(
        "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        bytes,
    )?
    .trim()
    .to_owned())
}

/// Sends raw bytes on a fresh connection to `port` and returns what came back
/// before the peer closed or `read_for` elapsed.
pub async fn raw_exchange(port: u16, request: &[u8], read_for: Duration) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + read_for;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    Ok(out)
}

/// What a [`FakeCollector`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeBehaviour {
    /// Answer with this status and an empty JSON body.
    Status(u16),
    /// Answer with this status and `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Close the connection without answering.
    Close,
    /// Read the request and never answer (the filter's call times out).
    Hang,
    /// Answer with these exact bytes (a whole HTTP/1.1 response).
    Raw(&'static str),
    /// Pass the request to the real collector on this port and relay its answer.
    Forward(u16),
    /// Refuse with `400` and SPEC §6's `line` any batch holding a line that
    /// contains this text (as a collector refusing one line does); forward
    /// the others to the real collector on the port.
    RefuseLineWith(&'static str, u16),
}

/// Replays a request a [`FakeCollector`] read to the real collector on `port`;
/// the status and body of its answer.
async fn forward(port: u16, headers: &[(String, String)], body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut req = http_client()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .body(body.to_vec());
    for (k, v) in headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.bytes().await?.to_vec()))
}

fn http_answer(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request a [`FakeCollector`] saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scriptable collector stand-in speaking just enough HTTP/1.1.
pub struct FakeCollector {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    behaviour: Arc<Mutex<FakeBehaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCollector {
    pub async fn start(behaviour: FakeBehaviour) -> Result<FakeCollector> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (s, b) = (seen.clone(), behaviour.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (s, b) = (s.clone(), b.clone());
                tokio::spawn(async move {
                    let _ = serve_fake(conn, s, b).await;
                });
            }
        });
        Ok(FakeCollector {
            port,
            seen,
            behaviour,
            task,
        })
    }

    pub fn set(&self, behaviour: FakeBehaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for FakeCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_fake(
    mut conn: TcpStream,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    behaviour: Arc<Mutex<FakeBehaviour>>,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        // read one request: headers, then content-length bytes
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if let Ok(mut s) = seen.lock() {
            s.push(SeenRequest {
                headers: headers.clone(),
                body: body.clone(),
                at: std::time::Instant::now(),
            });
        }
        let b = behaviour.lock().map(|b| *b).unwrap_or(FakeBehaviour::Close);
        match b {
            FakeBehaviour::Close => return Ok(()),
            FakeBehaviour::Raw(answer) => {
                conn.write_all(answer.as_bytes()).await?;
            }
            FakeBehaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            FakeBehaviour::Status(code) => {
                let answer = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                );
                conn.write_all(answer.as_bytes()).await?;
            }
            FakeBehaviour::Forward(port) => {
                let (status, answer) = forward(port, &headers, &body).await?;
                conn.write_all(&http_answer(status, &answer)).await?;
            }
            FakeBehaviour::RefuseLineWith(marker, port) => {
                let bad = body
                    .split(|&b| b == b'\n')
                    .position(|line| String::from_utf8_lossy(line).contains(marker));
                let answer = match bad {
                    Some(i) => http_answer(
                        400,
                        json!({"error": "malformed", "message": "refused line", "line": i + 1})
                            .to_string()
                            .as_bytes(),
                    ),
                    None => {
                        let (status, answer) = forward(port, &headers, &body).await?;
                        http_answer(status, &answer)
                    }
                };
                conn.write_all(&answer).await?;
            }
            FakeBehaviour::RetryAfter(code, secs) => {
                let answer = format!(
                    "HTTP/1.1 {code} X\r\nretry-after: {secs}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                );
                conn.write_all(answer.as_bytes()).await?;
            }
        }
    }
}

/// Envoy on a bootstrap the test edits itself (e.g. an extra filter before
/// the router); killed on drop.
pub struct CustomEnvoy {
    pub listener_port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    child: ChildGuard,
}

impl CustomEnvoy {
    pub async fn start(
        opts: &BootstrapOptions,
        bootstrap: &Value,
        env: &[(&str, &str)],
    ) -> Result<CustomEnvoy> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bootstrap.yaml");
        std::fs::write(&config, serde_json::to_vec(bootstrap)?)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let mut cmd = Command::new(Envoy::binary()?);
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in [("POD_NAME", POD), ("POD_NAMESPACE", NAMESPACE)]
            .iter()
            .chain(env)
        {
            cmd.env(k, v);
        }
        let child = ChildGuard::new("envoy", cmd.spawn()?);
        let envoy = CustomEnvoy {
            listener_port: opts.listener_port,
            admin_port: opts.admin_port,
            dir,
            child,
        };
        let url = format!("http://127.0.0.1:{}/ready", envoy.admin_port);
        let ready = wait_for("Envoy /ready", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let r = http_client().get(&url).send().await.ok()?;
                (r.status().as_u16() == 200).then_some(())
            }
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}; log:\n{}", envoy.log());
        }
        Ok(envoy)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listener_port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }
}

/// Inserts `filter` into the bootstrap's HTTP filter chain, just before the router.
pub fn insert_http_filter(bootstrap: &mut Value, filter: Value) -> Result<()> {
    let filters = bootstrap
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .context("the bootstrap has no http_filters")?;
    let at = filters.len().saturating_sub(1);
    filters.insert(at, filter);
    Ok(())
}

/// Runs Envoy on `opts` expecting it to refuse the configuration and exit;
/// returns everything it logged.
pub fn envoy_refusing(opts: &BootstrapOptions) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &config,
        serde_json::to_vec(&meshaudit_e2e::bootstrap::bootstrap(opts))?,
    )?;
    let log_path = dir.path().join("envoy.log");
    let log = std::fs::File::create(&log_path)?;
    let child = std::process::Command::new(Envoy::binary()?)
        .arg("-c")
        .arg(&config)
        .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut guard = ChildGuard::new("envoy", child);
    let start = std::time::Instant::now();
    while guard.try_wait().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            guard.kill();
            anyhow::bail!(
                "Envoy accepted the configuration; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(std::fs::read_to_string(&log_path)?)
}
