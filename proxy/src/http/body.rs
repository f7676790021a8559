//! Body helpers: boxed bodies and the upstream response body that hands its connection
//! back to the pool when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::timeouts::{DurationTimeout, IdleTimeout, IdleTimer, StreamEnd};
use crate::stats::{Counter, GaugeGuard};
use crate::upstream::pool::{BoxError, Lease, ResponseBody};

/// A request on its way through the proxy, from where it is parsed to the upstream
/// client. Boxed where it is made: it is passed by value down several `async fn`
/// levels, each of which would otherwise copy its 264 bytes (and keep room for it in
/// its state).
pub type BoxedRequest = Box<http::Request<ProxyBody>>;

/// A response on its way back, boxed where it is made for the same reason.
pub type BoxedResponse = Box<http::Response<ProxyBody>>;

/// The body type of every request and response the proxy sends. The common cases are
/// variants, so a proxied request allocates no boxed body; anything else is `Boxed`.
pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    /// A request body as it comes from the downstream, passed through as is.
    Downstream(RequestBody),
    /// An upstream response that returns its connection to the pool when it ends. Boxed:
    /// requests and responses are moved through several layers, and this variant would
    /// otherwise make every body 240 bytes.
    Pooled(Box<PooledBody>),
    Boxed(BoxBody<Bytes, BoxError>),
}

/// A request body as it comes from the downstream.
pub enum RequestBody {
    /// None (an HTTP/1.1 request with neither a length nor chunks).
    Empty,
    /// Read from Remora's HTTP/1.1 connection as it is polled.
    H1(super::h1::RequestBody),
    /// An HTTP/2 stream's, from hyper.
    H2(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::H1(b) => b.poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            RequestBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyBody::Empty => "Empty",
            ProxyBody::Full(_) => "Full",
            ProxyBody::Downstream(_) => "Downstream",
            ProxyBody::Pooled(_) => "Pooled",
            ProxyBody::Boxed(_) => "Boxed",
        })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Downstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Pooled(b) => Pin::new(&mut **b).poll_frame(cx),
            ProxyBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Downstream(b) => b.is_end_stream(),
            ProxyBody::Pooled(b) => b.is_end_stream(),
            ProxyBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Downstream(b) => b.size_hint(),
            ProxyBody::Pooled(b) => b.size_hint(),
            ProxyBody::Boxed(b) => b.size_hint(),
        }
    }
}

impl ProxyBody {
    /// Wraps any other body.
    pub fn boxed<B>(b: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        ProxyBody::Boxed(BodyExt::boxed(b))
    }
}

pub fn empty() -> ProxyBody {
    ProxyBody::Empty
}

pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    let b = b.into();
    if b.is_empty() {
        ProxyBody::Empty
    } else {
        ProxyBody::Full(Some(b))
    }
}

/// An upstream response body; when it ends cleanly the connection returns to the pool.
/// `active` (the cluster's `upstream_rq_active`) is released when the body ends.
/// Dropped early, the connection is dropped with it (it may hold unread bytes).
/// With an idle timer, a body that waits longer than `stream_idle_timeout` for the next
/// frame fails (the downstream stream is reset, as Envoy does once a response started);
/// so does one still streaming when the stream's duration limit (`end`) is reached.
pub struct PooledBody {
    inner: ResponseBody,
    lease: Option<Lease>,
    active: Option<InFlight>,
    timers: BodyTimers,
}

/// The timers still running while a response body streams: the stream idle timeout,
/// and the rarely configured others, boxed so the common body stays small.
#[derive(Default)]
pub struct BodyTimers {
    pub stream_idle: Option<IdleTimer>,
    pub more: Option<Box<MoreTimers>>,
}

/// The attempt's `per_try_idle_timeout` and the stream's duration limit.
pub struct MoreTimers {
    pub try_idle: Option<TryIdle>,
    pub end: Option<StreamEnd>,
}

/// The attempt's `per_try_idle_timeout` while the response body streams: counted in
/// `upstream_rq_per_try_idle_timeout` when it fires, and, as in Envoy, a timeout (504)
/// for the host's outlier detection.
pub struct TryIdle {
    pub timer: IdleTimer,
    pub expired: Counter,
    pub report: Option<(
        Arc<crate::upstream::cluster::ClusterState>,
        Arc<crate::upstream::host::HostEntry>,
    )>,
}

impl BodyTimers {
    /// Data arrived: the idle timers start over.
    fn reset(&mut self) {
        if let Some(t) = self.stream_idle.as_mut() {
            t.reset();
        }
        if let Some(t) = self.more.as_mut().and_then(|m| m.try_idle.as_mut()) {
            t.timer.reset();
        }
    }

    /// Whether the duration limit has been reached (checked on every poll).
    fn poll_end(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(more) = self.more.as_mut() else {
            return false;
        };
        match more.end.as_mut().map(|e| e.poll_reached(cx)) {
            Some(Poll::Ready(())) => {
                more.end = None;
                true
            }
            _ => false,
        }
    }

    /// Whether an idle timer fired (polled while the body waits).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(Poll::Ready(())) = self.stream_idle.as_mut().map(|t| t.poll_expired(cx)) {
            return true;
        }
        let Some(t) = self.more.as_mut().and_then(|m| m.try_idle.as_mut()) else {
            return false;
        };
        let fired = t.timer.poll_expired(cx).is_ready();
        if fired {
            t.expired.inc();
            if let Some((cluster, host)) = &t.report {
                cluster.report(host, crate::upstream::outlier::Outcome::Timeout);
            }
        }
        fired
    }
}

/// What an upstream request holds until its response ends: its place in
/// `upstream_rq_active`, its circuit-breaker slot and its host's active count.
pub struct InFlight {
    pub active: GaugeGuard,
    pub slot: Option<crate::upstream::breakers::Slot>,
    /// Its place in the host's active requests (least-request clusters).
    pub host: Option<crate::upstream::host::ActiveRequest>,
}

impl PooledBody {
    pub fn new(
        inner: ResponseBody,
        lease: Lease,
        active: Option<InFlight>,
        timers: BodyTimers,
    ) -> Self {
        let mut b = PooledBody {
            inner,
            lease: Some(lease),
            active,
            timers,
        };
        if b.inner.is_end_stream() {
            b.finish();
        }
        b
    }

    /// The next frame of the upstream body (an HTTP/1.1 one read from the leased
    /// connection; with the lease given back, the body has ended).
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            ResponseBody::H1(r) => match self.lease.as_mut().and_then(Lease::h1_conn) {
                Some(conn) => r.poll_frame(conn, cx).map_err(|e| Box::new(e) as BoxError),
                None => Poll::Ready(None),
            },
            ResponseBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        self.active = None;
    }

    /// Ends the body early with `e`: the connection is not reused.
    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.lease = None;
        self.active = None;
        Poll::Ready(Some(Err(e)))
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
        // (A body that has ended, its connection given back, is past the limit's reach.)
        if this.lease.is_some() && this.timers.poll_end(cx) {
            return this.fail(Box::new(DurationTimeout));
        }
        match this.poll_inner(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.finish();
                } else {
                    this.timers.reset();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e),
            Poll::Pending if this.timers.poll_idle(cx) => this.fail(Box::new(IdleTimeout)),
            Poll::Pending => Poll::Pending,
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
        self.active = None;
    }
}
