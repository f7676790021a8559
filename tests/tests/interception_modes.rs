//! Interception beyond the injector's defaults, end to end in network namespaces:
//! TPROXY inbound (the original destination is the socket's own local address, on a
//! transparent listener) and an IPv6-only pod (`ip6tables` rules, `IP6T_SO_ORIGINAL_DST`,
//! `::6` as the inbound passthrough source). Needs root: see `tests::netns::root_or_skip`.

use std::io::Write;

use tests::istio_iptables::apply;
use tests::netns::{root_or_skip, Netns};
use tests::pod::{bind, connect, echo, echo_through, http_ok, read_all, serve, who_am_i};
use tests::process::{remora_bin, ProxyProcess};
use tests::sidecar::{self, Family, V4, V6};

const SVC_V4: &str = "10.87.0.1";
const SVC_V6: &str = "fd00:87::1";

/// The sidecar's virtual listeners and passthrough clusters, plus a per-port HTTP
/// listener for the service's port 80 at `svc`.
fn config(f: &Family, svc: &str, transparent: bool) -> String {
    let any = f.any;
    let virtual_listeners = sidecar::virtual_listeners(f, transparent);
    let passthrough_clusters = sidecar::passthrough_clusters(f);
    let svc_cluster = sidecar::static_cluster("outbound|80||svc", svc, 80);
    format!(
        r#"
static_resources:
  listeners:
{virtual_listeners}  - name: "{any}_80"
    address: {{socket_address: {{address: "{any}", port_value: 80}}}}
    bind_to_port: false
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}
    filter_chains:
    - filter_chain_match: {{application_protocols: [http/1.1]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_80
          route_config:
            virtual_hosts:
            - name: svc
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: "outbound|80||svc"}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
{passthrough_clusters}{svc_cluster}admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"#
    )
}

/// `host:port` with brackets for IPv6.
fn hostport(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[test]
fn tproxy_inbound_reaches_the_app_through_a_transparent_listener() {
    if !root_or_skip("tproxy_inbound_reaches_the_app_through_a_transparent_listener") {
        return;
    }
    let (pod_ip, svc_ip) = ("10.87.0.2", SVC_V4);
    let pod = Netns::new("tpod");
    let svc = Netns::new("tsvc");
    pod.link(&svc, &format!("{pod_ip}/24"), &format!("{svc_ip}/24"));
    serve(bind(&pod, "0.0.0.0:8080"), who_am_i);
    serve(bind(&pod, "0.0.0.0:9090"), who_am_i);

    // The injector's flags, then TPROXY for inbound port 8080 only (last value wins).
    let tproxy = ["-m", "TPROXY", "-b", "8080"];
    apply(&pod, &tproxy);
    let mangle = pod.ok("iptables-save", &["-t", "mangle"]);
    assert!(mangle.contains("-j TPROXY"), "{mangle}");
    let nat = pod.ok("iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("-A PREROUTING"), "no inbound NAT: {nat}");
    assert!(
        pod.ok("ip", &["rule"]).contains("lookup 133"),
        "TPROXY's policy route"
    );
    // Transparent sockets need CAP_NET_ADMIN, which Istio grants the proxy in this mode.
    let remora = ProxyProcess::start_in_netns(
        &pod.name,
        1337,
        &["net_admin"],
        &remora_bin(),
        &config(&V4, SVC_V4, true),
        &[],
    );

    // Inbound to 8080: the mangle table's TPROXY rule (not NAT) delivers it to 15006,
    // whose socket's local address is the original destination; the proxy connects on
    // to the app from 127.0.0.6.
    let reply = read_all(connect(&svc, &format!("{pod_ip}:8080")));
    assert_eq!(reply, "peer 127.0.0.6");
    assert_eq!(
        remora.stat("cluster.InboundPassthroughClusterIpv4.upstream_cx_total"),
        1
    );
    // A port outside -b is not captured.
    let reply = read_all(connect(&svc, &format!("{pod_ip}:9090")));
    assert_eq!(reply, format!("peer {svc_ip}"));

    // --cleanup takes the mangle rules and the policy route away.
    apply(&pod, &[&tproxy[..], &["--cleanup"]].concat());
    let reply = read_all(connect(&svc, &format!("{pod_ip}:8080")));
    assert_eq!(reply, format!("peer {svc_ip}"), "inbound is direct again");
    assert!(!pod.ok("ip", &["rule"]).contains("lookup 133"));
    assert_eq!(
        remora.stat("cluster.InboundPassthroughClusterIpv4.upstream_cx_total"),
        1
    );
}

#[test]
fn ipv6_pod_traffic_goes_through_remora() {
    if !root_or_skip("ipv6_pod_traffic_goes_through_remora") {
        return;
    }
    let (pod_ip, svc_ip) = ("fd00:87::2", SVC_V6);
    let pod = Netns::new("v6pod");
    let svc = Netns::new("v6svc");
    pod.link(&svc, &format!("{pod_ip}/64"), &format!("{svc_ip}/64"));
    serve(bind(&svc, &hostport(svc_ip, 80)), http_ok);
    serve(bind(&svc, &hostport(svc_ip, 9000)), echo);
    serve(bind(&pod, "[::]:8080"), who_am_i);

    // The pod has only IPv6 addresses: iptables-init detects it and writes ip6tables
    // rules (and puts ::6 on lo).
    apply(&pod, &[]);
    let rules = pod.rules("ip6tables-save");
    assert!(
        rules.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{rules}"
    );
    let remora = ProxyProcess::start_in_netns(
        &pod.name,
        1337,
        &[],
        &remora_bin(),
        &config(&V6, SVC_V6, false),
        &[],
    );

    // Outbound HTTP: IP6T_SO_ORIGINAL_DST finds [svc]:80, the hand-off picks [::]_80.
    let mut s = connect(&pod, &hostport(svc_ip, 80));
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .expect("write");
    let reply = read_all(s);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("svc-http"),
        "{reply}"
    );
    assert_eq!(remora.stat("cluster.outbound|80||svc.upstream_rq_total"), 1);

    // Outbound raw TCP: virtualOutbound's own PassthroughCluster.
    assert_eq!(
        echo_through(&pod, &hostport(svc_ip, 9000), b"ping6"),
        b"ping6"
    );
    assert_eq!(
        remora.stat("cluster.PassthroughCluster.upstream_cx_total"),
        1
    );

    // Inbound: through 15006 to the app, from ::6.
    let reply = read_all(connect(&svc, &hostport(pod_ip, 8080)));
    assert_eq!(reply, "peer ::6");
    assert_eq!(
        remora.stat("cluster.InboundPassthroughClusterIpv6.upstream_cx_total"),
        1
    );
}
