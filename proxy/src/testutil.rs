//! Helpers for unit tests: configs from YAML snippets, and a connection manager made
//! from one.

use std::sync::Arc;

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

/// The address tests give as this host's.
pub fn local_ip() -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1))
}

/// A connection manager from an `HttpConnectionManager` snippet with inline routes, over
/// `clusters`.
pub fn http_context(hcm_yaml: &str, clusters: Vec<Cluster>) -> Arc<crate::http::HttpContext> {
    type Hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    let store = crate::stats::Store::default();
    let clusters = Arc::new(crate::upstream::ClusterManager::new(clusters, &store));
    let hcm: crate::config::hcm::HttpManager = from_yaml::<Hcm, _>(
        hcm_yaml,
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    );
    let crate::config::hcm::RouteSpec::Static(table) = &hcm.routes else {
        panic!("tests use inline routes");
    };
    let routes = crate::routing::Routes::Fixed(table.clone());
    Arc::new(crate::http::HttpContext::new(
        Arc::new(hcm),
        routes,
        clusters,
        &store,
        local_ip(),
    ))
}

/// A downstream connection's context with no peer address, watching `drain`.
pub fn downstream(drain: &crate::drain::Drain) -> Arc<crate::http::Downstream> {
    Arc::new(crate::http::Downstream::new(
        None,
        None,
        Arc::new(crate::upstream::pool::Pools::default()),
        local_ip(),
        drain.watch(),
    ))
}
