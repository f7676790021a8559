//! `envoy.filters.http.fault` (`HTTPFault`): delays and aborts injected into a share of
//! requests, fixed or controlled by `x-envoy-fault-*` request headers.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as pb;

use super::common;
use super::error::{ConfigError, Result, Within};
use super::route::{header_matchers, HeaderMatcher};
use super::route_action::fraction_per_million;

pub const TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

#[derive(Debug)]
pub struct Fault {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
    /// The fault applies only to requests routed to this cluster (empty: any).
    pub upstream_cluster: String,
    /// Every matcher must match the request.
    pub headers: Vec<HeaderMatcher>,
    /// Only requests whose `x-envoy-downstream-service-node` is listed (empty: any).
    pub downstream_nodes: Vec<String>,
    /// Faults active at once, at most (`None`: unlimited).
    pub max_active_faults: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct Delay {
    pub kind: DelayKind,
    /// Share of requests, in millionths.
    pub per_million: u32,
    /// Millionths per unit of the percentage's denominator (a percentage header counts in
    /// that denominator).
    pub scale: u32,
}

#[derive(Debug, Clone, Copy)]
pub enum DelayKind {
    Fixed(Duration),
    /// `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

#[derive(Debug, Clone)]
pub struct Abort {
    pub kind: AbortKind,
    pub per_million: u32,
    pub scale: u32,
    /// `response_body` (Envoy's default: "fault filter abort").
    pub body: String,
}

#[derive(Debug, Clone, Copy)]
pub enum AbortKind {
    Http(http::StatusCode),
    Grpc(u32),
    /// `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`.
    Header,
}

impl TryFrom<&pb::HttpFault> for Fault {
    type Error = ConfigError;
    fn try_from(f: &pb::HttpFault) -> Result<Self> {
        if f.response_rate_limit.is_some() {
            return Err(common::unsupported(
                "response_rate_limit",
                "response rate limiting faults",
            ));
        }
        let delay = f
            .delay
            .as_ref()
            .map(|d| delay(d).within("delay"))
            .transpose()?;
        let abort = f
            .abort
            .as_ref()
            .map(|a| abort(a).within("abort"))
            .transpose()?;
        let headers = header_matchers(&f.headers, "headers")?;
        Ok(Fault {
            delay,
            abort,
            upstream_cluster: f.upstream_cluster.clone(),
            headers,
            downstream_nodes: f.downstream_nodes.clone(),
            max_active_faults: f.max_active_faults.as_ref().map(|v| v.value),
        })
    }
}

fn delay(d: &common_pb::FaultDelay) -> Result<Delay> {
    use common_pb::fault_delay::FaultDelaySecifier as S;
    let kind = match &d.fault_delay_secifier {
        Some(S::FixedDelay(t)) => DelayKind::Fixed(common::duration(t, "fixed_delay")?),
        Some(S::HeaderDelay(_)) => DelayKind::Header,
        None => {
            return Err(ConfigError::new(
                "fault_delay_secifier",
                "one of fixed_delay or header_delay is required",
            ))
        }
    };
    Ok(Delay {
        kind,
        per_million: fraction_per_million(d.percentage.as_ref()),
        scale: scale(d.percentage.as_ref()),
    })
}

fn abort(a: &pb::FaultAbort) -> Result<Abort> {
    use pb::fault_abort::ErrorType as E;
    let kind = match &a.error_type {
        Some(E::HttpStatus(s)) => {
            let status = u16::try_from(*s)
                .ok()
                .filter(|s| (200..600).contains(s))
                .and_then(|s| http::StatusCode::from_u16(s).ok())
                .ok_or_else(|| {
                    ConfigError::new("http_status", format!("{s} is not in [200, 600)"))
                })?;
            AbortKind::Http(status)
        }
        Some(E::GrpcStatus(s)) => AbortKind::Grpc(*s),
        Some(E::HeaderAbort(_)) => AbortKind::Header,
        None => {
            return Err(ConfigError::new(
                "error_type",
                "one of http_status, grpc_status or header_abort is required",
            ))
        }
    };
    Ok(Abort {
        kind,
        per_million: fraction_per_million(a.percentage.as_ref()),
        scale: scale(a.percentage.as_ref()),
        body: if a.response_body.is_empty() {
            "fault filter abort".to_owned()
        } else {
            a.response_body.clone()
        },
    })
}

/// Millionths per unit of a percentage's denominator (HUNDRED when unset).
fn scale(p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>) -> u32 {
    match p.map_or(0, |p| p.denominator) {
        0 => 10_000,
        1 => 100,
        _ => 1,
    }
}
