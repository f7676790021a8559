//! A worker's HTTP/2 connection to one host, and the requests that wait while it opens.
//!
//! As in Envoy's pool, a worker opens one connection per host and every stream shares
//! it: requests that come while it is being opened wait for it (they are *pending*),
//! and when opening fails they all fail with it.

use std::net::SocketAddr;

use hyper::client::conn::http2;
use tokio::sync::oneshot;

use super::{ProxyBody, UpstreamError};

/// The connection's sender, the streams it has been given, and its local address.
pub(super) struct SharedH2 {
    pub sender: http2::SendRequest<ProxyBody>,
    pub uses: u32,
    pub local: Option<SocketAddr>,
}

/// What a request waiting for the opening connection is woken with. A waiter whose
/// sender is dropped instead (the opener went away, or the connection has carried its
/// `max_requests_per_connection`) starts over.
pub(super) enum H2Handoff {
    Conn(SharedH2),
    Failed(UpstreamError),
}

/// What a request that found no usable connection does next.
pub(super) enum H2Next {
    Ready(SharedH2),
    /// Open the connection (the others wait for this request to).
    Open,
    Wait(oneshot::Receiver<H2Handoff>),
}

#[derive(Default)]
pub(super) struct H2Host {
    conn: Option<SharedH2>,
    /// `Some` while a request opens the connection: those waiting for it.
    opening: Option<Vec<oneshot::Sender<H2Handoff>>>,
    /// The pool's place in the pool count, shared by its connections.
    pub pool: super::PoolCount,
}

impl H2Host {
    /// The connection, counted for one more stream; `None` when there is none, or it is
    /// closed or has carried `max_uses` streams (0: no limit); then it is forgotten.
    pub fn stream(&mut self, max_uses: u32) -> Option<SharedH2> {
        let conn = self.conn.as_mut()?;
        if conn.sender.is_closed() || (max_uses > 0 && conn.uses >= max_uses) {
            self.conn = None;
            return None;
        }
        conn.uses += 1;
        Some(SharedH2 {
            sender: conn.sender.clone(),
            uses: conn.uses,
            local: conn.local,
        })
    }

    /// The connection if usable, else a place among the requests waiting for the one
    /// being opened, else the job of opening it.
    pub fn next(&mut self, max_uses: u32) -> H2Next {
        if let Some(shared) = self.stream(max_uses) {
            return H2Next::Ready(shared);
        }
        match &mut self.opening {
            Some(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                H2Next::Wait(rx)
            }
            None => {
                self.opening = Some(Vec::new());
                H2Next::Open
            }
        }
    }

    /// The connection opened: the waiting requests get it (as many as `max_uses`
    /// allows, counting the opener's; the rest start over), and it is kept for the
    /// next ones. Returns the opener's share.
    pub fn opened(
        &mut self,
        sender: http2::SendRequest<ProxyBody>,
        local: Option<SocketAddr>,
        max_uses: u32,
    ) -> SharedH2 {
        let mut uses = 1;
        for waiter in self.opening.take().unwrap_or_default() {
            if max_uses > 0 && uses >= max_uses {
                break;
            }
            let share = SharedH2 {
                sender: sender.clone(),
                uses: uses + 1,
                local,
            };
            // A waiter that went away takes no stream.
            if waiter.send(H2Handoff::Conn(share)).is_ok() {
                uses += 1;
            }
        }
        self.conn = Some(SharedH2 {
            sender: sender.clone(),
            uses,
            local,
        });
        SharedH2 {
            sender,
            uses: 1,
            local,
        }
    }

    /// Opening failed: every waiting request fails with the same error.
    pub fn failed(&mut self, e: &UpstreamError) {
        for waiter in self.opening.take().unwrap_or_default() {
            let _ = waiter.send(H2Handoff::Failed(e.for_waiter()));
        }
    }

    /// The opener went away before the connection was open: the waiting requests
    /// start over (one of them opens it).
    pub fn abandoned(&mut self) {
        self.opening = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender on a real (in-memory) HTTP/2 connection to a server task.
    async fn sender() -> http2::SendRequest<ProxyBody> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut conn = ::h2::server::handshake(server)
                .await
                .expect("server handshake");
            while conn.accept().await.is_some() {}
        });
        let (sender, conn) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .expect("client handshake");
        tokio::spawn(conn);
        sender
    }

    #[tokio::test]
    async fn requests_wait_for_the_opening_connection_and_share_it() {
        let mut host = H2Host::default();
        assert!(matches!(host.next(0), H2Next::Open));
        let mut waiting: Vec<_> = (0..3)
            .map(|_| match host.next(0) {
                H2Next::Wait(rx) => rx,
                _ => panic!("a second request must wait"),
            })
            .collect();
        // One waiter went away: it takes no stream.
        drop(waiting.remove(1));
        let own = host.opened(sender().await, None, 0);
        assert_eq!(own.uses, 1);
        let mut uses = Vec::new();
        for rx in waiting {
            match rx.await {
                Ok(H2Handoff::Conn(s)) => uses.push(s.uses),
                _ => panic!("the waiter gets the connection"),
            }
        }
        assert_eq!(uses, [2, 3]);
        // The next request uses it at once.
        assert!(matches!(host.next(0), H2Next::Ready(s) if s.uses == 4));
    }

    #[tokio::test]
    async fn waiters_past_the_stream_limit_start_over() {
        let mut host = H2Host::default();
        assert!(matches!(host.next(2), H2Next::Open));
        let first = match host.next(2) {
            H2Next::Wait(rx) => rx,
            _ => panic!("waits"),
        };
        let second = match host.next(2) {
            H2Next::Wait(rx) => rx,
            _ => panic!("waits"),
        };
        host.opened(sender().await, None, 2);
        assert!(matches!(first.await, Ok(H2Handoff::Conn(s)) if s.uses == 2));
        assert!(second.await.is_err(), "over the limit: starts over");
        // The spent connection is forgotten; the next request opens another.
        assert!(matches!(host.next(2), H2Next::Open));
    }

    #[tokio::test]
    async fn a_failed_opening_fails_every_waiter_and_an_abandoned_one_wakes_them() {
        let mut host = H2Host::default();
        assert!(matches!(host.next(0), H2Next::Open));
        let rx = match host.next(0) {
            H2Next::Wait(rx) => rx,
            _ => panic!("waits"),
        };
        let e = UpstreamError::Connect(super::super::ConnectError::Timeout);
        host.failed(&e);
        assert!(matches!(
            rx.await,
            Ok(H2Handoff::Failed(UpstreamError::Connect(
                super::super::ConnectError::Timeout
            )))
        ));
        // Opening again; the opener goes away: the waiter starts over.
        assert!(matches!(host.next(0), H2Next::Open));
        let rx = match host.next(0) {
            H2Next::Wait(rx) => rx,
            _ => panic!("waits"),
        };
        host.abandoned();
        assert!(rx.await.is_err());
        assert!(matches!(host.next(0), H2Next::Open));
    }
}
