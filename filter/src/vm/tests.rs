//! The VM's decisions against a mock host: what a request reads, when the
//! event starts, what is shipped and how answers, shutdown and bodies are
//! handled.

use super::*;
use crate::capture::tests::serialize;
use meshaudit_event::integrity::{batch_signature, event_hash, sign_hash};
use meshaudit_event::{parse, Value};
use std::cell::Cell;

const ROOT: u32 = 1;
const START_NS: u64 = 1_700_000_000_123_456_000;

/// One dispatched call: its headers and body.
type Sent = (Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
struct Mock {
    now: Cell<u64>,
    props: RefCell<HashMap<String, Vec<u8>>>,
    maps: RefCell<HashMap<MapType, Vec<u8>>>,
    buffers: RefCell<HashMap<BufferType, Vec<u8>>>,
    env: HashMap<String, String>,
    /// Every hostcall, in order (`property:a.b`, `header_map:…`, `now`, …).
    calls: RefCell<Vec<String>>,
    sent: RefCell<Vec<Sent>>,
    refuse_calls: Cell<bool>,
    next_token: Cell<u32>,
    metrics: RefCell<Vec<(String, i64)>>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    done: Cell<u32>,
}

impl Mock {
    fn new(config: &str) -> Mock {
        let m = Mock::default();
        m.now.set(START_NS + 5_000_000);
        m.buffers
            .borrow_mut()
            .insert(BufferType::PluginConfiguration, config.as_bytes().to_vec());
        m
    }

    fn prop(&self, path: &str, value: &[u8]) {
        self.props
            .borrow_mut()
            .insert(path.to_owned(), value.to_vec());
    }

    fn request(&self, path: &str, conn: u64) {
        let headers = serialize(&[
            (":method", b"GET"),
            (":scheme", b"http"),
            (":authority", b"shop.local"),
            (":path", path.as_bytes()),
            ("x-request-id", b"rid-1"),
            ("tenantid", b"acme"),
        ]);
        self.maps
            .borrow_mut()
            .insert(MapType::RequestHeaders, headers);
        self.maps.borrow_mut().insert(
            MapType::ResponseHeaders,
            serialize(&[(":status", b"200"), ("content-type", b"application/json")]),
        );
        self.prop("request.time", &START_NS.to_le_bytes());
        self.prop("connection.id", &conn.to_le_bytes());
        self.prop("source.address", b"10.1.2.3:5555");
        self.prop("request.protocol", b"HTTP/1.1");
        self.prop("xds.cluster_name", b"app");
        self.prop("response.flags", &0u64.to_le_bytes());
        self.prop("response.code_details", b"via_upstream");
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    fn metric(&self, name: &str) -> i64 {
        self.metrics
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

impl Host for Mock {
    fn now_ns(&self) -> u64 {
        self.calls.borrow_mut().push("now".into());
        self.now.get()
    }
    fn header_map(&self, map: MapType) -> Option<Vec<u8>> {
        self.calls.borrow_mut().push(format!("header_map:{map:?}"));
        self.maps.borrow().get(&map).cloned()
    }
    fn buffer(&self, buffer: BufferType, size: usize) -> Option<Vec<u8>> {
        self.calls.borrow_mut().push(format!("buffer:{buffer:?}"));
        let b = self.buffers.borrow().get(&buffer).cloned()?;
        Some(b[..size.min(b.len())].to_vec())
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join(".");
        self.calls.borrow_mut().push(format!("property:{key}"));
        self.props.borrow().get(&key).cloned()
    }
    fn http_call(
        &self,
        _cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _timeout_ms: u64,
    ) -> Option<u32> {
        self.calls.borrow_mut().push("http_call".into());
        if self.refuse_calls.get() {
            return None;
        }
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.sent.borrow_mut().push((headers, body.to_vec()));
        self.next_token.set(self.next_token.get() + 1);
        Some(self.next_token.get())
    }
    fn define_metric(&self, _kind: StatKind, name: &str) -> Option<u32> {
        let mut m = self.metrics.borrow_mut();
        m.push((name.to_owned(), 0));
        Some((m.len() - 1) as u32)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.calls.borrow_mut().push("increment_metric".into());
        let mut m = self.metrics.borrow_mut();
        let name = m
            .get(id as usize)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        m.push((name, delta));
    }
    fn set_tick_period_ms(&self, _ms: u64) {}
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
    fn done(&self) {
        self.done.set(self.done.get() + 1);
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}

fn configured(config: &str) -> (Vm, Mock) {
    let mut mock = Mock::new(config);
    mock.env.insert("POD_NAMESPACE".into(), "shop".into());
    mock.env.insert("POD_NAME".into(), "orders-1".into());
    let mut vm = Vm::default();
    assert!(vm.on_configure(&mock, ROOT, config.len()));
    mock.calls();
    (vm, mock)
}

fn serve(vm: &mut Vm, mock: &Mock, ctx: u32, path: &str, conn: u64) {
    mock.request(path, conn);
    vm.on_context_create(ctx, ROOT);
    vm.on_request_headers(mock, ctx);
    vm.on_response_headers(mock, ctx);
    vm.on_response_body(mock, ctx, 12);
    vm.on_log(mock, ctx);
    assert!(vm.on_done(mock, ctx), "a stream ends at once");
}

fn lines(body: &[u8]) -> Vec<Value> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| parse(l).unwrap_or(Value::Null))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const CONFIG: &str =
    r#"{"collector_cluster":"c","signing_secret":"ss","api_key":"ak","flush_interval_ms":100}"#;

#[test]
fn a_metadata_request_reads_little_and_once_per_connection() {
    let (mut vm, mock) = configured(CONFIG);
    serve(&mut vm, &mock, 2, "/orders/7?x=1", 41);
    let first = mock.calls();
    assert_eq!(
        first,
        vec![
            "header_map:RequestHeaders",
            "header_map:ResponseHeaders",
            "now",
            "property:request.time",
            "property:connection.id",
            "property:source.address",
            "property:request.protocol",
            "property:connection.uri_san_peer_certificate",
            "property:xds.cluster_name",
            "property:response.flags",
            "property:response.code_details",
        ]
    );
    serve(&mut vm, &mock, 3, "/orders/8", 41);
    let second = mock.calls();
    assert_eq!(
        second.iter().filter(|c| c.starts_with("property:")).count(),
        5,
        "the connection's facts are remembered: {second:?}"
    );
    serve(&mut vm, &mock, 4, "/orders/9", 42);
    assert!(mock.calls().contains(&"property:source.address".to_owned()));
    assert_eq!(vm.buffered_events(ROOT), Some(3));
}

#[test]
fn hundreds_of_open_connections_are_each_read_once() {
    // A busy sidecar's inbound side: requests round-robin over 600 open
    // keep-alive connections (Envoy numbers them in order, other
    // connections in between).
    let (mut vm, mock) = configured(CONFIG);
    let conns: Vec<u64> = (0..600).map(|i| 5_000 + i * 3 / 2).collect();
    let mut ctx = 2;
    for _pass in 0..3 {
        for &conn in &conns {
            serve(&mut vm, &mock, ctx, "/orders/7", conn);
            ctx += 1;
        }
    }
    let facts_read = mock
        .calls()
        .iter()
        .filter(|c| *c == "property:source.address")
        .count();
    assert_eq!(facts_read, conns.len(), "each connection's facts read once");
}

#[test]
fn events_start_at_envoys_request_time_and_ship_signed_under_the_digest_scheme() {
    let (mut vm, mock) = configured(CONFIG);
    serve(&mut vm, &mock, 2, "/orders/7?x=1", 41);
    serve(&mut vm, &mock, 3, "/orders/8", 41);
    mock.now.set(START_NS + 200_000_000);
    vm.on_tick(&mock, ROOT);
    let sent = mock.sent.borrow().clone();
    assert_eq!(sent.len(), 1);
    let (headers, body) = &sent[0];
    let events = lines(body);
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(
        e.pointer(&["timestamp"]).and_then(Value::as_str),
        Some("2023-11-14T22:13:20.123456+00:00")
    );
    assert_eq!(
        e.pointer(&["http", "durationms"]).and_then(Value::as_i64),
        Some(5)
    );
    assert_eq!(
        e.pointer(&["network", "sourceip"]).and_then(Value::as_str),
        Some("10.1.2.3")
    );
    assert_eq!(
        e.pointer(&["http", "responsebytes"])
            .and_then(Value::as_i64),
        Some(12)
    );
    let mut hashes = Vec::new();
    for e in &events {
        let m = e.as_object().cloned().unwrap_or_default();
        let hash = event_hash(&m);
        assert_eq!(
            e.pointer(&["security", "hash"]).and_then(Value::as_str),
            Some(hash.as_str())
        );
        assert_eq!(
            e.pointer(&["security", "signature"])
                .and_then(Value::as_str),
            Some(sign_hash(b"ss", &hash).as_str())
        );
        hashes.push(hash);
    }
    let digest = meshaudit_event::integrity::batch_digest_hex(hashes.iter().map(String::as_str));
    let ts = header(headers, "x-signature-ts").unwrap_or("");
    assert_eq!(header(headers, "x-signature-scheme"), Some("digest"));
    assert_eq!(
        header(headers, "x-signature"),
        digest
            .map(|d| batch_signature(b"ss", ts, hex::encode(d).as_bytes()))
            .as_deref()
    );
    assert_eq!(header(headers, "x-meshaudit-source"), Some("shop/orders-1"));
    assert_eq!(mock.metric("meshaudit_events_captured"), 2);
}

#[test]
fn without_envoys_start_time_an_event_starts_at_its_end() {
    let (mut vm, mock) = configured(CONFIG);
    mock.request("/a", 1);
    mock.props.borrow_mut().remove("request.time");
    vm.on_context_create(2, ROOT);
    vm.on_log(&mock, 2);
    mock.now.set(START_NS + 500_000_000);
    vm.on_tick(&mock, ROOT);
    let sent = mock.sent.borrow().clone();
    let e = &lines(&sent[0].1)[0];
    assert_eq!(
        e.pointer(&["timestamp"]).and_then(Value::as_str),
        Some("2023-11-14T22:13:20.128456+00:00")
    );
    assert_eq!(
        e.pointer(&["http", "durationms"]).and_then(Value::as_i64),
        Some(0)
    );
}

#[test]
fn skipped_paths_read_only_the_request_headers() {
    let (mut vm, mock) = configured(CONFIG);
    serve(&mut vm, &mock, 2, "/health/live", 1);
    assert_eq!(mock.calls(), vec!["header_map:RequestHeaders"]);
    assert_eq!(vm.buffered_events(ROOT), Some(0));
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.metric("meshaudit_events_skipped"), 1);
}

#[test]
fn answers_retry_refused_lines_are_dropped_and_the_rest_re_sent() {
    let (mut vm, mock) = configured(CONFIG);
    for (ctx, path) in [(2, "/a"), (3, "/b"), (4, "/c")] {
        serve(&mut vm, &mock, ctx, path, 1);
    }
    mock.now.set(START_NS + 200_000_000);
    vm.on_tick(&mock, ROOT);
    // 503 with Retry-After: retried after it.
    mock.maps.borrow_mut().insert(
        MapType::HttpCallResponseHeaders,
        serialize(&[(":status", b"503"), ("retry-after", b"1")]),
    );
    let answer = read_answer(&mock, 0);
    assert!(vm.on_http_call_response(&mock, ROOT, 1, answer, true));
    assert_eq!(mock.sent.borrow().len(), 1, "not before Retry-After");
    mock.now.set(START_NS + 1_300_000_000);
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.sent.borrow().len(), 2);
    let first_key = header(&mock.sent.borrow()[1].0, "x-idempotency-key").map(str::to_owned);
    assert_eq!(
        first_key.as_deref(),
        header(&mock.sent.borrow()[0].0, "x-idempotency-key")
    );
    // 400 naming line 2: re-sent at once without it, under a new key.
    mock.maps.borrow_mut().insert(
        MapType::HttpCallResponseHeaders,
        serialize(&[(":status", b"400")]),
    );
    let refusal = br#"{"error":"malformed","message":"too deep","line":2}"#;
    mock.buffers
        .borrow_mut()
        .insert(BufferType::HttpCallResponseBody, refusal.to_vec());
    mock.calls();
    let answer = read_answer(&mock, refusal.len());
    assert!(mock
        .calls()
        .contains(&"buffer:HttpCallResponseBody".to_owned()));
    vm.on_http_call_response(&mock, ROOT, 2, answer, true);
    let sent = mock.sent.borrow().clone();
    assert_eq!(sent.len(), 3);
    let paths: Vec<Option<String>> = lines(&sent[2].1)
        .iter()
        .map(|e| {
            e.pointer(&["action", "name"])
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(paths, vec![Some("/a".to_owned()), Some("/c".to_owned())]);
    assert_ne!(
        header(&sent[2].0, "x-idempotency-key").map(str::to_owned),
        first_key
    );
    mock.maps.borrow_mut().insert(
        MapType::HttpCallResponseHeaders,
        serialize(&[(":status", b"200")]),
    );
    mock.calls();
    let answer = read_answer(&mock, 100);
    assert!(
        !mock.calls().iter().any(|c| c.starts_with("buffer:")),
        "a 200's body is not read"
    );
    vm.on_http_call_response(&mock, ROOT, 3, answer, true);
    assert_eq!(vm.buffered_events(ROOT), Some(0));
    assert_eq!(mock.metric("meshaudit_events_dropped_rejected"), 1);
    assert_eq!(mock.metric("meshaudit_batches_ok"), 1);
    assert_eq!(mock.metric("meshaudit_batch_retries"), 1);
    assert_eq!(mock.metric("meshaudit_buffered_events"), 0);
    // an answer without :status is a failed attempt
    mock.maps
        .borrow_mut()
        .remove(&MapType::HttpCallResponseHeaders);
    assert_eq!(read_answer(&mock, 0), Answer::Failed);
}

#[test]
fn on_done_waits_for_the_last_answer_or_the_deadline() {
    let (mut vm, mock) = configured(CONFIG);
    assert!(vm.on_done(&mock, ROOT), "nothing held: at once");
    assert!(
        vm.plugins.is_empty(),
        "and forgotten (no on_delete follows)"
    );

    let (mut vm, mock) = configured(CONFIG);
    serve(&mut vm, &mock, 2, "/a", 1);
    assert!(!vm.on_done(&mock, ROOT), "a batch is in flight");
    assert_eq!(
        mock.sent.borrow().len(),
        1,
        "flushed and dispatched at once"
    );
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.done.get(), 0);
    vm.on_http_call_response(&mock, ROOT, 1, Answer::status(200), true);
    assert_eq!(mock.done.get(), 1);
    assert!(vm.plugins.is_empty(), "forgotten after done()");
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.done.get(), 1, "done() once");

    let (mut vm, mock) = configured(CONFIG);
    serve(&mut vm, &mock, 2, "/a", 1);
    assert!(!vm.on_done(&mock, ROOT));
    mock.now.set(mock.now.get() + 4_999_000_000);
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.done.get(), 0);
    mock.now.set(mock.now.get() + 1_000_000);
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.done.get(), 1, "after min(timeout_ms, 5 s)");
}

