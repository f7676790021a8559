//! HTTP proxying through Remora with real upstream servers: routing actions, rewrites,
//! header handling, pooling, protocols (HTTP/1.1, h2c, translation both ways), bodies.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tests::client::{self, Conn};
use tests::proxy::Proxy;
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
          use_remote_address: true
          route_config:
            request_headers_to_add: [{header: {key: x-level, value: config}, append_action: APPEND_IF_EXISTS_OR_ADD}]
            response_headers_to_add: [{header: {key: x-resp-config, value: "1"}}]
            virtual_hosts:
            - name: main
              domains: ["*"]
              request_headers_to_add: [{header: {key: x-level, value: vhost}, append_action: APPEND_IF_EXISTS_OR_ADD}]
              response_headers_to_remove: [x-upstream-secret]
              routes:
              - match: {prefix: /rewrite/}
                route: {cluster: a, prefix_rewrite: /new/}
              - match: {safe_regex: {regex: "/regex/([a-z]+)/(\\d+)"}}
                route:
                  cluster: a
                  regex_rewrite: {pattern: {regex: "^/regex/([a-z]+)/(\\d+)$"}, substitution: "/by-id/\\2/\\1"}
              - match: {prefix: /host-literal}
                route: {cluster: a, host_rewrite_literal: rewritten.example}
              - match: {prefix: /host-auto}
                route: {cluster: dns, auto_host_rewrite: true}
              - match: {prefix: /weighted}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: a, weight: 75, request_headers_to_add: [{header: {key: x-pick, value: a}}]}
                    - {name: b, weight: 25, request_headers_to_add: [{header: {key: x-pick, value: b}}]}
              - match: {prefix: /by-header}
                route: {cluster_header: x-cluster}
              - match: {prefix: /h2up}
                route: {cluster: h2}
              - match: {prefix: /mirror}
                route: {cluster: a, request_mirror_policies: [{cluster: b}]}
              - match: {prefix: /unix}
                route: {cluster: unix}
              - match: {prefix: /}
                route: {cluster: a}
                request_headers_to_add: [{header: {key: x-level, value: route}, append_action: APPEND_IF_EXISTS_OR_ADD}]
                request_headers_to_remove: [x-drop-me]
                response_headers_to_add: [{header: {key: x-resp-route, value: "1"}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: b
    load_assignment: {cluster_name: b, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{b}}}}}}]}]}
  - name: dns
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    load_assignment: {cluster_name: dns, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: {{a}}}}}}]}]}
  - name: h2
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: h2, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: unix
    load_assignment: {cluster_name: unix, endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: "{{unix}}"}}}}]}]}
"#;

struct Env {
    proxy: Proxy,
    a: HttpUpstream,
    b: HttpUpstream,
    _unix: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(CONFIG).await
}

