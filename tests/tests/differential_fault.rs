//! Fault injection, differentially: Envoy 1.40 and Remora with the same fault filter and
//! per-route (`typed_per_filter_config`) overrides. Fixed aborts (HTTP and gRPC),
//! header-controlled delays and aborts, header matchers, a disabled filter, a virtual
//! host's override, `max_active_faults` and a 50% abort (statistically) must give the
//! same answers and the same `fault.*` stats; a route's `max_stream_duration` ends a
//! fault delay (504 `downstream duration timeout`, also when a request body arrived
//! during the delay). (Delays are checked with a margin: Envoy's
//! timers may fire a little before the exact time.)

use std::time::{Duration, Instant};

use tests::client::Conn;
use tests::process::{start_envoy_and_remora, ProxyProcess};
use tests::render;
use tests::upstream::HttpUpstream;

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

fn config(port: u16) -> String {
    let per_route = |body: &str| {
        format!(
            "typed_per_filter_config: {{envoy.filters.http.fault: {{\"@type\": {FAULT}, {body}}}}}"
        )
    };
    let routes = [
        ("/fixed-abort/", per_route("abort: {http_status: 418, percentage: {numerator: 100}}")),
        ("/half-abort/", per_route("abort: {http_status: 503, percentage: {numerator: 50}}")),
        ("/delay/", per_route("delay: {fixed_delay: 0.2s, percentage: {numerator: 100}}")),
        (
            "/header/",
            per_route("delay: {header_delay: {}, percentage: {numerator: 100}}, abort: {header_abort: {}, percentage: {numerator: 100}}"),
        ),
        ("/grpc-abort/", per_route("abort: {grpc_status: 14, percentage: {numerator: 100}}")),
        (
            "/matched/",
            per_route("abort: {http_status: 500, percentage: {numerator: 100}}, headers: [{name: x-fault, string_match: {exact: \"yes\"}}]"),
        ),
        (
            "/slow/",
            per_route("delay: {fixed_delay: 0.4s, percentage: {numerator: 100}}, max_active_faults: 1"),
        ),
        (
            "/disabled/",
            "typed_per_filter_config: {envoy.filters.http.fault: {\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}}".to_owned(),
        ),
        (
            "/bounded/",
            per_route("delay: {fixed_delay: 0.4s, percentage: {numerator: 100}}"),
        ),
        ("/", String::new()),
    ];
    let routes: String = routes
        .iter()
        .map(|(p, extra)| {
            let action = if *p == "/bounded/" {
                "{cluster: up, max_stream_duration: {max_stream_duration: 0.1s}}"
            } else {
                "{cluster: up}"
            };
            format!("              - match: {{prefix: \"{p}\"}}\n                route: {action}\n                {extra}\n")
        })
        .collect();
    render(
        r#"
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
            - name: faulty
              domains: ["faulty"]
              typed_per_filter_config:
                envoy.filters.http.fault:
                  "@type": {{fault}}
                  abort: {http_status: 502, percentage: {numerator: 100}}
              routes:
              - match: {prefix: /}
                route: {cluster: up}
            - name: main
              domains: ["*"]
              routes:
{{routes}}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": {{fault}}
              abort: {http_status: 500, percentage: {numerator: 0}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: up
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{port}}}}}}]}]}
"#,
        &[
            ("routes", routes),
            ("fault", FAULT.to_owned()),
            ("port", port.to_string()),
        ],
    )
}

/// Status, body, content type, grpc-status and whether the upstream answered.
async fn answer(c: &mut Conn, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let r = c.get(host, path, headers).await;
    format!(
        "{} {:?} ct={:?} grpc={:?} upstream={}",
        r.status.as_u16(),
        if r.header("x-upstream").is_some() {
            String::new()
        } else {
            r.text()
        },
        r.header("content-type"),
        r.header("grpc-status"),
        r.header("x-upstream").is_some()
    )
}

