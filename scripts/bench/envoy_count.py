"""Envoy's instructions per request under callgrind (the `count` part of run.py).

Wall-clock CPU per request on these shared 2-core VMs swings ±10 % between rounds; the
instructions Envoy executes for the same requests repeat to ~0.1 %. Each variant's Envoy runs
under `valgrind --tool=callgrind`, serves a warm-up (V8 tiers the filter up to TurboFan), has
its counters zeroed, serves N more requests on one keep-alive connection, and is dumped: the
dump's instructions over N, split by where they ran (the Envoy binary, libc, and code valgrind
cannot map to a file: V8's JIT output, i.e. the filter's wasm, and the parts of Envoy's text it
remaps). Instructions are not time (a cache miss costs more than an add), so they confirm a
step's direction and size where the timed rounds cannot; the timed rounds stay the target's
measure.

Pure parts (requests, the callgrind file) are unit-tested in test_bench.py.
"""

import collections
import re
import socket

# The requests of wrk_get.lua / wrk_post.lua, byte for byte (wrk adds only `Host`).
GET_HEADERS = (("user-agent", "okhttp/4.12.0"), ("tenantId", "acme"),
               ("actionLogUserId", "user-00042"),
               ("x-request-id", "3f1e5b8a-6c2d-4e9f-8a7b-1c2d3e4f5a6b"),
               ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"))
POST_HEADERS = (("content-type", "application/json"), ("user-agent", "okhttp/4.12.0"),
                ("tenantId", "acme"), ("actionLogUserId", "user-00042"))


def post_body():
    """wrk_post.lua's 4,096-byte JSON body."""
    body = '{"order":{"id":"ord-42","customer":"user-00042","items":['
    i = 0
    while len(body) < 4000:
        i += 1
        if i > 1:
            body += ","
        body += f'{{"sku":"SKU-{i:05d}","qty":{i % 7 + 1},"price":{i % 90 + 10}.99,"note":"standard"}}'
    body += "]}}"
    return (body + " " * (4096 - len(body))).encode()


def request_bytes(script, host):
    """One HTTP/1.1 request of `script` ("get" or "post") as wrk sends it."""
    if script == "get":
        method, path, headers, body = "GET", "/api/v1/orders/42?page=2", GET_HEADERS, b""
    elif script == "post":
        body = post_body()
        method, path = "POST", "/api/v1/orders"
        headers = POST_HEADERS + (("Content-Length", str(len(body))),)
    else:
        raise ValueError(f"unknown request script {script!r}")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n").encode() + body


class Client:
    """One keep-alive connection that sends a fixed request and reads `content-length` answers."""

    def __init__(self, port, script):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.request = request_bytes(script, f"127.0.0.1:{port}")
        self.buf = b""

    def _read_until(self, cond):
        while not cond():
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Envoy closed the connection")
            self.buf += chunk

    def send(self, n):
        for _ in range(n):
            self.sock.sendall(self.request)
            self._read_until(lambda: b"\r\n\r\n" in self.buf)
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status != b"200":
                raise ConnectionError(f"answer {status.decode()} instead of 200")
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            self.buf = rest
            self._read_until(lambda: len(self.buf) >= length)
            self.buf = self.buf[length:]

    def close(self):
        self.sock.close()


def self_costs(lines):
    """(object, instruction address or None, Ir) for each self-cost line of a callgrind dump.

    Handles the format's compression: names defined once as `(3) /path` and referred to as
    `(3)`; positions (`positions: instr line` with `--dump-instr=yes`, else `line`) absolute or
    relative to the previous line's (`+4`, `-8`, `*`). The line after `calls=` is the callee's
    inclusive cost, not the caller's own, and is skipped."""
    names = {}
    ob = "(unmapped)"
    with_addr = False
    addr = 0
    after_calls = False
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("positions:"):
            with_addr = "instr" in line.split()
            continue
        if line.startswith(("ob=", "cob=")):
            key, _, value = line.partition("=")
            m = re.match(r"\((\d+)\)(?: (.*))?$", value)
            name = value
            if m:
                if m.group(2) is not None:
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "?")
            if key == "ob":
                base = name.rsplit("/", 1)[-1]
                ob = "(unmapped)" if base in ("???", "") else base
            continue
        if line.startswith("calls="):
            after_calls = True
            continue
        if not (line[:1].isdigit() or line[:1] in "+-*"):
            continue
        parts = line.split()
        if len(parts) < (3 if with_addr else 2):
            continue
        if with_addr:
            pos = parts[0]
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos[0] == "+":
                addr += int(pos[1:])
            elif pos[0] == "-":
                addr -= int(pos[1:])
        if after_calls:
            after_calls = False
            continue
        yield ob, (addr if with_addr else None), int(parts[2 if with_addr else 1])


def parse_callgrind(lines):
    """Self cost (Ir) per object of a callgrind dump: {object basename or "(unmapped)": Ir}."""
    totals = collections.Counter()
    for ob, _, ir in self_costs(lines):
        totals[ob] += ir
    return dict(totals)


def per_request(totals, n):
    """Instructions per request in all and by place: `envoy` (the binary), `unmapped` (V8's JIT
    code: the wasm filter, plus the text Envoy remaps), `libc`, `other`."""
    out = {"total": sum(totals.values()) / n, "envoy": 0.0, "unmapped": 0.0, "libc": 0.0, "other": 0.0}
    for obj, ir in totals.items():
        key = ("envoy" if obj == "envoy" else "unmapped" if obj == "(unmapped)"
               else "libc" if obj.startswith("libc") else "other")
        out[key] += ir / n
    return out
