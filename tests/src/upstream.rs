//! Scripted upstream servers: an HTTP server (HTTP/1.1 and h2c) whose behaviour is chosen
//! by the request path, a WebSocket echo server and a TCP echo server.
//!
//! HTTP paths: `/status/N`, `/delay/MS`, `/bytes/N` (streamed, no content-length),
//! `/echo-body` (streams the request body back), `/trailers`, `/reset` (closes without a
//! response), `/reset-mid-body`, `/slow-body/MS` (`first` at once, `second` MS later),
//! `/never`, `/flaky/KEY/N/HOW` (the first N requests for
//! KEY answer status HOW, or are reset when HOW is `reset`, or hang when it is `hang`;
//! later ones answer 200 `ok after K` with the request body's length in
//! `x-body-len` and the `x-envoy-attempt-count` / `x-envoy-expected-rq-timeout-ms` seen
//! in `x-seen-attempt-count` / `x-seen-expected-timeout`);
//! `/health` answers the status set with [`HttpUpstream::set_health`] (200 at first),
//! after the delay set with [`HttpUpstream::set_health_delay`] (none at first),
//! and keeps the request's headers; `/hc-fail` answers 200 with
//! `x-envoy-immediate-health-check-fail: true`;
//! anything else answers 200 with a JSON description of the request (method, path,
//! version, headers, body length).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// What scripted answers share across connections: requests seen per `/flaky` key, and
/// the `/health` answer with the requests it saw.
#[derive(Default)]
struct Script {
    flaky: Mutex<HashMap<String, usize>>,
    /// The `/health` status (0: 200).
    health: AtomicU16,
    /// How long `/health` takes to answer, in milliseconds.
    health_delay_ms: AtomicU64,
    health_seen: Mutex<Vec<HeaderMap>>,
}

type Flaky = Arc<Script>;

#[derive(Debug, thiserror::Error)]
#[error("scripted reset")]
struct ScriptedReset;

/// A running HTTP upstream.
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// The client address of every connection accepted so far.
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    flaky: Flaky,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpUpstream {
    /// Starts on `127.0.0.1:0` on the current runtime.
    pub async fn start(name: &str) -> HttpUpstream {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name).await
    }

    pub async fn start_on(bind: SocketAddr, name: &str) -> HttpUpstream {
        let listener = TcpListener::bind(bind).await.expect("bind upstream");
        Self::serve(listener, name, Vec::new(), None)
    }

    /// An upstream whose accept queue is full until the returned sender fires (or is
    /// dropped): the kernel drops the SYNs of connections to it, so they stay in
    /// `SYN_SENT`, and complete at their next SYN retransmission (about 1 s after the
    /// first) once the queue was emptied. The connections that filled the queue are not
    /// counted in `connections`.
    pub async fn start_held(name: &str) -> (HttpUpstream, tokio::sync::oneshot::Sender<()>) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind held upstream");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        // Connections until one does not complete: then the queue is full.
        let mut fillers = Vec::new();
        while let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
            assert!(fillers.len() < 16, "the accept queue never filled");
        }
        let (release, held) = tokio::sync::oneshot::channel();
        let up = Self::serve(listener, name, fillers, Some(held));
        (up, release)
    }

    /// Serves HTTP on `listener` (after `held` fires, when given); `fillers` are client
    /// connections of the test's own, closed when serving starts and not counted.
    fn serve(
        listener: TcpListener,
        name: &str,
        fillers: Vec<tokio::net::TcpStream>,
        held: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> HttpUpstream {
        let addr = listener.local_addr().expect("local addr");
        let skip: Vec<SocketAddr> = fillers.iter().filter_map(|s| s.local_addr().ok()).collect();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let flaky = Flaky::default();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (c, r, n, f, p) = (
            connections.clone(),
            requests.clone(),
            name.to_string(),
            flaky.clone(),
            peers.clone(),
        );
        let task = tokio::spawn(async move {
            if let Some(held) = held {
                let _ = held.await;
            }
            drop(fillers);
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                if skip.contains(&peer) {
                    continue;
                }
                c.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut p) = p.lock() {
                    p.push(peer);
                }
                let (r, n, f) = (r.clone(), n.clone(), f.clone());
                tokio::spawn(serve_io(TokioIo::new(stream), r, n, f));
            }
        });
        HttpUpstream {
            addr,
            name: name.to_string(),
            connections,
            requests,
            peers,
            flaky,
            task,
        }
    }

    /// How many requests arrived for `/flaky/KEY/...`.
    pub fn flaky_count(&self, key: &str) -> usize {
        self.flaky
            .flaky
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Sets the status `/health` answers (health checks).
    pub fn set_health(&self, status: u16) {
        self.flaky.health.store(status, Ordering::SeqCst);
    }

    /// Makes `/health` answer after `ms` milliseconds.
    pub fn set_health_delay(&self, ms: u64) {
        self.flaky.health_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The headers of every `/health` request so far.
    pub fn health_requests(&self) -> Vec<HeaderMap> {
        self.flaky
            .health_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Starts on a Unix socket path.
    pub async fn start_unix(
        path: &std::path::Path,
        name: &str,
    ) -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("bind unix upstream");
        let requests = Arc::new(AtomicUsize::new(0));
        let (r, n) = (requests.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_io(
                    TokioIo::new(stream),
                    r.clone(),
                    n.clone(),
                    Flaky::default(),
                ));
            }
        });
        (task, requests)
    }
}

