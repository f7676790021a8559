//! Cluster runtime state: the current load-balancing view of its hosts (rebuilt and
//! swapped whole when DNS or EDS answers change or a host's health changes), its outlier
//! detector, circuit breakers and stat handles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::cluster::{Cluster, Discovery};
use crate::config::common::HostAddress;
use crate::drain::Drain;
use crate::stats::{self, Counter, Gauge, Store};
use crate::upstream::breakers::ClusterBreakers;
use crate::upstream::health::HealthChecker;
use crate::upstream::host::{carry_over, flags, keep_removed_healthy, removal_due};
pub use crate::upstream::host::{Host, HostAddr, HostEntry};
use crate::upstream::lb::{self, LbView};
use crate::upstream::outlier::{self, Detector};

/// Per-cluster stats (`cluster.<name>.*`).
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_xx: [Counter; 5],
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_per_try_idle_timeout: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_retry_overflow: Counter,
    /// `max_requests` reached (Envoy 1.40's name for it).
    pub upstream_rq_active_overflow: Counter,
    pub upstream_cx_total: Counter,
    pub upstream_cx_overflow: Counter,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_pending_active: Gauge,
    /// Pending requests failed because the connection they waited for failed.
    pub upstream_rq_pending_failure_eject: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub lb_healthy_panic: Counter,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    pub membership_degraded: Gauge,
    pub membership_excluded: Gauge,
    pub membership_change: Counter,
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_failure: Counter,
    pub update_rejected: Counter,
    pub update_empty: Counter,
}

/// `cluster.<name>.*`, in the order [`ClusterStats::new`] looks them up.
static CLUSTER_STATS: [stats::Def; 37] = [
    stats::counter("upstream_rq_total"),
    stats::gauge("upstream_rq_active"),
    stats::counter("upstream_rq_1xx"),
    stats::counter("upstream_rq_2xx"),
    stats::counter("upstream_rq_3xx"),
    stats::counter("upstream_rq_4xx"),
    stats::counter("upstream_rq_5xx"),
    stats::counter("upstream_rq_timeout"),
    stats::counter("upstream_rq_per_try_timeout"),
    stats::counter("upstream_rq_per_try_idle_timeout"),
    stats::counter("upstream_rq_retry"),
    stats::counter("upstream_rq_retry_success"),
    stats::counter("upstream_rq_retry_limit_exceeded"),
    stats::counter("upstream_rq_retry_backoff_exponential"),
    stats::counter("upstream_rq_retry_overflow"),
    stats::counter("upstream_rq_active_overflow"),
    stats::counter("upstream_cx_total"),
    stats::counter("upstream_cx_overflow"),
    stats::counter("upstream_rq_pending_total"),
    stats::counter("upstream_rq_pending_overflow"),
    stats::gauge("upstream_rq_pending_active"),
    stats::counter("upstream_rq_pending_failure_eject"),
    stats::gauge("upstream_cx_active"),
    stats::counter("upstream_cx_connect_fail"),
    stats::counter("upstream_cx_connect_timeout"),
    stats::counter("upstream_cx_none_healthy"),
    stats::counter("lb_healthy_panic"),
    stats::gauge("membership_total"),
    stats::gauge("membership_healthy"),
    stats::gauge("membership_degraded"),
    stats::gauge("membership_excluded"),
    stats::counter("membership_change"),
    stats::counter("update_attempt"),
    stats::counter("update_success"),
    stats::counter("update_failure"),
    stats::counter("update_rejected"),
    stats::counter("update_empty"),
];

