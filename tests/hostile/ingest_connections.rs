//! Issue 17 item 2, replayed: clients without credentials must not be able
//! to hold the collector's memory or connections. Before the fix, 50 stalled
//! keyless connections each announcing a 4 MiB body took the release binary
//! from 12 MB to 243 MB of RSS and kept it there; there was no header, body
//! or idle timeout, no connection cap, and HTTP/2 allowed 200 streams.

use crate::support::{temp_sqlite, Collector, API_KEY};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory of a process, in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Reads until the peer closes or 30 s pass (a hang guard, not a timing
/// assertion): what arrived, and whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, closed)
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.split(' ').nth(1)?.parse().ok()
}

/// The head of a POST that announces `len` body bytes.
fn post_head(addr: std::net::SocketAddr, key: Option<&str>, len: usize) -> String {
    let mut head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len}\r\n"
    );
    if let Some(k) = key {
        head.push_str(&format!("X-API-Key: {k}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[tokio::test]
async fn stalled_keyless_connections_are_refused_before_their_body() {
    let db = temp_sqlite();
    let c = Collector::start(&db.url, &[]).await;
    let pid = c.child.id();
    let before = rss_kib(pid);
    let chunk = vec![b' '; 64 << 10];
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(c.addr).await.expect("connect");
        s.write_all(post_head(c.addr, None, 4 << 20).as_bytes())
            .await
            .expect("head");
        // Part of the body, then nothing: the old collector buffered it all.
        let _ = s.write_all(&chunk).await;
        conns.push(s);
    }
    // Every one is answered 401 without the rest of its body.
    for s in &mut conns {
        let (got, _) = read_until_closed(s).await;
        assert_eq!(
            status_of(&got),
            Some(401),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let after = rss_kib(pid);
    eprintln!("RSS under 50 stalled keyless connections: {before} KiB -> {after} KiB");
    // Bounded well below the broken value (+230 MB): nothing was buffered.
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB under 50 stalled keyless connections"
    );
}

#[tokio::test]
async fn slow_headers_slow_bodies_and_idle_connections_are_cut() {
    let db = temp_sqlite();
    let c = Collector::start(
        &db.url,
        &[
            ("MESHAUDIT_HEADER_READ_TIMEOUT_SEC", "1"),
            ("MESHAUDIT_BODY_READ_TIMEOUT_SEC", "1"),
            ("MESHAUDIT_IDLE_TIMEOUT_SEC", "2"),
        ],
    )
    .await;
    // Headers that never finish: the connection is closed.
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut s).await;
    assert!(closed, "a connection stuck in its headers is closed");

    // A keyed body that stalls: 408, and the connection goes.
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    let ts = crate::support::now_secs().to_string();
    let head = post_head(c.addr, Some(API_KEY), 1000)
        .replace("\r\n\r\n", &format!("\r\nX-Signature-Ts: {ts}\r\n\r\n"));
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(b"{\"id\":").await.unwrap();
    let (got, closed) = read_until_closed(&mut s).await;
    assert_eq!(
        status_of(&got),
        Some(408),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed);

    // An idle keep-alive connection is closed after its request.
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut s).await;
    assert_eq!(status_of(&got), Some(200));
    assert!(closed, "an idle keep-alive connection is closed");
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let db = temp_sqlite();
    let c = Collector::start(
        &db.url,
        &[
            ("MESHAUDIT_MAX_CONNECTIONS", "4"),
            ("MESHAUDIT_IDLE_TIMEOUT_SEC", "600"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        // A served keep-alive request proves the collector holds the slot.
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(status_of(&buf[..n]), Some(200));
        held.push(s);
    }
    let mut extra = TcpStream::connect(c.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (got, closed) = read_until_closed(&mut extra).await;
    assert!(
        closed && got.is_empty(),
        "the fifth connection is closed without an answer"
    );
    drop(held);
    // Slots come back: a new client is served, and the refusal was counted.
    let mut metrics = None;
    for _ in 0..100 {
        if let Ok(r) = crate::support::http(c.addr, "GET", "/metrics", &[], b"").await {
            metrics = Some(String::from_utf8_lossy(&r.body).into_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = metrics.expect("served again once the connections closed");
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("audit_connections_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("audit_connections_refused_total");
    assert!(refused >= 1.0, "{metrics}");
}

/// HTTP/2 (cleartext, prior knowledge): the server's SETTINGS announce the
/// stream limit (was hyper's default of 200).
#[tokio::test]
async fn http2_announces_a_bounded_stream_limit() {
    let db = temp_sqlite();
    let c = Collector::start(&db.url, &[("MESHAUDIT_HTTP2_MAX_STREAMS", "8")]).await;
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty client SETTINGS frame.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut head))
        .await
        .expect("a SETTINGS frame")
        .unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    let max_streams = payload.chunks(6).find_map(|e| {
        (e.len() == 6 && u16::from_be_bytes([e[0], e[1]]) == 3)
            .then(|| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
    });
    assert_eq!(max_streams, Some(8));
}
