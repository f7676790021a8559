//! Timeouts of the connection manager, in paused time: the route timeout and the
//! connection idle timeout.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{server, HttpContext};
use crate::drain::Drain;
use crate::testutil::{downstream, http_context, static_cluster};

/// An upstream that accepts connections and never answers.
async fn silent_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// An upstream that answers every connection with response headers and part of a body,
/// then goes quiet.
async fn stalling_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                .await;
            held.push(s);
        }
    });
    addr
}

type Client<B> = hyper::client::conn::http1::SendRequest<B>;

async fn start(hcm_yaml: &str) -> (Client<Empty<bytes::Bytes>>, Arc<HttpContext>, Drain) {
    let up = silent_upstream().await;
    start_with(hcm_yaml, up).await
}

async fn start_with<B>(
    hcm_yaml: &str,
    up: std::net::SocketAddr,
) -> (Client<B>, Arc<HttpContext>, Drain)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    start_inner(hcm_yaml, up, false).await
}

async fn start_inner<B>(
    hcm_yaml: &str,
    up: std::net::SocketAddr,
    drained: bool,
) -> (Client<B>, Arc<HttpContext>, Drain)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ctx = http_context(hcm_yaml, vec![static_cluster("c", up)]);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let drain = Drain::default();
    if drained {
        drain.start();
    }
    let down = downstream(&drain);
    tokio::spawn(server::serve(server_io, ctx.clone(), down));
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(conn);
    (send, ctx, drain)
}

const HCM_STREAMS: &str = r#"
stat_prefix: t
stream_idle_timeout: 30s
request_timeout: 10s
route_config:
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - {match: {prefix: /}, route: {cluster: c, timeout: 0s}}
http_filters: [{name: envoy.filters.http.router}]
"#;

const HCM_DIRECT: &str = r#"
stat_prefix: t
route_config:
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - {match: {prefix: /}, direct_response: {status: 200}}
http_filters: [{name: envoy.filters.http.router}]
"#;

/// Like [`start`], with the drain already under way when the connection is served.
async fn start_draining(hcm_yaml: &str) -> (Client<Empty<bytes::Bytes>>, Arc<HttpContext>, Drain) {
    let up = silent_upstream().await;
    start_inner(hcm_yaml, up, true).await
}

const HCM: &str = r#"
stat_prefix: t
common_http_protocol_options: {idle_timeout: 120s}
route_config:
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - {match: {prefix: /default}, route: {cluster: c}}
    - {match: {prefix: /short}, route: {cluster: c, timeout: 2s}}
http_filters: [{name: envoy.filters.http.router}]
"#;

