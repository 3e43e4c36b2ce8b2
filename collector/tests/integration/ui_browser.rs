//! The auditor's page in a real headless Chromium (Debian `chromium` +
//! `chromium-driver`, installed by `make setup`), driven through chromedriver
//! with fantoccini, against the real collector binary: sign in, search, page
//! through results, open an event, verify it in the browser (chain link, and
//! the log's inclusion proof when the collector has a log), see an event
//! changed in the database by an attacker flagged as failing, and see
//! `<script>` payloads in an event's path and headers rendered as text.
//! Screenshots go to `target/ui-screenshots/`.

use crate::search::{story_events, TOKEN};
use crate::support::{free_port, post_signed, temp_sqlite, CollectorProcess};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str =
    "the page tests need Debian's chromium and chromium-driver: run `make setup` \
     (apt-get install -y chromium chromium-driver)";

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_browser() -> (Driver, Client) {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: {INSTALL_HINT}"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({e}): {INSTALL_HINT}"));
    let profile = tempfile::tempdir().expect("profile dir");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // fantoccini's TLS stack wants one process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| {
            panic!("chromedriver refused a Chromium session ({e}): {INSTALL_HINT}")
        });
    (driver, client)
}

fn screenshot_dir() -> PathBuf {
    // CARGO_MANIFEST_DIR is collector/; the workspace target is beside it.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Waits (up to 30 s) until the JavaScript expression is truthy; its last value.
async fn until(c: &Client, what: &str, expr: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c
            .execute(&format!("return ({expr});"), vec![])
            .await
            .expect("script");
        if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
            return v;
        }
        if Instant::now() > deadline {
            shot(c, &format!("timeout-{}", what.replace(' ', "-"))).await;
            panic!("timed out waiting for {what} ({expr}), last value {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .text()
        .await
        .expect("text")
}

async fn set_field(c: &Client, name: &str, value: &str) {
    let e = c
        .find(Locator::Css(&format!("#search-form [name='{name}']")))
        .await
        .expect(name);
    e.clear().await.expect("clear");
    e.send_keys(value).await.expect("type");
}

async fn search(c: &Client, q: &str) {
    set_field(c, "q", q).await;
    c.execute(
        "window.__searched = false; document.querySelector('#page-info').textContent = '';",
        vec![],
    )
    .await
    .expect("reset");
    c.find(Locator::Id("search-btn"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    until(
        c,
        "results",
        "document.querySelector('#page-info').textContent",
    )
    .await;
}

async fn open_first_result(c: &Client) {
    c.find(Locator::Css("#results tbody tr"))
        .await
        .expect("a result")
        .click()
        .await
        .expect("click");
    until(c, "event page", "!document.querySelector('#event').hidden && document.querySelector('#event-canonical').textContent").await;
}

async fn verify_in_browser(c: &Client) -> (String, Vec<String>) {
    c.find(Locator::Id("verify-btn"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let result = until(
        c,
        "verification",
        "['VERIFIED','FAILED'].includes(document.querySelector('#verify-result').textContent) && document.querySelector('#verify-result').textContent",
    )
    .await;
    let steps = c
        .execute("return Array.from(document.querySelectorAll('#verify-steps li'), li => li.className + ': ' + li.textContent);", vec![])
        .await
        .expect("steps");
    let steps = steps
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect();
    (result.as_str().unwrap_or_default().to_owned(), steps)
}

async fn back(c: &Client) {
    c.find(Locator::Id("back"))
        .await
        .expect("back")
        .click()
        .await
        .expect("click");
}

#[tokio::test]
async fn the_auditors_page_in_chromium() {
    let db = temp_sqlite();
    let collector = CollectorProcess::start(
        &db.url,
        &[
            ("MESHAUDIT_ADMIN_TOKEN", TOKEN),
            ("MESHAUDIT_LOG_FORMAT", "text"),
        ],
    )
    .await;
    // The story's events, a hostile one, and enough to page through.
    let mut events = story_events();
    events.push(json!({
        "id": "hostile", "timestamp": "2026-03-04T05:07:00.000000+00:00", "httpmethod": "GET",
        "action": {"name": "/<script>window.__xss=1</script>", "method": "GET"},
        "subject": {"userid": "<img src=x onerror=\"window.__xss=2\">"},
        "http": {"statuscode": 200, "requestheaders": {"x-evil": "<script>window.__xss=3</script>"}},
        "kubernetes": {"namespacename": "evil", "podname": "<b>pod</b>"},
    }));
    for i in 0..23 {
        events.push(json!({"id": format!("page-{i}"), "timestamp": "2026-03-04T05:08:00.000000+00:00",
            "httpmethod": "GET", "action": {"name": format!("/api/pageable/{i}")}, "kubernetes": {"namespacename": "paging"}}));
    }
    let mut body = Vec::new();
    for e in &events {
        body.extend_from_slice(e.to_string().as_bytes());
        body.push(b'\n');
    }
    let r = post_signed(collector.addr, &body, None)
        .await
        .expect("ingest");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let (_driver, c) = start_browser().await;
    let base = format!("http://{}", collector.addr);
    c.goto(&format!("{base}/ui/")).await.expect("open the page");
    shot(&c, "01-login").await;
    assert_eq!(
        c.execute("return document.querySelector('#app').hidden", vec![])
            .await
            .unwrap(),
        json!(true),
        "nothing is shown before signing in"
    );

    // A wrong token is refused and nothing is shown.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    c.find(Locator::Id("login-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "refusal",
        "document.querySelector('#login-error').textContent",
    )
    .await;
    assert_eq!(
        c.execute("return document.querySelector('#app').hidden", vec![])
            .await
            .unwrap(),
        json!(true)
    );

    // Sign in: the integrity panel and the first page of results.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Id("login-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "signed in",
        "!document.querySelector('#app').hidden && document.querySelector('#head').textContent",
    )
    .await;
    let head = text(&c, "#head").await;
    assert!(head.starts_with(&format!("seq {}", events.len())), "{head}");
    until(
        &c,
        "unverified count",
        "document.querySelector('#unverified').textContent",
    )
    .await;
    assert_eq!(text(&c, "#unverified").await, "1");
    until(
        &c,
        "chart",
        "document.querySelectorAll('#chart-events rect').length",
    )
    .await;
    assert!(
        c.execute("return document.querySelector('#token').value", vec![])
            .await
            .unwrap()
            == json!(""),
        "the token is not left in the form"
    );

    // Page through a search: 10 per page, 23 matches.
    c.execute(
        "document.querySelector(\"#search-form [name='limit']\").value = '10';",
        vec![],
    )
    .await
    .expect("per page");
    search(&c, "pageable").await;
    shot(&c, "02-search").await;
    let seqs = |c: &Client| {
        let c = c.clone();
        async move {
            c.execute("return Array.from(document.querySelectorAll('#results tbody tr td:first-child'), td => Number(td.textContent));", vec![])
                .await
                .unwrap()
        }
    };
    let page1 = seqs(&c).await;
    assert_eq!(page1.as_array().unwrap().len(), 10);
    c.find(Locator::Id("next-page"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "page 2",
        "document.querySelector('#page-info').textContent.startsWith('page 2')",
    )
    .await;
    let page2 = seqs(&c).await;
    assert_eq!(page2.as_array().unwrap().len(), 10);
    assert!(
        page2[0].as_i64() > page1[9].as_i64(),
        "{page1} then {page2}"
    );
    c.find(Locator::Id("next-page"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "page 3",
        "document.querySelector('#page-info').textContent.startsWith('page 3')",
    )
    .await;
    assert_eq!(seqs(&c).await.as_array().unwrap().len(), 3);
    assert_eq!(
        c.execute(
            "return document.querySelector('#next-page').disabled",
            vec![]
        )
        .await
        .unwrap(),
        json!(true)
    );

    // Filters with free text: namespace + phrase.
    c.execute(
        "document.querySelector(\"#search-form [name='limit']\").value = '50';",
        vec![],
    )
    .await
    .expect("per page");
    set_field(&c, "namespace", "billing").await;
    search(&c, "\"payment declined\"").await;
    assert_eq!(seqs(&c).await, json!([2]));
    set_field(&c, "namespace", "").await;

    // Hostile text renders as text.
    search(&c, "script").await;
    let cell = text(&c, "#results tbody tr td.path").await;
    assert_eq!(cell, "/<script>window.__xss=1</script>");
    open_first_result(&c).await;
    shot(&c, "03-hostile-event").await;
    let fields = text(&c, "#event-fields").await;
    assert!(
        fields.contains("<script>window.__xss=3</script>"),
        "{fields}"
    );
    assert!(
        fields.contains("<img src=x onerror=\"window.__xss=2\">"),
        "{fields}"
    );
    assert_eq!(
        c.execute("return [window.__xss === undefined, document.querySelectorAll('main script, main img, main b').length]", vec![])
            .await
            .unwrap(),
        json!([true, 0]),
        "no payload became markup or ran"
    );
    back(&c).await;

    // An intact event verifies in the browser.
    search(&c, "widget").await;
    open_first_result(&c).await;
    assert_eq!(text(&c, "#event-id").await, "order");
    let (result, steps) = verify_in_browser(&c).await;
    shot(&c, "04-event-verified").await;
    assert_eq!(result, "VERIFIED", "{steps:#?}");
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("ok: chain link seq 1 recomputed")),
        "{steps:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("ok: next chain link seq 2")),
        "{steps:#?}"
    );
    let log = crate::support::http(collector.addr, "GET", "/v1/log/checkpoint", &[], b"")
        .await
        .expect("log");
    if log.status == 200 {
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("ok: inclusion proof leads to the checkpoint root")),
            "the collector keeps a log: the proof must verify: {steps:#?}"
        );
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("ok: checkpoint signed by")
                    || s.starts_with("warn: this browser has no Ed25519")),
            "{steps:#?}"
        );
    } else {
        assert!(
            steps.iter().any(|s| s.contains("keeps no verifiable log")),
            "{steps:#?}"
        );
    }
    back(&c).await;

    // An attacker changes the stored event, bypassing the append-only trigger.
    let pool = sqlx::SqlitePool::connect(&db.url)
        .await
        .expect("attacker's connection");
    sqlx::query("DROP TRIGGER events_no_update")
        .execute(&pool)
        .await
        .expect("drop trigger");
    let changed = sqlx::query("UPDATE events SET canonical = replace(canonical, 'Blue Widget', 'Red Widget') WHERE id = 'order'")
        .execute(&pool)
        .await
        .expect("tamper")
        .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
    search(&c, "widget").await;
    open_first_result(&c).await;
    assert!(text(&c, "#event-canonical").await.contains("Red Widget"));
    let (result, steps) = verify_in_browser(&c).await;
    shot(&c, "05-event-tampered").await;
    assert_eq!(result, "FAILED", "{steps:#?}");
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("fail: chain link seq 1 does not match")),
        "{steps:#?}"
    );
    if log.status == 200 {
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("fail: record hash differs from the log's leaf")),
            "{steps:#?}"
        );
    }
    back(&c).await;
    c.find(Locator::Id("verify-chain-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "chain check",
        "document.querySelector('#chain-result').textContent.includes('seq')",
    )
    .await;
    let chain = text(&c, "#chain-result").await;
    assert!(chain.starts_with("BROKEN at seq 1"), "{chain}");
    shot(&c, "06-integrity-broken").await;
    c.close().await.expect("close the browser");
}
