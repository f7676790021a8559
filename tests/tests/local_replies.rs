//! Local replies and bad input: each failure answers like Envoy (status, body, flags via
//! stats) and never disturbs other connections.

use std::time::Duration;

use bytes::Bytes;
use tests::client::{self, raw, raw_status, Conn};
use tests::proxy::Proxy;
use tests::render;
use tests::upstream::{closed_port, HttpUpstream};

const CONFIG: &str = r#"
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
          max_request_headers_kb: 16
          common_http_protocol_options: {max_headers_count: 30}
          route_config:
            virtual_hosts:
            - name: main
              domains: ["known.host", "known.host:*"]
              routes:
              - {match: {prefix: /empty}, route: {cluster: empty}}
              - {match: {prefix: /refused}, route: {cluster: refused}}
              - {match: {prefix: /never}, route: {cluster: a, timeout: 0.2s}}
              - {match: {prefix: /}, route: {cluster: a}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: empty
  - name: refused
    connect_timeout: 1s
    load_assignment: {cluster_name: refused, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{closed}}}}}}]}]}
"#;

async fn env() -> (Proxy, HttpUpstream) {
    let a = HttpUpstream::start("a").await;
    let cfg = render(
        CONFIG,
        &[
            ("a", a.addr.port().to_string()),
            ("closed", closed_port().port().to_string()),
        ],
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();
    (proxy, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_local_replies() {
    let (p, _a) = env().await;
    let mut c = Conn::h1(p.addr("edge")).await;

    let r = c.get("unknown.host", "/", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (404, ""));
    assert_eq!(p.stat("http.edge.no_route"), 1);

    let r = c.get("known.host", "/empty", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (503, "no healthy upstream")
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(p.stat("cluster.empty.upstream_cx_none_healthy"), 1);

    let r = c.get("known.host", "/refused", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure");
    assert_eq!(p.stat("cluster.refused.upstream_cx_connect_fail"), 1);

    let r = c.get("known.host", "/never", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert_eq!(p.stat("cluster.a.upstream_rq_timeout"), 1);

    let r = c.get("known.host", "/reset", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect error or disconnect/reset before headers. reset reason: connection termination");

    // The connection survived all of the above.
    assert_eq!(c.get("known.host", "/ok", &[]).await.status, 200);
    assert_eq!(p.stat("http.edge.downstream_rq_5xx"), 4);
    assert_eq!(p.stat("http.edge.downstream_rq_4xx"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_close() {
    let (p, _a) = env().await;
    let addr = p.addr("edge");
    let w = Duration::from_millis(500);
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nhost: known.host\r\n\r\n", 426),
        (b"GET / HTTP/1.1\r\nhost: known.host\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: known.host\r\nbad header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: known.host\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", 403),
    ];
    for (req, want) in cases {
        let out = raw(addr, req, w).await;
        assert_eq!(
            raw_status(&out),
            Some(*want),
            "{} -> {}",
            String::from_utf8_lossy(req),
            String::from_utf8_lossy(&out)
        );
    }
    // Oversized headers: 431.
    let mut big = b"GET / HTTP/1.1\r\nhost: known.host\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(&raw(addr, &big, w).await), Some(431));
    // Too many headers: 431.
    let mut many = b"GET / HTTP/1.1\r\nhost: known.host\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(raw_status(&raw(addr, &many, w).await), Some(431));
    // The proxy still serves.
    assert_eq!(client::get(addr, "known.host", "/").await.status, 200);
}

/// The 134 Transfer-Encoding obfuscations from smuggler: each is rejected (400 or 501) or
/// normalised; the upstream never sees a request with both framings, and never sees
/// bytes of the body as a request of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_te_mutations_are_rejected_or_normalised() {
    let (p, a) = env().await;
    let addr = p.addr("edge");
    let data = std::fs::read_to_string(tests::testdata(
        "http1-smuggling/smuggler-te-mutations-default.json",
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    let sets = v["sets"].as_object().unwrap();
    let mut cases = 0;
    let (mut rejected, mut normalised) = (0, 0);
    for set in sets.values() {
        for (name, case) in set.as_object().unwrap() {
            cases += 1;
            let template = case["header_template"].as_str().unwrap();
            // The payload is a complete chunked body followed by a request that would be
            // smuggled if the proxy and upstream disagreed on framing.
            let payload = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: known.host\r\n\r\n";
            let head = template
                .replace("__METHOD__", "POST")
                .replace("__ENDPOINT__", "/")
                .replace("__HOST__", "known.host")
                .replace("__RANDOM__", "1")
                .replace("__REPLACE_CL__", &payload.len().to_string());
            // Characters U+0080..U+00FF stand for single bytes.
            let mut bytes: Vec<u8> = head.chars().map(|c| c as u32 as u8).collect();
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(payload.as_bytes());
            let before = a.requests.load(std::sync::atomic::Ordering::SeqCst);
            let out = raw(addr, &bytes, Duration::from_millis(300)).await;
            let text = String::from_utf8_lossy(&out).into_owned();
            match raw_status(&out) {
                // 501: a coding other than `chunked` alone, as Envoy answers it.
                Some(400 | 501) => rejected += 1,
                Some(200) => {
                    normalised += 1;
                    for body in text
                        .split("\r\n\r\n")
                        .filter(|b| b.trim_start().starts_with('{'))
                    {
                        let j: serde_json::Value = serde_json::from_str(body.trim())
                            .unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
                        let h = &j["headers"];
                        assert!(
                            h["content-length"].is_null() || h["transfer-encoding"].is_null(),
                            "{name}: upstream saw both framings: {h}"
                        );
                        if j["uri"] == "/smuggled" {
                            // Only acceptable as the client's own second request after a
                            // chunked body the proxy itself terminated.
                            assert_eq!(j["body_len"], 0, "{name}");
                        }
                    }
                    let seen = a.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
                    assert!(seen <= 2, "{name}: upstream saw {seen} requests");
                }
                other => panic!("{name}: unexpected answer {other:?}: {text}"),
            }
        }
    }
    assert_eq!(cases, 134, "all smuggler cases were run");
    eprintln!("smuggler TE mutations: {rejected} rejected, {normalised} normalised");
    assert_eq!(client::get(addr, "known.host", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stopping_mid_body_and_upstream_closing_mid_response() {
    use tokio::io::AsyncWriteExt;
    let (p, _a) = env().await;
    let addr = p.addr("edge");
    // A client that promises 1000 bytes, sends 10 and goes away.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo-body HTTP/1.1\r\nhost: known.host\r\ncontent-length: 1000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    drop(s);
    // An upstream that sends headers and part of the body, then resets: the client sees
    // the stream fail rather than a truncated success.
    let mut c = Conn::h1(addr).await;
    let req = client::request(
        "GET",
        "known.host",
        "/reset-mid-body",
        &[],
        Bytes::new(),
        false,
    );
    assert!(
        c.send(req).await.is_err(),
        "a truncated body must surface as an error"
    );
    // Everything else is unaffected.
    let mut c = Conn::h2(addr).await;
    for _ in 0..5 {
        assert_eq!(c.get("known.host", "/", &[]).await.status, 200);
    }
}
