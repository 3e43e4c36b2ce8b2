#!/usr/bin/env python3
"""Independent known answers for SPEC §10 (event/src/workload_key.rs tests and
docs/protocol.md): Python `cryptography` only, none of meshaudit's code.

    .venv/bin/python scripts/workload_key_kat.py
"""
import base64
import hashlib

from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

seed = bytes(range(32))
name = "ns1-k1"
sk = Ed25519PrivateKey.from_private_bytes(seed)
pub = sk.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
kid = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4].hex()
print("signer:   PRIVATE+KEY+%s+%s+%s" % (name, kid, base64.b64encode(b"\x01" + seed).decode()))
print("verifier: %s+%s+%s" % (name, kid, base64.b64encode(b"\x01" + pub).decode()))
hashes = [hashlib.sha256(b"event-1").digest(), hashlib.sha256(b"event-2").digest()]
digest = hashlib.sha256(b"".join(hashes)).hexdigest()
msg = ("meshaudit-batch-v1\n%s\n%s\n%s\n%s\n" % (name, "ns1/pod-a", "3", digest)).encode()
print("digest:   " + digest)
print("header:   keyid=%s, sig=%s" % (name, base64.b64encode(sk.sign(msg)).decode()))
