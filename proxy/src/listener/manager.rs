//! The listeners in force and the workers that serve them.
//!
//! Each listening address is a [`ListenerSlot`]: the socket (one per worker) stays open
//! while the listener's config behind it is replaced, so an LDS update that keeps the
//! address keeps the socket. New connections take the slot's current
//! [`ListenerRuntime`]; connections of a replaced runtime drain. Removing a listener
//! closes its sockets and drains its connections.
//!
//! Sockets are bound here, on the control thread (so bind errors reach the caller), and
//! handed to each worker over its command channel; the worker runs the accept loop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::{BoundSocket, ListenerRuntime};
use crate::drain::Drain;

/// One listening address and the listener config currently serving it.
#[derive(Debug)]
pub struct ListenerSlot {
    current: ArcSwap<ListenerRuntime>,
    /// The accept loops (one per worker) stop when this fires.
    pub close: Drain,
}

impl ListenerSlot {
    pub fn new(runtime: Arc<ListenerRuntime>) -> Self {
        ListenerSlot {
            current: ArcSwap::new(runtime),
            close: Drain::default(),
        }
    }

    pub fn current(&self) -> Arc<ListenerRuntime> {
        self.current.load_full()
    }

    /// The current config for a moment (no reference count taken: the accept path).
    pub fn load(&self) -> arc_swap::Guard<Arc<ListenerRuntime>> {
        self.current.load()
    }

    fn is(&self, name: &str) -> bool {
        self.current.load().config.name == name
    }
}

/// The listeners by address, for handing a connection to the listener of its original
/// destination (`use_original_dst`). Rebuilt whenever listeners come and go; read
/// without locks on the accept path.
#[derive(Debug, Default)]
pub struct ListenerIndex {
    by_addr: ArcSwap<HashMap<SocketAddr, IndexEntry>>,
}

#[derive(Debug, Clone)]
struct IndexEntry {
    slot: Arc<ListenerSlot>,
    /// Bound to a port (Istio's per-port outbound listeners do not bind).
    bound: bool,
}

fn wildcard(addr: SocketAddr) -> SocketAddr {
    let ip: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, addr.port())
}

impl ListenerIndex {
    /// The listener for `dest`: the one at that exact address, else the one on the
    /// wildcard address of its port, as Envoy looks them up.
    pub fn find(&self, dest: SocketAddr) -> Option<Arc<ListenerSlot>> {
        let map = self.by_addr.load();
        map.get(&dest)
            .or_else(|| map.get(&wildcard(dest)))
            .map(|e| e.slot.clone())
    }

    /// Whether `dest` is one of this proxy's own listening sockets (reached on
    /// loopback or on `local_ip`, the address the connection arrived at).
    pub fn is_own(&self, dest: SocketAddr, local_ip: Option<IpAddr>) -> bool {
        let map = self.by_addr.load();
        if map.get(&dest).is_some_and(|e| e.bound) {
            return true;
        }
        let ours = dest.ip().is_loopback() || Some(dest.ip()) == local_ip;
        ours && map.get(&wildcard(dest)).is_some_and(|e| e.bound)
    }

    fn rebuild(&self, active: &[ActiveListener]) {
        let map = active
            .iter()
            .filter_map(|l| {
                let configured = match &l.slot.current().config.address {
                    crate::config::common::BindAddress::Tcp(a) => Some(*a),
                    crate::config::common::BindAddress::Unix(_) => None,
                };
                let addr = l.addr.or(configured)?;
                let entry = IndexEntry {
                    slot: l.slot.clone(),
                    bound: l.addr.is_some(),
                };
                Some((addr, entry))
            })
            .collect();
        self.by_addr.store(Arc::new(map));
    }
}

/// What the control thread asks of a worker.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Accept connections on `socket` for `slot` until the slot closes.
    Serve {
        slot: Arc<ListenerSlot>,
        socket: BoundSocket,
    },
    /// Drop pooled upstream connections to hosts and clusters no longer in `clusters`.
    PruneIdle(Arc<crate::upstream::cluster::ClusterMap>),
}

/// A listener in force.
#[derive(Debug, Clone)]
pub struct ActiveListener {
    pub slot: Arc<ListenerSlot>,
    /// The bound address (port 0 resolved); `None` for Unix sockets and listeners that
    /// do not bind.
    pub addr: Option<SocketAddr>,
}

