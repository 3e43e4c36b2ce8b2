#!/usr/bin/env bash
# The filter's own wasm time per request in V8, without Envoy: builds
# filter/examples/on_log_profile for wasm32-wasip1 (scripts/wasm-cargo.sh, as
# the filter) and runs it under Node. Repeatable to a few
# per cent where Envoy's CPU per request is not; it leaves out what Envoy
# itself spends on hostcalls, which the `hostcalls` bench part prices.
#
#   bash scripts/bench/wasm_v8.sh [--bodies] [--rounds N] [--requests N] [OTHER.wasm ...]
#
# Prints the median µs per request of this tree's build and of each OTHER
# module (an earlier build of the same example, e.g. kept from another
# commit), run alternately.
#
# --count: instead of time, the instructions V8 executes per request, counted
# by callgrind (Ir of a run of 3N requests minus one of N, over 2N; N is
# 2000, or 200 with --bodies), with V8
# made deterministic: TurboFan only (no Liftoff tier), one thread, no
# randomised heap. The same module gives the same count to ~0.1 % on a noisy
# machine, where the time can swing ±20 %; the count leaves out what a cycle
# costs (cache misses, dependencies), so confirm a step's direction in time.
#
# --functions: the same count by wasm function, the top 25 (v8_functions.py
# joins callgrind's per-instruction costs to the addresses Node's
# --perf-basic-prof gives each compiled function).
#
# --annotate PATTERN: one function (the first whose name contains PATTERN,
# e.g. Canon::object) as V8's machine code, each instruction with how many
# times per request it ran, over the 3N requests of one run (callgrind joined
# to --print-wasm-code of that run; the function's total agrees with
# --functions, whose two runs cancel start-up out).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=() rounds=5 requests=200000 others=() count=0 count_n=2000 functions=0 pattern=
while [ $# -gt 0 ]; do
  case "$1" in
    --bodies) mode=(bodies); requests=30000; count_n=200 ;;
    --rounds) rounds=$2; shift ;;
    --count) count=1 ;;
    --functions) count=1 functions=1 ;;
    --annotate) count=1 pattern=$2; shift ;;
    --requests) requests=$2; shift ;;
    *) others+=("$1") ;;
  esac
  shift
done
command -v node >/dev/null || { echo "wasm_v8: needs Node.js (apt-get install nodejs)" >&2; exit 1; }
WASM_COMMAND=1 scripts/wasm-cargo.sh target/wasm-example rustc -q -p meshaudit-filter \
  --example on_log_profile
this=target/wasm-example/wasm32-wasip1/release/examples/on_log_profile.wasm
modules=("$this" "${others[@]}")
if [ "$count" = 1 ]; then
  command -v valgrind >/dev/null || { echo "wasm_v8: --count needs valgrind (apt-get install valgrind)" >&2; exit 1; }
  n=$count_n
  # Node under callgrind with V8 made deterministic; each mode adds its own
  # callgrind options (before `node`) and V8 options (after it).
  callgrind=(valgrind --tool=callgrind --smc-check=all-non-file)
  v8=(--no-warnings --single-threaded --no-liftoff --predictable)
  ir() {
    "${callgrind[@]}" --callgrind-out-file=/dev/null node "${v8[@]}" \
      scripts/bench/wasm_v8.cjs "$1" "$2" "${mode[@]}" 2>&1 |
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  }
  if [ -n "$pattern" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    k=$((3 * n))
    "${callgrind[@]}" --dump-instr=yes --callgrind-out-file="$tmp/cg" \
      node "${v8[@]}" --print-wasm-code scripts/bench/wasm_v8.cjs "${modules[0]}" "$k" "${mode[@]}" \
      >"$tmp/code" 2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
    python3 scripts/bench/v8_functions.py --annotate "$pattern" "$tmp/cg" "$tmp/code" "$k"
    exit 0
  fi
  if [ "$functions" = 1 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for m in "${modules[@]}"; do
      args=()
      for k in "$n" $((3 * n)); do
        "${callgrind[@]}" --dump-instr=yes --callgrind-out-file="$tmp/cg.$k" \
          node "${v8[@]}" --perf-basic-prof --logfile="$tmp/v8.log" --no-logfile-per-isolate \
          scripts/bench/wasm_v8.cjs "$m" "$k" "${mode[@]}" \
          >"$tmp/log.$k" 2>&1 &
        pid=$!
        wait "$pid" || { cat "$tmp/log.$k" >&2; exit 1; }
        mv "/tmp/perf-$pid.map" "$tmp/map.$k"
        args+=("$tmp/cg.$k" "$tmp/map.$k")
      done
      echo "== $m"
      python3 scripts/bench/v8_functions.py "${args[@]}" $((2 * n))
    done
    exit 0
  fi
  for m in "${modules[@]}"; do
    a=$(ir "$m" "$n") b=$(ir "$m" $((3 * n)))
    printf '%-60s %s instructions/request\n' "$m" $(((b - a) / (2 * n)))
  done
  exit 0
fi
declare -A times
for _ in $(seq "$rounds"); do
  for m in "${modules[@]}"; do
    times[$m]+="$(node --no-warnings scripts/bench/wasm_v8.cjs "$m" "$requests" "${mode[@]}" | tail -1) "
  done
done
for m in "${modules[@]}"; do
  # shellcheck disable=SC2086
  median=$(printf '%s\n' ${times[$m]} | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  printf '%-60s %s µs/request (median of %s: %s)\n' "$m" "$median" "$rounds" "${times[$m]% }"
done
