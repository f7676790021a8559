//! Listeners at run time: bound sockets (one per worker with `SO_REUSEPORT`), accept
//! loops, filter chain selection and hand-off to the chain's network filter.

pub mod chain;
pub mod inspect;
pub mod manager;
pub mod sniff;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Socket, Type};
use tokio_util::task::TaskTracker;

use crate::config::common::BindAddress;
use crate::config::hcm::RouteSpec;
pub use crate::config::listener::Listener;
use crate::config::listener::{FilterChain, NetworkFilter};
use crate::drain::Drain;
use crate::http::{Downstream, HttpContext};
use crate::routing::{RouteSlot, Routes};
use crate::stats::{Counter, Gauge, GaugeGuard, Store};
use crate::tcp::TcpContext;
use crate::upstream::pool::Pools;
use crate::upstream::ClusterManager;
use manager::{ListenerIndex, ListenerSlot};

/// A filter chain ready to serve connections.
#[derive(Debug, Clone)]
pub enum ChainHandler {
    Http(Arc<HttpContext>),
    Tcp(Arc<TcpContext>),
}

/// Hands out the route slot of an RDS route configuration by name.
pub type RouteResolver<'a> = &'a dyn Fn(&str) -> RouteSlot;

/// What a listener's filter chains are built with.
#[derive(Clone, Copy)]
pub struct BuildContext<'a> {
    pub clusters: &'a Arc<ClusterManager>,
    pub store: &'a Store,
    /// This host's address ([`crate::net::local_address`]).
    pub local: IpAddr,
    pub routes: RouteResolver<'a>,
}

impl ChainHandler {
    fn new(fc: &FilterChain, cx: BuildContext<'_>, buffer_limit: u32) -> Self {
        let BuildContext {
            clusters,
            store,
            local,
            ..
        } = cx;
        match &fc.filter {
            NetworkFilter::Http(h) => {
                let routes = match &h.routes {
                    RouteSpec::Static(t) => Routes::Fixed(t.clone()),
                    RouteSpec::Rds { name, .. } => Routes::Rds((cx.routes)(name)),
                };
                ChainHandler::Http(Arc::new(
                    HttpContext::new(h.clone(), routes, clusters.clone(), store, local)
                        .with_buffer_limit(buffer_limit),
                ))
            }
            NetworkFilter::Tcp(t) => ChainHandler::Tcp(Arc::new(TcpContext::new(
                t.clone(),
                clusters.clone(),
                store,
            ))),
        }
    }
}

/// `listener.<address>.*`
#[derive(Debug, Clone)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub no_filter_chain_match: Counter,
    /// Closed because the listener filters timed out.
    pub downstream_pre_cx_timeout: Counter,
}

#[derive(Debug)]
pub struct ListenerRuntime {
    pub config: Listener,
    chains: Vec<ChainHandler>,
    default_chain: Option<ChainHandler>,
    pub stats: ListenerStats,
    inspect_stats: inspect::InspectorStats,
    /// Connections wind down when this fires.
    pub drain: Drain,
}

impl ListenerRuntime {
    pub fn new(config: Listener, cx: BuildContext<'_>) -> Self {
        let limit = config.per_connection_buffer_limit_bytes;
        let chains = config
            .filter_chains
            .iter()
            .map(|fc| ChainHandler::new(fc, cx, limit))
            .collect();
        let default_chain = config
            .default_filter_chain
            .as_ref()
            .map(|fc| ChainHandler::new(fc, cx, limit));
        let store = cx.store;
        let p = &config.stat_prefix;
        let stats = ListenerStats {
            downstream_cx_total: store.counter(&format!("listener.{p}.downstream_cx_total")),
            downstream_cx_active: store.gauge(&format!("listener.{p}.downstream_cx_active")),
            no_filter_chain_match: store.counter(&format!("listener.{p}.no_filter_chain_match")),
            downstream_pre_cx_timeout: store
                .counter(&format!("listener.{p}.downstream_pre_cx_timeout")),
        };
        ListenerRuntime {
            config,
            chains,
            default_chain,
            stats,
            inspect_stats: inspect::InspectorStats::new(store),
            drain: Drain::default(),
        }
    }

    fn chain_for(&self, meta: &chain::ConnMeta<'_>) -> Option<&ChainHandler> {
        match chain::select(
            self.config.filter_chains.iter().map(|fc| &fc.criteria),
            meta,
        ) {
            Some(i) => self.chains.get(i),
            None => self.default_chain.as_ref(),
        }
    }
}