impl ActiveListener {
    pub fn name(&self) -> String {
        self.slot.current().config.name.clone()
    }
}

/// Every listener in force, in the order they were added, and the workers' channels.
#[derive(Debug)]
pub struct ListenerManager {
    active: Mutex<Vec<ActiveListener>>,
    workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    receivers: Mutex<Vec<Option<mpsc::UnboundedReceiver<WorkerCommand>>>>,
    /// Fired at shutdown: workers stop taking new listeners.
    pub stopped: Drain,
    pub index: Arc<ListenerIndex>,
}

impl ListenerManager {
    pub fn new(workers: usize) -> Self {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Some(rx))
            })
            .unzip();
        ListenerManager {
            active: Mutex::new(Vec::new()),
            workers: tx,
            receivers: Mutex::new(rx),
            stopped: Drain::default(),
            index: Arc::default(),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Asks every worker to drop pooled connections that `clusters` no longer covers.
    pub fn prune_idle(&self, clusters: Arc<crate::upstream::cluster::ClusterMap>) {
        for w in &self.workers {
            let _ = w.send(WorkerCommand::PruneIdle(clusters.clone()));
        }
    }

    fn active(&self) -> MutexGuard<'_, Vec<ActiveListener>> {
        // A poisoned lock only means a panic elsewhere; the list itself is whole.
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The command channel of worker `id`; taken once, by the worker.
    pub fn take_commands(&self, id: usize) -> Option<mpsc::UnboundedReceiver<WorkerCommand>> {
        let mut r = self
            .receivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.get_mut(id).and_then(Option::take)
    }

    /// Binds `runtime`'s address once per worker (unless it does not bind to a port)
    /// and hands the sockets to the workers.
    pub fn add(&self, runtime: Arc<ListenerRuntime>) -> std::io::Result<ActiveListener> {
        let sockets = self.bind(&runtime.config)?;
        Ok(self.install(runtime, sockets))
    }

    /// The sockets for `config`, one per worker (none if it does not bind to a port).
    pub fn bind(&self, config: &super::Listener) -> std::io::Result<Vec<BoundSocket>> {
        if config.bind_to_port {
            super::bind(config, self.workers.len())
        } else {
            Ok(Vec::new())
        }
    }

    /// Serves `runtime` on `sockets` (from [`ListenerManager::bind`]).
    pub fn install(
        &self,
        runtime: Arc<ListenerRuntime>,
        sockets: Vec<BoundSocket>,
    ) -> ActiveListener {
        let addr = sockets.first().and_then(BoundSocket::local_addr);
        let slot = Arc::new(ListenerSlot::new(runtime));
        for (w, socket) in self.workers.iter().zip(sockets) {
            let _ = w.send(WorkerCommand::Serve {
                slot: slot.clone(),
                socket,
            });
        }
        let active = ActiveListener { slot, addr };
        let mut all = self.active();
        all.push(active.clone());
        self.index.rebuild(&all);
        active
    }

    /// Serves new connections of listener `name` with `runtime` (same address, same
    /// sockets); the connections of the replaced config drain. `false` if there is no
    /// such listener.
    pub fn replace(&self, name: &str, runtime: Arc<ListenerRuntime>) -> bool {
        let Some(l) = self.find(name) else {
            return false;
        };
        let old = l.slot.current.swap(runtime);
        old.drain.start_gentle();
        true
    }

    /// Stops listener `name`: its sockets close and its connections drain.
    pub fn remove(&self, name: &str) -> Option<ActiveListener> {
        let mut active = self.active();
        let i = active.iter().position(|l| l.slot.is(name))?;
        let l = active.remove(i);
        self.index.rebuild(&active);
        l.slot.close.start();
        l.slot.current().drain.start_gentle();
        Some(l)
    }

    pub fn find(&self, name: &str) -> Option<ActiveListener> {
        self.active().iter().find(|l| l.slot.is(name)).cloned()
    }

    /// The listeners in force.
    pub fn list(&self) -> Vec<ActiveListener> {
        self.active().clone()
    }

    pub fn len(&self) -> usize {
        self.active().len()
    }

    pub fn is_empty(&self) -> bool {
        self.active().is_empty()
    }

    /// Shutdown: every listener stops accepting and drains; workers take no more.
    pub fn close_all(&self) {
        for l in self.active().iter() {
            l.slot.current().drain.start();
            l.slot.close.start();
        }
        self.stopped.start();
    }
}
