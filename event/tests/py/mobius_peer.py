#!/usr/bin/env python3
"""The real peer: mobius-auditlog-py 1.1.0 builds, seals and verifies events
for meshaudit-event's tests.

    mobius_peer.py check                 prints the installed version
    mobius_peer.py make SEED COUNT       prints COUNT sealed events, one per line:
                                         <hex of the key> <event.to_json()>
                                         (an empty key: sealed without a signature)
    mobius_peer.py verify                reads "<hex of the key> <event JSON>" lines
                                         and prints, per line, the hash mobius
                                         computes and verify()'s answer (or
                                         "invalid <error>" when the model refuses it)
    mobius_peer.py prune                 reads JSON lines, prints the canonical form of
                                         mobius prune_empty(line), one per line
    mobius_peer.py verify-plain          the same lines checked without the model, with
                                         json/hashlib/hmac only (SPEC §5, any event):
                                         prints the hash and whether hash and signature match

Events are built with the library's own AuditLogBuilder from random but
reproducible inputs (the seed fixes ids and timestamps too).
"""
import importlib.metadata
import json
import os
import random
import sys
import uuid

from mobius_auditlog import AuditLogBuilder, AuditLogEvent, compute_hash, seal, verify
from mobius_auditlog import context as mobius_context

KUBERNETES_ENV = ("POD_NAMESPACE", "NAMESPACE", "POD_NAME", "HOSTNAME", "CONTAINER_NAME", "NODE_NAME")


def text(r, max_len=10):
    """A short string from every plane (no surrogates: Python keeps them, UTF-8 cannot)."""
    out = []
    for _ in range(r.randint(0, max_len)):
        pick = r.random()
        if pick < 0.5:
            out.append(chr(r.randint(0x20, 0x7E)))
        elif pick < 0.6:
            out.append(chr(r.randint(0, 0x1F)))
        elif pick < 0.65:
            out.append("\x7f")
        elif pick < 0.85:
            c = r.randint(0x80, 0xFFFF)
            out.append(chr(c) if not 0xD800 <= c <= 0xDFFF else "\u00e9")
        else:
            out.append(chr(r.randint(0x10000, 0x10FFFF)))
    return "".join(out)


def maybe(r, value, p=0.7):
    return value if r.random() < p else r.choice([None, ""])


def payload_value(r, depth=0):
    pick = r.random()
    if depth < 4 and pick < 0.25:
        return {text(r, 6): payload_value(r, depth + 1) for _ in range(r.randint(0, 4))}
    if depth < 4 and pick < 0.4:
        return [payload_value(r, depth + 1) for _ in range(r.randint(0, 4))]
    return r.choice([
        None, True, False, 0, "", [], {}, {"schemaid": ""}, {"x": None},
        r.randint(-(2 ** 70), 2 ** 70), r.randint(-1000, 1000),
        r.uniform(-1e6, 1e6), r.choice([1e16, 1e-5, 2.5e-7, -0.0, 0.1, 1e300, 5e-324]),
        text(r),
    ])


def payload(r):
    pick = r.random()
    if pick < 0.3:
        return None
    return {text(r, 8): payload_value(r) for _ in range(r.randint(0, 5))}


