//! Differential tests against Python's own `json` module (SPEC §5): our
//! `parse` + `canonical` must produce, byte for byte, what
//! `json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))`
//! produces, and refuse exactly the documents SPEC §4 says are malformed.
//!
//! Needs `python3` (any Python 3.8+; `MESHAUDIT_PYTHON3` overrides the
//! command). `MESHAUDIT_DIFF_SEED` picks another random seed, `MESHAUDIT_DIFF_CASES`
//! another case count.

use meshaudit_event::value::ParseErrorKind;
use meshaudit_event::{canonical, parse, Map, Number, Value};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python3() -> String {
    std::env::var("MESHAUDIT_PYTHON3").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs Python with `args`, feeding `stdin`; panics with what to install when
/// there is no Python.
fn run_python(args: &[&str], stdin: &[u8]) -> String {
    let py = python3();
    let mut child = Command::new(&py)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{py}` ({e}): these tests need Python 3; install it (Debian: apt-get install python3) or set MESHAUDIT_PYTHON3")
        });
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    // Write from another thread so a large output cannot deadlock the pipes.
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().expect("python runs");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python");
    assert!(
        out.status.success(),
        "`{py}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python prints UTF-8")
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn kind_name(k: ParseErrorKind) -> &'static str {
    match k {
        ParseErrorKind::NonFiniteNumber => "NonFiniteNumber",
        ParseErrorKind::TooDeep => "TooDeep",
        ParseErrorKind::LoneSurrogate => "LoneSurrogate",
        ParseErrorKind::InvalidNumber => "InvalidNumber",
        _ => "Syntax",
    }
}

/// Python generates the documents and the expected answers (see
/// `tests/py/json_reference.py`); we parse and canonicalise each.
#[test]
fn parse_and_canonical_match_python_json() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/json_reference.py");
    let count = env_num("MESHAUDIT_DIFF_CASES", 4000);
    let seeds: Vec<u64> = match std::env::var("MESHAUDIT_DIFF_SEED") {
        Ok(s) => vec![s.parse().expect("MESHAUDIT_DIFF_SEED is a number")],
        Err(_) => vec![1, 2],
    };
    let mut checked = 0usize;
    let mut kinds_seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for seed in seeds {
        let out = run_python(
            &[
                script.to_str().expect("utf-8 path"),
                &seed.to_string(),
                &count.to_string(),
            ],
            b"",
        );
        for line in out.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(mode), Some(input_hex), Some(expected)) =
                (parts.next(), parts.next(), parts.next())
            else {
                panic!("bad reference line: {line}");
            };
            let input = hex::decode(input_hex).expect("hex input");
            let ours = match parse(&input) {
                Ok(v) => format!("ok:{}", hex::encode(canonical(&v))),
                Err(e) => format!("err:{}", kind_name(e.kind)),
            };
            kinds_seen.insert(
                if expected.starts_with("ok:") {
                    "ok"
                } else {
                    expected
                }
                .to_owned(),
            );
            checked += 1;
            let agree = match mode {
                "k" => ours == expected,
                _ => ours.starts_with("err:") && expected.starts_with("err:") || ours == expected,
            };
            if !agree && failures.len() < 10 {
                failures.push(describe(&input, expected, &ours));
            }
        }
    }
    assert!(
        checked as u64 >= count,
        "python produced only {checked} cases"
    );
    for kind in [
        "ok",
        "err:Syntax",
        "err:NonFiniteNumber",
        "err:TooDeep",
        "err:LoneSurrogate",
        "err:InvalidNumber",
    ] {
        assert!(kinds_seen.contains(kind), "no {kind} case was generated");
    }
    assert!(
        failures.is_empty(),
        "{} cases disagree with Python:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The input, and both answers around where they first differ.
fn describe(input: &[u8], expected: &str, ours: &str) -> String {
    let text = |s: &str| match s.strip_prefix("ok:") {
        Some(h) => format!(
            "ok:{}",
            String::from_utf8_lossy(&hex::decode(h).unwrap_or_default())
        ),
        None => s.to_owned(),
    };
    let (expected, ours) = (text(expected), text(ours));
    let at = expected
        .bytes()
        .zip(ours.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(ours.len()));
    let around = |s: &str| {
        s.get(at.saturating_sub(60)..(at + 60).min(s.len()))
            .unwrap_or(s)
            .to_owned()
    };
    format!(
        "input {:?}\n  python (near byte {at}): {}\n  ours:                   {}",
        String::from_utf8_lossy(input)
            .chars()
            .take(200)
            .collect::<String>(),
        around(&expected),
        around(&ours)
    )
}

fn arb_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::Int),
        // Any finite double from a random bit pattern.
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Number::Float),
        // Few significant bits at any scale: where two shortest candidates
        // can be equally near (ties), e.g. 142361721412408.625.
        (any::<i64>(), 0u32..64, -80i32..80)
            .prop_map(|(m, shift, e)| { Number::Float((m >> shift) as f64 * 2f64.powi(e)) }),
        (any::<bool>(), "[1-9][0-9]{19,60}").prop_map(|(neg, digits)| {
            Number::BigInt(if neg { format!("-{digits}") } else { digits }.into())
        }),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x7f]{0,12}",
        "[\u{80}-\u{7ff}\u{fff0}-\u{ffff}\u{10000}-\u{10ffff}]{0,6}",
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number().prop_map(Value::Number),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_string(), inner, 0..6)
                .prop_map(|m| Value::Object(Map::from_iter(m))),
        ]
    })
}

