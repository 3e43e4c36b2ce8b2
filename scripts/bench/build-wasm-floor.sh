#!/usr/bin/env bash
# Builds the reference filters of bench/wasm-floor (the empty proxy-wasm filter and the
# trivial one) into target/bench-wasm/, with the same toolchain choice as
# scripts/build-wasm.sh (rustup's wasm32-wasip1 when installed, otherwise Debian's
# rustc-web with -Zbuild-std) and its own target dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/bench-wasm
mkdir -p "$out"
manifest=bench/wasm-floor/Cargo.toml
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  CARGO_TARGET_DIR=target/wasm-floor cargo build --quiet --release --target wasm32-wasip1 \
    --manifest-path "$manifest" --examples
else
  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
  RUSTFLAGS="-C linker=wasm-ld-14 -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  CARGO_TARGET_DIR=target/wasm-floor \
    /usr/bin/cargo build --quiet --release --target wasm32-wasip1 --manifest-path "$manifest" \
      --examples -Zbuild-std=std,panic_abort
fi
for f in floor_empty floor_trivial floor_probe; do
  cp "target/wasm-floor/wasm32-wasip1/release/examples/$f.wasm" "$out/$f.wasm"
done
printf 'wasm-floor: %s\n' "$(cd "$out" && ls -1 floor_*.wasm | tr '\n' ' ')"
