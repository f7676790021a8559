//! Route-level timeouts against Envoy 1.40 on the same config: a route's `idle_timeout`
//! replaces the connection manager's `stream_idle_timeout` (shorter, disabled with 0, or
//! inherited when unset; a complete request that times out waiting gets 504 `stream
//! timeout`), and Istio's zero `max_stream_duration` loads.

use std::time::Duration;

use tests::client::Conn;
use tests::process::{start_envoy_and_remora, ProxyProcess};
use tests::render;
use tests::upstream::HttpUpstream;

const CONFIG: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          stream_idle_timeout: 0.3s
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {prefix: /short/}
                route: {cluster: a, prefix_rewrite: /, idle_timeout: 0.1s}
              - match: {prefix: /off/}
                route: {cluster: a, prefix_rewrite: /, idle_timeout: 0s}
              - match: {prefix: /istio/}
                route:
                  cluster: a
                  prefix_rewrite: /
                  max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}
              - match: {prefix: /}
                route: {cluster: a}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#;

/// For each path: what it came to and whether it took the time expected (the
/// milliseconds it took come separately, for the failure message).
async fn outcomes(p: &ProxyProcess) -> (Vec<String>, Vec<u128>) {
    let addr = p.listener("edge");
    let (mut out, mut took) = (Vec::new(), Vec::new());
    for (path, min_ms, max_ms) in [
        // Timers may fire a few milliseconds early as the client measures them.
        ("/short/delay/250", 80, 290),
        ("/off/delay/500", 480, 2000),
        ("/delay/500", 280, 490),
        ("/istio/delay/10", 5, 2000),
    ] {
        let mut c = Conn::h1(addr).await;
        let t0 = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), c.get("h", path, &[]))
            .await
            .expect("answer within 5 s");
        let ms = t0.elapsed().as_millis();
        out.push(format!(
            "{path}: {} {:?} in range: {}",
            r.status,
            r.text(),
            (min_ms..max_ms).contains(&ms)
        ));
        took.push(ms);
    }
    (out, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_idle_timeout_behaves_as_envoy() {
    let up = HttpUpstream::start("a").await;
    let cfg = render(CONFIG, &[("a", up.addr.port().to_string())]);
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    let (r, r_ms) = outcomes(&remora).await;
    assert_eq!(
        r,
        [
            "/short/delay/250: 504 Gateway Timeout \"stream timeout\" in range: true",
            "/off/delay/500: 200 OK \"delayed\" in range: true",
            "/delay/500: 504 Gateway Timeout \"stream timeout\" in range: true",
            "/istio/delay/10: 200 OK \"delayed\" in range: true",
        ]
    );
    let (e, e_ms) = outcomes(&envoy).await;
    assert_eq!(
        e, r,
        "envoy vs remora (ms: envoy {e_ms:?}, remora {r_ms:?})"
    );
}