impl ClusterStats {
    pub fn new(store: &Store, name: &str) -> Self {
        let b = store.block(&format!("cluster.{name}."), &CLUSTER_STATS);
        let c = |s: &str| b.counter(s);
        let g = |s: &str| b.gauge(s);
        ClusterStats {
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_active: g("upstream_rq_active"),
            upstream_rq_xx: [
                c("upstream_rq_1xx"),
                c("upstream_rq_2xx"),
                c("upstream_rq_3xx"),
                c("upstream_rq_4xx"),
                c("upstream_rq_5xx"),
            ],
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            upstream_rq_per_try_idle_timeout: c("upstream_rq_per_try_idle_timeout"),
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            upstream_rq_retry_overflow: c("upstream_rq_retry_overflow"),
            upstream_rq_active_overflow: c("upstream_rq_active_overflow"),
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_overflow: c("upstream_cx_overflow"),
            upstream_rq_pending_total: c("upstream_rq_pending_total"),
            upstream_rq_pending_overflow: c("upstream_rq_pending_overflow"),
            upstream_rq_pending_active: g("upstream_rq_pending_active"),
            upstream_rq_pending_failure_eject: c("upstream_rq_pending_failure_eject"),
            upstream_cx_active: g("upstream_cx_active"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: c("upstream_cx_connect_timeout"),
            upstream_cx_none_healthy: c("upstream_cx_none_healthy"),
            lb_healthy_panic: c("lb_healthy_panic"),
            membership_total: g("membership_total"),
            membership_healthy: g("membership_healthy"),
            membership_degraded: g("membership_degraded"),
            membership_excluded: g("membership_excluded"),
            membership_change: c("membership_change"),
            update_attempt: c("update_attempt"),
            update_success: c("update_success"),
            update_failure: c("update_failure"),
            update_rejected: c("update_rejected"),
            update_empty: c("update_empty"),
        }
    }

    pub fn response(&self, status: u16) {
        if let Some(c) = self
            .upstream_rq_xx
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
    }
}

#[derive(Debug)]
pub struct ClusterState {
    pub config: Cluster,
    pub name: Arc<str>,
    view: ArcSwap<LbView>,
    /// Serializes view rebuilds (host updates and health changes).
    rebuild: std::sync::Mutex<()>,
    pub stats: ClusterStats,
    pub breakers: ClusterBreakers,
    /// Boxed: most clusters have none, and a mesh has thousands of clusters.
    pub outlier: Option<Box<Detector>>,
    /// Active health checking (its task is [`crate::upstream::health::health_loop`]).
    pub health: Option<Arc<HealthChecker>>,
    /// Fired when the cluster is removed or replaced (stops its DNS refresh).
    pub retired: Drain,
}

impl ClusterState {
    pub fn new(config: Cluster, store: &Store) -> Self {
        let stats = ClusterStats::new(store, &config.name);
        let breakers = ClusterBreakers::new(&config.breakers, store, &config.name);
        let outlier = config
            .outlier
            .clone()
            .map(|o| Box::new(Detector::new(o, store, &config.name)));
        let health = config
            .health_check
            .clone()
            .map(|h| Arc::new(HealthChecker::new(h, store, &config.name)));
        let initial = match config.discovery {
            Discovery::Static => config.endpoints.iter().filter_map(static_host).collect(),
            Discovery::StrictDns
            | Discovery::LogicalDns
            | Discovery::Eds
            | Discovery::OriginalDst => Vec::new(),
        };
        let empty = LbView::build(Vec::new(), &config.lb, config.overprovisioning_factor);
        let state = ClusterState {
            name: config.name.as_str().into(),
            config,
            view: ArcSwap::from_pointee(empty),
            rebuild: std::sync::Mutex::new(()),
            stats,
            breakers,
            outlier,
            health,
            retired: Drain::default(),
        };
        state.set_hosts(initial);
        state
    }

    /// Replaces the hosts (hosts that stay keep their health and counters); returns
    /// whether anything changed (an unchanged set is not rebuilt).
    pub fn set_hosts(&self, hosts: Vec<Host>) -> bool {
        let factor = self.view.load().overprovisioning;
        self.set_assignment(hosts, factor)
    }

    /// Replaces the hosts and the overprovisioning factor (an EDS assignment).
    pub fn set_assignment(&self, hosts: Vec<Host>, overprovisioning: u32) -> bool {
        let _g = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.view.load_full();
        let same_hosts = current
            .hosts
            .iter()
            .filter(|e| !e.state.has(flags::PENDING_DYNAMIC_REMOVAL))
            .map(|e| &e.host)
            .eq(hosts.iter());
        if same_hosts && current.overprovisioning == overprovisioning {
            return false;
        }
        // With a health checker, new hosts are unhealthy until their first check.
        let initial = if self.health.is_some() {
            flags::FAILED_ACTIVE_HC
        } else {
            0
        };
        let mut entries = carry_over(&current.hosts, hosts, initial);
        if self.keeps_removed_hosts() {
            keep_removed_healthy(&current.hosts, &mut entries);
        }
        self.install(entries, overprovisioning);
        if !same_hosts {
            self.stats.membership_change.inc();
            if let Some(h) = &self.health {
                h.hosts_changed();
            }
        }
        true
    }

