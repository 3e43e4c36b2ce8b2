//! Envoy bootstraps generated for a test: one listener routing to the upstream (plus a
//! `direct_response` route for local replies), the meshaudit wasm filter when asked for, and a
//! static cluster for the collector. Pure: ports and paths in, JSON out.

use serde_json::{json, Value};
use std::path::PathBuf;

/// The cluster name the filter ships to in generated bootstraps.
pub const COLLECTOR_CLUSTER: &str = "meshaudit_collector";

/// Which HTTP filter sits in front of the router.
#[derive(Debug, Clone)]
pub enum FilterSetup {
    /// No filter at all: bare Envoy.
    None,
    /// The meshaudit wasm with this plugin configuration (JSON object).
    Meshaudit {
        wasm: PathBuf,
        plugin_config: Value,
        /// Names passed through `vm_config.environment_variables.host_env_keys`.
        host_env_keys: Vec<String>,
        /// Set through `vm_config.environment_variables.key_values`.
        key_values: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub listener_port: u16,
    pub admin_port: u16,
    pub upstream_port: u16,
    /// Where the collector cluster points (a closed port simulates "down").
    pub collector_port: u16,
    pub filter: FilterSetup,
    /// Envoy node metadata (the Istio fallback for Kubernetes fields).
    pub node_metadata: Value,
    /// Route timeout to the upstream, in seconds.
    pub route_timeout_s: u32,
}

impl BootstrapOptions {
    pub fn new(
        listener_port: u16,
        admin_port: u16,
        upstream_port: u16,
        collector_port: u16,
    ) -> Self {
        Self {
            listener_port,
            admin_port,
            upstream_port,
            collector_port,
            filter: FilterSetup::None,
            node_metadata: json!({}),
            route_timeout_s: 10,
        }
    }
}

fn static_cluster(name: &str, port: u16, http2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]
        }
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        });
    }
    c
}

/// The wasm filter entry of an HTTP connection manager.
pub fn wasm_filter(
    wasm: &std::path::Path,
    plugin_config: &Value,
    host_env_keys: &[String],
    key_values: &[(String, String)],
) -> Value {
    let kv: serde_json::Map<String, Value> = key_values
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meshaudit",
                "root_id": "",
                "vm_config": {
                    "vm_id": "meshaudit",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}},
                    "environment_variables": {"host_env_keys": host_env_keys, "key_values": kv}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config.to_string()
                }
            }
        }
    })
}

/// The whole bootstrap as JSON (Envoy reads JSON as YAML).
pub fn bootstrap(o: &BootstrapOptions) -> Value {
    let mut http_filters = Vec::new();
    if let FilterSetup::Meshaudit {
        wasm,
        plugin_config,
        host_env_keys,
        key_values,
    } = &o.filter
    {
        http_filters.push(wasm_filter(wasm, plugin_config, host_env_keys, key_values));
    }
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "node": {"id": "meshaudit-test", "cluster": "meshaudit-test", "metadata": o.node_metadata},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": o.admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": o.listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "codec_type": "AUTO",
                        "route_config": {"virtual_hosts": [{
                            "name": "app",
                            "domains": ["*"],
                            "routes": [
                                {"match": {"prefix": "/local-reply"},
                                 "direct_response": {"status": 404, "body": {"inline_string": "no such route\n"}}},
                                {"match": {"prefix": "/"},
                                 "route": {"cluster": "upstream", "timeout": format!("{}s", o.route_timeout_s)}}
                            ]
                        }]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": [
                static_cluster("upstream", o.upstream_port, false),
                static_cluster(COLLECTOR_CLUSTER, o.collector_port, false)
            ]
        }
    })
}
