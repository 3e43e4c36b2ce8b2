#!/usr/bin/env bash
# `make demo`: collector on SQLite + sample app + real Envoy with the meshaudit filter,
# some traffic, then what was stored and whether the chain verifies. Stops everything it
# started, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY=.venv/bin/envoy
COLLECTOR=target/release/meshaudit-collector
WORK=$(mktemp -d /tmp/meshaudit-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in 10000 19901 18080 18081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use; stop whatever listens there and retry" >&2
    exit 1
  fi
done

export AUDIT_RECEIVER_API_KEY="demo-api-key" AUDIT_FORWARD_API_KEY="demo-api-key"
export AUDIT_RECEIVER_SIGNING_SECRET="demo-signing-secret" AUDIT_FORWARD_SIGNING_SECRET="demo-signing-secret"
export POD_NAME="checkout-5d8f7c9b4-x2k4q" POD_NAMESPACE="shop" NODE_NAME="node-a" CONTAINER_NAME="checkout" SERVICE_ACCOUNT="checkout"

wait_http() { # url what
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $2 did not come up; its log:" >&2; cat "$WORK/$2.log" >&2; exit 1
}

echo "== collector (SQLite at $WORK/audit.db) on 127.0.0.1:18080"
DATABASE_URL="sqlite://$WORK/audit.db" MESHAUDIT_LISTEN=127.0.0.1:18080 "$COLLECTOR" serve >"$WORK/collector.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18080/healthz collector

echo "== sample app on 127.0.0.1:18081"
python3 scripts/demo_upstream.py 18081 >"$WORK/app.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18081/orders/1 app

echo "== Envoy $($ENVOY --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1) with dist/meshaudit_filter.wasm on 127.0.0.1:10000 (pod $POD_NAMESPACE/$POD_NAME)"
"$ENVOY" -c envoy/demo.yaml --concurrency 1 --disable-hot-restart -l warning >"$WORK/envoy.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:19901/ready envoy

echo "== traffic"
req() { printf '  %-6s %-28s -> ' "$1" "$2"; shift 2; curl -sS -o /dev/null -w '%{http_code}\n' "$@"; }
req GET  /orders/1001 http://127.0.0.1:10000/orders/1001 -H 'x-request-id: demo-req-1' -H 'tenantId: acme'
req POST /orders http://127.0.0.1:10000/orders -H 'content-type: application/json' \
  -d '{"item":"book","qty":2,"card_number":"4111111111111111"}' -H 'actionLogUserId: alice'
req GET  /orders/1002?verbose=1 'http://127.0.0.1:10000/orders/1002?verbose=1'
req PUT  /status/404 -X PUT http://127.0.0.1:10000/status/404
req GET  /status/503 http://127.0.0.1:10000/status/503

echo "== stored events (GET /v1/events)"
for _ in $(seq 1 50); do
  n=$(curl -fsS 'http://127.0.0.1:18080/v1/events?limit=1000' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))' 2>/dev/null || echo 0)
  [ "$n" -ge 5 ] && break
  sleep 0.2
done
curl -fsS 'http://127.0.0.1:18080/v1/events?limit=1000' | python3 -c '
import json, sys
items = json.load(sys.stdin)["events"]
for it in items:
    e = it["event"]
    k = e.get("kubernetes", {})
    a = e.get("action", {})
    print(f"  seq={it[\"seq\"]} {e.get(\"httpmethod\",\"?\"):6} {a.get(\"name\",\"?\"):14} {e.get(\"http\",{}).get(\"statuscode\",\"?\")} "
          f"{a.get(\"severity\",\"?\"):7} pod={k.get(\"namespacename\",\"?\")}/{k.get(\"podname\",\"?\")} verified={it[\"verified\"]}")
print(f"  {len(items)} events stored")
if items:
    print("  first event in full:")
    print("\n".join("    " + l for l in json.dumps(items[0]["event"], indent=2, sort_keys=True).splitlines()))
'
echo "== chain verification (GET /v1/verify)"
curl -sS http://127.0.0.1:18080/v1/verify; echo
