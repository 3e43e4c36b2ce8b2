//! Shared by the integration tests: fixed events (the golden vectors) and a
//! generator of random ones, plus how to find the mobius peer.
#![allow(dead_code)]

use meshaudit_event::schema::{
    format_timestamp, new_uuid_v4, severity_for, status_for, EventMetadata, HttpEvent, HttpSection,
};
use meshaudit_event::{parse, Map, Number, Value};
use proptest::prelude::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The Python that has mobius-auditlog-py 1.1.0: `MESHAUDIT_PYTHON`, else
/// the project virtualenv. Panics saying how to get it when it is missing.
pub fn mobius_python() -> String {
    let py = std::env::var("MESHAUDIT_PYTHON").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let version = Command::new(&py)
        .arg(peer_script())
        .arg("check")
        .stderr(Stdio::inherit())
        .output();
    match version {
        Ok(out) if out.status.success() => {
            let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert_eq!(
                v, "1.1.0",
                "{py} has mobius-auditlog-py {v}; these tests need 1.1.0: run `make setup`"
            );
            py
        }
        _ => panic!(
            "no Python with mobius-auditlog-py 1.1.0 at {py}: run `make setup` \
             (or set MESHAUDIT_PYTHON to a Python with mobius-auditlog-py==1.1.0, pydantic and starlette)"
        ),
    }
}

pub fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/mobius_peer.py")
}

