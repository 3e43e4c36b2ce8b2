//! The binary as operators run it: start-up refusal of bad configuration,
//! graceful SIGTERM with JSON logs, TLS and mTLS, the filter's source headers
//! in `/metrics`, and the `query`, `retain` and `verify` commands.

use crate::support::{
    collector_command, http, ndjson_events, post_signed, run_cli, temp_sqlite, CollectorProcess,
    API_KEY,
};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn bad_configuration_stops_start_up_with_one_line_per_problem() {
    let out = collector_command()
        .arg("serve")
        .env("DATABASE_URL", "mysql://nope")
        .env("AUDIT_RECEIVER_TS_SKEW_SEC", "soon")
        .env("AUDIT_RECEIVER_EVENT_KEYS", "novalue")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "AUDIT_RECEIVER_API_KEY",
        "AUDIT_RECEIVER_SIGNING_SECRET",
        "AUDIT_RECEIVER_TS_SKEW_SEC",
        "AUDIT_RECEIVER_EVENT_KEYS",
        "DATABASE_URL",
    ] {
        let lines = stderr.lines().filter(|l| l.contains(name)).count();
        assert_eq!(lines, 1, "one line naming {name}:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_batches_and_exits() {
    let db = temp_sqlite();
    let log = db.dir.path().join("collector.log");
    let collector = CollectorProcess::spawn(
        &db.url,
        &[("MESHAUDIT_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
        Some(&log),
    )
    .wait_healthy()
    .await;
    let addr = collector.addr;
    let pid = collector.child.id();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (acked, stop) = (acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            for batch in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let prefix = format!("c{client}-b{batch}");
                match post_signed(addr, &ndjson_events(&prefix, 10), None).await {
                    Ok(r) if r.status == 200 => acked
                        .lock()
                        .unwrap()
                        .extend((0..10).map(|i| format!("{prefix}-{i}"))),
                    Ok(r) => panic!("status {}", r.status),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut collector = collector;
    let status = loop {
        if let Some(s) = collector.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(status.success(), "exit status {status}");
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());

    // JSON logs: every line is an object; the head and the shutdown are logged.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |m: &str| {
        lines.iter().any(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|s| s.contains(m))
        })
    };
    assert!(message("chain head"), "{text}");
    assert!(message("shutting down"), "{text}");
    assert!(!text.contains(crate::support::SECRET) && !text.contains(API_KEY));

    // Everything acknowledged is there, and the chain verifies.
    let collector = CollectorProcess::start(&db.url, &[]).await;
    let mut after = 0;
    let mut stored = std::collections::HashSet::new();
    loop {
        let page = http(
            collector.addr,
            "GET",
            &format!("/v1/events?limit=1000&after={after}"),
            &[],
            b"",
        )
        .await
        .unwrap()
        .json();
        for e in page["events"].as_array().unwrap() {
            stored.insert(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_i64() {
            Some(c) => after = c,
            None => break,
        }
    }
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} lost");
    }
    drop(collector);
    let (code, out) = run_cli(&db.url, &["verify"]);
    assert_eq!(code, 0, "{out}");
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the TLS test needs the openssl command (Debian: apt-get install -y openssl): {e}"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_pki(dir: &std::path::Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=meshaudit test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let crt = format!("{who}.crt");
        let ext = format!("{who}.ext");
        let subj = format!("/CN={who}");
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn curl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS test needs curl (Debian: apt-get install -y curl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn tls_and_mtls() {
    let db = temp_sqlite();
    let dir = db.dir.path().to_owned();
    make_pki(&dir);
    let p = |n: &str| dir.join(n).display().to_string();
    let collector = CollectorProcess::spawn(
        &db.url,
        &[
            ("MESHAUDIT_TLS_CERT", &p("server.crt")),
            ("MESHAUDIT_TLS_KEY", &p("server.key")),
            ("MESHAUDIT_TLS_CLIENT_CA", &p("ca.crt")),
        ],
        None,
    );
    let url = format!("https://127.0.0.1:{}/healthz", collector.addr.port());
    let with_cert = [
        "--cacert",
        "ca.crt",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
        url.as_str(),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let d2 = dir.clone();
    let mut ok = false;
    while Instant::now() < deadline {
        let d = d2.clone();
        let args: Vec<String> = with_cert.iter().map(|s| s.to_string()).collect();
        let (success, out) = tokio::task::spawn_blocking(move || {
            curl(&d, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        if success && out.contains("ok") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "HTTPS with a client certificate must work");
    let (success, out) = curl(&dir, &["--cacert", "ca.crt", &url]);
    assert!(
        !success,
        "mTLS: no client certificate must be refused: {out}"
    );
    let plain = format!("http://127.0.0.1:{}/healthz", collector.addr.port());
    let (success, out) = curl(&dir, &[&plain]);
    assert!(
        !success || !out.contains("\"ok\""),
        "plain HTTP must not be served: {out}"
    );
}

#[tokio::test]
async fn source_headers_query_and_retain_commands() {
    let db = temp_sqlite();
    let collector = CollectorProcess::start(&db.url, &[]).await;
    let body = ndjson_events("q", 3);
    let (ts, sig) = crate::support::sign(&body);
    let r = http(
        collector.addr,
        "POST",
        "/v1/events",
        &[
            ("Content-Type", "application/x-ndjson"),
            ("X-API-Key", API_KEY),
            ("X-Signature-Ts", &ts),
            ("X-Signature", &sig),
            ("X-Meshaudit-Source", "shop/api-1"),
            ("X-Meshaudit-Batch-Seq", "1"),
            ("X-Meshaudit-Dropped", "7"),
        ],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    post_signed(collector.addr, b"{\"event\":\"other\"}\n", None)
        .await
        .unwrap();
    let metrics = String::from_utf8(
        http(collector.addr, "GET", "/metrics", &[], b"")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("audit_source_dropped_events{source=\"shop/api-1\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("audit_source_last_seen_timestamp_seconds{source=\"shop/api-1\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("audit_chain_head_seq 4"), "{metrics}");
    assert!(
        metrics.contains("audit_events_received_total{source=\"filter\"} 3"),
        "{metrics}"
    );
    let ready = http(collector.addr, "GET", "/readyz", &[], b"")
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    let one = http(collector.addr, "GET", "/v1/events/q-1", &[], b"")
        .await
        .unwrap()
        .json();
    assert_eq!(one["seq"], 2);
    assert_eq!(one["event"]["action"]["name"], "/orders/1");
    drop(collector);

    let (code, out) = run_cli(
        &db.url,
        &[
            "query",
            "--format",
            "ndjson",
            "--namespace",
            "shop",
            "--limit",
            "2",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let items: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["id"], "q-1");
    let (code, out) = run_cli(&db.url, &["query"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().next().unwrap().contains("seq"), "{out}");
    assert_eq!(out.lines().count(), 5, "header + 4 rows: {out}");
    assert!(out.contains("/orders/2"), "{out}");

    let archive = db.dir.path().join("archive");
    let archive_s = archive.display().to_string();
    // A future date would remove everything up to the head: refused
    // (minimum age 24 h by default) unless forced.
    let (code, out) = run_cli(
        &db.url,
        &["retain", "--before", "2999-01-01", "--archive", &archive_s],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--force"), "{out}");
    let (code, out) = run_cli(&db.url, &["query"]);
    assert_eq!(out.lines().count(), 5, "nothing removed: {out}");
    assert_eq!(code, 0);
    let (code, out) = run_cli(
        &db.url,
        &[
            "retain",
            "--before",
            "2999-01-01",
            "--archive",
            &archive_s,
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 4 events"), "{out}");
    let (code, out) = run_cli(&db.url, &["verify", "--archive-dir", &archive_s]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("archives in") && out.contains("intact"),
        "{out}"
    );
    // Without the archives the anchor is unproven: exit 1, unless accepted.
    let (code, out) = run_cli(&db.url, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNPROVEN"), "{out}");
    let (code, out) = run_cli(&db.url, &["verify", "--accept-unproven-anchor"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WARNING: accepted unproven"), "{out}");
    let (code, out) = run_cli(
        &db.url,
        &[
            "retain",
            "--before",
            "last tuesday",
            "--archive",
            &archive_s,
        ],
    );
    assert_eq!(code, 2, "{out}");
}

/// The stored chain as an outsider recomputes it with Python's `json` and
/// `hashlib` from the query output (SPEC §5), non-ASCII, floats and big
/// integers included.
#[tokio::test]
async fn chain_matches_python_recomputation() {
    let db = temp_sqlite();
    let collector = CollectorProcess::start(&db.url, &[]).await;
    let body = "{\"id\":\"u1\",\"name\":\"caf\u{e9} \u{1f600}\",\"f\":0.1,\"g\":1e-05,\"big\":123456789012345678901234567890}\n\
                {\"id\":\"u2\",\"nested\":{\"b\":[1,2.5,null,true],\"a\":\"/path\\u0001\"},\"security\":{\"hash\":\"x\"}}\n\
                {\"event\":\"ping\",\"ts\":1700000000}\n";
    let r = post_signed(collector.addr, body.as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(collector);
    let (code, out) = run_cli(&db.url, &["query", "--format", "ndjson"]);
    assert_eq!(code, 0, "{out}");
    let path = db.dir.path().join("items.ndjson");
    std::fs::write(&path, &out).unwrap();
    let script = r#"
import hashlib, json, sys
prev = "0" * 64
n = 0
for line in open(sys.argv[1]):
    item = json.loads(line)
    event = dict(item["event"])
    event.pop("security", None)
    h = hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    prev = hashlib.sha256(("%s:%d:%s" % (prev, item["seq"], h)).encode()).hexdigest()
    assert prev == item["chain_hash"], (item["seq"], prev, item["chain_hash"])
    n += 1
print(n)
"#;
    let py = Command::new("python3")
        .args(["-c", script, &path.display().to_string()])
        .output()
        .expect("this test needs python3 (Debian: apt-get install -y python3)");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "3");
}
