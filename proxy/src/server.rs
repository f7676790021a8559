//! The process: builds the run-time state from config, binds listeners, starts one worker
//! thread per `--concurrency` (each with its own single-threaded runtime, sockets and
//! upstream pools), runs the admin API on the main thread, and drains on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::config::bootstrap::{Loaded, Node};
use crate::config::dynamic::DynamicResources;
use crate::drain::Drain;
use crate::listener::manager::ListenerManager;
use crate::listener::{BuildContext, ListenerRuntime};
use crate::logging::LogControl;
use crate::stats::Store;
use crate::upstream::ClusterManager;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Envoy's `server.state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listener '{name}': cannot bind {address}: {source}")]
    Bind {
        name: String,
        address: String,
        source: std::io::Error,
    },
    #[error("admin: cannot bind {address}: {source}")]
    AdminBind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the main thread panicked")]
    Panicked,
    #[error("cannot write admin address to {path}: {source}")]
    AdminAddressPath {
        path: String,
        source: std::io::Error,
    },
}

/// Shared state of the running server (read by the admin API).
#[derive(Debug)]
pub struct Server {
    pub options: Options,
    pub node: Node,
    pub stats: Arc<Store>,
    pub clusters: Arc<ClusterManager>,
    pub listeners: ListenerManager,
    /// The bootstrap's listeners, bound when the server starts.
    static_listeners: Mutex<Vec<Arc<ListenerRuntime>>>,
    /// Where LDS and CDS come from, if anywhere.
    pub dynamic: Option<DynamicResources>,
    /// Resources received over xDS, for `/config_dump`.
    pub xds_dump: Mutex<crate::xds::dump::DynamicDump>,
    /// This host's address ([`crate::net::local_address`]).
    pub local_address: std::net::IpAddr,
    pub admin_addr: Mutex<Option<SocketAddr>>,
    /// The bootstrap as loaded, for `/config_dump`.
    pub bootstrap_proto: envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap,
    pub loaded_at: String,
    pub admin_bind: Option<crate::config::common::BindAddress>,
    pub log: LogControl,
    pub started: Instant,
    state: AtomicU8,
    health_failed: AtomicBool,
    /// Fired by SIGTERM, SIGINT or `/quitquitquit`.
    pub shutdown: Drain,
}

impl Server {
    pub fn new(options: Options, loaded: Loaded, log: LogControl) -> Arc<Self> {
        let stats = Arc::new(Store::default());
        let Loaded {
            bootstrap, proto, ..
        } = loaded;
        let mut node = bootstrap.node.clone();
        if let Some(n) = &options.service_node {
            node.id = n.clone();
        }
        if let Some(c) = &options.service_cluster {
            node.cluster = c.clone();
        }
        let clusters = Arc::new(ClusterManager::new(bootstrap.clusters, &stats));
        let local = crate::net::local_address(
            options.local_address_ip_version == crate::cli::IpVersion::V6,
        );
        // Static listeners cannot use RDS (the bootstrap refuses it).
        let no_rds = |_: &str| crate::routing::RouteSlot::default();
        let cx = BuildContext {
            clusters: &clusters,
            store: &stats,
            local,
            routes: &no_rds,
        };
        let static_listeners: Vec<_> = bootstrap
            .listeners
            .into_iter()
            .map(|l| Arc::new(ListenerRuntime::new(l, cx)))
            .collect();
        let loaded_at = humantime_now();
        let workers = options.workers();
        let server = Arc::new(Server {
            options,
            node,
            stats,
            clusters,
            listeners: ListenerManager::new(workers),
            static_listeners: Mutex::new(static_listeners),
            dynamic: bootstrap.dynamic,
            xds_dump: Mutex::default(),
            local_address: local,
            admin_addr: Mutex::new(None),
            bootstrap_proto: proto,
            loaded_at,
            admin_bind: bootstrap.admin.clone(),
            log,
            started: Instant::now(),
            state: AtomicU8::new(ServerState::PreInitializing as u8),
            health_failed: AtomicBool::new(false),
            shutdown: Drain::default(),
        });
        server.publish_state();
        server
    }

