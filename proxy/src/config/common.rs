//! Conversions shared by every resource: addresses, durations, string and header matchers,
//! header mutations, and `Any` unpacking (including Istio's `TypedStruct` wrapper).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf;
use http::header::{HeaderName, HeaderValue};
use prost_reflect::DynamicMessage;
use regex::Regex;

use super::error::{ConfigError, Result, Within};
use super::load;

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

/// Compiles an RE2-syntax regex. The whole value must match (Envoy's `safe_regex`
/// semantics), so the pattern is anchored.
pub fn regex(m: &matcher::RegexMatcher, field: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{})$", m.regex))
        .map_err(|e| ConfigError::new(field, format!("invalid regex '{}': {e}", m.regex)))
}

/// An unanchored regex, for rewrites that substitute every match.
pub fn regex_unanchored(m: &matcher::RegexMatcher, field: &str) -> Result<Regex> {
    Regex::new(&m.regex)
        .map_err(|e| ConfigError::new(field, format!("invalid regex '{}': {e}", m.regex)))
}

/// `envoy.type.matcher.v3.StringMatcher`, compiled.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct StringMatcher {
    pub pattern: StringMatch,
    pub ignore_case: bool,
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        if self.ignore_case {
            let v = value.to_ascii_lowercase();
            match &self.pattern {
                StringMatch::Exact(s) => v == *s,
                StringMatch::Prefix(s) => v.starts_with(s.as_str()),
                StringMatch::Suffix(s) => v.ends_with(s.as_str()),
                StringMatch::Contains(s) => v.contains(s.as_str()),
                StringMatch::Regex(r) => r.is_match(value),
            }
        } else {
            match &self.pattern {
                StringMatch::Exact(s) => value == s,
                StringMatch::Prefix(s) => value.starts_with(s.as_str()),
                StringMatch::Suffix(s) => value.ends_with(s.as_str()),
                StringMatch::Contains(s) => value.contains(s.as_str()),
                StringMatch::Regex(r) => r.is_match(value),
            }
        }
    }
}

impl TryFrom<&matcher::StringMatcher> for StringMatcher {
    type Error = ConfigError;
    fn try_from(m: &matcher::StringMatcher) -> Result<Self> {
        use matcher::string_matcher::MatchPattern as P;
        let fold = |s: &str| {
            if m.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let pattern = match &m.match_pattern {
            Some(P::Exact(s)) => StringMatch::Exact(fold(s)),
            Some(P::Prefix(s)) => StringMatch::Prefix(fold(s)),
            Some(P::Suffix(s)) => StringMatch::Suffix(fold(s)),
            Some(P::Contains(s)) => StringMatch::Contains(fold(s)),
            Some(P::SafeRegex(r)) => {
                if m.ignore_case {
                    return Err(ConfigError::new(
                        "ignore_case",
                        "cannot be used with safe_regex",
                    ));
                }
                StringMatch::Regex(regex(r, "safe_regex")?)
            }
            Some(P::Custom(_)) => {
                return Err(ConfigError::new(
                    "custom",
                    "custom string matchers are not supported",
                ))
            }
            None => return Err(ConfigError::new("", "a match pattern is required")),
        };
        Ok(StringMatcher {
            pattern,
            ignore_case: m.ignore_case,
        })
    }
}

/// How an added header combines with an existing one (`HeaderValueOption.append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

/// Header additions and removals at one level (route, virtual host or route config).
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    pub add: Vec<(HeaderName, HeaderValue, AppendAction)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, action) in &self.add {
            match action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(name.clone(), value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(name.clone(), value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }

    pub fn build(
        add: &[core::HeaderValueOption],
        remove: &[String],
        add_field: &str,
        remove_field: &str,
    ) -> Result<Self> {
        let mut out = HeaderMutations::default();
        for (i, opt) in add.iter().enumerate() {
            out.add
                .push(header_value_option(opt).at_index(add_field, i)?);
        }
        for (i, name) in remove.iter().enumerate() {
            let n = header_name(name).at_index(remove_field, i)?;
            out.remove.push(n);
        }
        Ok(out)
    }
}

pub fn header_name(name: &str) -> Result<HeaderName> {
    if name.starts_with(':') {
        return Err(ConfigError::new(
            "",
            format!("pseudo-header '{name}' cannot be mutated"),
        ));
    }
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::new("", format!("'{name}' is not a valid header name")))
}

