#!/usr/bin/env bash
# Prices SPEC §10's batch signature (one Ed25519 signature per batch) in a real
# Envoy: the filter shipping to the null sink (`meshaudit_sink`), with and
# without `batch_signing_key`, runs interleaved; then with batch_max_events=1,
# where every request pays one whole signature, so the difference is the cost
# of one signature in V8. Prints Envoy CPU µs per request of each run.
# Needs `make build wasm` and scripts/bench.sh's binaries (run `make bench` once).
#   bash scripts/workload_key_bench.sh [ROUNDS] [ROUND_S]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; round_s=${2:-10}
key=$(.venv/bin/python - <<'PY'
import base64, hashlib
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
seed = bytes(range(32)); name = "bench-k1"
pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
kid = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4].hex()
print("PRIVATE+KEY+%s+%s+%s" % (name, kid, base64.b64encode(b"\x01" + seed).decode()))
PY
)
out=target/bench/batch-signature; mkdir -p "$out"
run() { # label, extra plugin config (JSON members)
  BENCH_MESHAUDIT_CONFIG="{$2}" python3 scripts/bench/run.py --only envoy --variants meshaudit_sink \
    --rounds "$rounds" --round-s "$round_s" --memory-requests 0 --out "$out/$1" >"$out/$1.log" 2>&1 \
    || { echo "run $1 failed: see $out/$1.log" >&2; exit 1; }
  python3 - "$out/$1/latest-envoy.json" "$1" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["envoy_rounds"]["meshaudit_sink"]
cpu = [w["cpu_us_per_req"] for w in r]
print(f"{sys.argv[2]:24s} Envoy CPU µs/request: median {statistics.median(cpu):6.2f}  rounds {[round(c, 2) for c in cpu]}  req/s {[round(w['rps']) for w in r]}")
PY
}
for i in 1 2 3; do
  run "plain-batch1-$i" '"batch_max_events": 1'
  run "signed-batch1-$i" "\"batch_max_events\": 1, \"batch_signing_key\": \"$key\""
done
for i in 1 2; do
  run "plain-$i" ''
  run "signed-$i" "\"batch_signing_key\": \"$key\""
done
