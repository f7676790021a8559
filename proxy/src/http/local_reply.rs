//! The one place that turns a failure into the response Envoy would send: status, body,
//! response flag, whether the connection closes, and the gRPC form of it.

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{empty, full};
use super::flags::Flag;
use crate::upstream::pool::ProxyBody;

/// Every locally generated error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReply {
    /// No route matched (NR).
    NoRoute,
    /// The route names a cluster that does not exist (NC).
    ClusterNotFound,
    /// The cluster has no hosts (UH).
    NoHealthyUpstream,
    /// Connecting to the upstream failed (UF).
    ConnectFailure {
        /// After retries (Envoy then words the body differently).
        retried: bool,
        /// The connect timeout expired (Envoy's `connection timeout`), rather than the
        /// socket failing (`remote connection failure`).
        timeout: bool,
    },
    /// The upstream reset or closed before sending response headers (UR).
    UpstreamReset { retried: bool },
    /// A circuit breaker is open (UO).
    Overflow { retried: bool },
    /// The route timeout fired before response headers (UT).
    UpstreamTimeout,
    /// The last attempt's `per_try_timeout` fired, with no retry left (UT).
    PerTryTimeout,
    /// The downstream request did not arrive in time (`request_timeout`).
    RequestTimeout,
    /// No activity on the stream for `stream_idle_timeout` (SI).
    StreamIdleTimeout {
        /// The whole request had arrived (then 504, else 408, as Envoy answers).
        request_complete: bool,
    },
    /// The stream's duration limit (`max_stream_duration`, `grpc-timeout`) ended it
    /// before the response started (DT).
    StreamDuration {
        /// The whole request had arrived (then 504, else 408 and the connection closes).
        request_complete: bool,
    },
    /// HTTP/1.0 without `accept_http_10`.
    Http10NotAllowed,
    /// HTTP/1.1 request without a Host header.
    MissingHost,
    /// An upgrade type the connection manager or route does not allow.
    UpgradeNotAllowed,
    /// The request path cannot be normalized.
    BadPath,
    /// The request body could not be read (malformed chunked encoding, truncated).
    MalformedBody,
    /// The request head is not valid HTTP/1.1, or its framing is ambiguous.
    MalformedRequest,
    /// The request head is larger than `max_request_headers_kb` or has more fields
    /// than `max_headers_count`.
    HeadersTooLarge,
    /// The request's transfer coding is not `chunked` alone.
    UnsupportedCoding,
}

