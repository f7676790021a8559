//! Listeners: IPv6 and Unix-socket (`pipe`) addresses, several listeners per process, and
//! filter chain selection by destination and source address.

use std::net::SocketAddr;

use tests::client::{self, Conn};
use tests::proxy::Proxy;
use tests::render;
use tests::upstream::HttpUpstream;

fn hcm(prefix: &str, body: &str) -> String {
    format!(
        r#"
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          route_config:
            virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: "{body}"}}}}}}]}}]
          http_filters: [{{name: envoy.filters.http.router}}]"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_unix_and_filter_chain_match() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("listener.sock");
    let cfg = format!(
        r#"
static_resources:
  listeners:
  - name: v6
    address: {{socket_address: {{address: "::1", port_value: 0}}}}
    filter_chains:
    - filters:{v6}
  - name: pipe
    address: {{pipe: {{path: "{sock}"}}}}
    filter_chains:
    - filters:{pipe}
  - name: chains
    address: {{socket_address: {{address: 0.0.0.0, port_value: 0}}}}
    filter_chains:
    - filter_chain_match: {{prefix_ranges: [{{address_prefix: 127.0.0.2, prefix_len: 32}}]}}
      filters:{dst}
    - filter_chain_match: {{source_prefix_ranges: [{{address_prefix: 127.0.0.3, prefix_len: 32}}]}}
      filters:{src}
    - filter_chain_match: {{prefix_ranges: [{{address_prefix: 127.0.0.0, prefix_len: 8}}]}}
      filters:{lo}
  - name: nomatch
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filter_chain_match: {{source_prefix_ranges: [{{address_prefix: 10.0.0.0, prefix_len: 8}}]}}
      filters:{never}
    default_filter_chain:
      filters:{default}
"#,
        v6 = hcm("v6", "v6"),
        pipe = hcm("pipe", "pipe"),
        sock = sock.display(),
        dst = hcm("dst", "by-destination"),
        src = hcm("src", "by-source"),
        lo = hcm("lo", "loopback-range"),
        never = hcm("never", "never"),
        default = hcm("default", "default-chain"),
    );
    let p = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();

    let v6 = p.addr("v6");
    assert!(v6.is_ipv6());
    assert_eq!(client::get(v6, "h", "/").await.text(), "v6");

    // HTTP over the Unix socket listener.
    let s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = send
        .send_request(client::request(
            "GET",
            "h",
            "/",
            &[],
            bytes::Bytes::new(),
            false,
        ))
        .await
        .unwrap();
    use http_body_util::BodyExt;
    assert_eq!(
        &r.into_body().collect().await.unwrap().to_bytes()[..],
        b"pipe"
    );

    let port = p.addr("chains").port();
    let at = |ip: &str| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
    assert_eq!(
        client::get(at("127.0.0.2"), "h", "/").await.text(),
        "by-destination",
        "longest destination prefix"
    );
    assert_eq!(
        client::get(at("127.0.0.1"), "h", "/").await.text(),
        "loopback-range"
    );
    // From source 127.0.0.3: destination 127.0.0.1 matches only the /8 chain at the
    // destination stage, which wins over the source-only chain (stage order).
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let stream = s.connect(at("127.0.0.1")).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let r = send
        .send_request(client::request(
            "GET",
            "h",
            "/",
            &[],
            bytes::Bytes::new(),
            false,
        ))
        .await
        .unwrap();
    assert_eq!(
        &r.into_body().collect().await.unwrap().to_bytes()[..],
        b"loopback-range"
    );

    assert_eq!(
        client::get(p.addr("nomatch"), "h", "/").await.text(),
        "default-chain"
    );
    assert_eq!(p.stat("listener.0.0.0.0_0.downstream_cx_total"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_share_the_port() {
    let up = HttpUpstream::start("a").await;
    let cfg = render(
        r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: a}}]}]}
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#,
        &[("a", up.addr.port().to_string())],
    );
    let p = tokio::task::spawn_blocking(move || {
        Proxy::start_with(&cfg, &["--concurrency", "4", "--drain-time-s", "2"])
    })
    .await
    .unwrap();
    let addr = p.addr("l");
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(Conn::h1(addr).await);
    }
    for c in &mut conns {
        assert_eq!(c.get("h", "/", &[]).await.status, 200);
    }
    assert_eq!(p.stat("http.l.downstream_rq_2xx"), 32);
    assert_eq!(p.stat("server.concurrency"), 4);
}

/// `per_connection_buffer_limit_bytes` is the HTTP/2 flow-control window a downstream
/// stream gets: read from the server's SETTINGS frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_limit_sets_the_http2_window() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = format!(
        r#"
static_resources:
  listeners:
  - name: l
    per_connection_buffer_limit_bytes: 131072
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:{}
"#,
        hcm("l", "ok")
    );
    let p = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(p.addr("l")).await.unwrap();
    // Client preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    let window = payload
        .chunks(6)
        .find(|c| u16::from_be_bytes([c[0], c[1]]) == 0x4)
        .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]));
    assert_eq!(window, Some(131_072));
}

/// `codec_type` HTTP1 and HTTP2 accept only their protocol; AUTO takes both (covered by
/// the other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_codecs() {
    let codec = |name: &str, codec: &str| {
        hcm(name, name).replace(
            "stat_prefix: ",
            &format!("codec_type: {codec}\n          stat_prefix: "),
        )
    };
    let cfg = format!(
        r#"
static_resources:
  listeners:
  - name: h1
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:{h1}
  - name: h2
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:{h2}
"#,
        h1 = codec("h1", "HTTP1"),
        h2 = codec("h2", "HTTP2"),
    );
    let p = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();
    assert_eq!(
        Conn::h1(p.addr("h1")).await.get("h", "/", &[]).await.text(),
        "h1"
    );
    assert_eq!(
        Conn::h2(p.addr("h2")).await.get("h", "/", &[]).await.text(),
        "h2"
    );
    // HTTP/1.1 to the HTTP/2-only listener gets no HTTP/1.1 answer (an h2 GOAWAY);
    // the h2 preface to the HTTP/1-only listener gets a 400 or a closed connection.
    let out = client::raw(
        p.addr("h2"),
        b"GET / HTTP/1.1\r\nhost: h\r\n\r\n",
        std::time::Duration::from_millis(300),
    )
    .await;
    assert!(
        !out.starts_with(b"HTTP/1.1"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let out = client::raw(
        p.addr("h1"),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        std::time::Duration::from_millis(300),
    )
    .await;
    assert!(
        matches!(client::raw_status(&out), None | Some(400)),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(!out.windows(6).any(|w| w == b"200 OK"));
}
