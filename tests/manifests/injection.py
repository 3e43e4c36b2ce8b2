"""The meshaudit sidecar injection template: reading it from both install formats and rendering
the few Go template constructs it uses into the pod Istio would produce."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml


TEMPLATE_FILES = ("istiod-values.yaml", "istio-operator.yaml")


def injection_settings(path: Path) -> tuple[str, dict]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if doc.get("kind") == "IstioOperator":
        return (doc["spec"]["values"]["sidecarInjectorWebhook"]["templates"]["meshaudit"],
                doc["spec"]["meshConfig"])
    return doc["sidecarInjectorWebhook"]["templates"]["meshaudit"], doc["meshConfig"]


def render_template(text: str, native: bool, first_container: str, annotations: dict) -> str:
    """Renders the few Go template constructs the meshaudit template uses; others are refused."""
    out, branch_stack = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("{{- $nativeSidecar :="):
            continue
        if stripped == "{{- if $nativeSidecar }}":
            branch_stack.append(native)
            continue
        if stripped == "{{- else }}":
            branch_stack[-1] = not branch_stack[-1]
            continue
        if stripped == "{{- end }}":
            branch_stack.pop()
            continue
        if branch_stack and not branch_stack[-1]:
            continue

        def annotation(m):
            key, default = m.group(1), m.group(2)
            if default == "(index .Spec.Containers 0).Name":
                default = first_container
            elif default.startswith("`") and default.endswith("`"):
                default = default[1:-1]
            else:
                raise ValueError(f"unsupported default {default}")
            return annotations.get(key, default)

        line = re.sub(r"\{\{ annotation \.ObjectMeta `([^`]+)` (.+?) \}\}", annotation, line)
        if "{{" in line:
            raise ValueError(f"template construct validate.py cannot render: {line.strip()}")
        out.append(line)
    if branch_stack:
        raise ValueError("unbalanced if/end in template")
    return "\n".join(out)


def injected_pod(deployment: dict, rendered: dict, native: bool) -> dict:
    """The pod Istio would produce: the Deployment's pod, a stock istio-proxy, the template's env."""
    template = copy.deepcopy(deployment["spec"]["template"])
    proxy = {
        "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0",
        "env": [{"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in (
            ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
            ("SERVICE_ACCOUNT", "spec.serviceAccountName"))],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1337, "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "1Gi"}},
    }
    field = "initContainers" if native else "containers"
    patch = [c for c in (rendered.get("spec") or {}).get(field, []) if c.get("name") == "istio-proxy"]
    other = "containers" if native else "initContainers"
    if (rendered.get("spec") or {}).get(other):
        raise ValueError(f"template writes {other} when native sidecars are {'on' if native else 'off'}")
    if len(patch) != 1 or set((rendered.get("spec") or {})) - {field}:
        raise ValueError("template must only patch istio-proxy")
    names = {e["name"] for e in proxy["env"]}
    for env in patch[0].get("env", []):
        if env["name"] in names:
            raise ValueError(f"template sets {env['name']}, which stock injection already sets")
        proxy["env"].append(env)
    if native:
        proxy["restartPolicy"] = "Always"
    template["spec"].setdefault(field, []).append(proxy)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "httpbin-injected", "namespace": deployment["metadata"]["namespace"],
                         **{k: v for k, v in template["metadata"].items() if k != "name"}},
            "spec": template["spec"]}