#[test]
fn refused_dispatches_during_shutdown_are_tried_once_per_tick_until_the_deadline() {
    let (mut vm, mock) = configured(CONFIG);
    mock.refuse_calls.set(true);
    for ctx in 2..6 {
        serve(&mut vm, &mock, ctx, "/a", 1);
    }
    assert!(!vm.on_done(&mock, ROOT), "held: not done at once");
    let calls = |m: &Mock| m.calls().iter().filter(|c| *c == "http_call").count();
    assert_eq!(calls(&mock), 1, "one batch, one attempt per pump");
    vm.on_tick(&mock, ROOT);
    assert_eq!(calls(&mock), 1);
    mock.now.set(mock.now.get() + 5_000_000_000);
    vm.on_tick(&mock, ROOT);
    assert_eq!(mock.done.get(), 1, "done() at the deadline");
}

#[test]
fn a_refused_dispatch_warns_once_and_is_retried() {
    let (mut vm, mock) = configured(CONFIG);
    mock.refuse_calls.set(true);
    serve(&mut vm, &mock, 2, "/a", 1);
    mock.now.set(START_NS + 200_000_000);
    vm.on_tick(&mock, ROOT);
    mock.now.set(START_NS + 2_000_000_000);
    vm.on_tick(&mock, ROOT);
    let warnings = mock
        .logs
        .borrow()
        .iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .count();
    assert_eq!(warnings, 1);
    assert!(mock.metric("meshaudit_batch_retries") >= 1);
    assert_eq!(vm.buffered_events(ROOT), Some(1));
}

