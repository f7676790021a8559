//! `Cluster` -> [`Cluster`]: discovery type, endpoints, connect timeout, upstream protocol.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;

use super::circuit_breakers::CircuitBreakers;
use super::common::{self, HostAddress};
use super::error::{ConfigError, Result, Within};
use super::health_check::HealthCheck;
use super::lb::LbConfig;
use super::outlier::Outlier;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub discovery: Discovery,
    pub endpoints: Vec<Endpoint>,
    /// The inline `load_assignment`'s overprovisioning factor.
    pub overprovisioning_factor: u32,
    pub lb: LbConfig,
    pub outlier: Option<Outlier>,
    /// Active health checking (`health_checks`, at most one).
    pub health_check: Option<Arc<HealthCheck>>,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub dns_refresh_rate: Duration,
    pub dns_family: DnsFamily,
    pub per_connection_buffer_limit_bytes: u32,
    /// EDS clusters: where their endpoints come from.
    pub eds: Option<Eds>,
    /// HTTP/2 `connection_keepalive`: PING interval and how long to wait for the answer
    /// (used by the xDS client on the ADS cluster).
    pub h2_keepalive: Option<(Duration, Duration)>,
    /// `upstream_bind_config`: the source address of upstream connections (Istio binds
    /// inbound passthrough connections to 127.0.0.6, which interception leaves alone).
    pub bind: Option<UpstreamBind>,
    /// ORIGINAL_DST: `original_dst_lb_config.upstream_port_override`.
    pub original_dst_port: Option<u16>,
    /// `circuit_breakers` of both priorities (Envoy's defaults when absent).
    pub breakers: CircuitBreakers,
    /// `ignore_health_on_host_removal`: hosts EDS removes leave at once, even while
    /// they pass their health checks.
    pub ignore_health_on_host_removal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamBind {
    pub source: std::net::SocketAddr,
    /// `freebind`: bind even to an address this host does not own.
    pub freebind: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns,
    LogicalDns,
    /// Endpoints from EDS (a `ClusterLoadAssignment` named [`Eds::service_name`]).
    Eds,
    /// The host is the downstream connection's original destination (Istio's
    /// `PassthroughCluster`).
    OriginalDst,
}

impl Discovery {
    /// Whether hosts come from resolving the endpoints' names.
    pub fn is_dns(self) -> bool {
        matches!(self, Discovery::StrictDns | Discovery::LogicalDns)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eds {
    /// `eds_cluster_config.service_name`, or the cluster's name.
    pub service_name: String,
    /// How long the cluster warms waiting for its endpoints (`eds_config`'s
    /// `initial_fetch_timeout`); `None`: until they arrive.
    pub initial_fetch_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: HostAddress,
    pub weight: u32,
    /// `health_status` as EDS (or the static assignment) reports it.
    pub health: EdsHealth,
    /// The priority of its `LocalityLbEndpoints` (0 is the highest).
    pub priority: u32,
    pub locality: Arc<Locality>,
    /// The endpoint's `health_check_config`.
    pub check: EndpointCheck,
}

/// How active health checks treat one endpoint (`health_check_config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EndpointCheck {
    /// Checks go to this port instead of the endpoint's.
    pub port: Option<u16>,
    /// The `host` header (`:authority`) of checks when the checker names none.
    pub hostname: Option<Arc<str>>,
    /// `disable_active_health_check`: the endpoint is not checked (and counts healthy).
    pub disabled: bool,
}

/// Where endpoints run, and the locality's `load_balancing_weight` (0: unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
    pub weight: u32,
}

/// An endpoint's reported health: UNKNOWN and HEALTHY are healthy; UNHEALTHY, DRAINING
/// and TIMEOUT leave the healthy set; DEGRADED is used only when healthy hosts run short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EdsHealth {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

/// A `ClusterLoadAssignment`: its endpoints and the policy's overprovisioning factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAssignment {
    pub endpoints: Vec<Endpoint>,
    /// Percent (Envoy's default 140): a priority's health is its healthy share times
    /// this factor, capped at 100%.
    pub overprovisioning_factor: u32,
}

impl Default for LoadAssignment {
    fn default() -> Self {
        LoadAssignment {
            endpoints: Vec::new(),
            overprovisioning_factor: DEFAULT_OVERPROVISIONING,
        }
    }
}

pub const DEFAULT_OVERPROVISIONING: u32 = 140;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Same as the downstream request (`use_downstream_protocol_config`).
    Downstream,
}

