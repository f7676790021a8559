//! Upgraded connections (WebSocket): after both sides switch protocols, bytes are copied
//! in both directions until either side closes.

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use crate::upstream::pool::Lease;

pub fn tunnel(
    downstream: OnUpgrade,
    upstream: impl std::future::Future<Output = hyper::Result<Upgraded>> + Send + 'static,
    lease: Lease,
) {
    tokio::spawn(async move {
        // The upstream connection now belongs to the tunnel; it never returns to the pool.
        drop(lease);
        let (down, up) = match tokio::join!(downstream, upstream) {
            (Ok(d), Ok(u)) => (d, u),
            (d, u) => {
                tracing::debug!(
                    downstream_ok = d.is_ok(),
                    upstream_ok = u.is_ok(),
                    "upgrade failed"
                );
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}
