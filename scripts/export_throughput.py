#!/usr/bin/env python3
"""Export throughput per sink (SPEC §11), and ingest with an exporter running.

Starts the release collector binary (target/release/meshaudit-collector) on a
fresh SQLite store, stores N events through the signed ingest API, then
starts it again with one exporter and measures how long the exporter takes to
drain the store (cursor reaching the head, from /metrics): records/s per sink.
Sinks: webhook → a second collector; nats → the machine's server on
127.0.0.1:4222 (a throwaway stream); splunk_hec → a minimal HEC receiver in
this process; s3 → the moto server from .venv (Python: it measures moto as
much as the exporter). Then ingest throughput with and without a webhook
exporter running (same load, 4 concurrent clients), and their ratio.

Usage: python3 scripts/export_throughput.py [--events N] [--sinks webhook,nats,splunk_hec,s3]
Prints one line per measurement and a JSON summary. Only the standard library.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "meshaudit-collector"
API_KEY = "bench-api-key"
SECRET = "bench-hmac-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events(prefix: str, n: int) -> bytes:
    lines = []
    for i in range(n):
        lines.append(json.dumps({
            "id": f"{prefix}-{i}", "specversion": "1.0", "schemaid": "meshaudit.http/v1",
            "timestamp": "2026-03-04T05:06:07.000000+00:00", "httpmethod": "POST",
            "httpurl": f"http://shop.local/orders/{i}",
            "action": {"name": f"/orders/{i}", "method": "POST", "status": "SUCCESS", "severity": "INFO"},
            "kubernetes": {"namespacename": "shop", "podname": "api-1"},
            "http": {"statuscode": 201, "durationms": 3, "protocol": "HTTP/1.1"},
            "eventdata": {"requestpayload": {"sku": "x" * 200, "qty": i}},
        }, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def post(port: int, body: bytes) -> None:
    ts = str(int(time.time()))
    sig = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", data=body, method="POST", headers={
        "Content-Type": "application/x-ndjson", "X-API-Key": API_KEY,
        "X-Signature-Ts": ts, "X-Signature": sig})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200, r.status


class Collector:
    def __init__(self, db: str, env: dict[str, str] | None = None):
        self.port = free_port()
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("AUDIT_", "MESHAUDIT_", "DATABASE_URL"))}
        e.update({"DATABASE_URL": db, "MESHAUDIT_LISTEN": f"127.0.0.1:{self.port}",
                  "AUDIT_RECEIVER_API_KEY": API_KEY, "AUDIT_RECEIVER_SIGNING_SECRET": SECRET,
                  "RUST_LOG": "error"})
        e.update(env or {})
        self.proc = subprocess.Popen([str(BIN), "serve"], env=e, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("the collector did not start")
                time.sleep(0.05)

    def metric(self, name: str, exporter: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        prefix = f'{name}{{exporter="{exporter}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix):])
        return None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def load(port: int, n: int, per_batch: int = 100, clients: int = 4, prefix: str = "e") -> float:
    """Stores n events; returns the seconds it took."""
    batches = [events(f"{prefix}-{b}", per_batch) for b in range(n // per_batch)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda body: post(port, body), batches))
    return time.perf_counter() - start


def drain(db: str, exporter: dict, n: int) -> float:
    """Seconds for one exporter to deliver the n stored records."""
    c = Collector(db, {"MESHAUDIT_EXPORTERS": json.dumps([exporter])})
    try:
        start = time.perf_counter()
        while (c.metric("audit_export_cursor_seq", exporter["name"]) or 0) < n:
            if time.perf_counter() - start > 600:
                raise SystemExit(f"{exporter['type']}: not drained in 600 s")
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        c.stop()


class Hec(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"text":"Success","code":0}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def nats_request(subject: str, payload: dict) -> dict:
    """One JetStream API request over the plain NATS protocol."""
    with socket.create_connection(("127.0.0.1", 4222), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        data = json.dumps(payload).encode()
        s.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.bench 1\r\n'
                  + f"PUB {subject} _INBOX.bench {len(data)}\r\n".encode() + data + b"\r\nPING\r\n")
        while True:
            line = f.readline()
            if line.startswith(b"MSG"):
                size = int(line.split()[-1])
                return json.loads(f.read(size + 2)[:size])
            if not line:
                raise SystemExit("NATS closed the connection")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--sinks", default="webhook,nats,splunk_hec,s3")
    args = ap.parse_args()
    if not BIN.exists():
        raise SystemExit(f"build first: cargo build --release -p meshaudit-collector ({BIN})")
    n = args.events - args.events % 100
    tmp = Path(tempfile.mkdtemp(prefix="meshaudit-export-bench-"))
    results: dict[str, float] = {}
    try:
        base = tmp / "base.db"
        c = Collector(f"sqlite://{base}")
        load(c.port, n)
        c.stop()
        for sink in args.sinks.split(","):
            db = tmp / f"{sink}.db"
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{base}{suffix}").exists():
                    shutil.copy(f"{base}{suffix}", f"{db}{suffix}")
            helper = None
            if sink == "webhook":
                helper = Collector(f"sqlite://{tmp / 'central.db'}")
                exporter = {"name": "b", "type": "webhook", "url": f"http://127.0.0.1:{helper.port}/v1/events",
                            "api_key": API_KEY, "signing_secret": SECRET}
            elif sink == "nats":
                name = f"MESHAUDIT_BENCH_{os.getpid()}"
                nats_request(f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": [f"bench.{os.getpid()}"]})
                exporter = {"name": "b", "type": "nats", "url": "nats://127.0.0.1:4222",
                            "subject": f"bench.{os.getpid()}", "stream": name}
            elif sink == "splunk_hec":
                srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hec)
                threading.Thread(target=srv.serve_forever, daemon=True).start()
                exporter = {"name": "b", "type": "splunk_hec", "token": "t",
                            "url": f"http://127.0.0.1:{srv.server_address[1]}/services/collector/event"}
            elif sink == "s3":
                moto = ROOT / ".venv" / "bin" / "moto_server"
                port = free_port()
                helper = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(600):
                    try:
                        urllib.request.urlopen(urllib.request.Request(
                            f"http://127.0.0.1:{port}/bench", method="PUT"), timeout=2)
                        break
                    except OSError:
                        time.sleep(0.1)
                exporter = {"name": "b", "type": "s3", "endpoint": f"http://127.0.0.1:{port}",
                            "region": "us-east-1", "bucket": "bench", "access_key_id": "a",
                            "secret_access_key": "s", "path_style": True, "segment_records": 500}
            else:
                raise SystemExit(f"unknown sink {sink}")
            try:
                secs = drain(f"sqlite://{db}", exporter, n)
            finally:
                if sink == "nats":
                    nats_request(f"$JS.API.STREAM.DELETE.{name}", {})
                if isinstance(helper, Collector):
                    helper.stop()
                elif helper is not None:
                    helper.kill()
                    helper.wait()
            results[f"export_{sink}_records_per_s"] = round(n / secs)
            print(f"export {sink:<10} {n} records in {secs:6.2f} s: {n / secs:9.0f} records/s", flush=True)

        # Ingest with and without a webhook exporter running.
        central = Collector(f"sqlite://{tmp / 'central2.db'}")
        try:
            plain = Collector(f"sqlite://{tmp / 'plain.db'}")
            t_plain = load(plain.port, n, prefix="p")
            plain.stop()
            exporter = {"name": "b", "type": "webhook", "url": f"http://127.0.0.1:{central.port}/v1/events",
                        "api_key": API_KEY, "signing_secret": SECRET}
            with_exp = Collector(f"sqlite://{tmp / 'with.db'}", {"MESHAUDIT_EXPORTERS": json.dumps([exporter])})
            t_with = load(with_exp.port, n, prefix="w")
            with_exp.stop()
        finally:
            central.stop()
        results["ingest_events_per_s"] = round(n / t_plain)
        results["ingest_with_webhook_exporter_events_per_s"] = round(n / t_with)
        results["ingest_ratio_with_exporter"] = round(t_plain / t_with, 3)
        print(f"ingest without exporter: {n / t_plain:9.0f} events/s")
        print(f"ingest with a webhook exporter running: {n / t_with:9.0f} events/s "
              f"(ratio {t_plain / t_with:.2f}, target >= 0.8)")
        print(json.dumps(results, sort_keys=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
