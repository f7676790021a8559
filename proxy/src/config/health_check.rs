//! Cluster `health_checks` (one active health checker: HTTP, TCP or gRPC) with Envoy's
//! defaults for every unset field.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::r#type::v3 as types;
use http::Method;

use super::common;
use super::error::{ConfigError, Result, Within};
use super::headers::HeaderMutations;
use super::matcher::StringMatcher;

/// How often and how strictly hosts are checked.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    /// The first check of a host waits a random time below this (zero: at once).
    pub initial_jitter: Duration,
    /// A random time below this is added to every interval.
    pub interval_jitter: Duration,
    /// A random share (percent) of the interval is added to it.
    pub interval_jitter_percent: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Checks go to this port instead of the host's.
    pub alt_port: Option<u16>,
    pub reuse_connection: bool,
    /// The interval while the cluster has never carried traffic.
    pub no_traffic_interval: Duration,
    /// The same for hosts that are healthy.
    pub no_traffic_healthy_interval: Duration,
    pub unhealthy_interval: Duration,
    /// After a failure that has not yet made a healthy host unhealthy.
    pub unhealthy_edge_interval: Duration,
    /// After a success that has not yet made an unhealthy host healthy.
    pub healthy_edge_interval: Duration,
    pub checker: Checker,
}

#[derive(Debug, Clone)]
pub enum Checker {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Grpc(GrpcCheck),
}

#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// The `host` (`:authority`) value; `None`: the endpoint's health-check hostname,
    /// else the cluster's name.
    pub host: Option<String>,
    pub path: String,
    pub method: Method,
    /// The request body (only with methods that carry one).
    pub send: Option<Bytes>,
    /// Blocks the response body must contain, in order.
    pub receive: Vec<Vec<u8>>,
    /// How much of the response body `receive` is matched against (0: all of it).
    pub response_buffer_size: usize,
    pub headers: HeaderMutations,
    pub expected_statuses: Vec<Range<u16>>,
    pub retriable_statuses: Vec<Range<u16>>,
    pub http2: bool,
    /// Matched against the `x-envoy-upstream-healthchecked-cluster` response header.
    pub service_name_matcher: Option<StringMatcher>,
}

