//! Per-event cost of the filter's pure work, natively: header capture (what
//! `on_log` does besides hostcalls) and what the tick does per event (build,
//! prune, hash, sign, serialise). `cargo run --release -p meshaudit-filter
//! --example tick_cost`. Inside Envoy (V8) expect a few times these numbers,
//! and SHA-256 without the CPU's SHA extensions.
use meshaudit_event::line::Signer;
use meshaudit_filter::capture::{
    parse_header_pairs, serialize_header_pairs, HeaderPlan, LogInfo, RequestRecord, ResponseCapture,
};
use meshaudit_filter::config::parse;
use meshaudit_filter::event::{build_event, sealed_line, Workload};
use meshaudit_filter::redact::Redactor;
use meshaudit_filter::vm::signer;
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let cfg = match parse(
        br#"{"collector_cluster":"c","signing_secret":"s"}"#,
        &BTreeMap::<String, String>::new(),
    ) {
        Ok(c) => c,
        Err(e) => return eprintln!("{e}"),
    };
    let plan = HeaderPlan::new(&cfg);
    let redactor = Redactor::new(&cfg);
    let workload = Workload {
        namespace: Some("shop".into()),
        pod: Some("orders-7f9c".into()),
        ..Workload::default()
    };
    let req = serialize_header_pairs(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "127.0.0.1:18000"),
        (":path", "/api/orders"),
        ("user-agent", "wrk"),
        ("x-request-id", "1a01aed2-1288-4303-9545-4acf610bc8e1"),
        ("x-forwarded-proto", "http"),
    ]);
    let resp = serialize_header_pairs(&[
        (":status", "200"),
        ("content-type", "text/plain"),
        ("content-length", "5"),
    ]);
    let prepared = signer(&cfg);
    let unsigned_signer = Signer::new(None, None);
    // batches of 100, as the tick sees them
    let rounds = 500;
    let batch = 100;
    let n = (rounds * batch) as f64;
    let (mut capture, mut build, mut seal, mut unsigned) = (0.0, 0.0, 0.0, 0.0);
    let mut bytes = 0usize;
    for _ in 0..rounds {
        let t = Instant::now();
        let records: Vec<RequestRecord> = (0..batch)
            .map(|_| {
                let request = plan.request(&parse_header_pairs(&req), 1_700_000_000_000_000_000);
                let mut response = ResponseCapture::default();
                plan.response(&parse_header_pairs(&resp), &mut response);
                RequestRecord {
                    request,
                    response,
                    log: LogInfo {
                        end_unix_ns: 1_700_000_000_000_100_000,
                        source_address: Some("127.0.0.1:5555".into()),
                        protocol: Some("HTTP/1.1".into()),
                        code_details: Some("direct_response".into()),
                        ..LogInfo::default()
                    },
                }
            })
            .collect();
        capture += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let events: Vec<_> = records
            .into_iter()
            .map(|r| build_event(r, &cfg, &workload, &redactor, [3; 16]))
            .collect();
        build += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for e in &events {
            bytes += sealed_line(e, &cfg, &prepared).len();
        }
        seal += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for e in &events {
            let _ = meshaudit_event::line::sealed_line(e, cfg.schema, &unsigned_signer);
        }
        unsigned += t.elapsed().as_secs_f64();
    }
    println!(
        "header capture:            {:.2} us/event",
        capture * 1e6 / n
    );
    println!("build_event:               {:.2} us/event", build * 1e6 / n);
    println!(
        "prune+hash+sign+serialise: {:.2} us/event ({} bytes/event)",
        seal * 1e6 / n,
        bytes / (rounds * batch)
    );
    println!(
        "  of which without HMAC:   {:.2} us/event",
        unsigned * 1e6 / n
    );
}