async fn cases(p: &ProxyProcess) -> Vec<String> {
    let mut c = Conn::h1(p.listener("edge")).await;
    let grpc = [("content-type", "application/grpc")];
    let mut out = vec![
        answer(&mut c, "h", "/", &[]).await,
        answer(&mut c, "h", "/fixed-abort/", &[]).await,
        answer(&mut c, "h", "/grpc-abort/", &[]).await,
        answer(&mut c, "h", "/grpc-abort/", &grpc).await,
        answer(&mut c, "h", "/fixed-abort/", &grpc).await,
        answer(&mut c, "h", "/header/", &[]).await,
        answer(
            &mut c,
            "h",
            "/header/",
            &[("x-envoy-fault-abort-request", "429")],
        )
        .await,
        answer(
            &mut c,
            "h",
            "/header/",
            &[
                ("x-envoy-fault-abort-request", "429"),
                ("x-envoy-fault-abort-request-percentage", "0"),
            ],
        )
        .await,
        answer(
            &mut c,
            "h",
            "/header/",
            &[("x-envoy-fault-abort-grpc-request", "8")],
        )
        .await,
        answer(&mut c, "h", "/matched/", &[]).await,
        answer(&mut c, "h", "/matched/", &[("x-fault", "yes")]).await,
        answer(&mut c, "h", "/disabled/", &[]).await,
        answer(&mut c, "faulty", "/anything", &[]).await,
    ];
    // The stream's duration limit ends a fault delay (DT).
    let started = Instant::now();
    let r = answer(
        &mut Conn::h1(p.listener("edge")).await,
        "h",
        "/bounded/",
        &[],
    )
    .await;
    out.push(format!(
        "{r} cut short={}",
        started.elapsed() < Duration::from_millis(300)
    ));
    // The same with a body, complete when the limit fires.
    let mut post = Conn::h1(p.listener("edge")).await;
    let req = tests::client::request(
        "POST",
        "h",
        "/bounded/",
        &[],
        bytes::Bytes::from_static(b"hello"),
        false,
    );
    let r = post.send(req).await.expect("response");
    out.push(format!("POST {} {:?}", r.status.as_u16(), r.text()));
    let started = Instant::now();
    let r = answer(&mut c, "h", "/delay/", &[]).await;
    out.push(format!(
        "{r} delayed={}",
        started.elapsed() >= Duration::from_millis(180)
    ));
    let started = Instant::now();
    let r = answer(
        &mut c,
        "h",
        "/header/",
        &[("x-envoy-fault-delay-request", "150")],
    )
    .await;
    out.push(format!(
        "{r} delayed={}",
        started.elapsed() >= Duration::from_millis(130)
    ));
    // max_active_faults 1: while one request is delayed, another is not.
    let addr = p.listener("edge");
    let slow = tokio::spawn(async move {
        let mut c = Conn::h1(addr).await;
        let started = Instant::now();
        c.get("h", "/slow/", &[]).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let r = answer(&mut c, "h", "/slow/", &[]).await;
    out.push(format!(
        "{r} second delayed={}",
        started.elapsed() >= Duration::from_millis(350)
    ));
    let first = slow.await.expect("slow request");
    out.push(format!(
        "first delayed={}",
        first >= Duration::from_millis(350)
    ));
    out
}

async fn half_aborted(p: &ProxyProcess, n: usize) -> usize {
    let mut c = Conn::h1(p.listener("edge")).await;
    let mut aborted = 0;
    for _ in 0..n {
        if c.get("h", "/half-abort/", &[]).await.status.as_u16() == 503 {
            aborted += 1;
        }
    }
    aborted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_match_envoy() {
    let up = HttpUpstream::start("up").await;
    let cfg = config(up.addr.port());
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    let e = cases(&envoy).await;
    let r = cases(&remora).await;
    for (i, (e, r)) in e.iter().zip(&r).enumerate() {
        assert_eq!(r, e, "case {i}: remora vs envoy");
    }
    assert_eq!(e.len(), r.len());
    assert!(r[1].starts_with("418 \"fault filter abort\""), "{}", r[1]);
    assert_eq!(
        r[13],
        "504 \"downstream duration timeout\" ct=Some(\"text/plain\") grpc=None upstream=false cut short=true"
    );
    // Envoy reads the body while the fault holds the request: it is complete, so 504.
    assert_eq!(r[14], "POST 504 \"downstream duration timeout\"");

    const N: usize = 400;
    for (name, p) in [("envoy", &envoy), ("remora", &remora)] {
        let aborted = half_aborted(p, N).await;
        // 50% of 400: within 4.5 standard deviations (10).
        assert!(
            (155..=245).contains(&aborted),
            "{name}: {aborted} of {N} aborted"
        );
    }
    let names = [
        "http.edge.fault.delays_injected",
        "http.edge.fault.faults_overflow",
        "http.edge.fault.active_faults",
    ];
    let (es, rs): (Vec<u64>, Vec<u64>) = tokio::task::spawn_blocking(move || {
        (
            names.iter().map(|n| envoy.stat(n)).collect(),
            names.iter().map(|n| remora.stat(n)).collect(),
        )
    })
    .await
    .expect("stats");
    assert_eq!(rs, [5, 1, 0], "remora {names:?}");
    assert_eq!(es, rs, "envoy vs remora {names:?}");
}