/// A listening socket handed to one worker.
#[derive(Debug)]
pub enum BoundSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl BoundSocket {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            BoundSocket::Tcp(l) => l.local_addr().ok(),
            BoundSocket::Unix(_) => None,
        }
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            BoundSocket::Tcp(l) => BoundSocket::Tcp(l.try_clone()?),
            BoundSocket::Unix(l) => BoundSocket::Unix(l.try_clone()?),
        })
    }
}

/// Binds a listener once per worker. With `SO_REUSEPORT`, each worker gets its own
/// socket on the same address (the first bind fixes the port when 0 was asked for);
/// otherwise the workers share one socket.
pub fn bind(config: &Listener, workers: usize) -> io::Result<Vec<BoundSocket>> {
    let opts = BindOptions {
        reuse_port: config.reuse_port,
        transparent: config.transparent,
    };
    let first = bind_one(&config.address, opts)?;
    let mut out = Vec::with_capacity(workers);
    let actual = match (&first, &config.address) {
        (BoundSocket::Tcp(l), BindAddress::Tcp(_)) => Some(BindAddress::Tcp(l.local_addr()?)),
        _ => None,
    };
    for _ in 1..workers {
        let s = match (&actual, config.reuse_port) {
            (Some(addr), true) => bind_one(addr, opts)?,
            _ => first.try_clone()?,
        };
        out.push(s);
    }
    out.insert(0, first);
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct BindOptions {
    reuse_port: bool,
    /// `IP_TRANSPARENT`: accept connections to any address (TPROXY).
    transparent: bool,
}

fn bind_one(addr: &BindAddress, opts: BindOptions) -> io::Result<BoundSocket> {
    match addr {
        BindAddress::Tcp(sa) => {
            let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if opts.reuse_port {
                socket.set_reuse_port(true)?;
            }
            if opts.transparent {
                if sa.is_ipv4() {
                    socket.set_ip_transparent_v4(true)?;
                } else {
                    socket.set_ip_transparent_v6(true)?;
                }
            }
            if sa.is_ipv6() {
                socket.set_only_v6(false).ok();
            }
            socket.set_nonblocking(true)?;
            socket.bind(&(*sa).into())?;
            socket.listen(1024)?;
            Ok(BoundSocket::Tcp(socket.into()))
        }
        BindAddress::Unix(path) => {
            if path.exists() {
                // A stale socket file from an earlier run would make bind fail.
                std::fs::remove_file(path)?;
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            l.set_nonblocking(true)?;
            Ok(BoundSocket::Unix(l))
        }
    }
}

/// Logs a failed accept and pauses briefly, so that running out of file descriptors does
/// not turn the accept loop into a busy loop.
async fn accept_failed(listener: &ListenerRuntime, e: &io::Error) {
    tracing::warn!(listener = %listener.config.name, error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

/// Accepts connections on one worker until the slot closes; returns once it has. Each
/// connection is served by the slot's listener config as it is when the connection
/// arrives.
pub async fn accept_loop(
    slot: Arc<ListenerSlot>,
    socket: BoundSocket,
    pools: Arc<Pools>,
    tracker: TaskTracker,
    index: Arc<ListenerIndex>,
) -> io::Result<()> {
    let mut close = slot.close.watch();
    match socket {
        BoundSocket::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            loop {
                let (stream, peer) = tokio::select! {
                    r = l.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            accept_failed(&slot.current(), &e).await;
                            continue;
                        }
                    },
                    _ = close.signaled() => return Ok(()),
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok();
                let conn = Accepted {
                    peer: Some(peer),
                    local,
                    pools: &pools,
                    tracker: &tracker,
                };
                dispatch_tcp(&slot, stream, conn, &index);
            }
        }
        BoundSocket::Unix(l) => {
            let l = tokio::net::UnixListener::from_std(l)?;
            loop {
                let stream = tokio::select! {
                    r = l.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            accept_failed(&slot.current(), &e).await;
                            continue;
                        }
                    },
                    _ = close.signaled() => return Ok(()),
                };
                let conn = Accepted {
                    peer: None,
                    local: None,
                    pools: &pools,
                    tracker: &tracker,
                };
                let meta = chain::ConnMeta {
                    transport_protocol: "raw_buffer",
                    ..Default::default()
                };
                dispatch(&slot.load(), stream, &meta, None, conn);
            }
        }
    }
}

/// A connection just accepted, and where it goes to be served.
#[derive(Clone, Copy)]
struct Accepted<'a> {
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    pools: &'a Arc<Pools>,
    tracker: &'a TaskTracker,
}

