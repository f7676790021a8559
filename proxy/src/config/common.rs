//! Conversions shared by every resource: addresses, durations, string and header matchers,
//! header mutations, and `Any` unpacking (including Istio's `TypedStruct` wrapper).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf;
use prost_reflect::DynamicMessage;

use super::error::{ConfigError, Result, Within};
use super::load;

// Matchers and header mutations have their own modules; they are re-exported here because
// every resource's conversion uses them.
pub use super::headers::{header_name, AppendAction, HeaderMutations};
pub use super::matcher::{regex, regex_unanchored, StringMatch, StringMatcher};

/// Where a listener binds or an endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddress {
    Tcp(SocketAddr),
    /// A Unix domain socket path (`pipe`); Envoy's `@name` abstract form is kept as written.
    Unix(PathBuf),
}

impl std::fmt::Display for BindAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddress::Tcp(a) => write!(f, "{a}"),
            BindAddress::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An address that may still need name resolution (cluster endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddress {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
    Unix(PathBuf),
}

pub fn port_of(sa: &core::SocketAddress) -> Result<u16> {
    match &sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => u16::try_from(*p)
            .map_err(|_| ConfigError::new("port_value", format!("{p} is not a valid port"))),
        Some(core::socket_address::PortSpecifier::NamedPort(_)) => Err(ConfigError::new(
            "named_port",
            "named ports are not supported; use port_value",
        )),
        None => Ok(0),
    }
}

/// A port that must be set when present (`UInt32Value` fields such as `alt_port`):
/// `None` when absent, an error naming `field` when 0 or above 65535.
pub fn nonzero_port(v: Option<u32>, field: &str) -> Result<Option<u16>> {
    v.map(|p| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ConfigError::new(field, format!("{p} is not a valid port")))
    })
    .transpose()
}

fn check_protocol(sa: &core::SocketAddress) -> Result<()> {
    if sa.protocol == core::socket_address::Protocol::Udp as i32 {
        return Err(ConfigError::new(
            "protocol",
            "UDP listeners and endpoints (udp_proxy) are not supported",
        ));
    }
    Ok(())
}

/// A listener's bind address: an IP literal (Envoy does not resolve names here) or a pipe.
pub fn bind_address(addr: Option<&core::Address>) -> Result<BindAddress> {
    match addr.and_then(|a| a.address.as_ref()) {
        Some(core::address::Address::SocketAddress(sa)) => {
            check_protocol(sa).within("socket_address")?;
            let ip: IpAddr = sa.address.parse().map_err(|_| {
                ConfigError::new(
                    "socket_address.address",
                    format!("'{}' is not an IP address", sa.address),
                )
            })?;
            let port = port_of(sa).within("socket_address")?;
            Ok(BindAddress::Tcp(SocketAddr::new(ip, port)))
        }
        Some(core::address::Address::Pipe(p)) => pipe_path(p).map(BindAddress::Unix),
        Some(core::address::Address::EnvoyInternalAddress(_)) => Err(ConfigError::new(
            "envoy_internal_address",
            "internal listeners are not supported",
        )),
        None => Err(ConfigError::new("", "address is required")),
    }
}

fn pipe_path(p: &core::Pipe) -> Result<PathBuf> {
    if p.path.is_empty() {
        return Err(ConfigError::new("pipe.path", "must not be empty"));
    }
    Ok(PathBuf::from(&p.path))
}

/// An upstream endpoint's address: IP literal, DNS name (for DNS clusters) or pipe.
pub fn host_address(addr: Option<&core::Address>) -> Result<HostAddress> {
    match addr.and_then(|a| a.address.as_ref()) {
        Some(core::address::Address::SocketAddress(sa)) => {
            check_protocol(sa).within("socket_address")?;
            let port = port_of(sa).within("socket_address")?;
            if sa.address.is_empty() {
                return Err(ConfigError::new(
                    "socket_address.address",
                    "must not be empty",
                ));
            }
            Ok(match sa.address.parse::<IpAddr>() {
                Ok(ip) => HostAddress::Ip(SocketAddr::new(ip, port)),
                Err(_) => HostAddress::Name {
                    host: sa.address.clone(),
                    port,
                },
            })
        }
        Some(core::address::Address::Pipe(p)) => pipe_path(p).map(HostAddress::Unix),
        Some(core::address::Address::EnvoyInternalAddress(_)) => Err(ConfigError::new(
            "envoy_internal_address",
            "internal addresses are not supported",
        )),
        None => Err(ConfigError::new("", "address is required")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses match IPv4 ranges.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn cidrs(ranges: &[core::CidrRange], field: &str) -> Result<Vec<Cidr>> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let addr: IpAddr = r.address_prefix.parse().map_err(|_| {
                ConfigError::new(
                    format!("{field}[{i}].address_prefix"),
                    format!("'{}' is not an IP address", r.address_prefix),
                )
            })?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.as_ref().map_or(0, |v| v.value);
            if len > max {
                return Err(ConfigError::new(
                    format!("{field}[{i}].prefix_len"),
                    format!("{len} exceeds {max}"),
                ));
            }
            Ok(Cidr {
                addr: canonical(addr),
                len: len as u8,
            })
        })
        .collect()
}

