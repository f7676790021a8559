//! Active health checking, differentially: Envoy 1.40 and Remora on the same config,
//! checking the same upstreams, whose health the test flips.
//!
//! - HTTP: `b` answering 503 leaves rotation at once (an unexpected status is not
//!   retried against the threshold), comes back after `healthy_threshold` passes; the
//!   checks carry the configured `host`, the added header and `user-agent: Envoy/HC`, or
//!   the cluster's name as host when none is configured.
//! - TCP: a closed port is unhealthy and gets no traffic; sent and expected payloads
//!   (blocks in order) against an echo server, matching and not.
//! - gRPC: `grpc.health.v1.Health/Check` against tonic-health, NOT_SERVING then SERVING.
//! - `no_traffic_interval`: a cluster that never carried traffic is checked once in the
//!   first 60 s, whatever its interval.
//! - `/clusters` shows `/failed_active_hc` for the failing host in both proxies.
//! - A response with `x-envoy-immediate-health-check-fail` fails its host's active
//!   health checking at once (a passive failure); `healthy_threshold` passes bring it
//!   back.
//! - EDS (over ADS from the fake control plane): a host EDS removes while it passes its
//!   checks stays in rotation, flagged `/pending_dynamic_removal`, until it fails one;
//!   named again, it is back as it was; `ignore_health_on_host_removal` removes at once.
//! - CDS: a changed cluster warms on its first round of checks while the version it
//!   replaces serves, with its hosts' health.

use std::collections::BTreeMap;

use tests::client::Conn;
use tests::control_plane;
use tests::process::{start_envoy_and_remora, wait_for_stat, ProxyProcess};
use tests::render;
use tests::upstream::{closed_port, tcp_echo, HttpUpstream};
use tonic_health::ServingStatus;

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
              - match: {prefix: /http/}
                route: {cluster: http_hc}
              - match: {prefix: /tcp/}
                route: {cluster: tcp_hc}
              - match: {prefix: /passive/}
                route: {cluster: passive, prefix_rewrite: /}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: http_hc
    # Envoy otherwise merges health changes within a second before its workers see them.
    common_lb_config: {update_merge_window: 0s}
    health_checks:
    - timeout: 1s
      interval: 0.1s
      no_traffic_interval: 0.1s
      unhealthy_threshold: 2
      healthy_threshold: 2
      http_health_check:
        path: /health
        host: hc.example
        request_headers_to_add: [{header: {key: x-hc, value: "yes"}}]
    load_assignment: {cluster_name: http_hc, endpoints: [{lb_endpoints: [{{a}}, {{b}}]}]}
  - name: passive
    common_lb_config: {update_merge_window: 0s}
    # Checks a second apart, two to come back: a host failed by a response stays out a
    # second or more.
    health_checks:
    - {timeout: 1s, interval: 1s, no_traffic_interval: 1s, unhealthy_threshold: 2, healthy_threshold: 2, http_health_check: {path: /health}}
    load_assignment: {cluster_name: passive, endpoints: [{lb_endpoints: [{{a}}, {{b}}]}]}
  - name: tcp_hc
    common_lb_config: {update_merge_window: 0s}
    health_checks:
    - {timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}
    load_assignment: {cluster_name: tcp_hc, endpoints: [{lb_endpoints: [{{a}}, {{closed}}]}]}
  - name: grpc_hc
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    health_checks:
    - {timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {service_name: svc}}
    load_assignment: {cluster_name: grpc_hc, endpoints: [{lb_endpoints: [{{grpc}}]}]}
  - name: tcp_payload
    health_checks:
    - {timeout: 0.3s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {send: {text: "50494e47"}, receive: [{text: "50"}, {text: "4e47"}]}}
    load_assignment: {cluster_name: tcp_payload, endpoints: [{lb_endpoints: [{{echo}}]}]}
  - name: tcp_mismatch
    health_checks:
    - {timeout: 0.3s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {send: {text: "50494e47"}, receive: [{text: "504f4e47"}]}}
    load_assignment: {cluster_name: tcp_mismatch, endpoints: [{lb_endpoints: [{{echo}}]}]}
  - name: quiet
    health_checks:
    - {timeout: 1s, interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /health}}
    load_assignment: {cluster_name: quiet, endpoints: [{lb_endpoints: [{{a}}]}]}
