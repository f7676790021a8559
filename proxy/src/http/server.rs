//! Serving one downstream connection: codec selection (HTTP/1.1 only, HTTP/2 only, or
//! automatic with h2c prior-knowledge detection). HTTP/1.1 is Remora's own server
//! (`http::h1`); HTTP/2 is hyper's, with header limits, idle timeout and drain.

use std::sync::Arc;

use bytes::BytesMut;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::{ProxyBody, RequestBody};
use super::{h1, handler, Downstream, HttpContext};
use crate::config::hcm::{Codec, HttpManager};
use crate::io::{Activity, ActivityClock, Prefixed};
use crate::stats::GaugeGuard;
use crate::upstream::connect::Io;
use crate::wake_gate::WakeGate;

/// Boxes the future `make` returns, built in its heap slot rather than on the stack and
/// then copied: a request's state machine is about 11 KiB, of which a fresh one uses a few
/// hundred bytes, and `Box::pin(f)` copies all of it. `make` runs in a function that is not
/// inlined, so the compiler hands it the box's memory as the place for its result.
pub(super) fn boxed_in_place<F: std::future::Future>(
    make: impl FnOnce() -> F,
) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), build(make)))
}

#[inline(never)]
fn build<F>(make: impl FnOnce() -> F) -> F {
    make()
}

/// How long a connection accepted during a drain may stay open for its one request.
const LATE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn serve<I: Io>(io: I, ctx: Arc<HttpContext>, down: Arc<Downstream>) {
    let drain = down.drain.clone();
    let cfg = ctx.config.clone();
    ctx.stats.downstream_cx_total.inc();
    let _active = GaugeGuard::new(&ctx.stats.downstream_cx_active);
    let mut io = Activity::new(io);
    let clock = io.clock();
    // A connection accepted while its listener drains gracefully is still served: HTTP/1.1
    // answers once with `connection: close` (as Envoy does); HTTP/2 gets GOAWAY at once.
    // (A gentle drain, of a listener replaced by LDS, serves such a connection as usual:
    // its responses say `connection: close`.)
    let late = drain.is_closing();
    let h1 = |clock| h1::Options {
        late,
        grace: LATE_GRACE,
        clock,
    };
    let first = match cfg.codec {
        Codec::Http1 => BytesMut::new(),
        Codec::Http2 => {
            // Boxed, here and below: an HTTP/1.1 connection's task does not carry room
            // for hyper's HTTP/2 connection state.
            return Box::pin(serve_h2(TokioIo::new(io), ctx, down, clock, false)).await;
        }
        Codec::Auto => {
            // HTTP/2 with prior knowledge starts with its preface; anything else is
            // HTTP/1.1.
            let mut first = BytesMut::new();
            let mut closing = drain.clone();
            let sniffed = tokio::select! {
                s = sniff(&mut io, &mut first) => s,
                _ = clock.idle(cfg.idle_timeout) => {
                    ctx.stats.downstream_cx_idle_timeout.inc();
                    return;
                }
                _ = closing.closing(), if !late => return,
                _ = tokio::time::sleep(LATE_GRACE), if late => return,
            };
            match sniffed {
                Ok(true) => {
                    let io = TokioIo::new(Prefixed::new(first, io));
                    return Box::pin(serve_h2(io, ctx, down, clock, late)).await;
                }
                Ok(false) => first,
                Err(_) => return,
            }
        }
    };
    h1::serve(io, first, ctx, down, h1(clock)).await;
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until `first` holds the HTTP/2 preface (`true`) or something else (`false`).
async fn sniff<I: Io>(io: &mut I, first: &mut BytesMut) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    loop {
        let n = first.len().min(PREFACE.len());
        if first[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        if io.read_buf(first).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Serves HTTP/2 with hyper, with its header limit, flow-control windows, idle timeout
/// and drain.
async fn serve_h2<I>(
    io: TokioIo<I>,
    ctx: Arc<HttpContext>,
    down: Arc<Downstream>,
    clock: ActivityClock,
    late: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let drain = down.drain.clone();
    let window = ctx.buffer_limit.max(65_535);
    let c = ctx.clone();
    // hyper keeps room for one in-flight request future per stream; boxed, it holds a
    // pointer instead of the whole request state machine (11 KiB).
    let svc = service_fn(move |req: Request<Incoming>| {
        let req = Box::new(req.map(|b| ProxyBody::Downstream(RequestBody::H2(b))));
        let (c, down) = (c.clone(), down.clone());
        boxed_in_place(|| async move {
            Ok::<_, std::convert::Infallible>(*handler::handle(req, c, down).await)
        })
    });
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(header_bytes(&ctx.config) as u32)
        .initial_stream_window_size(window)
        .initial_connection_window_size(window);
    // Drain and the idle timeout ask the connection to finish its in-flight streams and
    // close. A connection accepted during a drain (`late`) is asked to close after
    // [`LATE_GRACE`] if it is still open.
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = clock.idle(ctx.config.idle_timeout);
    tokio::pin!(idle);
    let mut drain = drain;
    let mut closing = drain.clone();
    let mut shutting_down = false;
    let mut gentle = false;
    let grace = tokio::time::sleep(LATE_GRACE);
    tokio::pin!(grace);
    let wind_down = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(wind_down);
    // The drain signal and the idle timer are polled only when they fired, not on
    // every wake-up of the connection.
    let idle_gate = WakeGate::default();
    let drain_gate = WakeGate::default();
    loop {
        // The drain futures below are made anew on each turn.
        drain_gate.open();
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with error");
                }
                break;
            }
            _ = drain_gate.gate(drain.signaled()), if !late && !shutting_down && !gentle => {
                if drain.is_closing() {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    // A gentle drain (the listener was replaced): the connection is
                    // asked to close after drain_timeout.
                    gentle = true;
                    wind_down
                        .as_mut()
                        .reset(tokio::time::Instant::now() + ctx.config.drain_timeout);
                }
            }
            _ = drain_gate.gate(closing.closing()), if gentle && !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut wind_down, if gentle && !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut grace, if late && !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_gate.gate(&mut idle), if !shutting_down => {
                ctx.stats.downstream_cx_idle_timeout.inc();
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// `max_request_headers_kb` in bytes.
pub(super) fn header_bytes(cfg: &HttpManager) -> usize {
    (cfg.max_request_headers_kb as usize) * 1024
}
