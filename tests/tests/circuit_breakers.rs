//! Circuit breakers against Envoy 1.40 on the same config: `max_requests` overflow while
//! a request is outstanding (503 UO, `x-envoy-overloaded`, `upstream_rq_active_overflow`),
//! `max_retries` overflow (no retry, `upstream_rq_retry_overflow`), the
//! `circuit_breakers.default.*` gauges; and Istio's all-maximum thresholds loading.

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
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {prefix: /flaky/}
                route:
                  cluster: one
                  retry_policy: {retry_on: "5xx", num_retries: 2, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /istio/}
                route: {cluster: istio, prefix_rewrite: /}
              - match: {prefix: /}
                route: {cluster: one}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: one
    circuit_breakers:
      thresholds:
      - {priority: HIGH, max_requests: 100}
      - {max_requests: 1, max_retries: 0, track_remaining: true}
    load_assignment: {cluster_name: one, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: istio
    circuit_breakers:
      thresholds:
      - {max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true}
    load_assignment: {cluster_name: istio, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#;

/// Status, body and overload header of a request sent while `/delay/400` holds the
/// cluster's only request slot; and of a 5xx that may not be retried.
async fn overflow_case(p: &ProxyProcess, up: &HttpUpstream, key: &str) -> Vec<String> {
    let addr = p.listener("edge");
    let mut holder = Conn::h1(addr).await;
    let hold = tokio::spawn(async move { holder.get("h", "/delay/400", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut c = Conn::h1(addr).await;
    let r = c.get("h", "/", &[]).await;
    let overflowed = format!(
        "{} {:?} overloaded={:?}",
        r.status,
        r.text(),
        r.header("x-envoy-overloaded")
    );
    let held = hold.await.expect("holder");
    let r = c.get("h", &format!("/flaky/{key}/1/503"), &[]).await;
    let no_retry = format!("{} attempts={}", r.status, up.flaky_count(key));
    let r = c.get("h", "/istio/", &[]).await;
    vec![
        overflowed,
        format!("holder {held}"),
        no_retry,
        format!("istio {}", r.status),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_behaves_as_envoy() {
    let up = HttpUpstream::start("a").await;
    let cfg = render(CONFIG, &[("a", up.addr.port().to_string())]);
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    let e = overflow_case(&envoy, &up, "e").await;
    let r = overflow_case(&remora, &up, "r").await;
    assert_eq!(
        r,
        [
            "503 Service Unavailable \"upstream connect error or disconnect/reset before headers. reset reason: overflow\" overloaded=Some(\"true\")",
            "holder 200 OK",
            "503 Service Unavailable attempts=1",
            "istio 200 OK",
        ]
    );
    assert_eq!(e, r, "envoy vs remora");
    let names = [
        "cluster.one.upstream_rq_active_overflow",
        "cluster.one.upstream_rq_5xx",
        "cluster.one.upstream_rq_retry_overflow",
        "cluster.one.circuit_breakers.default.rq_open",
        "cluster.one.circuit_breakers.default.remaining_rq",
        "cluster.one.circuit_breakers.default.rq_retry_open",
    ];
    let (es, rs): (Vec<u64>, Vec<u64>) = tokio::task::spawn_blocking(move || {
        (
            names.iter().map(|n| envoy.stat(n)).collect(),
            names.iter().map(|n| remora.stat(n)).collect(),
        )
    })
    .await
    .expect("stats");
    assert_eq!(rs, [1, 2, 1, 0, 1, 0], "remora {names:?}");
    assert_eq!(es, rs, "envoy vs remora {names:?}");
}
