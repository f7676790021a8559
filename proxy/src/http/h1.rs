//! Remora's HTTP/1.1 server: one loop per connection reads a request head, hands the
//! request to the connection manager, writes its response, and goes on with the next
//! head (pipelined requests wait their turn in the read buffer).
//!
//! The request body is read from the connection by whoever polls it (the upstream
//! client, usually), not pumped through a channel: the connection's state (`conn`) is
//! shared, behind a lock that is never contended, between the loop and the body.
//!
//! - `request`: the request head and its body's framing, strictly (400 and 431 otherwise).
//! - `response`: the response head and its body's framing; `date` is added.
//! - `conn`: the shared state, the request body reader and the upgraded connection.
//! - `closing`: when a connection waiting for its next head closes (drain, idle, grace).
//! - `scratch`: per-thread buffers for parsing heads and writing responses.
//!
//! As in Envoy: `expect: 100-continue` is answered at once and removed; a request body
//! left unread when its response ends closes the connection (unless all of it is
//! already buffered); a listener drain asks for `connection: close` on the next
//! response and closes idle connections.

mod closing;
mod conn;
mod request;
mod response;
mod scratch;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, StatusCode};
use tokio::sync::oneshot;

use super::body::BoxedResponse;
use super::body::RequestBody as Body;
use super::local_reply::LocalReply;
use super::{handler, Downstream, HttpContext};
use crate::h1::writer::Writer;
use crate::io::ActivityClock;
use crate::upstream::connect::Io;
use crate::upstream::pool::ProxyBody;
use crate::wake_gate::WakeGate;
use conn::{lock, Conn, Locked};
pub use conn::{BodyReadError, RequestBody, Upgraded};
pub use request::read_requests_for_fuzzing;
use request::{Head, Limits, Refused};

/// Where the connection is handed over after `101 Switching Protocols` (in the
/// request's extensions, for the connection manager to take; extensions must be
/// `Clone`, so the receiver is shared, and taken once).
#[derive(Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    fn new(rx: oneshot::Receiver<Upgraded>) -> OnUpgrade {
        OnUpgrade(Arc::new(std::sync::Mutex::new(Some(rx))))
    }

    /// The receiver, the first time.
    pub fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// How the connection is served.
pub struct Options {
    /// Accepted during a drain: one request, answered with `connection: close`, and
    /// closed after `grace` if none comes.
    pub late: bool,
    pub grace: Duration,
    pub clock: ActivityClock,
}

/// Serves HTTP/1.1 on `io` (after `first`, bytes already read from it) until the
/// client closes, the connection must close, or it is upgraded.
pub async fn serve<I: Io>(
    io: I,
    first: BytesMut,
    ctx: Arc<HttpContext>,
    down: Arc<Downstream>,
    opts: Options,
) {
    let conn: Conn = conn::new(io);
    lock(&conn).rbuf = first;
    let cfg = &ctx.config;
    let mut server = Server {
        conn,
        ctx: ctx.clone(),
        down,
        limits: Limits {
            bytes: super::server::header_bytes(cfg),
            count: cfg.max_headers_count,
        },
    };
    // Drain, idle and grace: one future for the connection's life, polled only when its
    // timer or the drain signal fired, not on every wake-up of the connection.
    let closing = closing::closing(
        server.down.drain.clone(),
        opts.clock,
        closing::Timing {
            idle: cfg.idle_timeout,
            drain_timeout: cfg.drain_timeout,
            grace: opts.late.then_some(opts.grace),
        },
    );
    tokio::pin!(closing);
    let gate = WakeGate::default();
    loop {
        if !opts.late && server.down.drain.is_closing() {
            break;
        }
        let next = server.next_head(cfg.request_headers_timeout);
        let head = tokio::select! {
            biased;
            next = next => match next {
                Ok(h) => h,
                Err(NoHead::Refused(r)) => {
                    Box::pin(server.refuse(r)).await;
                    break;
                }
                Err(NoHead::Closed) => break,
            },
            why = gate.gate(closing.as_mut()) => {
                if why == closing::Closing::Idle {
                    ctx.stats.downstream_cx_idle_timeout.inc();
                }
                break;
            }
        };
        // Boxed per request: an idle connection's task keeps no room for an exchange.
        let exchange = super::server::boxed_in_place(|| server.exchange(head, opts.late));
        match exchange.await {
            After::KeepAlive => {}
            After::Close => break,
            After::Upgraded => return,
        }
    }
    let conn = server.conn;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut Locked(&conn)).await;
}

/// Why waiting for a request head gave none.
enum NoHead {
    Refused(Refused),
    /// The client closed (or the connection failed, or the head took too long).
    Closed,
}

/// What follows a response.
enum After {
    KeepAlive,
    Close,
    /// The connection went to the tunnel.
    Upgraded,
}

struct Server {
    conn: Conn,
    ctx: Arc<HttpContext>,
    down: Arc<Downstream>,
    /// The connection manager's header limits.
    limits: Limits,
}