"#;

fn endpoint(port: u16) -> String {
    format!(
        "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}"
    )
}

/// Which upstream answered each of `n` requests (or the status when none did).
async fn spread(p: &ProxyProcess, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut c = Conn::h1(p.listener("edge")).await;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = c.get("h", path, &[]).await;
        let who = match r.header("x-upstream") {
            Some(u) => u.to_owned(),
            None => r.status.as_u16().to_string(),
        };
        *out.entry(who).or_default() += 1;
    }
    out
}

/// Waits for a stat in both proxies.
async fn both(envoy: &ProxyProcess, remora: &ProxyProcess, name: &str, want: u64) {
    assert!(
        wait_for_stat(envoy, name, want).await,
        "envoy {name} != {want}"
    );
    assert!(
        wait_for_stat(remora, name, want).await,
        "remora {name} != {want}: {}",
        remora.stderr()
    );
}

/// The `/clusters` line of `addr`'s health flags.
async fn health_flags(p: &ProxyProcess, cluster: &str, addr: std::net::SocketAddr) -> String {
    let admin = p.admin;
    let body = tokio::task::spawn_blocking(move || tests::process::admin_get(admin, "/clusters"))
        .await
        .expect("clusters")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let prefix = format!("{cluster}::{addr}::health_flags::");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("<missing>")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_match_envoy() {
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let (grpc, reporter, _grpc_task) = tests::grpc::serve_health().await;
    reporter
        .set_service_status("svc", ServingStatus::Serving)
        .await;
    let closed = closed_port();
    let (echo, _, _echo_task) = tcp_echo().await;
    let cfg = render(
        CONFIG,
        &[
            ("a", endpoint(a.addr.port())),
            ("b", endpoint(b.addr.port())),
            ("closed", endpoint(closed.port())),
            ("grpc", endpoint(grpc.port())),
            ("echo", endpoint(echo.port())),
        ],
    );
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;

    // Everything healthy that can be; the closed port is not.
    both(&envoy, &remora, "cluster.http_hc.health_check.healthy", 2).await;
    both(&envoy, &remora, "cluster.tcp_hc.health_check.healthy", 1).await;
    both(&envoy, &remora, "cluster.tcp_hc.membership_healthy", 1).await;
    both(&envoy, &remora, "cluster.grpc_hc.health_check.healthy", 1).await;
    both(
        &envoy,
        &remora,
        "cluster.tcp_payload.health_check.healthy",
        1,
    )
    .await;
    both(
        &envoy,
        &remora,
        "cluster.tcp_mismatch.health_check.healthy",
        0,
    )
    .await;
    let even = BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 10)]);
    for p in [&envoy, &remora] {
        assert_eq!(spread(p, "/http/", 20).await, even);
        assert_eq!(
            spread(p, "/tcp/", 10).await,
            BTreeMap::from([("a".to_owned(), 10)])
        );
        assert_eq!(health_flags(p, "tcp_hc", closed).await, "/failed_active_hc");
        assert_eq!(health_flags(p, "http_hc", b.addr).await, "healthy");
    }

    // An unexpected status takes `b` out at once; two passes bring it back.
    b.set_health(503);
    both(&envoy, &remora, "cluster.http_hc.health_check.healthy", 1).await;
    both(&envoy, &remora, "cluster.http_hc.membership_healthy", 1).await;
    for p in [&envoy, &remora] {
        assert_eq!(
            spread(p, "/http/", 20).await,
            BTreeMap::from([("a".to_owned(), 20)])
        );
        assert_eq!(
            health_flags(p, "http_hc", b.addr).await,
            "/failed_active_hc"
        );
    }
    b.set_health(200);
    both(&envoy, &remora, "cluster.http_hc.health_check.healthy", 2).await;
    for p in [&envoy, &remora] {
        assert_eq!(spread(p, "/http/", 20).await, even);
    }

    // A response saying `x-envoy-immediate-health-check-fail` takes its host out at
    // once (whichever host answered it); the other one takes all the traffic until two
    // checks pass.
    both(&envoy, &remora, "cluster.passive.health_check.healthy", 2).await;
    for p in [&envoy, &remora] {
        let mut c = Conn::h1(p.listener("edge")).await;
        let r = c.get("h", "/passive/hc-fail", &[]).await;
        assert_eq!(r.status, 200);
        let failed = r.header("x-upstream").unwrap_or_default().to_owned();
        let (other, failed_addr) = match failed.as_str() {
            "a" => ("b", a.addr),
            "b" => ("a", b.addr),
            who => panic!("answered by {who:?}"),
        };
        assert!(wait_for_stat(p, "cluster.passive.membership_healthy", 1).await);
        assert_eq!(p.stat("cluster.passive.health_check.passive_failure"), 1);
        assert_eq!(p.stat("cluster.passive.health_check.healthy"), 1);
        // Excluded from the counts that decide panic (one healthy of one counted).
        assert_eq!(p.stat("cluster.passive.membership_excluded"), 1);
        assert_eq!(
            health_flags(p, "passive", failed_addr).await,
            "/failed_active_hc/excluded_via_immediate_hc_fail"
        );
        assert_eq!(
            spread(p, "/passive/", 10).await,
            BTreeMap::from([(other.to_owned(), 10)])
        );
    }
    both(&envoy, &remora, "cluster.passive.health_check.healthy", 2).await;
    both(&envoy, &remora, "cluster.passive.membership_healthy", 2).await;
    both(&envoy, &remora, "cluster.passive.membership_excluded", 0).await;

    // gRPC: NOT_SERVING fails at once, SERVING passes.
    reporter
        .set_service_status("svc", ServingStatus::NotServing)
        .await;
    both(&envoy, &remora, "cluster.grpc_hc.health_check.healthy", 0).await;
    reporter
        .set_service_status("svc", ServingStatus::Serving)
        .await;
    both(&envoy, &remora, "cluster.grpc_hc.health_check.healthy", 1).await;

    // The quiet cluster never carried traffic: one check, then the 60 s no-traffic wait.
    for p in [&envoy, &remora] {
        assert_eq!(p.stat("cluster.quiet.health_check.attempt"), 1);
        assert_eq!(p.stat("cluster.quiet.health_check.success"), 1);
        assert_eq!(p.stat("cluster.http_hc.health_check.network_failure"), 0);
        assert!(p.stat("cluster.tcp_hc.health_check.network_failure") >= 2);
        assert_eq!(p.stat("cluster.tcp_payload.health_check.failure"), 0);
        // An answer that never matches fails by timeout, a network failure.
        assert!(p.stat("cluster.tcp_mismatch.health_check.network_failure") >= 1);
    }

    // What the checks sent (both proxies' checks reach the same upstreams).
    let seen = a.health_requests();
    assert!(seen.len() > 4, "{} checks", seen.len());
    for h in seen {
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(get("user-agent"), "Envoy/HC", "{h:?}");
        // Without a configured host, a check names its cluster.
        if get("x-hc") == "yes" {
            assert_eq!(get("host"), "hc.example", "{h:?}");
        } else {
            assert!(["quiet", "passive"].contains(&get("host")), "{h:?}");
        }
    }
}

