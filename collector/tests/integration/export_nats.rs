//! Export to NATS JetStream (SPEC §11) with real servers: the machine's
//! server on 127.0.0.1:4222, and a private `nats-server -js` the test can
//! stop and start again. Each test creates its own stream and deletes it.
//! The edge collector is killed -9 mid-export and the server goes away for a
//! while; the stream ends up with every record exactly once (the duplicate
//! window absorbs resends by `Nats-Msg-Id`), in seq order.

use crate::export_support::{
    all_events, assert_complete_in_order, head, kill_with_batch_in_flight, metric, post_events,
    signal, wait_for, Served,
};
use crate::support::{free_port, temp_sqlite};
use async_nats::jetstream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NATS_HINT: &str = "the NATS tests need nats-server with JetStream \
(Debian: apt-get install -y nats-server; `make setup` installs it)";

/// `nats-server` on the PATH, else Debian's /usr/sbin/nats-server.
fn nats_server_binary() -> &'static str {
    let on_path = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}

/// A private `nats-server -js` on a free port with its own store directory.
struct PrivateNats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateNats {
    fn new() -> Self {
        Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    async fn start(&mut self) {
        let child = Command::new(nats_server_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{NATS_HINT}: {e}"));
        self.child = Some(child);
        let url = self.url();
        wait_for(20, "nats-server to answer", || async {
            async_nats::connect(url.as_str()).await.ok().map(|_| ())
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn jetstream_at(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("no NATS server at {url} ({NATS_HINT}): {e}"));
    jetstream::new(client)
}

async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    let _ = js.delete_stream(name).await;
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("create the test stream");
}

/// Every message of the stream: (Nats-Msg-Id, record).
async fn stream_records(js: &jetstream::Context, name: &str) -> Vec<(String, serde_json::Value)> {
    let mut stream = js.get_stream(name).await.expect("stream");
    let n = stream.info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.expect("message");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&m.payload).expect("record JSON")));
    }
    out
}

fn nats_exporter(url: &str, subject: &str, stream: &str) -> String {
    serde_json::json!([{
        "name": "bus", "type": "nats", "url": url, "subject": subject,
        "stream": stream, "batch_records": 5
    }])
    .to_string()
}

fn check_stream(records: &[(String, serde_json::Value)], edge_events: &[serde_json::Value]) {
    assert_eq!(
        records.len(),
        edge_events.len(),
        "each record once in the stream"
    );
    for (i, (id, r)) in records.iter().enumerate() {
        let seq = i as i64 + 1;
        assert_eq!(r["seq"].as_i64(), Some(seq), "stream order");
        assert_eq!(id, &format!("bus:{seq}"), "Nats-Msg-Id");
    }
    let plain: Vec<serde_json::Value> = records.iter().map(|(_, r)| r.clone()).collect();
    assert_complete_in_order(&plain, edge_events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_export_survives_kill9_and_a_server_outage() {
    let mut nats = PrivateNats::new();
    nats.start().await;
    let js = jetstream_at(&nats.url()).await;
    create_stream(&js, "MESHAUDIT_EXPORT", "meshaudit.export").await;
    let db = temp_sqlite();
    let exporters = nats_exporter(&nats.url(), "meshaudit.export", "MESHAUDIT_EXPORT");
    let mut edge = Served::new(
        &db.url,
        &[("MESHAUDIT_EXPORTERS", exporters.as_str())],
        None,
    );
    edge.start().await;

    // Kill -9 the edge with a batch in flight: the server is frozen, its ack never comes.
    let child = nats.child.as_ref().expect("nats");
    kill_with_batch_in_flight(
        &mut edge,
        "bus",
        10,
        || signal(child, "STOP"),
        || signal(child, "CONT"),
    )
    .await;
    post_events(edge.addr, "b2", 10, 10).await;

    nats.stop();
    post_events(edge.addr, "c", 10, 10).await;
    wait_for(60, "failed deliveries while NATS is down", || async {
        metric(edge.addr, "audit_export_failures_total", "bus")
            .await
            .filter(|f| *f > 0)
    })
    .await;
    assert!(
        metric(edge.addr, "audit_export_lag_records", "bus")
            .await
            .unwrap()
            > 0
    );
    nats.start().await;

    let total = head(edge.addr).await;
    assert_eq!(total, 400);
    wait_for(120, "the cursor reaching the head", || async {
        metric(edge.addr, "audit_export_cursor_seq", "bus")
            .await
            .filter(|c| *c == total)
    })
    .await;
    let js = jetstream_at(&nats.url()).await;
    let records = stream_records(&js, "MESHAUDIT_EXPORT").await;
    check_stream(&records, &all_events(edge.addr).await);
    js.delete_stream("MESHAUDIT_EXPORT")
        .await
        .expect("delete the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_export_to_the_machines_server() {
    let url = "nats://127.0.0.1:4222";
    let js = jetstream_at(url).await;
    let name = format!("MESHAUDIT_TEST_{}", std::process::id());
    let subject = format!("meshaudit.test.{}", std::process::id());
    create_stream(&js, &name, &subject).await;
    let db = temp_sqlite();
    let exporters = nats_exporter(url, &subject, &name);
    let mut edge = Served::new(
        &db.url,
        &[("MESHAUDIT_EXPORTERS", exporters.as_str())],
        None,
    );
    edge.start().await;
    post_events(edge.addr, "m", 3, 10).await;
    wait_for(60, "all 30 records delivered", || async {
        metric(edge.addr, "audit_export_cursor_seq", "bus")
            .await
            .filter(|c| *c == 30)
    })
    .await;
    // Replay everything: the duplicate window absorbs it.
    let (code, out) = crate::support::run_cli(
        &db.url,
        &["export", "replay", "--exporter", "bus", "--from", "1"],
    );
    assert_eq!(code, 0, "{out}");
    wait_for(60, "the replay delivered", || async {
        let s = crate::export_support::export_status(&db.url);
        (s[0]["cursor"] == 30 && s[0]["delivered"] == 60).then_some(())
    })
    .await;
    let records = stream_records(&js, &name).await;
    let edge_events = all_events(edge.addr).await;
    edge.kill9();
    js.delete_stream(&name).await.expect("delete the stream");
    check_stream(&records, &edge_events);
}
