"""monitoring.coreos.com objects (no CRDs shipped): structure, PromQL sanity, metric names that
exist, rejection reasons of SPEC §7; and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

from contracts import FOREIGN_NAME_PATTERNS, KNOWN_METRICS, METRIC_PREFIXES, REJECT_REASONS


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
