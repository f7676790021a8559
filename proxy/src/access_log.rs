//! Access logs (`access_log` on the HTTP connection manager and on `tcp_proxy`): a line
//! per HTTP stream, written when the stream ends (its response body sent, or the stream
//! reset), or per TCP connection when it closes, in Envoy's format language
//! (`format.rs`) to a shared buffered file (`sink.rs`).

pub mod format;
pub mod sink;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::http::flags::ResponseFlags;
use crate::http::stream_info::StreamInfo;
use crate::upstream::pool::{BoxError, ProxyBody};
pub use format::Format;
pub use sink::Sink;

/// One configured logger.
#[derive(Debug)]
pub struct AccessLogger {
    pub format: Format,
    pub sink: Arc<Sink>,
}

/// The loggers of `configs`, with their files open. A file that cannot be opened now
/// (it could when the config was checked) loses its logger, with an error logged.
pub fn open(configs: &[crate::config::access_log::AccessLogConfig]) -> Arc<[AccessLogger]> {
    configs
        .iter()
        .filter_map(|l| match Sink::open(&l.path) {
            Ok(sink) => Some(AccessLogger {
                format: l.format.clone(),
                sink,
            }),
            Err(e) => {
                tracing::error!(path = %l.path.display(), "cannot open the access log: {e}");
                None
            }
        })
        .collect()
}

impl AccessLogger {
    pub fn log(&self, e: &Entry) {
        let mut line = String::with_capacity(256);
        self.format.render(e, &mut line);
        self.sink.write(&line);
    }
}

/// What a log line is made from.
#[derive(Debug)]
pub struct Entry {
    pub start_time: SystemTime,
    /// `-` for a TCP connection.
    pub protocol: &'static str,
    /// None for a TCP connection.
    pub request: Option<RequestLine>,
    /// 0 for a TCP connection, as Envoy logs it.
    pub status: u16,
    pub response: HeaderMap,
    pub flags: ResponseFlags,
    pub details: std::borrow::Cow<'static, str>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub transport_failure: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_host: Option<crate::upstream::host::HostAddr>,
    pub upstream_local: Option<SocketAddr>,
    pub upstream_cluster: Option<Arc<str>>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub route_name: Option<String>,
}

/// An HTTP request as the log shows it.
#[derive(Debug)]
pub struct RequestLine {
    pub method: http::Method,
    pub path: String,
    pub authority: String,
    pub headers: HeaderMap,
}

impl Entry {
    fn request_header(&self, name: &str) -> Option<&str> {
        let r = self.request.as_ref()?;
        match name {
            ":method" => Some(r.method.as_str()),
            ":path" => Some(&r.path),
            ":authority" => Some(&r.authority),
            ":scheme" => Some("http"),
            _ => r.headers.get(name).and_then(|v| v.to_str().ok()),
        }
    }

    fn response_header(&self, name: &str) -> Option<&str> {
        self.response.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The request as it arrived, kept for the log (replaced by the forwarded request when
/// there is one).
pub struct Start {
    time: SystemTime,
    at: Instant,
    protocol: &'static str,
    method: http::Method,
    path: String,
    authority: String,
    headers: HeaderMap,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
}

impl Start {
    pub fn new<B>(
        req: &http::Request<B>,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Self {
        let authority = crate::http::handler::request_host(req)
            .unwrap_or("")
            .to_string();
        Start {
            time: SystemTime::now(),
            at: Instant::now(),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            authority,
            headers: req.headers().clone(),
            local,
            remote,
        }
    }
}

/// Wraps `resp`'s body so that the stream is logged by `loggers` when it ends.
pub fn attach(
    resp: &mut Response<ProxyBody>,
    start: Start,
    info: StreamInfo,
    loggers: Arc<[AccessLogger]>,
) {
    let pending = Pending {
        start,
        info,
        status: resp.status().as_u16(),
        response: resp.headers().clone(),
        loggers,
    };
    let body = LoggedBody {
        inner: std::mem::replace(resp.body_mut(), ProxyBody::Empty),
        sent: 0,
        pending: Some(Box::new(pending)),
    };
    *resp.body_mut() = ProxyBody::boxed(body);
}

struct Pending {
    start: Start,
    info: StreamInfo,
    status: u16,
    response: HeaderMap,
    loggers: Arc<[AccessLogger]>,
}

impl Pending {
    fn log(self, sent: u64) {
        let (s, i) = (self.start, self.info);
        let (path, authority, request) = match i.forwarded {
            Some(f) => (f.path, f.authority, f.headers),
            None => (s.path, s.authority, s.headers),
        };
        let e = Entry {
            start_time: s.time,
            protocol: s.protocol,
            request: Some(RequestLine {
                method: s.method,
                path,
                authority,
                headers: request,
            }),
            status: self.status,
            response: self.response,
            flags: i.flags,
            details: i.details,
            transport_failure: i.transport_failure,
            bytes_received: i.request_body.map_or(0, |a| a.bytes()),
            bytes_sent: sent,
            duration: s.at.elapsed(),
            upstream_host: i.upstream_host,
            upstream_local: i.upstream_local,
            upstream_cluster: i.upstream_cluster,
            downstream_local: s.local,
            downstream_remote: s.remote,
            route_name: i.route_name,
        };
        for l in self.loggers.iter() {
            l.log(&e);
        }
    }
}

/// A response body that counts what it sends and logs the stream when it ends (or is
/// dropped unfinished: a reset stream is logged too).
struct LoggedBody {
    inner: ProxyBody,
    sent: u64,
    pending: Option<Box<Pending>>,
}

impl LoggedBody {
    fn done(&mut self) {
        if let Some(p) = self.pending.take() {
            p.log(self.sent);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.sent += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.done();
                }
            }
            Poll::Ready(_) => self.done(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.done();
    }
}