#[test]
fn bodies_are_read_at_their_first_chunk_and_hashed_whole() {
    let (mut vm, mock) = configured(
        r#"{"collector_cluster":"c","capture_bodies":true,"signing_secret":"ss","flush_interval_ms":100}"#,
    );
    mock.request("/orders", 1);
    mock.maps.borrow_mut().insert(
        MapType::RequestHeaders,
        serialize(&[
            (":method", b"POST"),
            (":path", b"/orders"),
            ("content-type", b"application/json"),
        ]),
    );
    let body = br#"{"item":"book","password":"pw"}"#;
    mock.buffers
        .borrow_mut()
        .insert(BufferType::RequestBody, body.to_vec());
    mock.buffers
        .borrow_mut()
        .insert(BufferType::ResponseBody, b"[1]".to_vec());
    vm.on_context_create(2, ROOT);
    vm.on_request_headers(&mock, 2);
    assert_eq!(mock.calls(), vec!["header_map:RequestHeaders"]);
    vm.on_request_body(&mock, 2, body.len());
    vm.on_response_headers(&mock, 2);
    assert_eq!(
        mock.calls(),
        vec!["buffer:RequestBody", "header_map:ResponseHeaders"],
        "each map read while Envoy shows it"
    );
    vm.on_response_body(&mock, 2, 3);
    vm.on_log(&mock, 2);
    let calls = mock.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("header_map:")),
        "{calls:?}"
    );
    mock.now.set(START_NS + 200_000_000);
    vm.on_tick(&mock, ROOT);
    let sent = mock.sent.borrow().clone();
    let e = &lines(&sent[0].1)[0];
    assert_eq!(
        e.pointer(&["eventdata", "requestpayload", "password"])
            .and_then(Value::as_str),
        Some("[REDACTED]")
    );
    assert_eq!(
        e.pointer(&["eventdata", "metadata", "requestbodysha256"])
            .and_then(Value::as_str),
        Some(meshaudit_event::integrity::sha256_hex(body).as_str())
    );
    assert_eq!(
        e.pointer(&["eventdata", "responsepayload", "_value"]),
        parse(b"[1]").ok().as_ref()
    );
    assert_eq!(
        e.pointer(&["http", "requestbytes"]).and_then(Value::as_i64),
        Some(body.len() as i64)
    );
}

