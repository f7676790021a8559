//! `HttpConnectionManager` -> [`HttpManager`]: codec, route table, filters, timeouts,
//! header handling and limits.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault as FaultProto;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as pb;

use super::common::{self, resolve_any};
use super::error::{ConfigError, Result, Within};
use super::route::RouteTable;

pub const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";

#[derive(Debug)]
pub struct HttpManager {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: RouteSpec,
    pub server_name: http::HeaderValue,
    pub server_header: ServerHeader,
    pub use_remote_address: bool,
    /// Remote addresses treated as internal (`internal_address_config`); none by default,
    /// as in Envoy 1.40.
    pub internal_cidrs: Vec<common::Cidr>,
    pub internal_unix_sockets: bool,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    /// `access_log`.
    pub access_logs: Vec<super::access_log::AccessLogConfig>,
    /// `common_http_protocol_options.max_stream_duration` (`None`: none, or 0).
    pub max_stream_duration: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_headers_count: usize,
    pub max_request_headers_kb: u32,
    /// Upgrade types allowed on this connection manager (lowercased), e.g. `websocket`.
    pub upgrades: Vec<String>,
    pub normalize_path: bool,
    pub merge_slashes: bool,
    pub strip_any_host_port: bool,
    pub strip_matching_host_port: bool,
    pub drain_timeout: Duration,
    /// The HTTP filters before the router, in order.
    pub filters: Vec<HttpFilter>,
}