impl LocalReply {
    pub fn status(&self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::ClusterNotFound
            | LocalReply::NoHealthyUpstream
            | LocalReply::ConnectFailure { .. }
            | LocalReply::UpstreamReset { .. }
            | LocalReply::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::UpstreamTimeout | LocalReply::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::StreamIdleTimeout {
                request_complete: true,
            }
            | LocalReply::StreamDuration {
                request_complete: true,
            } => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::RequestTimeout
            | LocalReply::StreamIdleTimeout { .. }
            | LocalReply::StreamDuration { .. } => StatusCode::REQUEST_TIMEOUT,
            LocalReply::Http10NotAllowed => StatusCode::UPGRADE_REQUIRED,
            LocalReply::MissingHost
            | LocalReply::BadPath
            | LocalReply::MalformedBody
            | LocalReply::MalformedRequest => StatusCode::BAD_REQUEST,
            LocalReply::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LocalReply::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            LocalReply::UpgradeNotAllowed => StatusCode::FORBIDDEN,
        }
    }

    /// Envoy's response flag for access logs (`None`: `-`).
    pub fn flag(&self) -> Option<Flag> {
        match self {
            LocalReply::NoRoute => Some(Flag::NR),
            LocalReply::ClusterNotFound => Some(Flag::NC),
            LocalReply::NoHealthyUpstream => Some(Flag::UH),
            LocalReply::ConnectFailure { .. } => Some(Flag::UF),
            LocalReply::UpstreamReset { .. } => Some(Flag::UR),
            LocalReply::Overflow { .. } => Some(Flag::UO),
            LocalReply::UpstreamTimeout | LocalReply::PerTryTimeout => Some(Flag::UT),
            LocalReply::StreamIdleTimeout { .. } => Some(Flag::SI),
            LocalReply::Http10NotAllowed
            | LocalReply::MissingHost
            | LocalReply::BadPath
            | LocalReply::MalformedBody
            | LocalReply::MalformedRequest
            | LocalReply::HeadersTooLarge
            | LocalReply::UnsupportedCoding => Some(Flag::DPE),
            // Envoy 1.40 sets no flag for these.
            LocalReply::RequestTimeout
            | LocalReply::StreamDuration { .. }
            | LocalReply::UpgradeNotAllowed => None,
        }
    }

    /// The body text Envoy 1.40 sends (checked against it in the differential tests).
    pub fn body(&self) -> &'static str {
        match self {
            LocalReply::NoRoute
            | LocalReply::ClusterNotFound
            | LocalReply::MissingHost
            | LocalReply::UpgradeNotAllowed => "",
            LocalReply::NoHealthyUpstream => "no healthy upstream",
            LocalReply::ConnectFailure {
                retried: false,
                timeout: false,
            } => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
            }
            LocalReply::ConnectFailure {
                retried: true,
                timeout: false,
            } => {
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"
            }
            LocalReply::ConnectFailure {
                retried: false,
                timeout: true,
            } => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
            }
            LocalReply::ConnectFailure {
                retried: true,
                timeout: true,
            } => {
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection timeout"
            }
            LocalReply::UpstreamReset { retried: false } => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            LocalReply::UpstreamReset { retried: true } => {
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection termination"
            }
            LocalReply::Overflow { retried: false } => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            LocalReply::Overflow { retried: true } => {
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: overflow"
            }
            LocalReply::UpstreamTimeout | LocalReply::PerTryTimeout => "upstream request timeout",
            LocalReply::RequestTimeout => "request timeout",
            LocalReply::StreamIdleTimeout { .. } => "stream timeout",
            LocalReply::StreamDuration { .. } => "downstream duration timeout",
            LocalReply::Http10NotAllowed => "Upgrade Required",
            LocalReply::BadPath | LocalReply::MalformedBody | LocalReply::MalformedRequest => {
                "Bad Request"
            }
            LocalReply::HeadersTooLarge => "Request Header Fields Too Large",
            LocalReply::UnsupportedCoding => "Not Implemented",
        }
    }

    /// `%RESPONSE_CODE_DETAILS%`, as Envoy words them (connection failures without the
    /// transport's own reason).
    pub fn details(&self) -> &'static str {
        match self {
            LocalReply::NoRoute => "route_not_found",
            LocalReply::ClusterNotFound => "cluster_not_found",
            LocalReply::NoHealthyUpstream => "no_healthy_upstream",
            LocalReply::ConnectFailure { timeout: false, .. } => {
                "upstream_reset_before_response_started{remote_connection_failure}"
            }
            LocalReply::ConnectFailure { timeout: true, .. } => {
                "upstream_reset_before_response_started{connection_timeout}"
            }
            LocalReply::UpstreamReset { .. } => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            LocalReply::Overflow { .. } => "upstream_reset_before_response_started{overflow}",
            LocalReply::UpstreamTimeout => "response_timeout",
            LocalReply::PerTryTimeout => "upstream_per_try_timeout",
            LocalReply::RequestTimeout => "request_overall_timeout",
            LocalReply::StreamIdleTimeout { .. } => "stream_idle_timeout",
            LocalReply::StreamDuration { .. } => "max_duration_timeout",
            LocalReply::Http10NotAllowed => "low_version",
            LocalReply::MissingHost => "missing_host_header",
            LocalReply::UpgradeNotAllowed => "upgrade_failed",
            LocalReply::BadPath => "path_normalization_failed",
            LocalReply::MalformedBody | LocalReply::MalformedRequest => "http1.codec_error",
            LocalReply::HeadersTooLarge => "http1.headers_too_large",
            LocalReply::UnsupportedCoding => "http1.invalid_transfer_encoding",
        }
    }

    /// Whether the downstream connection is closed after this reply.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            LocalReply::Http10NotAllowed
                | LocalReply::MissingHost
                | LocalReply::UpgradeNotAllowed
                | LocalReply::BadPath
                | LocalReply::MalformedBody
                | LocalReply::MalformedRequest
                | LocalReply::HeadersTooLarge
                | LocalReply::UnsupportedCoding
                | LocalReply::StreamDuration {
                    request_complete: false
                }
        )
    }

    /// The `grpc-status` when it is not the one mapped from the HTTP status.
    fn grpc_status(&self) -> Option<u32> {
        match self {
            // DEADLINE_EXCEEDED
            LocalReply::StreamDuration { .. } => Some(4),
            _ => None,
        }
    }

    /// The response; for gRPC requests, in gRPC form (see [`Reply::into_response`]).
    pub fn into_response(self, grpc: bool) -> Response<ProxyBody> {
        let reply = Reply {
            status: self.status(),
            body: (!self.body().is_empty()).then(|| Bytes::from_static(self.body().as_bytes())),
            close: self.closes_connection(),
            flag: self.flag(),
            details: self.details(),
            grpc_status: self.grpc_status(),
        };
        let mut resp = reply.into_response(grpc);
        if matches!(self, LocalReply::Overflow { .. }) {
            resp.headers_mut().insert(
                super::headers::names::X_ENVOY_OVERLOADED,
                HeaderValue::from_static("true"),
            );
        }
        resp
    }
}