impl TryFrom<&pb::Cluster> for Cluster {
    type Error = ConfigError;
    fn try_from(c: &pb::Cluster) -> Result<Self> {
        use pb::cluster::{ClusterDiscoveryType as D, DiscoveryType as T};
        if c.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        let discovery = match &c.cluster_discovery_type {
            None => Discovery::Static,
            Some(D::Type(t)) => match T::try_from(*t) {
                Ok(T::Static) => Discovery::Static,
                Ok(T::StrictDns) => Discovery::StrictDns,
                Ok(T::LogicalDns) => Discovery::LogicalDns,
                Ok(T::Eds) => Discovery::Eds,
                Ok(T::OriginalDst) => Discovery::OriginalDst,
                Err(_) => {
                    return Err(ConfigError::new(
                        "type",
                        format!("unknown discovery type {t}"),
                    ))
                }
            },
            Some(D::ClusterType(ct)) => {
                return Err(common::unsupported(
                    "cluster_type",
                    &format!("custom cluster type '{}'", ct.name),
                ))
            }
        };
        let lb = super::lb::from_cluster(c, discovery == Discovery::OriginalDst)?;
        let original_dst_port = original_dst_port(c).within("original_dst_lb_config")?;
        let bind = upstream_bind(c).within("upstream_bind_config")?;
        if let Some(ts) = &c.transport_socket {
            if ts.name != "envoy.transport_sockets.raw_buffer" {
                return Err(common::unsupported(
                    "transport_socket",
                    &format!("upstream transport socket '{}' (TLS origination)", ts.name),
                ));
            }
        }
        let health_check = match c.health_checks.as_slice() {
            [] => None,
            [h] => Some(Arc::new(
                HealthCheck::try_from(h).at_index("health_checks", 0)?,
            )),
            _ => {
                return Err(common::unsupported(
                    "health_checks",
                    "more than one health checker per cluster",
                ))
            }
        };
        let outlier = c
            .outlier_detection
            .as_ref()
            .map(Outlier::try_from)
            .transpose()
            .within("outlier_detection")?;
        let assignment = match &c.load_assignment {
            Some(la) => load_assignment(la).within("load_assignment")?,
            None => LoadAssignment::default(),
        };
        let endpoints = assignment.endpoints;
        let eds = match discovery {
            Discovery::Eds => Some(eds_config(c).within("eds_cluster_config")?),
            _ => None,
        };
        if discovery == Discovery::Static {
            if let Some(i) = endpoints
                .iter()
                .position(|e| matches!(e.address, HostAddress::Name { .. }))
            {
                return Err(ConfigError::new(
                    format!("load_assignment.endpoints[0].lb_endpoints[{i}].endpoint.address.socket_address.address"),
                    "STATIC clusters need IP addresses; use STRICT_DNS or LOGICAL_DNS for names",
                ));
            }
        }
        if discovery == Discovery::LogicalDns && endpoints.len() != 1 {
            return Err(ConfigError::new(
                "load_assignment",
                "LOGICAL_DNS clusters need exactly one endpoint",
            ));
        }
        let (protocol, mut max_requests, h2_keepalive) = protocol_options(c)?;
        if let Some(h) = &health_check {
            let grpc = matches!(h.checker, super::health_check::Checker::Grpc(_));
            if grpc && protocol == UpstreamProtocol::Http1 {
                return Err(ConfigError::new(
                    "health_checks[0].grpc_health_check",
                    "gRPC health checking needs a cluster that speaks HTTP/2 (http2_protocol_options)",
                ));
            }
        }
        if let Some(m) = &c.max_requests_per_connection {
            max_requests = m.value;
        }
        Ok(Cluster {
            name: c.name.clone(),
            discovery,
            endpoints,
            overprovisioning_factor: assignment.overprovisioning_factor,
            lb,
            outlier,
            health_check,
            connect_timeout: common::duration_or(
                c.connect_timeout.as_ref(),
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            protocol,
            max_requests_per_connection: max_requests,
            dns_refresh_rate: common::duration_or(
                c.dns_refresh_rate.as_ref(),
                "dns_refresh_rate",
                DEFAULT_DNS_REFRESH,
            )?,
            dns_family: dns_family(c.dns_lookup_family),
            per_connection_buffer_limit_bytes: common::u32_or(
                c.per_connection_buffer_limit_bytes.as_ref(),
                1024 * 1024,
            ),
            eds,
            h2_keepalive,
            bind,
            original_dst_port,
            breakers: c
                .circuit_breakers
                .as_ref()
                .map(CircuitBreakers::try_from)
                .transpose()
                .within("circuit_breakers")?
                .unwrap_or_default(),
            ignore_health_on_host_removal: c.ignore_health_on_host_removal,
        })
    }
}

fn original_dst_port(c: &pb::Cluster) -> Result<Option<u16>> {
    let Some(pb::cluster::LbConfig::OriginalDstLbConfig(o)) = &c.lb_config else {
        return Ok(None);
    };
    if o.use_http_header {
        return Err(common::unsupported(
            "use_http_header",
            "choosing the original destination by HTTP header",
        ));
    }
    common::nonzero_port(
        o.upstream_port_override.as_ref().map(|p| p.value),
        "upstream_port_override",
    )
}

fn upstream_bind(c: &pb::Cluster) -> Result<Option<UpstreamBind>> {
    let Some(b) = &c.upstream_bind_config else {
        return Ok(None);
    };
    if !b.additional_source_addresses.is_empty() || !b.extra_source_addresses.is_empty() {
        return Err(common::unsupported(
            "extra_source_addresses",
            "more than one upstream source address",
        ));
    }
    let addr =
        b.source_address
            .as_ref()
            .map(|sa| envoy_types::pb::envoy::config::core::v3::Address {
                address: Some(
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                        sa.clone(),
                    ),
                ),
            });
    let source = match common::bind_address(addr.as_ref()).within("source_address")? {
        common::BindAddress::Tcp(sa) => sa,
        common::BindAddress::Unix(_) => {
            return Err(ConfigError::new(
                "source_address",
                "must be an IP socket address",
            ))
        }
    };
    Ok(Some(UpstreamBind {
        source,
        freebind: b.freebind.as_ref().is_some_and(|f| f.value),
    }))
}