    /// An upstream response carried `x-envoy-immediate-health-check-fail`: with active
    /// health checking, the host leaves rotation until its checks pass again.
    pub fn immediate_health_check_fail(&self, host: &HostEntry) {
        if let Some(checker) = &self.health {
            if checker.immediate_failure(host) {
                self.health_changed();
            }
        }
    }

    /// Whether hosts EDS removes stay while they pass their health checks (Envoy's
    /// `PENDING_DYNAMIC_REMOVAL`, for EDS clusters with active health checking unless
    /// `ignore_health_on_host_removal`).
    fn keeps_removed_hosts(&self) -> bool {
        self.health.is_some()
            && self.config.discovery == Discovery::Eds
            && !self.config.ignore_health_on_host_removal
    }

    /// Rebuilds the view after a host's health changed; a host EDS removed earlier
    /// leaves now if it fails its health checks.
    pub fn health_changed(&self) {
        let _g = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.view.load_full();
        let mut hosts = current.hosts.clone();
        hosts.retain(|e| !removal_due(e));
        let removed = hosts.len() != current.hosts.len();
        self.install(hosts, current.overprovisioning);
        if removed {
            self.stats.membership_change.inc();
            if let Some(h) = &self.health {
                h.hosts_changed();
            }
        }
    }

    fn install(&self, entries: Vec<Arc<HostEntry>>, overprovisioning: u32) {
        let view = LbView::build(entries, &self.config.lb, overprovisioning);
        self.stats.membership_total.set(view.hosts.len() as i64);
        self.stats.membership_healthy.set(view.healthy as i64);
        self.stats.membership_degraded.set(view.degraded as i64);
        self.stats.membership_excluded.set(view.excluded as i64);
        self.view.store(Arc::new(view));
    }

    /// The current view of the hosts.
    pub fn hosts(&self) -> Arc<LbView> {
        self.view.load_full()
    }

    /// The host for a downstream connection whose original destination is
    /// `destination`: that address for ORIGINAL_DST clusters (with the configured port
    /// override), else the load balancer's pick.
    pub fn pick_for(
        &self,
        destination: Option<SocketAddr>,
        ctx: lb::Context,
    ) -> Option<Arc<HostEntry>> {
        if self.config.discovery != Discovery::OriginalDst {
            return self.pick(ctx);
        }
        let mut addr = destination?;
        if let Some(port) = self.config.original_dst_port {
            addr.set_port(port);
        }
        Some(HostEntry::new(Host::new(HostAddr::Tcp(addr), None, 1)))
    }

    /// The load balancer's pick; `None` when no host can be chosen.
    pub fn pick(&self, ctx: lb::Context) -> Option<Arc<HostEntry>> {
        self.view.load().pick(ctx, &self.stats.lb_healthy_panic)
    }

    /// Tells outlier detection how an attempt to `host` ended.
    pub fn report(&self, host: &HostEntry, outcome: outlier::Outcome) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let view = self.view.load();
        if detector.report(host, outcome, &view.hosts) {
            drop(view);
            self.health_changed();
        }
    }

    /// One outlier-detection interval (run by the cluster's sweep task).
    pub fn outlier_sweep(&self) {
        if let Some(detector) = &self.outlier {
            let view = self.view.load_full();
            if detector.sweep(&view.hosts) {
                self.health_changed();
            }
        }
    }
}

/// Starts the cluster's background tasks (outlier sweeps, health checks) until it is
/// retired or `shutdown` fires.
pub fn spawn_tasks(cluster: &Arc<ClusterState>, shutdown: &Drain) {
    if cluster.outlier.is_some() {
        tokio::spawn(outlier_loop(cluster.clone(), shutdown.watch()));
    }
    if cluster.health.is_some() {
        tokio::spawn(crate::upstream::health::health_loop(
            cluster.clone(),
            shutdown.watch(),
        ));
    }
}

/// Runs the outlier sweep every `interval` until the cluster is retired or `stop` fires.
pub async fn outlier_loop(cluster: Arc<ClusterState>, mut stop: crate::drain::DrainWatch) {
    let Some(interval) = cluster.outlier.as_ref().map(|d| d.interval()) else {
        return;
    };
    let mut retired = cluster.retired.watch();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => cluster.outlier_sweep(),
            _ = stop.signaled() => return,
            _ = retired.signaled() => return,
        }
    }
}

fn static_host(e: &crate::config::cluster::Endpoint) -> Option<Host> {
    let addr = match &e.address {
        HostAddress::Ip(a) => HostAddr::Tcp(*a),
        HostAddress::Unix(p) => HostAddr::Unix(p.clone()),
        HostAddress::Name { .. } => return None,
    };
    Some(host_of(e, addr, None))
}