async fn serve_io<I>(io: TokioIo<I>, requests: Arc<AtomicUsize>, name: String, flaky: Flaky)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        requests.fetch_add(1, Ordering::SeqCst);
        respond(req, name.clone(), flaky.clone())
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn headers_json(h: &HeaderMap) -> serde_json::Value {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in h {
        m.entry(k.to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    serde_json::json!(m)
}

async fn respond(
    req: Request<Incoming>,
    name: String,
    flaky: Flaky,
) -> Result<Response<Body>, ScriptedReset> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (verb, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut resp = match verb {
        "status" => {
            let code = arg
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            let mut r = Response::new(full(format!("status {code}")));
            *r.status_mut() = code;
            r
        }
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            Response::new(full("delayed"))
        }
        "bytes" => {
            let n: usize = arg.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            let stream = futures_util::stream::iter((0..n.div_ceil(chunk.len())).map(move |i| {
                let len = (n - i * chunk.len()).min(chunk.len());
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..len)))
            }));
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "echo-body" => {
            let body = req.into_body().map_err(std::io::Error::other).boxed();
            Response::new(body)
        }
        "trailers" => {
            let mut t = HeaderMap::new();
            t.insert("x-trailer", "yes".parse().expect("value"));
            let frames = vec![
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"body"))),
                Ok(Frame::trailers(t)),
            ];
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))));
            // HTTP/1.1 sends trailers only when the response declares them.
            r.headers_mut()
                .insert("trailer", "x-trailer".parse().expect("value"));
            r
        }
        "reset" => return Err(ScriptedReset),
        "health" => {
            if let Ok(mut seen) = flaky.health_seen.lock() {
                seen.push(req.headers().clone());
            }
            let delay = flaky.health_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let code = match flaky.health.load(Ordering::SeqCst) {
                0 => StatusCode::OK,
                c => StatusCode::from_u16(c).unwrap_or(StatusCode::OK),
            };
            let mut r = Response::new(full(format!("health {code}")));
            *r.status_mut() = code;
            r
        }
        "flaky" => flaky_response(req, arg, &flaky).await?,
        "hc-fail" => {
            let mut r = Response::new(full("failing"));
            r.headers_mut().insert(
                "x-envoy-immediate-health-check-fail",
                http::HeaderValue::from_static("true"),
            );
            r
        }
        "reset-mid-body" => {
            // Headers and a first chunk go out; the failure comes a little later.
            let frames = futures_util::stream::unfold(0, |step| async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"partial"))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::other("scripted reset")), 2))
                    }
                    _ => None,
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            r.headers_mut()
                .insert("content-length", "1000".parse().expect("value"));
            r
        }
        "slow-body" => {
            let wait = Duration::from_millis(arg.parse().unwrap_or(0));
            let frames = futures_util::stream::unfold(0, move |step| async move {
                let chunk = match step {
                    0 => "first",
                    1 => {
                        tokio::time::sleep(wait).await;
                        "second"
                    }
                    _ => return None,
                };
                Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk))),
                    step + 1,
                ))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            r.headers_mut()
                .insert("content-length", "11".parse().expect("value"));
            r
        }
        "never" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let version = format!("{:?}", req.version());
            let headers = headers_json(req.headers());
            let body = req
                .into_body()
                .collect()
                .await
                // A body that fails to arrive whole is not answered (the stream is reset).
                .map_err(|_| ScriptedReset)?
                .to_bytes();
            let desc = serde_json::json!({
                "upstream": name, "method": method, "uri": uri, "version": version,
                "headers": headers, "body_len": body.len(),
            });
            let mut r = Response::new(full(desc.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("value"));
            r
        }
    };
    resp.headers_mut().insert(
        "x-upstream",
        name.parse().unwrap_or(http::HeaderValue::from_static("?")),
    );
    Ok(resp)
}

/// `/flaky/KEY/N/HOW` (see the module's documentation).
async fn flaky_response(
    req: Request<Incoming>,
    arg: &str,
    flaky: &Flaky,
) -> Result<Response<Body>, ScriptedReset> {
    let mut words = arg.splitn(3, '/');
    let (key, n, how) = (
        words.next().unwrap_or("").to_owned(),
        words
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0),
        words.next().unwrap_or("503").to_owned(),
    );
    let seen = {
        let mut m = flaky.flaky.lock().map_err(|_| ScriptedReset)?;
        let c = m.entry(key).or_insert(0);
        *c += 1;
        *c
    };
    let attempt = req.headers().get("x-envoy-attempt-count").cloned();
    let expected = req.headers().get("x-envoy-expected-rq-timeout-ms").cloned();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| ScriptedReset)?
        .to_bytes();
    if seen <= n {
        match how.as_str() {
            "reset" => return Err(ScriptedReset),
            "hang" => std::future::pending::<()>().await,
            code => {
                let mut r = Response::new(full(format!("failing {seen}")));
                *r.status_mut() = code
                    .parse()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(r);
            }
        }
    }
    let mut r = Response::new(full(format!("ok after {seen}")));
    r.headers_mut()
        .insert("x-body-len", http::HeaderValue::from(body.len()));
    if let Some(a) = attempt {
        r.headers_mut().insert("x-seen-attempt-count", a);
    }
    if let Some(e) = expected {
        r.headers_mut().insert("x-seen-expected-timeout", e);
    }
    Ok(r)
}

/// A WebSocket echo server (tokio-tungstenite).
pub async fn websocket_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A TCP echo server; returns its address and the number of connections accepted.
pub async fn tcp_echo() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tcp echo");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, count, task)
}

/// An address on which nothing listens (bound then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}
