//! Traffic through real interception: an application in a pod namespace dials the
//! service's address; iptables (applied by `iptables-init`) redirects the connection to
//! the proxy's virtualOutbound listener, which hands it off by original destination to
//! the service's listener. Remora and Envoy run the same Istio-shaped config as UID 1337
//! in the same namespace; the no-proxy baseline dials the service from a namespace
//! without rules, over an identical veth pair.

use super::{load_sample, proto_name, Ctx};
use crate::gen::{self, Load, Proto};
use crate::measure::Probe;
use crate::netbed::{NetBed, Service, ECHO_PORT, HTTP_PORT, POD_SVC_IP};
use crate::report::Scenario;
use crate::targets::{self, ProxyProc, Target};

/// One measured point: what the application does.
struct Point {
    proto: Proto,
    /// HTTP/1.1 keep-alive connections, or concurrent connect-echo-close loops.
    connections: usize,
    /// Requests (or connections) per second; `None` for closed loop.
    rate: Option<f64>,
}

const POINTS: [Point; 4] = [
    Point {
        proto: Proto::Http1,
        connections: 16,
        rate: Some(1000.0),
    },
    Point {
        proto: Proto::Http1,
        connections: 64,
        rate: None,
    },
    Point {
        proto: Proto::TcpEcho,
        connections: 16,
        rate: Some(500.0),
    },
    Point {
        proto: Proto::TcpEcho,
        connections: 16,
        rate: None,
    },
];

impl Point {
    fn name(&self) -> String {
        let what = match self.proto {
            Proto::TcpEcho => format!("tcp connect+echo+close, {} loops", self.connections),
            p => format!("{} {} conns", proto_name(p), self.connections),
        };
        match self.rate {
            Some(r) if self.proto == Proto::TcpEcho => format!("{what} @ {r:.0} conn/s"),
            Some(r) => format!("{what} @ {r:.0} rps"),
            None => format!("{what}, closed loop"),
        }
    }

    fn service(&self) -> Service {
        match self.proto {
            Proto::TcpEcho => Service::Echo,
            _ => Service::Http,
        }
    }

    /// The proxy's counter that must have grown by at least the completed calls: proof
    /// that the traffic went through it.
    fn through_stat(&self) -> String {
        match self.proto {
            Proto::TcpEcho => format!("cluster.{}.upstream_cx_total", echo_cluster()),
            _ => format!("cluster.{}.upstream_rq_total", http_cluster()),
        }
    }
}

/// Every point against every target, targets interleaved within each repetition. When
/// the namespaces cannot be made (not root), the scenario is skipped and says so.
pub fn run_all(ctx: &mut Ctx) -> Result<(), String> {
    if !tests::netns::root_or_skip("interception benchmark") {
        ctx.skipped.push((
            Scenario::Interception,
            "needs root and iproute2/iptables".into(),
        ));
        return Ok(());
    }
    let init = targets::iptables_init_bin()?;
    let bed = NetBed::new(&init, ctx.load_cpu, ctx.body_bytes)?;
    for rep in 0..ctx.plan.repetitions {
        for t in Target::ALL {
            run(ctx, &bed, t, rep)?;
        }
    }
    Ok(())
}