fn endpoint_check(
    c: Option<&envoy_types::pb::envoy::config::endpoint::v3::endpoint::HealthCheckConfig>,
) -> Result<EndpointCheck> {
    let Some(c) = c else {
        return Ok(EndpointCheck::default());
    };
    if c.address.is_some() {
        return Err(common::unsupported(
            "address",
            "a health-check address other than the endpoint's",
        ));
    }
    Ok(EndpointCheck {
        // 0: the endpoint's own port.
        port: common::nonzero_port(Some(c.port_value).filter(|p| *p != 0), "port_value")?,
        hostname: Some(c.hostname.as_str())
            .filter(|h| !h.is_empty())
            .map(Arc::from),
        disabled: c.disable_active_health_check,
    })
}

type Keepalive = Option<(Duration, Duration)>;

/// `connection_keepalive` of HTTP/2 protocol options: `(interval, timeout)` when an
/// interval is set (without one, Envoy sends no PINGs).
fn keepalive(
    o: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
    field: &str,
) -> Result<Keepalive> {
    let Some(k) = &o.connection_keepalive else {
        return Ok(None);
    };
    let Some(interval) = &k.interval else {
        return Ok(None);
    };
    let interval = common::duration(interval, &format!("{field}.connection_keepalive.interval"))?;
    let timeout = match &k.timeout {
        Some(t) => common::duration(t, &format!("{field}.connection_keepalive.timeout"))?,
        None => {
            return Err(ConfigError::new(
                format!("{field}.connection_keepalive.timeout"),
                "is required",
            ))
        }
    };
    Ok(Some((interval, timeout)))
}

fn eds_config(c: &pb::Cluster) -> Result<Eds> {
    use super::dynamic::{config_source, SourceKind};
    let Some(ec) = &c.eds_cluster_config else {
        return Err(ConfigError::new("", "is required for EDS clusters"));
    };
    let Some(src) = &ec.eds_config else {
        return Err(ConfigError::new("eds_config", "is required"));
    };
    let src = config_source(src).within("eds_config")?;
    if src.kind != SourceKind::Ads {
        return Err(common::unsupported(
            "eds_config",
            "EDS from a source other than ADS",
        ));
    }
    Ok(Eds {
        service_name: if ec.service_name.is_empty() {
            c.name.clone()
        } else {
            ec.service_name.clone()
        },
        initial_fetch_timeout: src.initial_fetch_timeout,
    })
}

fn dns_family(v: i32) -> DnsFamily {
    use pb::cluster::DnsLookupFamily as F;
    match F::try_from(v) {
        Ok(F::V4Only) => DnsFamily::V4Only,
        Ok(F::V6Only) => DnsFamily::V6Only,
        Ok(F::V4Preferred) => DnsFamily::V4Preferred,
        Ok(F::All) => DnsFamily::All,
        _ => DnsFamily::Auto,
    }
}

