//! Remora driven by a fake control plane (`tests::control_plane`) over ADS, state of the
//! world and delta, TCP and Unix socket: initial sync, live updates of every resource
//! type, removal, warming, NACK and recovery, bad responses, control plane restart.

use std::time::Duration;

use tests::client::get;
use tests::control_plane::{
    ads_bootstrap, cluster, eds_cluster, endpoints_of, http_listener, http_listener_with, route,
    route_to, ControlPlane, ResourceType,
};
use tests::process::admin_get;
use tests::proxy::Proxy;
use tests::upstream::HttpUpstream;

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::RouteConfiguration;

async fn start_proxy(cp: &ControlPlane, api: &str) -> Proxy {
    let yaml = ads_bootstrap(cp, api);
    tokio::task::spawn_blocking(move || Proxy::start(&yaml))
        .await
        .expect("proxy starts")
}

/// The state every scenario starts from: listener `ingress` (RDS `routes`) to EDS
/// cluster `web` on upstream `a`.
fn initial(cp: &ControlPlane, a: &HttpUpstream) {
    cp.set(CDS, vec![eds_cluster("web")]);
    cp.set(EDS, vec![endpoints_of("web", &[a.addr])]);
    cp.set(LDS, vec![http_listener("ingress", any_port(), "routes")]);
    cp.set(RDS, vec![route_to("routes", "web", "v1")]);
}

