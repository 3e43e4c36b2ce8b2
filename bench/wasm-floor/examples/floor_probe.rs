//! The probe filter: per request, only the operations its plugin configuration names, so each
//! hostcall (or the hashing) can be priced on its own. Errors are ignored: a probe never stops
//! a request. Operations:
//! - `request_headers` / `response_headers`: all headers as pairs, one hostcall each.
//! - `properties`: the six `get_property` reads an audit filter makes in `on_log`.
//! - `one_property`: one `get_property` (`request.protocol`).
//! - `time`: one clock read.
//! - `hash`: SHA-256 of an 800-byte buffer and an HMAC-SHA256 of the hex digest (an event's
//!   hash and signature).
//! - `request_body`: the request body chunk read from Envoy (one `get_buffer` per chunk).
//! - `hash_body`: SHA-256 of 4 KiB (a captured body's evidence hash).
//!
//! `repeat=N` does each named operation N times per request, so that its price stands out of the
//! noise of a shared machine (the harness divides by N).

use hmac::{Hmac, Mac};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use sha2::{Digest, Sha256};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot { ops: Rc::new(Ops::default()) }) });
}}

#[derive(Default)]
struct Ops {
    request_headers: bool,
    response_headers: bool,
    properties: bool,
    one_property: bool,
    time: bool,
    hash: bool,
    request_body: bool,
    hash_body: bool,
    repeat: usize,
}

impl Ops {
    fn parse(config: &[u8]) -> Ops {
        let mut ops = Ops {
            repeat: 1,
            ..Ops::default()
        };
        for name in String::from_utf8_lossy(config).split(',').map(str::trim) {
            match name {
                "request_headers" => ops.request_headers = true,
                "response_headers" => ops.response_headers = true,
                "properties" => ops.properties = true,
                "one_property" => ops.one_property = true,
                "time" => ops.time = true,
                "hash" => ops.hash = true,
                "request_body" => ops.request_body = true,
                "hash_body" => ops.hash_body = true,
                other => {
                    if let Some(n) = other.strip_prefix("repeat=").and_then(|n| n.parse().ok()) {
                        ops.repeat = n;
                    }
                }
            }
        }
        ops
    }
}

struct ProbeRoot {
    ops: Rc<Ops>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        self.ops = Rc::new(Ops::parse(&config));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp {
            ops: self.ops.clone(),
            sink: 0,
        }))
    }
}

struct ProbeHttp {
    ops: Rc<Ops>,
    /// Keeps results alive so nothing is optimised away.
    sink: usize,
}

impl Context for ProbeHttp {}

const PROPERTIES: [&[&str]; 6] = [
    &["source", "address"],
    &["request", "protocol"],
    &["xds", "cluster_name"],
    &["response", "flags"],
    &["response", "code_details"],
    &["connection", "uri_san_peer_certificate"],
];

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.ops.repeat {
            self.request_headers_ops();
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if self.ops.request_body && body_size > 0 {
            for _ in 0..self.ops.repeat {
                self.sink += hostcalls::get_buffer(
                    proxy_wasm::types::BufferType::HttpRequestBody,
                    0,
                    body_size,
                )
                .ok()
                .flatten()
                .map(|b| b.len())
                .unwrap_or(0);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.ops.repeat {
            if self.ops.response_headers {
                self.sink += hostcalls::get_map_bytes(MapType::HttpResponseHeaders)
                    .map(|m| m.len())
                    .unwrap_or(0);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        for _ in 0..self.ops.repeat {
            self.log_ops();
        }
    }
}

impl ProbeHttp {
    fn request_headers_ops(&mut self) {
        if self.ops.request_headers {
            self.sink += hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                .map(|m| m.len())
                .unwrap_or(0);
        }
        if self.ops.time {
            self.sink += hostcalls::get_current_time()
                .map(|t| t.elapsed().map(|d| d.as_nanos() as usize).unwrap_or(0))
                .unwrap_or(0)
                & 1;
        }
    }

    fn log_ops(&mut self) {
        if self.ops.properties {
            for path in PROPERTIES {
                self.sink += hostcalls::get_property(path.to_vec())
                    .ok()
                    .flatten()
                    .map(|v| v.len())
                    .unwrap_or(0);
            }
        }
        if self.ops.one_property {
            self.sink += hostcalls::get_property(vec!["request", "protocol"])
                .ok()
                .flatten()
                .map(|v| v.len())
                .unwrap_or(0);
        }
        if self.ops.hash_body {
            let mut body = [0u8; 4096];
            for (i, b) in body.iter_mut().enumerate() {
                *b = (i as u8).wrapping_add(self.sink as u8);
            }
            self.sink += Sha256::digest(body)[0] as usize;
        }
        if self.ops.hash {
            let mut event = [0u8; 800];
            for (i, b) in event.iter_mut().enumerate() {
                *b = (i as u8).wrapping_add(self.sink as u8);
            }
            let digest = Sha256::digest(event);
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut hex = [0u8; 64];
            for (i, b) in digest.iter().enumerate() {
                hex[2 * i] = HEX[usize::from(b >> 4)];
                hex[2 * i + 1] = HEX[usize::from(b & 15)];
            }
            if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(b"bench-signing-secret") {
                mac.update(&hex);
                self.sink += mac.finalize().into_bytes()[0] as usize;
            }
        }
    }
}
