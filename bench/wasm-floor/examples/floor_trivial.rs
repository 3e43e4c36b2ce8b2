//! The trivial proxy-wasm filter: per request, one environment read through WASI and one
//! request header set. Hostcall errors are ignored: this filter must never stop a request.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TrivialRoot) });
}}

struct TrivialRoot;

impl Context for TrivialRoot {}

impl RootContext for TrivialRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TrivialHttp))
    }
}

struct TrivialHttp;

impl Context for TrivialHttp {}

impl HttpContext for TrivialHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let pod = std::env::var("POD_NAME").unwrap_or_default();
        let _ = hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            "x-meshaudit-floor",
            Some(pod.as_bytes()),
        );
        Action::Continue
    }
}
