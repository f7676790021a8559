//! Access logs against Envoy 1.40: the same requests through the same config, each proxy
//! writing its own file, must give the same lines: status, response flags in the order
//! they were set (`URX` when retries run out, `URX,UF`, `URX,UT`, `DI` and `FI` from the
//! fault filter, `NR`, ...), response code details (with the socket's reason for a
//! connection failure), bytes each way, cluster and route.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tests::client::{request, Conn};
use tests::envoy::envoy_bin;
use tests::process::{remora_bin, ProxyProcess, ACCESS_LOG_ARGS};
use tests::render;
use tests::upstream::{closed_port, HttpUpstream};

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
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{log}}
              log_format:
                text_format_source:
                  inline_string: "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% %UPSTREAM_CLUSTER% %ROUTE_NAME% %REQ(X-CASE)% %RESP(X-UPSTREAM)% %REQ(X-MISSING):3% %REQ(X-CASE):2% %UPSTREAM_TRANSPORT_FAILURE_REASON% %UPSTREAM_HOST% %UPSTREAM_LOCAL_ADDRESS%\n"
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {prefix: /r503/}
                name: retry-503
                route: {cluster: a, prefix_rewrite: /, retry_policy: {retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.001s}}}
              - match: {prefix: /rdead/}
                route: {cluster: dead, retry_policy: {retry_on: connect-failure, num_retries: 2, retry_back_off: {base_interval: 0.001s}}}
              - match: {prefix: /dead/}
                route: {cluster: dead}
              - match: {prefix: /rpt/}
                route: {cluster: a, prefix_rewrite: /, retry_policy: {retry_on: 5xx, num_retries: 1, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}}
              - match: {prefix: /short/}
                route: {cluster: a, prefix_rewrite: /, timeout: 0.1s}
              - match: {prefix: /direct}
                direct_response: {status: 201, body: {inline_string: created}}
              - match: {prefix: /moved}
                redirect: {host_redirect: elsewhere.example, response_code: PERMANENT_REDIRECT}
              - match: {prefix: /}
                route: {cluster: a}
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              delay: {header_delay: {}, percentage: {numerator: 100}}
              abort: {header_abort: {}, percentage: {numerator: 100}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: dead
    connect_timeout: 1s
    load_assignment: {cluster_name: dead, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{dead}}}}}}]}]}
"#;

/// Method, path, headers, body.
type Req = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const REQUESTS: &[Req] = &[
    ("GET", "/status/200", &[("x-case", "plain")], ""),
    ("POST", "/echo", &[("x-case", "body")], "hello world"),
    ("GET", "/r503/status/503", &[("x-case", "urx")], ""),
    ("GET", "/rdead/x", &[("x-case", "urx-uf")], ""),
    ("GET", "/dead/x", &[("x-case", "uf")], ""),
    ("GET", "/rpt/delay/500", &[("x-case", "urx-ut")], ""),
    ("GET", "/short/delay/500", &[("x-case", "ut")], ""),
    (
        "GET",
        "/status/200",
        &[("x-case", "di"), ("x-envoy-fault-delay-request", "20")],
        "",
    ),
    (
        "GET",
        "/status/200",
        &[("x-case", "fi"), ("x-envoy-fault-abort-request", "418")],
        "",
    ),
    (
        "GET",
        "/status/200",
        &[
            ("x-case", "di-fi"),
            ("x-envoy-fault-delay-request", "20"),
            ("x-envoy-fault-abort-request", "503"),
        ],
        "",
    ),
    ("GET", "/direct", &[("x-case", "direct")], ""),
    ("GET", "/moved", &[("x-case", "redirect")], ""),
];

fn start(bin: &Path, up: &HttpUpstream, dead: u16, log: &Path) -> ProxyProcess {
    let cfg = render(
        CONFIG,
        &[
            ("a", up.addr.port().to_string()),
            ("dead", dead.to_string()),
            ("log", log.display().to_string()),
        ],
    );
    ProxyProcess::start(bin, &cfg, ACCESS_LOG_ARGS)
}

/// Sends every request, then waits for as many lines in the log.
async fn lines(p: &ProxyProcess, log: &Path) -> Vec<String> {
    let addr = p.listener("edge");
    for (method, path, headers, body) in REQUESTS {
        let mut c = Conn::h1(addr).await;
        let req = request(method, "h", path, headers, Bytes::from(*body), false);
        tokio::time::timeout(Duration::from_secs(5), c.send(req))
            .await
            .expect("an answer within 5 s")
            .expect("a response");
    }
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= REQUESTS.len() {
            return text.lines().map(String::from).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the log has fewer than {} lines: {:?}",
        REQUESTS.len(),
        std::fs::read_to_string(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_match_envoy() {
    let up = HttpUpstream::start("a").await;
    let dead = closed_port().port();
    let dir = tempfile::tempdir().expect("tempdir");
    let (elog, rlog) = (dir.path().join("envoy.log"), dir.path().join("remora.log"));
    let envoy = start(&envoy_bin(), &up, dead, &elog);
    let remora = start(&remora_bin(), &up, dead, &rlog);
    let e = lines(&envoy, &elog).await;
    let r = lines(&remora, &rlog).await;
    // The upstream connection's local port differs between the proxies: compared apart.
    let split = |l: &String| -> (String, String) {
        let (line, local) = l.rsplit_once(' ').unwrap_or((l, ""));
        let local = match local.rsplit_once(':') {
            Some((ip, _port)) => format!("{ip}:PORT"),
            None => local.to_string(),
        };
        (line.to_string(), local)
    };
    for (i, (e, r)) in e.iter().zip(&r).enumerate() {
        assert_eq!(split(e), split(r), "line {i}: envoy vs remora");
    }
    // Remora's upstream local addresses are the connections the upstream accepted.
    let peers = up.peers.lock().map(|p| p.clone()).unwrap_or_default();
    let locals: Vec<&str> = r.iter().filter_map(|l| l.rsplit(' ').next()).collect();
    for (i, local) in locals.iter().enumerate() {
        if let Ok(addr) = local.parse() {
            assert!(
                peers.contains(&addr),
                "line {i}: {local} not among {peers:?}"
            );
        }
    }
    assert_eq!(
        locals.iter().filter(|l| **l == "-").count(),
        6,
        "no upstream connection: the connect failures, the faults, the direct reply and the redirect"
    );
    assert_eq!(e.len(), r.len());
    // What they agreed on, for the flags this test is about.
    let flags: Vec<&str> = r
        .iter()
        .map(|l| l.split(' ').nth(5).unwrap_or(""))
        .collect();
    assert_eq!(
        flags,
        ["-", "-", "URX", "URX,UF", "UF", "URX,UT", "UT", "DI", "FI", "DI,FI", "-", "-"]
    );
    // Connection failures carry the socket's reason, in the details too.
    let uf = &r[4];
    assert!(
        uf.contains(" upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused} ")
            && uf.contains(" delayed_connect_error:_Connection_refused "),
        "{uf}"
    );
    assert!(r[11].contains(" 308 - direct_response "), "{}", r[11]);
}
