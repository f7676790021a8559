//! Listeners at run time: bound sockets (one per worker with `SO_REUSEPORT`), accept
//! loops, filter chain selection and hand-off to the chain's network filter.

pub mod chain;
pub mod manager;

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
use manager::ListenerSlot;

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
}

#[derive(Debug)]
pub struct ListenerRuntime {
    pub config: Listener,
    chains: Vec<ChainHandler>,
    default_chain: Option<ChainHandler>,
    pub stats: ListenerStats,
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
        };
        ListenerRuntime {
            config,
            chains,
            default_chain,
            stats,
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
    let first = bind_one(&config.address, config.reuse_port)?;
    let mut out = Vec::with_capacity(workers);
    let actual = match (&first, &config.address) {
        (BoundSocket::Tcp(l), BindAddress::Tcp(_)) => Some(BindAddress::Tcp(l.local_addr()?)),
        _ => None,
    };
    for _ in 1..workers {
        let s = match (&actual, config.reuse_port) {
            (Some(addr), true) => bind_one(addr, true)?,
            _ => first.try_clone()?,
        };
        out.push(s);
    }
    out.insert(0, first);
    Ok(out)
}

fn bind_one(addr: &BindAddress, reuse_port: bool) -> io::Result<BoundSocket> {
    match addr {
        BindAddress::Tcp(sa) => {
            let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if reuse_port {
                socket.set_reuse_port(true)?;
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
                dispatch(&slot.load(), stream, Some(peer), local, &pools, &tracker);
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
                dispatch(&slot.load(), stream, None, None, &pools, &tracker);
            }
        }
    }
}

fn dispatch<I: crate::upstream::connect::Io>(
    listener: &Arc<ListenerRuntime>,
    stream: I,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    pools: &Arc<Pools>,
    tracker: &TaskTracker,
) {
    let stats = &listener.stats;
    stats.downstream_cx_total.inc();
    let meta = chain::ConnMeta {
        destination: local,
        source: peer,
        transport_protocol: "raw_buffer",
        ..Default::default()
    };
    let Some(handler) = listener.chain_for(&meta).cloned() else {
        stats.no_filter_chain_match.inc();
        return;
    };
    let active = GaugeGuard::new(&stats.downstream_cx_active);
    let drain = listener.drain.watch();
    let pools = pools.clone();
    tracker.spawn(async move {
        let _active = active;
        match handler {
            ChainHandler::Http(ctx) => {
                let down = Arc::new(Downstream::new(
                    peer,
                    local,
                    pools,
                    ctx.local_address,
                    drain,
                ));
                crate::http::server::serve(stream, ctx, down).await;
            }
            ChainHandler::Tcp(ctx) => crate::tcp::proxy(stream, ctx).await,
        }
    });
}
