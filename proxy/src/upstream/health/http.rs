//! HTTP and gRPC health checks over hyper client connections (HTTP/1.1 or HTTP/2 for
//! HTTP checks; gRPC checks always use HTTP/2 and `grpc.health.v1.Health/Check`).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::probe::{payload_matches, Check, Failure, Target};
use crate::config::health_check::{GrpcCheck, HttpCheck};
use crate::stats::Counter;
use crate::upstream::connect;
use crate::upstream::host::HostAddr;

/// Envoy's health checker user agent.
const USER_AGENT_HC: HeaderValue = HeaderValue::from_static("Envoy/HC");

/// A kept client connection.
#[derive(Debug)]
enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn open(target: &Target, h2: bool) -> Option<Conn> {
        let io = connect::connect_stream(&target.addr, target.connect_timeout, target.bind)
            .await
            .ok()?;
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.ok()?;
            tokio::spawn(conn);
            Some(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.ok()?;
            tokio::spawn(conn);
            Some(Conn::H1(sender))
        }
    }

    async fn ready(&mut self) -> bool {
        match self {
            Conn::H1(s) => s.ready().await.is_ok(),
            Conn::H2(s) => s.ready().await.is_ok(),
        }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Conn::H1(s) => s.send_request(req).await,
            Conn::H2(s) => s.send_request(req).await,
        }
    }
}

/// The kept connection, reopened when it closed.
#[derive(Debug)]
struct Kept {
    target: Target,
    h2: bool,
    reuse: bool,
    conn: Option<Conn>,
}

impl Kept {
    async fn get(&mut self) -> Option<&mut Conn> {
        let usable = match &mut self.conn {
            Some(c) => c.ready().await,
            None => false,
        };
        if !usable {
            self.conn = Conn::open(&self.target, self.h2).await;
        }
        self.conn.as_mut()
    }

    /// Sends `req` on the kept (or a new) connection; a failure to connect or send is a
    /// network failure and drops the connection.
    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Check> {
        let Some(conn) = self.get().await else {
            return Err(Check::Failed(Failure::Network));
        };
        conn.send(req).await.map_err(|_| {
            self.conn = None;
            Check::Failed(Failure::Network)
        })
    }

    /// After a check: keep the connection only when reuse is on and the peer did not
    /// ask to close it.
    fn done(&mut self, close_asked: bool) {
        if !self.reuse || close_asked {
            self.conn = None;
        }
    }
}

/// An absolute URI for `authority` and `path`; a value that cannot be an authority
/// (Istio's `outbound|80||name` cluster names) falls back to the host's address.
fn uri(authority: &str, path: &str, target: &Target) -> Uri {
    let fallback = match &target.addr {
        HostAddr::Tcp(a) => a.to_string(),
        HostAddr::Unix(_) => "localhost".to_owned(),
    };
    format!("http://{authority}{path}")
        .parse()
        .or_else(|_| format!("http://{fallback}{path}").parse())
        .unwrap_or_else(|_| Uri::from_static("/"))
}

#[derive(Debug)]
pub struct HttpProbe {
    check: Arc<HttpCheck>,
    /// Built once: the request target (absolute for HTTP/2) and the HTTP/1.1 `host`.
    uri: Uri,
    host: Option<HeaderValue>,
    kept: Kept,
    verify_cluster: Counter,
}

impl HttpProbe {
    pub fn new(
        check: Arc<HttpCheck>,
        target: Target,
        authority: String,
        reuse: bool,
        verify_cluster: Counter,
    ) -> Self {
        let (uri, host) = if check.http2 {
            (uri(&authority, &check.path, &target), None)
        } else {
            (
                check.path.parse().unwrap_or_else(|_| Uri::from_static("/")),
                HeaderValue::from_str(&authority).ok(),
            )
        };
        HttpProbe {
            kept: Kept {
                target,
                h2: check.http2,
                reuse,
                conn: None,
            },
            check,
            uri,
            host,
            verify_cluster,
        }
    }

