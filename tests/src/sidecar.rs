//! The parts of an Istio sidecar config every interception test and benchmark shares:
//! virtualOutbound (15001, hand-off by original destination, PassthroughCluster for the
//! rest), virtualInbound (15006, original destination, the inbound passthrough cluster;
//! straight to 15006 goes to the BlackHoleCluster), and those clusters. Each returns YAML
//! list items for `static_resources.listeners` / `.clusters` (two-space indent).

/// Which family the sidecar serves.
pub struct Family {
    /// The wildcard address listeners use (`0.0.0.0` or `::`).
    pub any: &'static str,
    pub inbound_cluster: &'static str,
    /// Where inbound passthrough connections come from (`127.0.0.6` or `::6`).
    pub inbound_source: &'static str,
}

pub const V4: Family = Family {
    any: "0.0.0.0",
    inbound_cluster: "InboundPassthroughClusterIpv4",
    inbound_source: "127.0.0.6",
};

pub const V6: Family = Family {
    any: "::",
    inbound_cluster: "InboundPassthroughClusterIpv6",
    inbound_source: "::6",
};

/// A `tcp_proxy` network filter in flow style.
pub fn tcp_proxy(stat: &str, cluster: &str) -> String {
    format!(
        r#"{{name: envoy.filters.network.tcp_proxy, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: "{stat}", cluster: "{cluster}"}}}}"#
    )
}

/// virtualOutbound and virtualInbound (`transparent` for TPROXY inbound).
pub fn virtual_listeners(f: &Family, transparent: bool) -> String {
    let Family {
        any,
        inbound_cluster,
        ..
    } = f;
    let passthrough = tcp_proxy("PassthroughCluster", "PassthroughCluster");
    let inbound = tcp_proxy(inbound_cluster, inbound_cluster);
    let blackhole = tcp_proxy("BlackHoleCluster", "BlackHoleCluster");
    format!(
        r#"  - name: virtualOutbound
    address: {{socket_address: {{address: "{any}", port_value: 15001}}}}
    use_original_dst: true
    traffic_direction: OUTBOUND
    filter_chains:
    - name: PassthroughFilterChain
      filters: [{passthrough}]
  - name: virtualInbound
    address: {{socket_address: {{address: "{any}", port_value: 15006}}}}
    transparent: {transparent}
    traffic_direction: INBOUND
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}
    filter_chains:
    - name: virtualInbound-blackhole
      filter_chain_match: {{destination_port: 15006}}
      filters: [{blackhole}]
    - name: virtualInbound-passthrough
      filters: [{inbound}]
"#
    )
}

/// PassthroughCluster, the inbound passthrough cluster (bound to the family's source
/// address) and BlackHoleCluster.
pub fn passthrough_clusters(f: &Family) -> String {
    let Family {
        inbound_cluster,
        inbound_source,
        ..
    } = f;
    format!(
        r#"  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
  - name: {inbound_cluster}
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
    upstream_bind_config: {{source_address: {{address: "{inbound_source}", port_value: 0}}}}
  - name: BlackHoleCluster
    type: STATIC
    connect_timeout: 5s
"#
    )
}

/// A STATIC cluster with one endpoint.
pub fn static_cluster(name: &str, ip: &str, port: u16) -> String {
    format!(
        r#"  - name: "{name}"
    type: STATIC
    connect_timeout: 5s
    load_assignment: {{cluster_name: "{name}", endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: "{ip}", port_value: {port}}}}}}}}}]}}]}}
"#
    )
}