/// Both proxies on delta ADS from `cp`, whose listener `edge` takes its routes from
/// `routes` (named `routes`); returns once both serve it.
async fn start_over_ads(
    cp: &control_plane::ControlPlane,
    routes: envoy_types::pb::google::protobuf::Any,
) -> (ProxyProcess, ProxyProcess) {
    use control_plane::{ads_bootstrap, http_listener, ResourceType};
    let any_port = "127.0.0.1:0".parse().expect("addr");
    cp.set(
        ResourceType::Listener,
        vec![http_listener("edge", any_port, "routes")],
    );
    cp.set(ResourceType::RouteConfiguration, vec![routes]);
    let (envoy, remora) = start_envoy_and_remora(&ads_bootstrap(cp, "DELTA_GRPC")).await;
    both(
        &envoy,
        &remora,
        "listener_manager.total_listeners_active",
        1,
    )
    .await;
    (envoy, remora)
}

/// An EDS cluster over ADS with HTTP health checks on `/health`, every 0.1 s.
fn checked_eds_cluster(name: &str, extra: &str) -> envoy_types::pb::google::protobuf::Any {
    control_plane::cluster(&format!(
        r#"
name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}
common_lb_config: {{update_merge_window: 0s}}
health_checks:
- {{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{path: /health}}}}
{extra}
"#
    ))
}