#[derive(Debug, Clone)]
pub struct TcpCheck {
    pub send: Vec<u8>,
    /// Empty: connecting is the check.
    pub receive: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct GrpcCheck {
    pub service_name: String,
    /// `None`: the endpoint's health-check hostname, else the cluster's name.
    pub authority: Option<String>,
    pub metadata: HeaderMutations,
}

/// Envoy's default `response_buffer_size` for HTTP checks.
const DEFAULT_RESPONSE_BUFFER: usize = 1024;

impl TryFrom<&core::HealthCheck> for HealthCheck {
    type Error = ConfigError;
    fn try_from(h: &core::HealthCheck) -> Result<Self> {
        use core::health_check::HealthChecker as H;
        let required = |d: Option<&envoy_types::pb::google::protobuf::Duration>, field: &str| {
            let d = d.ok_or_else(|| ConfigError::new(field, "is required"))?;
            let d = common::duration(d, field)?;
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
            Ok(d)
        };
        let optional = |d: Option<&envoy_types::pb::google::protobuf::Duration>,
                        field: &str,
                        default: Duration|
         -> Result<Duration> {
            let d = common::duration_or(d, field, default)?;
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
            Ok(d)
        };
        let threshold = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>,
                         field: &str| {
            v.map(|v| v.value)
                .ok_or_else(|| ConfigError::new(field, "is required"))
        };
        let timeout = required(h.timeout.as_ref(), "timeout")?;
        let interval = required(h.interval.as_ref(), "interval")?;
        let no_traffic_interval = optional(
            h.no_traffic_interval.as_ref(),
            "no_traffic_interval",
            Duration::from_secs(60),
        )?;
        let unhealthy_interval = optional(
            h.unhealthy_interval.as_ref(),
            "unhealthy_interval",
            interval,
        )?;
        let refused = [
            (
                !h.event_log_path.is_empty(),
                "event_log_path",
                "health-check event logs",
            ),
            (
                !h.event_logger.is_empty(),
                "event_logger",
                "health-check event logs",
            ),
            (
                h.event_service.is_some(),
                "event_service",
                "health-check event logs",
            ),
            (h.tls_options.is_some(), "tls_options", "TLS health checks"),
            (
                h.transport_socket_match_criteria.is_some(),
                "transport_socket_match_criteria",
                "TLS health checks",
            ),
        ];
        if let Some((_, field, what)) = refused.iter().find(|r| r.0) {
            return Err(common::unsupported(field, what));
        }
        let checker = match &h.health_checker {
            Some(H::HttpHealthCheck(c)) => {
                Checker::Http(http_check(c).within("http_health_check")?)
            }
            Some(H::TcpHealthCheck(c)) => Checker::Tcp(tcp_check(c).within("tcp_health_check")?),
            Some(H::GrpcHealthCheck(c)) => {
                Checker::Grpc(grpc_check(c).within("grpc_health_check")?)
            }
            Some(H::CustomHealthCheck(c)) => {
                return Err(common::unsupported(
                    "custom_health_check",
                    &format!("health checker '{}'", c.name),
                ))
            }
            None => {
                return Err(ConfigError::new(
                    "health_checker",
                    "one of http_health_check, tcp_health_check or grpc_health_check is required",
                ))
            }
        };
        Ok(HealthCheck {
            timeout,
            interval,
            initial_jitter: common::duration_or(
                h.initial_jitter.as_ref(),
                "initial_jitter",
                Duration::ZERO,
            )?,
            interval_jitter: common::duration_or(
                h.interval_jitter.as_ref(),
                "interval_jitter",
                Duration::ZERO,
            )?,
            interval_jitter_percent: h.interval_jitter_percent,
            unhealthy_threshold: threshold(h.unhealthy_threshold.as_ref(), "unhealthy_threshold")?,
            healthy_threshold: threshold(h.healthy_threshold.as_ref(), "healthy_threshold")?,
            alt_port: common::nonzero_port(h.alt_port.as_ref().map(|p| p.value), "alt_port")?,
            reuse_connection: h.reuse_connection.as_ref().is_none_or(|b| b.value),
            no_traffic_interval,
            no_traffic_healthy_interval: optional(
                h.no_traffic_healthy_interval.as_ref(),
                "no_traffic_healthy_interval",
                no_traffic_interval,
            )?,
            unhealthy_interval,
            unhealthy_edge_interval: optional(
                h.unhealthy_edge_interval.as_ref(),
                "unhealthy_edge_interval",
                unhealthy_interval,
            )?,
            healthy_edge_interval: optional(
                h.healthy_edge_interval.as_ref(),
                "healthy_edge_interval",
                interval,
            )?,
            checker,
        })
    }
}

fn http_check(c: &core::health_check::HttpHealthCheck) -> Result<HttpCheck> {
    use core::RequestMethod as M;
    if c.path.is_empty() {
        return Err(ConfigError::new("path", "must not be empty"));
    }
    let method = match M::try_from(c.method) {
        Ok(M::MethodUnspecified | M::Get) => Method::GET,
        Ok(M::Head) => Method::HEAD,
        Ok(M::Post) => Method::POST,
        Ok(M::Put) => Method::PUT,
        Ok(M::Delete) => Method::DELETE,
        Ok(M::Options) => Method::OPTIONS,
        Ok(M::Trace) => Method::TRACE,
        Ok(M::Patch) => Method::PATCH,
        Ok(M::Connect) | Err(_) => {
            return Err(ConfigError::new(
                "method",
                "must be one of GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH",
            ))
        }
    };
    let send = match &c.send {
        None => None,
        Some(p) => {
            if !matches!(
                method,
                Method::POST | Method::PUT | Method::PATCH | Method::OPTIONS
            ) {
                return Err(ConfigError::new(
                    "send",
                    format!("a request payload needs a method that carries a body (POST, PUT, PATCH, OPTIONS), not {method}"),
                ));
            }
            Some(Bytes::from(payload(p).within("send")?))
        }
    };
    let receive = payloads(&c.receive, "receive")?;
    let response_buffer_size = c
        .response_buffer_size
        .as_ref()
        .map_or(DEFAULT_RESPONSE_BUFFER, |v| v.value as usize);
    let expected_len: usize = receive.iter().map(Vec::len).sum();
    if response_buffer_size != 0 && expected_len > response_buffer_size {
        return Err(ConfigError::new(
            "receive",
            format!("the expected response ({expected_len} bytes) is longer than response_buffer_size ({response_buffer_size})"),
        ));
    }
    let http2 = match types::CodecClientType::try_from(c.codec_client_type) {
        Ok(types::CodecClientType::Http1) => false,
        Ok(types::CodecClientType::Http2) => true,
        Ok(types::CodecClientType::Http3) => {
            return Err(common::unsupported(
                "codec_client_type",
                "HTTP/3 health checks",
            ))
        }
        Err(_) => return Err(ConfigError::new("codec_client_type", "unknown value")),
    };
    let mut expected_statuses = statuses(&c.expected_statuses, "expected_statuses")?;
    if expected_statuses.is_empty() {
        expected_statuses.push(200..201);
    }
    Ok(HttpCheck {
        host: Some(c.host.clone()).filter(|h| !h.is_empty()),
        path: c.path.clone(),
        method,
        send,
        receive,
        response_buffer_size,
        headers: HeaderMutations::build(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            "request_headers_to_add",
            "request_headers_to_remove",
        )?,
        expected_statuses,
        retriable_statuses: statuses(&c.retriable_statuses, "retriable_statuses")?,
        http2,
        service_name_matcher: c
            .service_name_matcher
            .as_ref()
            .map(StringMatcher::try_from)
            .transpose()
            .within("service_name_matcher")?,
    })
}

fn tcp_check(c: &core::health_check::TcpHealthCheck) -> Result<TcpCheck> {
    if c.proxy_protocol_config.is_some() {
        return Err(common::unsupported(
            "proxy_protocol_config",
            "PROXY protocol in TCP health checks",
        ));
    }
    Ok(TcpCheck {
        send: match &c.send {
            Some(p) => payload(p).within("send")?,
            None => Vec::new(),
        },
        receive: payloads(&c.receive, "receive")?,
    })
}

fn grpc_check(c: &core::health_check::GrpcHealthCheck) -> Result<GrpcCheck> {
    Ok(GrpcCheck {
        service_name: c.service_name.clone(),
        authority: Some(c.authority.clone()).filter(|a| !a.is_empty()),
        metadata: HeaderMutations::build(&c.initial_metadata, &[], "initial_metadata", "")?,
    })
}

/// A `Payload`'s bytes: `text` is hex, `binary` is raw.
fn payload(p: &core::health_check::Payload) -> Result<Vec<u8>> {
    use core::health_check::payload::Payload as P;
    match &p.payload {
        Some(P::Text(hex)) => {
            if hex.is_empty() {
                return Err(ConfigError::new("text", "must not be empty"));
            }
            decode_hex(hex).ok_or_else(|| {
                ConfigError::new("text", format!("'{hex}' is not hex-encoded bytes"))
            })
        }
        Some(P::Binary(b)) => Ok(b.clone()),
        None => Err(ConfigError::new("", "text or binary is required")),
    }
}

fn payloads(ps: &[core::health_check::Payload], field: &str) -> Result<Vec<Vec<u8>>> {
    ps.iter()
        .enumerate()
        .map(|(i, p)| payload(p).at_index(field, i))
        .collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// HTTP status ranges `[start, end)`, checked as Envoy checks them.
fn statuses(ranges: &[types::Int64Range], field: &str) -> Result<Vec<Range<u16>>> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let bad = |why: String| Err(ConfigError::new(format!("{field}[{i}]"), why));
            if r.start >= r.end {
                return bad(format!(
                    "start must be below end, but start={} and end={}",
                    r.start, r.end
                ));
            }
            if r.start < 100 {
                return bad(format!("start must be at least 100, but is {}", r.start));
            }
            if r.end > 600 {
                return bad(format!("end must be at most 600, but is {}", r.end));
            }
            // Both bounds are within 100..=600 here.
            Ok(r.start as u16..r.end as u16)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<HealthCheck> {
        use crate::config::load::{decode, parse_text, UnknownFields};
        let v = parse_text(yaml, "test").expect("yaml");
        let (h, _): (core::HealthCheck, _) =
            decode(v, "envoy.config.core.v3.HealthCheck", UnknownFields::Reject).expect("decodes");
        HealthCheck::try_from(&h)
    }

    #[test]
    fn defaults_follow_envoy() {
        let h = parse(
            "timeout: 1s\ninterval: 2s\nunhealthy_threshold: 3\nhealthy_threshold: 2\nhttp_health_check: {path: /healthz}",
        )
        .expect("valid");
        assert_eq!(h.no_traffic_interval, Duration::from_secs(60));
        assert_eq!(h.no_traffic_healthy_interval, Duration::from_secs(60));
        assert_eq!(h.unhealthy_interval, Duration::from_secs(2));
        assert_eq!(h.unhealthy_edge_interval, Duration::from_secs(2));
        assert_eq!(h.healthy_edge_interval, Duration::from_secs(2));
        assert!(h.reuse_connection);
        let Checker::Http(c) = &h.checker else {
            panic!("an HTTP checker");
        };
        assert_eq!(c.expected_statuses, vec![200..201]);
        assert_eq!(c.method, Method::GET);
        assert_eq!(c.response_buffer_size, 1024);
    }

    #[test]
    fn payloads_are_hex_or_binary() {
        let h = parse(
            "timeout: 1s\ninterval: 1s\nunhealthy_threshold: 1\nhealthy_threshold: 1\ntcp_health_check: {send: {text: '50494e47'}, receive: [{text: '504f4e47'}, {binary: 'IQ=='}]}",
        )
        .expect("valid");
        let Checker::Tcp(c) = &h.checker else {
            panic!("a TCP checker");
        };
        assert_eq!(c.send, b"PING");
        assert_eq!(c.receive, vec![b"PONG".to_vec(), b"!".to_vec()]);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let base = "timeout: 1s\ninterval: 1s\nunhealthy_threshold: 1\nhealthy_threshold: 1\n";
        let cases = [
            ("interval: 1s\nunhealthy_threshold: 1\nhealthy_threshold: 1\nhttp_health_check: {path: /}".to_owned(), "timeout: is required"),
            (format!("{base}http_health_check: {{path: ''}}"), "http_health_check.path"),
            (format!("{base}tcp_health_check: {{send: {{text: 'zz'}}}}"), "tcp_health_check.send.text"),
            (format!("{base}http_health_check: {{path: /, expected_statuses: [{{start: 200, end: 700}}]}}"), "http_health_check.expected_statuses[0]"),
            (format!("{base}http_health_check: {{path: /, send: {{text: '00'}}}}"), "http_health_check.send"),
            (format!("{base}http_health_check: {{path: /, codec_client_type: HTTP3}}"), "codec_client_type"),
            (base.to_owned(), "health_checker"),
            (format!("{base}event_log_path: /tmp/x\nhttp_health_check: {{path: /}}"), "event_log_path"),
        ];
        for (yaml, want) in cases {
            let err = parse(&yaml).expect_err(&yaml).to_string();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
