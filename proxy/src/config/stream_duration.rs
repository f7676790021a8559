//! How a route bounds a whole stream and reads gRPC's `grpc-timeout` header. Envoy has two
//! forms, and which one a route uses changes what its `timeout` means:
//!
//! - without a `max_stream_duration` message, the router's timeout is the route
//!   `timeout`, except that for gRPC requests `max_grpc_timeout` (when set) makes it the
//!   request's `grpc-timeout` instead (Istio's outbound routes);
//! - with one, the route `timeout` is not used at all; the connection manager bounds the
//!   stream by `max_stream_duration`, or by `grpc-timeout` when `grpc_timeout_header_max`
//!   is set (Istio's inbound routes).

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::google::protobuf;

use super::common;
use super::error::{Result, Within};

/// A route's stream-duration form (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamDuration {
    /// No `max_stream_duration` message; `grpc` from `max_grpc_timeout` and
    /// `grpc_timeout_offset`.
    Router { grpc: Option<GrpcHeader> },
    /// A `max_stream_duration` message: `max` is its `max_stream_duration` (`None`: unset,
    /// the connection manager's applies; zero: no limit); `grpc` from
    /// `grpc_timeout_header_max` and `grpc_timeout_header_offset`.
    Stream {
        max: Option<Duration>,
        grpc: Option<GrpcHeader>,
    },
}

/// Using the `grpc-timeout` header: at most `max` (`None`: configured as 0, uncapped),
/// less `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcHeader {
    pub max: Option<Duration>,
    pub offset: Duration,
}

impl StreamDuration {
    pub fn from_route(a: &pb::RouteAction) -> Result<Self> {
        let header = |max: &Option<protobuf::Duration>,
                      offset: &Option<protobuf::Duration>,
                      names: [&str; 2]|
         -> Result<Option<GrpcHeader>> {
            let Some(max) = max else { return Ok(None) };
            let max = common::duration(max, names[0])?;
            Ok(Some(GrpcHeader {
                max: (!max.is_zero()).then_some(max),
                offset: common::duration_or(offset.as_ref(), names[1], Duration::ZERO)?,
            }))
        };
        match &a.max_stream_duration {
            Some(m) => Ok(StreamDuration::Stream {
                max: m
                    .max_stream_duration
                    .as_ref()
                    .map(|d| common::duration(d, "max_stream_duration"))
                    .transpose()
                    .within("max_stream_duration")?,
                grpc: header(
                    &m.grpc_timeout_header_max,
                    &m.grpc_timeout_header_offset,
                    ["grpc_timeout_header_max", "grpc_timeout_header_offset"],
                )
                .within("max_stream_duration")?,
            }),
            #[allow(deprecated)]
            None => Ok(StreamDuration::Router {
                grpc: header(
                    &a.max_grpc_timeout,
                    &a.grpc_timeout_offset,
                    ["max_grpc_timeout", "grpc_timeout_offset"],
                )?,
            }),
        }
    }

    /// Whether the route `timeout` is the router's timeout.
    pub fn uses_route_timeout(&self) -> bool {
        matches!(self, StreamDuration::Router { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> pb::RouteAction {
        use crate::config::load::{decode, parse_text, UnknownFields};
        let v = parse_text(yaml, "test").expect("yaml");
        let (a, _) = decode(
            v,
            "envoy.config.route.v3.RouteAction",
            UnknownFields::Reject,
        )
        .expect("decodes");
        a
    }

    #[test]
    fn both_forms() {
        let ms = Duration::from_millis;
        // Istio's inbound routes.
        let a = action(
            "{cluster: c, timeout: 0s, max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}}",
        );
        assert_eq!(
            StreamDuration::from_route(&a).unwrap(),
            StreamDuration::Stream {
                max: Some(Duration::ZERO),
                grpc: Some(GrpcHeader {
                    max: None,
                    offset: Duration::ZERO
                })
            }
        );
        // Istio's outbound routes.
        let a = action("{cluster: c, max_grpc_timeout: 0.3s, grpc_timeout_offset: 0.1s}");
        let s = StreamDuration::from_route(&a).unwrap();
        assert_eq!(
            s,
            StreamDuration::Router {
                grpc: Some(GrpcHeader {
                    max: Some(ms(300)),
                    offset: ms(100)
                })
            }
        );
        assert!(s.uses_route_timeout());
        let a = action("{cluster: c, max_stream_duration: {}}");
        assert_eq!(
            StreamDuration::from_route(&a).unwrap(),
            StreamDuration::Stream {
                max: None,
                grpc: None
            }
        );
        let a = action("{cluster: c, max_stream_duration: {grpc_timeout_header_max: -1s}}");
        let e = StreamDuration::from_route(&a).unwrap_err().to_string();
        assert!(
            e.contains("max_stream_duration.grpc_timeout_header_max"),
            "{e}"
        );
    }
}
