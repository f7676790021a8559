//! gRPC (all four call kinds, large messages, status codes), WebSocket upgrade and raw
//! TCP proxying, each against a real peer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tests::grpc::{self, pb::Msg};
use tests::proxy::Proxy;
use tests::render;
use tests::upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          codec_type: AUTO
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {match: {prefix: /remora.test.Echo/, grpc: {}}, route: {cluster: grpc, timeout: 0s}}
              - {match: {prefix: /ws}, route: {cluster: ws}}
              - {match: {prefix: /no-ws}, route: {cluster: ws, upgrade_configs: [{upgrade_type: websocket, enabled: false}]}}
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
          stat_prefix: echo
          cluster: echo
  - name: tcp-retry
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: retry
          max_connect_attempts: 2
          weighted_clusters: {clusters: [{name: flaky, weight: 1}]}
  - name: tcp-idle
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: idle
          cluster: echo
          idle_timeout: 0.3s
  clusters:
  - name: grpc
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: grpc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{grpc}}}}}}]}]}
  - name: ws
    load_assignment: {cluster_name: ws, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{ws}}}}}}]}]}
  - name: echo
    load_assignment: {cluster_name: echo, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{echo}}}}}}]}]}
  - name: flaky
    load_assignment:
      cluster_name: flaky
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{closed}}}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{echo}}}}}
"#;

struct Env {
    proxy: Proxy,
    echo_conns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn env() -> Env {
    let (g, gt) = grpc::serve().await;
    let (ws, wt) = upstream::websocket_echo().await;
    let (echo, echo_conns, et) = upstream::tcp_echo().await;
    let cfg = render(
        CONFIG,
        &[
            ("grpc", g.port().to_string()),
            ("ws", ws.port().to_string()),
            ("echo", echo.port().to_string()),
            ("closed", upstream::closed_port().port().to_string()),
        ],
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .unwrap();
    Env {
        proxy,
        echo_conns,
        _tasks: vec![gt, wt, et],
    }
}

fn msg(payload: Vec<u8>) -> Msg {
    Msg {
        payload,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_all_call_kinds_through_the_proxy() {
    let e = env().await;
    let mut c = grpc::client(e.proxy.addr("http")).await;

    let r = c.unary(msg(b"hi".to_vec())).await.unwrap();
    assert_eq!(r.into_inner().payload, b"hi");

    let big = vec![42u8; 6 << 20];
    let r = c.unary(msg(big.clone())).await.unwrap();
    assert_eq!(
        r.into_inner().payload.len(),
        big.len(),
        "several-MB message"
    );

    let up = futures_util::stream::iter((0..50u8).map(|i| msg(vec![i; 1000])));
    let r = c.client_stream(up).await.unwrap().into_inner();
    assert_eq!(r.payload.len(), 50_000);

    let mut s = c
        .server_stream(msg((0..100u8).collect()))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.extend(m.payload);
    }
    assert_eq!(got, (0..100u8).collect::<Vec<_>>());

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..10u8 {
        tx.send(msg(vec![i])).await.unwrap();
        let m = replies.message().await.unwrap().unwrap();
        assert_eq!(m.payload, vec![i], "bidi echoes in lock step");
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());

    // Errors travel in trailers: grpc-status and grpc-message arrive intact.
    let err = c
        .unary(Msg {
            fail_code: 5,
            fail_message: "no such thing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no such thing");
    assert!(e.proxy.stat("cluster.grpc.upstream_rq_total") >= 6);
    assert_eq!(
        e.proxy.stat("cluster.grpc.upstream_cx_total"),
        1,
        "HTTP/2 upstream multiplexes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_round_trip() {
    let e = env().await;
    let url = format!("ws://{}/ws", e.proxy.addr("http"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    let bin = vec![9u8; 200_000];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bin.clone()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().len(),
        bin.len()
    );
    ws.close(None).await.unwrap();

    // A route that disables websocket answers 403.
    let url = format!("ws://{}/no-ws", e.proxy.addr("http"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_echo_and_connect_attempts() {
    let e = env().await;
    let mut s = tokio::net::TcpStream::connect(e.proxy.addr("tcp"))
        .await
        .unwrap();
    let data = vec![5u8; 3 << 20];
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = r.read_to_end(&mut got);
    let (_, n) = tokio::join!(send, recv);
    n.unwrap();
    assert_eq!(got, data);
    drop(s);

    // max_connect_attempts 2 over a cluster whose first host refuses: the second works,
    // whichever host round robin starts with.
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(e.proxy.addr("tcp-retry"))
            .await
            .unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
    assert!(e.proxy.stat("cluster.flaky.upstream_cx_connect_fail") >= 1);
    assert!(e.echo_conns.load(Ordering::SeqCst) >= 5);
    assert_eq!(e.proxy.stat("tcp.echo.downstream_cx_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_idle_timeout_closes() {
    let e = env().await;
    let mut s = tokio::net::TcpStream::connect(e.proxy.addr("tcp-idle"))
        .await
        .unwrap();
    s.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).await.unwrap();
    // Quiet for longer than the 0.3 s idle timeout: the proxy closes the connection.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed by the proxy")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(e.proxy.stat("tcp.idle.idle_timeout"), 1);
}
