//! `/stats/prometheus` against Envoy 1.40 on the same config and traffic: every stat
//! that both proxies list in `/stats` has the same Prometheus metric name and the same
//! tags, in the same order, under Envoy's default tag extraction (cluster names,
//! connection manager and TCP proxy prefixes, listener addresses, response codes and
//! classes; nested families such as `circuit_breakers.high.*`, `outlier_detection.*`,
//! `health_check.*` and `fault.*`). Also `?filter=` and `?usedonly` on that endpoint.

use std::collections::BTreeMap;

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
              - match: {prefix: /high/}
                route: {cluster: web, prefix_rewrite: /, priority: HIGH}
              - match: {prefix: /}
                route: {cluster: web}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort: {http_status: 503, percentage: {numerator: 0}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: relay
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: relay
          cluster: web
  clusters:
  - name: web
    connect_timeout: 1s
    circuit_breakers:
      thresholds:
      - {max_requests: 100, track_remaining: true}
      - {priority: HIGH, track_remaining: true}
    outlier_detection: {consecutive_5xx: 5}
    health_checks:
    - timeout: 1s
      interval: 0.2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: {path: /health}
    load_assignment: {cluster_name: web, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#;

/// The same traffic to each proxy: successes at both priorities, a 404 and a 503 from
/// the upstream, and a TCP connection relayed.
async fn traffic(p: &ProxyProcess) {
    let mut c = Conn::h1(p.listener("edge")).await;
    for path in ["/", "/high/", "/status/404", "/status/503"] {
        c.get("h", path, &[]).await;
    }
    let tcp = tokio::net::TcpStream::connect(p.listener("relay"))
        .await
        .expect("relay");
    drop(tcp);
}

/// Stat names as `/stats` lists them, keyed with listener ports made `PORT` (each proxy
/// binds its own).
fn names(p: &ProxyProcess) -> BTreeMap<String, String> {
    let (status, body) = p.admin_get("/stats");
    assert_eq!(status, 200);
    body.lines()
        .filter_map(|l| l.split_once(": ").map(|(n, _)| n))
        .map(|n| (without_ports(n), n.to_string()))
        .collect()
}

fn without_ports(s: &str) -> String {
    regex::Regex::new(r"127\.0\.0\.1_\d+")
        .expect("regex")
        .replace_all(s, "127.0.0.1_PORT")
        .into_owned()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The Prometheus series of one stat (metric name and tags, without the value), by
/// `/stats/prometheus?filter=`.
fn series(p: &ProxyProcess, name: &str) -> Vec<String> {
    let filter = format!("^{}$", regex::escape(name));
    let (status, body) = p.admin_get(&format!("/stats/prometheus?filter={}", encode(&filter)));
    assert_eq!(status, 200, "{name}: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| without_ports(l.rsplit_once(' ').map_or(l, |(s, _)| s)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_names_and_tags_match_envoy() {
    let up = HttpUpstream::start("a").await;
    let cfg = render(CONFIG, &[("a", up.addr.port().to_string())]);
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    traffic(&envoy).await;
    traffic(&remora).await;
    let (checked, diffs, usedonly) = tokio::task::spawn_blocking(move || {
        let (e, r) = (names(&envoy), names(&remora));
        let mut checked = Vec::new();
        let mut diffs = Vec::new();
        for (key, r_name) in &r {
            let Some(e_name) = e.get(key) else { continue };
            let (es, rs) = (series(&envoy, e_name), series(&remora, r_name));
            if es != rs {
                diffs.push(format!("{key}:\n  envoy  {es:?}\n  remora {rs:?}"));
            }
            checked.push(key.clone());
        }
        // `usedonly` leaves out what never counted: of the classes 1xx, 4xx and 5xx only
        // the last two (one 404, one 503).
        let used = |p: &ProxyProcess| {
            let filter = encode(r"^cluster\.web\.upstream_rq_[145]xx$");
            p.admin_get(&format!("/stats/prometheus?usedonly&filter={filter}"))
                .1
        };
        let usedonly = (used(&envoy), used(&remora));
        (checked, diffs, usedonly)
    })
    .await
    .expect("compare");
    // The comparison covers the families whose tags matter.
    for family in [
        "cluster.web.upstream_rq_5xx",
        "cluster.web.circuit_breakers.high.remaining_cx_pools",
        "cluster.web.outlier_detection.ejections_active",
        "cluster.web.health_check.success",
        "http.edge.downstream_rq_2xx",
        "http.edge.fault.aborts_injected",
        "listener.127.0.0.1_PORT.downstream_cx_total",
        "tcp.relay.downstream_cx_total",
    ] {
        assert!(
            checked.iter().any(|c| c == family),
            "{family} is not listed by both proxies; checked {checked:?}"
        );
    }
    assert!(
        diffs.is_empty(),
        "{} of {} stats differ:\n{}",
        diffs.len(),
        checked.len(),
        diffs.join("\n")
    );
    assert_eq!(
        usedonly.1,
        "# TYPE envoy_cluster_upstream_rq_xx counter\n\
         envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"4\",envoy_cluster_name=\"web\"} 1\n\
         envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"web\"} 1\n"
    );
    assert_eq!(usedonly.0, usedonly.1, "envoy vs remora");
}
