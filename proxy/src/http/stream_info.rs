//! What the stages learn about a stream that the access log reports at its end: response
//! flags in the order they were set, the route, the upstream cluster and host, the
//! request as it was forwarded, and how many request-body bytes arrived.

use std::borrow::Cow;
use std::sync::Arc;

use super::flags::ResponseFlags;
use super::timeouts::Activity;
use crate::upstream::host::HostAddr;

#[derive(Debug, Default)]
pub struct StreamInfo {
    pub flags: ResponseFlags,
    /// Whether an access log wants the details below (they cost copies).
    pub logging: bool,
    pub route_name: Option<String>,
    pub upstream_cluster: Option<Arc<str>>,
    pub upstream_host: Option<HostAddr>,
    /// The local address of the upstream connection the latest attempt used.
    pub upstream_local: Option<std::net::SocketAddr>,
    /// The request as forwarded upstream: its headers, `:path` and `:authority`.
    pub forwarded: Option<Box<Forwarded>>,
    /// The request body's progress (its byte count).
    pub request_body: Option<Arc<Activity>>,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: Cow<'static, str>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`: why the latest attempt's connection failed.
    pub transport_failure: Option<String>,
}

#[derive(Debug)]
pub struct Forwarded {
    pub headers: http::HeaderMap,
    pub path: String,
    pub authority: String,
}
