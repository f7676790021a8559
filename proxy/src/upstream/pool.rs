//! Per-worker upstream connection pools.
//!
//! Each worker owns its pools (the mutex is never contended across threads). HTTP/1.1
//! connections (`h1::Conn`, driven by the request's task) carry one request at a time
//! and come back to the idle list when the response body ends cleanly; an idle one is
//! checked for a close or stray bytes when it is taken. HTTP/2 connections (hyper's, with
//! a task of their own) are shared by all streams of the worker.
//!
//! Pools are per host, protocol and routing priority. Circuit breakers, as Envoy's
//! pools apply them: a request that finds no idle connection waits as *pending*
//! (`max_pending_requests`, else 503 overflow) while a connection opens, if
//! `max_connections` allows one (or the worker has none to the host), or until a busy
//! one comes free.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, Weak};

use http::Response;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::breakers::{Breakers, Slot};
use super::cluster::{ClusterState, Host, HostAddr};
use super::connect::{self, ConnectError};
use super::h1;
use crate::config::circuit_breakers::Priority;
use crate::http::body::BoxedRequest;
use crate::stats::GaugeGuard;
use tokio::sync::oneshot;

mod idle_watch;
mod shared_h2;
use self::shared_h2::{H2Handoff, H2Host, H2Next, SharedH2};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub use crate::http::body::ProxyBody;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    cluster: Arc<str>,
    addr: HostAddr,
    proto: Proto,
    /// Each routing priority has its own pools, as in Envoy.
    priority: Priority,
}

enum Sender {
    /// Boxed once per connection: leases and idle entries move often.
    H1(Box<H1Conn>),
    H2(http2::SendRequest<ProxyBody>),
}

/// An HTTP/1.1 connection and what it holds while open.
struct H1Conn {
    conn: h1::Conn,
    held: Held,
}

/// What an HTTP/1.1 connection holds until it closes: its place in
/// `upstream_cx_active`, its circuit-breaker slot and its count in the host's pool.
pub struct Held {
    _active: GaugeGuard,
    _slot: Slot,
    open: Option<OpenConn>,
}

struct Idle {
    conn: Box<H1Conn>,
    uses: u32,
    local: Option<SocketAddr>,
}

/// A pool's place in its circuit breakers' pool count (`remaining_cx_pools`): taken
/// by its first connection, held by each connection open or opening, given back with
/// the last (Envoy removes a pool when its last connection closes).
#[derive(Default)]
pub(super) struct PoolCount(Weak<Slot>);

impl PoolCount {
    /// A share of the pool's place, taken from `breakers` if no connection holds it.
    pub(super) fn share(&mut self, breakers: &Arc<Breakers>) -> Arc<Slot> {
        if let Some(held) = self.0.upgrade() {
            return held;
        }
        let held = Arc::new(breakers.pool());
        self.0 = Arc::downgrade(&held);
        held
    }
}

/// A worker's HTTP/1.1 connections to one host.
#[derive(Default)]
struct H1Host {
    idle: Vec<Idle>,
    /// Connections open or opening.
    open: u32,
    pool: PoolCount,
    /// Pending requests, first come first served.
    waiters: VecDeque<oneshot::Sender<Handoff>>,
}

impl H1Host {
    /// An idle connection that can take a request (closed ones are dropped).
    fn usable(&mut self) -> Option<Idle> {
        while let Some(mut idle) = self.idle.pop() {
            if idle.conn.conn.idle_open() {
                return Some(idle);
            }
            self.close(idle);
        }
        None
    }

    /// Closes a connection while the pools are locked: its count in `open` is taken
    /// here, as its `OpenConn` would lock them again.
    fn close(&mut self, idle: Idle) {
        let H1Conn { mut held, .. } = *idle.conn;
        if let Some(open) = held.open.take() {
            open.disarm();
            self.open = self.open.saturating_sub(1);
        }
    }

