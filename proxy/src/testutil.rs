//! Helpers for unit tests: configs from YAML snippets.

use crate::config::cluster::Cluster;
use crate::config::load::{decode, parse_text, UnknownFields};

/// Decodes and converts a YAML snippet of proto `full_name` into `T`.
pub fn from_yaml<P, T>(yaml: &str, full_name: &str) -> T
where
    P: prost::Message + Default,
    T: for<'a> TryFrom<&'a P, Error = crate::config::ConfigError>,
{
    let v = parse_text(yaml, "test").expect("yaml");
    let (proto, _): (P, _) = decode(v, full_name, UnknownFields::Reject).expect("decodes");
    T::try_from(&proto).expect("converts")
}

/// A STATIC cluster with one endpoint.
pub fn static_cluster(name: &str, addr: std::net::SocketAddr) -> Cluster {
    from_yaml::<envoy_types::pb::envoy::config::cluster::v3::Cluster, Cluster>(
        &format!(
            "name: {name}\nload_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]}}",
            addr.ip(),
            addr.port()
        ),
        "envoy.config.cluster.v3.Cluster",
    )
}