/// The endpoints of a load assignment (a cluster's inline one, or an EDS resource), with
/// their priority, locality and reported health.
pub fn load_assignment(
    la: &envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
) -> Result<LoadAssignment> {
    use envoy_types::pb::envoy::config::core::v3::HealthStatus as H;
    let mut out = Vec::new();
    for (i, group) in la.endpoints.iter().enumerate() {
        let res = (|| {
            let locality = Arc::new(Locality {
                region: group
                    .locality
                    .as_ref()
                    .map(|l| l.region.clone())
                    .unwrap_or_default(),
                zone: group
                    .locality
                    .as_ref()
                    .map(|l| l.zone.clone())
                    .unwrap_or_default(),
                sub_zone: group
                    .locality
                    .as_ref()
                    .map(|l| l.sub_zone.clone())
                    .unwrap_or_default(),
                weight: common::u32_or(group.load_balancing_weight.as_ref(), 0),
            });
            if group.priority > 128 {
                return Err(ConfigError::new(
                    "priority",
                    format!(
                        "{} is above the highest supported priority 128",
                        group.priority
                    ),
                ));
            }
            for (j, lb) in group.lb_endpoints.iter().enumerate() {
                let ep = (|| {
                    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
                    let endpoint = match &lb.host_identifier {
                        Some(HostIdentifier::Endpoint(e)) => e,
                        _ => return Err(ConfigError::new("endpoint", "is required")),
                    };
                    let address = common::host_address(endpoint.address.as_ref())
                        .within("endpoint.address")?;
                    let weight = common::u32_or(lb.load_balancing_weight.as_ref(), 1);
                    if weight == 0 {
                        return Err(ConfigError::new(
                            "load_balancing_weight",
                            "must be at least 1",
                        ));
                    }
                    let health = match H::try_from(lb.health_status) {
                        Ok(H::Unhealthy | H::Draining | H::Timeout) => EdsHealth::Unhealthy,
                        Ok(H::Degraded) => EdsHealth::Degraded,
                        _ => EdsHealth::Healthy,
                    };
                    Ok(Endpoint {
                        address,
                        weight,
                        health,
                        priority: group.priority,
                        locality: locality.clone(),
                        check: endpoint_check(endpoint.health_check_config.as_ref())
                            .within("endpoint.health_check_config")?,
                    })
                })();
                out.push(ep.at_index("lb_endpoints", j)?);
            }
            Ok(())
        })();
        res.at_index("endpoints", i)?;
    }
    let mut overprovisioning_factor = DEFAULT_OVERPROVISIONING;
    if let Some(policy) = &la.policy {
        if let Some(f) = &policy.overprovisioning_factor {
            if f.value == 0 {
                return Err(ConfigError::new(
                    "policy.overprovisioning_factor",
                    "must be greater than zero",
                ));
            }
            overprovisioning_factor = f.value;
        }
        if policy.weighted_priority_health {
            return Err(common::unsupported(
                "policy.weighted_priority_health",
                "weighted priority health",
            ));
        }
        if !policy.drop_overloads.is_empty() {
            return Err(common::unsupported(
                "policy.drop_overloads",
                "drop overloads",
            ));
        }
    }
    Ok(LoadAssignment {
        endpoints: out,
        overprovisioning_factor,
    })
}

