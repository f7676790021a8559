//! Stream duration limits and `grpc-timeout` against Envoy 1.40 on the same config:
//!
//! - a route's `max_stream_duration` (and the connection manager's, which a route can
//!   disable with 0) ends the stream: 504 `downstream duration timeout`, gRPC status 4
//!   for gRPC callers, 408 and a closed connection while the request is still arriving,
//!   a reset once the response has started; and on such routes the route `timeout` is
//!   not used;
//! - `grpc_timeout_header_max` (Istio's inbound routes) makes the request's
//!   `grpc-timeout` the limit, capped and less `grpc_timeout_header_offset`, and gRPC
//!   requests carry the limit upstream in `grpc-timeout`;
//! - `max_grpc_timeout` (Istio's outbound routes) makes `grpc-timeout` the router's
//!   timeout instead (504 `upstream request timeout`, gRPC status 14), with the expected
//!   timeout written back into `grpc-timeout` and `x-envoy-expected-rq-timeout-ms`;
//! - a retry policy's `per_try_idle_timeout` goes on while the response streams (a
//!   reset when it fires there, counted for the host's outlier detection);
//! - a WebSocket tunnel on a limited route is closed at the limit.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tests::client::{raw, request, Conn};
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
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {prefix: /ws}
                route: {cluster: ws, max_stream_duration: {max_stream_duration: 0.3s}}
              - match: {prefix: /msd/}
                route: {cluster: a, prefix_rewrite: /, timeout: 5s, max_stream_duration: {max_stream_duration: 0.3s}}
              - match: {prefix: /newempty/}
                route: {cluster: a, prefix_rewrite: /, timeout: 0.2s, max_stream_duration: {}}
              - match: {prefix: /newgrpc/}
                route: {cluster: a, prefix_rewrite: /, timeout: 0s, max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}}
              - match: {prefix: /newcap/}
                route: {cluster: a, prefix_rewrite: /, max_stream_duration: {grpc_timeout_header_max: 0.3s, grpc_timeout_header_offset: 0.1s}}
              - match: {prefix: /tryidle/}
                route: {cluster: a, prefix_rewrite: /, retry_policy: {retry_on: 5xx, num_retries: 1, per_try_idle_timeout: 0.2s}}
              - match: {prefix: /tryidle-od/}
                route: {cluster: od, prefix_rewrite: /, retry_policy: {retry_on: 5xx, num_retries: 1, per_try_idle_timeout: 0.2s}}
              - match: {prefix: /oldgrpc/}
                route: {cluster: a, prefix_rewrite: /, timeout: 0s, max_grpc_timeout: 0s}
              - match: {prefix: /oldcap/}
                route: {cluster: a, prefix_rewrite: /, timeout: 0s, max_grpc_timeout: 0.3s, grpc_timeout_offset: 0.1s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: limited
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: limited
          common_http_protocol_options: {max_stream_duration: 0.3s}
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {prefix: /zeromsd/}
                route: {cluster: a, prefix_rewrite: /, max_stream_duration: {max_stream_duration: 0s}}
              - match: {prefix: /newgrpc/}
                route: {cluster: a, prefix_rewrite: /, max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}}
              - match: {prefix: /}
                route: {cluster: a}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: ws
    load_assignment: {cluster_name: ws, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{ws}}}}}}]}]}
  - name: od
    outlier_detection: {consecutive_5xx: 1, interval: 60s, base_ejection_time: 60s, max_ejection_percent: 100}
    load_assignment: {cluster_name: od, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#;

const GRPC: (&str, &str) = ("content-type", "application/grpc");

/// One request: listener, path, HTTP/2 or not, extra headers, and the window (ms) its
/// answer must come in.
struct Case {
    listener: &'static str,
    path: &'static str,
    h2: bool,
    headers: &'static [(&'static str, &'static str)],
    within_ms: (u128, u128),
}

const fn case(
    listener: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    within_ms: (u128, u128),
) -> Case {
    Case {
        listener,
        path,
        h2: false,
        headers,
        within_ms,
    }
}

const CASES: &[Case] = &[
    case("edge", "/msd/delay/1000", &[], (250, 900)),
    case("edge", "/msd/echo", &[GRPC], (0, 250)),
    case("edge", "/newempty/delay/500", &[], (450, 2000)),
    Case {
        h2: true,
        ..case(
            "edge",
            "/newgrpc/delay/1000",
            &[GRPC, ("grpc-timeout", "200m")],
            (150, 800),
        )
    },
    case(
        "edge",
        "/newgrpc/echo",
        &[GRPC, ("grpc-timeout", "3S")],
        (0, 250),
    ),
    case("edge", "/newgrpc/echo", &[("grpc-timeout", "3S")], (0, 250)),
    case(
        "edge",
        "/newgrpc/delay/300",
        &[("grpc-timeout", "0m")],
        (0, 200),
    ),
    case(
        "edge",
        "/newgrpc/echo",
        &[GRPC, ("grpc-timeout", "123456789S")],
        (0, 250),
    ),
    case(
        "edge",
        "/newcap/echo",
        &[GRPC, ("grpc-timeout", "5S")],
        (0, 250),
    ),
    case(
        "edge",
        "/newcap/delay/1000",
        &[GRPC, ("grpc-timeout", "5S")],
        (150, 800),
    ),
    Case {
        h2: true,
        ..case(
            "edge",
            "/oldgrpc/delay/1000",
            &[GRPC, ("grpc-timeout", "200m")],
            (150, 800),
        )
    },
    case("edge", "/oldgrpc/echo", &[GRPC], (0, 250)),
    case(
        "edge",
        "/oldcap/echo",
        &[GRPC, ("grpc-timeout", "5S")],
        (0, 250),
    ),
    case(
        "edge",
        "/oldcap/echo",
        &[GRPC, ("grpc-timeout", "50m")],
        (0, 250),
    ),
    case("edge", "/oldcap/echo", &[("grpc-timeout", "50m")], (0, 250)),
    case("limited", "/delay/1000", &[], (250, 900)),
    case(
        "limited",
        "/echo",
        &[GRPC, ("grpc-timeout", "100m")],
        (0, 250),
    ),
    case("limited", "/zeromsd/delay/500", &[], (450, 2000)),
    case(
        "limited",
        "/zeromsd/echo",
        &[GRPC, ("grpc-timeout", "100m")],
        (0, 250),
    ),
    case("limited", "/newgrpc/delay/500", &[GRPC], (450, 2000)),
    case(
        "limited",
        "/newgrpc/delay/500",
        &[GRPC, ("grpc-timeout", "5S")],
        (450, 2000),
    ),
    // The response has started when the limit is reached: the stream is reset (Envoy
    // closes an HTTP/1.1 connection after its 1 s delayed-close wait).
    case("edge", "/msd/slow-body/1000", &[], (250, 1600)),
    Case {
        h2: true,
        ..case("edge", "/msd/slow-body/1000", &[], (250, 900))
    },
    // per_try_idle_timeout goes on once the response has started.
    case("edge", "/tryidle/slow-body/1000", &[], (150, 1500)),
    case("edge", "/tryidle/slow-body/100", &[], (50, 400)),
    // ... and counts for outlier detection when it fires (a 504: one is enough here).
    case("edge", "/tryidle-od/slow-body/1000", &[], (150, 1500)),
];

/// What a case came to: status, gRPC status and message, the body (or, for echoed
/// requests, the timeout headers the upstream saw), and whether it took the time
/// expected (the milliseconds taken come separately, for failure messages).
async fn outcome(p: &ProxyProcess, c: &Case) -> (String, u128) {
    let mut conn = if c.h2 {
        Conn::h2(p.listener(c.listener)).await
    } else {
        Conn::h1(p.listener(c.listener)).await
    };
    let req = request("GET", "h", c.path, c.headers, Bytes::new(), c.h2);
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), conn.send(req))
        .await
        .expect("an answer within 5 s");
    let ms = t0.elapsed().as_millis();
    let what = match r {
        Err(_) => "reset".to_string(),
        Ok(r) => {
            let seen = if c.path.ends_with("/echo") {
                let j = r.json();
                let h = &j["headers"];
                format!(
                    "upstream saw grpc-timeout {} expected {}",
                    h["grpc-timeout"], h["x-envoy-expected-rq-timeout-ms"]
                )
            } else {
                format!("{:?}", r.text())
            };
            format!(
                "{} grpc-status {:?} {:?} {seen}",
                r.status.as_u16(),
                r.header("grpc-status"),
                r.header("grpc-message"),
            )
        }
    };
    let (lo, hi) = c.within_ms;
    let proto = if c.h2 { "h2" } else { "h1" };
    (
        format!(
            "{} {} {proto} {:?}: {what}; in time: {}",
            c.listener,
            c.path,
            c.headers,
            (lo..hi).contains(&ms)
        ),
        ms,
    )
}