impl Server {
    /// The next request head: parsed from what is buffered, reading more as needed. With
    /// `timeout`, the head must be complete that long after its first byte.
    async fn next_head(&mut self, timeout: Option<Duration>) -> Result<Head, NoHead> {
        let limits = self.limits;
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let conn = &self.conn;
        poll_fn(|cx| {
            let mut s = lock(conn);
            let s = &mut *s;
            loop {
                match scratch::with_spans(|spans| request::parse(&mut s.rbuf, limits, spans)) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(r) => return Poll::Ready(Err(NoHead::Refused(r))),
                }
                if let (Some(t), true, None) = (timeout, !s.rbuf.is_empty(), &timer) {
                    timer = Some(Box::pin(tokio::time::sleep(t)));
                }
                if let Some(t) = timer.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(NoHead::Closed));
                    }
                }
                match s.poll_read(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(NoHead::Closed))
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => {
                        // An idle connection holds no read buffer (8 KiB or more):
                        // it goes back to the thread, and the next request's first
                        // read takes one.
                        if s.rbuf.is_empty() {
                            scratch::put_read(std::mem::take(&mut s.rbuf));
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }

    /// One request and its response.
    async fn exchange(&mut self, head: Head, late: bool) -> After {
        let Head {
            mut req,
            body,
            close,
            expect_continue,
            upgrade,
            te,
        } = head;
        if expect_continue {
            req.headers_mut().remove(http::header::EXPECT);
            if self.write_all(response::CONTINUE).await.is_err() {
                return After::Close;
            }
        }
        let has_body = !body.is_done();
        lock(&self.conn).body = body;
        let upgraded = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut().insert(OnUpgrade::new(rx));
            tx
        });
        let method_head = req.method() == Method::HEAD;
        let connect = req.method() == Method::CONNECT;
        let version = req.version();
        let te_trailers = te && super::headers::te_trailers(req.headers());
        let body = if has_body {
            Body::H1(RequestBody::new(self.conn.clone()))
        } else {
            Body::Empty
        };
        *req.body_mut() = ProxyBody::Downstream(body);
        let resp = super::server::boxed_in_place(|| {
            handler::handle(req, self.ctx.clone(), self.down.clone())
        })
        .await;
        let status = resp.status();
        let switching = upgraded.is_some()
            && (status == StatusCode::SWITCHING_PROTOCOLS || connect && status.is_success());
        let asked = response::Asked {
            method_head: method_head || (connect && status.is_success()),
            version,
            keep_alive: !close && !late && !self.down.drain.is_closing() && self.request_over(),
        };
        let written = self.respond(resp, asked, te_trailers).await;
        match (written, upgraded) {
            (Ok(_), Some(tx)) if switching => {
                let _ = tx.send(Upgraded::new(self.conn.clone()));
                After::Upgraded
            }
            (Ok(true), _) => After::KeepAlive,
            _ => After::Close,
        }
    }

    /// Whether the request has all been read, so that another can follow its response.
    /// A body nobody is reading any more (the handler answered without it) is skipped as
    /// far as it is buffered; one still being read, or not all here, is not over (the
    /// response says `connection: close`, as Envoy's does).
    fn request_over(&self) -> bool {
        let unread = Arc::strong_count(&self.conn) == 1;
        let mut s = lock(&self.conn);
        let s = &mut *s;
        while unread && !s.broken && !s.body.is_done() {
            match s.body.decode(&mut s.rbuf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => s.broken = true,
            }
        }
        s.body.is_done() && !s.broken
    }

    /// Writes a response; `Ok(keep_alive)` once all of it is written.
    async fn respond(
        &mut self,
        resp: BoxedResponse,
        asked: response::Asked,
        te_trailers: bool,
    ) -> Result<bool, crate::h1::WriteError> {
        let (parts, mut body) = (*resp).into_parts();
        let mut wbuf = scratch::take_write();
        let encoded = response::head(&parts, &body, asked, &mut wbuf);
        // The head is encoded: its map goes back to the thread.
        crate::h1::maps::put(parts.headers);
        let mut writer = Writer::new(encoded.framing);
        if !te_trailers {
            writer = writer.without_trailers();
        }
        let mut io = Locked(&self.conn);
        let written = poll_fn(|cx| writer.poll_write(&mut io, &mut wbuf, &mut body, cx)).await;
        scratch::put_write(wbuf);
        written.map(|()| encoded.keep_alive)
    }

    /// Answers a head that was refused, and the connection closes.
    async fn refuse(&mut self, refused: Refused) {
        let reply = match refused {
            Refused::Malformed(why) => {
                tracing::debug!(reason = why, "malformed request head");
                LocalReply::MalformedRequest
            }
            Refused::TooLarge => LocalReply::HeadersTooLarge,
            Refused::Coding => LocalReply::UnsupportedCoding,
        };
        let mut resp = Box::new(reply.into_response(false));
        handler::finish(&mut resp, &self.ctx, false);
        let asked = response::Asked {
            method_head: false,
            version: http::Version::HTTP_11,
            keep_alive: false,
        };
        let _ = self.respond(resp, asked, false).await;
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut written = 0;
        let conn = &self.conn;
        poll_fn(|cx| lock(conn).poll_write_all(cx, bytes, &mut written)).await
    }
}

#[cfg(test)]
mod tests;
