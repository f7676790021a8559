//! Clients for driving the proxy: HTTP/1.1 and h2c (prior knowledge) over hyper, and raw
//! bytes over TCP for malformed requests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub type ReqBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A keep-alive HTTP/1.1 or h2c connection.
pub enum Conn {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Conn {
    pub async fn h1(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = http1::handshake(TokioIo::new(s))
            .await
            .expect("h1 handshake");
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Conn::H1(send)
    }

    pub async fn h2(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        Conn::H2(send)
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&mut self, req: Request<ReqBody>) -> Result<Resp, hyper::Error> {
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, b) = resp.into_parts();
        let collected = b.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// GET with a Host (or :authority) and extra headers.
    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let req = request(
            "GET",
            host,
            path,
            headers,
            Bytes::new(),
            matches!(self, Conn::H2(_)),
        );
        self.send(req).await.expect("response")
    }
}

/// Builds a request; for h2 the authority goes in the URI.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    b: Bytes,
    h2: bool,
) -> Request<ReqBody> {
    let uri = if h2 {
        format!("http://{host}{path}")
    } else {
        path.to_string()
    };
    let mut r = Request::builder().method(method).uri(uri);
    if !h2 {
        r = r.header("host", host);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(body(b)).expect("valid request")
}

/// One GET on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    Conn::h1(addr).await.get(host, path, &[]).await
}

/// Writes raw bytes and reads until the peer closes (or `wait` passes with no data).
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_until_close(&mut s, wait).await
}

pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of the first response in raw bytes.
pub fn raw_status(resp: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(resp.get(..12)?).ok()?;
    s.strip_prefix("HTTP/1.1 ")
        .or_else(|| s.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}
