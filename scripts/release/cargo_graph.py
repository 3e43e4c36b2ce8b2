"""The crate graph from `cargo metadata`, filtered to one target platform: what a shipped artifact
links (normal dependencies, transitively) and what the whole workspace reaches (every kind)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

# Each shipped artifact and the platform it is built for.
SHIPPED = {"meshaudit-collector": "x86_64-unknown-linux-gnu", "meshaudit-filter": "wasm32-wasip1"}


class CargoError(Exception):
    pass


def cargo_metadata(root: Path, platform: str) -> dict:
    run = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked",
                          "--filter-platform", platform], cwd=root, capture_output=True, text=True,
                         timeout=300, check=False)
    if run.returncode != 0:
        raise CargoError(f"cargo metadata --filter-platform {platform} failed: {run.stderr.strip()[-400:]}")
    return json.loads(run.stdout)


def walk(metadata: dict, roots: list[str], normal_only: bool) -> dict[str, list[str]]:
    """package id -> the ids it depends on, for everything reachable from `roots`."""
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    edges: dict[str, list[str]] = {}
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in edges:
            continue
        deps = [d["pkg"] for d in nodes.get(pid, {}).get("deps", [])
                if not normal_only or any(k.get("kind") is None for k in d["dep_kinds"])]
        edges[pid] = sorted(deps)
        stack += deps
    return edges


def workspace_package(metadata: dict, crate: str) -> dict:
    for p in metadata["packages"]:
        if p["name"] == crate and p["id"] in metadata["workspace_members"]:
            return p
    raise CargoError(f"{crate} is not a workspace member")


def linked_crates(metadata: dict, crate: str) -> tuple[dict, list[dict], dict[str, list[str]]]:
    """The crate, the packages linked into it (normal deps, proc-macros included), and the edges."""
    by_id = {p["id"]: p for p in metadata["packages"]}
    root = workspace_package(metadata, crate)
    edges = walk(metadata, [root["id"]], normal_only=True)
    return root, [by_id[i] for i in sorted(edges) if i != root["id"]], edges


def everything(metadata: dict) -> list[dict]:
    """Every package the workspace reaches on this platform, dev and build dependencies included."""
    by_id = {p["id"]: p for p in metadata["packages"]}
    return [by_id[i] for i in sorted(walk(metadata, list(metadata["workspace_members"]), normal_only=False))]