/// The host an endpoint's address resolved to.
pub fn host_of(
    e: &crate::config::cluster::Endpoint,
    addr: HostAddr,
    hostname: Option<String>,
) -> Host {
    Host {
        addr,
        hostname,
        weight: e.weight,
        priority: e.priority,
        locality: e.locality.clone(),
        eds_health: e.health,
        check: e.check.clone(),
    }
}

/// Clusters by name, looked up on every routed request (a fast hasher).
pub type ClusterMap = HashMap<Arc<str>, Arc<ClusterState>, foldhash::fast::RandomState>;

/// All clusters by name, as an immutable map swapped whole on every change: a request
/// holds the `ClusterState` it looked up (and so finishes on the config it started
/// with) while CDS adds, replaces or removes clusters.
#[derive(Debug, Default)]
pub struct ClusterManager {
    clusters: ArcSwap<ClusterMap>,
    /// Serializes writers (copy, change, swap); readers never wait.
    write: std::sync::Mutex<()>,
}

impl ClusterManager {
    pub fn new(clusters: Vec<Cluster>, store: &Store) -> Self {
        let clusters: ClusterMap = clusters
            .into_iter()
            .map(|c| {
                let s = Arc::new(ClusterState::new(c, store));
                (s.name.clone(), s)
            })
            .collect();
        ClusterManager {
            clusters: ArcSwap::from_pointee(clusters),
            write: std::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<ClusterState>> {
        self.clusters.load().get(name).cloned()
    }

    /// The clusters as they are now.
    pub fn snapshot(&self) -> Arc<ClusterMap> {
        self.clusters.load_full()
    }

    pub fn len(&self) -> usize {
        self.clusters.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.load().is_empty()
    }

    fn change(&self, f: impl FnOnce(&mut ClusterMap)) {
        // A poisoned lock only means another writer panicked; the map itself is whole.
        let _w = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = ClusterMap::clone(&self.clusters.load());
        f(&mut next);
        self.clusters.store(Arc::new(next));
    }

    /// Adds `cluster`, or replaces the one with its name; returns the new state (the
    /// caller starts its DNS refresh, if any).
    pub fn upsert(&self, cluster: Cluster, store: &Store) -> Arc<ClusterState> {
        let state = Arc::new(ClusterState::new(cluster, store));
        let added = state.clone();
        self.change(move |m| {
            m.insert(added.name.clone(), added);
        });
        state
    }

    /// Removes a cluster; requests already holding it finish on it.
    pub fn remove(&self, name: &str) -> Option<Arc<ClusterState>> {
        let mut removed = None;
        self.change(|m| removed = m.remove(name));
        if let Some(r) = &removed {
            r.retired.start();
        }
        removed
    }

    /// Adds or replaces `upserts` and removes `removals` in one swap (one CDS response).
    /// Replaced and removed clusters are retired.
    pub fn update(&self, upserts: Vec<Arc<ClusterState>>, removals: &[String]) {
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        let mut retired = Vec::new();
        self.change(|m| {
            for name in removals {
                retired.extend(m.remove(name.as_str()));
            }
            for c in upserts {
                retired.extend(m.insert(c.name.clone(), c));
            }
        });
        for r in retired {
            r.retired.start();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_added_replaced_and_removed_while_holders_keep_theirs() {
        let store = Store::default();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let m = ClusterManager::new(vec![crate::testutil::static_cluster("a", addr)], &store);
        let held = m.get("a").expect("a");
        let addr2 = SocketAddr::from(([127, 0, 0, 1], 2));
        let new = m.upsert(crate::testutil::static_cluster("a", addr2), &store);
        m.upsert(crate::testutil::static_cluster("b", addr), &store);
        assert_eq!(m.len(), 2);
        // The request that looked "a" up before the change still has the old hosts.
        assert_eq!(
            held.pick(lb::Context::default()).map(|h| h.addr.clone()),
            Some(HostAddr::Tcp(addr))
        );
        let now = m.get("a").expect("a");
        assert!(Arc::ptr_eq(&now, &new));
        assert_eq!(
            now.pick(lb::Context::default()).map(|h| h.addr.clone()),
            Some(HostAddr::Tcp(addr2))
        );
        assert!(m.remove("b").is_some());
        assert!(m.get("b").is_none() && m.remove("b").is_none());
        assert_eq!(m.snapshot().len(), 1);
    }
}