/// Runs the peer script with `args`, feeding `stdin`.
pub fn run_peer(py: &str, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(py)
        .arg(peer_script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run `make setup`"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().expect("python runs");
    writer.join().expect("writer").expect("write to python");
    assert!(
        out.status.success(),
        "mobius peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// One line of the golden/peer files: `<hex of the key> <event JSON>`.
pub fn split_line(line: &str) -> (Vec<u8>, &str) {
    let (key, doc) = line.split_once(' ').expect("'<hex key> <json>' line");
    (hex::decode(key).expect("hex key"), doc)
}

fn obj(text: &str) -> Value {
    parse(text.as_bytes()).expect("fixture JSON")
}

/// Hand-made events covering every field and the pruning corners; their
/// sealed forms are the committed golden vectors. `(event, key)`: an empty
/// key seals without a signature.
pub fn fixed_events() -> Vec<(HttpEvent, &'static str)> {
    let mut out = Vec::new();

    let mut e = HttpEvent::new(
        new_uuid_v4([0x11; 16]),
        format_timestamp(1_767_323_045_000_006),
    );
    e.tenantid = Some("acme".into());
    e.traceid = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    e.transactionid = Some("tx-1".into());
    e.requestid = Some("7f1c1e2a-0000-4000-8000-000000000001".into());
    e.spanid = Some("00f067aa0ba902b7".into());
    e.parentservicespanid = Some("00f067aa0ba902b6".into());
    e.httpmethod = Some("POST".into());
    e.httpurl = Some("https://orders.shop.svc:8443/orders/42?token=[REDACTED]&q=caf%C3%A9".into());
    e.subject.userid = Some("user-ü-😀".into());
    e.subject.type_ = Some("USER".into());
    e.subject.groups = vec!["admins".into(), String::new(), "ops/eu".into()];
    e.subject.principal = Some("spiffe://cluster.local/ns/shop/sa/orders".into());
    e.kubernetes.namespacename = Some("shop".into());
    e.kubernetes.podname = Some("orders-7d9f-abcde".into());
    e.kubernetes.containername = Some("orders".into());
    e.kubernetes.nodename = Some("node-1".into());
    e.kubernetes.serviceaccount = Some("orders".into());
    e.kubernetes.workload = Some("orders".into());
    e.objectref.resource = Some("orders".into());
    e.objectref.resourceid = Some("42".into());
    e.objectref.apiversion = Some("v1".into());
    e.action.name = Some("/orders/42".into());
    e.action.method = Some("POST".into());
    e.action.severity = Some(severity_for(201).into());
    e.action.status = Some(status_for(201).into());
    e.network.sourceip = Some("10.1.2.3".into());
    e.network.useragent = Some("curl/8.5.0".into());
    e.eventdata.requestpayload = Some(obj(
        r#"{"item":"caf\u00e9 \ud83d\ude00","qty":0,"gift":false,"price":1E2,"ratio":1.10,
            "tiny":0.00001,"huge":1e16,"neg0":-0,"big":123456789012345678901234567890,
            "none":null,"empty":"","list":[null,"",{},{"x":null}],"nested":{"schemaid":"","a":{}},
            "del":"\u007f","ctl":"\u0001\n","password":"[REDACTED]"}"#,
    ));
    e.eventdata.responsepayload = Some(obj(r#"{"id":42,"status":"created"}"#));
    e.eventdata.metadata = EventMetadata {
        issensitive: true,
        compliancecategory: Some("PCI".into()),
        requesttruncated: Some(false),
        responsetruncated: Some(false),
        requestbodybytes: Some(321),
        responsebodybytes: Some(31),
        requestbodysha256: Some("a".repeat(64)),
        responsebodysha256: Some("b".repeat(64)),
        requestencoded: None,
        responseencoded: None,
    };
    let mut req_headers = Map::new();
    req_headers.insert("content-type".into(), "application/json".into());
    req_headers.insert("authorization".into(), "[REDACTED]".into());
    req_headers.insert("x-forwarded-for".into(), "203.0.113.7, 10.0.0.1".into());
    let mut resp_headers = Map::new();
    resp_headers.insert("content-type".into(), "application/json".into());
    e.http = Some(HttpSection {
        statuscode: 201,
        durationms: 12,
        requestbytes: 321,
        responsebytes: 31,
        protocol: Some("HTTP/2".into()),
        authority: Some("orders.shop.svc:8443".into()),
        requestheaders: req_headers,
        responseheaders: resp_headers,
        upstreamcluster: Some("outbound|8443||orders.shop.svc.cluster.local".into()),
        responseflags: None,
        codedetails: Some("via_upstream".into()),
    });
    out.push((e, "s3cret"));

    // No response at all (client reset): status 0, ERROR/FAILURE.
    let mut e = HttpEvent::new(new_uuid_v4([0x22; 16]), format_timestamp(0));
    e.httpmethod = Some("GET".into());
    e.action.name = Some("/slow".into());
    e.action.method = Some("GET".into());
    e.action.severity = Some(severity_for(0).into());
    e.action.status = Some(status_for(0).into());
    e.http = Some(HttpSection {
        statuscode: 0,
        durationms: 30_000,
        responseflags: Some("DC".into()),
        codedetails: Some("downstream_remote_disconnect".into()),
        ..HttpSection::default()
    });
    out.push((e, "clé-ü-🔑"));

    // A non-object body, a compressed one, and no schemaid: mobius re-adds "".
    let mut e = HttpEvent::new(
        new_uuid_v4([0x33; 16]),
        format_timestamp(1_700_000_000_123_456),
    );
    e.schemaid = None;
    e.eventdata.requestpayload = Some(obj(r#"[1,2.5e-07,"x"]"#));
    e.eventdata.responsepayload = Some(Value::Object(Map::new()));
    e.eventdata.metadata.responseencoded = Some(true);
    e.eventdata.metadata.responsebodybytes = Some(1024);
    e.eventdata.metadata.responsebodysha256 = Some("c".repeat(64));
    e.action.severity = Some(severity_for(503).into());
    e.action.status = Some(status_for(503).into());
    out.push((e, ""));

    // The smallest event.
    out.push((HttpEvent::default(), "k"));
    out
}

/// Keys as mobius accepts them: text, possibly non-ASCII, possibly empty
/// (no signature).
pub fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9]{1,16}",
        "\\PC{1,12}",
        Just("=".repeat(40))
    ]
}

fn arb_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(String::new())),
        4 => "\\PC{0,12}".prop_map(Some),
        2 => any::<String>().prop_map(Some),
    ]
}

