//! Per-event cost of a captured 4 KiB JSON request body (the benchmark's
//! order with ~60 items), natively: hashing and keeping the chunks as they
//! pass, then parsing, redacting, pruning and sealing — through a JSON tree
//! (the reference) and in one pass (what the filter ships).
//! `cargo run --release -p meshaudit-filter --example body_cost`.
use meshaudit_filter::capture::{body_capture_for, InflightBudget, RequestRecord};
use meshaudit_filter::config::parse;
use meshaudit_filter::event::{build, build_event, sealed_line, write_line, Workload};
use meshaudit_filter::redact::Redactor;
use meshaudit_filter::vm::signer;
use std::collections::BTreeMap;
use std::time::Instant;

mod common;

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
    let body = common::post_body();
    let n = 5_000;
    let (mut capture, mut tree_build, mut seal, mut one_pass) = (0.0, 0.0, 0.0, 0.0);
    let mut encoder = meshaudit_event::line::LineEncoder::new(prepared.clone());
    let mut bodies = meshaudit_event::stream::PayloadWriter::default();
    let mut out = Vec::with_capacity(1 << 20);
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
        let again = rec.clone();
        let t = Instant::now();
        let e = build_event(rec, &cfg, &workload, &redactor, [5; 16]);
        tree_build += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = sealed_line(&e, &cfg, &prepared);
        seal += t.elapsed().as_secs_f64();
        let t = Instant::now();
        out.clear();
        let built = build(again, &cfg, &workload, &redactor, &mut bodies, [5; 16]);
        let _ = write_line(built, cfg.schema, &mut encoder, usize::MAX, &mut out);
        one_pass += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1e6 / f64::from(n);
    println!("hash + keep chunks:          {:.2} us/event", per(capture));
    println!(
        "tree: build (parse, redact, prune): {:.2} us/event",
        per(tree_build)
    );
    println!(
        "tree: seal + serialise:             {:.2} us/event",
        per(seal)
    );
    println!(
        "one pass: build + seal + write:     {:.2} us/event",
        per(one_pass)
    );
}
