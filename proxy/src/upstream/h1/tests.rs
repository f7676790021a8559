//! Exchanges against a scripted upstream on a real loopback socket.

use std::future::poll_fn;

use bytes::Bytes;
use http::Request;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::http::body::{empty, full, ProxyBody};
use crate::upstream::pool::BoxError;

/// A client connection and the upstream's end of it.
async fn pair() -> (Conn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let conn = Conn::new(Stream::Left(client.expect("connect")));
    (conn, accepted.expect("accept").0)
}

/// Reads a request head from `up`, up to its blank line.
async fn read_head(up: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(up.read_u8().await.expect("request head"));
    }
    String::from_utf8(head).expect("ascii")
}

/// Reads from `up` until `want` bytes have come.
async fn read_exact(up: &mut TcpStream, want: usize) -> String {
    let mut buf = vec![0; want];
    up.read_exact(&mut buf).await.expect("request bytes");
    String::from_utf8(buf).expect("ascii")
}

/// The whole body and whether it ended cleanly.
async fn body(reader: &mut BodyReader, conn: &mut Conn) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(frame) = poll_fn(|cx| reader.poll_frame(conn, cx)).await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

async fn send(conn: &mut Conn, req: Request<ProxyBody>) -> Response<BodyReader> {
    match conn.send(Box::new(req)).await {
        Ok(r) => r,
        Err(f) => panic!("exchange failed: {}", f.error),
    }
}

#[tokio::test]
async fn requests_reuse_a_kept_alive_connection() {
    let (mut conn, mut up) = pair().await;
    for i in 0..2 {
        let req = Request::get(format!("/r{i}"))
            .header("host", "h")
            .body(empty())
            .expect("request");
        let (resp, head) = tokio::join!(send(&mut conn, req), async {
            let head = read_head(&mut up).await;
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-i: {i}\r\n\r\nr{i}");
            up.write_all(reply.as_bytes()).await.expect("reply");
            head
        });
        assert_eq!(head, format!("GET /r{i} HTTP/1.1\r\nhost: h\r\n\r\n"));
        assert_eq!(resp.headers()["x-i"], i.to_string().as_str());
        let mut reader = resp.into_body();
        assert_eq!(
            body(&mut reader, &mut conn).await.expect("body"),
            format!("r{i}").as_bytes()
        );
        assert!(conn.reusable() && conn.idle_open());
    }
}

#[tokio::test]
async fn a_body_with_length_and_a_chunked_response() {
    let (mut conn, mut up) = pair().await;
    let req = Request::post("/")
        .header("content-length", "5")
        .body(full("hello"))
        .expect("request");
    let (resp, sent) = tokio::join!(send(&mut conn, req), async {
        let sent = read_head(&mut up).await + &read_exact(&mut up, 5).await;
        let reply =
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n";
        up.write_all(reply.as_bytes()).await.expect("reply");
        sent
    });
    assert_eq!(sent, "POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello");
    let mut reader = resp.into_body();
    assert_eq!(body(&mut reader, &mut conn).await.expect("body"), b"ok");
    assert!(conn.reusable());
}