fn arb_payload_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::Float(f))),
        "[1-9][0-9]{19,40}".prop_map(|d| Value::Number(Number::BigInt(d.into()))),
        any::<String>().prop_map(Value::String),
        Just(Value::String(String::new())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4).prop_map(Value::Object),
        ]
    })
}

/// Random events with every field sometimes set, sometimes empty.
pub fn arb_http_event() -> impl Strategy<Value = HttpEvent> {
    let envelope = (
        any::<[u8; 16]>(),
        0i64..4_102_444_800_000_000,
        prop::collection::vec(arb_text(), 11),
    );
    let sections = (
        prop::collection::vec(arb_text(), 18),
        prop::collection::vec("\\PC{0,8}", 0..3),
        prop::option::of(arb_payload_value()),
        prop::option::of(arb_payload_value()),
        any::<bool>(),
        (any::<[Option<bool>; 4]>(), any::<[Option<u32>; 2]>()),
    );
    let http = prop::option::of((
        prop_oneof![Just(0u32), 100u32..600],
        any::<u32>(),
        any::<[u32; 2]>(),
        prop::collection::vec(arb_text(), 5),
        prop::collection::btree_map("[a-z-]{1,12}", "\\PC{0,16}".prop_map(Value::String), 0..4),
    ));
    (envelope, sections, http).prop_map(
        |((uuid, micros, env), (sec, groups, req, resp, sensitive, (flags, sizes)), http)| {
            let mut e = HttpEvent::new(new_uuid_v4(uuid), format_timestamp(micros));
            let mut env = env.into_iter();
            let mut next = || env.next().flatten();
            e.schemaid = next();
            e.tenantid = next();
            e.traceid = next();
            e.transactionid = next();
            e.requestid = next();
            e.spanid = next();
            e.parentservicespanid = next();
            e.httpmethod = next();
            e.httpurl = next();
            e.specversion = next().or(e.specversion);
            e.id = next().or(e.id);
            let mut sec = sec.into_iter();
            let mut next = || sec.next().flatten();
            e.subject.userid = next();
            e.subject.type_ = next();
            e.subject.principal = next();
            e.subject.groups = groups;
            e.kubernetes.namespacename = next();
            e.kubernetes.podname = next();
            e.kubernetes.containername = next();
            e.kubernetes.nodename = next();
            e.kubernetes.serviceaccount = next();
            e.kubernetes.workload = next();
            e.objectref.resource = next();
            e.objectref.resourceid = next();
            e.objectref.apiversion = next();
            e.action.name = next();
            e.action.method = next();
            e.action.severity = next();
            e.action.status = next();
            e.network.sourceip = next();
            e.network.useragent = next();
            e.eventdata.requestpayload = req;
            e.eventdata.responsepayload = resp;
            e.eventdata.metadata.issensitive = sensitive;
            e.eventdata.metadata.compliancecategory = next();
            e.eventdata.metadata.requesttruncated = flags[0];
            e.eventdata.metadata.responsetruncated = flags[1];
            e.eventdata.metadata.requestencoded = flags[2];
            e.eventdata.metadata.responseencoded = flags[3];
            e.eventdata.metadata.requestbodybytes = sizes[0].map(u64::from);
            e.eventdata.metadata.responsebodybytes = sizes[1].map(u64::from);
            e.eventdata.metadata.requestbodysha256 = sizes[0].map(|n| format!("{n:064x}"));
            if let Some((status, duration, bytes, texts, headers)) = http {
                let mut t = texts.into_iter();
                let mut next = || t.next().flatten();
                e.http = Some(HttpSection {
                    statuscode: status,
                    durationms: u64::from(duration),
                    requestbytes: u64::from(bytes[0]),
                    responsebytes: u64::from(bytes[1]),
                    protocol: next(),
                    authority: next(),
                    requestheaders: headers.clone(),
                    responseheaders: headers,
                    upstreamcluster: next(),
                    responseflags: next(),
                    codedetails: next(),
                });
            }
            e
        },
    )
}
