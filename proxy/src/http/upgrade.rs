//! Upgraded connections (WebSocket): after both sides switch protocols, bytes are copied
//! in both directions until either side closes, or the stream's duration limit
//! (`max_stream_duration`) closes both, as Envoy resets the stream.

use http::Request;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::body::{ProxyBody, RequestBody};
use super::h1::OnUpgrade;
use super::timeouts::StreamEnd;
use crate::upstream::pool::Upgraded;

/// The downstream side of an upgrade, until its server hands the connection over (once
/// the `101` has been written).
pub enum Pending {
    /// From Remora's HTTP/1.1 server.
    H1(Option<OnUpgrade>),
    /// From hyper's server.
    Hyper(hyper::upgrade::OnUpgrade),
}

impl Pending {
    /// Takes the pending upgrade out of a request.
    pub fn take(req: &mut Request<ProxyBody>) -> Pending {
        match req.body() {
            ProxyBody::Downstream(RequestBody::H2(_)) => Pending::Hyper(hyper::upgrade::on(req)),
            _ => Pending::H1(req.extensions_mut().remove::<OnUpgrade>()),
        }
    }
}

/// Joins the downstream connection, once its server hands it over, to the upstream one
/// (which never returns to the pool). Bytes the upstream sent right after its `101`
/// go to the downstream first. `limit`: the stream's duration limit, which ends it.
pub fn tunnel(downstream: Pending, upstream: Upgraded, limit: Option<StreamEnd>) {
    tokio::spawn(async move {
        let run = run(downstream, upstream);
        match limit {
            None => run.await,
            Some(mut end) => {
                tokio::select! {
                    () = run => {}
                    () = std::future::poll_fn(|cx| end.poll_reached(cx)) => {
                        tracing::debug!("upgraded connection reached its duration limit");
                    }
                }
            }
        }
    });
}

/// Waits for the downstream connection, then joins it to the upstream one.
async fn run(downstream: Pending, upstream: Upgraded) {
    match downstream {
        Pending::H1(on) => match on.as_ref().and_then(OnUpgrade::take) {
            Some(rx) => match rx.await {
                Ok(down) => join(down, upstream).await,
                Err(_) => tracing::debug!("downstream upgrade failed"),
            },
            None => tracing::debug!("downstream cannot be upgraded"),
        },
        Pending::Hyper(on) => match on.await {
            Ok(down) => join(TokioIo::new(down), upstream).await,
            Err(e) => tracing::debug!(error = %e, "downstream upgrade failed"),
        },
    }
}

async fn join<D>(mut down: D, upstream: Upgraded)
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // `_held` keeps the connection counted (and its breaker slot) while it lasts.
    let Upgraded {
        io: mut up,
        buffered,
        held: _held,
    } = upstream;
    if !buffered.is_empty() {
        if let Err(e) = down.write_all(&buffered).await {
            tracing::debug!(error = %e, "upgraded connection ended");
            return;
        }
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}