    /// Drops the idle connections on which something arrived (a close, stray bytes);
    /// `cx` is woken when anything arrives on the others.
    fn sweep(&mut self, cx: &mut std::task::Context<'_>) {
        let mut i = 0;
        while i < self.idle.len() {
            if self.idle[i].conn.conn.watch(cx) {
                i += 1;
            } else {
                let closed = self.idle.swap_remove(i);
                self.close(closed);
            }
        }
    }

    /// A connection failed to open: every pending request fails with `e`, as in Envoy.
    fn fail_waiters(&mut self, e: &UpstreamError) {
        for w in self.waiters.drain(..) {
            let _ = w.send(Handoff::Failed(e.for_waiter()));
        }
    }

    /// Gives `h` to the first pending request still waiting; returns it when none is.
    fn hand(&mut self, mut h: Handoff) -> Option<Handoff> {
        while let Some(w) = self.waiters.pop_front() {
            match w.send(h) {
                Ok(()) => return None,
                Err(back) => h = back,
            }
        }
        Some(h)
    }
}

/// What a pending request is woken with.
enum Handoff {
    /// A connection that came free.
    Conn(Idle),
    /// A connection closed: try to open one.
    Retry,
    /// A connection failed to open: every pending request fails with it, as in Envoy.
    Failed(UpstreamError),
}

/// What an HTTP/1.1 request does next.
enum H1Next {
    Idle(Idle),
    Connect(Slot, OpenConn),
    Wait(oneshot::Receiver<Handoff>),
}

/// Counts a connection in its host's `open` (and its pool in the pool count) until
/// dropped (when the connection closes or fails to open), then wakes a pending request
/// to try again.
pub struct OpenConn {
    pools: Weak<Pools>,
    key: Key,
    _pool: Arc<Slot>,
}

impl OpenConn {
    /// Drops it without touching the pools (the caller holds their lock).
    fn disarm(mut self) {
        self.pools = Weak::new();
    }

    /// The connection failed to open: its count goes, and the host's pending requests
    /// fail with `e`.
    fn failed(mut self, e: &UpstreamError) {
        self.leave(|h| h.fail_waiters(e));
    }

    /// Takes the connection's count from its host (once) and runs `then` on the host,
    /// under the pools' lock.
    fn leave(&mut self, then: impl FnOnce(&mut H1Host)) {
        let Some(pools) = std::mem::take(&mut self.pools).upgrade() else {
            return;
        };
        let mut map = pools.h1.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = map.get_mut(&self.key) {
            h.open = h.open.saturating_sub(1);
            then(h);
        }
    }
}

impl Drop for OpenConn {
    /// The connection closed: a pending request may open another.
    fn drop(&mut self) {
        self.leave(|h| {
            h.hand(Handoff::Retry);
        });
    }
}

#[derive(Default)]
pub struct Pools {
    h1: Mutex<HashMap<Key, H1Host, RandomState>>,
    h2: Mutex<HashMap<Key, H2Host, RandomState>>,
    /// The worker's idle-connection watcher (`pool/idle_watch.rs`).
    watcher: idle_watch::Watcher,
}

/// Marks the request opening a worker's HTTP/2 connection to a host: if it goes away
/// before the connection is open, the requests waiting for it start over.
struct H2Opening {
    pools: Weak<Pools>,
    key: Key,
}

impl H2Opening {
    /// Runs `f` on the host's state, once.
    fn finish<T>(mut self, f: impl FnOnce(&mut H2Host) -> T) -> Option<T> {
        let pools = std::mem::take(&mut self.pools).upgrade()?;
        let mut map = pools.h2.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(map.entry(self.key.clone()).or_default()))
    }
}

impl Drop for H2Opening {
    fn drop(&mut self) {
        if let Some(pools) = self.pools.upgrade() {
            let mut map = pools.h2.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = map.get_mut(&self.key) {
                h.abandoned();
            }
        }
    }
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pools")
    }
}

