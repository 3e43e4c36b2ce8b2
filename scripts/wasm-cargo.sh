#!/usr/bin/env bash
# Runs cargo for wasm32-wasip1 (SPEC §3) in its own target dir, so the host
# build is never invalidated: rustup's target when installed, otherwise
# Debian's rustc-web with -Zbuild-std. Every wasm is built with fat LTO in one
# codegen unit: inlining across crates, the allocator shims included, takes
# ~5 % off the filter's wasm time per request (docs/BENCHMARKS.md).
#
#   scripts/wasm-cargo.sh TARGET_DIR SUBCOMMAND [CARGO ARGS...]
#
# WASM_COMMAND=1 (with SUBCOMMAND rustc): the build is a WASI command, which
# Debian's toolchain links only with wasi-libc's crt1-command.o given.
set -euo pipefail
dir=$1 sub=$2
shift 2
export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  CARGO_TARGET_DIR=$dir cargo "$sub" --release --target wasm32-wasip1 "$@"
else
  command_link=()
  if [ "${WASM_COMMAND:-0}" = 1 ]; then
    command_link=(-- -C link-arg=/usr/lib/wasm32-wasi/crt1-command.o)
  fi
  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
  RUSTFLAGS="-C linker=wasm-ld-14 -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
  CARGO_TARGET_DIR=$dir \
    /usr/bin/cargo "$sub" --release --target wasm32-wasip1 "$@" -Zbuild-std=std,panic_abort \
      "${command_link[@]}"
fi
