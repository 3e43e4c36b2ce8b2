"""Checks a release SBOM: valid CycloneDX 1.5 (the schema shipped with cyclonedx-python-lib,
strict), describing the artifact by its manifest digest, and listing what is really in it: the
crates the artifact links, at their Cargo.lock versions and checksums, and for the collector
image the Debian packages its libraries and CA bundle come from.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tools import ROOT

# Linked into both (the event format); only in the collector (its runtime and store); never in
# the filter (a Wasm module has no async runtime or database driver).
EXPECT = {
    "collector": {"present": ["meshaudit-event", "tokio", "serde_json", "sha2"], "absent": ["proptest"],
                  "debs": ["libc6", "ca-certificates"]},
    "filter": {"present": ["meshaudit-event", "serde_json", "sha2"], "absent": ["tokio", "sqlx", "proptest"],
               "debs": []},
}


def schema_problems(text: str) -> list[str]:
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        return ["cyclonedx-python-lib is missing: run `make setup`"]
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    return [f"not valid CycloneDX 1.5: {str(error)[:300]}"] if error else []


def sbom_problems(path: Path, artifact: str, digest: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    problems = schema_problems(text)
    broken = json.loads(text)
    broken["components"][0]["type"] = "not-a-type"
    if not schema_problems(json.dumps(broken)):
        problems.append("self-test: the schema check accepted a component type that does not exist")
    doc = json.loads(text)
    meta = doc.get("metadata", {}).get("component", {})
    if meta.get("hashes") != [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}]:
        problems.append(f"metadata.component does not carry the image digest {digest}")
    lock = {(p["name"], p["version"]): p.get("checksum")
            for p in tomllib.loads((ROOT / "Cargo.lock").read_text(encoding="utf-8"))["package"]}
    cargo = [c for c in doc.get("components", []) if c.get("purl", "").startswith("pkg:cargo/")]
    crates = {c["name"] for c in cargo}
    for c in cargo:
        key = (c["name"], c["version"])
        if key not in lock:
            problems.append(f"{c['name']} {c['version']} is not in Cargo.lock")
        elif lock[key] and c.get("hashes") != [{"alg": "SHA-256", "content": lock[key]}]:
            problems.append(f"{c['name']} {c['version']}: checksum differs from Cargo.lock")
        if not c.get("licenses") and lock.get(key):
            problems.append(f"{c['name']}: no license")
    want = EXPECT[artifact]
    problems += [f"{name} missing" for name in want["present"] if name not in crates]
    problems += [f"{name} listed but not linked into the {artifact}" for name in want["absent"] if name in crates]
    refs = {c.get("bom-ref") for c in doc.get("components", [])} | {meta.get("bom-ref")}
    dangling = sorted({r for d in doc.get("dependencies", []) for r in [d.get("ref"), *d.get("dependsOn", [])]} - refs)
    problems += [f"dependency graph names {r}, which is no component" for r in dangling[:5]]
    debs = {c["name"] for c in doc.get("components", []) if c.get("purl", "").startswith("pkg:deb/")}
    problems += [f"Debian package {d} missing" for d in want["debs"] if d not in debs]
    return problems
