#!/usr/bin/env bash
# Builds the reference filters of bench/wasm-floor (the empty proxy-wasm filter and the
# trivial one) into target/bench-wasm/, with scripts/wasm-cargo.sh (the toolchain of
# scripts/build-wasm.sh) and its own target dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/bench-wasm
mkdir -p "$out"
manifest=bench/wasm-floor/Cargo.toml
scripts/wasm-cargo.sh target/wasm-floor build --quiet --manifest-path "$manifest" --examples
for f in floor_empty floor_trivial floor_probe; do
  cp "target/wasm-floor/wasm32-wasip1/release/examples/$f.wasm" "$out/$f.wasm"
done
printf 'wasm-floor: %s\n' "$(cd "$out" && ls -1 floor_*.wasm | tr '\n' ' ')"