/// What a test sees of an EDS host set: membership, `b`'s flags in each cluster, and
/// who answered 20 requests to each.
async fn eds_view(p: &ProxyProcess, b: std::net::SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    for (cluster, path) in [("web", "/"), ("web_ignore", "/ignore/")] {
        let (admin, c) = (p.admin, cluster.to_owned());
        let total = tokio::task::spawn_blocking(move || {
            tests::process::admin_get(admin, "/stats")
                .map(|(_, s)| tests::process::stat_in(&s, &format!("cluster.{c}.membership_total")))
        })
        .await
        .expect("stats");
        out.push(format!(
            "{cluster}: total {total:?}, b {}, answers {:?}",
            health_flags(p, cluster, b).await,
            spread(p, path, 20).await
        ));
    }
    out
}

/// Hosts EDS removes while they pass their health checks stay (`/pending_dynamic_removal`,
/// still in rotation) until they fail a check, as in Envoy; EDS naming one again takes
/// the flag away; `ignore_health_on_host_removal` removes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_removed_hosts_stay_while_healthy_as_envoy() {
    use tests::control_plane::{endpoints_of, route, ControlPlane, ResourceType};
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let cp = ControlPlane::start_tcp().await;
    cp.set(
        ResourceType::Cluster,
        vec![
            checked_eds_cluster("web", ""),
            checked_eds_cluster("web_ignore", "ignore_health_on_host_removal: true"),
        ],
    );
    let both_hosts = || {
        vec![
            endpoints_of("web", &[a.addr, b.addr]),
            endpoints_of("web_ignore", &[a.addr, b.addr]),
        ]
    };
    let only_a = || {
        vec![
            endpoints_of("web", &[a.addr]),
            endpoints_of("web_ignore", &[a.addr]),
        ]
    };
    cp.set(ResourceType::ClusterLoadAssignment, both_hosts());
    let (envoy, remora) = start_over_ads(
        &cp,
        route(
            "name: routes\nvirtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /ignore/}, route: {cluster: web_ignore}}, {match: {prefix: /}, route: {cluster: web}}]}]",
        ),
    )
    .await;
    both(&envoy, &remora, "cluster.web.membership_healthy", 2).await;
    both(&envoy, &remora, "cluster.web_ignore.membership_healthy", 2).await;

    // EDS drops b: it stays in `web` (healthy, pending removal), leaves `web_ignore`.
    cp.set(ResourceType::ClusterLoadAssignment, only_a());
    both(&envoy, &remora, "cluster.web_ignore.membership_total", 1).await;
    let e = eds_view(&envoy, b.addr).await;
    let r = eds_view(&remora, b.addr).await;
    assert_eq!(
        r,
        [
            "web: total Some(2), b /pending_dynamic_removal, answers {\"a\": 10, \"b\": 10}",
            "web_ignore: total Some(1), b <missing>, answers {\"a\": 20}",
        ],
        "remora after b was removed"
    );
    assert_eq!(e, r, "envoy vs remora after b was removed");

    // EDS names b again: the same host, healthy at once, the flag gone.
    cp.set(ResourceType::ClusterLoadAssignment, both_hosts());
    both(&envoy, &remora, "cluster.web_ignore.membership_total", 2).await;
    both(&envoy, &remora, "cluster.web_ignore.membership_healthy", 2).await;
    let e = eds_view(&envoy, b.addr).await;
    let r = eds_view(&remora, b.addr).await;
    assert_eq!(
        r[0], "web: total Some(2), b healthy, answers {\"a\": 10, \"b\": 10}",
        "remora after b came back"
    );
    assert_eq!(e, r, "envoy vs remora after b came back");

    // Removed again, then failing its check: it leaves.
    cp.set(ResourceType::ClusterLoadAssignment, only_a());
    both(&envoy, &remora, "cluster.web_ignore.membership_total", 1).await;
    b.set_health(503);
    both(&envoy, &remora, "cluster.web.membership_total", 1).await;
    let e = eds_view(&envoy, b.addr).await;
    let r = eds_view(&remora, b.addr).await;
    assert_eq!(
        r[0], "web: total Some(1), b <missing>, answers {\"a\": 20}",
        "remora after b failed"
    );
    assert_eq!(e, r, "envoy vs remora after b failed");
}

