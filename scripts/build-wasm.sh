#!/usr/bin/env bash
# Builds dist/meshaudit_filter.wasm (SPEC §3) and dist/meshaudit_filter_metadata.wasm
# (feature metadata-only: no header callbacks, refuses capture_bodies; docs/filter.md):
# rustup's wasm32-wasip1 target when installed, otherwise Debian's rustc-web with
# -Zbuild-std. Separate target dir so the host build is never invalidated.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
build() {
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    CARGO_TARGET_DIR=target/wasm cargo build --release --target wasm32-wasip1 -p meshaudit-filter "$@"
  else
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
    RUSTFLAGS="-C linker=wasm-ld-14 -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
    CARGO_TARGET_DIR=target/wasm \
      /usr/bin/cargo build --release --target wasm32-wasip1 -p meshaudit-filter \
        -Zbuild-std=std,panic_abort "$@"
  fi
}
out=target/wasm/wasm32-wasip1/release/meshaudit_filter.wasm
build
cp "$out" dist/meshaudit_filter.wasm
build --features metadata-only
cp "$out" dist/meshaudit_filter_metadata.wasm
for f in dist/meshaudit_filter.wasm dist/meshaudit_filter_metadata.wasm; do
  printf 'wasm: %s (%s bytes)\n' "$f" "$(stat -c %s "$f")"
done