fn run(ctx: &mut Ctx, bed: &NetBed, t: Target, rep: u32) -> Result<(), String> {
    let proxy = match ctx.launch(t) {
        None => None,
        Some(l) => Some(targets::spawn_in(
            l,
            &config(),
            ctx.proxy_cpu,
            Some(&bed.sandbox()),
        )?),
    };
    let pid = proxy.as_ref().map(ProxyProc::pid);
    for point in &POINTS {
        let name = point.name();
        ctx.log(&format!("rep {rep} {}: interception, {name}", t.name()));
        let (netns, addr) = bed.client(t, point.service());
        let before = proxy.as_ref().map(|p| stat(p, &point.through_stat()));
        let o = gen::run(
            ctx.load_cpu,
            Load {
                addr,
                proto: point.proto,
                connections: point.connections,
                streams: 1,
                rate: point.rate,
                warmup: ctx.plan.warmup,
                measure: ctx.plan.measure,
                netns: Some(netns),
            },
            Probe::new(pid),
        )?;
        if let (Some(p), Some(before)) = (&proxy, before) {
            let through = stat(p, &point.through_stat()).saturating_sub(before);
            if through < o.completed {
                return Err(format!(
                    "{} / {name}: {} completed but {} grew by {through}: the traffic did not go through the proxy",
                    t.name(),
                    o.completed,
                    point.through_stat()
                ));
            }
        }
        let mut s = load_sample(Scenario::Interception, &name, t, rep, &o);
        s.set("connections", point.connections as f64)
            .set_opt("target_rps", point.rate);
        ctx.samples.push(s);
    }
    Ok(())
}

/// A counter from the proxy's `/stats` (0 when absent or unreadable).
fn stat(p: &ProxyProc, name: &str) -> u64 {
    p.admin_get("/stats")
        .map_or(0, |(_, body)| tests::process::stat_in(&body, name))
}

fn http_cluster() -> String {
    format!("outbound|{HTTP_PORT}||svc.bench.svc.cluster.local")
}

fn echo_cluster() -> String {
    format!("outbound|{ECHO_PORT}||echo.bench.svc.cluster.local")
}

/// The bootstrap both proxies run, shaped like what istiod sends a sidecar:
/// virtualOutbound (15001) hands connections off by original destination; the HTTP
/// service has a per-port listener `0.0.0.0_80` that is not bound, sniffs the protocol
/// and routes with an HTTP connection manager; the TCP service has a per-address
/// listener with a tcp_proxy (HTTP sniffing disabled on its port, as Istio does for
/// declared TCP ports); everything else falls through to PassthroughCluster;
/// virtualInbound (15006) passes inbound connections to the app from 127.0.0.6.
pub fn config() -> String {
    use tests::sidecar::{self, tcp_proxy, V4};
    let passthrough = tcp_proxy("PassthroughCluster", "PassthroughCluster");
    let http_cluster = http_cluster();
    let echo_cluster = echo_cluster();
    let echo = tcp_proxy(&format!("outbound|{ECHO_PORT}||echo"), &echo_cluster);
    let virtual_listeners = sidecar::virtual_listeners(&V4, false);
    let clusters = [
        sidecar::passthrough_clusters(&V4),
        sidecar::static_cluster(&http_cluster, &POD_SVC_IP.to_string(), HTTP_PORT),
        sidecar::static_cluster(&echo_cluster, &POD_SVC_IP.to_string(), ECHO_PORT),
    ]
    .concat();
    let sniffing = format!(
        r#"    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
    - name: envoy.filters.listener.http_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}
      filter_disabled: {{destination_port_range: {{start: {ECHO_PORT}, end: {}}}}}
    listener_filters_timeout: 0s
    continue_on_listener_filters_timeout: true
"#,
        ECHO_PORT + 1
    );
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
{virtual_listeners}  - name: 0.0.0.0_{HTTP_PORT}
    address: {{socket_address: {{address: 0.0.0.0, port_value: {HTTP_PORT}}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND
{sniffing}    filter_chains:
    - filter_chain_match: {{application_protocols: [http/1.0, http/1.1, h2c]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_{HTTP_PORT}
          route_config:
            name: "{HTTP_PORT}"
            virtual_hosts:
            - name: svc.bench.svc.cluster.local:{HTTP_PORT}
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: "{http_cluster}", timeout: 0s}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
    default_filter_chain:
      filters: [{passthrough}]
  - name: {POD_SVC_IP}_{ECHO_PORT}
    address: {{socket_address: {{address: {POD_SVC_IP}, port_value: {ECHO_PORT}}}}}
    bind_to_port: false
    traffic_direction: OUTBOUND
{sniffing}    filter_chains:
    - filters: [{echo}]
  clusters:
{clusters}"#
    )
}
