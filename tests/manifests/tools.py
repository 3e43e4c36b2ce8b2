"""Where the tools and files validate.py works on are (overridable from the environment, as the
Makefile does)."""

from __future__ import annotations

import os
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
K8S = ROOT / "k8s"
ENVOY_DIR = ROOT / "envoy"
KUBECTL = Path(os.environ.get("MESHAUDIT_KUBECTL", ROOT / ".venv" / "bin" / "kubectl"))
ENVOY = Path(os.environ.get("MESHAUDIT_ENVOY", ROOT / ".venv" / "bin" / "envoy"))
WASM = Path(os.environ.get("MESHAUDIT_WASM", ROOT / "dist" / "meshaudit_filter.wasm"))
COLLECTOR_BIN = Path(os.environ.get("MESHAUDIT_COLLECTOR_BIN",
                                    ROOT / "target" / "release" / "meshaudit-collector"))
CRDS = HERE / "istio-crds.yaml"
