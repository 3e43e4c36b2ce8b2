#!/usr/bin/env python3
"""Search latency (issue 15): fill a store with N filter-like events through the
real collector's signed ingest, then time selective `GET /v1/events?q=` searches
end to end over HTTP and print p50/p99 per kind of query.

    python3 scripts/search_latency.py --backend sqlite|postgres [--events 1000000]

Uses target/release/meshaudit-collector (make build). PostgreSQL: a fresh
database on postgres://postgres@127.0.0.1:5432 (psql), dropped at the end.
Target (issue 15): p99 <= 100 ms for a selective search on 1M events.
"""
import argparse, hashlib, hmac, json, os, random, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.request

SECRET, API_KEY, TOKEN = "bench-secret", "bench-key", "bench-token"
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def event(i):
    return {
        "id": f"ev-{i}", "specversion": "1.0", "schemaid": "meshaudit.http/v1",
        "timestamp": "2026-03-04T05:06:07.000000+00:00", "tenantid": f"tenant{i % 10}",
        "httpmethod": "POST" if i % 3 else "GET", "httpurl": f"https://shop.example/api/orders/{i}",
        "subject": {"userid": f"u{i % 1000}x"},
        "kubernetes": {"namespacename": f"ns{i % 20}", "podname": f"pod{i % 100}"},
        "action": {"name": f"/api/orders/{i}", "status": "SUCCESS"},
        "network": {"useragent": "curl/8.5.0", "sourceip": "10.0.0.7"},
        "http": {"statuscode": 200 if i % 50 else 503, "requestheaders": {"authorization": "[REDACTED]"}},
        "eventdata": {"requestpayload": {"item": f"{WORDS[i % 16]} {WORDS[(i // 16) % 16]} widget",
                                          "note": f"tok{i} order placed", "password": "[REDACTED]"}},
    }


def post(addr, body):
    ts = str(int(time.time()))
    sig = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"http://{addr}/v1/events", data=body, method="POST", headers={
        "Content-Type": "application/x-ndjson", "X-API-Key": API_KEY,
        "X-Signature-Ts": ts, "X-Signature": "sha256=" + sig})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200, r.status


def get(addr, path):
    req = urllib.request.Request(f"http://{addr}{path}", headers={"Authorization": "Bearer " + TOKEN})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500, help="events per ingest request")
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL database (to inspect plans)")
    ap.add_argument("--reuse", help="query a store kept by --keep (its DATABASE_URL); no fill")
    ap.add_argument("--binary", help="collector binary (default target/release/meshaudit-collector)")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = a.binary or os.path.join(root, "target/release/meshaudit-collector")
    work = tempfile.mkdtemp(prefix="meshaudit-search-bench.")
    pgdb = None
    if a.reuse:
        url = a.reuse
    elif a.backend == "sqlite":
        url = f"sqlite://{work}/events.db"
    else:
        pgdb = f"meshaudit_search_bench_{os.getpid()}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {pgdb}"], check=True)
        url = f"postgres://postgres@127.0.0.1:5432/{pgdb}"
    addr = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, DATABASE_URL=url, MESHAUDIT_LISTEN=addr, AUDIT_RECEIVER_API_KEY=API_KEY,
               AUDIT_RECEIVER_SIGNING_SECRET=SECRET, MESHAUDIT_ADMIN_TOKEN=TOKEN,
               MESHAUDIT_MAX_BODY_BYTES=str(16 << 20), RUST_LOG="warn")
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/collector.log", "w"))
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://{addr}/healthz", timeout=1); break
            except Exception:
                time.sleep(0.1)
        t0 = time.time()
        batch = a.batch
        starts = [] if a.reuse else list(range(0, a.events, batch))
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    if not starts:
                        return
                    s = starts.pop(0)
                body = "".join(json.dumps(event(i)) + "\n" for i in range(s, min(s + batch, a.events))).encode()
                post(addr, body)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads: t.start()
        for t in threads: t.join()
        fill = max(time.time() - t0, 1e-9)
        if not a.reuse:
            print(f"search latency ({a.backend}): {a.events} events stored in {fill:.0f} s ({a.events / fill:.0f}/s, index triggers included)")
        rnd = random.Random(7)
        kinds = {
            "one event (q=tokN)": lambda: f"q=tok{rnd.randrange(a.events)}",
            "prefix (q=tokNNNNN*)": lambda: f"q=tok{rnd.randrange(10000, 99999)}*",
            "common-word phrase + namespace": lambda: f"q=%22{rnd.choice(WORDS)}+{rnd.choice(WORDS)}%22&namespace=ns{rnd.randrange(20)}&limit=100",
            "user word + after cursor": lambda: f"q=u{rnd.randrange(1000)}x&after={rnd.randrange(a.events // 2)}&limit=100",
        }
        for name, mk in kinds.items():
            lat = []
            for _ in range(a.queries):
                dt, page = get(addr, "/v1/events?" + mk())
                assert "events" in page
                lat.append(dt * 1000)
            lat.sort()
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
            print(f"  {name:38s} p50 {p(0.50):7.1f} ms  p99 {p(0.99):7.1f} ms  max {lat[-1]:7.1f} ms")
    finally:
        proc.terminate(); proc.wait()
        shutil.rmtree(work, ignore_errors=True)
        if pgdb and (a.keep or a.reuse):
            print(f"kept {url}")
        elif pgdb:
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {pgdb} WITH (FORCE)"])


if __name__ == "__main__":
    sys.exit(main())
