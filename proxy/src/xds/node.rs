//! The `Node` sent to the control plane: the bootstrap's node (id, cluster, metadata,
//! locality, ...) with `--service-node`/`--service-cluster` applied, the user agent, and
//! the client features Remora has.

use envoy_types::pb::envoy::config::core::v3::{node::UserAgentVersionType, BuildVersion, Node};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::server::{Server, VERSION};

/// The Envoy release whose xDS behaviour Remora follows; the control plane gates
/// features on the user agent's version.
const ENVOY_COMPAT: SemanticVersion = SemanticVersion {
    major_number: 1,
    minor_number: 40,
    patch: 0,
};

/// Client features Envoy announces that also hold for Remora.
const CLIENT_FEATURES: &[&str] = &[
    "envoy.lb.does_not_support_overprovisioning",
    "envoy.lrs.supports_send_all_clusters",
];

pub fn node(server: &Server) -> Node {
    let mut node = server.bootstrap_proto.node.clone().unwrap_or_default();
    node.id = server.node.id.clone();
    node.cluster = server.node.cluster.clone();
    if node.user_agent_name.is_empty() {
        node.user_agent_name = "envoy".into();
    }
    if node.user_agent_version_type.is_none() {
        let metadata = Struct {
            fields: [(
                "remora.version".to_string(),
                Value {
                    kind: Some(Kind::StringValue(VERSION.into())),
                },
            )]
            .into_iter()
            .collect(),
        };
        node.user_agent_version_type =
            Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
                version: Some(ENVOY_COMPAT),
                metadata: Some(metadata),
            }));
    }
    for f in CLIENT_FEATURES {
        if !node.client_features.iter().any(|c| c == f) {
            node.client_features.push((*f).into());
        }
    }
    node
}