/// Upstreams `a` and `b` (TCP) and `unix` (a Unix socket), and Remora on `config`
/// (placeholders `{{a}}`, `{{b}}`, `{{unix}}`).
async fn env_with(config: &'static str) -> Env {
    let a = HttpUpstream::start("a").await;
    let b = HttpUpstream::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("up.sock");
    let (unix, _) = HttpUpstream::start_unix(&sock, "unix").await;
    let cfg = render(
        config,
        &[
            ("a", a.addr.port().to_string()),
            ("b", b.addr.port().to_string()),
            ("unix", sock.display().to_string()),
        ],
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();
    Env {
        proxy,
        a,
        b,
        _unix: unix,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_header_mutations_in_envoy_order() {
    let e = env().await;
    let r = Conn::h1(e.proxy.addr("edge"))
        .await
        .get("svc.local", "/plain", &[("x-drop-me", "1")])
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["upstream"], "a");
    assert_eq!(
        j["headers"]["x-level"],
        serde_json::json!(["route", "vhost", "config"])
    );
    assert!(j["headers"]["x-drop-me"].is_null());
    assert_eq!(j["headers"]["host"][0], "svc.local");
    // use_remote_address: the peer is appended and marked internal; a request id is made.
    // A loopback peer is recorded as this host's address, as Envoy does; with no
    // internal_address_config the request counts as external.
    assert_eq!(
        j["headers"]["x-forwarded-for"][0],
        remora::net::local_address(false).to_string().as_str()
    );
    assert_eq!(j["headers"]["x-envoy-external-address"][0], "127.0.0.1");
    assert!(j["headers"]["x-envoy-internal"].is_null());
    assert_eq!(j["headers"]["x-forwarded-proto"][0], "http");
    assert_eq!(j["headers"]["x-request-id"][0].as_str().unwrap().len(), 36);
    assert_eq!(j["headers"]["x-envoy-expected-rq-timeout-ms"][0], "15000");
    assert_eq!(r.header("x-resp-route"), Some("1"));
    assert_eq!(r.header("x-resp-config"), Some("1"));
    assert_eq!(r.header("server"), Some("envoy"));
    assert!(r.header("x-envoy-upstream-service-time").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_host_rewrites() {
    let e = env().await;
    let mut c = Conn::h1(e.proxy.addr("edge")).await;
    let j = c.get("h", "/rewrite/x/y?q=1", &[]).await.json();
    assert_eq!(j["uri"], "/new/x/y?q=1");
    assert_eq!(j["headers"]["x-envoy-original-path"][0], "/rewrite/x/y?q=1");
    let j = c.get("h", "/regex/abc/42", &[]).await.json();
    assert_eq!(j["uri"], "/by-id/42/abc");
    let j = c.get("orig.example", "/host-literal", &[]).await.json();
    assert_eq!(j["headers"]["host"][0], "rewritten.example");
    assert_eq!(j["headers"]["x-envoy-original-host"][0], "orig.example");
    let j = c.get("orig.example", "/host-auto", &[]).await.json();
    assert_eq!(
        j["headers"]["host"][0], "localhost",
        "the endpoint's DNS name, as Envoy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_traffic() {
    let e = env().await;
    let mut c = Conn::h1(e.proxy.addr("edge")).await;
    let mut a = 0;
    for _ in 0..400 {
        let j = c.get("h", "/weighted", &[]).await.json();
        let picked = j["upstream"].as_str().unwrap().to_string();
        assert_eq!(
            j["headers"]["x-pick"][0],
            picked.as_str(),
            "per-cluster headers follow the pick"
        );
        a += usize::from(picked == "a");
    }
    // 75% expected; 400 draws keep it within ±10% with overwhelming probability.
    assert!((260..=340).contains(&a), "a got {a} of 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_from_header_and_unknown_cluster() {
    let e = env().await;
    let mut c = Conn::h1(e.proxy.addr("edge")).await;
    let r = c.get("h", "/by-header", &[("x-cluster", "b")]).await;
    assert_eq!(r.json()["upstream"], "b");
    let r = c.get("h", "/by-header", &[("x-cluster", "nope")]).await;
    assert_eq!(
        r.status, 503,
        "Envoy's cluster_not_found_response_code default"
    );
    assert_eq!(e.proxy.stat("http.edge.no_cluster"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_pooled() {
    let e = env().await;
    let mut c = Conn::h1(e.proxy.addr("edge")).await;
    for _ in 0..20 {
        assert_eq!(c.get("h", "/plain", &[]).await.status, 200);
    }
    assert_eq!(
        e.a.connections.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection"
    );
    assert_eq!(e.proxy.stat("cluster.a.upstream_cx_total"), 1);
    assert_eq!(e.proxy.stat("cluster.a.upstream_rq_total"), 20);
    assert_eq!(e.proxy.stat("cluster.a.upstream_rq_2xx"), 20);
    assert_eq!(e.proxy.stat("http.edge.downstream_rq_2xx"), 20);
    assert_eq!(
        e.proxy.stat("listener.127.0.0.1_0.downstream_cx_total"),
        1,
        "listener stats use the configured address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_downstream_and_translation_both_ways() {
    let e = env().await;
    // h2c (prior knowledge) downstream -> HTTP/1.1 upstream.
    let mut c = Conn::h2(e.proxy.addr("edge")).await;
    let r = c.get("h2.local", "/plain", &[]).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    let j = r.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["headers"]["host"][0], "h2.local");
    // HTTP/1.1 downstream -> HTTP/2 upstream.
    let r = Conn::h1(e.proxy.addr("edge"))
        .await
        .get("h1.local", "/h2up", &[])
        .await;
    assert_eq!(r.version, http::Version::HTTP_11);
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["uri"], "http://h1.local/h2up");
    // Concurrent h2 streams on one downstream connection.
    let mut handles = Vec::new();
    for i in 0..20 {
        let Conn::H2(s) = &c else { unreachable!() };
        let mut conn = Conn::H2(s.clone());
        handles.push(tokio::spawn(async move {
            conn.get("h", &format!("/delay/{}", 20 - i), &[])
                .await
                .status
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert!(e.proxy.stat("http.edge.downstream_rq_http2_total") >= 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let e = env().await;
    let mut c = Conn::h1(e.proxy.addr("edge")).await;
    let r = c.get("h", "/bytes/20000000", &[]).await;
    assert_eq!(r.body.len(), 20_000_000);
    let big = Bytes::from(vec![7u8; 8 << 20]);
    let req = client::request("POST", "h", "/echo-body", &[], big.clone(), false);
    let r = c.send(req).await.unwrap();
    assert_eq!(r.body, big);
    // Same over h2 with a chunked upload.
    let mut c2 = Conn::h2(e.proxy.addr("edge")).await;
    let r = c2
        .send(client::request(
            "POST",
            "h",
            "/echo-body",
            &[],
            big.clone(),
            true,
        ))
        .await
        .unwrap();
    assert_eq!(r.body.len(), big.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_and_chunked_upload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = env().await;
    let mut s = tokio::net::TcpStream::connect(e.proxy.addr("edge"))
        .await
        .unwrap();
    s.write_all(b"POST /echo-body HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let mut out = buf[..n].to_vec();
    assert!(
        out.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    s.write_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    out.extend(client::read_until_close(&mut s, std::time::Duration::from_millis(500)).await);
    let text = String::from_utf8_lossy(&out);
    // The echo upstream may answer before the body is complete, so the 200 can share the
    // first read with the 100.
    let after_continue = text.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
    assert!(after_continue.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("hello") && text.contains(" world"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_h2() {
    let e = env().await;
    let mut c = Conn::h2(e.proxy.addr("edge")).await;
    // HTTP/1.1 chunked trailers from the upstream, back to an h2 client.
    let r = c.get("h", "/trailers", &[("te", "trailers")]).await;
    assert_eq!(r.text(), "body");
    assert_eq!(
        r.trailers
            .as_ref()
            .and_then(|t| t.get("x-trailer"))
            .map(|v| v.to_str().unwrap()),
        Some("yes")
    );
    // And to an HTTP/1.1 client that asked for them (chunked trailers).
    let mut c1 = Conn::h1(e.proxy.addr("edge")).await;
    let r = c1.get("h", "/trailers", &[("te", "trailers")]).await;
    assert_eq!(
        r.trailers
            .as_ref()
            .and_then(|t| t.get("x-trailer"))
            .map(|v| v.to_str().unwrap()),
        Some("yes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_sends_a_shadow_copy() {
    let e = env().await;
    let mut c = Conn::h1(e.proxy.addr("edge")).await;
    let r = c
        .send(client::request(
            "POST",
            "shop.local",
            "/mirror",
            &[],
            Bytes::from_static(b"payload"),
            false,
        ))
        .await
        .unwrap();
    assert_eq!(r.json()["upstream"], "a");
    for _ in 0..200 {
        if e.b.requests.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        e.b.requests.load(Ordering::SeqCst),
        1,
        "the mirror cluster got the copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_upstream() {
    let e = env().await;
    let r = client::get(e.proxy.addr("edge"), "h", "/unix/x").await;
    assert_eq!(r.json()["upstream"], "unix");
}

const CONFIG2: &str = r#"
static_resources:
  listeners:
  - name: norm
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: norm
          normalize_path: true
          merge_slashes: true
          generate_request_id: false
          server_name: remora-test
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - {match: {prefix: /limited}, route: {cluster: limited}}
              - {match: {prefix: /logical}, route: {cluster: logical}}
              - {match: {prefix: /same-proto}, route: {cluster: same_proto}}
              - {match: {prefix: /}, route: {cluster: a}}
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: limited
    max_requests_per_connection: 2
    load_assignment: {cluster_name: limited, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{b}}}}}}]}]}
  - name: logical
    type: LOGICAL_DNS
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 1s
    load_assignment: {cluster_name: logical, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: {{a}}}}}}]}]}
  - name: same_proto
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: {}
    load_assignment: {cluster_name: same_proto, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#;

async fn env2() -> Env {
    env_with(CONFIG2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_normalization_and_slash_merging() {
    let e = env2().await;
    let mut c = Conn::h1(e.proxy.addr("norm")).await;
    let r = c.get("h", "/a//b/./c/../d?x=//y", &[]).await;
    assert_eq!(r.json()["uri"], "/a/b/d?x=//y");
    assert!(
        r.json()["headers"]["x-request-id"].is_null(),
        "generate_request_id: false"
    );
    assert_eq!(r.header("server"), Some("remora-test"));
    let r = c.get("h", "/%2e%2e/secret", &[]).await;
    assert_eq!(
        r.json()["uri"],
        "/secret",
        "encoded dot segments cannot climb above the root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_recycles_upstream_connections() {
    let e = env2().await;
    let mut c = Conn::h1(e.proxy.addr("norm")).await;
    for _ in 0..5 {
        assert_eq!(c.get("h", "/limited", &[]).await.json()["upstream"], "b");
    }
    assert_eq!(
        e.b.connections.load(Ordering::SeqCst),
        3,
        "2 + 2 + 1 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_dns_and_downstream_protocol() {
    let e = env2().await;
    let r = client::get(e.proxy.addr("norm"), "h", "/logical").await;
    assert_eq!(r.json()["upstream"], "a");
    assert!(e.proxy.stat("cluster.logical.update_success") >= 1);
    // dns_refresh_rate 1s: the name is resolved again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.proxy.stat("cluster.logical.update_success") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "LOGICAL_DNS was not re-resolved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = Conn::h1(e.proxy.addr("norm"))
        .await
        .get("h", "/same-proto", &[])
        .await;
    assert_eq!(r.json()["version"], "HTTP/1.1");
    let r = Conn::h2(e.proxy.addr("norm"))
        .await
        .get("h", "/same-proto", &[])
        .await;
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "use_downstream_protocol_config follows the client"
    );
    let _ = &e.a;
}

/// A GET with a chunked body reaches the upstream with its body (hyper's client would
/// otherwise drop it); a malformed chunked body is a 400, not an upstream failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_body_and_malformed_chunking() {
    let e = env().await;
    let addr = e.proxy.addr("edge");
    let ok = b"GET /plain HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let out = client::raw(addr, ok, std::time::Duration::from_millis(500)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body_len\":5"), "{text}");
    let bad =
        b"POST /plain HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nABCDE0\r\n";
    let out = client::raw(addr, bad, std::time::Duration::from_millis(500)).await;
    assert_eq!(
        client::raw_status(&out),
        Some(400),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let bad_target = "GET /\u{3b4} HTTP/1.1\r\nhost: h\r\n\r\n";
    let out = client::raw(
        addr,
        bad_target.as_bytes(),
        std::time::Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        client::raw_status(&out),
        Some(400),
        "non-ASCII request target"
    );
}
