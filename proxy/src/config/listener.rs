//! `Listener` -> [`Listener`]: bind address, filter chains with their match criteria, and
//! the terminal network filter of each chain.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy as TcpProxyPb;

use super::common::{self, cidrs, BindAddress};
pub use super::common::{canonical, Cidr};
use super::error::{ConfigError, Result, Within};
use super::hcm::HttpManager;
use super::listener_filter::ListenerFilters;
use super::tcp_proxy::TcpProxy;

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub address: BindAddress,
    pub stat_prefix: String,
    pub filter_chains: Vec<FilterChain>,
    pub default_filter_chain: Option<FilterChain>,
    pub per_connection_buffer_limit_bytes: u32,
    pub bind_to_port: bool,
    pub reuse_port: bool,
    pub direction: Direction,
    /// Hand connections to the listener bound to their original destination.
    pub use_original_dst: bool,
    /// `IP_TRANSPARENT`: accepts connections TPROXY sends to any address.
    pub transparent: bool,
    pub listener_filters: ListenerFilters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Unspecified,
    Inbound,
    Outbound,
}

#[derive(Debug)]
pub struct FilterChain {
    pub name: String,
    pub criteria: ChainMatch,
    pub filter: NetworkFilter,
}

#[derive(Debug, Clone)]
pub enum NetworkFilter {
    Http(Arc<HttpManager>),
    Tcp(Arc<TcpProxy>),
}

/// `FilterChainMatch` with its CIDRs parsed.
#[derive(Debug, Default, Clone)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub direct_source_prefix_ranges: Vec<Cidr>,
    pub source_type: SourceType,
    pub source_prefix_ranges: Vec<Cidr>,
    pub source_ports: Vec<u16>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    #[default]
    Any,
    SameIpOrLoopback,
    External,
}

impl TryFrom<&pb::FilterChainMatch> for ChainMatch {
    type Error = ConfigError;
    fn try_from(m: &pb::FilterChainMatch) -> Result<Self> {
        use pb::filter_chain_match::ConnectionSourceType as S;
        let destination_port = super::common::nonzero_port(
            m.destination_port.as_ref().map(|p| p.value),
            "destination_port",
        )?;
        let source_ports = m
            .source_ports
            .iter()
            .map(|p| {
                u16::try_from(*p).map_err(|_| {
                    ConfigError::new("source_ports", format!("{p} is not a valid port"))
                })
            })
            .collect::<Result<_>>()?;
        Ok(ChainMatch {
            destination_port,
            prefix_ranges: cidrs(&m.prefix_ranges, "prefix_ranges")?,
            server_names: m
                .server_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            transport_protocol: (!m.transport_protocol.is_empty())
                .then(|| m.transport_protocol.clone()),
            application_protocols: m.application_protocols.clone(),
            direct_source_prefix_ranges: cidrs(
                &m.direct_source_prefix_ranges,
                "direct_source_prefix_ranges",
            )?,
            source_type: match S::try_from(m.source_type) {
                Ok(S::SameIpOrLoopback) => SourceType::SameIpOrLoopback,
                Ok(S::External) => SourceType::External,
                _ => SourceType::Any,
            },
            source_prefix_ranges: cidrs(&m.source_prefix_ranges, "source_prefix_ranges")?,
            source_ports,
        })
    }
}

impl TryFrom<&pb::FilterChain> for FilterChain {
    type Error = ConfigError;
    fn try_from(fc: &pb::FilterChain) -> Result<Self> {
        if let Some(ts) = &fc.transport_socket {
            if ts.name != "envoy.transport_sockets.raw_buffer" {
                return Err(common::unsupported(
                    "transport_socket",
                    &format!(
                        "downstream transport socket '{}' (TLS termination)",
                        ts.name
                    ),
                ));
            }
        }
        let criteria = fc
            .filter_chain_match
            .as_ref()
            .map(ChainMatch::try_from)
            .transpose()
            .within("filter_chain_match")?
            .unwrap_or_default();
        let filter = network_filters(&fc.filters).within("filters")?;
        Ok(FilterChain {
            name: fc.name.clone(),
            criteria,
            filter,
        })
    }
}