/// Why a request could not get a response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[from] ConnectError),
    /// The HTTP/2 connection preface and settings exchange failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    /// The downstream request body failed (malformed, or its client went away): the
    /// request's fault, not the upstream's.
    #[error("request body: {0}")]
    RequestBody(BoxError),
    #[error("reset: {0}")]
    Reset(Reset),
    /// `max_pending_requests` reached: the request was not sent.
    #[error("too many requests waiting for a connection")]
    PendingOverflow,
    /// `max_requests` reached when the request had its connection: it was not sent.
    #[error("too many requests outstanding")]
    ActiveOverflow,
}

/// The upstream stream was reset, or its connection closed, before a response head.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct Reset {
    /// Whether any of the request had been sent.
    pub sent: bool,
    /// An HTTP/2 `REFUSED_STREAM`: the upstream did not process the request.
    pub refused: bool,
    cause: ResetCause,
}

#[derive(Debug, thiserror::Error)]
enum ResetCause {
    #[error(transparent)]
    H1(h1::Error),
    #[error(transparent)]
    H2(hyper::Error),
}

impl UpstreamError {
    /// The error again, for each pending request failed by the same connection.
    fn for_waiter(&self) -> UpstreamError {
        match self {
            UpstreamError::Connect(e) => UpstreamError::Connect(e.again()),
            other => {
                UpstreamError::Connect(ConnectError::Io(std::io::Error::other(other.to_string())))
            }
        }
    }

    fn from_h1(failed: h1::Failed) -> UpstreamError {
        match failed.error {
            h1::Error::RequestBody(e) => UpstreamError::RequestBody(e),
            e @ h1::Error::RequestLength => UpstreamError::RequestBody(Box::new(e)),
            e => UpstreamError::Reset(Reset {
                sent: failed.unsent.is_none(),
                refused: false,
                cause: ResetCause::H1(e),
            }),
        }
    }

    fn from_h2(e: hyper::Error) -> UpstreamError {
        if e.is_user() {
            return UpstreamError::RequestBody(Box::new(e));
        }
        let refused = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<h2::Error>())
            .and_then(h2::Error::reason)
            == Some(h2::Reason::REFUSED_STREAM);
        UpstreamError::Reset(Reset {
            sent: !e.is_canceled(),
            refused,
            cause: ResetCause::H2(e),
        })
    }
}

/// A response body as it comes from either kind of connection. The HTTP/1.1 one is read
/// from its connection, which stays in the `Lease`.
pub enum ResponseBody {
    H1(h1::BodyReader),
    H2(Incoming),
}

impl ResponseBody {
    pub fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::H1(r) => r.is_end_stream(),
            ResponseBody::H2(b) => hyper::body::Body::is_end_stream(b),
        }
    }

    pub fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ResponseBody::H1(r) => r.size_hint(),
            ResponseBody::H2(b) => hyper::body::Body::size_hint(b),
        }
    }
}

/// An upgraded (`101`) HTTP/1.1 connection: its stream, the bytes already read past the
/// response head, and what the connection holds until it closes.
pub struct Upgraded {
    pub io: connect::Stream,
    pub buffered: bytes::BytesMut,
    pub held: Held,
}

/// A connection checked out for one request.
pub struct Lease {
    sender: Sender,
    key: Key,
    uses: u32,
    max_uses: u32,
    /// The connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`; none for Unix sockets).
    local: Option<SocketAddr>,
    pools: Arc<Pools>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({:?})", self.key)
    }
}

