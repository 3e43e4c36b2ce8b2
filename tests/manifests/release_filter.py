"""Runs the filter from the release image in the real Envoy, configured as the release overlay's
WasmPlugin configures it, shipping to the collector from the release image: a request through
Envoy must arrive at that collector as a verified event. This is the two images working together
as a cluster would run them, minus Kubernetes and Istio's agent.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import urllib.request
from pathlib import Path

import yaml

from envoy_bootstrap import ENVOY_ENV, envoy_validate, listener, static_cluster, wasm_filter
from live_sidecar import NO_PROXY, App, free_port, tail, wait_until
from release_collector import get_json, start_collector, stop

SECRETS = {"api": "release-live-api", "signing": "release-live-signing", "event": "release-live-event"}


def bootstrap(wp: dict, wasm: Path, ports: dict[str, int]) -> dict:
    spec = wp["spec"]
    plugin = wasm_filter(spec["pluginConfig"], [e["name"] for e in spec["vmConfig"]["env"]])
    plugin["typed_config"]["config"]["vm_config"]["code"] = {"local": {"filename": str(wasm)}}
    cluster = spec["pluginConfig"]["collector_cluster"]
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["admin"]}}},
            "static_resources": {
                "listeners": [listener("inbound", ports["inbound"], [plugin])],
                "clusters": [static_cluster("app", ports["app"]), static_cluster(cluster, ports["collector"])]}}


def live_problems(envoy: Path, wp: dict, wasm: Path, rootfs: Path, config: dict, tmp: Path) -> list[str]:
    ports = {name: free_port() for name in ("admin", "inbound", "app", "collector")}
    config_doc = bootstrap(wp, wasm, ports)
    problems = envoy_validate(config_doc)
    if problems:
        return ["envoy --mode validate: " + "; ".join(problems)]
    key_id = wp["spec"]["pluginConfig"].get("event_key_id", "default")
    app = http.server.ThreadingHTTPServer(("127.0.0.1", ports["app"]), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    processes = []
    try:
        processes.append(start_collector(rootfs, config, tmp / "collector-live.log", ports["collector"],
                                         f"{key_id}={SECRETS['event']}", SECRETS["api"], SECRETS["signing"]))
        path = tmp / "envoy-release.yaml"
        path.write_text(yaml.safe_dump(config_doc), encoding="utf-8")
        env = {**ENVOY_ENV, "PATH": "/usr/bin:/bin", "AUDIT_FORWARD_API_KEY": SECRETS["api"],
               "AUDIT_FORWARD_SIGNING_SECRET": SECRETS["signing"], "AUDIT_FORWARD_EVENT_KEY": SECRETS["event"]}
        with open(tmp / "envoy-release.log", "w", encoding="utf-8") as log:
            processes.append(subprocess.Popen([str(envoy), "-c", str(path), "--disable-hot-restart", "-l", "warning"],
                                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
        try:
            wait_until(lambda: get_json(ports["collector"], "/healthz") is not None, 30,
                       "the collector from the image did not answer /healthz")
            wait_until(lambda: NO_PROXY.open(f"http://127.0.0.1:{ports['admin']}/ready", timeout=2).status == 200,
                       30, "Envoy did not become ready")
        except TimeoutError as e:
            return [f"{e}; envoy: {tail(tmp / 'envoy-release.log')}; collector: {tail(tmp / 'collector-live.log')}"]
        request = urllib.request.Request(f"http://127.0.0.1:{ports['inbound']}/release/check",
                                         headers={"actionLogUserId": "release-check"})
        with NO_PROXY.open(request, timeout=5) as response:
            if response.status != 200:
                return [f"the request through Envoy answered {response.status}"]
        query = f"/v1/events?namespace={ENVOY_ENV['POD_NAMESPACE']}&limit=10"
        try:
            events = wait_until(lambda: get_json(ports["collector"], query)["events"], 20,
                                "no event reached the collector from the image")
        except TimeoutError as e:
            return [f"{e}; envoy: {tail(tmp / 'envoy-release.log')}"]
        return [f"event {item.get('id')} not verified: {item.get('verify_reason')}"
                for item in events if item.get("verified") is not True]
    finally:
        stop(processes)
        app.shutdown()
