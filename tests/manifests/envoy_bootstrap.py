"""Envoy checks: `envoy --mode validate` on local copies of bootstraps (built wasm, throwaway TLS
files, plugins forced to fail closed), and bootstraps built from the WasmPlugin and EnvoyFilter
the way Istio would hand them to Envoy."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from tools import ENVOY, WASM
from policy import envoyfilter_parts


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


def as_istio_struct(value):
    """pluginConfig as Istio hands it to the filter: through a protobuf Struct, where every number
    is a double, then to JSON the way Go's protojson writes doubles (1.0 -> 1, 100 -> 100)."""
    if isinstance(value, dict):
        return {k: as_istio_struct(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_istio_struct(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 1e21 else number
    return value


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
                              "value": json.dumps(as_istio_struct(plugin_config))}}}}


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
