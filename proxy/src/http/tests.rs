//! Timeouts of the connection manager, in paused time: the route timeout and the
//! connection idle timeout.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{server, Downstream, HttpContext};
use crate::config::hcm::HttpManager;
use crate::drain::Drain;
use crate::stats::Store;
use crate::testutil::{from_yaml, static_cluster};
use crate::upstream::pool::Pools;
use crate::upstream::ClusterManager;

type Hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

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

async fn start(
    hcm_yaml: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    Arc<HttpContext>,
    Drain,
) {
    let store = Store::default();
    let up = silent_upstream().await;
    let clusters = Arc::new(ClusterManager::new(vec![static_cluster("c", up)], &store));
    let hcm: HttpManager = from_yaml::<Hcm, _>(
        hcm_yaml,
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    );
    let ctx = Arc::new(HttpContext::new(
        Arc::new(hcm),
        clusters,
        &store,
        "192.0.2.1".parse().unwrap(),
    ));
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let down = Arc::new(Downstream {
        peer: None,
        local: None,
        pools: Arc::new(Pools::default()),
    });
    let drain = Drain::default();
    tokio::spawn(server::serve(server_io, ctx.clone(), down, drain.watch()));
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(conn);
    (send, ctx, drain)
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
    drain.start();
    let t = Instant::now();
    while !send.is_closed() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(t.elapsed() < Duration::from_secs(1));
}
