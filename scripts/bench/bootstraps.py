"""Envoy bootstraps for the benchmark variants (pure: ports and paths in, JSON out).

Every variant has one listener whose only route is a `direct_response`, so Envoy does no
upstream work and the differences between variants are the filter (or access log) alone.
"""

import json
import os

COLLECTOR_CLUSTER = "meshaudit_collector"
RESPONSE_BODY = '{"ok":true}\n'

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}

# The fields a user would log instead of auditing: roughly what meshaudit's metadata event holds.
ACCESS_LOG_FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "protocol": "%PROTOCOL%",
    "authority": "%REQ(:AUTHORITY)%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "code_details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "source_ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "tenant": "%REQ(TENANTID)%",
    "user": "%REQ(ACTIONLOGUSERID)%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
}


def wasm_filter(name, wasm_path, plugin_config, host_env_keys=()):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "",
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm_path)}},
                    "environment_variables": {"host_env_keys": list(host_env_keys)},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": (plugin_config if isinstance(plugin_config, str)
                              else json.dumps(plugin_config) if plugin_config is not None else ""),
                },
            },
        },
    }


def file_access_log(path):
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"json_format": ACCESS_LOG_FIELDS},
        },
    }


def bootstrap(listener_port, admin_port, http_filters=(), access_log=None, collector_port=None):
    hcm = {
        "@type": HCM,
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{
            "name": "bench",
            "domains": ["*"],
            "routes": [{
                "match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": RESPONSE_BODY}},
                "response_headers_to_add": [{"header": {"key": "content-type",
                                                        "value": "application/json"}}],
            }],
        }]},
        "http_filters": list(http_filters) + [ROUTER],
    }
    if access_log is not None:
        hcm["access_log"] = [access_log]
    clusters = []
    if collector_port is not None:
        clusters.append({
            "name": COLLECTOR_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": COLLECTOR_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": collector_port}}}}]}],
            },
        })
    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": clusters,
        },
    }


def meshaudit_plugin_config(capture_bodies):
    """SPEC §8 keys only; the secrets come from the environment (host_env_keys).
    BENCH_MESHAUDIT_CONFIG (a JSON object) adds keys, to price one setting (e.g.
    {"signature_scheme": "body"}) against the defaults."""
    cfg = {"collector_cluster": COLLECTOR_CLUSTER}
    if capture_bodies:
        cfg["capture_bodies"] = True
    cfg.update(json.loads(os.environ.get("BENCH_MESHAUDIT_CONFIG") or "{}"))
    return cfg


MESHAUDIT_ENV_KEYS = ("AUDIT_FORWARD_API_KEY", "AUDIT_FORWARD_SIGNING_SECRET",
                      "POD_NAMESPACE", "POD_NAME", "CONTAINER_NAME", "NODE_NAME")


# With a direct_response route, Envoy answers at the request headers; an HTTP/1.1 request whose
# body has not all arrived then gets `connection: close`, so every POST would pay a new
# connection. The POST variants therefore buffer the request body in front of the router (both
# of them, so the comparison stays fair); the wasm filter sits before it and sees the body
# chunks as they arrive.
BUFFER = {
    "name": "envoy.filters.http.buffer",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                     "max_request_bytes": 65536},
}


def buffer_filter(max_request_bytes):
    return {"name": BUFFER["name"],
            "typed_config": dict(BUFFER["typed_config"], max_request_bytes=max_request_bytes)}


def variant_bootstrap(variant, ports, paths, collector_port):
    """`variant`: a name of VARIANTS; `paths`: wasm files and the access log path."""
    lp, ap = ports
    variant, _, alt = variant.partition("@")
    if alt:
        paths = dict(paths, meshaudit=paths[f"meshaudit@{alt}"])
    if variant == "bare":
        return bootstrap(lp, ap)
    if variant == "bare_post":
        return bootstrap(lp, ap, [BUFFER])
    if variant == "sink":
        # Stands in for the collector: 200 to every batch (up to the collector's 4 MiB default).
        return bootstrap(lp, ap, [buffer_filter(4 * 1024 * 1024)])
    if variant == "empty_wasm":
        return bootstrap(lp, ap, [wasm_filter("floor_empty", paths["floor_empty"], None)])
    if variant == "trivial_wasm":
        return bootstrap(lp, ap, [wasm_filter("floor_trivial", paths["floor_trivial"], None,
                                              ["POD_NAME"])])
    if variant.startswith("probe:"):
        # The probe filter with the operations after the colon (see floor_probe.rs).
        # The buffer filter keeps POST connections alive (see BUFFER); GET passes through it.
        probe = wasm_filter("floor_probe", paths["floor_probe"], variant[len("probe:"):])
        return bootstrap(lp, ap, [probe, BUFFER])
    if variant == "access_log":
        return bootstrap(lp, ap, access_log=file_access_log(paths["access_log"]))
    if variant in ("meshaudit", "meshaudit_sink", "meshaudit_bodies", "meshaudit_bodies_sink"):
        bodies = variant.startswith("meshaudit_bodies")
        f = wasm_filter("meshaudit", paths["meshaudit"], meshaudit_plugin_config(bodies), MESHAUDIT_ENV_KEYS)
        return bootstrap(lp, ap, [f, BUFFER] if bodies else [f], collector_port=collector_port)
    raise ValueError(f"unknown variant {variant}")


# name → (description, wrk script, baseline for the "vs bare" ratio)
VARIANTS = {
    "bare": ("bare Envoy, direct_response (GET)", "get", "bare"),
    "empty_wasm": ("+ empty proxy-wasm filter", "get", "bare"),
    "trivial_wasm": ("+ trivial wasm (1 env read, 1 header set)", "get", "bare"),
    "access_log": ("+ native JSON file access log", "get", "bare"),
    "meshaudit": ("+ meshaudit, metadata, signed + shipped", "get", "bare"),
    "meshaudit_sink": ("+ meshaudit, metadata, shipped to a null sink", "get", "bare"),
    "bare_post": ("bare Envoy, 4 KiB JSON POST (buffered)", "post", "bare_post"),
    "meshaudit_bodies": ("+ meshaudit, 4 KiB JSON bodies captured", "post", "bare_post"),
    "meshaudit_bodies_sink": ("+ meshaudit, 4 KiB JSON bodies, shipped to a null sink", "post", "bare_post"),
}


def alt_wasms():
    """BENCH_MESHAUDIT_ALT="label=/path/a.wasm,label2=/path/b.wasm": other builds of the filter,
    run as extra variants `<variant>@<label>` interleaved with the rest, so a change is priced
    against its parent in one run (a shared machine drifts between runs)."""
    out = {}
    for item in (os.environ.get("BENCH_MESHAUDIT_ALT") or "").split(","):
        if "=" in item:
            label, path = item.split("=", 1)
            out[label.strip()] = path.strip()
    return out


def is_sink(variant):
    """Whether the variant ships to the null sink instead of the collector."""
    return variant.partition("@")[0].endswith("_sink")


for _label in alt_wasms():
    for _v in ("meshaudit_sink", "meshaudit_bodies_sink"):
        _desc, _script, _base = VARIANTS[_v]
        VARIANTS[f"{_v}@{_label}"] = (f"{_desc} [{_label}]", _script, _base)