impl Pools {
    /// Checks out a connection to `host`, opening one if none is idle.
    pub async fn acquire(
        self: &Arc<Self>,
        cluster: &ClusterState,
        host: &Host,
        proto: Proto,
        priority: Priority,
    ) -> Result<Lease, UpstreamError> {
        let key = Key {
            cluster: cluster.name.clone(),
            addr: host.addr.clone(),
            proto,
            priority,
        };
        let max_uses = cluster.config.max_requests_per_connection;
        let lease = |key, sender, uses, local| Lease {
            sender,
            key,
            uses,
            max_uses,
            local,
            pools: self.clone(),
        };
        let idle_lease = |key, idle: Idle| lease(key, Sender::H1(idle.conn), idle.uses, idle.local);
        let h2_lease = |key, s: SharedH2| lease(key, Sender::H2(s.sender), s.uses, s.local);
        if proto == Proto::Http1 {
            if let Some(idle) = self.take_idle_h1(&key) {
                return Ok(idle_lease(key, idle));
            }
        } else if let Some(shared) = self.shared_h2(&key, max_uses) {
            return Ok(h2_lease(key, shared));
        }
        // No connection to use: the request is pending until one opens or comes free.
        let stats = &cluster.stats;
        let Some(_pending) = cluster.breakers.at(priority).try_pending() else {
            stats.upstream_rq_pending_overflow.inc();
            return Err(UpstreamError::PendingOverflow);
        };
        stats.upstream_rq_pending_total.inc();
        let _waiting = GaugeGuard::new(&stats.upstream_rq_pending_active);
        let got = if proto == Proto::Http2 {
            self.pending_h2(cluster, host, &key, max_uses)
                .await
                .map(|s| h2_lease(key, s))
        } else {
            self.pending_h1(cluster, host, &key)
                .await
                .map(|(sender, uses, local)| lease(key, sender, uses, local))
        };
        if got.is_err() {
            stats.upstream_rq_pending_failure_eject.inc();
        }
        got
    }

    /// A pending HTTP/2 request: the worker's connection to the host once open (this
    /// request opens it, or waits for the request that does).
    async fn pending_h2(
        self: &Arc<Self>,
        cluster: &ClusterState,
        host: &Host,
        key: &Key,
        max_uses: u32,
    ) -> Result<SharedH2, UpstreamError> {
        loop {
            let next = self
                .h2
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_default()
                .next(max_uses);
            match next {
                H2Next::Ready(shared) => return Ok(shared),
                H2Next::Wait(rx) => match rx.await {
                    Ok(H2Handoff::Conn(shared)) => return Ok(shared),
                    Ok(H2Handoff::Failed(e)) => return Err(e),
                    // The opener went away, or the connection is spent: start over.
                    Err(_) => continue,
                },
                H2Next::Open => {}
            }
            let opening = H2Opening {
                pools: Arc::downgrade(self),
                key: key.clone(),
            };
            // Streams share the connection: it is opened even at the connection limit.
            let breakers = cluster.breakers.at(key.priority);
            let slot = breakers.try_connection().unwrap_or_else(|| {
                cluster.stats.upstream_cx_overflow.inc();
                breakers.force_connection()
            });
            let pool = self.h2_pool_share(key, breakers);
            // Boxed: connecting is rare, and its (large) future would otherwise make
            // every request's future larger.
            return match Box::pin(connect_h2(cluster, host, (slot, pool))).await {
                Ok((sender, local)) => {
                    let own = opening.finish(|h| h.opened(sender.clone(), local, max_uses));
                    Ok(own.unwrap_or(SharedH2 {
                        sender,
                        uses: 1,
                        local,
                    }))
                }
                Err(e) => {
                    opening.finish(|h| h.failed(&e));
                    Err(e)
                }
            };
        }
    }

    /// A pending HTTP/1.1 request: a connection it opens, or one that comes free.
    async fn pending_h1(
        self: &Arc<Self>,
        cluster: &ClusterState,
        host: &Host,
        key: &Key,
    ) -> Result<(Sender, u32, Option<SocketAddr>), UpstreamError> {
        loop {
            match self.h1_next(cluster, key) {
                H1Next::Idle(idle) => return Ok((Sender::H1(idle.conn), idle.uses, idle.local)),
                H1Next::Connect(slot, open) => {
                    let (conn, local) = Box::pin(connect_h1(cluster, host, slot, open)).await?;
                    return Ok((Sender::H1(conn), 0, local));
                }
                H1Next::Wait(rx) => match rx.await {
                    Ok(Handoff::Conn(idle)) => {
                        return Ok((Sender::H1(idle.conn), idle.uses, idle.local))
                    }
                    Ok(Handoff::Failed(e)) => return Err(e),
                    Ok(Handoff::Retry) | Err(_) => {}
                },
            }
        }
    }

