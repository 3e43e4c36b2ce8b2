//! Store and CLI hardening (issue 17): the `query` table escapes what clients
//! wrote; `retain` removes in bounded chunks while ingest keeps being served.

use crate::support::{post_signed, run_cli, temp_sqlite, CollectorProcess};

/// An event full of terminal escape sequences, as a hostile client sends it.
const HOSTILE: &str = "{\"id\":\"evil\\r\\u001b[2K\",\"httpmethod\":\"GET\\u001b]0;pwned\\u0007\",\
\"action\":{\"name\":\"/x\\u001b[31m\\u009b2J\\u202e\\n\\tfake row\"},\"http\":{\"statuscode\":\"\\u001bc\"}}\n";

#[tokio::test]
async fn query_table_escapes_control_characters() {
    let db = temp_sqlite();
    let collector = CollectorProcess::start(&db.url, &[]).await;
    let r = post_signed(collector.addr, HOSTILE.as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(collector);
    let out = crate::support::collector_command()
        .args(["query"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(bad.is_empty(), "raw control characters {bad:?} in:\n{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "header + one row, no injected line: {text}"
    );
    assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "{text}");
    assert!(text.contains("evil\\r\\u{1b}[2K"), "{text}");
    // NDJSON is JSON: its escapes already keep the terminal safe, and it stays exact.
    let (code, out) = run_cli(&db.url, &["query", "--format", "ndjson"]);
    assert_eq!(code, 0);
    assert!(!out.contains('\u{1b}'), "{out}");
    let item: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(item["id"], "evil\r\u{1b}[2K");
}
