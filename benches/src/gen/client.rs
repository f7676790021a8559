//! The generator's connections: each `Worker` is one request slot (an HTTP/1.1 connection,
//! or one stream slot on a shared HTTP/2 connection) that sends one request at a time.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Proto {
    /// HTTP/1.1 keep-alive GET.
    Http1,
    /// HTTP/2 (prior knowledge) GET.
    Http2,
    /// gRPC unary over HTTP/2: a 1 KiB message each way.
    Grpc,
    /// One TCP connection per call: connect, send 64 bytes, read them back from an echo
    /// server, close.
    TcpEcho,
}

/// What a `TcpEcho` call sends: not HTTP, not TLS (a sniffer decides on the first byte).
const ECHO_MESSAGE: [u8; 64] = [0x5a; 64];

/// The path of the benchmark's gRPC method.
pub const GRPC_PATH: &str = "/remora.bench.Bench/Unary";

/// A gRPC length-prefixed message (uncompressed) holding `payload`.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(0);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

pub enum Worker {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
    Grpc(http2::SendRequest<Full<Bytes>>, Bytes),
    TcpEcho(SocketAddr),
}

/// Opens `connections` connections to `addr` and returns `streams` workers per connection
/// (HTTP/1.1 always has one per connection). `TcpEcho` workers connect on each call.
pub async fn connect(
    addr: SocketAddr,
    proto: Proto,
    connections: usize,
    streams: usize,
    grpc_payload: usize,
) -> io::Result<Vec<Worker>> {
    let mut workers = Vec::new();
    let message = grpc_frame(&vec![b'g'; grpc_payload]);
    if proto == Proto::TcpEcho {
        return Ok((0..connections).map(|_| Worker::TcpEcho(addr)).collect());
    }
    for _ in 0..connections {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let io = TokioIo::new(s);
        match proto {
            Proto::Http1 => {
                let (send, conn) = http1::handshake(io).await.map_err(io::Error::other)?;
                tokio::task::spawn_local(conn);
                workers.push(Worker::Http1(send));
            }
            Proto::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(io::Error::other)?;
                tokio::task::spawn_local(conn);
                workers.extend((0..streams).map(|_| Worker::Http2(send.clone())));
            }
            Proto::Grpc => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(io::Error::other)?;
                tokio::task::spawn_local(conn);
                workers.extend((0..streams).map(|_| Worker::Grpc(send.clone(), message.clone())));
            }
            Proto::TcpEcho => {}
        }
    }
    Ok(workers)
}

impl Worker {
    /// Sends one request and reads the whole response; true if it succeeded (2xx, and
    /// `grpc-status: 0` for gRPC).
    pub async fn call(&mut self) -> bool {
        match self {
            Worker::Http1(send) => {
                let req = hyper::Request::get("/bench")
                    .header("host", "bench")
                    .body(Empty::new());
                let Ok(req) = req else { return false };
                match send.send_request(req).await {
                    Ok(resp) => {
                        resp.status().is_success() && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
            Worker::Http2(send) => {
                let Ok(req) = hyper::Request::get("http://bench/bench").body(Empty::new()) else {
                    return false;
                };
                match send.send_request(req).await {
                    Ok(resp) => {
                        resp.status().is_success() && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
            Worker::Grpc(send, message) => {
                let req = hyper::Request::post(format!("http://bench{GRPC_PATH}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(message.clone()));
                let Ok(req) = req else { return false };
                let Ok(resp) = send.send_request(req).await else {
                    return false;
                };
                if !resp.status().is_success() {
                    return false;
                }
                let Ok(body) = resp.into_body().collect().await else {
                    return false;
                };
                let ok = body
                    .trailers()
                    .and_then(|t| t.get("grpc-status"))
                    .is_some_and(|v| v == "0");
                ok && body.to_bytes().len() > 5
            }
            Worker::TcpEcho(addr) => echo_once(*addr).await.is_ok(),
        }
    }
}

/// One `TcpEcho` call: the whole message must come back before the client closes.
async fn echo_once(addr: SocketAddr) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&ECHO_MESSAGE).await?;
    let mut back = [0u8; ECHO_MESSAGE.len()];
    s.read_exact(&mut back).await?;
    if back != ECHO_MESSAGE {
        return Err(io::Error::other("the echo differs"));
    }
    Ok(())
}
