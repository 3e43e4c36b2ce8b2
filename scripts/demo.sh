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

# The ports envoy/demo.yaml names; any that is busy is swapped for a free one in a copy.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick() { if port_free "$1"; then echo "$1"; else python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; fi; }
LISTEN=$(pick 10000) ADMIN=$(pick 19901) COLL=$(pick 18080) APP=$(pick 18081)
sed -e "s/port_value: 10000}/port_value: $LISTEN}/" -e "s/port_value: 19901}/port_value: $ADMIN}/" \
    -e "s/port_value: 18080}/port_value: $COLL}/" -e "s/port_value: 18081}/port_value: $APP}/" \
    envoy/demo.yaml >"$WORK/envoy.yaml"

export AUDIT_RECEIVER_API_KEY="demo-api-key" AUDIT_FORWARD_API_KEY="demo-api-key"
export AUDIT_RECEIVER_SIGNING_SECRET="demo-signing-secret" AUDIT_FORWARD_SIGNING_SECRET="demo-signing-secret"
# The read API and the page at /ui/ need this token (a fresh one per demo unless given).
export MESHAUDIT_ADMIN_TOKEN="${MESHAUDIT_ADMIN_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')}"
AUTH=(-H "Authorization: Bearer $MESHAUDIT_ADMIN_TOKEN")
export POD_NAME="checkout-5d8f7c9b4-x2k4q" POD_NAMESPACE="shop" NODE_NAME="node-a" CONTAINER_NAME="checkout" SERVICE_ACCOUNT="checkout"

wait_http() { # url what
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $2 did not come up; its log:" >&2; cat "$WORK/$2.log" >&2; exit 1
}

echo "== collector (SQLite at $WORK/audit.db) on 127.0.0.1:$COLL"
DATABASE_URL="sqlite://$WORK/audit.db" MESHAUDIT_LISTEN=127.0.0.1:$COLL "$COLLECTOR" serve >"$WORK/collector.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:$COLL/healthz collector

echo "== sample app on 127.0.0.1:$APP"
python3 scripts/demo_upstream.py "$APP" >"$WORK/app.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:$APP/orders/1 app

echo "== Envoy $($ENVOY --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1) with dist/meshaudit_filter.wasm on 127.0.0.1:$LISTEN (pod $POD_NAMESPACE/$POD_NAME)"
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart -l warning >"$WORK/envoy.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:$ADMIN/ready envoy

echo "== traffic"
req() { printf '  %-6s %-28s -> ' "$1" "$2"; shift 2; curl -sS -o /dev/null -w '%{http_code}\n' "$@"; }
req GET  /orders/1001 http://127.0.0.1:$LISTEN/orders/1001 -H 'x-request-id: demo-req-1' -H 'tenantId: acme'
req POST /orders http://127.0.0.1:$LISTEN/orders -H 'content-type: application/json' \
  -d '{"item":"book","qty":2,"card_number":"4111111111111111"}' -H 'actionLogUserId: alice'
req GET  /orders/1002?verbose=1 "http://127.0.0.1:$LISTEN/orders/1002?verbose=1"
req PUT  /status/404 -X PUT http://127.0.0.1:$LISTEN/status/404
req GET  /status/503 http://127.0.0.1:$LISTEN/status/503

echo "== stored events (GET /v1/events)"
for _ in $(seq 1 50); do
  n=$(curl -fsS "${AUTH[@]}" "http://127.0.0.1:$COLL/v1/events?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))' 2>/dev/null || echo 0)
  [ "$n" -ge 5 ] && break
  sleep 0.2
done
curl -fsS "${AUTH[@]}" "http://127.0.0.1:$COLL/v1/events?limit=1000" | python3 scripts/demo_show.py
echo "== chain verification (GET /v1/verify)"
curl -sS "${AUTH[@]}" http://127.0.0.1:$COLL/v1/verify; echo
echo "== the auditor's page: http://127.0.0.1:$COLL/ui/  admin token: $MESHAUDIT_ADMIN_TOKEN"
# On a terminal, keep everything up so the page can be used; stopped on Enter.
if [ -t 0 ]; then read -r -p "press Enter to stop the demo " _ || true; fi