/// A protobuf Duration; negative values are rejected.
pub fn duration(d: &protobuf::Duration, field: &str) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ConfigError::new(field, "duration must not be negative"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration with a default; `Some(0)` is returned as zero (callers decide
/// whether zero means "disabled", as it does for most Envoy timeouts).
pub fn duration_or(
    d: Option<&protobuf::Duration>,
    field: &str,
    default: Duration,
) -> Result<Duration> {
    d.map_or(Ok(default), |d| duration(d, field))
}

/// A timeout where zero means "no timeout".
pub fn timeout_or(
    d: Option<&protobuf::Duration>,
    field: &str,
    default: Option<Duration>,
) -> Result<Option<Duration>> {
    match d {
        None => Ok(default),
        Some(d) => duration(d, field).map(|d| (!d.is_zero()).then_some(d)),
    }
}

pub const TYPED_STRUCT_URLS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// The message name in a type URL (`type.googleapis.com/a.b.C` -> `a.b.C`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// An `Any` resolved to the type it carries and, when Remora has it, its binary value.
#[derive(Debug)]
pub struct Resolved {
    pub name: String,
    /// `None`: an Envoy type outside Remora's descriptor pool, read from YAML/JSON, whose
    /// content was not kept (only its name, for an error that names it).
    bytes: Option<Vec<u8>>,
}

impl Resolved {
    /// Decodes the concrete message. A type whose content was not kept is an error
    /// naming it, never a silently empty message.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M> {
        let Some(bytes) = &self.bytes else {
            return Err(unsupported("", &format!("'{}'", self.name)));
        };
        M::decode(bytes.as_slice())
            .map_err(|e| ConfigError::new("", format!("invalid {}: {e}", self.name)))
    }
}

/// Resolves an `Any`, unwrapping `TypedStruct`, into the type name it carries and its
/// binary value, so callers can dispatch on the name and decode the concrete message.
pub fn resolve_any(any: &protobuf::Any) -> Result<Resolved> {
    let name = type_name(&any.type_url);
    if name == load::UNSUPPORTED {
        let msg = decode_dynamic_bytes(name, &any.value)?;
        let url = msg
            .get_field_by_name("type_url")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        return Ok(Resolved {
            name: type_name(&url).to_string(),
            bytes: None,
        });
    }
    if !TYPED_STRUCT_URLS.contains(&any.type_url.as_str()) {
        return Ok(Resolved {
            name: name.to_string(),
            bytes: Some(any.value.clone()),
        });
    }
    let msg = decode_dynamic_bytes(name, &any.value)?;
    let json = serde_json::to_value(&msg)
        .map_err(|e| ConfigError::new("", format!("invalid TypedStruct: {e}")))?;
    let inner_url = json
        .get("typeUrl")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ConfigError::new("type_url", "TypedStruct needs a type_url"))?;
    let inner = type_name(inner_url).to_string();
    let value = json.get("value").cloned().unwrap_or(serde_json::json!({}));
    let Some(inner_desc) = load::pool().get_message_by_name(&inner) else {
        if load::is_envoy_type(&inner) {
            return Ok(Resolved {
                name: inner,
                bytes: None,
            });
        }
        return Err(ConfigError::new(
            "type_url",
            format!("unknown type '{inner}' in TypedStruct"),
        ));
    };
    let dynamic = load::decode_dynamic(value, &inner_desc).within("value")?;
    Ok(Resolved {
        name: inner,
        bytes: Some(prost::Message::encode_to_vec(&dynamic)),
    })
}

fn decode_dynamic_bytes(name: &str, bytes: &[u8]) -> Result<DynamicMessage> {
    let desc = load::pool()
        .get_message_by_name(name)
        .ok_or_else(|| ConfigError::new("", format!("{name} descriptor missing")))?;
    DynamicMessage::decode(desc, bytes)
        .map_err(|e| ConfigError::new("", format!("invalid {name}: {e}")))
}

/// `UInt32Value` with a default.
pub fn u32_or(v: Option<&protobuf::UInt32Value>, default: u32) -> u32 {
    v.map_or(default, |v| v.value)
}

/// Error for a feature that a later issue adds.
pub fn unsupported(field: &str, what: &str) -> ConfigError {
    ConfigError::new(field, format!("{what} is not supported yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_whose_content_was_not_kept_is_an_error_naming_it() {
        let r = Resolved {
            name: "envoy.extensions.filters.http.rbac.v3.RBAC".into(),
            bytes: None,
        };
        let e = r.decode::<protobuf::UInt32Value>().expect_err("no content");
        assert!(
            e.to_string()
                .contains("'envoy.extensions.filters.http.rbac.v3.RBAC'"),
            "{e}"
        );
        let kept = Resolved {
            name: "google.protobuf.UInt32Value".into(),
            bytes: Some(prost::Message::encode_to_vec(&protobuf::UInt32Value {
                value: 7,
            })),
        };
        assert_eq!(
            kept.decode::<protobuf::UInt32Value>().map(|v| v.value).ok(),
            Some(7)
        );
    }
}