fn get(path: &str) -> http::Request<Empty<bytes::Bytes>> {
    http::Request::get(path)
        .header("host", "h")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn route_timeout_answers_504_after_the_configured_time() {
    let (mut send, ctx, _drain) = start(HCM).await;
    for (path, want) in [("/short", 2), ("/default", 15)] {
        let t = Instant::now();
        let resp = send.send_request(get(path)).await.unwrap();
        assert_eq!(resp.status(), 504);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"upstream request timeout");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_secs(want) && waited < Duration::from_secs(want + 1),
            "{path}: {waited:?}"
        );
    }
    assert_eq!(ctx.stats.downstream_rq_xx[4].get(), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_after_idle_timeout() {
    let (mut send, ctx, _drain) = start(HCM).await;
    let t = Instant::now();
    // No request: the connection closes once it has been idle for 120 s.
    std::future::poll_fn(|cx| send.poll_ready(cx))
        .await
        .unwrap();
    while !send.is_closed() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(t.elapsed() >= Duration::from_secs(120));
    assert_eq!(ctx.stats.downstream_cx_idle_timeout.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn drain_closes_idle_keep_alive_connections() {
    let (send, _ctx, drain) = start(HCM).await;
    // Let the connection task start before the drain (one accepted during a drain is
    // served once instead; see `server::LATE_GRACE`).
    tokio::task::yield_now().await;
    drain.start();
    let t = Instant::now();
    while !send.is_closed() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn stream_idle_timeout_before_the_response_is_a_504_once_the_request_is_complete() {
    let (mut send, ctx, _drain) = start(HCM_STREAMS).await;
    let t = Instant::now();
    let resp = send.send_request(get("/")).await.unwrap();
    // A whole request (here, no body) that waits on the upstream: 504, as Envoy answers
    // (408 only while the request is still arriving).
    assert_eq!(resp.status(), 504);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"stream timeout");
    assert!(t.elapsed() >= Duration::from_secs(30) && t.elapsed() < Duration::from_secs(31));
    assert_eq!(ctx.stats.downstream_rq_idle_timeout.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn request_timeout_when_the_body_does_not_arrive() {
    let up = silent_upstream().await;
    let (mut send, ctx, _drain) = start_with(HCM_STREAMS, up).await;
    // A body that sends one chunk and then never ends.
    use futures_util::StreamExt;
    let first = hyper::body::Frame::data(bytes::Bytes::from_static(b"start"));
    let frames = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    let body = http_body_util::StreamBody::new(frames);
    let req = http::Request::post("/")
        .header("host", "h")
        .header("content-length", "100")
        .body(body)
        .unwrap();
    let t = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 408);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"request timeout");
    assert!(t.elapsed() >= Duration::from_secs(10) && t.elapsed() < Duration::from_secs(11));
    assert_eq!(ctx.stats.downstream_rq_timeout.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn stream_idle_after_the_response_started_resets_the_stream() {
    let up = stalling_upstream().await;
    let (mut send, _ctx, _drain) = start_with::<Empty<bytes::Bytes>>(HCM_STREAMS, up).await;
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let t = Instant::now();
    let err = resp.into_body().collect().await;
    assert!(err.is_err(), "the truncated body surfaces as an error");
    assert!(t.elapsed() >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_connection_accepted_during_a_drain_is_served_once() {
    let (mut send, _ctx, drain) = start_draining(HCM_DIRECT).await;
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["connection"], "close");
    let _ = drain;
}

const HCM_DURATION: &str = r#"
stat_prefix: t
common_http_protocol_options: {max_stream_duration: 2s}
route_config:
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - match: {prefix: /grpc}
      route: {cluster: c, max_stream_duration: {grpc_timeout_header_max: 5s}}
    - match: {prefix: /retry}
      route:
        cluster: c
        timeout: 0s
        retry_policy: {retry_on: 5xx, num_retries: 50, retry_back_off: {base_interval: 10s}}
    - {match: {prefix: /}, route: {cluster: c, timeout: 0s}}
http_filters:
- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    delay: {fixed_delay: 60s, percentage: {numerator: 100}}
    headers: [{name: x-delay, present_match: true}]
- {name: envoy.filters.http.router}
"#;

/// An upstream that answers every request with a 503 (so every attempt is retried; with
/// 50 retries, jittered waits of up to 10 s, 20 s, ... cannot all fit in 2 s).
async fn failing_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let reply = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                    if s.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The connection manager's `max_stream_duration` ends a stream wherever it is: waiting
/// on the upstream, in a fault delay, between retries (all 504 `downstream duration
/// timeout` at 2 s), or with its response under way (a reset).
#[tokio::test(start_paused = true)]
async fn max_stream_duration_ends_the_stream_at_every_stage() {
    for (path, header, upstream) in [
        ("/", None, silent_upstream().await),
        ("/", Some("x-delay"), silent_upstream().await),
        ("/retry", None, failing_upstream().await),
    ] {
        let (mut send, ctx, _drain) =
            start_with::<Empty<bytes::Bytes>>(HCM_DURATION, upstream).await;
        let mut req = get(path);
        if let Some(h) = header {
            req.headers_mut().insert(h, "1".parse().unwrap());
        }
        let t = Instant::now();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 504, "{path} {header:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"downstream duration timeout");
        assert_eq!(t.elapsed().as_secs(), 2, "{path} {header:?}");
        assert_eq!(ctx.stats.downstream_rq_max_duration_reached.get(), 1);
    }

    let up = stalling_upstream().await;
    let (mut send, ctx, _drain) = start_with::<Empty<bytes::Bytes>>(HCM_DURATION, up).await;
    let t = Instant::now();
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err(), "reset");
    assert_eq!(t.elapsed().as_secs(), 2);
    assert_eq!(ctx.stats.downstream_rq_max_duration_reached.get(), 1);
}

/// A route that reads `grpc-timeout` uses it over the connection manager's limit, capped
/// by `grpc_timeout_header_max`; gRPC callers get status 4.
#[tokio::test(start_paused = true)]
async fn grpc_timeout_bounds_the_stream() {
    for (timeout, secs) in [("3S", 3), ("1M", 5)] {
        let up = silent_upstream().await;
        let (mut send, _ctx, _drain) = start_with::<Empty<bytes::Bytes>>(HCM_DURATION, up).await;
        let mut req = get("/grpc");
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        req.headers_mut()
            .insert("grpc-timeout", timeout.parse().unwrap());
        let t = Instant::now();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(
            resp.headers()["grpc-message"],
            "downstream duration timeout"
        );
        assert_eq!(t.elapsed().as_secs(), secs, "{timeout}");
    }
}

const HCM_TRY_IDLE: &str = r#"
stat_prefix: t
route_config:
  virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
    - match: {prefix: /}
      route:
        cluster: c
        timeout: 0s
        retry_policy: {retry_on: reset, num_retries: 1, per_try_idle_timeout: 3s, retry_back_off: {base_interval: 0.001s}}
http_filters: [{name: envoy.filters.http.router}]
"#;

/// `per_try_idle_timeout`: before the response, each attempt that hears nothing for 3 s
/// ends (and is retried); after it, a body that stalls for 3 s is reset.
#[tokio::test(start_paused = true)]
async fn per_try_idle_timeout_before_and_after_the_response() {
    let (mut send, ctx, _drain) = start(HCM_TRY_IDLE).await;
    let t = Instant::now();
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 504);
    // Two attempts of 3 s and a back-off of at most 2 ms.
    assert_eq!(t.elapsed().as_secs(), 6);
    let stats = &ctx.clusters.get("c").unwrap().stats;
    assert_eq!(stats.upstream_rq_per_try_idle_timeout.get(), 2);

    let up = stalling_upstream().await;
    let (mut send, ctx, _drain) = start_with::<Empty<bytes::Bytes>>(HCM_TRY_IDLE, up).await;
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let t = Instant::now();
    assert!(resp.into_body().collect().await.is_err(), "reset");
    assert_eq!(t.elapsed().as_secs(), 3);
    let stats = &ctx.clusters.get("c").unwrap().stats;
    assert_eq!(stats.upstream_rq_per_try_idle_timeout.get(), 1);
}
