//! Support for the export tests: the collector binary at a fixed address (so
//! a restarted sink collector keeps its URL), reading `/metrics`, paging
//! through `/v1/events`, and polling with a deadline.

use crate::support::{
    collector_command, free_port, http, ndjson_events, post_signed, API_KEY, SECRET,
};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The release binary `serve`d at a chosen address; killed (-9) on drop.
pub struct Served {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub db: String,
    pub env: Vec<(String, String)>,
    pub log: Option<std::path::PathBuf>,
}

impl Served {
    pub fn new(db: &str, env: &[(&str, &str)], log: Option<std::path::PathBuf>) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self {
            child: None,
            addr,
            db: db.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log,
        }
    }

    /// Starts (again) at the same address and waits for `/healthz`.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = collector_command();
        cmd.arg("serve")
            .env("DATABASE_URL", &self.db)
            .env("MESHAUDIT_LISTEN", self.addr.to_string())
            .env("AUDIT_RECEIVER_API_KEY", API_KEY)
            .env("AUDIT_RECEIVER_SIGNING_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        match &self.log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log file");
                cmd.stderr(Stdio::from(f));
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        cmd.env_remove("MESHAUDIT_EXPORTERS")
            .env_remove("MESHAUDIT_EXPORTERS_FILE");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the collector binary");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(self.addr, "GET", "/healthz", &[], b"").await {
                if r.status == 200 {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = self
                    .log
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                panic!("the collector exited at start-up: {status}\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not become healthy in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// SIGKILL: no chance to finish a batch or save anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of `name{exporter="…"}` in `/metrics` (None when absent or unreachable).
pub async fn metric(addr: SocketAddr, name: &str, exporter: &str) -> Option<i64> {
    let r = http(addr, "GET", "/metrics", &[], b"").await.ok()?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let prefix = format!("{name}{{exporter=\"{exporter}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Polls `check` every 50 ms until it gives `Some`, or panics after `secs` with `what`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting ({secs} s) for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `batches` signed batches of `per` events with ids `{prefix}-{b}-{i}`; all must be `200`.
pub async fn post_events(addr: SocketAddr, prefix: &str, batches: usize, per: usize) {
    for b in 0..batches {
        let body = ndjson_events(&format!("{prefix}-{b}"), per);
        let r = post_signed(addr, &body, None).await.expect("post");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}

/// Every stored event item (`GET /v1/events`, all pages), ascending by seq.
pub async fn all_events(addr: SocketAddr) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = http(
            addr,
            "GET",
            &format!("/v1/events?limit=1000&after={after}"),
            &[],
            b"",
        )
        .await
        .expect("GET /v1/events")
        .json();
        out.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_i64() {
            Some(c) => after = c,
            None => return out,
        }
    }
}

/// The newest stored seq of a running collector.
pub async fn head(addr: SocketAddr) -> i64 {
    all_events(addr)
        .await
        .last()
        .and_then(|e| e["seq"].as_i64())
        .unwrap_or(0)
}

/// `export status --json` of a database.
pub fn export_status(db: &str) -> Vec<serde_json::Value> {
    let (code, out) = crate::support::run_cli(db, &["export", "status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let start = out.find('[').unwrap_or_else(|| panic!("no JSON in {out}"));
    let end = out.rfind(']').unwrap_or_else(|| panic!("no JSON in {out}"));
    serde_json::from_str(&out[start..=end]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Checks the exported records a sink holds, in arrival order after
/// dropping repeats: exactly seq 1..=head, each once, each the edge's event
/// with its hashes. `records` may hold repeats (at-least-once).
pub fn assert_complete_in_order(records: &[serde_json::Value], edge_events: &[serde_json::Value]) {
    let head = edge_events.len() as i64;
    let mut next = 1i64;
    let mut highest = 0i64;
    for r in records {
        let seq = r["seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("record without seq: {r}"));
        assert!(
            seq <= highest + 1,
            "seq {seq} arrived before {} (a gap)",
            highest + 1
        );
        if seq == next {
            next += 1;
        }
        highest = highest.max(seq);
    }
    assert_eq!(next - 1, head, "records 1..={head} delivered in order");
    for r in records {
        let seq = r["seq"].as_i64().unwrap_or(0);
        let e = &edge_events[(seq - 1) as usize];
        assert_eq!(e["seq"].as_i64(), Some(seq));
        assert_eq!(r["chain_hash"], e["chain_hash"], "seq {seq}");
        assert_eq!(r["event"], e["event"], "seq {seq}");
        let canonical = meshaudit_event::canonical(
            &meshaudit_event::parse(e["event"].to_string().as_bytes()).expect("event"),
        );
        assert_eq!(
            r["record_hash"].as_str(),
            Some(meshaudit_event::integrity::sha256_hex(&canonical).as_str()),
            "seq {seq}: record_hash"
        );
    }
}

/// Sends `sig` (`STOP`, `CONT`) to a child: a frozen sink accepts connections
/// and answers nothing, so an exporter is caught in the middle of a batch.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {}", child.id());
}

/// Waits until the exporter has a batch in flight (planned, persisted, not
/// acknowledged) while `records` records are stored; returns its status.
pub async fn wait_in_flight(db: &str, exporter: &str, records: i64) -> serde_json::Value {
    wait_for(60, "a batch in flight", || async {
        export_status(db).into_iter().find(|s| {
            s["exporter"] == exporter
                && !s["pending"].is_null()
                && s["head"] == records
                && s["cursor"].as_i64().is_some_and(|c| c < records)
        })
    })
    .await
}

/// Kill -9 with a batch certainly in flight: posts `batches` batches of 10
/// events and waits for their delivery, freezes the sink, posts as many
/// again, waits until `export status` shows a batch in flight, kills the
/// edge, thaws the sink and starts the edge again. Leaves `2 × batches × 10`
/// records stored.
pub async fn kill_with_batch_in_flight(
    edge: &mut Served,
    exporter: &str,
    batches: usize,
    freeze: impl FnOnce(),
    thaw: impl FnOnce(),
) {
    let delivered = batches as i64 * 10;
    post_events(edge.addr, "before-kill", batches, 10).await;
    let addr = edge.addr;
    wait_for(30, "the first records delivered", || async move {
        metric(addr, "audit_export_cursor_seq", exporter)
            .await
            .filter(|c| *c == delivered)
    })
    .await;
    freeze();
    post_events(edge.addr, "in-flight", batches, 10).await;
    let caught = wait_in_flight(&edge.db, exporter, 2 * delivered).await;
    edge.kill9();
    thaw();
    assert_eq!(caught["cursor"], delivered, "{caught}");
    edge.start().await;
}