    /// Under one lock: an idle connection, else a slot to open one (the limit allows it,
    /// or the worker has none to the host), else a place in the host's queue.
    fn h1_next(self: &Arc<Self>, cluster: &ClusterState, key: &Key) -> H1Next {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry(key.clone()).or_default();
        if let Some(idle) = h.usable() {
            return H1Next::Idle(idle);
        }
        let breakers = cluster.breakers.at(key.priority);
        let slot = breakers.try_connection().or_else(|| {
            cluster.stats.upstream_cx_overflow.inc();
            (h.open == 0).then(|| breakers.force_connection())
        });
        match slot {
            Some(slot) => {
                h.open += 1;
                H1Next::Connect(
                    slot,
                    OpenConn {
                        pools: Arc::downgrade(self),
                        key: key.clone(),
                        _pool: h.pool.share(breakers),
                    },
                )
            }
            None => {
                let (tx, rx) = oneshot::channel();
                h.waiters.push_back(tx);
                H1Next::Wait(rx)
            }
        }
    }

    /// Closes idle connections (and forgets shared HTTP/2 ones) to hosts that are no
    /// longer in their cluster, or whose cluster is gone. Leased connections finish their
    /// request and are not returned (their host is unknown by then).
    pub fn prune(&self, clusters: &super::cluster::ClusterMap) {
        // ORIGINAL_DST hosts are whatever clients dialled: kept while the cluster is.
        let live = |k: &Key| {
            clusters.get(&k.cluster).is_some_and(|c| {
                c.config.discovery == crate::config::cluster::Discovery::OriginalDst
                    || c.hosts().hosts.iter().any(|h| h.addr == k.addr)
            })
        };
        // Closed after the lock is let go: each connection's `OpenConn` takes it.
        let closed: Vec<_> = self
            .h1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extract_if(|k, _| !live(k))
            .collect();
        drop(closed);
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live(k));
    }

    fn take_idle_h1(&self, key: &Key) -> Option<Idle> {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(key)?.usable()
    }

    /// A share of the HTTP/2 pool's place in the pool count, for a connection opening.
    fn h2_pool_share(&self, key: &Key, breakers: &Arc<Breakers>) -> Arc<Slot> {
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().pool.share(breakers)
    }

    /// The worker's HTTP/2 connection to the host, counted for one more stream.
    fn shared_h2(&self, key: &Key, max_uses: u32) -> Option<SharedH2> {
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(key)?.stream(max_uses)
    }

    /// A connection came free: to the first pending request, else to the idle list,
    /// watched there for a close by the upstream.
    fn put_idle_h1(self: &Arc<Self>, key: Key, mut idle: Idle) {
        if !self.watch_idle(&mut idle) {
            return;
        }
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry(key).or_default();
        if let Some(Handoff::Conn(idle)) = h.hand(Handoff::Conn(idle)) {
            h.idle.push(idle);
        }
    }
}

/// Opens a TCP or Unix connection to `host` within the cluster's connect timeout;
/// returns it with its place in `upstream_cx_active` and its local address.
async fn connect_io(
    cluster: &ClusterState,
    host: &Host,
) -> Result<(connect::Stream, GaugeGuard, Option<SocketAddr>), UpstreamError> {
    let stats = &cluster.stats;
    let io = match connect::connect_stream(
        &host.addr,
        cluster.config.connect_timeout,
        cluster.config.bind,
    )
    .await
    {
        Ok(io) => io,
        Err(e) => {
            stats.upstream_cx_connect_fail.inc();
            if matches!(e, ConnectError::Timeout) {
                stats.upstream_cx_connect_timeout.inc();
            }
            return Err(e.into());
        }
    };
    stats.upstream_cx_total.inc();
    let active = GaugeGuard::new(&stats.upstream_cx_active);
    let local = match &io {
        connect::Stream::Left(tcp) => tcp.local_addr().ok(),
        connect::Stream::Right(_) => None,
    };
    Ok((io, active, local))
}