    /// What `/ready` reports: a failed health check reads as `DRAINING`, as in Envoy.
    pub fn state(&self) -> ServerState {
        if self.health_failed.load(Ordering::Relaxed) {
            return ServerState::Draining;
        }
        self.lifecycle_state()
    }

    /// The start-up/drain state alone (the `server.state` stat; a failed health check
    /// does not change it, only `server.live`).
    fn lifecycle_state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            0 => ServerState::Live,
            1 => ServerState::Draining,
            2 => ServerState::PreInitializing,
            _ => ServerState::Initializing,
        }
    }

    pub(crate) fn set_state(&self, s: ServerState) {
        self.state.store(s as u8, Ordering::Relaxed);
        self.publish_state();
    }

    pub fn set_health_failed(&self, failed: bool) {
        self.health_failed.store(failed, Ordering::Relaxed);
        self.publish_state();
    }

    fn publish_state(&self) {
        self.stats
            .gauge("server.state")
            .set(self.lifecycle_state() as i64);
        self.stats
            .gauge("server.live")
            .set(i64::from(self.state() == ServerState::Live));
    }

    /// The `/config_dump` document.
    pub fn config_dump(&self) -> serde_json::Value {
        let dynamic = self
            .xds_dump
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sections();
        let dump =
            crate::config::dump::config_dump(&self.bootstrap_proto, &self.loaded_at, &dynamic);
        release_config_memory();
        dump
    }

    /// The bound address of each listener, by name (port 0 resolved).
    pub fn listener_address(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.find(name)?.addr
    }

    /// The bootstrap's listeners, once (the runtime binds them at start).
    pub(crate) fn take_static_listeners(&self) -> Vec<Arc<ListenerRuntime>> {
        std::mem::take(
            &mut *self
                .static_listeners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// What dynamic listeners are built with.
    pub fn build_context<'a>(
        &'a self,
        routes: crate::listener::RouteResolver<'a>,
    ) -> BuildContext<'a> {
        BuildContext {
            clusters: &self.clusters,
            store: &self.stats,
            local: self.local_address,
            routes,
        }
    }

    /// Refreshes gauges that are derived rather than counted.
    pub fn refresh_gauges(&self) {
        self.stats
            .gauge("server.uptime")
            .set(self.started.elapsed().as_secs() as i64);
        self.stats
            .gauge("cluster_manager.active_clusters")
            .set(self.clusters.len() as i64);
        self.stats
            .gauge("listener_manager.total_listeners_active")
            .set(self.listeners.len() as i64);
    }

    /// Drains the listeners matching `inbound_only`; with `graceful`, connections are
    /// asked to close first and the listeners stop accepting after `--drain-time-s`.
    pub fn drain_listeners(self: &Arc<Self>, inbound_only: bool, graceful: bool) {
        use crate::config::listener::Direction;
        let chosen: Vec<_> = self
            .listeners
            .list()
            .into_iter()
            .map(|l| l.slot)
            .filter(|s| !inbound_only || s.current().config.direction == Direction::Inbound)
            .collect();
        for s in &chosen {
            s.current().drain.start();
        }
        let wait = Duration::from_secs(self.options.drain_time_s);
        if graceful {
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                for s in chosen {
                    s.close.start();
                }
            });
        } else {
            for s in chosen {
                s.close.start();
            }
        }
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        *self.admin_addr.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn humantime_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Drops the descriptor pool used for config conversion and hands freed heap back to the
/// OS, so the idle footprint is the data path's, not the config loader's.
pub fn release_config_memory() {
    crate::config::load::release_pool();
    forget_descriptor_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The embedded descriptor set (about 1 MiB) is read once at start-up; let the kernel drop
/// its pages from this process until it is needed again (they are reloaded from the binary
/// on the next access).
fn forget_descriptor_pages() {
    #[cfg(target_os = "linux")]
    {
        let page = 4096usize;
        let start = crate::DESCRIPTORS.as_ptr() as usize;
        let end = start + crate::DESCRIPTORS.len();
        let (first, last) = (start.div_ceil(page) * page, end / page * page);
        if last > first {
            // SAFETY: the range lies inside a read-only mapping of the executable;
            // MADV_DONTNEED on a private file mapping only drops cached pages, which are
            // re-read from the file on the next access.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}
