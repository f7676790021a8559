//! Circuit breakers against Envoy 1.40 on the same config: `max_requests` overflow while
//! a request is outstanding (503 UO, `x-envoy-overloaded`, `upstream_rq_active_overflow`),
//! `max_retries` overflow (no retry, `upstream_rq_retry_overflow`), the
//! `circuit_breakers.default.*` gauges; `max_connections` with `max_pending_requests`
//! under the same concurrent load (one connection busy, one request waiting for it, the
//! rest 503 UO), the TCP proxy refusing a connection over `max_connections`; and
//! Istio's all-maximum thresholds loading; HTTP/2 requests pending while the
//! worker's connection opens (one connection for all), and pending requests failing
//! together when the connection they wait for times out (HTTP/2 and HTTP/1.1); a
//! route's `priority: HIGH` counting against the HIGH thresholds, with pools of its own,
//! and the `circuit_breakers.high.*` gauges.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
              - match: {prefix: /pool/}
                route: {cluster: pool, prefix_rewrite: /}
              - match: {prefix: /istio/}
                route: {cluster: istio, prefix_rewrite: /}
              - match: {prefix: /high/}
                route: {cluster: prio, prefix_rewrite: /, priority: HIGH}
              - match: {prefix: /prio/}
                route: {cluster: prio, prefix_rewrite: /}
              - match: {prefix: /}
                route: {cluster: one}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: tcp_one
  clusters:
  - name: one
    circuit_breakers:
      thresholds:
      - {priority: HIGH, max_requests: 100}
      - {max_requests: 1, max_retries: 0, track_remaining: true}
    load_assignment: {cluster_name: one, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: pool
    circuit_breakers:
      thresholds:
      - {max_connections: 1, max_pending_requests: 1, track_remaining: true}
    load_assignment: {cluster_name: pool, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: prio
    circuit_breakers:
      thresholds:
      - {priority: HIGH, max_requests: 1, max_retries: 2, track_remaining: true}
      - {max_requests: 1, track_remaining: true}
    load_assignment: {cluster_name: prio, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: tcp_one
    circuit_breakers:
      thresholds:
      - {max_connections: 1}
    load_assignment: {cluster_name: tcp_one, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{echo}}}}}}]}]}
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

/// The named stats of both proxies (Envoy's, Remora's).
async fn stats_of(
    envoy: ProxyProcess,
    remora: ProxyProcess,
    names: &[&'static str],
) -> (Vec<u64>, Vec<u64>) {
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || {
        (
            names.iter().map(|n| envoy.stat(n)).collect(),
            names.iter().map(|n| remora.stat(n)).collect(),
        )
    })
    .await
    .expect("stats")
}

/// The scripted upstream, a TCP echo, and both proxies on `CONFIG` pointing at them.
struct Setup {
    up: HttpUpstream,
    _echo: tokio::task::JoinHandle<()>,
    envoy: ProxyProcess,
    remora: ProxyProcess,
}