fn header_value_option(
    opt: &core::HeaderValueOption,
) -> Result<(HeaderName, HeaderValue, AppendAction)> {
    use core::header_value_option::HeaderAppendAction as A;
    let h = opt
        .header
        .as_ref()
        .ok_or_else(|| ConfigError::new("header", "is required"))?;
    let name = header_name(&h.key).within("header.key")?;
    let raw = if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value[..]
    };
    if raw
        .windows(2)
        .any(|w| w[0] == b'%' && w[1].is_ascii_uppercase())
    {
        return Err(ConfigError::new(
            "header.value",
            "command operators (%...%) in header values are not supported yet",
        ));
    }
    let value = HeaderValue::from_bytes(raw)
        .map_err(|_| ConfigError::new("header.value", "not a valid header value"))?;
    let action = match &opt.append {
        // The deprecated `append` field wins when set (true: append, false: overwrite).
        Some(b) if b.value => AppendAction::AppendIfExistsOrAdd,
        Some(_) => AppendAction::OverwriteIfExistsOrAdd,
        None => match A::try_from(opt.append_action) {
            Ok(A::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(A::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(A::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(A::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => return Err(ConfigError::new("append_action", "unknown value")),
        },
    };
    Ok((name, value, action))
}

pub const TYPED_STRUCT_URLS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// The message name in a type URL (`type.googleapis.com/a.b.C` -> `a.b.C`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Resolves an `Any`, unwrapping `TypedStruct`, into the type name it carries and its
/// binary value, so callers can dispatch on the name and decode the concrete message.
/// Envoy types outside Remora's pool come back by name with no bytes: callers that do
/// not support them say so by name.
pub fn resolve_any(any: &protobuf::Any) -> Result<(String, Vec<u8>)> {
    let name = type_name(&any.type_url);
    if name == load::UNSUPPORTED {
        let msg = decode_dynamic_bytes(name, &any.value)?;
        let url = msg
            .get_field_by_name("type_url")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        return Ok((type_name(&url).to_string(), Vec::new()));
    }
    if !TYPED_STRUCT_URLS.contains(&any.type_url.as_str()) {
        return Ok((name.to_string(), any.value.clone()));
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
            return Ok((inner, Vec::new()));
        }
        return Err(ConfigError::new(
            "type_url",
            format!("unknown type '{inner}' in TypedStruct"),
        ));
    };
    let dynamic = load::decode_dynamic(value, &inner_desc).within("value")?;
    Ok((inner, prost::Message::encode_to_vec(&dynamic)))
}

fn decode_dynamic_bytes(name: &str, bytes: &[u8]) -> Result<DynamicMessage> {
    let desc = load::pool()
        .get_message_by_name(name)
        .ok_or_else(|| ConfigError::new("", format!("{name} descriptor missing")))?;
    DynamicMessage::decode(desc, bytes)
        .map_err(|e| ConfigError::new("", format!("invalid {name}: {e}")))
}

/// Decodes a concrete message from the bytes of a resolved `Any`.
pub fn decode_as<M: prost::Message + Default>(bytes: &[u8], type_name: &str) -> Result<M> {
    M::decode(bytes).map_err(|e| ConfigError::new("", format!("invalid {type_name}: {e}")))
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

    fn sm(pattern: matcher::string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher::try_from(&matcher::StringMatcher {
            ignore_case,
            match_pattern: Some(pattern),
        })
        .unwrap()
    }

    #[test]
    fn string_matchers() {
        use matcher::string_matcher::MatchPattern as P;
        assert!(sm(P::Exact("Ab".into()), true).matches("aB"));
        assert!(!sm(P::Exact("Ab".into()), false).matches("aB"));
        assert!(sm(P::Prefix("/a".into()), false).matches("/abc"));
        assert!(sm(P::Suffix(".js".into()), false).matches("x.js"));
        assert!(sm(P::Contains("mid".into()), false).matches("amidst"));
        let re = P::SafeRegex(matcher::RegexMatcher {
            regex: "v[0-9]+".into(),
            ..Default::default()
        });
        assert!(sm(re.clone(), false).matches("v12"));
        assert!(
            !sm(re, false).matches("xv12"),
            "safe_regex matches the whole value"
        );
    }

    #[test]
    fn bad_regex_names_field() {
        let m = matcher::StringMatcher {
            ignore_case: false,
            match_pattern: Some(matcher::string_matcher::MatchPattern::SafeRegex(
                matcher::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                },
            )),
        };
        let e = StringMatcher::try_from(&m).unwrap_err();
        assert_eq!(e.path, "safe_regex");
    }

    #[test]
    fn header_mutations_follow_append_action() {
        let opt = |k: &str, v: &str, a: i32| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            append_action: a,
            ..Default::default()
        };
        let m = HeaderMutations::build(
            &[
                opt("x-a", "1", 0),
                opt("x-b", "2", 1),
                opt("x-c", "3", 2),
                opt("x-d", "4", 3),
            ],
            &["x-gone".into()],
            "add",
            "remove",
        )
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-a", "0".parse().unwrap());
        h.insert("x-b", "0".parse().unwrap());
        h.insert("x-c", "0".parse().unwrap());
        h.insert("x-gone", "0".parse().unwrap());
        m.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-b"], "0");
        assert_eq!(h["x-c"], "3");
        assert!(!h.contains_key("x-d"));
        assert!(!h.contains_key("x-gone"));
    }
}
