#!/usr/bin/env bash
# Builds dist/meshaudit_filter.wasm (SPEC §3) with scripts/wasm-cargo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
scripts/wasm-cargo.sh target/wasm build -p meshaudit-filter
cp target/wasm/wasm32-wasip1/release/meshaudit_filter.wasm dist/meshaudit_filter.wasm
printf 'wasm: dist/meshaudit_filter.wasm (%s bytes)\n' "$(stat -c %s dist/meshaudit_filter.wasm)"
