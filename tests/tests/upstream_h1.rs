//! Remora's HTTP/1.1 upstream client against upstreams that misbehave: every response
//! case of Node's llhttp corpus sent back byte for byte, and keep-alive connections the
//! upstream closes while they are idle in the pool (not reused, and noticed at once, as
//! Envoy notices them).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use tests::client::{self, Conn};
use tests::proxy::Proxy;

/// An upstream that answers each request head with `reply`'s bytes and then closes the
/// connection, telling `closed` it has.
async fn raw_upstream(reply: Arc<Mutex<Vec<u8>>>) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    raw_upstream_closing_after(reply, Duration::ZERO).await
}

/// [`raw_upstream`], closing `wait` after the reply.
async fn raw_upstream_closing_after(
    reply: Arc<Mutex<Vec<u8>>>,
    wait: Duration,
) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.lock().expect("reply").clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read_u8().await {
                        Ok(b) => head.push(b),
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&reply).await;
                tokio::time::sleep(wait).await;
                drop(s);
                let _ = tx.send(());
            });
        }
    });
    (addr, rx)
}

async fn proxy_to(raw: SocketAddr) -> Proxy {
    let cfg = tests::render(
        tests::llhttp::CONFIG,
        &[("upstream", raw.port().to_string())],
    );
    tokio::task::spawn_blocking(move || Proxy::start(&cfg))
        .await
        .expect("proxy")
}

/// A GET through the proxy on a fresh connection: the upstream's response when it came
/// through whole (a local reply, or a body cut short, is `None`).
async fn relayed(addr: SocketAddr) -> Option<client::Resp> {
    let req = client::request("GET", "h", "/", &[], Bytes::new(), false);
    let send = async { Conn::h1(addr).await.send(req).await.ok() };
    let resp = tokio::time::timeout(Duration::from_secs(5), send)
        .await
        .ok()
        .flatten()?;
    // Only responses from an upstream carry the time the upstream took.
    resp.header("x-envoy-upstream-service-time")?;
    Some(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_never_looser_than_llhttp() {
    let cases = tests::llhttp::cases("response");
    assert!(
        cases.len() > 50,
        "llhttp corpus parsed: {} response cases",
        cases.len()
    );
    let reply = Arc::new(Mutex::new(Vec::new()));
    let (raw, _closed) = raw_upstream(reply.clone()).await;
    let p = proxy_to(raw).await;
    let addr = p.addr("l");
    let mut looser = Vec::new();
    let (mut agree, mut open_ended) = (0, 0);
    let mut stricter = Vec::new();
    for c in &cases {
        *reply.lock().expect("reply") = c.input.clone();
        let got = relayed(addr).await;
        match (got.is_some(), c.completed, c.rejected) {
            (true, 0, true) => looser.push(format!(
                "{}: {:?}",
                c.title,
                String::from_utf8_lossy(&c.input)
            )),
            // Neither complete nor rejected: llhttp waits for the end of the stream.
            (_, 0, false) => open_ended += 1,
            (true, _, _) | (false, 0, true) => agree += 1,
            (false, _, _) => stricter.push(c.title.as_str()),
        }
    }
    eprintln!(
        "llhttp responses: {} cases, {agree} same, {} stricter ({stricter:?}), {open_ended} open-ended, {} looser",
        cases.len(),
        stricter.len(),
        looser.len()
    );
    assert!(
        looser.is_empty(),
        "Remora relayed responses llhttp rejects:\n{}",
        looser.join("\n")
    );
    assert!(agree > cases.len() / 2, "{agree} of {} agree", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_upstream_closed_are_not_reused() {
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let (raw, mut closed) = raw_upstream(Arc::new(Mutex::new(reply))).await;
    let p = proxy_to(raw).await;
    let mut c = Conn::h1(p.addr("l")).await;
    for _ in 0..3 {
        let r = c.get("h", "/", &[]).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
        // The upstream has closed the connection the response came on, without saying
        // so in the response: the next request must not go on it.
        closed.recv().await.expect("upstream closed");
    }
    assert_eq!(p.stat("cluster.upstream.upstream_cx_total"), 3);
    assert_eq!(p.stat("cluster.upstream.upstream_rq_total"), 3);
    assert_eq!(p.stat("http.l.downstream_rq_5xx"), 0);
}

/// A keep-alive connection the upstream closes while it is idle leaves
/// `upstream_cx_active` at once, without another request to find it closed, in Envoy
/// and in Remora.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_upstream_closes_are_noticed_at_once_as_envoy() {
    use tests::process::{start_envoy_and_remora, wait_for_stat};
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    // The close comes well after the connection went back to the pool.
    let (raw, mut closed) =
        raw_upstream_closing_after(Arc::new(Mutex::new(reply)), Duration::from_millis(300)).await;
    let cfg = tests::render(
        tests::llhttp::CONFIG,
        &[("upstream", raw.port().to_string())],
    );
    let (envoy, remora) = start_envoy_and_remora(&cfg).await;
    for (name, p) in [("envoy", &envoy), ("remora", &remora)] {
        let mut c = Conn::h1(p.listener("l")).await;
        let r = c.get("h", "/", &[]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok"[..]),
            "{name}"
        );
        assert_eq!(p.stat("cluster.upstream.upstream_cx_active"), 1, "{name}");
        closed.recv().await.expect("upstream closed");
        assert!(
            wait_for_stat(p, "cluster.upstream.upstream_cx_active", 0).await,
            "{name}: the closed idle connection is still counted"
        );
        assert_eq!(p.stat("cluster.upstream.upstream_cx_total"), 1, "{name}");
    }
}