/// A chain holds one terminal filter (HTTP connection manager or TCP proxy); other network
/// filters come in later work and are refused by name.
fn network_filters(filters: &[pb::Filter]) -> Result<NetworkFilter> {
    let Some((last, leading)) = filters.split_last() else {
        return Err(ConfigError::new(
            "",
            "a filter chain needs a terminal filter (http_connection_manager or tcp_proxy)",
        ));
    };
    // Filters before the terminal one (RBAC, rate limits, ...) come in later work.
    if let Some(f) = leading.first() {
        let is_terminal = matches!(&f.config_type, Some(pb::filter::ConfigType::TypedConfig(a))
            if [HCM, TCP_PROXY].contains(&common::type_name(&a.type_url)));
        let reason = if is_terminal {
            "a terminal filter must be the last in its chain".to_string()
        } else {
            format!(
                "network filter '{}' before the terminal filter is not supported yet",
                f.name
            )
        };
        return Err(ConfigError::new("[0]", reason));
    }
    let i = leading.len();
    let field = format!("[{i}].typed_config");
    let resolved = match &last.config_type {
        Some(pb::filter::ConfigType::TypedConfig(any)) => {
            common::resolve_any(any).within(&field)?
        }
        Some(pb::filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(common::unsupported(
                &format!("[{i}].config_discovery"),
                "ECDS for network filters",
            ))
        }
        None => {
            return Err(ConfigError::new(
                field,
                format!("filter '{}' needs a typed_config", last.name),
            ))
        }
    };
    let terminal = match resolved.name.as_str() {
        HCM => {
            let h: HttpConnectionManager = resolved.decode()?;
            NetworkFilter::Http(Arc::new(HttpManager::try_from(&h).within(&field)?))
        }
        TCP_PROXY => {
            let t: TcpProxyPb = resolved.decode()?;
            NetworkFilter::Tcp(Arc::new(TcpProxy::try_from(&t).within(&field)?))
        }
        other => {
            return Err(common::unsupported(
                &format!("[{i}]"),
                &format!("network filter '{}' ({other})", last.name),
            ))
        }
    };
    Ok(terminal)
}

impl TryFrom<&pb::Listener> for Listener {
    type Error = ConfigError;
    fn try_from(l: &pb::Listener) -> Result<Self> {
        use core::TrafficDirection as T;
        let address = common::bind_address(l.address.as_ref()).within("address")?;
        // Envoy names unnamed static listeners itself; the address is unique and readable.
        let name = if l.name.is_empty() {
            address.to_string()
        } else {
            l.name.clone()
        };
        if !l.additional_addresses.is_empty() {
            return Err(common::unsupported(
                "additional_addresses",
                "additional listener addresses",
            ));
        }
        if l.api_listener.is_some() {
            return Err(common::unsupported("api_listener", "API listeners"));
        }
        let listener_filters = ListenerFilters::from_listener(l)?;
        if l.filter_chain_matcher.is_some() {
            return Err(common::unsupported(
                "filter_chain_matcher",
                "the unified filter chain matcher",
            ));
        }
        let mut filter_chains = Vec::with_capacity(l.filter_chains.len());
        for (i, fc) in l.filter_chains.iter().enumerate() {
            filter_chains.push(FilterChain::try_from(fc).at_index("filter_chains", i)?);
        }
        let default_filter_chain = l
            .default_filter_chain
            .as_ref()
            .map(FilterChain::try_from)
            .transpose()
            .within("default_filter_chain")?;
        if filter_chains.is_empty() && default_filter_chain.is_none() {
            return Err(ConfigError::new(
                "filter_chains",
                "at least one filter chain (or default_filter_chain) is required",
            ));
        }
        let stat_prefix = if l.stat_prefix.is_empty() {
            stat_name(&address)
        } else {
            l.stat_prefix.clone()
        };
        Ok(Listener {
            name,
            address,
            stat_prefix,
            filter_chains,
            default_filter_chain,
            per_connection_buffer_limit_bytes: common::u32_or(
                l.per_connection_buffer_limit_bytes.as_ref(),
                1024 * 1024,
            ),
            bind_to_port: l.bind_to_port.as_ref().is_none_or(|b| b.value),
            reuse_port: l.enable_reuse_port.as_ref().is_none_or(|b| b.value),
            direction: match T::try_from(l.traffic_direction) {
                Ok(T::Inbound) => Direction::Inbound,
                Ok(T::Outbound) => Direction::Outbound,
                _ => Direction::Unspecified,
            },
            use_original_dst: l.use_original_dst.as_ref().is_some_and(|b| b.value),
            transparent: l.transparent.as_ref().is_some_and(|b| b.value),
            listener_filters,
        })
    }
}

/// Envoy's listener stat name for an address: `0.0.0.0_10000`, `[::]_80`.
pub fn stat_name(addr: &BindAddress) -> String {
    match addr {
        BindAddress::Tcp(sa) => match sa.ip() {
            IpAddr::V4(ip) => format!("{ip}_{}", sa.port()),
            IpAddr::V6(ip) => format!("[{ip}]_{}", sa.port()),
        },
        BindAddress::Unix(p) => p.display().to_string().replace('/', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            len: 16,
        };
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let all = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        };
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6 = Cidr {
            addr: "fd00::".parse().unwrap(),
            len: 8,
        };
        assert!(v6.contains("fd12::1".parse().unwrap()));
    }
}
