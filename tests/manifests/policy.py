"""Policy and consistency: pod security, literal secrets, selectors that select, the collector's
env and shape (issue 7), the filter's configuration in WasmPlugin and EnvoyFilter."""

from __future__ import annotations

import json
import re

from contracts import (
    COLLECTOR_ENV,
    COLLECTOR_ENV_HELPERS,
    COLLECTOR_POD,
    FILTER_ENV,
    FILTER_KEYS,
    FILTER_SECRET_KEYS,
    ISTIO_PROXY_STOCK_ENV,
    TEMPLATE_REQUIRED_ENV,
)
from kustomize import obj_name


def pod_templates(obj: dict) -> list[dict]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec.get("template") or {}]
    if kind == "CronJob":
        return [((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}]
    if kind == "Pod":
        return [obj]
    return []


def policy_problems(obj: dict) -> list[str]:
    problems = []
    if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
        problems.append("a Secret with literal data: secrets are created by hand (docs/deploy.md)")
    for template in pod_templates(obj):
        pod = template.get("spec") or {}
        pod_sc = pod.get("securityContext") or {}
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            sc = c.get("securityContext") or {}
            name = c.get("name")
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"container {name}: runAsNonRoot is not set")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"container {name}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"container {name}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"container {name}: capabilities.drop lacks ALL")
            res = c.get("resources") or {}
            if not res.get("requests") or not (res.get("limits") or {}).get("memory"):
                problems.append(f"container {name}: needs resource requests and a memory limit")
            for value in (sc.get("runAsUser"), pod_sc.get("runAsUser")):
                if value == 0:
                    problems.append(f"container {name}: runs as uid 0")
    return problems


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    return all(labels.get(k) == v for k, v in match.items())


def rendering_problems(objs: list[dict]) -> list[str]:
    """Selectors in one rendering must select a pod of that rendering."""
    problems = []
    pods = [(obj_name(o), (t.get("metadata") or {}).get("labels") or {},
             (o.get("metadata") or {}).get("namespace"))
            for o in objs for t in pod_templates(o)]
    for o in objs:
        kind, ns, spec = o.get("kind"), (o.get("metadata") or {}).get("namespace"), o.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet"):
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selects(spec.get("selector") or {}, labels):
                problems.append(f"{obj_name(o)}: selector does not match its pod template")
        selector = None
        if kind == "Service" and spec.get("selector"):
            selector = {"matchLabels": spec["selector"]}
        elif kind in ("PodDisruptionBudget",):
            selector = spec.get("selector") or {}
        elif kind == "NetworkPolicy":
            selector = spec.get("podSelector") or {}
        if selector is not None and not any(
                pns == ns and selects(selector, labels) for _, labels, pns in pods):
            problems.append(f"{obj_name(o)}: selects no pod of this rendering")
    return problems


def collector_container(objs: list[dict]) -> dict | None:
    for o in objs:
        if o.get("kind") == "Deployment" and o["metadata"]["name"] == COLLECTOR_POD:
            return o["spec"]["template"]["spec"]["containers"][0]
    return None


def collector_env_problems(objs: list[dict]) -> list[str]:
    problems = []
    container = collector_container(objs)
    if container is None:
        return problems
    names = [e["name"] for e in container.get("env", [])]
    for o in objs:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == COLLECTOR_POD:
            names += list((o.get("data") or {}).keys())
    for name in names:
        if name not in COLLECTOR_ENV | COLLECTOR_ENV_HELPERS:
            problems.append(f"collector env {name} is not a SPEC §7 setting")
    if "DATABASE_URL" not in names:
        problems.append("collector has no DATABASE_URL")
    if len(names) != len(set(names)):
        problems.append("collector env has a name twice")
    return problems


def collector_shape_problems(objs: list[dict]) -> list[str]:
    """Issue 7's requirements on the collector's Deployment, per rendering."""
    deployment = next((o for o in objs if o.get("kind") == "Deployment"
                       and o["metadata"]["name"] == COLLECTOR_POD), None)
    if deployment is None:
        return []
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    problems = []
    probes = {k: ((container.get(k) or {}).get("httpGet") or {}).get("path")
              for k in ("livenessProbe", "readinessProbe")}
    if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        problems.append(f"probes are {probes}, want liveness /healthz and readiness /readyz")
    if pod.get("terminationGracePeriodSeconds", 30) < 25:
        problems.append("terminationGracePeriodSeconds below 25 s: serve drains for up to 20 s")
    env = {e["name"]: e for e in container.get("env", [])}
    for name in ("AUDIT_RECEIVER_API_KEY", "AUDIT_RECEIVER_SIGNING_SECRET", "AUDIT_RECEIVER_EVENT_KEYS",
                 "MESHAUDIT_ADMIN_TOKEN"):
        if "secretKeyRef" not in (env.get(name) or {}).get("valueFrom", {}):
            problems.append(f"{name} does not come from a Secret")
    url = env.get("DATABASE_URL") or {}
    sqlite = str(url.get("value", "")).startswith("sqlite:")
    if sqlite:
        if spec.get("replicas") != 1 or (spec.get("strategy") or {}).get("type") != "Recreate":
            problems.append("SQLite needs replicas 1 and strategy Recreate")
        if not any("persistentVolumeClaim" in v for v in pod.get("volumes", [])):
            problems.append("SQLite database is not on a PersistentVolumeClaim")
        if any(o.get("kind") == "PodDisruptionBudget" for o in objs):
            problems.append("a PodDisruptionBudget on a single replica blocks node drains")
    else:
        if spec.get("replicas", 1) < 2:
            problems.append("PostgreSQL deployments run at least 2 replicas")
        if "valueFrom" not in url and "$(" not in str(url.get("value", "")):
            problems.append("DATABASE_URL holds a literal password-bearing URL")
        if not any(o.get("kind") == "PodDisruptionBudget" for o in objs):
            problems.append("no PodDisruptionBudget")
    return problems


