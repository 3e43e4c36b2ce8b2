"""Schema validation: core objects with kubernetes-validate (strict), Istio objects against their
CRDs' OpenAPI v3 schemas made strict, plus the CRDs' CEL rules evaluated in Python."""

from __future__ import annotations

import functools
import re
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate.utils as kv
import yaml

from tools import CRDS


# core Kubernetes objects: kubernetes-validate, strict


K8S_VERSION = kv.latest_version()


def install_schema_cache() -> None:
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