/// A locally generated response (error replies and `direct_response`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Bytes>,
    pub close: bool,
    pub flag: Option<Flag>,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: &'static str,
    /// For gRPC callers, instead of the status mapped from `status`.
    pub grpc_status: Option<u32>,
}

impl Reply {
    pub fn direct(status: StatusCode, body: Option<Bytes>) -> Self {
        Reply {
            status,
            body: body.filter(|b| !b.is_empty()),
            close: false,
            flag: None,
            details: "direct_response",
            grpc_status: None,
        }
    }

    /// Plain replies carry a `text/plain` body. gRPC callers get what Envoy sends them:
    /// HTTP 200, `content-type: application/grpc`, `grpc-status` (mapped from the HTTP
    /// status unless given) and the body as `grpc-message`, with no body.
    pub fn into_response(self, grpc: bool) -> Response<ProxyBody> {
        let mut resp = if grpc {
            let mut r = Response::new(empty());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            let code = self
                .grpc_status
                .unwrap_or_else(|| grpc_status(self.status).into());
            h.insert("grpc-status", HeaderValue::from(code));
            if let Some(msg) = self
                .body
                .as_ref()
                .and_then(|b| HeaderValue::from_bytes(&percent_encode(b)).ok())
            {
                h.insert("grpc-message", msg);
            }
            r
        } else {
            match self.body {
                Some(b) => {
                    let mut r = Response::new(full(b));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
                None => Response::new(empty()),
            }
        };
        if !grpc {
            *resp.status_mut() = self.status;
        }
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.extensions_mut().insert(Marked {
            flag: self.flag,
            details: self.details,
        });
        resp
    }
}

/// Envoy's HTTP to gRPC status mapping for local replies.
pub fn grpc_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// `grpc-message` is percent-encoded (gRPC spec): bytes outside printable ASCII and `%`.
fn percent_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'%' {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    out
}

/// `%RESPONSE_CODE_DETAILS%` of a local reply: an upstream reset's reason with the
/// transport's own after a `|`, as Envoy words it
/// (`upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}`).
pub fn details(details: &'static str, transport_failure: Option<&str>) -> Cow<'static, str> {
    let reset = details
        .strip_prefix("upstream_reset_before_response_started{")
        .and_then(|r| r.strip_suffix('}'));
    match (reset, transport_failure) {
        (Some(reason), Some(tf)) => Cow::Owned(format!(
            "upstream_reset_before_response_started{{{reason}|{}}}",
            no_spaces(tf)
        )),
        _ => Cow::Borrowed(details),
    }
}

/// Envoy's details and transport failure reasons have `_` for whitespace.
pub fn no_spaces(s: &str) -> String {
    s.replace(char::is_whitespace, "_")
}

/// Marks a locally made response with its flag and details, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub flag: Option<Flag>,
    pub details: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_match_envoy() {
        let r = LocalReply::UpstreamTimeout.into_response(false);
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(
            r.extensions().get::<Marked>(),
            Some(&Marked {
                flag: Some(Flag::UT),
                details: "response_timeout"
            })
        );
        let r = LocalReply::NoRoute.into_response(false);
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("content-type").is_none());
        assert!(LocalReply::Http10NotAllowed.closes_connection());
    }

    #[test]
    fn reset_details_carry_the_transport_reason() {
        let uf = LocalReply::ConnectFailure {
            retried: false,
            timeout: false,
        }
        .details();
        assert_eq!(
            details(uf, Some("delayed connect error: Connection refused")),
            "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
        );
        assert_eq!(details(uf, None), uf);
        // Only resets have a place for it.
        assert_eq!(details("response_timeout", Some("x y")), "response_timeout");
        let refused = crate::upstream::connect::ConnectError::Io(
            std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        );
        assert_eq!(
            refused.transport_failure().as_deref(),
            Some("delayed connect error: Connection refused")
        );
        assert_eq!(
            crate::upstream::connect::ConnectError::Timeout.transport_failure(),
            None
        );
    }

    #[test]
    fn grpc_form() {
        let r = LocalReply::NoHealthyUpstream.into_response(true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream");
        let r =
            Reply::direct(StatusCode::OK, Some(Bytes::from_static(b"100%\n"))).into_response(true);
        assert_eq!(r.headers()["grpc-status"], "2");
        assert_eq!(r.headers()["grpc-message"], "100%25%0A");
    }
}
