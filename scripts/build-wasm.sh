#!/usr/bin/env bash
# Builds dist/meshaudit_filter.wasm (SPEC §3): rustup's wasm32-wasip1 target when
# installed, otherwise Debian's rustc-web with -Zbuild-std. Separate target dir
# so the host build is never invalidated.
set -euo pipefail
cd "$(dirname "$0")/.."
# The filter alone is built with fat LTO in one codegen unit (the host
# builds keep the workspace profile): inlining across crates, the allocator
# shims included, takes ~5 % off its wasm time per request (docs/BENCHMARKS.md).
export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
mkdir -p dist
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  CARGO_TARGET_DIR=target/wasm cargo build --release --target wasm32-wasip1 -p meshaudit-filter
else
  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
  RUSTFLAGS="-C linker=wasm-ld-14 -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  CARGO_TARGET_DIR=target/wasm \
    /usr/bin/cargo build --release --target wasm32-wasip1 -p meshaudit-filter \
      -Zbuild-std=std,panic_abort
fi
cp target/wasm/wasm32-wasip1/release/meshaudit_filter.wasm dist/meshaudit_filter.wasm
printf 'wasm: dist/meshaudit_filter.wasm (%s bytes)\n' "$(stat -c %s dist/meshaudit_filter.wasm)"