/// A cluster delivered by CDS with its hosts inline and HTTP health checks on `/health`
/// (`timeout` as given).
fn checked_static_cluster(
    name: &str,
    hosts: &[std::net::SocketAddr],
    timeout: &str,
) -> envoy_types::pb::google::protobuf::Any {
    let eps: Vec<String> = hosts.iter().map(|a| endpoint(a.port())).collect();
    control_plane::cluster(&format!(
        r#"
name: {name}
type: STATIC
connect_timeout: 1s
common_lb_config: {{update_merge_window: 0s}}
health_checks:
- {{timeout: {timeout}, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{path: /health}}}}
load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{}]}}]}}
"#,
        eps.join(", ")
    ))
}

async fn stat_of(p: &ProxyProcess, name: &'static str) -> u64 {
    let admin = p.admin;
    tokio::task::spawn_blocking(move || {
        tests::process::admin_get(admin, "/stats")
            .map(|(_, s)| tests::process::stat_in(&s, name))
            .unwrap_or(u64::MAX)
    })
    .await
    .expect("stats")
}

/// A cluster that CDS changes warms on its first round of health checks, as in Envoy:
/// meanwhile the version it replaces serves, with its hosts' health (`b` out), rather
/// than a new version whose hosts are all unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cds_updated_clusters_warm_on_health_checks_as_envoy() {
    use tests::control_plane::{route_to, ControlPlane, ResourceType};
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    b.set_health(503);
    let cp = ControlPlane::start_tcp().await;
    let hosts = [a.addr, b.addr];
    cp.set(
        ResourceType::Cluster,
        vec![checked_static_cluster("web", &hosts, "2s")],
    );
    let (envoy, remora) = start_over_ads(&cp, route_to("routes", "web", "v1")).await;
    both(&envoy, &remora, "cluster.web.membership_healthy", 1).await;

    // Checks now take 0.8 s; a new version (another timeout) warms that long.
    a.set_health_delay(800);
    b.set_health_delay(800);
    cp.set(
        ResourceType::Cluster,
        vec![checked_static_cluster("web", &hosts, "3s")],
    );
    let mut seen = Vec::new();
    for p in [&envoy, &remora] {
        assert!(
            wait_for_stat(p, "cluster_manager.warming_clusters", 1).await,
            "warming"
        );
        seen.push(format!("warming: answers {:?}", spread(p, "/", 10).await));
    }
    both(&envoy, &remora, "cluster_manager.warming_clusters", 0).await;
    for p in [&envoy, &remora] {
        seen.push(format!(
            "warmed: answers {:?}, healthy {}",
            spread(p, "/", 10).await,
            stat_of(p, "cluster.web.membership_healthy").await
        ));
    }
    assert_eq!(
        seen,
        [
            "warming: answers {\"a\": 10}",
            "warming: answers {\"a\": 10}",
            "warmed: answers {\"a\": 10}, healthy 1",
            "warmed: answers {\"a\": 10}, healthy 1",
        ],
        "envoy, remora"
    );
}
