//! Upgraded connections (WebSocket): after both sides switch protocols, bytes are copied
//! in both directions until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::upstream::pool::Upgraded;

/// Joins the downstream connection, once hyper hands it over, to the upstream one
/// (which never returns to the pool). Bytes the upstream sent right after its `101`
/// go to the downstream first.
pub fn tunnel(downstream: OnUpgrade, upstream: Upgraded) {
    tokio::spawn(async move {
        // `_held` keeps the connection counted (and its breaker slot) while it lasts.
        let Upgraded {
            io: mut up,
            buffered,
            held: _held,
        } = upstream;
        let down = match downstream.await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "downstream upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        if !buffered.is_empty() {
            if let Err(e) = down.write_all(&buffered).await {
                tracing::debug!(error = %e, "upgraded connection ended");
                return;
            }
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}