/// Opens an HTTP/1.1 connection holding its circuit-breaker `slot` and its count in
/// the host's pool until it closes. If it fails to open, the host's pending requests
/// fail with it.
async fn connect_h1(
    cluster: &ClusterState,
    host: &Host,
    slot: Slot,
    open: OpenConn,
) -> Result<(Box<H1Conn>, Option<SocketAddr>), UpstreamError> {
    match connect_io(cluster, host).await {
        Ok((io, active, local)) => {
            let conn = Box::new(H1Conn {
                conn: h1::Conn::new(io),
                held: Held {
                    _active: active,
                    _slot: slot,
                    open: Some(open),
                },
            });
            Ok((conn, local))
        }
        Err(e) => {
            open.failed(&e);
            Err(e)
        }
    }
}

/// Opens an HTTP/2 connection; its task holds `held` (the circuit-breaker slot and the
/// share of the pool's place) until it closes.
async fn connect_h2(
    cluster: &ClusterState,
    host: &Host,
    held: (Slot, Arc<Slot>),
) -> Result<(http2::SendRequest<ProxyBody>, Option<SocketAddr>), UpstreamError> {
    let (io, active, local) = connect_io(cluster, host).await?;
    let window = cluster.config.per_connection_buffer_limit_bytes.max(65_535);
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        let _held = (active, held);
        let _ = conn.await;
    });
    Ok((sender, local))
}

impl Lease {
    /// Sends the request. On a reused HTTP/1.1 connection that turns out to be closed
    /// before the request was written, the caller gets the request back to try afresh.
    pub async fn send(&mut self, req: BoxedRequest) -> Result<Response<ResponseBody>, SendError> {
        self.uses += 1;
        match &mut self.sender {
            Sender::H1(c) => match c.conn.send(req).await {
                Ok(resp) => Ok(resp.map(ResponseBody::H1)),
                Err(h1::Failed {
                    unsent: Some(req), ..
                }) if self.uses > 1 => Err(SendError::NotSent(req)),
                Err(failed) => Err(SendError::Failed(UpstreamError::from_h1(failed))),
            },
            Sender::H2(s) => {
                if let Err(e) = s.ready().await {
                    return Err(SendError::Failed(UpstreamError::from_h2(e)));
                }
                match s.send_request(*req).await {
                    Ok(resp) => Ok(resp.map(ResponseBody::H2)),
                    Err(e) => Err(SendError::Failed(UpstreamError::from_h2(e))),
                }
            }
        }
    }

    /// The HTTP/1.1 connection its response body is read from.
    pub fn h1_conn(&mut self) -> Option<&mut h1::Conn> {
        match &mut self.sender {
            Sender::H1(c) => Some(&mut c.conn),
            Sender::H2(_) => None,
        }
    }

    /// The connection, after a `101` response, for a tunnel (HTTP/1.1 only: an
    /// HTTP/2 lease comes back).
    pub fn into_upgraded(self) -> Result<Upgraded, Lease> {
        match self.sender {
            Sender::H1(c) => {
                let H1Conn { conn, held } = *c;
                let (io, buffered) = conn.into_upgraded();
                Ok(Upgraded { io, buffered, held })
            }
            sender @ Sender::H2(_) => Err(Lease { sender, ..self }),
        }
    }

    /// The connection's local address (none for Unix sockets).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Returns the connection to the pool (HTTP/1.1) once its response is complete.
    pub fn release(self) {
        if let Sender::H1(conn) = self.sender {
            let spent = self.max_uses > 0 && self.uses >= self.max_uses;
            if !spent && conn.conn.reusable() {
                self.pools.put_idle_h1(
                    self.key,
                    Idle {
                        conn,
                        uses: self.uses,
                        local: self.local,
                    },
                );
            }
        }
    }
}

#[derive(Debug)]
pub enum SendError {
    /// Not written to the upstream: safe to send on another connection.
    NotSent(BoxedRequest),
    Failed(UpstreamError),
}
