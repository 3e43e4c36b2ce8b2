//! The proxy-wasm exports (ABI 0.2.1, wasm32 only): each callback forwards to
//! the pure [`Vm`] with [`WasmHost`] (in `hostcalls`), the
//! [`crate::vm::Host`] over the ABI. Nothing here decides anything. Every
//! callback answers `Continue`, whatever happens.
//!
//! Only the callbacks the filter uses are exported: Envoy skips absent ones
//! (trailers, connections, queues). There is no `on_delete`: Envoy calls
//! `on_done` just before it, and streams end there. The header callbacks are
//! needed for `capture_bodies` (Envoy shows a header map only during its
//! callback and in `on_log`) and return at once without it; the body
//! callbacks count the body bytes. The start time is Envoy's `request.time`.
#![allow(unsafe_code)]

use crate::batch::Answer;
use crate::hostcalls::WasmHost;
use crate::vm::{read_answer, Vm};
use std::cell::RefCell;

extern "C" {
    fn __wasm_call_ctors();
}

/// Reactor entry point: run static constructors once.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the linker-provided constructor function, called once by the host.
    unsafe { __wasm_call_ctors() };
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
    /// Answers delivered while the state was borrowed (an HTTP call failing
    /// inline during its own dispatch); applied on the next callback.
    static DEFERRED: RefCell<Vec<(u32, u32, Answer)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the VM state unless it is already borrowed (a re-entrant
/// callback), first applying answers deferred by such a callback.
fn with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VM.with(|cell| {
        let mut vm = cell.try_borrow_mut().ok()?;
        let pending = DEFERRED.with(|d| d.try_borrow_mut().map(|mut d| std::mem::take(&mut *d)));
        for (context_id, token, answer) in pending.unwrap_or_default() {
            vm.on_http_call_response(&WasmHost, context_id, token, answer, false);
        }
        Some(f(&mut vm))
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with_vm(|vm| vm.on_context_create(context_id, parent_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> u32 {
    u32::from(with_vm(|vm| vm.on_configure(&WasmHost, context_id, size)).unwrap_or(false))
}

#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    u32::from(with_vm(|vm| vm.on_done(&WasmHost, context_id)).unwrap_or(true))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    with_vm(|vm| vm.on_request_headers(&WasmHost, context_id));
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    with_vm(|vm| vm.on_response_headers(&WasmHost, context_id));
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, _eos: u32) -> u32 {
    with_vm(|vm| vm.on_request_body(&WasmHost, context_id, size));
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, _eos: u32) -> u32 {
    with_vm(|vm| vm.on_response_body(&WasmHost, context_id, size));
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with_vm(|vm| vm.on_log(&WasmHost, context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with_vm(|vm| vm.on_tick(&WasmHost, context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    let mut answer = Some(read_answer(&WasmHost, body_size));
    with_vm(|vm| {
        if let Some(a) = answer.take() {
            vm.on_http_call_response(&WasmHost, context_id, token, a, true);
        }
    });
    if let Some(a) = answer {
        DEFERRED.with(|d| {
            if let Ok(mut d) = d.try_borrow_mut() {
                d.push((context_id, token, a));
            }
        });
    }
}
