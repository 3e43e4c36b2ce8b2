"""Runs envoy/sidecar.yaml for real: Envoy with the built filter in front of a local app, shipping
over mTLS to a real collector, and checks that the events arrive signed, verified and carrying the
pod identity from the environment.

`envoy --mode validate` proves the bootstrap parses and the filter accepts its configuration; this
proves the rest of what the file promises: the TLS client settings (SNI, SAN match, client
certificate) work against the collector's MESHAUDIT_TLS_* setup, host_env_keys reach the filter,
and the stats listener exports the meshaudit_* counters. Only listeners, ports and file paths are
rewritten (to 127.0.0.1, free ports, throwaway certificates); everything else runs as shipped.

Used by validate.py; needs the collector binary (`make build`), the filter (`make wasm`), Envoy
and openssl.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

COLLECTOR_HOST = "meshaudit-collector.meshaudit.svc.cluster.local"
POD_ENV = {
    "POD_NAME": "httpbin-7d9f8-x2x4q", "POD_NAMESPACE": "live-check", "NODE_NAME": "node-7",
    "CONTAINER_NAME": "httpbin", "SERVICE_ACCOUNT": "httpbin",
}
SECRETS = {"api_key": "live-api-key", "signing_secret": "live-signing-secret", "event_key": "live-event-key"}
ADMIN_TOKEN = "live-admin-token"
REQUESTS = 3
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(directory: Path) -> None:
    """A CA, a server certificate for the collector's service name, a client certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=live-ca")
    for name, ext in (("server", f"subjectAltName=DNS:{COLLECTOR_HOST}\nextendedKeyUsage=serverAuth\n"),
                      ("client", "subjectAltName=DNS:sidecar\nextendedKeyUsage=clientAuth\n")):
        (directory / f"{name}.ext").write_text(ext, encoding="utf-8")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext")


class App(http.server.BaseHTTPRequestHandler):
    """The audited application: answers every request with a small JSON body."""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def localise(config: dict, ports: dict, wasm: Path, pki: Path, collector_cluster: str) -> dict:
    config = copy.deepcopy(config)
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": ports["admin"]}
    static = config["static_resources"]
    for listener in static["listeners"]:
        listener["address"]["socket_address"] = {"address": "127.0.0.1",
                                                 "port_value": ports[listener["name"]]}
    for cluster in static["clusters"]:
        target = {"app": ports["app"], "admin": ports["admin"], collector_cluster: ports["collector"]}
        if cluster["name"] in target:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    endpoint["endpoint"]["address"]["socket_address"] = {
                        "address": "127.0.0.1", "port_value": target[cluster["name"]]}
    text = yaml.safe_dump(config)
    for shipped, local in (("/etc/meshaudit/meshaudit_filter.wasm", wasm),
                           ("/etc/meshaudit/tls/tls.crt", pki / "client.crt"),
                           ("/etc/meshaudit/tls/tls.key", pki / "client.key"),
                           ("/etc/meshaudit/tls/ca.crt", pki / "ca.crt")):
        if shipped not in text:
            raise ValueError(f"sidecar.yaml no longer names {shipped}; update live_sidecar.py")
        text = text.replace(shipped, str(local))
    return yaml.safe_load(text)


def collector_request(port: int, path: str, pki: Path) -> tuple[int, bytes]:
    """GET over mTLS, checking the collector's certificate against its service name."""
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=COLLECTOR_HOST) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {COLLECTOR_HOST}\r\n"
                        f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body


def collector_get(port: int, path: str, pki: Path) -> dict:
    status, body = collector_request(port, path, pki)
    if status != 200:
        raise RuntimeError(f"collector answered {status} to {path}")
    return json.loads(body)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, RuntimeError, ValueError) as e:
            last_error = e
        time.sleep(0.2)
    raise TimeoutError(f"{what} (last error: {last_error})" if last_error else what)


def tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def stats_summary(port: int) -> str:
    try:
        with NO_PROXY.open(f"http://127.0.0.1:{port}/stats/prometheus", timeout=2) as r:
            lines = r.read().decode().splitlines()
    except OSError as e:
        return f"stats unavailable ({e})"
    return ", ".join(l.replace("{}", "") for l in lines
                     if l.startswith(("meshaudit_batches", "meshaudit_batch_retries", "meshaudit_events_")))