/// An HTTP filter before the router: its name (the key of per-route overrides) and what
/// it does.
#[derive(Debug, Clone)]
pub struct HttpFilter {
    pub name: String,
    pub kind: FilterKind,
    /// `disabled`: off unless a route's `typed_per_filter_config` turns it on.
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub enum FilterKind {
    Fault(Arc<super::fault::Fault>),
}

/// Where a connection manager's routes come from.
#[derive(Debug, Clone)]
pub enum RouteSpec {
    /// `route_config`: inline.
    Static(Arc<RouteTable>),
    /// `rds`: the `RouteConfiguration` named `name`, over ADS; the listener warms until it
    /// arrives or `initial_fetch_timeout` passes.
    Rds {
        name: String,
        initial_fetch_timeout: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

impl TryFrom<&pb::HttpConnectionManager> for HttpManager {
    type Error = ConfigError;
    fn try_from(h: &pb::HttpConnectionManager) -> Result<Self> {
        use pb::http_connection_manager::{
            CodecType, RouteSpecifier, ServerHeaderTransformation as S,
        };
        if h.stat_prefix.is_empty() {
            return Err(ConfigError::new("stat_prefix", "must not be empty"));
        }
        let codec = match CodecType::try_from(h.codec_type) {
            Ok(CodecType::Auto) => Codec::Auto,
            Ok(CodecType::Http1) => Codec::Http1,
            Ok(CodecType::Http2) => Codec::Http2,
            Ok(CodecType::Http3) => return Err(common::unsupported("codec_type", "HTTP/3")),
            Err(_) => return Err(ConfigError::new("codec_type", "unknown value")),
        };
        let routes = match &h.route_specifier {
            Some(RouteSpecifier::RouteConfig(rc)) => {
                RouteSpec::Static(Arc::new(RouteTable::try_from(rc).within("route_config")?))
            }
            Some(RouteSpecifier::Rds(rds)) => rds_spec(rds).within("rds")?,
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                return Err(common::unsupported("scoped_routes", "scoped routes"))
            }
            None => {
                return Err(ConfigError::new(
                    "route_specifier",
                    "route_config is required",
                ))
            }
        };
        let filters = http_filters(&h.http_filters).within("http_filters")?;
        if h.local_reply_config.is_some() {
            return Err(common::unsupported(
                "local_reply_config",
                "local reply customisation",
            ));
        }
        let common_opts = h.common_http_protocol_options.as_ref();
        let server_header = match S::try_from(h.server_header_transformation) {
            Ok(S::Overwrite) => ServerHeader::Overwrite,
            Ok(S::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
            Ok(S::PassThrough) => ServerHeader::PassThrough,
            Err(_) => {
                return Err(ConfigError::new(
                    "server_header_transformation",
                    "unknown value",
                ))
            }
        };
        let server_name = if h.server_name.is_empty() {
            "envoy"
        } else {
            &h.server_name
        };
        let max_request_headers_kb = common::u32_or(h.max_request_headers_kb.as_ref(), 60);
        if !(1..=8192).contains(&max_request_headers_kb) {
            return Err(ConfigError::new(
                "max_request_headers_kb",
                "must be in [1, 8192]",
            ));
        }
        let mut upgrades = Vec::new();
        for (i, u) in h.upgrade_configs.iter().enumerate() {
            if !u.filters.is_empty() {
                return Err(common::unsupported(
                    &format!("upgrade_configs[{i}].filters"),
                    "per-upgrade filter chains",
                ));
            }
            if u.enabled.as_ref().is_none_or(|b| b.value) {
                upgrades.push(u.upgrade_type.to_ascii_lowercase());
            }
        }
        Ok(HttpManager {
            filters,
            stat_prefix: h.stat_prefix.clone(),
            codec,
            routes,
            server_name: http::HeaderValue::from_str(server_name)
                .map_err(|_| ConfigError::new("server_name", "not a valid header value"))?,
            server_header,
            use_remote_address: h.use_remote_address.as_ref().is_some_and(|b| b.value),
            internal_cidrs: match &h.internal_address_config {
                Some(c) => common::cidrs(&c.cidr_ranges, "internal_address_config.cidr_ranges")?,
                None => Vec::new(),
            },
            internal_unix_sockets: h
                .internal_address_config
                .as_ref()
                .is_some_and(|c| c.unix_sockets),
            skip_xff_append: h.skip_xff_append,
            generate_request_id: h.generate_request_id.as_ref().is_none_or(|b| b.value),
            preserve_external_request_id: h.preserve_external_request_id,
            always_set_request_id_in_response: h.always_set_request_id_in_response,
            stream_idle_timeout: common::timeout_or(
                h.stream_idle_timeout.as_ref(),
                "stream_idle_timeout",
                Some(Duration::from_secs(300)),
            )?,
            request_timeout: common::timeout_or(
                h.request_timeout.as_ref(),
                "request_timeout",
                None,
            )?,
            access_logs: super::access_log::access_logs(&h.access_log).within("access_log")?,
            max_stream_duration: common::timeout_or(
                common_opts.and_then(|o| o.max_stream_duration.as_ref()),
                "common_http_protocol_options.max_stream_duration",
                None,
            )?,
            request_headers_timeout: common::timeout_or(
                h.request_headers_timeout.as_ref(),
                "request_headers_timeout",
                None,
            )?,
            idle_timeout: common::timeout_or(
                common_opts.and_then(|o| o.idle_timeout.as_ref()),
                "common_http_protocol_options.idle_timeout",
                Some(Duration::from_secs(3600)),
            )?,
            max_headers_count: common::u32_or(
                common_opts.and_then(|o| o.max_headers_count.as_ref()),
                100,
            ) as usize,
            max_request_headers_kb,
            upgrades,
            normalize_path: h.normalize_path.as_ref().is_some_and(|b| b.value),
            merge_slashes: h.merge_slashes,
            strip_any_host_port: matches!(
                h.strip_port_mode,
                Some(pb::http_connection_manager::StripPortMode::StripAnyHostPort(true))
            ),
            strip_matching_host_port: h.strip_matching_host_port,
            drain_timeout: common::duration_or(
                h.drain_timeout.as_ref(),
                "drain_timeout",
                Duration::from_secs(5),
            )?,
        })
    }
}

fn rds_spec(rds: &pb::Rds) -> Result<RouteSpec> {
    use super::dynamic::{config_source, SourceKind};
    if rds.route_config_name.is_empty() {
        return Err(ConfigError::new("route_config_name", "must not be empty"));
    }
    let Some(src) = &rds.config_source else {
        return Err(ConfigError::new("config_source", "is required"));
    };
    let src = config_source(src).within("config_source")?;
    if src.kind != SourceKind::Ads {
        return Err(common::unsupported(
            "config_source",
            "RDS from a source other than ADS",
        ));
    }
    Ok(RouteSpec::Rds {
        name: rds.route_config_name.clone(),
        initial_fetch_timeout: src.initial_fetch_timeout,
    })
}

/// The filter chain: it must end in the router; the fault filter is built; others arrive
/// in later work and are refused by name unless optional or disabled.
fn http_filters(filters: &[pb::HttpFilter]) -> Result<Vec<HttpFilter>> {
    let mut out = Vec::new();
    let Some(last) = filters.len().checked_sub(1) else {
        return Err(ConfigError::new(
            "",
            "must end with envoy.filters.http.router",
        ));
    };
    for (i, f) in filters.iter().enumerate() {
        let resolved = match &f.config_type {
            Some(pb::http_filter::ConfigType::TypedConfig(any)) => {
                Some(resolve_any(any).at_index("", i)?)
            }
            Some(pb::http_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(common::unsupported(
                    &format!("[{i}].config_discovery"),
                    "ECDS (filter config discovery)",
                ))
            }
            None => None,
        };
        let type_name = resolved.as_ref().map(|r| r.name.as_str());
        let is_router = type_name == Some(ROUTER)
            || (type_name.is_none() && f.name == "envoy.filters.http.router");
        match (is_router, i == last) {
            (true, true) => {}
            (true, false) => {
                return Err(ConfigError::new(
                    format!("[{i}]"),
                    "the router must be the last HTTP filter",
                ))
            }
            (false, true) => {
                return Err(ConfigError::new(
                    format!("[{i}]"),
                    "the last HTTP filter must be envoy.filters.http.router",
                ))
            }
            (false, false) => match &resolved {
                Some(r) if r.name == super::fault::TYPE => {
                    let proto: FaultProto = r.decode().at_index("", i)?;
                    let fault = super::fault::Fault::try_from(&proto)
                        .within(&format!("[{i}].typed_config"))?;
                    out.push(HttpFilter {
                        name: f.name.clone(),
                        kind: FilterKind::Fault(Arc::new(fault)),
                        disabled: f.disabled,
                    });
                }
                _ if f.disabled || f.is_optional => {}
                _ => {
                    let what = type_name.unwrap_or(&f.name);
                    return Err(common::unsupported(
                        &format!("[{i}]"),
                        &format!("HTTP filter '{}' ({what})", f.name),
                    ));
                }
            },
        }
    }
    Ok(out)
}