async fn setup() -> Setup {
    let up = HttpUpstream::start("a").await;
    let (echo, _, echo_task) = tests::upstream::tcp_echo().await;
    let cfg = render(
        CONFIG,
        &[
            ("a", up.addr.port().to_string()),
            ("echo", echo.port().to_string()),
        ],
    );
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    Setup {
        up,
        _echo: echo_task,
        envoy,
        remora,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_behaves_as_envoy() {
    let Setup {
        up, envoy, remora, ..
    } = setup().await;
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
        "cluster.one.upstream_cx_total",
        "cluster.one.upstream_rq_total",
        "cluster.one.upstream_rq_5xx",
        "cluster.one.upstream_rq_retry_overflow",
        "cluster.one.circuit_breakers.default.rq_open",
        "cluster.one.circuit_breakers.default.remaining_rq",
        "cluster.one.circuit_breakers.default.rq_retry_open",
    ];
    let (es, rs) = stats_of(envoy, remora, &names).await;
    // The overflowing request opened a second connection (the holder had the first)
    // before `max_requests` refused it: Envoy's pools check the limit on attach.
    assert_eq!(rs, [1, 2, 2, 2, 1, 0, 1, 0], "remora {names:?}");
    assert_eq!(es, rs, "envoy vs remora {names:?}");
}

/// Five requests to a cluster allowing one connection and one pending request: the first
/// is under way, then four at once: one waits for the connection, three overflow. And a
/// second TCP proxy connection over `max_connections` is closed.
async fn pool_case(p: &ProxyProcess) -> Vec<String> {
    let addr = p.listener("edge");
    let first = tokio::spawn(async move {
        let mut c = Conn::h1(addr).await;
        c.get("h", "/pool/delay/400", &[]).await.status.as_u16()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let rest: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Conn::h1(addr).await;
                let r = c.get("h", "/pool/delay/10", &[]).await;
                format!("{} {:?}", r.status.as_u16(), r.header("x-envoy-overloaded"))
            })
        })
        .collect();
    let mut out = vec![format!("first {}", first.await.expect("first"))];
    let mut answers = Vec::new();
    for r in rest {
        answers.push(r.await.expect("request"));
    }
    answers.sort();
    out.extend(answers);
    // TCP: the first connection holds the only slot; the second is closed at once.
    let tcp = p.listener("tcp");
    let mut held = tokio::net::TcpStream::connect(tcp).await.expect("tcp 1");
    held.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).await.expect("echo");
    // Nothing is written on it: unread bytes would turn the proxy's close into a reset
    // whenever they arrive before it (a race in both proxies).
    let mut second = tokio::net::TcpStream::connect(tcp).await.expect("tcp 2");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), second.read_to_end(&mut rest))
        .await
        .map(|r| r.map(|_| rest.len()));
    out.push(format!("tcp second closed after {n:?} bytes"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_pending_limits_behave_as_envoy() {
    let Setup {
        up: _up,
        envoy,
        remora,
        ..
    } = setup().await;
    let e = pool_case(&envoy).await;
    let r = pool_case(&remora).await;
    assert_eq!(
        r,
        [
            "first 200",
            "200 None",
            "503 Some(\"true\")",
            "503 Some(\"true\")",
            "503 Some(\"true\")",
            "tcp second closed after Ok(Ok(0)) bytes",
        ]
    );
    assert_eq!(e, r, "envoy vs remora");
    let names = [
        "cluster.pool.upstream_cx_total",
        "cluster.pool.upstream_cx_overflow",
        "cluster.pool.upstream_rq_pending_total",
        "cluster.pool.upstream_rq_pending_overflow",
        "cluster.pool.upstream_rq_pending_active",
        "cluster.pool.upstream_rq_5xx",
        "cluster.pool.circuit_breakers.default.cx_open",
        "cluster.pool.circuit_breakers.default.remaining_cx",
        "cluster.pool.circuit_breakers.default.rq_pending_open",
        "cluster.pool.circuit_breakers.default.remaining_pending",
        "cluster.tcp_one.upstream_cx_overflow",
    ];
    let (es, rs) = stats_of(envoy, remora, &names).await;
    // One connection (kept open, so the breaker stays open), two requests pending in
    // turn, three overflows; the TCP proxy's second connection overflowed.
    assert_eq!(rs, [1, 1, 2, 3, 0, 3, 1, 0, 0, 1, 1], "remora {names:?}");
    assert_eq!(es, rs, "envoy vs remora {names:?}");
}

/// A HIGH request and a DEFAULT one in turn on one connection (each opens a
/// connection: pools are per priority); then, while a DEFAULT request holds DEFAULT's
/// only request slot, a HIGH request goes through and another DEFAULT one overflows.
async fn priority_case(p: &ProxyProcess) -> Vec<String> {
    let addr = p.listener("edge");
    let mut c = Conn::h1(addr).await;
    let mut out = vec![
        format!("high {}", c.get("h", "/high/", &[]).await.status.as_u16()),
        format!(
            "default {}",
            c.get("h", "/prio/", &[]).await.status.as_u16()
        ),
    ];
    let mut holder = Conn::h1(addr).await;
    let hold = tokio::spawn(async move { holder.get("h", "/prio/delay/400", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(150)).await;
    out.push(format!(
        "high while held {}",
        c.get("h", "/high/", &[]).await.status.as_u16()
    ));
    let r = Conn::h1(addr).await.get("h", "/prio/", &[]).await;
    out.push(format!(
        "default while held {} {:?}",
        r.status.as_u16(),
        r.header("x-envoy-overloaded")
    ));
    out.push(format!("holder {}", hold.await.expect("holder").as_u16()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_priority_uses_its_own_thresholds_and_pools_as_envoy() {
    let Setup {
        up: _up,
        envoy,
        remora,
        ..
    } = setup().await;
    let e = priority_case(&envoy).await;
    let r = priority_case(&remora).await;
    assert_eq!(
        r,
        [
            "high 200",
            "default 200",
            "high while held 200",
            "default while held 503 Some(\"true\")",
            "holder 200",
        ]
    );
    assert_eq!(e, r, "envoy vs remora");
    // Every circuit-breaker gauge of the cluster, both priorities, as /stats lists them.
    let breakers = |p: &ProxyProcess| {
        let (status, body) = p.admin_get("/stats?filter=^cluster\\.prio\\.(circuit_breakers|upstream_cx_total|upstream_rq_active_overflow)");
        assert_eq!(status, 200);
        body
    };
    let (es, rs) = tokio::task::spawn_blocking(move || (breakers(&envoy), breakers(&remora)))
        .await
        .expect("stats");
    // Three connections: one per priority's pool, and one that the overflowing DEFAULT
    // request opened (a pool checks `max_requests` when the request has its connection;
    // the connection stays, idle); one pool open at each priority, one overflow.
    for line in [
        "cluster.prio.upstream_cx_total: 3",
        "cluster.prio.circuit_breakers.default.remaining_cx: 1022",
        "cluster.prio.upstream_rq_active_overflow: 1",
        "cluster.prio.circuit_breakers.high.remaining_cx_pools: 18446744073709551614",
        "cluster.prio.circuit_breakers.default.remaining_cx_pools: 18446744073709551614",
        "cluster.prio.circuit_breakers.high.remaining_retries: 2",
        "cluster.prio.circuit_breakers.default.remaining_rq: 1",
    ] {
        assert!(
            rs.lines().any(|l| l == line),
            "remora lacks {line:?}:\n{rs}"
        );
    }
    assert_eq!(es, rs, "envoy vs remora");
}

const H2_PENDING: &str = r#"
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
              - match: {prefix: /wait/}
                route: {cluster: h2wait}
              - match: {prefix: /fail/}
                route: {cluster: h2fail}
              - match: {prefix: /h1fail/}
                route: {cluster: h1fail}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: h2wait
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    circuit_breakers:
      thresholds:
      - {max_pending_requests: 3}
    load_assignment: {cluster_name: h2wait, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{wait}}}}}}]}]}
  - name: h2fail
    connect_timeout: 0.3s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: h2fail, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{fail}}}}}}]}]}
  - name: h1fail
    connect_timeout: 0.3s
    circuit_breakers:
      thresholds:
      - {max_connections: 1}
    load_assignment: {cluster_name: h1fail, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{fail}}}}}}]}]}