/// A request whose body never finishes: the limit answers 408 and closes the connection.
async fn incomplete_request(p: &ProxyProcess) -> String {
    let t0 = Instant::now();
    let out = raw(
        p.listener("edge"),
        b"POST /msd/echo HTTP/1.1\r\nhost: h\r\ncontent-length: 10\r\n\r\n12345",
        Duration::from_secs(3),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    format!(
        "status line {:?}, body {}, closed: {}",
        text.lines().next().unwrap_or(""),
        text.ends_with("downstream duration timeout"),
        t0.elapsed() < Duration::from_millis(2900),
    )
}

/// A WebSocket on a route limited to 0.3 s: it echoes, then is closed at the limit.
async fn websocket_limited(p: &ProxyProcess) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let t0 = Instant::now();
    let url = format!("ws://{}/ws", p.listener("edge"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket upgrade");
    ws.send(Message::text("hi")).await.expect("send");
    let echoed = ws.next().await.and_then(Result::ok) == Some(Message::text("hi"));
    // Nothing more is sent: what ends the stream is the limit.
    let next = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    let ended = matches!(next, Ok(None | Some(Err(_))));
    let ms = t0.elapsed().as_millis();
    format!(
        "websocket echoed {echoed}, ended {ended}, at the limit {}",
        (250..1500).contains(&ms)
    )
}

async fn run_all(p: &ProxyProcess) -> (Vec<String>, Vec<u128>) {
    let (mut out, mut took) = (Vec::new(), Vec::new());
    for c in CASES {
        let (o, ms) = outcome(p, c).await;
        out.push(o);
        took.push(ms);
    }
    out.push(incomplete_request(p).await);
    out.push(websocket_limited(p).await);
    // A reset body is counted when the proxy notices; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for name in [
        "http.edge.downstream_rq_max_duration_reached",
        "http.limited.downstream_rq_max_duration_reached",
        "cluster.a.upstream_rq_per_try_idle_timeout",
        "cluster.od.upstream_rq_per_try_idle_timeout",
        "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx",
    ] {
        out.push(format!("{name} = {}", p.stat(name)));
    }
    (out, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_duration_and_grpc_timeout_behave_as_envoy() {
    let up = HttpUpstream::start("a").await;
    let (ws, _ws_task) = tests::upstream::websocket_echo().await;
    let cfg = render(
        CONFIG,
        &[
            ("a", up.addr.port().to_string()),
            ("ws", ws.port().to_string()),
        ],
    );
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    let (r, r_ms) = run_all(&remora).await;
    let (e, e_ms) = run_all(&envoy).await;
    for (i, (e, r)) in e.iter().zip(&r).enumerate() {
        assert_eq!(
            e,
            r,
            "case {i}: envoy vs remora (ms: envoy {:?}, remora {:?})",
            e_ms.get(i),
            r_ms.get(i)
        );
    }
    // What both answered, spelled out.
    let dt = "504 grpc-status None None \"downstream duration timeout\"";
    let expect_prefix = [
        format!("edge /msd/delay/1000 h1 []: {dt}; in time: true"),
        "edge /msd/echo h1 [(\"content-type\", \"application/grpc\")]: 200 grpc-status None None upstream saw grpc-timeout [\"300m\"] expected null; in time: true".to_string(),
    ];
    assert_eq!(&r[..2], &expect_prefix[..]);
    println!("{r:#?}");
}