def make(seed, count):
    r = random.Random(seed)
    for n in range(count):
        for name in KUBERNETES_ENV:
            os.environ.pop(name, None)
        for name in ("POD_NAMESPACE", "POD_NAME", "CONTAINER_NAME", "NODE_NAME"):
            value = maybe(r, text(r, 12).replace("\x00", "0") or "x")
            if value is not None:
                os.environ[name] = value
        mobius_context.set_platform_tenant_id(maybe(r, "tenant-" + text(r, 6)) or "")
        mobius_context.set_platform_schema_id(r.choice(["", "meshaudit.http/v1", text(r, 8)]))
        headers = {
            name: value
            for name, value in (
                ("x-b3-traceid", maybe(r, "%032x" % r.getrandbits(128))),
                ("X-Transaction-Id", maybe(r, text(r))),
                ("actionLogUserId", maybe(r, text(r))),
                ("RequesterType", maybe(r, r.choice(["USER", "SERVICE", text(r)]))),
                ("x-request-id", maybe(r, str(uuid.UUID(int=r.getrandbits(128))))),
                ("x-b3-spanid", maybe(r, "%016x" % r.getrandbits(64))),
                ("X-Parent-Service-Span-Id", maybe(r, "%016x" % r.getrandbits(64))),
            )
            if value is not None
        }
        b = AuditLogBuilder().from_context(headers)
        b.http_context(method=maybe(r, r.choice(["GET", "POST", "DELETE"])), url=maybe(r, "http://svc/" + text(r)))
        if r.random() < 0.8:
            b.subject(maybe(r, text(r)), maybe(r, text(r)), [text(r) for _ in range(r.randint(0, 3))])
        if r.random() < 0.3:
            b.envelope(tenantid=maybe(r, text(r)), traceid=maybe(r, text(r)), schemaid=maybe(r, text(r)))
        if r.random() < 0.8:
            b.object_ref(maybe(r, text(r)), maybe(r, text(r)), maybe(r, "v1"))
        if r.random() < 0.8:
            status = r.choice([0, 200, 201, 302, 404, 500, 503])
            b.action(maybe(r, "/" + text(r)), maybe(r, "GET"),
                     "ERROR" if status >= 500 or status == 0 else "WARNING" if status >= 400 else "INFO",
                     "SUCCESS" if 0 < status < 400 else "FAILURE")
        if r.random() < 0.8:
            b.network(maybe(r, "10.%d.%d.%d" % (r.randint(0, 255), r.randint(0, 255), r.randint(0, 255))), maybe(r, text(r)))
        if r.random() < 0.8:
            b.event_data(payload(r), payload(r), r.random() < 0.5, maybe(r, text(r)))
        event = b.build()
        event.id = str(uuid.UUID(int=r.getrandbits(128), version=4))
        event.timestamp = "2026-%02d-%02dT%02d:%02d:%02d.%06d+00:00" % (
            r.randint(1, 12), r.randint(1, 28), r.randint(0, 23), r.randint(0, 59), r.randint(0, 59), r.randint(0, 999999))
        key = r.choice(["", "k", "s3cret", "clé-ü-🔑", "=" * 40, text(r) or "x"])
        seal(event, key or None)
        sys.stdout.write(key.encode("utf-8").hex() + " " + event.to_json() + "\n")


def verify_lines():
    for line in sys.stdin:
        key_hex, _, doc = line.rstrip("\n").partition(" ")
        key = bytes.fromhex(key_hex).decode("utf-8") or None
        try:
            event = AuditLogEvent.model_validate(json.loads(doc))
        except Exception as e:  # noqa: BLE001 - report the model's refusal
            print("invalid", type(e).__name__)
            continue
        print(compute_hash(event), verify(event, key))


def verify_plain_lines():
    import hashlib
    import hmac

    for line in sys.stdin:
        key_hex, _, doc = line.rstrip("\n").partition(" ")
        key = bytes.fromhex(key_hex)
        event = json.loads(doc)
        security = event.pop("security", {})
        digest = hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        ok = hmac.compare_digest(digest, security.get("hash", ""))
        if key:
            sig = hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()
            ok = ok and hmac.compare_digest(sig, security.get("signature", ""))
        print(digest, ok)


def main():
    command = sys.argv[1]
    if command == "check":
        print(importlib.metadata.version("mobius-auditlog-py"))
    elif command == "make":
        make(int(sys.argv[2]), int(sys.argv[3]))
    elif command == "verify":
        verify_lines()
    elif command == "prune":
        from mobius_auditlog.models import prune_empty

        for line in sys.stdin:
            print(json.dumps(prune_empty(json.loads(line)), sort_keys=True, separators=(",", ":")))
    elif command == "verify-plain":
        verify_plain_lines()
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main()
