//! Export to an S3-compatible store (SPEC §11): the `moto` server from PyPI
//! (installed into .venv by `make setup`), started here on a free port,
//! path-style addressing with SigV4. The edge collector is killed -9
//! mid-export, and the S3 server is restarted mid-export (moto keeps objects
//! in memory: what it held before is read first, and the bucket made again;
//! the exporter, refused by the missing bucket, is resumed as an operator
//! would). Every record ends up in some segment, segments follow each other
//! without gaps, each manifest names its segment's SHA-256 and seq range.

use crate::export_support::{
    all_events, assert_complete_in_order, head, kill_with_batch_in_flight, metric, post_events,
    signal, wait_for, Served,
};
use crate::support::{free_port, run_cli, temp_sqlite};
use s3::creds::Credentials;
use s3::{Bucket, Region};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

const MOTO_HINT: &str = "the S3 export test needs the moto server in .venv \
(`make setup` installs it: .venv/bin/pip install 'moto[server]')";
const BUCKET: &str = "audit-lake";

struct Moto {
    child: Option<Child>,
    port: u16,
}

impl Moto {
    fn binary() -> std::path::PathBuf {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        root.join(".venv/bin/moto_server")
    }

    async fn start(&mut self) {
        let bin = Self::binary();
        assert!(bin.exists(), "{MOTO_HINT}: {} is missing", bin.display());
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{MOTO_HINT}: {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_for(60, "moto to answer", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        // moto takes an unsigned CreateBucket (no location constraint: us-east-1).
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let created = crate::support::http(addr, "PUT", &format!("/{BUCKET}"), &[], b"")
            .await
            .expect("create the bucket");
        assert_eq!(
            created.status,
            200,
            "{}",
            String::from_utf8_lossy(&created.body)
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn region(port: u16) -> Region {
    Region::Custom {
        region: "us-east-1".into(),
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

fn creds() -> Credentials {
    Credentials::new(Some("AKIDTEST"), Some("test-secret-key"), None, None, None).expect("creds")
}

/// Every object of the bucket: key → bytes.
async fn objects(port: u16) -> BTreeMap<String, Vec<u8>> {
    let bucket = Bucket::new(BUCKET, region(port), creds())
        .unwrap()
        .with_path_style();
    let mut out = BTreeMap::new();
    for page in bucket.list(String::new(), None).await.expect("list") {
        for o in page.contents {
            let data = bucket.get_object(&o.key).await.expect("get");
            out.insert(o.key.clone(), data.bytes().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_segments_survive_kill9_and_a_server_restart() {
    let mut moto = Moto {
        child: None,
        port: free_port(),
    };
    moto.start().await;
    let db = temp_sqlite();
    let exporters = serde_json::json!([{
        "name": "lake", "type": "s3", "endpoint": format!("http://127.0.0.1:{}", moto.port),
        "region": "us-east-1", "bucket": BUCKET, "prefix": "meshaudit",
        "access_key_id": "AKIDTEST", "secret_access_key": "test-secret-key",
        "path_style": true, "segment_records": 25, "segment_seconds": 1
    }])
    .to_string();
    let mut edge = Served::new(
        &db.url,
        &[("MESHAUDIT_EXPORTERS", exporters.as_str())],
        None,
    );
    edge.start().await;

    // Kill -9 the edge with a segment in flight: moto is frozen (SIGSTOP).
    let child = moto.child.as_ref().expect("moto");
    kill_with_batch_in_flight(
        &mut edge,
        "lake",
        10,
        || signal(child, "STOP"),
        || signal(child, "CONT"),
    )
    .await;
    post_events(edge.addr, "b", 10, 10).await;
    wait_for(30, "more segments", || async {
        metric(edge.addr, "audit_export_cursor_seq", "lake")
            .await
            .filter(|c| *c > 200)
    })
    .await;

    // Restart the S3 server (moto forgets its objects): pause so that nothing
    // is acknowledged between reading what it holds and stopping it.
    let (code, out) = run_cli(&db.url, &["export", "pause", "--exporter", "lake"]);
    assert_eq!(code, 0, "{out}");
    wait_for(30, "paused with no batch in flight", || async {
        crate::export_support::export_status(&db.url)
            .into_iter()
            .find(|s| s["status"] == "paused" && s["pending"].is_null())
    })
    .await;
    let mut segments = objects(moto.port).await;
    moto.stop();
    post_events(edge.addr, "c", 10, 10).await;
    let (code, out) = run_cli(&db.url, &["export", "resume", "--exporter", "lake"]);
    assert_eq!(code, 0, "{out}");
    let failures = metric(edge.addr, "audit_export_failures_total", "lake")
        .await
        .unwrap_or(0);
    wait_for(60, "failed deliveries while S3 is down", || async {
        metric(edge.addr, "audit_export_failures_total", "lake")
            .await
            .filter(|f| *f > failures)
    })
    .await;
    moto.start().await;

    let total = head(edge.addr).await;
    assert_eq!(total, 400);
    // The exporter may meet the new server before its bucket exists: that
    // NoSuchBucket is a refusal and stops it (its answer can even land after
    // the bucket was made). Resume it then, as an operator would.
    wait_for(120, "the cursor reaching the head", || async {
        let status = crate::export_support::export_status(&db.url);
        let s = &status[0];
        if s["status"] == "stopped" {
            let reason = s["stopped_reason"].as_str().unwrap_or("");
            assert!(reason.contains("NoSuchBucket"), "stopped: {reason}");
            let (code, out) = run_cli(&db.url, &["export", "resume", "--exporter", "lake"]);
            assert_eq!(code, 0, "{out}");
        }
        (s["cursor"] == total).then_some(())
    })
    .await;
    let edge_events = all_events(edge.addr).await;
    edge.kill9();
    segments.extend(objects(moto.port).await);

    // Segments and manifests: keys, hashes, ranges; records complete and in order.
    let mut ranges: Vec<(i64, i64, Vec<serde_json::Value>)> = Vec::new();
    for (key, data) in &segments {
        let Some(stem) = key.strip_suffix(".ndjson.gz") else {
            continue;
        };
        let parts: Vec<&str> = stem.split('/').collect();
        assert_eq!(
            parts.len(),
            5,
            "key layout <prefix>/<yyyy>/<mm>/<dd>/<first>-<last>: {key}"
        );
        assert_eq!(parts[0], "meshaudit");
        let (first, last) = parts[4].split_once('-').unwrap();
        let (first, last): (i64, i64) = (first.parse().unwrap(), last.parse().unwrap());
        let manifest: serde_json::Value = serde_json::from_slice(
            segments
                .get(&format!("{stem}.manifest.json"))
                .unwrap_or_else(|| panic!("no manifest for {key}")),
        )
        .unwrap();
        assert_eq!(
            manifest["sha256"],
            meshaudit_event::integrity::sha256_hex(data)
        );
        assert_eq!(manifest["first_seq"], first);
        assert_eq!(manifest["last_seq"], last);
        assert_eq!(manifest["segment"], key.as_str());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&data[..]), &mut text)
            .expect("gzip");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len() as i64, last - first + 1, "{key}");
        assert!(records.len() <= 25, "segment_records bounds a segment");
        ranges.push((first, last, records));
    }
    ranges.sort_by_key(|r| r.0);
    let mut in_order = Vec::new();
    let mut next = 1;
    for (first, last, records) in ranges {
        // A segment resent after a crash has the same key: only distinct ranges are here.
        assert_eq!(
            first, next,
            "segments follow each other without gaps or overlaps"
        );
        next = last + 1;
        in_order.extend(records);
    }
    assert_complete_in_order(&in_order, &edge_events);
}
