//! `/config_dump`: the `envoy.admin.v3.ConfigDump` JSON that istioctl and other tools
//! parse, built from the bootstrap protos (serialized with proto field names, as Envoy does).

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{json, Value};

use super::load::pool;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Serializes a prost message as protobuf JSON with proto field names.
pub fn to_json<M: Message>(msg: &M, full_name: &str) -> Value {
    bytes_to_json(&msg.encode_to_vec(), full_name)
}

/// Serializes an encoded message of type `full_name` as protobuf JSON with proto field
/// names, with its `@type` (as a resource inside a dump carries it).
pub fn typed_json(bytes: &[u8], full_name: &str) -> Value {
    typed(full_name, bytes_to_json(bytes, full_name))
}

fn bytes_to_json(bytes: &[u8], full_name: &str) -> Value {
    let Some(desc) = pool().get_message_by_name(full_name) else {
        return Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(desc, bytes) else {
        return Value::Null;
    };
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    if dynamic.serialize_with_options(&mut ser, &opts).is_err() {
        return Value::Null;
    }
    serde_json::from_slice(&ser.into_inner()).unwrap_or(Value::Null)
}

fn typed(type_name: &str, mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert(
            "@type".into(),
            json!(format!("type.googleapis.com/{type_name}")),
        );
    }
    v
}

/// The full dump: the bootstrap's static resources (`last_updated` is the time config
/// was loaded) and what xDS delivered, section by section.
pub fn config_dump(b: &Bootstrap, last_updated: &str, dynamic: &DynamicSections) -> Value {
    let bootstrap = json!({
        "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
        "bootstrap": to_json(b, "envoy.config.bootstrap.v3.Bootstrap"),
        "last_updated": last_updated,
    });
    let sr = b.static_resources.clone().unwrap_or_default();
    let clusters: Vec<Value> = sr
        .clusters
        .iter()
        .map(|c| json!({"cluster": typed("envoy.config.cluster.v3.Cluster", to_json(c, "envoy.config.cluster.v3.Cluster")), "last_updated": last_updated}))
        .collect();
    let listeners: Vec<Value> = sr
        .listeners
        .iter()
        .map(|l| json!({"listener": typed("envoy.config.listener.v3.Listener", to_json(l, "envoy.config.listener.v3.Listener")), "last_updated": last_updated}))
        .collect();
    let mut routes = Vec::new();
    for l in &sr.listeners {
        for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &fc.filters {
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url != HCM {
                    continue;
                }
                let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                    continue;
                };
                if let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier {
                    routes.push(json!({
                        "route_config": typed("envoy.config.route.v3.RouteConfiguration", to_json(&rc, "envoy.config.route.v3.RouteConfiguration")),
                        "last_updated": last_updated,
                    }));
                }
            }
        }
    }
    let mut clusters_dump = json!({"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": clusters});
    let mut listeners_dump = json!({"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": listeners});
    let mut routes_dump = json!({"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "static_route_configs": routes});
    merge(&mut clusters_dump, &dynamic.clusters);
    merge(&mut listeners_dump, &dynamic.listeners);
    merge(&mut routes_dump, &dynamic.routes);
    json!({"configs": [bootstrap, clusters_dump, listeners_dump, routes_dump]})
}

/// The dynamic fields of each section (`dynamic_active_clusters`, `dynamic_listeners`,
/// `dynamic_route_configs`, ...), as JSON objects merged into the static sections.
#[derive(Debug, Default)]
pub struct DynamicSections {
    pub clusters: Value,
    pub listeners: Value,
    pub routes: Value,
}

fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}