/// The other direction: values built in Rust (floats from random bit
/// patterns, strings from every plane) are canonicalised by us, and Python's
/// `dumps(loads(ours))` must give the same bytes back.
#[test]
fn python_reads_our_canonical_form_back_unchanged() {
    let count = env_num("MESHAUDIT_DIFF_CASES", 4000) as usize;
    let seed = env_num("MESHAUDIT_DIFF_SEED", 7);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = arb_value();
    let mut input = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..count {
        let v = strategy
            .new_tree(&mut runner)
            .expect("value tree")
            .current();
        let bytes = canonical(&v);
        input.extend_from_slice(&bytes);
        input.push(b'\n');
        ours.push(String::from_utf8(bytes).expect("canonical JSON is ASCII"));
    }
    let program = "import sys,json\nfor line in sys.stdin:\n    print(json.dumps(json.loads(line), sort_keys=True, separators=(',', ':')))";
    let out = run_python(&["-c", program], &input);
    let theirs: Vec<&str> = out.lines().collect();
    assert_eq!(
        theirs.len(),
        ours.len(),
        "python answered a different number of lines"
    );
    let bad: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a != b)
        .take(5)
        .map(|(a, b)| format!("ours:   {a}\npython: {b}"))
        .collect();
    assert!(
        bad.is_empty(),
        "python prints our canonical form differently:\n{}",
        bad.join("\n")
    );
}

/// Python's `hmac`/`hashlib` agree with our event and batch signatures on
/// random keys, timestamps and bodies (including non-UTF-8 bytes).
#[test]
fn signatures_match_python_hmac() {
    use meshaudit_event::integrity::{batch_signature, sha256_hex, sign_hash};
    let mut runner = TestRunner::deterministic();
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..100),
        "[0-9]{1,12}",
        any::<String>(),
    );
    let mut lines = String::new();
    let mut expected = Vec::new();
    for _ in 0..300 {
        let (body, ts, key_text) = strategy.new_tree(&mut runner).expect("tree").current();
        let hash = sha256_hex(&body);
        lines.push_str(&format!(
            "{} {} {} {}\n",
            hex::encode(key_text.as_bytes()),
            ts,
            hex::encode(&body),
            hash
        ));
        expected.push(format!(
            "{} {} {}",
            hash,
            sign_hash(key_text.as_bytes(), &hash),
            batch_signature(key_text.as_bytes(), &ts, &body)
        ));
    }
    let program = r#"
import sys, hmac, hashlib
for line in sys.stdin:
    key, ts, body, h = line.split(" ")
    key = bytes.fromhex(key).decode("utf-8"); body = bytes.fromhex(body); h = h.strip()
    digest = hashlib.sha256(body).hexdigest()
    event_sig = hmac.new(key.encode("utf-8"), h.encode("utf-8"), hashlib.sha256).hexdigest()
    batch = "sha256=" + hmac.new(key.encode("utf-8"), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    print(digest, event_sig, batch)
"#;
    let out = run_python(&["-c", program], lines.as_bytes());
    let theirs: Vec<&str> = out.lines().collect();
    assert_eq!(theirs.len(), expected.len());
    for (ours, theirs) in expected.iter().zip(theirs) {
        assert_eq!(ours, theirs);
    }
}