/// A TCP connection: served at once, or (with listener filters or `use_original_dst`)
/// first inspected in its own task, which may hand it to the listener of its original
/// destination.
fn dispatch_tcp(
    slot: &Arc<ListenerSlot>,
    stream: tokio::net::TcpStream,
    conn: Accepted<'_>,
    index: &Arc<ListenerIndex>,
) {
    let listener = slot.load();
    let cfg = &listener.config;
    if !cfg.use_original_dst && cfg.listener_filters.is_empty() {
        let meta = chain::ConnMeta {
            destination: conn.local,
            source: conn.peer,
            transport_protocol: "raw_buffer",
            ..Default::default()
        };
        return dispatch(&listener, stream, &meta, conn.local, conn);
    }
    let (slot, index, pools) = (slot.clone(), index.clone(), conn.pools.clone());
    let (peer, local, tracker) = (conn.peer, conn.local, conn.tracker.clone());
    conn.tracker.spawn(async move {
        let Some((listener, found)) = inspect_and_hand_off(&slot, &stream, local, &index).await
        else {
            return;
        };
        // Never proxy a connection back into this proxy's own listening sockets.
        let upstream_destination = found
            .destination
            .filter(|d| !index.is_own(*d, local.map(|l| l.ip())));
        let meta = chain::ConnMeta {
            destination: found.destination,
            source: peer,
            server_name: found.server_name.as_deref(),
            transport_protocol: found.transport_protocol,
            application_protocols: &found.application_protocols,
        };
        let conn = Accepted {
            peer,
            local: upstream_destination,
            pools: &pools,
            tracker: &tracker,
        };
        dispatch(&listener, stream, &meta, upstream_destination, conn);
    });
}

/// Restores the original destination, hands the connection to the listener bound to
/// it (once, as Envoy does), and runs that listener's inspectors. `None`: they timed
/// out and the connection is closed.
async fn inspect_and_hand_off(
    slot: &Arc<ListenerSlot>,
    stream: &tokio::net::TcpStream,
    local: Option<SocketAddr>,
    index: &ListenerIndex,
) -> Option<(Arc<ListenerRuntime>, inspect::Inspected)> {
    use crate::config::listener_filter::Kind;
    let mut listener = slot.current();
    let cfg = &listener.config;
    let mut destination = local;
    if cfg.use_original_dst || cfg.listener_filters.has(Kind::OriginalDst) {
        destination = inspect::original_destination(stream, local);
    }
    if cfg.use_original_dst && destination != local {
        if let Some(target) = destination.and_then(|d| index.find(d)) {
            if !Arc::ptr_eq(&target, slot) {
                listener = target.current();
            }
        }
    }
    let cfg = &listener.config;
    match inspect::sniff(
        stream,
        &cfg.listener_filters,
        destination,
        &listener.inspect_stats,
    )
    .await
    {
        Some(found) => Some((listener, found)),
        None => {
            listener.stats.downstream_pre_cx_timeout.inc();
            None
        }
    }
}

/// Picks the filter chain for `meta` and serves the connection on it. `destination` is
/// where upstream ORIGINAL_DST connections go (`None`: nowhere).
fn dispatch<I: crate::upstream::connect::Io>(
    listener: &Arc<ListenerRuntime>,
    stream: I,
    meta: &chain::ConnMeta<'_>,
    destination: Option<SocketAddr>,
    conn: Accepted<'_>,
) {
    let stats = &listener.stats;
    stats.downstream_cx_total.inc();
    let Some(handler) = listener.chain_for(meta).cloned() else {
        stats.no_filter_chain_match.inc();
        return;
    };
    let active = GaugeGuard::new(&stats.downstream_cx_active);
    let drain = listener.drain.watch();
    let pools = conn.pools.clone();
    let peer = conn.peer;
    // One task per kind, so that each connection's task is the size of its own kind's
    // state (an idle HTTP connection does not carry room for a TCP relay's).
    match handler {
        ChainHandler::Http(ctx) => {
            conn.tracker.spawn(async move {
                let _active = active;
                let down = Arc::new(Downstream::new(
                    peer,
                    destination,
                    pools,
                    ctx.local_address,
                    drain,
                ));
                crate::http::server::serve(stream, ctx, down).await;
            });
        }
        ChainHandler::Tcp(ctx) => {
            conn.tracker.spawn(async move {
                let _active = active;
                crate::tcp::proxy(stream, peer, destination, ctx).await
            });
        }
    }
}
