#!/usr/bin/env python3
"""Proof latency of the verifiable log (issue 12): fill a SQLite store with N events through the
real collector's signed ingest (the tree grows in the writer's transaction, as in production),
then time `GET /v1/log/inclusion` and `GET /v1/log/consistency` end to end over HTTP (one
keep-alive connection) and print p50/p99: first on a quiet collector, then while a loader keeps
ingesting into it (the writer and the checkpointer working beside the proofs).

    python3 scripts/log_proof_latency.py [--events 1000000] [--store PATH] [--compare BIN]

--store keeps the filled SQLite file and reuses it when it already holds the events (a 1M fill
takes minutes); --compare BIN serves the same store with a second collector binary as well and
alternates the requests between the two, so a before/after pair sees the same machine.
Uses target/release/meshaudit-collector (make build). Target (issue 12): p99 <= 10 ms at 1M.
"""
import argparse, concurrent.futures, http.client, json, os, random, shutil, subprocess, sys, tempfile
import threading, time, urllib.request

from search_latency import API_KEY, SECRET, TOKEN, free_port, post  # the same signed ingest


def event(i):
    return {"id": f"lp-{i}", "specversion": "1.0", "schemaid": "meshaudit.http/v1",
            "timestamp": "2026-03-04T05:06:07.000000+00:00", "tenantid": f"tenant{i % 10}",
            "httpmethod": "POST", "httpurl": f"https://shop.example/api/orders/{i}",
            "kubernetes": {"namespacename": f"ns{i % 20}", "podname": f"pod{i % 100}"},
            "http": {"statuscode": 200}}


def checkpoint_size(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/checkpoint", timeout=5) as r:
            return int(r.read().decode().split("\n")[1])
    except Exception:
        return 0


class Collector:
    def __init__(self, binary, url, work, name):
        self.addr = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, DATABASE_URL=url, MESHAUDIT_LISTEN=self.addr, AUDIT_RECEIVER_API_KEY=API_KEY,
                   AUDIT_RECEIVER_SIGNING_SECRET=SECRET, MESHAUDIT_ADMIN_TOKEN=TOKEN,
                   MESHAUDIT_MAX_BODY_BYTES=str(16 << 20), RUST_LOG="warn")
        self.log = f"{work}/{name}.log"
        self.proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"))
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://{self.addr}/readyz", timeout=1)
                break
            except Exception:
                if self.proc.poll() is not None:
                    raise SystemExit(f"{binary} exited: {open(self.log).read()[-2000:]}")
                time.sleep(0.1)
        host, port = self.addr.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def get(self, path):
        t = time.perf_counter()
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        dt = time.perf_counter() - t
        if r.status != 200:
            raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
        return dt * 1000, json.loads(body)

    def stop(self):
        self.conn.close()
        self.proc.terminate()
        self.proc.wait()


def fill(addr, start, end, batch, threads=2):
    def send(s):
        post(addr, "".join(json.dumps(event(i)) + "\n" for i in range(s, min(s + batch, end))).encode())

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range(start, end, batch)))


def pct(lat, q):
    return lat[min(len(lat) - 1, int(q * len(lat)))]


def measure(collectors, size, queries, rnd):
    """Alternates inclusion and consistency requests (and the collectors) one by one; which
    collector asks first alternates too (the second finds the pages the first read in memory)."""
    lat = {(c, k): [] for c in collectors for k in ("inclusion", "consistency")}
    for i in range(queries):
        seq = rnd.randrange(1, size + 1)
        frm = rnd.randrange(1, size)
        order = list(collectors.items())
        for name, c in order if i % 2 == 0 else reversed(order):
            dt, a = c.get(f"/v1/log/inclusion?seq={seq}")
            assert a["leaf_index"] == seq - 1 and a["proof"], a
            lat[(name, "inclusion")].append(dt)
            dt, a = c.get(f"/v1/log/consistency?from={frm}&to={size}")
            assert a["to"] == size and a["proof"], a
            lat[(name, "consistency")].append(dt)
    for v in lat.values():
        v.sort()
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000, help="requests of each kind per phase")
    ap.add_argument("--batch", type=int, default=1000, help="events per ingest request")
    ap.add_argument("--store", help="SQLite file to keep and reuse (default: a temp file, removed)")
    ap.add_argument("--binary", help="collector binary (default target/release/meshaudit-collector)")
    ap.add_argument("--compare", help="a second collector binary serving the same store, alternated")
    ap.add_argument("--no-load-phase", action="store_true", help="skip the phase under concurrent ingest")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = a.binary or os.path.join(root, "target/release/meshaudit-collector")
    for b in [binary] + ([a.compare] if a.compare else []):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: run `make build` first")
    work = tempfile.mkdtemp(prefix="meshaudit-proof-bench.")
    store = a.store or f"{work}/events.db"
    url = f"sqlite://{store}"
    collectors = {}
    try:
        collectors["a"] = Collector(binary, url, work, "a")
        main_c = collectors["a"]
        have = checkpoint_size(main_c.addr)
        if have < a.events:
            t0 = time.time()
            fill(main_c.addr, have, a.events, a.batch)
            dt = max(time.time() - t0, 1e-9)
            print(f"proof latency: {a.events - have} events stored in {dt:.0f} s ({(a.events - have) / dt:.0f}/s, tree included)")
        deadline = time.time() + 120
        while checkpoint_size(main_c.addr) < a.events:
            if time.time() > deadline:
                raise SystemExit("no checkpoint covered the filled store within 120 s")
            time.sleep(0.2)
        size = checkpoint_size(main_c.addr)
        if a.compare:
            collectors["b"] = Collector(a.compare, url, work, "b")
        names = {"a": os.path.relpath(binary, root)}
        if a.compare:
            names["b"] = os.path.relpath(a.compare, root)
        rnd = random.Random(12)
        measure(collectors, size, 50, rnd)  # warm-up: connections, page cache
        print(f"proof latency on a {size:,}-leaf SQLite store, {a.queries} requests of each kind, "
              f"load average {os.getloadavg()[0]:.1f}")
        summary = []
        phases = [("quiet", None)]
        if not a.no_load_phase:
            phases.append(("under ingest", "load"))
        for phase, load in phases:
            stop = threading.Event()
            loader = None
            if load:
                def keep_ingesting():
                    i = 10_000_000_000 + int(time.time() * 1000) * 1000
                    while not stop.is_set():
                        fill(main_c.addr, i, i + 500, 500, threads=1)
                        i += 500
                loader = threading.Thread(target=keep_ingesting)
                loader.start()
                time.sleep(1)
            try:
                lat = measure(collectors, size, a.queries, rnd)
            finally:
                stop.set()
                if loader:
                    loader.join()
            for (c, kind), v in lat.items():
                print(f"  {phase:13s} {kind:12s} {names[c]:42s} p50 {pct(v, 0.5):6.2f} ms  "
                      f"p99 {pct(v, 0.99):6.2f} ms  max {v[-1]:6.1f} ms")
                summary.append({"phase": phase, "kind": kind, "binary": names[c], "p50_ms": pct(v, 0.5),
                                "p99_ms": pct(v, 0.99), "max_ms": v[-1], "requests": len(v)})
            print(f"  (load average {os.getloadavg()[0]:.1f} after the {phase} phase)")
        print("PROOFJSON " + json.dumps({"tree_size": size, "runs": summary}))
    finally:
        for c in collectors.values():
            c.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
