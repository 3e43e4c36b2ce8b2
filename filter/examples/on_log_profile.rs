//! The filter's own work per metadata request, natively, for instruction counts:
//! `cargo build --release -p meshaudit-filter --example on_log_profile --features sha2/force-soft`
//! then `valgrind --tool=callgrind target/release/examples/on_log_profile 20000`
//! (`force-soft`: the SHA-256 code wasm32 runs, not the CPU's SHA instructions).
//! The host answers like `make bench`'s GET (scripts/bench/wrk_get.lua) on one
//! keep-alive connection; batches go nowhere and are answered 200.
//! `on_log_profile N bodies`: the 4 KiB JSON POST of scripts/bench/wrk_post.lua,
//! captured with `capture_bodies`.

mod common;

use common::post_body;
use meshaudit_filter::batch::Answer;
use meshaudit_filter::capture::serialize_header_pairs;
use meshaudit_filter::stats::StatKind;
use meshaudit_filter::vm::{BufferType, Host, LogLevel, MapType, Vm};
use std::cell::Cell;

const CONFIG: &str = r#"{"collector_cluster":"c","api_key":"ak","signing_secret":"ss"}"#;
const CONFIG_BODIES: &str =
    r#"{"collector_cluster":"c","api_key":"ak","signing_secret":"ss","capture_bodies":true}"#;

struct Bench {
    config: &'static str,
    body: Vec<u8>,
    now: Cell<u64>,
    request: Vec<u8>,
    response: Vec<u8>,
    tokens: Cell<u32>,
}

impl Host for Bench {
    fn now_ns(&self) -> u64 {
        self.now.set(self.now.get() + 40_000);
        self.now.get()
    }
    fn header_map(&self, map: MapType) -> Option<Vec<u8>> {
        match map {
            MapType::RequestHeaders => Some(self.request.clone()),
            MapType::ResponseHeaders => Some(self.response.clone()),
            MapType::HttpCallResponseHeaders => Some(serialize_header_pairs(&[(":status", "200")])),
            MapType::ResponseTrailers => None,
        }
    }
    fn buffer(&self, buffer: BufferType, size: usize) -> Option<Vec<u8>> {
        match buffer {
            BufferType::PluginConfiguration => Some(self.config.as_bytes()[..size].to_vec()),
            BufferType::RequestBody => Some(self.body[..size].to_vec()),
            _ => None,
        }
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let v: &[u8] = match path {
            ["request", "time"] => return Some((self.now.get() - 30_000).to_le_bytes().to_vec()),
            ["connection", "id"] => return Some(7u64.to_le_bytes().to_vec()),
            ["response", "flags"] => return Some(0u64.to_le_bytes().to_vec()),
            ["source", "address"] => b"127.0.0.1:41234",
            ["request", "protocol"] => b"HTTP/1.1",
            ["xds", "cluster_name"] => b"app",
            ["response", "code_details"] => b"direct_response",
            _ => return None,
        };
        Some(v.to_vec())
    }
    fn http_call(&self, _: &str, _: &[(&str, &str)], body: &[u8], _: u64) -> Option<u32> {
        // `PRINT_LINE=1`: show one shipped line (what each request hashes).
        if self.tokens.get() == 0 && std::env::var_os("PRINT_LINE").is_some() {
            let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
            eprintln!("{} bytes: {}", line.len(), String::from_utf8_lossy(line));
        }
        self.tokens.set(self.tokens.get() + 1);
        Some(self.tokens.get())
    }
    fn define_metric(&self, _: StatKind, _: &str) -> Option<u32> {
        Some(0)
    }
    fn increment_metric(&self, _: u32, _: i64) {}
    fn set_tick_period_ms(&self, _: u64) {}
    fn log(&self, _: LogLevel, _: &str) {}
    fn done(&self) {}
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "POD_NAMESPACE" => Some("shop".into()),
            "POD_NAME" => Some("checkout-bench-0".into()),
            "CONTAINER_NAME" => Some("app".into()),
            "NODE_NAME" => Some("node-0".into()),
            _ => None,
        }
    }
}

/// The request headers of wrk_get.lua, or of wrk_post.lua with `bodies`.
fn request_headers(bodies: bool) -> Vec<(&'static str, &'static str)> {
    let mut h = vec![
        (":authority", "127.0.0.1:10000"),
        (
            ":path",
            if bodies {
                "/api/v1/orders"
            } else {
                "/api/v1/orders/42?page=2"
            },
        ),
        (":method", if bodies { "POST" } else { "GET" }),
        (":scheme", "http"),
        ("user-agent", "okhttp/4.12.0"),
        ("tenantid", "acme"),
        ("actionloguserid", "user-00042"),
        ("x-request-id", "3f1e5b8a-6c2d-4e9f-8a7b-1c2d3e4f5a6b"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-forwarded-proto", "http"),
    ];
    if bodies {
        h.push(("content-type", "application/json"));
        h.push(("content-length", "4096"));
    }
    h
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let bodies = std::env::args().nth(2).as_deref() == Some("bodies");
    let host = Bench {
        config: if bodies { CONFIG_BODIES } else { CONFIG },
        body: if bodies { post_body() } else { Vec::new() },
        now: Cell::new(1_700_000_000_000_000_000),
        request: serialize_header_pairs(&request_headers(bodies)),
        response: serialize_header_pairs(&[
            (":status", "200"),
            ("content-length", "17"),
            ("content-type", "text/plain"),
            ("date", "Mon, 30 Nov 2026 12:00:00 GMT"),
            ("server", "envoy"),
        ]),
        tokens: Cell::new(0),
    };
    let mut vm = Vm::default();
    assert!(vm.on_configure(&host, 1, host.config.len()));
    let mut answered = 0;
    for i in 0..n {
        let ctx = 2 + i;
        vm.on_context_create(ctx, 1);
        vm.on_request_headers(&host, ctx);
        if bodies {
            vm.on_request_body(&host, ctx, host.body.len());
        }
        vm.on_response_headers(&host, ctx);
        vm.on_response_body(&host, ctx, 17);
        vm.on_log(&host, ctx);
        vm.on_done(&host, ctx);
        if i % 100 == 99 {
            vm.on_tick(&host, 1);
            while answered < host.tokens.get() {
                answered += 1;
                vm.on_http_call_response(&host, 1, answered, Answer::status(200), true);
            }
        }
    }
    println!(
        "{n} requests, {} batches, {:?} events held",
        host.tokens.get(),
        vm.buffered_events(1)
    );
}
