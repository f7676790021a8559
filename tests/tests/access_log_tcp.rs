//! TCP proxy access logs against Envoy 1.40: the same connections through the same
//! config, each proxy writing its own file, must give the same lines: a relayed
//! connection (bytes each way, cluster, host), a connection failure (UF with the
//! socket's reason) and a cluster that does not exist (NC); HTTP-only operators print
//! `-` or 0.

use std::path::Path;
use std::time::Duration;

use tests::envoy::envoy_bin;
use tests::process::{remora_bin, ProxyProcess, ACCESS_LOG_ARGS};
use tests::render;
use tests::upstream::{closed_port, tcp_echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: relay
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: relay, cluster: echo, access_log: [{{log}}]}}]}]
  - name: dead
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: dead, cluster: dead, access_log: [{{log}}]}}]}]
  - name: nowhere
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: [{filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: nowhere, cluster: missing, access_log: [{{log}}]}}]}]
  clusters:
  - name: echo
    load_assignment: {cluster_name: echo, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{echo}}}}}}]}]}
  - name: dead
    connect_timeout: 1s
    load_assignment: {cluster_name: dead, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{dead}}}}}}]}]}
"#;

const FORMAT: &str = "%RESPONSE_CODE% %PROTOCOL% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %UPSTREAM_TRANSPORT_FAILURE_REASON% %REQ(:METHOD)% %REQ(X-ANY)% %RESP(X-ANY)% %ROUTE_NAME% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_ADDRESS%\n";

fn start(bin: &Path, echo: u16, dead: u16, log: &Path) -> ProxyProcess {
    let logger = format!(
        r#"{{name: envoy.access_loggers.file, typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: "{}", log_format: {{text_format_source: {{inline_string: "{}"}}}}}}}}"#,
        log.display(),
        FORMAT.replace('\n', "\\n")
    );
    let cfg = render(
        CONFIG,
        &[
            ("echo", echo.to_string()),
            ("dead", dead.to_string()),
            ("log", logger),
        ],
    );
    ProxyProcess::start(bin, &cfg, ACCESS_LOG_ARGS)
}

/// One connection per listener, in order; then the log's lines.
async fn lines(p: &ProxyProcess, log: &Path) -> Vec<String> {
    // Relayed: 5 bytes out, echoed back, then the client closes.
    let mut c = TcpStream::connect(p.listener("relay"))
        .await
        .expect("connect");
    c.write_all(b"hello").await.expect("write");
    let mut back = [0u8; 5];
    c.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"hello");
    drop(c);
    // The others are closed by the proxy.
    for name in ["dead", "nowhere"] {
        let mut c = TcpStream::connect(p.listener(name)).await.expect("connect");
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
            .await
            .expect("closed within 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "{name}: closed without data");
    }
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= 3 {
            let mut l: Vec<String> = text.lines().map(String::from).collect();
            // Connections may close in any order: compare them by their flags and cluster.
            l.sort();
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the log has fewer than 3 lines: {:?}",
        std::fs::read_to_string(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_access_log_lines_match_envoy() {
    let (echo, _, _task) = tcp_echo().await;
    let dead = closed_port().port();
    let dir = tempfile::tempdir().expect("tempdir");
    let (elog, rlog) = (dir.path().join("envoy.log"), dir.path().join("remora.log"));
    let envoy = start(&envoy_bin(), echo.port(), dead, &elog);
    let remora = start(&remora_bin(), echo.port(), dead, &rlog);
    let e = lines(&envoy, &elog).await;
    let r = lines(&remora, &rlog).await;
    // The upstream connection's local port differs between the proxies.
    let norm = |l: &String| match l.rsplit_once(':') {
        Some((head, port)) if port.chars().all(|c| c.is_ascii_digit()) => format!("{head}:PORT"),
        _ => l.clone(),
    };
    let (e, r): (Vec<String>, Vec<String>) =
        (e.iter().map(norm).collect(), r.iter().map(norm).collect());
    assert_eq!(e, r, "envoy vs remora");
    // And what they agreed on.
    let relayed = r
        .iter()
        .find(|l| l.contains(" echo "))
        .expect("relayed line");
    assert!(
        relayed.starts_with("0 - - - rx=5 tx=5 echo 127.0.0.1:"),
        "{relayed}"
    );
    assert!(
        r.iter()
            .any(|l| l.contains(" UF,URX ")
                && l.contains("delayed_connect_error:_Connection_refused")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|l| l.starts_with("0 - NC - rx=0 tx=0 - - ")),
        "{r:?}"
    );
}