def live_sidecar_problems(sidecar: Path, envoy: Path, wasm: Path, collector: Path,
                          events_timeout_s: float = 15.0) -> list[str]:
    for path, make in ((collector, "make build"), (wasm, "make wasm"), (envoy, "make setup")):
        if not path.is_file():
            return [f"{path} is missing: run `{make}`"]
    envoy, wasm, collector = envoy.resolve(), wasm.resolve(), collector.resolve()
    config = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    plugin_json = None
    for listener in config["static_resources"]["listeners"]:
        for f in listener["filter_chains"][0]["filters"][0]["typed_config"].get("http_filters", []):
            if f["name"] == "envoy.filters.http.wasm":
                plugin_json = json.loads(f["typed_config"]["config"]["configuration"]["value"])
                inbound = listener["name"]
    if plugin_json is None:
        return ["sidecar.yaml has no wasm filter"]
    key_id = plugin_json.get("event_key_id", "default")
    ports = {name: free_port() for name in ("admin", "app", "collector")}
    ports.update({listener["name"]: free_port() for listener in config["static_resources"]["listeners"]})

    processes = []
    app = http.server.ThreadingHTTPServer(("127.0.0.1", ports["app"]), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="meshaudit-live-") as tmp:
        pki = Path(tmp)
        try:
            make_pki(pki)
            collector_env = {
                **os.environ,
                "DATABASE_URL": f"sqlite://{pki / 'audit.db'}",
                "MESHAUDIT_LISTEN": f"127.0.0.1:{ports['collector']}",
                "AUDIT_RECEIVER_API_KEY": SECRETS["api_key"],
                "AUDIT_RECEIVER_SIGNING_SECRET": SECRETS["signing_secret"],
                "AUDIT_RECEIVER_EVENT_KEYS": f"{key_id}={SECRETS['event_key']}",
                "MESHAUDIT_ADMIN_TOKEN": ADMIN_TOKEN,
                "MESHAUDIT_TLS_CERT": str(pki / "server.crt"),
                "MESHAUDIT_TLS_KEY": str(pki / "server.key"),
                "MESHAUDIT_TLS_CLIENT_CA": str(pki / "ca.crt"),
            }
            with open(pki / "collector.log", "w", encoding="utf-8") as log:
                processes.append(subprocess.Popen([str(collector), "serve"], env=collector_env,
                                                  stdout=log, stderr=subprocess.STDOUT))
            bootstrap = pki / "sidecar.yaml"
            bootstrap.write_text(yaml.safe_dump(localise(config, ports, wasm, pki,
                                                         plugin_json["collector_cluster"])), encoding="utf-8")
            envoy_env = {**os.environ, **POD_ENV,
                         "AUDIT_FORWARD_API_KEY": SECRETS["api_key"],
                         "AUDIT_FORWARD_SIGNING_SECRET": SECRETS["signing_secret"],
                         "AUDIT_FORWARD_EVENT_KEY": SECRETS["event_key"]}
            with open(pki / "envoy.log", "w", encoding="utf-8") as log:
                processes.append(subprocess.Popen(
                    [str(envoy), "-c", str(bootstrap), "--disable-hot-restart", "-l", "warning"],
                    env=envoy_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
            try:
                wait_until(lambda: collector_request(ports["collector"], "/healthz", pki)[0] == 200,
                           20, "collector did not answer /healthz over mTLS")
            except TimeoutError as e:
                return [f"{e}; collector log: {tail(pki / 'collector.log')}"]
            try:
                wait_until(lambda: NO_PROXY.open(f"http://127.0.0.1:{ports['admin']}/ready", timeout=2).status == 200,
                           20, "Envoy did not become ready")
            except TimeoutError as e:
                return [f"{e}; envoy log: {tail(pki / 'envoy.log')}"]

            for i in range(REQUESTS):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{ports[inbound]}/orders/{i}?page={i}",
                    headers={"tenantId": "live-tenant", "actionLogUserId": "alice"})
                with NO_PROXY.open(request, timeout=5) as response:
                    if response.status != 200:
                        return [f"request through the sidecar answered {response.status}"]

            query = f"/v1/events?namespace={POD_ENV['POD_NAMESPACE']}&limit=100"
            try:
                events = wait_until(
                    lambda: (lambda e: e if len(e) >= REQUESTS else None)(
                        collector_get(ports["collector"], query, pki)["events"]),
                    events_timeout_s, f"the collector did not receive {REQUESTS} events")
            except TimeoutError as e:
                return [f"{e}; filter stats: {stats_summary(ports['prometheus'])}"]

            problems = []
            for item in events:
                event = item["event"]
                if item.get("verified") is not True:
                    problems.append(f"event {item['id']} not verified: {item.get('verify_reason')}")
                if (event.get("security") or {}).get("keyid") != key_id:
                    problems.append(f"event {item['id']} keyid is not {key_id!r}")
                k8s = event.get("kubernetes") or {}
                expected = {"podname": POD_ENV["POD_NAME"], "namespacename": POD_ENV["POD_NAMESPACE"],
                            "nodename": POD_ENV["NODE_NAME"], "containername": POD_ENV["CONTAINER_NAME"],
                            "serviceaccount": POD_ENV["SERVICE_ACCOUNT"]}
                wrong = {k: k8s.get(k) for k, v in expected.items() if k8s.get(k) != v}
                if wrong:
                    problems.append(f"event {item['id']} kubernetes fields not from the env: {wrong}")
            verify = collector_get(ports["collector"], "/v1/verify", pki)
            if verify.get("ok") is not True:
                problems.append(f"chain does not verify: {verify}")
            with NO_PROXY.open(f"http://127.0.0.1:{ports['prometheus']}/stats/prometheus", timeout=5) as r:
                stats = r.read().decode()
            captured = [l for l in stats.splitlines() if l.startswith("meshaudit_events_captured")]
            if not captured or float(captured[0].rsplit(" ", 1)[1]) < REQUESTS:
                problems.append(f"stats listener shows {captured or 'no meshaudit_events_captured'}")
            return problems
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            app.shutdown()
