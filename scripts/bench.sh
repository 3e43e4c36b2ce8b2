#!/usr/bin/env bash
# meshaudit benchmarks (docs/BENCHMARKS.md). `make bench` runs this after `make build wasm`;
# `make test` runs it with --smoke (seconds; every code path, no timed assertions).
# Builds the benchmark binaries and the reference wasm filters, then runs scripts/bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m unittest -q scripts/bench/test_bench.py
cargo build --release --quiet -p meshaudit-bench
bash scripts/bench/build-wasm-floor.sh
exec python3 scripts/bench/run.py "$@"
