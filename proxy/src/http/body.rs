//! Body helpers: boxed bodies and the upstream response body that hands its connection
//! back to the pool when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::timeouts::{IdleTimeout, IdleTimer};
use crate::upstream::pool::{BoxError, Lease, ProxyBody};

pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn boxed(b: Incoming) -> ProxyBody {
    b.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// An upstream response body; when it ends cleanly the connection returns to the pool.
/// Dropped early, the connection is dropped with it (it may hold unread bytes).
/// With an idle timer, a body that waits longer than `stream_idle_timeout` for the next
/// frame fails (the downstream stream is reset, as Envoy does once a response started).
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
    idle: Option<IdleTimer>,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        lease: Lease,
        on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
        idle: Option<IdleTimer>,
    ) -> Self {
        let mut b = PooledBody {
            inner,
            lease: Some(lease),
            on_end,
            idle,
        };
        if b.inner.is_end_stream() {
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.finish();
                } else if let Some(t) = this.idle.as_mut() {
                    t.reset();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
                if let Some(f) = this.on_end.take() {
                    f();
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => match this.idle.as_mut().map(|t| t.poll_expired(cx)) {
                Some(Poll::Ready(())) => {
                    this.lease = None;
                    if let Some(f) = this.on_end.take() {
                        f();
                    }
                    Poll::Ready(Some(Err(Box::new(IdleTimeout))))
                }
                _ => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Not ended: drop the connection rather than pooling it mid-response.
        self.lease = None;
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}
