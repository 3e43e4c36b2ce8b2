//! meshaudit proxy-wasm filter (being built).
