//! Serving one downstream connection with hyper: codec selection (HTTP/1.1, HTTP/2, or
//! automatic with h2c prior-knowledge detection), header limits, idle timeout and drain.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use super::{handler, Downstream, HttpContext};
use crate::config::hcm::Codec;
use crate::drain::DrainWatch;
use crate::io::Activity;
use crate::stats::GaugeGuard;
use crate::upstream::connect::Io;

pub async fn serve<I: Io>(
    io: I,
    ctx: Arc<HttpContext>,
    down: Arc<Downstream>,
    mut drain: DrainWatch,
) {
    let cfg = ctx.config.clone();
    let stats = ctx.stats.clone();
    stats.downstream_cx_total.inc();
    let _active = GaugeGuard::new(&stats.downstream_cx_active);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match cfg.codec {
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
        Codec::Auto => builder,
    };
    let header_bytes = (cfg.max_request_headers_kb as usize) * 1024;
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(header_bytes.max(8192))
        .max_headers(cfg.max_headers_count)
        .header_read_timeout(cfg.request_headers_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(header_bytes as u32)
        .initial_stream_window_size(ctx.buffer_limit.max(65_535))
        .initial_connection_window_size(ctx.buffer_limit.max(65_535));

    let io = Activity::new(io);
    let activity = io.clock();

    let svc = service_fn(move |req| handler::handle(req, ctx.clone(), down.clone()));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);

    let idle = activity.idle(cfg.idle_timeout);
    tokio::pin!(idle);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with error");
                }
                return;
            }
            _ = drain.signaled(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut idle, if !shutting_down => {
                stats.downstream_cx_idle_timeout.inc();
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