#[tokio::test]
async fn the_request_body_goes_on_while_the_response_streams() {
    let (mut conn, mut up) = pair().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::post("/")
        .body(ProxyBody::boxed(StreamBody::new(stream)))
        .expect("request");
    // The upstream answers before the request body has come.
    let (resp, head) = tokio::join!(send(&mut conn, req), async {
        let head = read_head(&mut up).await;
        let reply = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        up.write_all(reply.as_bytes()).await.expect("reply");
        head
    });
    assert_eq!(
        head,
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    tx.send(Ok(Frame::data(Bytes::from_static(b"ping"))))
        .await
        .expect("body frame");
    drop(tx);
    let mut reader = resp.into_body();
    let (got, ()) = tokio::join!(body(&mut reader, &mut conn), async {
        // The request body arrives while the response is read; then the echo ends it.
        let rest = read_exact(&mut up, 14).await;
        assert_eq!(rest, "4\r\nping\r\n0\r\n\r\n");
        up.write_all(b"4\r\npong\r\n0\r\n\r\n")
            .await
            .expect("reply");
    });
    assert_eq!(got.expect("body"), b"pong");
    assert!(conn.reusable(), "both sides ended cleanly");
}

#[tokio::test]
async fn a_response_ending_before_its_request_leaves_the_connection() {
    let (mut conn, mut up) = pair().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::post("/")
        .body(ProxyBody::boxed(StreamBody::new(stream)))
        .expect("request");
    let (resp, _) = tokio::join!(send(&mut conn, req), async {
        read_head(&mut up).await;
        let reply = "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
        up.write_all(reply.as_bytes()).await.expect("reply");
    });
    assert_eq!(resp.status(), 413);
    assert!(resp.body().is_end_stream());
    assert!(!conn.reusable());
    drop(tx);
}

#[tokio::test]
async fn an_upstream_closing_is_seen() {
    // Before the response: the exchange fails, the request having been sent.
    let (mut conn, mut up) = pair().await;
    let req = Request::get("/").body(empty()).expect("request");
    let (failed, ()) = tokio::join!(conn.send(Box::new(req)), async {
        read_head(&mut up).await;
        drop(up);
    });
    let failed = failed.err().expect("no response");
    assert!(matches!(failed.error, Error::Closed), "{}", failed.error);
    assert!(failed.unsent.is_none());

    // While idle: the connection is not taken again.
    let (mut conn, mut up) = pair().await;
    let req = Request::get("/").body(empty()).expect("request");
    let (resp, ()) = tokio::join!(send(&mut conn, req), async {
        read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .expect("reply");
    });
    assert_eq!(resp.status(), 204);
    assert!(conn.idle_open());
    drop(up);
    if let Stream::Left(tcp) = &conn.io {
        tcp.readable().await.expect("readable");
    }
    assert!(!conn.idle_open());
}

#[tokio::test]
async fn a_body_to_the_close_and_a_short_one() {
    let (mut conn, mut up) = pair().await;
    let req = Request::get("/").body(empty()).expect("request");
    let (resp, ()) = tokio::join!(send(&mut conn, req), async {
        read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it")
            .await
            .expect("reply");
        drop(up);
    });
    let mut reader = resp.into_body();
    assert_eq!(
        body(&mut reader, &mut conn).await.expect("body"),
        b"all of it"
    );
    assert!(!conn.reusable());

    let (mut conn, mut up) = pair().await;
    let req = Request::get("/").body(empty()).expect("request");
    let (resp, ()) = tokio::join!(send(&mut conn, req), async {
        read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
            .await
            .expect("reply");
        drop(up);
    });
    let mut reader = resp.into_body();
    assert!(matches!(
        body(&mut reader, &mut conn).await,
        Err(Error::Closed)
    ));
    assert!(!conn.reusable());
}

#[tokio::test]
async fn an_upgrade_keeps_the_bytes_after_its_head() {
    let (mut conn, mut up) = pair().await;
    let req = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .expect("request");
    let (resp, _) = tokio::join!(send(&mut conn, req), async {
        read_head(&mut up).await;
        let reply = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\nfirst";
        up.write_all(reply.as_bytes()).await.expect("reply");
    });
    assert_eq!(resp.status(), 101);
    assert!(!conn.reusable());
    let (_io, buffered) = conn.into_upgraded();
    assert_eq!(&buffered[..], b"first");
}

#[tokio::test]
async fn a_request_body_longer_than_its_length_is_the_request_s_fault() {
    let (mut conn, _up) = pair().await;
    let req = Request::post("/")
        .header("content-length", "2")
        .body(full("three"))
        .expect("request");
    // The body is all there at once, so the mismatch is seen before anything is written.
    let failed = conn.send(Box::new(req)).await.err().expect("refused");
    assert!(
        matches!(failed.error, Error::RequestLength),
        "{}",
        failed.error
    );
    assert!(
        failed.unsent.is_none(),
        "a faulty request is not sent again"
    );
}