def filter_config_problems(config, where: str) -> list[str]:
    if not isinstance(config, dict):
        return [f"{where}: the filter configuration is not a JSON object"]
    problems = [f"{where}: {k!r} is not a filter setting (SPEC §8)" for k in config
                if k not in FILTER_KEYS]
    problems += [f"{where}: secret {k!r} written in the configuration; pass it through env"
                 for k in config if k in FILTER_SECRET_KEYS]
    if "collector_cluster" not in config:
        problems.append(f"{where}: collector_cluster is required")
    return problems


def wasmplugin_problems(wp: dict, collector_labels: dict, template_env: set[str]) -> list[str]:
    spec = wp.get("spec") or {}
    problems = filter_config_problems(spec.get("pluginConfig"), "pluginConfig")
    if spec.get("failStrategy") != "FAIL_OPEN":
        problems.append("failStrategy is not FAIL_OPEN")
    if not re.fullmatch(r"[a-f0-9]{64}", str(spec.get("sha256", ""))):
        problems.append("sha256 is not 64 lowercase hex digits")
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector:
        problems.append("no selector: the plugin would also audit the collector's ingest")
    elif selects({"matchLabels": selector}, collector_labels):
        problems.append("selector matches the collector's pods (auditing its ingest would loop)")
    env = (spec.get("vmConfig") or {}).get("env") or []
    host = {e["name"] for e in env if e.get("valueFrom") == "HOST"}
    unknown = {e["name"] for e in env} - FILTER_ENV
    if unknown:
        problems.append(f"vmConfig.env {sorted(unknown)} are not read by the filter")
    missing = (ISTIO_PROXY_STOCK_ENV | TEMPLATE_REQUIRED_ENV) - host
    if missing:
        problems.append(f"vmConfig.env lacks {sorted(missing)}")
    unprovided = host - ISTIO_PROXY_STOCK_ENV - template_env
    if unprovided:
        problems.append(f"{sorted(unprovided)} are read from the host but no injection gives them")
    if not any(m.get("mode") == "SERVER" for m in spec.get("match") or []):
        problems.append("not limited to inbound (match mode SERVER): calls would be audited twice")
    return problems


def envoyfilter_parts(ef: dict) -> tuple[dict | None, dict | None]:
    ext, http = None, None
    for patch in (ef.get("spec") or {}).get("configPatches") or []:
        if patch.get("applyTo") == "EXTENSION_CONFIG":
            ext = patch["patch"]["value"]
        elif patch.get("applyTo") == "HTTP_FILTER":
            http = patch["patch"]["value"]
    return ext, http


def envoyfilter_problems(ef: dict, collector_labels: dict, wasmplugin: dict | None) -> list[str]:
    problems = []
    ext, http = envoyfilter_parts(ef)
    if ext is None or http is None:
        return ["needs an EXTENSION_CONFIG and an HTTP_FILTER patch"]
    if http.get("name") != ext.get("name"):
        problems.append("the HTTP_FILTER does not name the EXTENSION_CONFIG")
    config = ext["typed_config"]["config"]
    try:
        plugin = json.loads(config["configuration"]["value"])
    except (KeyError, json.JSONDecodeError) as e:
        return problems + [f"filter configuration is not JSON: {e}"]
    problems += filter_config_problems(plugin, "configuration")
    if wasmplugin is not None and plugin != wasmplugin["spec"].get("pluginConfig"):
        problems.append("configuration differs from the WasmPlugin's pluginConfig")
    env = set(config["vm_config"].get("environment_variables", {}).get("host_env_keys", []))
    if wasmplugin is not None:
        wp_env = {e["name"] for e in wasmplugin["spec"]["vmConfig"]["env"]}
        if env != wp_env:
            problems.append("host_env_keys differ from the WasmPlugin's vmConfig.env")
    labels = ((ef.get("spec") or {}).get("workloadSelector") or {}).get("labels") or {}
    if not labels or selects({"matchLabels": labels}, collector_labels):
        problems.append("workloadSelector is missing or matches the collector's pods")
    remote = config["vm_config"]["code"].get("remote") or {}
    if not re.fullmatch(r"[a-f0-9]{64}", str(remote.get("sha256", ""))):
        problems.append("remote code has no sha256 pin")
    return problems
