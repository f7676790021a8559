//! The `remora` binary as a real process: command line, config validation over the
//! shared Envoy and Istio configs, the admin API, and lifecycle (drain on SIGTERM and
//! `/quitquitquit`).

use std::process::Command;
use std::time::{Duration, Instant};

use tests::process::{remora_bin, ProxyProcess};
use tests::upstream::HttpUpstream;
use tests::{render, testdata};

fn validate(args: &[&str]) -> (i32, String) {
    let out = Command::new(remora_bin())
        .args(["--mode", "validate"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn version_flag() {
    let out = Command::new(remora_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("version: 0.1.0"));
}

/// Every shared Envoy example and Istio bootstrap either validates or names the feature
/// it needs (the README's compatibility table lists these).
#[test]
fn shared_configs_validate_or_name_the_missing_feature() {
    let expect: &[(&str, Option<&str>)] = &[
        ("envoy-configs/envoy-configs-dir/ads.yaml", None),
        (
            "envoy-configs/envoy-configs-dir/envoy-demo.yaml",
            Some("local_reply_config: local reply customisation"),
        ),
        (
            "envoy-configs/examples/double-proxy_envoy-backend.yaml",
            Some("'envoy.transport_sockets.tls' (TLS termination)"),
        ),
        (
            "envoy-configs/examples/double-proxy_envoy-frontend.yaml",
            Some("'envoy.transport_sockets.tls' (TLS origination)"),
        ),
        ("envoy-configs/examples/dynamic-config-cp_envoy.yaml", None),
        // These two are LDS/CDS resource files for filesystem xDS, not bootstraps.
        (
            "envoy-configs/examples/dynamic-config-fs_configs_cds.yaml",
            Some("unrecognized field name 'resources' (in envoy.config.bootstrap.v3.Bootstrap)"),
        ),
        (
            "envoy-configs/examples/dynamic-config-fs_configs_lds.yaml",
            Some("unrecognized field name 'resources' (in envoy.config.bootstrap.v3.Bootstrap)"),
        ),
        ("envoy-configs/examples/dynamic-config-fs_envoy.yaml", None),
        ("envoy-configs/examples/fault-injection_envoy.yaml", None),
        (
            "envoy-configs/examples/front-proxy_envoy.yaml",
            Some("'envoy.transport_sockets.tls' (TLS termination)"),
        ),
        (
            "envoy-configs/examples/front-proxy_service-envoy.yaml",
            None,
        ),
        (
            "envoy-configs/examples/grpc-bridge_client_envoy-proxy.yaml",
            Some("HTTP filter 'envoy.filters.http.grpc_http1_bridge'"),
        ),
        (
            "envoy-configs/examples/grpc-bridge_server_envoy-proxy.yaml",
            None,
        ),
        (
            "envoy-configs/examples/local_ratelimit_envoy.yaml",
            Some("HTTP filter 'envoy.filters.http.local_ratelimit'"),
        ),
        (
            "envoy-configs/examples/locality-load-balancing_envoy.yaml",
            None,
        ),
        (
            "envoy-configs/examples/rbac_envoy.yaml",
            Some("HTTP filter 'envoy.filters.http.rbac'"),
        ),
        ("envoy-configs/examples/route-mirror_envoy.yaml", None),
        ("envoy-configs/examples/tls-inspector_envoy.yaml", None),
        (
            "envoy-configs/examples/tls-sni_envoy.yaml",
            Some("'envoy.transport_sockets.tls' (TLS termination)"),
        ),
        (
            "envoy-configs/examples/tls_envoy-http-https.yaml",
            Some("'envoy.transport_sockets.tls' (TLS origination)"),
        ),
        (
            "envoy-configs/examples/tls_envoy-https-https.yaml",
            Some("'envoy.transport_sockets.tls' (TLS termination)"),
        ),
        (
            "envoy-configs/examples/tls_envoy-https-passthrough.yaml",
            None,
        ),
        (
            "envoy-configs/examples/udp_envoy.yaml",
            Some("UDP listeners and endpoints (udp_proxy)"),
        ),
        ("envoy-configs/examples/websocket_envoy-ws-route.yaml", None),
        ("envoy-configs/examples/websocket_envoy-ws.yaml", None),
        (
            "envoy-configs/examples/websocket_envoy-wss-passthrough.yaml",
            None,
        ),
        (
            "envoy-configs/examples/websocket_envoy-wss.yaml",
            Some("'envoy.transport_sockets.tls' (TLS termination)"),
        ),
    ];
    let mut seen = 0;
    for (file, want) in expect {
        let path = testdata(file);
        let (code, out) = validate(&["-c", path.to_str().unwrap()]);
        match want {
            None => assert_eq!((code, out.contains("OK")), (0, true), "{file}: {out}"),
            Some(msg) => {
                assert_eq!(code, 1, "{file}: {out}");
                assert!(out.contains(msg), "{file}: expected '{msg}' in: {out}");
            }
        }
        seen += 1;
    }
    // Istio's rendered bootstraps (ADS over a Unix socket) use features of later issues
    // outside their dynamic_resources, which Remora reads.
    let istio: &[(&str, &str)] = &[
        ("all", "stats_sinks: stats sinks"),
        (
            "authsds",
            "HTTP filter 'envoy.filters.http.compressor.brotli'",
        ),
        (
            "default",
            "HTTP filter 'envoy.filters.http.compressor.brotli'",
        ),
        ("lrs", "HTTP filter 'envoy.filters.http.compressor.brotli'"),
        ("metrics_no_statsd", "stats_sinks: stats sinks"),
        (
            "stats_inclusion",
            "HTTP filter 'envoy.filters.http.compressor.brotli'",
        ),
        ("tracing_zipkin", "tracing: tracing is not supported yet"),
        (
            "xdsproxy",
            "HTTP filter 'envoy.filters.http.compressor.brotli'",
        ),
    ];
    for (name, want) in istio {
        let p = testdata(&format!("istio-config/bootstrap/{name}_golden.json"));
        let (code, out) = validate(&["-c", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{}: {out}", p.display());
        assert!(
            out.contains(want),
            "{}: expected '{want}' in: {out}",
            p.display()
        );
        seen += 1;
    }
    let envoy_files = std::fs::read_dir(testdata("envoy-configs/examples"))
        .unwrap()
        .count()
        + std::fs::read_dir(testdata("envoy-configs/envoy-configs-dir"))
            .unwrap()
            .count();
    // One file in examples/ is a JSON config-dump capture, not a config.
    assert_eq!(
        expect.len(),
        envoy_files - 1,
        "every shared Envoy config is covered"
    );
    assert_eq!(seen, expect.len() + 8);
}

#[test]
fn bad_configs_exit_1_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        ("static_resources: {clusters: [{name: c, connect_timeout: soon}]}", "static_resources.clusters[0].connect_timeout"),
        ("static_resources: {clusters: [{name: c, bogus: 1}]}", "unrecognized field name 'bogus' (in envoy.config.cluster.v3.Cluster)"),
        ("static_resources: {clusters: [{name: c, type: STATIC, load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: example.com, port_value: 80}}}}]}]}}]}",
         "STATIC clusters need IP addresses"),
        ("static_resources: {listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 99999}}, filter_chains: [{filters: []}]}]}", "port_value: 99999 is not a valid port"),
        ("not: [valid", "not valid YAML or JSON"),
        // As Envoy: an access log that cannot be opened rejects the config.
        (r#"static_resources: {listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [{filters: [{name: h, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: h, access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /nonexistent-remora-dir/a.log}}], route_config: {virtual_hosts: []}, http_filters: [{name: envoy.filters.http.router}]}}]}]}]}"#,
         "filters[0].typed_config.access_log[0].typed_config.path: unable to open file '/nonexistent-remora-dir/a.log'"),
    ];
    for (yaml, want) in cases {
        let (code, out) = validate(&["--config-yaml", yaml]);
        assert_eq!(code, 1, "{yaml}: {out}");
        assert!(out.contains(want), "expected '{want}' in: {out}");
    }
    // Unknown fields are warnings with --allow-unknown-static-fields.
    let (code, out) = validate(&["--allow-unknown-static-fields", "--config-yaml", cases[1].0]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("static_resources.clusters[0].bogus"), "{out}");
    // --config-yaml merges over -c: the file's listener plus a cluster from the flag.
    let qs = tests::workspace_root().join("examples/quickstart.yaml");
    let (code, out) = validate(&[
        "-c",
        qs.to_str().unwrap(),
        "--config-yaml",
        "static_resources: {clusters: [{name: extra}]}",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = validate(&[
        "-c",
        qs.to_str().unwrap(),
        "--config-yaml",
        "static_resources: {clusters: [{name: backend}]}",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("duplicate cluster name 'backend'"), "{out}");
}

const ADMIN_CONFIG: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: inbound
    traffic_direction: INBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config: {name: in_routes, virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: up}}]}]}
          http_filters: [{name: envoy.filters.http.router}]
  - name: outbound
    traffic_direction: OUTBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config: {name: out_routes, virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: up}}]}]}
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: up
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{up}}}}}}]}]}
"#;

fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    tests::process::admin_get(addr, path).map(|(c, _)| c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_on_a_real_process() {
    let up = HttpUpstream::start("up").await;
    let cfg = render(ADMIN_CONFIG, &[("up", up.addr.port().to_string())]);
    let p = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(
            &remora_bin(),
            &cfg,
            &["--concurrency", "2", "--service-node", "node-1"],
        )
    })
    .await
    .unwrap();
    let inbound = p.listener("inbound");
    let outbound = p.listener("outbound");
    for _ in 0..3 {
        assert_eq!(http_get(inbound, "/x"), Some(200));
    }

    let (code, body) = p.admin_get("/ready");
    assert_eq!((code, body.as_str()), (200, "LIVE\n"));
    let info: serde_json::Value = serde_json::from_str(&p.admin_get("/server_info").1).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["node"]["id"], "node-1");
    assert_eq!(info["command_line_options"]["concurrency"], 2);

    let (_, stats) = p.admin_get("/stats");
    for line in [
        "server.state: 0",
        "server.live: 1",
        "listener_manager.workers_started: 1",
        "cluster_manager.active_clusters: 1",
        "http.inbound.downstream_rq_2xx: 3",
        "cluster.up.upstream_rq_total: 3",
        "listener_manager.total_listeners_active: 2",
    ] {
        assert!(
            stats.lines().any(|l| l == line),
            "missing '{line}' in /stats:\n{stats}"
        );
    }
    assert!(stats.contains("server.uptime: "));
    let (_, filtered) = p.admin_get("/stats?filter=^cluster%5C.up%5C.upstream_rq");
    assert!(
        filtered
            .lines()
            .all(|l| l.starts_with("cluster.up.upstream_rq")),
        "{filtered}"
    );
    assert!(!filtered.is_empty());
    let (_, used) = p.admin_get("/stats?usedonly");
    assert!(
        !used.contains("http.outbound.downstream_rq_total"),
        "unused stats are hidden"
    );
    let json: serde_json::Value =
        serde_json::from_str(&p.admin_get("/stats?format=json").1).unwrap();
    assert!(json["stats"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "cluster.up.upstream_rq_2xx" && s["value"] == 3));
    let (_, prom) = p.admin_get("/stats/prometheus");
    assert!(
        prom.contains("# TYPE envoy_cluster_upstream_rq_total counter"),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"up\"} 3"),
        "{prom}"
    );
    assert!(prom.contains("envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"up\"} 3"), "{prom}");

    let dump: serde_json::Value = serde_json::from_str(&p.admin_get("/config_dump").1).unwrap();
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"
        ]
    );
    assert_eq!(
        dump["configs"][1]["static_clusters"][0]["cluster"]["name"],
        "up"
    );
    assert_eq!(
        dump["configs"][2]["static_listeners"][1]["listener"]["name"],
        "outbound"
    );
    assert_eq!(
        dump["configs"][3]["static_route_configs"][0]["route_config"]["name"],
        "in_routes"
    );
    assert_eq!(
        dump["configs"][2]["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0]
            ["typed_config"]["stat_prefix"],
        "inbound",
        "typed_config is expanded with proto field names"
    );

    let (_, clusters) = p.admin_get("/clusters");
    assert!(
        clusters.contains(&format!("up::{}::health_flags::healthy", up.addr)),
        "{clusters}"
    );
    let (_, listeners) = p.admin_get("/listeners");
    assert!(
        listeners.contains(&format!("inbound::{inbound}")),
        "{listeners}"
    );

    assert_eq!(p.admin_get("/logging").0, 200);
    assert_eq!(
        p.admin_get("/logging?level=debug").0,
        405,
        "changes need POST"
    );
    let (code, body) = p.admin_get("POST /logging?level=debug");
    assert_eq!(code, 200);
    assert!(body.contains("debug"), "{body}");

    let (code, body) = p.admin_get("POST /logging?upstream=trace");
    assert_eq!(code, 200);
    assert!(body.contains("upstream: trace"), "{body}");
    assert_eq!(p.admin_get("POST /logging?no_such_logger=debug").0, 404);

    assert_eq!(p.admin_get("/healthcheck/fail").0, 405);
    assert_eq!(p.admin_get("POST /healthcheck/fail").0, 200);
    assert_eq!(p.admin_get("/ready"), (503, "DRAINING\n".to_string()));
    // As in Envoy: server.state stays LIVE (0), server.live drops to 0.
    let (_, stats) = p.admin_get("/stats?filter=^server%5C.(state|live)$");
    assert_eq!(stats, "server.live: 0\nserver.state: 0\n");
    assert_eq!(p.admin_get("POST /healthcheck/ok").0, 200);
    assert_eq!(p.admin_get("/ready").0, 200);

    // Drain only inbound listeners: inbound stops accepting, outbound keeps serving.
    assert_eq!(p.admin_get("POST /drain_listeners?inboundonly").0, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(inbound).is_ok() {
        assert!(
            Instant::now() < deadline,
            "inbound listener still accepting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(outbound, "/x"), Some(200));

    let mut p = p;
    assert_eq!(p.admin_get("POST /quitquitquit").0, 200);
    let status = wait_exit(&mut p.child, Duration::from_secs(10));
    assert_eq!(status, Some(0));
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM while a request is in flight: the request completes, new connections are
/// refused, and the process exits 0 well within --drain-time-s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let up = HttpUpstream::start("up").await;
    let cfg = render(ADMIN_CONFIG, &[("up", up.addr.port().to_string())]);
    let mut p = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(&remora_bin(), &cfg, &["--drain-time-s", "20"])
    })
    .await
    .unwrap();
    let addr = p.listener("inbound");
    let mut idle = tests::client::Conn::h1(addr).await;
    assert_eq!(idle.get("h", "/", &[]).await.status, 200);
    let slow = tokio::spawn(async move { tests::client::get(addr, "h", "/delay/700").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = p.child.id() as i32;
    // SAFETY: sending a signal to a child process we own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "delayed"),
        "in-flight request finished"
    );
    let t = Instant::now();
    let code =
        tokio::task::spawn_blocking(move || wait_exit(&mut p.child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert_eq!(code, Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "idle keep-alive connections do not hold the drain"
    );
    drop(idle);
}

/// The command line pilot-agent gives Envoy starts Remora, and `--log-path` is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_agent_command_line() {
    let up = HttpUpstream::start("up").await;
    let cfg = render(ADMIN_CONFIG, &[("up", up.addr.port().to_string())]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("remora.log");
    let log_arg = log.to_str().unwrap().to_string();
    let p = tokio::task::spawn_blocking(move || {
        let args = [
            "--drain-time-s",
            "45",
            "--drain-strategy",
            "immediate",
            "--parent-shutdown-time-s",
            "60",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
            "--log-format",
            "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t",
            "-l",
            "info",
            "--component-log-level",
            "misc:error",
            "--concurrency",
            "2",
            "--service-node",
            "sidecar~10.1.2.3~app.ns~ns.svc.cluster.local",
            "--service-cluster",
            "app.ns",
            "--stats-tag",
            "foo:bar",
            "--log-path",
            &log_arg,
        ];
        ProxyProcess::start(&remora_bin(), &cfg, &args)
    })
    .await
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(&p.admin_get("/server_info").1).unwrap();
    assert_eq!(
        info["node"]["id"],
        "sidecar~10.1.2.3~app.ns~ns.svc.cluster.local"
    );
    assert_eq!(info["node"]["cluster"], "app.ns");
    assert_eq!(info["command_line_options"]["drain_time"], "45s");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("remora is live"), "{logged}");
}

/// SIGINT drains like SIGTERM; `/drain_listeners?graceful` keeps accepting for the drain
/// time, then closes the listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_graceful_listener_drain() {
    let up = HttpUpstream::start("up").await;
    let cfg = render(ADMIN_CONFIG, &[("up", up.addr.port().to_string())]);
    let mut p = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(&remora_bin(), &cfg, &["--drain-time-s", "1"])
    })
    .await
    .unwrap();
    let inbound = p.listener("inbound");
    assert_eq!(p.admin_get("POST /drain_listeners?graceful").0, 200);
    // During the graceful period the listener still accepts and serves.
    assert_eq!(http_get(inbound, "/x"), Some(200));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(inbound).is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still accepting after the drain time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(p.child.id() as i32, libc::SIGINT) }, 0);
    let code =
        tokio::task::spawn_blocking(move || wait_exit(&mut p.child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert_eq!(code, Some(0));
}
