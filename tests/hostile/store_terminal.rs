//! Store replay, terminal output: events are written by clients, and the
//! `query` table is read on an operator's terminal; escape sequences in them
//! must arrive as text, never as control characters.

use crate::support::{command, post_signed, temp_sqlite, Collector};

#[tokio::test]
async fn query_table_does_not_pass_escape_sequences() {
    let db = temp_sqlite();
    let collector = Collector::start(&db.url, &[]).await;
    // Clear the screen, set the window title, a CSI in C1 form, a bidi
    // override and a line break that would forge a second row.
    let body = "{\"id\":\"e\\u001b[2J\",\"httpmethod\":\"GET\\u001b]0;owned\\u0007\",\
                \"action\":{\"name\":\"/a\\u009b31m\\u202e\\n   99  forged row\"}}\n";
    let r = post_signed(collector.addr, body.as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(collector);
    let out = command()
        .arg("query")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let raw: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
        .collect();
    assert!(
        raw.is_empty(),
        "control characters {raw:?} reached the terminal:\n{text}"
    );
    assert_eq!(text.lines().count(), 2, "header and one row: {text}");
}