"#;

/// `n` requests at once, each on its own HTTP/1.1 connection: their spawned tasks
/// (answering status, overload header and body).
fn concurrent(
    addr: std::net::SocketAddr,
    path: &'static str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<String>> {
    (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Conn::h1(addr).await;
                let r = c.get("h", path, &[]).await;
                format!(
                    "{} {:?} {:?}",
                    r.status.as_u16(),
                    r.header("x-envoy-overloaded"),
                    if r.status.as_u16() == 200 {
                        String::new()
                    } else {
                        r.text()
                    }
                )
            })
        })
        .collect()
}

async fn answers(tasks: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request"));
    }
    out.sort();
    out
}

/// One proxy on `H2_PENDING` with held upstreams of its own: five requests at once while
/// the HTTP/2 connection is still opening (three wait for it, two overflow), then the
/// upstream lets the connection through; and three at once to a host whose connection
/// times out (all three fail with it). Returns the answers, the connections the waiting
/// upstream accepted, and the stats.
async fn h2_pending_case(
    bin: std::path::PathBuf,
    args: &'static [&'static str],
) -> (Vec<String>, usize, Vec<u64>) {
    let (wait, release) = HttpUpstream::start_held("w").await;
    let (fail, _never) = HttpUpstream::start_held("f").await;
    let cfg = render(
        H2_PENDING,
        &[
            ("wait", wait.addr.port().to_string()),
            ("fail", fail.addr.port().to_string()),
        ],
    );
    let p = tokio::task::spawn_blocking(move || ProxyProcess::start(&bin, &cfg, args))
        .await
        .expect("proxy started");
    let addr = p.listener("edge");
    let waiting = concurrent(addr, "/wait/x", 5);
    // The two overflows answer at once; the three others wait for the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = release.send(());
    let mut out = answers(waiting).await;
    out.extend(answers(concurrent(addr, "/fail/x", 3)).await);
    out.extend(answers(concurrent(addr, "/h1fail/x", 3)).await);
    let names = [
        "cluster.h2wait.upstream_cx_total",
        "cluster.h2wait.upstream_rq_pending_total",
        "cluster.h2wait.upstream_rq_pending_overflow",
        "cluster.h2wait.upstream_rq_pending_active",
        "cluster.h2wait.upstream_rq_total",
        "cluster.h2fail.upstream_cx_connect_fail",
        "cluster.h2fail.upstream_cx_connect_timeout",
        "cluster.h2fail.upstream_rq_pending_total",
        "cluster.h2fail.upstream_rq_pending_failure_eject",
        "cluster.h2fail.upstream_rq_total",
        "cluster.h1fail.upstream_cx_connect_fail",
        "cluster.h1fail.upstream_rq_pending_total",
        "cluster.h1fail.upstream_rq_pending_failure_eject",
        "cluster.h1fail.upstream_rq_total",
    ];
    let stats = tokio::task::spawn_blocking(move || names.iter().map(|n| p.stat(n)).collect())
        .await
        .expect("stats");
    (
        out,
        wait.connections.load(std::sync::atomic::Ordering::SeqCst),
        stats,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_wait_for_the_opening_connection_as_envoy() {
    let e = h2_pending_case(
        tests::envoy::envoy_bin(),
        &["--concurrency", "1", "-l", "error", "--disable-hot-restart"],
    )
    .await;
    let r = h2_pending_case(
        tests::process::remora_bin(),
        &["--concurrency", "1", "-l", "error"],
    )
    .await;
    let overflow = "503 Some(\"true\") \"upstream connect error or disconnect/reset before headers. reset reason: overflow\"";
    let timeout = "503 None \"upstream connect error or disconnect/reset before headers. reset reason: connection timeout\"";
    let mut want = vec!["200 None \"\""; 3];
    want.extend([overflow; 2]);
    want.extend([timeout; 6]);
    assert_eq!(r.0, want, "remora's answers");
    // One connection carried the three waiting requests.
    assert_eq!(r.1, 1, "remora's upstream connections");
    // h2wait: one connection, three pending, two overflows, three requests sent.
    // h2fail and h1fail (one connection allowed): one connect timeout, three pending
    // requests failed with it, none sent.
    assert_eq!(
        r.2,
        [1, 3, 2, 0, 3, 1, 1, 3, 3, 0, 1, 3, 3, 0],
        "remora's stats"
    );
    assert_eq!(e, r, "envoy vs remora");
}
