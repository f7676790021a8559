//! The upstreams every target forwards to, on one single-threaded runtime pinned to the
//! load core: an HTTP server (HTTP/1.1 and HTTP/2 prior knowledge) answering every request
//! with a fixed body, gRPC unary calls with a fixed message, a TCP sink for bulk
//! transfer and a TCP echo server. On 127.0.0.1, or inside a network namespace.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gen::client::grpc_frame;

#[derive(Clone)]
pub struct Upstreams {
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    /// Echoes what each connection sends until it closes.
    pub echo: SocketAddr,
    /// Bytes the TCP sink has received so far.
    pub tcp_received: Arc<AtomicU64>,
}

/// Where the upstreams listen.
pub struct Place {
    /// The network namespace to serve in (`None`: this process's).
    pub netns: Option<String>,
    /// The HTTP server, the TCP sink and the echo server (port 0: any free port).
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    pub echo: SocketAddr,
}

impl Place {
    /// Ephemeral ports on 127.0.0.1.
    pub fn loopback() -> Place {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Place {
            netns: None,
            http: any,
            tcp: any,
            echo: any,
        }
    }
}

/// Starts the upstreams on 127.0.0.1 (see [`start_at`]).
pub fn start(cpu: usize, body_size: usize) -> Result<Upstreams, String> {
    start_at(cpu, body_size, Place::loopback())
}

/// Starts the upstreams at `place` on a thread pinned to `cpu`; `body_size` is the HTTP
/// response body and the gRPC response message size.
pub fn start_at(cpu: usize, body_size: usize, place: Place) -> Result<Upstreams, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        crate::procstat::pin_current_thread(cpu);
        if let Some(ns) = &place.netns {
            if let Err(e) = tests::netns::join(ns) {
                let _ = tx.send(Err(e));
                return;
            }
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(format!("upstream runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let bind = |a: SocketAddr| async move {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("upstream bind {a}: {e}"))?;
                let at = l.local_addr().map_err(|e| e.to_string())?;
                Ok::<_, String>((l, at))
            };
            let bound = async {
                Ok::<_, String>((
                    bind(place.http).await?,
                    bind(place.tcp).await?,
                    bind(place.echo).await?,
                ))
            };
            let ((http, http_at), (tcp, tcp_at), (echo, echo_at)) = match bound.await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let received = Arc::new(AtomicU64::new(0));
            let _ = tx.send(Ok(Upstreams {
                http: http_at,
                tcp: tcp_at,
                echo: echo_at,
                tcp_received: received.clone(),
            }));
            tokio::spawn(sink(tcp, received));
            tokio::spawn(echo_server(echo));
            serve_http(http, body_size).await;
        });
    });
    rx.recv()
        .map_err(|_| "the upstream thread exited".to_string())?
}

async fn serve_http(l: tokio::net::TcpListener, body_size: usize) {
    let body = Bytes::from(vec![b'x'; body_size]);
    let grpc = grpc_frame(&vec![b'r'; body_size]);
    loop {
        let s = match l.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors, say: wait instead of spinning on the error.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        let (body, grpc) = (body.clone(), grpc.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (body, grpc) = (body.clone(), grpc.clone());
                async move {
                    let is_grpc = req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    if !is_grpc {
                        return Ok::<_, Infallible>(hyper::Response::new(Either::Left(Full::new(
                            body,
                        ))));
                    }
                    // Read the whole request message, then answer with one message and
                    // `grpc-status: 0` in the trailers.
                    let _ = req.into_body().collect().await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let body = Full::new(grpc).with_trailers(async move { Some(Ok(trailers)) });
                    let mut resp = hyper::Response::new(Either::Right(body));
                    resp.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

/// Reads and discards everything sent to it, counting bytes.
async fn sink(l: tokio::net::TcpListener, received: Arc<AtomicU64>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
}

/// Sends back whatever each connection sends, until the client closes.
async fn echo_server(l: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}
