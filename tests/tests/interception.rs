//! End to end in network namespaces: a "pod" namespace with iptables-init applied using
//! the sidecar injector's default flags and Remora running as UID 1337 on an
//! Istio-shaped config (virtualOutbound 15001 handing off by original destination,
//! virtualInbound 15006, PassthroughCluster), and a "remote service" namespace over a
//! veth pair. The same scenario runs against Envoy 1.40 as the differential check.
//! Needs root: see `tests::netns::root_or_skip`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tests::envoy::envoy_bin;
use tests::istio_iptables::apply;
use tests::netns::{root_or_skip, Netns};
use tests::pod::{bind, connect, echo, http_ok, read_all, serve, who_am_i};
use tests::process::{remora_bin, ProxyProcess};
use tests::sidecar::{self, tcp_proxy, V4};

const POD: &str = "10.88.0.2";
const SVC: &str = "10.88.0.1";

const LISTENER_FILTERS: &str = r#"
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    - name: envoy.filters.listener.http_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}
    listener_filters_timeout: 0.3s
    continue_on_listener_filters_timeout: true"#;

/// Istio's shape: virtualOutbound and virtualInbound bind; per-service outbound
/// listeners do not, and are reached by hand-off.
fn config() -> String {
    let passthrough = tcp_proxy("PassthroughCluster", "PassthroughCluster");
    let secure = tcp_proxy("outbound_443_secure", "outbound|443||secure.example");
    let mysql = tcp_proxy("outbound_3306", "outbound|3306||db");
    let virtual_listeners = sidecar::virtual_listeners(&V4, false);
    let passthrough_clusters = sidecar::passthrough_clusters(&V4);
    let services = [
        ("outbound|80||svc", 80),
        ("outbound|443||secure.example", 443),
        ("outbound|3306||db", 3306),
    ]
    .map(|(name, port)| sidecar::static_cluster(name, SVC, port))
    .concat();
    format!(
        r#"
static_resources:
  listeners:
{virtual_listeners}  - name: 0.0.0.0_80
    address: {{socket_address: {{address: 0.0.0.0, port_value: 80}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND{LISTENER_FILTERS}
    filter_chains:
    - filter_chain_match: {{application_protocols: [http/1.0, http/1.1, h2c]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_80
          route_config:
            virtual_hosts:
            - name: svc
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: "outbound|80||svc"}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
    default_filter_chain:
      filters: [{passthrough}]
  - name: 0.0.0.0_443
    address: {{socket_address: {{address: 0.0.0.0, port_value: 443}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND{LISTENER_FILTERS}
    filter_chains:
    - filter_chain_match: {{transport_protocol: tls, server_names: [secure.example]}}
      filters: [{secure}]
    default_filter_chain:
      filters: [{passthrough}]
  - name: 0.0.0.0_3306
    address: {{socket_address: {{address: 0.0.0.0, port_value: 3306}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND{LISTENER_FILTERS}
    filter_chains:
    - filters: [{mysql}]
  clusters:
{passthrough_clusters}{services}admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"#
    )
}

/// Answers how many bytes arrived and the first one, once the client stops sending.
fn first_bytes(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    let _ = write!(
        s,
        "got {n} first {:#04x}",
        buf.first().copied().unwrap_or(0)
    );
}

/// Speaks first, like a MySQL server's greeting, then echoes.
fn server_first(mut s: TcpStream) {
    let _ = s.write_all(b"GREETING\n");
    echo(s);
}

#[test]
fn pod_traffic_goes_through_remora_and_cleanup_restores_direct_connectivity() {
    if !root_or_skip("pod_traffic_goes_through_remora_and_cleanup_restores_direct_connectivity") {
        return;
    }
    pod_scenario(&remora_bin(), &[]);
}

/// The differential half: Envoy 1.40 on the same rules and config, as UID 1337, meets
/// every expectation the Remora test checks (replies and the same stat names and
/// values), so those expectations are Envoy's behaviour and not only Remora's.
#[test]
fn envoy_on_the_same_pod_behaves_the_same() {
    if !root_or_skip("envoy_on_the_same_pod_behaves_the_same") {
        return;
    }
    pod_scenario(
        &envoy_bin(),
        &["--disable-hot-restart", "--concurrency", "1"],
    );
}

/// Everything the end-to-end tests prove, against the proxy `bin` (started with `args`).
fn pod_scenario(bin: &std::path::Path, args: &[&str]) {
    let is_remora = bin == remora_bin();
    let pod = Netns::new("pod");
    let svc = Netns::new("svc");
    pod.link(&svc, &format!("{POD}/24"), &format!("{SVC}/24"));

    serve(bind(&svc, &format!("{SVC}:80")), http_ok);
    serve(bind(&svc, &format!("{SVC}:9000")), echo);
    serve(bind(&svc, &format!("{SVC}:443")), first_bytes);
    serve(bind(&svc, &format!("{SVC}:3306")), server_first);
    serve(bind(&pod, "0.0.0.0:8080"), who_am_i);
    serve(bind(&pod, "0.0.0.0:15020"), who_am_i);

    let init = |extra: &[&str]| apply(&pod, extra);
    init(&[]);
    let proxy = ProxyProcess::start_in_netns(&pod.name, 1337, &[], bin, &config(), args);

    // Outbound HTTP: captured, handed to 0.0.0.0_80, sniffed as HTTP/1.1, routed.
    let mut s = connect(&pod, &format!("{SVC}:80"));
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .expect("write");
    let reply = read_all(s);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("svc-http"),
        "{reply}"
    );
    assert_eq!(proxy.stat("cluster.outbound|80||svc.upstream_rq_total"), 1);
    assert_eq!(proxy.stat("http_inspector.http11_found"), 1);

    // Outbound raw TCP to a port with no listener: virtualOutbound's PassthroughCluster.
    let mut s = connect(&pod, &format!("{SVC}:9000"));
    s.write_all(b"ping").expect("write");
    let mut back = [0u8; 4];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"ping");
    drop(s);
    assert_eq!(
        proxy.stat("cluster.PassthroughCluster.upstream_cx_total"),
        1
    );

    // TLS passes through by SNI: the hello reaches the service untouched.
    let mut s = connect(&pod, &format!("{SVC}:443"));
    let hello = tests::tls::client_hello("secure.example", &["h2"]);
    s.write_all(&hello).expect("write");
    let reply = read_all(s);
    assert_eq!(reply, format!("got {} first 0x16", hello.len()));
    assert_eq!(
        proxy.stat("cluster.outbound|443||secure.example.upstream_cx_total"),
        1
    );
    assert_eq!(proxy.stat("tls_inspector.sni_found"), 1);

    // A server-first protocol: the client sends nothing; after the inspectors' timeout
    // the connection carries on as TCP and the greeting arrives.
    let mut s = connect(&pod, &format!("{SVC}:3306"));
    let mut greeting = [0u8; 9];
    s.read_exact(&mut greeting).expect("greeting");
    assert_eq!(&greeting, b"GREETING\n");
    s.write_all(b"q").expect("write");
    let mut q = [0u8; 1];
    s.read_exact(&mut q).expect("echo");
    drop(s);
    assert_eq!(proxy.stat("cluster.outbound|3306||db.upstream_cx_total"), 1);

    // Inbound to the app's port goes through 15006 (the app sees 127.0.0.6).
    let reply = read_all(connect(&svc, &format!("{POD}:8080")));
    assert_eq!(reply, "peer 127.0.0.6");
    assert_eq!(
        proxy.stat("cluster.InboundPassthroughClusterIpv4.upstream_cx_total"),
        1
    );

    // Excluded inbound ports (-d 15090,15021,15020) are not captured.
    let reply = read_all(connect(&svc, &format!("{POD}:15020")));
    assert_eq!(reply, format!("peer {SVC}"));
    assert_eq!(
        proxy.stat("cluster.InboundPassthroughClusterIpv4.upstream_cx_total"),
        1
    );

    // A connection straight to the proxy's own port is not proxied back into it
    // (Remora's own guard: not part of the comparison with Envoy).
    if is_remora {
        let reply = read_all(connect(&pod, &format!("{POD}:15001")));
        assert_eq!(reply, "", "closed, not looped");
    }

    // After --cleanup, connections go direct: the proxy sees none of them.
    init(&["--cleanup"]);
    let mut s = connect(&pod, &format!("{SVC}:9000"));
    s.write_all(b"pong").expect("write");
    s.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"pong");
    drop(s);
    let reply = read_all(connect(&svc, &format!("{POD}:8080")));
    assert_eq!(reply, format!("peer {SVC}"), "inbound is direct again");
    assert_eq!(
        proxy.stat("cluster.PassthroughCluster.upstream_cx_total"),
        1
    );
    assert_eq!(
        proxy.stat("cluster.InboundPassthroughClusterIpv4.upstream_cx_total"),
        1
    );
}