#[test]
fn without_capture_bodies_the_header_callbacks_do_nothing() {
    let (mut vm, mock) = configured(CONFIG);
    mock.request("/a", 1);
    vm.on_context_create(2, ROOT);
    vm.on_request_headers(&mock, 2);
    vm.on_response_headers(&mock, 2);
    vm.on_request_body(&mock, 2, 10);
    assert!(mock.calls().is_empty());
}

#[test]
fn a_disabled_filter_keeps_no_streams() {
    let (mut vm, mock) = configured(r#"{"collector_cluster":"c","enabled":false}"#);
    serve(&mut vm, &mock, 2, "/a", 1);
    assert!(mock.calls().is_empty());
    assert!(vm.streams.is_empty());
}

#[test]
fn streams_end_at_on_done_and_give_back_their_body_budget() {
    let config = r#"{"collector_cluster":"c","capture_bodies":true,"max_inflight_body_bytes":100}"#;
    let (mut vm, mock) = configured(config);
    mock.request("/a", 1);
    mock.buffers
        .borrow_mut()
        .insert(BufferType::ResponseBody, br#"{"a":"1234"}"#.to_vec());
    vm.on_context_create(2, ROOT);
    vm.on_request_headers(&mock, 2);
    vm.on_response_headers(&mock, 2);
    vm.on_response_body(&mock, 2, 12);
    assert_eq!(vm.streams.len(), 1);
    assert!(vm.plugins.get(&ROOT).expect("plugin").budget.used > 0);
    // A stream reset before `on_log` still ends at `on_done`.
    assert!(vm.on_done(&mock, 2));
    assert!(vm.streams.is_empty());
    let p = vm.plugins.get(&ROOT).expect("plugin");
    assert_eq!(p.budget.used, 0, "reserved body bytes released");
    assert!(vm.on_done(&mock, 2), "an unknown context is done at once");
}
