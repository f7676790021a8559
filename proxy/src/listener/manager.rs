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

use std::net::SocketAddr;
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
        self.active().push(active.clone());
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