async fn answered_by(addr: std::net::SocketAddr) -> (u16, String, String) {
    let r = get(addr, "example.com", "/").await;
    (
        r.status.as_u16(),
        r.header("x-upstream").unwrap_or("-").to_string(),
        r.header("x-route").unwrap_or("-").to_string(),
    )
}

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A free port on a loopback address of this test's own (listeners use SO_REUSEPORT,
/// so a port another test also picked would be shared with its proxy).
fn free_addr() -> std::net::SocketAddr {
    let ip = std::net::Ipv4Addr::new(
        127,
        fastrand::u8(1..255),
        fastrand::u8(1..255),
        fastrand::u8(2..255),
    );
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Initial sync and a live update of each type, then removals.
async fn lifecycle(cp: ControlPlane, api: &str) {
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let fixed = free_addr();
    cp.set(CDS, vec![eds_cluster("web")]);
    cp.set(EDS, vec![endpoints_of("web", &[a.addr])]);
    cp.set(LDS, vec![http_listener("ingress", fixed, "routes")]);
    cp.set(RDS, vec![route_to("routes", "web", "v1")]);
    let proxy = start_proxy(&cp, api).await;
    let addr = proxy.addr("ingress");
    assert_eq!(addr, fixed);
    assert_eq!(answered_by(addr).await, (200, "a".into(), "v1".into()));
    assert_eq!(proxy.stat("control_plane.connected_state"), 1);
    assert_eq!(proxy.stat("control_plane.rate_limit_enforced"), 0);
    assert!(proxy.stat("cluster_manager.cds.update_success") >= 1);
    assert!(proxy.stat("listener_manager.lds.update_success") >= 1);
    assert!(proxy.stat("http.ingress.rds.routes.update_success") >= 1);
    assert!(proxy.stat("cluster.web.update_success") >= 1);
    assert_ne!(proxy.stat("cluster_manager.cds.version"), 0);

    // Route change: visible as soon as it is ACKed (the ACK follows the apply).
    let v = cp.set(RDS, vec![route_to("routes", "web", "v2")]);
    cp.wait_ack(&v, RDS).await;
    assert_eq!(answered_by(addr).await, (200, "a".into(), "v2".into()));

    // Endpoint churn.
    let v = cp.set(EDS, vec![endpoints_of("web", &[b.addr])]);
    cp.wait_ack(&v, EDS).await;
    assert_eq!(answered_by(addr).await.1, "b");
    // The pooled connection to the host that left is closed; b's stays.
    tokio::time::timeout(Duration::from_secs(5), async {
        while proxy.stat("cluster.web.upstream_cx_active") != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the idle connection to a is closed");

    // A cluster added (with its endpoints), and the route moved to it.
    cp.upsert(EDS, vec![endpoints_of("api", &[a.addr])]);
    let v = cp.upsert(CDS, vec![eds_cluster("api")]);
    cp.wait_ack(&v, CDS).await;
    let v = cp.set(RDS, vec![route_to("routes", "api", "v3")]);
    cp.wait_ack(&v, RDS).await;
    assert_eq!(answered_by(addr).await, (200, "a".into(), "v3".into()));

    // A listener update at the same address keeps its sockets; a new listener binds.
    let slot = proxy
        .server
        .listeners
        .find("ingress")
        .expect("ingress")
        .slot;
    let n = cp.answers().len();
    cp.set(
        LDS,
        vec![
            http_listener("ingress", fixed, "routes-b"),
            http_listener("side", any_port(), "routes"),
        ],
    );
    cp.upsert(RDS, vec![route_to("routes-b", "web", "L2")]);
    cp.wait_answer(n, |a| a.ty == LDS).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while proxy.server.listener_address("side").is_none() || answered_by(addr).await.2 != "L2" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("listener update applied");
    let now = proxy
        .server
        .listeners
        .find("ingress")
        .expect("ingress")
        .slot;
    assert!(
        std::sync::Arc::ptr_eq(&slot, &now),
        "same address, same sockets"
    );
    let side = proxy.addr("side");
    assert_eq!(answered_by(side).await.2, "v3");

    // /config_dump shows what came over xDS with versions and times.
    let (_, dump) = admin_get(proxy.admin(), "/config_dump").expect("config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let configs = dump["configs"].as_array().expect("configs");
    let clusters = &configs[1];
    let active = clusters["dynamic_active_clusters"]
        .as_array()
        .expect("active");
    assert_eq!(active.len(), 2, "{clusters}");
    assert!(active.iter().all(|c| c["version_info"].is_string()
        && c["last_updated"].is_string()
        && c["cluster"]["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"));
    let listeners = configs[2]["dynamic_listeners"]
        .as_array()
        .expect("listeners");
    assert!(listeners
        .iter()
        .any(|l| l["name"] == "ingress" && l["active_state"]["listener"]["name"] == "ingress"));
    let routes = configs[3]["dynamic_route_configs"]
        .as_array()
        .expect("routes");
    assert!(routes
        .iter()
        .any(|r| r["route_config"]["name"] == "routes-b"));

    // Removals: the side listener closes; the api cluster goes (its route answers 503).
    let v = cp.remove(LDS, &["side"]);
    cp.wait_ack(&v, LDS).await;
    assert!(proxy.server.listener_address("side").is_none());
    tokio::time::timeout(Duration::from_secs(5), async {
        while tokio::net::TcpStream::connect(side).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("removed listener stops accepting");
    let v = cp.remove(CDS, &["api"]);
    cp.wait_ack(&v, CDS).await;
    assert!(proxy.server.clusters.get("api").is_none());
    assert!(proxy.stat("cluster_manager.cluster_removed") >= 1);
    if api == "DELTA_GRPC" {
        // The EDS subscription of the removed cluster is withdrawn.
        let unsub = || {
            cp.requests()
                .iter()
                .any(|(t, names)| *t == EDS && names.iter().any(|n| n == "-api"))
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while !unsub() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("EDS unsubscribe of 'api'");
    }
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_over_tcp() {
    lifecycle(ControlPlane::start_tcp().await, "GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_over_a_unix_socket() {
    lifecycle(ControlPlane::start_unix().await, "DELTA_GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_over_tcp() {
    lifecycle(ControlPlane::start_tcp().await, "DELTA_GRPC").await;
}

/// An invalid resource is NACKed naming it and its field; the last good config keeps
/// serving; a fixed resource is ACKed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_keeps_the_last_good_config_then_recovers() {
    for api in ["GRPC", "DELTA_GRPC"] {
        let cp = ControlPlane::start_tcp().await;
        let a = HttpUpstream::start("a").await;
        initial(&cp, &a);
        let proxy = start_proxy(&cp, api).await;
        let addr = proxy.addr("ingress");

        let n = cp.answers().len();
        cp.upsert(
            CDS,
            vec![cluster(
                "name: bad\nconnect_timeout: 1s\nlb_policy: MAGLEV\nmaglev_lb_config: {table_size: 1000}",
            )],
        );
        let nack = cp.wait_nack(n, CDS).await;
        let msg = nack.error.expect("error_detail");
        assert!(
            msg.contains("Cluster 'bad': maglev_lb_config.table_size:"),
            "{msg}"
        );
        assert_eq!(proxy.stat("cluster_manager.cds.update_rejected"), 1);
        assert!(proxy.server.clusters.get("bad").is_none());
        assert_eq!(answered_by(addr).await, (200, "a".into(), "v1".into()));

        let n = cp.answers().len();
        cp.upsert(
            RDS,
            vec![route("name: routes\nvirtual_hosts: [{name: x, domains: ['*'], routes: [{match: {safe_regex: {regex: '('}}, route: {cluster: web}}]}]")],
        );
        let msg = cp.wait_nack(n, RDS).await.error.expect("error_detail");
        assert!(
            msg.contains(
                "RouteConfiguration 'routes': virtual_hosts[0].routes[0].match.safe_regex"
            ),
            "{msg}"
        );
        assert_eq!(answered_by(addr).await, (200, "a".into(), "v1".into()));

        // A listener whose access log cannot be opened (Envoy rejects it too).
        let n = cp.answers().len();
        cp.upsert(
            LDS,
            vec![http_listener_with(
                "logged",
                ([127, 0, 0, 1], 0).into(),
                "routes",
                r#"access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /nonexistent-remora-dir/a.log}}]"#,
            )],
        );
        let msg = cp.wait_nack(n, LDS).await.error.expect("error_detail");
        assert!(
            msg.contains("Listener 'logged': ")
                && msg.contains(
                    "access_log[0].typed_config.path: unable to open file '/nonexistent-remora-dir/a.log'"
                ),
            "{msg}"
        );
        assert_eq!(answered_by(addr).await, (200, "a".into(), "v1".into()));

        // Fixed: the whole state is accepted again.
        let v = cp.remove(LDS, &["logged"]);
        cp.wait_ack(&v, LDS).await;
        let v = cp.remove(CDS, &["bad"]);
        cp.wait_ack(&v, CDS).await;
        let v = cp.set(RDS, vec![route_to("routes", "web", "v9")]);
        cp.wait_ack(&v, RDS).await;
        assert_eq!(answered_by(addr).await.2, "v9");
        tokio::task::spawn_blocking(move || proxy.stop())
            .await
            .expect("stops");
    }
}

/// Bad responses: a garbage payload is NACKed, a type nobody asked for is ignored, a
/// stream cut mid-flight reconnects; the proxy keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_responses_and_control_plane_restart() {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    let cp = ControlPlane::start_tcp().await;
    let a = HttpUpstream::start("a").await;
    initial(&cp, &a);
    let proxy = start_proxy(&cp, "GRPC").await;
    let addr = proxy.addr("ingress");

    let n = cp.answers().len();
    cp.push_raw(DiscoveryResponse {
        version_info: "garbage".into(),
        type_url: LDS.type_url().into(),
        nonce: "raw-1".into(),
        resources: vec![Any {
            type_url: LDS.type_url().into(),
            value: vec![0xff, 0xff, 0xff, 0x0f],
        }],
        ..Default::default()
    });
    let nack = cp.wait_nack(n, LDS).await;
    assert_eq!(nack.nonce, "raw-1");
    let msg = nack.error.expect("message");
    assert!(msg.contains("Listener '#0': cannot decode"), "{msg}");
    assert_eq!(answered_by(addr).await.2, "v1");

    // An unknown type URL: ignored, as Envoy does (no ACK, nothing changes).
    cp.push_raw(DiscoveryResponse {
        version_info: "x".into(),
        type_url: "type.googleapis.com/example.Unknown".into(),
        nonce: "raw-2".into(),
        ..Default::default()
    });
    // A response whose nonce follows no request of the client: nonces are opaque to the
    // client (as in Envoy), so it is judged on its resources, applied, and ACKed echoing
    // that nonce. The unknown type above got no answer at all.
    let n = cp.answers().len();
    cp.push_raw(DiscoveryResponse {
        version_info: "out-of-band".into(),
        type_url: RDS.type_url().into(),
        nonce: "never-requested".into(),
        resources: vec![route_to("routes", "web", "v2")],
        ..Default::default()
    });
    let ack = cp.wait_answer(n, |a| a.nonce == "never-requested").await;
    assert!(ack.error.is_none(), "{ack:?}");
    assert_eq!(ack.client_version, "out-of-band");
    assert!(cp.answers().iter().all(|a| a.nonce != "raw-2"));
    assert_eq!(answered_by(addr).await.2, "v2");

    // Control plane restart: streams cut; the proxy serves on and reconnects.
    let opened = cp.streams_opened();
    cp.cut_streams();
    assert_eq!(answered_by(addr).await.2, "v2");
    cp.wait_streams(opened + 1).await;
    let v = cp.set(RDS, vec![route_to("routes", "web", "v3")]);
    cp.wait_ack(&v, RDS).await;
    assert_eq!(answered_by(addr).await.2, "v3");
    assert_eq!(proxy.stat("control_plane.connected_state"), 1);
    assert!(proxy.stat("cluster_manager.cds.update_failure") >= 1);
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .expect("stops");
}

/// Warming: the proxy is not LIVE until its listener's routes arrive; a new EDS cluster
/// is not used until its endpoints arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_clusters_warm_on_their_dependencies() {
    let cp = ControlPlane::start_unix().await;
    let a = HttpUpstream::start("a").await;
    cp.set(CDS, vec![eds_cluster("web")]);
    cp.set(EDS, vec![endpoints_of("web", &[a.addr])]);
    cp.set(LDS, vec![http_listener("ingress", any_port(), "late")]);
    let yaml = ads_bootstrap(&cp, "DELTA_GRPC");
    let proxy = tokio::task::spawn_blocking(move || Proxy::launch(&yaml, &["--concurrency", "1"]))
        .await
        .expect("launch");
    let admin = proxy.admin();
    // Wait until the listener is known (warming) over LDS.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, dump) = admin_get(admin, "/config_dump").expect("config_dump");
        if dump.contains("warming_state") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener never warming"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = admin_get(admin, "/ready").expect("ready");
    assert_eq!((status, body.trim()), (503, "INITIALIZING"));
    assert!(proxy.server.listener_address("ingress").is_none());
    assert_eq!(proxy.stat("listener_manager.total_listeners_warming"), 1);

    cp.set(RDS, vec![route_to("late", "web", "v1")]);
    let p = tokio::task::spawn_blocking(move || {
        proxy.wait_live(Duration::from_secs(10));
        proxy
    })
    .await
    .expect("live");
    assert_eq!(admin_get(admin, "/ready").expect("ready").0, 200);
    let addr = p.addr("ingress");
    assert_eq!(answered_by(addr).await, (200, "a".into(), "v1".into()));

    // A new EDS cluster warms until its endpoints come.
    let v = cp.upsert(CDS, vec![eds_cluster("slow")]);
    cp.wait_ack(&v, CDS).await;
    assert_eq!(p.stat("cluster_manager.warming_clusters"), 1);
    assert!(p.server.clusters.get("slow").is_none());
    let (_, dump) = admin_get(admin, "/config_dump").expect("config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let warming = dump["configs"][1]["dynamic_warming_clusters"]
        .as_array()
        .expect("warming clusters");
    assert_eq!(warming.len(), 1);
    assert_eq!(warming[0]["cluster"]["name"], "slow");
    let v = cp.upsert(EDS, vec![endpoints_of("slow", &[a.addr])]);
    cp.wait_ack(&v, EDS).await;
    assert_eq!(p.stat("cluster_manager.warming_clusters"), 0);
    let slow = p.server.clusters.get("slow").expect("slow is active");
    assert_eq!(slow.hosts().hosts.len(), 1);
    tokio::task::spawn_blocking(move || p.stop())
        .await
        .expect("stops");
}
