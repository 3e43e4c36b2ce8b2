//! Per-event cost of a captured 4 KiB JSON request body (the benchmark's
//! order with ~60 items), natively: hashing and keeping the chunks as they
//! pass, then on the tick parsing, redacting, pruning and sealing.
//! `cargo run --release -p meshaudit-filter --example body_cost`.
use meshaudit_filter::capture::{body_capture_for, InflightBudget, RequestRecord};
use meshaudit_filter::config::parse;
use meshaudit_filter::event::{build_event, sealed_line, Workload};
use meshaudit_filter::redact::Redactor;
use meshaudit_filter::vm::signer;
use std::collections::BTreeMap;
use std::time::Instant;

fn body() -> Vec<u8> {
    let mut b = String::from(r#"{"order":{"id":"ord-42","customer":"user-00042","items":["#);
    let mut i = 0;
    while b.len() < 4000 {
        i += 1;
        if i > 1 {
            b.push(',');
        }
        b.push_str(&format!(
            r#"{{"sku":"SKU-{i:05}","qty":{},"price":{}.99,"note":"standard"}}"#,
            i % 7 + 1,
            i % 90 + 10
        ));
    }
    b.push_str("]}}");
    while b.len() < 4096 {
        b.push(' ');
    }
    b.into_bytes()
}

fn main() {
    let cfg = match parse(
        br#"{"collector_cluster":"c","signing_secret":"s","capture_bodies":true}"#,
        &BTreeMap::<String, String>::new(),
    ) {
        Ok(c) => c,
        Err(e) => return eprintln!("{e}"),
    };
    let redactor = Redactor::new(&cfg);
    let prepared = signer(&cfg);
    let workload = Workload::default();
    let body = body();
    let n = 5_000;
    let (mut capture, mut build, mut seal) = (0.0, 0.0, 0.0);
    let mut budget = InflightBudget::new(usize::MAX);
    for _ in 0..n {
        let t = Instant::now();
        let mut rec = RequestRecord::default();
        rec.request.method = "POST".into();
        rec.request.path = "/api/v1/orders".into();
        rec.request.body = body_capture_for(&cfg, Some("application/json"), None);
        if let Some(b) = rec.request.body.as_mut() {
            for chunk in body.chunks(1024) {
                b.push(chunk, &mut budget);
            }
        }
        capture += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let e = build_event(rec, &cfg, &workload, &redactor, [5; 16]);
        build += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = sealed_line(&e, &cfg, &prepared);
        seal += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1e6 / f64::from(n);
    println!("hash + keep chunks:          {:.2} us/event", per(capture));
    println!("build (parse, redact, prune): {:.2} us/event", per(build));
    println!("seal + serialise:             {:.2} us/event", per(seal));
}
