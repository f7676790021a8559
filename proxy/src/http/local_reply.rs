//! The one place that turns a failure into the response Envoy would send: status, body,
//! response flag and whether the connection closes afterwards.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{empty, full};
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
    ConnectFailure,
    /// The upstream reset or closed before sending response headers (UR).
    UpstreamReset,
    /// The route timeout fired before response headers (UT).
    UpstreamTimeout,
    /// HTTP/1.0 without `accept_http_10`.
    Http10NotAllowed,
    /// HTTP/1.1 request without a Host header.
    MissingHost,
    /// An upgrade type the connection manager or route does not allow.
    UpgradeNotAllowed,
    /// The request path cannot be normalized (e.g. it escapes the root).
    BadPath,
}

impl LocalReply {
    pub fn status(&self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::ClusterNotFound
            | LocalReply::NoHealthyUpstream
            | LocalReply::ConnectFailure
            | LocalReply::UpstreamReset => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::Http10NotAllowed => StatusCode::UPGRADE_REQUIRED,
            LocalReply::MissingHost | LocalReply::BadPath => StatusCode::BAD_REQUEST,
            LocalReply::UpgradeNotAllowed => StatusCode::FORBIDDEN,
        }
    }

    /// Envoy's response flag for access logs.
    pub fn flag(&self) -> &'static str {
        match self {
            LocalReply::NoRoute => "NR",
            LocalReply::ClusterNotFound => "NC",
            LocalReply::NoHealthyUpstream => "UH",
            LocalReply::ConnectFailure => "UF",
            LocalReply::UpstreamReset => "UR",
            LocalReply::UpstreamTimeout => "UT",
            LocalReply::Http10NotAllowed | LocalReply::MissingHost | LocalReply::BadPath => "DPE",
            LocalReply::UpgradeNotAllowed => "-",
        }
    }

    /// The body text Envoy 1.40 sends (checked against it in the differential tests).
    pub fn body(&self) -> &'static str {
        match self {
            LocalReply::NoRoute | LocalReply::ClusterNotFound | LocalReply::MissingHost | LocalReply::UpgradeNotAllowed => "",
            LocalReply::NoHealthyUpstream => "no healthy upstream",
            LocalReply::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
            }
            LocalReply::UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            LocalReply::UpstreamTimeout => "upstream request timeout",
            LocalReply::Http10NotAllowed => "Upgrade Required",
            LocalReply::BadPath => "Bad Request",
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
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let body = self.body();
        let mut resp = if body.is_empty() {
            Response::new(empty())
        } else {
            let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        };
        *resp.status_mut() = self.status();
        if self.closes_connection() {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.extensions_mut().insert(ResponseFlag(self.flag()));
        resp
    }
}

/// Attached to locally generated responses so that stats and logs can see the flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFlag(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_match_envoy() {
        let r = LocalReply::UpstreamTimeout.into_response();
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(
            r.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag("UT"))
        );
        let r = LocalReply::NoRoute.into_response();
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("content-type").is_none());
        assert_eq!(LocalReply::NoHealthyUpstream.body(), "no healthy upstream");
        assert!(LocalReply::Http10NotAllowed.closes_connection());
    }
}
