"""Rendering kustomizations (and components) with `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from tools import K8S, KUBECTL


def kustomize(directory: Path) -> list[dict]:
    """Renders one kustomization; raises ValueError with kubectl's message when it fails."""
    run = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=60, check=False)
    if run.returncode != 0:
        raise ValueError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else
                         f"kubectl exited {run.returncode}")
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def is_component(directory: Path) -> bool:
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8")) or {}
    return doc.get("kind") == "Component"


def kustomize_component(directory: Path) -> list[dict]:
    """A Component renders only inside a kustomization: apply it to k8s/base."""
    with tempfile.TemporaryDirectory(prefix="meshaudit-validate-component-") as tmp:
        # kustomize refuses absolute paths: work on a copy of k8s/ with the wrapper inside it.
        tree = Path(tmp) / "k8s"
        shutil.copytree(K8S, tree)
        wrapper = tree / "component-check"
        wrapper.mkdir()
        (wrapper / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources:\n  - ../base\n"
            f"components:\n  - ../{directory.relative_to(K8S).as_posix()}\n",
            encoding="utf-8")
        return kustomize(wrapper)


def obj_name(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"