/// Upstream HTTP protocol and `max_requests_per_connection` from the cluster's
/// `typed_extension_protocol_options` (or the deprecated cluster-level fields).
fn protocol_options(c: &pb::Cluster) -> Result<(UpstreamProtocol, u32, Keepalive)> {
    use upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    use upstream_http::http_protocol_options::UpstreamProtocolOptions as O;
    let mut protocol = if c.http2_protocol_options.is_some() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    let mut h2_keepalive = match &c.http2_protocol_options {
        Some(o) => keepalive(o, "http2_protocol_options")?,
        None => None,
    };
    let mut max_requests = c
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.max_requests_per_connection.as_ref())
        .map_or(0, |v| v.value);
    for (key, any) in &c.typed_extension_protocol_options {
        let field = format!("typed_extension_protocol_options[\"{key}\"]");
        let resolved = common::resolve_any(any).within(&field)?;
        if resolved.name != HTTP_PROTOCOL_OPTIONS {
            return Err(common::unsupported(
                &field,
                &format!("protocol options type '{}'", resolved.name),
            ));
        }
        let opts: upstream_http::HttpProtocolOptions = resolved.decode().within(&field)?;
        protocol = match &opts.upstream_protocol_options {
            Some(O::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(P::Http2ProtocolOptions(o)) => {
                    h2_keepalive = keepalive(
                        o,
                        &format!("{field}.explicit_http_config.http2_protocol_options"),
                    )?;
                    UpstreamProtocol::Http2
                }
                Some(P::HttpProtocolOptions(_)) | None => UpstreamProtocol::Http1,
                Some(P::Http3ProtocolOptions(_)) => {
                    return Err(common::unsupported(
                        &format!("{field}.explicit_http_config"),
                        "HTTP/3 upstreams",
                    ))
                }
            },
            Some(O::UseDownstreamProtocolConfig(_)) => UpstreamProtocol::Downstream,
            // ALPN-based selection needs TLS; over plaintext Envoy's auto config uses HTTP/1.1.
            Some(O::AutoConfig(_)) => UpstreamProtocol::Http1,
            None => protocol,
        };
        if let Some(m) = opts
            .common_http_protocol_options
            .as_ref()
            .and_then(|o| o.max_requests_per_connection.as_ref())
        {
            max_requests = m.value;
        }
    }
    Ok((protocol, max_requests, h2_keepalive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{decode, parse_text, UnknownFields};

    fn convert(yaml: &str) -> Result<Cluster> {
        let v = parse_text(yaml, "test").expect("yaml");
        let (c, _): (pb::Cluster, _) =
            decode(v, "envoy.config.cluster.v3.Cluster", UnknownFields::Reject).expect("decodes");
        Cluster::try_from(&c)
    }

    const H2: &str = "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: ";

    #[test]
    fn health_checks_are_checked_against_the_cluster() {
        const HC: &str = "{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1";
        let ep = "load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 80}}, health_check_config: {port_value: 8081, hostname: hc.local}}}]}]}";
        let c = convert(&format!(
            "name: c\nhealth_checks: [{HC}, tcp_health_check: {{}}}}]\n{ep}"
        ))
        .expect("valid");
        assert!(c.health_check.is_some());
        assert_eq!(c.endpoints[0].check.port, Some(8081));
        assert_eq!(c.endpoints[0].check.hostname.as_deref(), Some("hc.local"));
        let err = convert(&format!(
            "name: c\nhealth_checks: [{HC}, grpc_health_check: {{}}}}]"
        ))
        .expect_err("gRPC checks need HTTP/2");
        assert!(err.to_string().contains("grpc_health_check"), "{err}");
        let ok = convert(&format!(
            "name: c\nhealth_checks: [{HC}, grpc_health_check: {{}}}}]\n{H2}{{}}}}}}}}"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let err = convert(&format!(
            "name: c\nhealth_checks: [{HC}, tcp_health_check: {{}}}}, {HC}, tcp_health_check: {{}}}}]"
        ))
        .expect_err("two checkers");
        assert!(err.to_string().contains("health_checks"), "{err}");
        let err = convert(&format!("name: c\nhealth_checks: [{HC}}}]")).expect_err("no checker");
        assert!(
            err.to_string().contains("health_checks[0].health_checker"),
            "{err}"
        );
    }

    #[test]
    fn eds_clusters_name_their_service_and_fetch_timeout() {
        let c = convert("name: web\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}, initial_fetch_timeout: 2s}}")
            .expect("valid");
        assert_eq!(c.discovery, Discovery::Eds);
        let eds = c.eds.expect("eds");
        assert_eq!(eds.service_name, "web");
        assert_eq!(eds.initial_fetch_timeout, Some(Duration::from_secs(2)));
        let named = convert(
            "name: web\ntype: EDS\neds_cluster_config: {service_name: svc, eds_config: {ads: {}}}",
        )
        .expect("valid");
        assert_eq!(named.eds.expect("eds").service_name, "svc");
        let e = convert("name: web\ntype: EDS").expect_err("no eds config");
        assert_eq!(
            e.to_string(),
            "eds_cluster_config: is required for EDS clusters"
        );
        let e = convert("name: web\ntype: EDS\neds_cluster_config: {eds_config: {path_config_source: {path: /x}}}")
            .expect_err("file EDS");
        assert!(
            e.to_string()
                .starts_with("eds_cluster_config.eds_config: EDS from a source other than ADS"),
            "{e}"
        );
    }

    #[test]
    fn http2_keepalive_is_read_from_the_protocol_options() {
        let c = convert(&format!(
            "name: xds\n{H2}{{connection_keepalive: {{interval: 30s, timeout: 5s}}}}}}}}}}"
        ))
        .expect("valid");
        assert_eq!(
            c.h2_keepalive,
            Some((Duration::from_secs(30), Duration::from_secs(5)))
        );
        assert_eq!(c.protocol, UpstreamProtocol::Http2);
        let e = convert(&format!(
            "name: xds\n{H2}{{connection_keepalive: {{interval: 30s}}}}}}}}}}"
        ))
        .expect_err("no timeout");
        assert!(
            e.to_string()
                .ends_with("connection_keepalive.timeout: is required"),
            "{e}"
        );
    }
}