    pub fn close(&mut self) {
        self.kept.conn = None;
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let c = &self.check;
        let body = c.send.clone().unwrap_or_default();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = c.method.clone();
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        if let Some(host) = &self.host {
            h.insert(HOST, host.clone());
        }
        h.insert(USER_AGENT, USER_AGENT_HC);
        if let Some(b) = &c.send {
            h.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        c.headers.apply(h);
        req
    }

    pub async fn check(&mut self) -> Check {
        let resp = match self.kept.exchange(self.request()).await {
            Ok(r) => r,
            Err(c) => return c,
        };
        let (parts, mut body) = resp.into_parts();
        let c = &self.check;
        let limit = match c.response_buffer_size {
            0 => usize::MAX,
            n => n,
        };
        let mut kept_body = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                self.kept.conn = None;
                return Check::Failed(Failure::Network);
            };
            if let Ok(data) = frame.into_data() {
                if !c.receive.is_empty() && kept_body.len() < limit {
                    let take = (limit - kept_body.len()).min(data.len());
                    kept_body.extend_from_slice(&data[..take]);
                }
            }
        }
        let close = parts
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        self.kept.done(close);
        self.judge(parts.status.as_u16(), &parts.headers, &kept_body)
    }

    /// The result of a complete answer (Envoy's order: body, status, then cluster name).
    fn judge(&self, status: u16, headers: &http::HeaderMap, body: &[u8]) -> Check {
        let c = &self.check;
        if !c.receive.is_empty() && !payload_matches(&c.receive, body) {
            return Check::Failed(Failure::Active);
        }
        let within = |ranges: &[std::ops::Range<u16>]| ranges.iter().any(|r| r.contains(&status));
        if !within(&c.expected_statuses) {
            return Check::Failed(if within(&c.retriable_statuses) {
                Failure::Retriable
            } else {
                Failure::Active
            });
        }
        if let Some(m) = &c.service_name_matcher {
            self.verify_cluster.inc();
            let name = headers
                .get("x-envoy-upstream-healthchecked-cluster")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !m.matches(name) {
                return Check::Failed(Failure::Active);
            }
        }
        if headers.contains_key("x-envoy-degraded") {
            Check::Degraded
        } else {
            Check::Healthy
        }
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

#[derive(Debug)]
pub struct GrpcProbe {
    check: Arc<GrpcCheck>,
    /// `/grpc.health.v1.Health/Check` at the check's authority (built once).
    uri: Uri,
    kept: Kept,
    /// The length-prefixed request message (the same for every check).
    message: Bytes,
}

impl GrpcProbe {
    pub fn new(check: Arc<GrpcCheck>, target: Target, authority: String, reuse: bool) -> Self {
        let msg = prost::Message::encode_to_vec(&HealthCheckRequest {
            service: check.service_name.clone(),
        });
        let mut message = BytesMut::with_capacity(5 + msg.len());
        message.put_u8(0);
        message.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
        message.put_slice(&msg);
        GrpcProbe {
            check,
            uri: uri(&authority, "/grpc.health.v1.Health/Check", &target),
            kept: Kept {
                target,
                h2: true,
                reuse,
                conn: None,
            },
            message: message.freeze(),
        }
    }

    pub fn close(&mut self) {
        self.kept.conn = None;
    }

    pub async fn check(&mut self) -> Check {
        let mut req = Request::new(Full::new(self.message.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        h.insert(USER_AGENT, USER_AGENT_HC);
        self.check.metadata.apply(h);
        let resp = match self.kept.exchange(req).await {
            Ok(r) => r,
            Err(c) => return c,
        };
        let (parts, body) = resp.into_parts();
        let collected = match body.collect().await {
            Ok(c) => c,
            Err(_) => {
                self.kept.conn = None;
                return Check::Failed(Failure::Network);
            }
        };
        self.kept.done(false);
        let is_grpc = parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if parts.status != http::StatusCode::OK || !is_grpc {
            return Check::Failed(Failure::Active);
        }
        let trailers = collected.trailers().cloned();
        let status_ok = trailers
            .as_ref()
            .unwrap_or(&parts.headers)
            .get("grpc-status")
            .is_some_and(|v| v.as_bytes() == b"0");
        if status_ok && serving(&collected.to_bytes()) {
            Check::Healthy
        } else {
            Check::Failed(Failure::Active)
        }
    }
}

/// Whether the (single, uncompressed) response message says `SERVING`.
fn serving(body: &[u8]) -> bool {
    let Some((&[flag, a, b, c, d], rest)) = body.split_first_chunk::<5>() else {
        return false;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if flag != 0 || rest.len() < len {
        return false;
    }
    <HealthCheckResponse as prost::Message>::decode(&rest[..len]).is_ok_and(|r| r.status == SERVING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_answers_are_read_from_their_frame() {
        let frame = |status: i32, flag: u8| {
            let msg = prost::Message::encode_to_vec(&HealthCheckResponse { status });
            let mut b = vec![flag];
            b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            b.extend_from_slice(&msg);
            b
        };
        assert!(serving(&frame(SERVING, 0)));
        assert!(!serving(&frame(2, 0)), "NOT_SERVING");
        assert!(!serving(&frame(SERVING, 1)), "compressed");
        assert!(!serving(&frame(SERVING, 0)[..5]), "cut short");
        assert!(!serving(b""));
    }
}
